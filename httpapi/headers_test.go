package httpapi

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestHeaderLimit sends requests with large headers to the server as Serve runs it (its own
// http.Server, not httptest's): past 64 KiB of header names and values the answer is the JSON
// 431, on any path, however the bytes are spread over the headers.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	base, _ := serve(t, f.srv)
	t.Cleanup(func() { shutdown(t, f.srv) })
	c := client(t)

	many := func(n, size int) http.Header {
		h := http.Header{}
		for i := range n {
			h.Set("X-Filler-"+strconv.Itoa(i), strings.Repeat("v", size))
		}
		return h
	}
	tests := []struct {
		name   string
		path   string
		header http.Header
		want   int
	}{
		{"one header well under the limit", "/healthz", many(1, 60<<10), http.StatusOK},
		{"one header over the limit", "/healthz", many(1, 65<<10), http.StatusRequestHeaderFieldsTooLarge},
		{"one header far over the limit", "/users", many(1, 512<<10), http.StatusRequestHeaderFieldsTooLarge},
		{"many small headers over the limit", "/users", many(100, 1<<10), http.StatusRequestHeaderFieldsTooLarge},
		{"a cookie over the limit", "/readyz", http.Header{"Cookie": {"a=" + strings.Repeat("c", 70<<10)}}, http.StatusRequestHeaderFieldsTooLarge},
		{"over the limit on an unknown path", "/nope", many(1, 100<<10), http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tt.header
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			r := response{code: resp.StatusCode, header: resp.Header, body: body}
			if r.code != tt.want {
				t.Fatalf("status %d, want %d (body %q)", r.code, tt.want, r.body)
			}
			if tt.want == http.StatusOK {
				return
			}
			msg, status := errorBody(t, r)
			if status != tt.want || !strings.Contains(msg, "65536") {
				t.Errorf("body %s, want status %d and the limit in the message", r.body, tt.want)
			}
		})
	}
}
