package httpapi

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/searchflow/searchflow/metrics"
)

// exchange is one answer as the wire carried it: no transparent decompression, the body read up
// to limit bytes (a stream never ends by itself).
func exchange(t *testing.T, c *http.Client, method, url string, header http.Header, limit int64) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil && resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: body}
}

// rawClient sends what the test says, Accept-Encoding included, and hands back what it gets.
func rawClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// sameHeaders reports the headers HEAD and GET answered differently, but for those that differ
// by nature from one answer to the next.
func sameHeaders(t *testing.T, what string, head, get http.Header) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(get)) {
		if k == "Date" || k == "X-Request-Id" {
			continue
		}
		if !slices.Equal(head[k], get[k]) {
			t.Errorf("%s: header %s is %q on HEAD, %q on GET", what, k, head[k], get[k])
		}
	}
	for k := range head {
		if _, ok := get[k]; !ok {
			t.Errorf("%s: header %s only on HEAD: %q", what, k, head[k])
		}
	}
}

// TestHeadLikeGet checks that every GET route answers HEAD with GET's status and headers and no
// body, compressed or not; /stream answers at once instead of streaming.
func TestHeadLikeGet(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithStats(sampleStats), WithMetrics(metrics.New(), true), WithStreamInterval(10*time.Millisecond))
	load(t, f, fixedBatches)
	c := rawClient(t)

	var paths []string
	for _, r := range f.srv.echo.Routes() {
		if r.Method == http.MethodGet {
			paths = append(paths, r.Path)
		}
	}
	// One that fails, and one the router does not know.
	paths = append(paths, "/users?limit=0", "/nope")
	for _, path := range paths {
		for _, encoding := range []string{"", "gzip"} {
			t.Run(path+" "+encoding, func(t *testing.T) {
				h := http.Header{}
				if encoding != "" {
					h.Set("Accept-Encoding", encoding)
				}
				limit := int64(1 << 20)
				if path == "/stream" {
					limit = 10 // the headers, and proof that it streams
				}
				get := exchange(t, c, http.MethodGet, f.http.URL+path, h, limit)
				head := exchange(t, c, http.MethodHead, f.http.URL+path, h, limit)
				if head.code != get.code {
					t.Fatalf("HEAD %s: status %d, GET %d", path, head.code, get.code)
				}
				if len(head.body) != 0 {
					t.Errorf("HEAD %s: a body of %d bytes", path, len(head.body))
				}
				if len(get.body) == 0 {
					t.Errorf("GET %s: no body", path)
				}
				sameHeaders(t, "HEAD "+path, head.header, get.header)
			})
		}
	}
}
