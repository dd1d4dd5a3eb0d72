package httpapi

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestBadPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)

	tests := []struct {
		query string
		want  int
	}{
		{"limit=0", http.StatusBadRequest},
		{"limit=100001", http.StatusBadRequest},
		{"limit=abc", http.StatusBadRequest},
		{"limit=-1", http.StatusBadRequest},
		{"limit=1.5", http.StatusBadRequest},
		{"limit=99999999999999999999", http.StatusBadRequest},
		{"offset=-1", http.StatusBadRequest},
		{"offset=x", http.StatusBadRequest},
		{"offset=1099511627777", http.StatusBadRequest},
		{"limit=10&offset=-5", http.StatusBadRequest},
		{"limit=1", http.StatusOK},
		{"limit=100000", http.StatusOK},
		{"offset=0", http.StatusOK},
		{"limit=&offset=", http.StatusOK}, // empty means the default
	}
	for _, path := range []string{"/users", "/hotels", "/advertisers", "/hotel_min_offer_per_advertiser"} {
		for _, tt := range tests {
			t.Run(path+"?"+tt.query, func(t *testing.T) {
				r := get(t, f, path+"?"+tt.query)
				if r.code != tt.want {
					t.Fatalf("status %d, want %d (body %s)", r.code, tt.want, r.body)
				}
				if tt.want == http.StatusOK {
					return
				}
				msg, status := errorBody(t, r)
				if status != tt.want {
					t.Errorf("body status = %d, want %d", status, tt.want)
				}
				// The message names the parameter, so the caller knows what to fix.
				param, _, _ := strings.Cut(tt.query, "=")
				if strings.Contains(tt.query, "offset=-5") {
					param = "offset"
				}
				if !strings.Contains(msg, param) {
					t.Errorf("error %q does not name %q", msg, param)
				}
				if r.header.Get("X-Total-Count") != "" {
					t.Errorf("an error answer carries X-Total-Count %q", r.header.Get("X-Total-Count"))
				}
			})
		}
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/users/u1", http.StatusNotFound},
		{http.MethodGet, "/Users", http.StatusNotFound},
		{http.MethodPost, "/users", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/hotel_min_offer_per_advertiser", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := do(t, f, tt.method, tt.path)
			if r.code != tt.want {
				t.Fatalf("status %d, want %d (body %s)", r.code, tt.want, r.body)
			}
			if _, status := errorBody(t, r); status != tt.want {
				t.Errorf("body status = %d, want %d", status, tt.want)
			}
		})
	}
}

func TestWelcome(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	r := get(t, f, "/")
	if r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	for _, endpoint := range []string{"/users", "/hotels", "/advertisers", "/hotel_min_offer_per_advertiser", "limit", "offset"} {
		if !strings.Contains(string(r.body), endpoint) {
			t.Errorf("welcome text %q does not mention %s", r.body, endpoint)
		}
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	// Liveness must not depend on readiness: a process that is draining is still alive.
	f := newFixture(t, func(context.Context) map[string]string { return map[string]string{"x": "y"} }, nil)
	r := get(t, f, "/healthz")
	if r.code != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /healthz = %d %q %s, want 200 JSON", r.code, r.header.Get("Content-Type"), r.body)
	}
	var body map[string]string
	if err := json.Unmarshal(r.body, &body); err != nil || body["status"] != "ok" {
		t.Errorf("body %s, want {\"status\":\"ok\"} (err %v)", r.body, err)
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		problems map[string]string
		want     int
	}{
		{"nil map", nil, http.StatusOK},
		{"empty map", map[string]string{}, http.StatusOK},
		{"one problem", map[string]string{"redis": "ping: connection refused"}, http.StatusServiceUnavailable},
		{"two problems", map[string]string{"redis": "down", "pipeline": "draining"}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var hadDeadline bool
			f := newFixture(t, func(ctx context.Context) map[string]string {
				_, hadDeadline = ctx.Deadline()
				return tt.problems
			}, nil)
			r := get(t, f, "/readyz")
			if r.code != tt.want {
				t.Fatalf("status %d, want %d (body %s)", r.code, tt.want, r.body)
			}
			if !hadDeadline {
				t.Error("the readiness check ran without a deadline")
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var body struct {
				Status   string            `json:"status"`
				Problems map[string]string `json:"problems"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			wantStatus := "ready"
			if tt.want != http.StatusOK {
				wantStatus = "not ready"
			}
			if body.Status != wantStatus {
				t.Errorf("status field %q, want %q", body.Status, wantStatus)
			}
			if len(tt.problems) > 0 && !maps.Equal(body.Problems, tt.problems) {
				t.Errorf("problems %v, want %v", body.Problems, tt.problems)
			}
			if len(tt.problems) == 0 && body.Problems != nil {
				t.Errorf("a ready answer lists problems %v", body.Problems)
			}
		})
	}
}

// TestRedisDown checks that a read Redis cannot serve answers 503 with a JSON error that says
// nothing of Redis, and that the cause goes to the log instead. Each request carries a short
// deadline of its own; TestRedisDownWithoutDeadline covers clients without one.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFixture(t, nil, zap.New(core))
	load(t, f, fixedBatches)
	if r := get(t, f, "/users"); r.code != http.StatusOK {
		t.Fatalf("before the stop: status %d", r.code)
	}
	f.redis.Stop()

	paths := []string{"/users", "/hotels", "/advertisers", "/hotel_min_offer_per_advertiser"}
	for _, path := range paths {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path+"?limit=10", nil).WithContext(ctx))
		cancel()
		r := response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		if r.code != http.StatusServiceUnavailable {
			t.Fatalf("GET %s with redis down: status %d, want 503 (body %s)", path, r.code, r.body)
		}
		msg, status := errorBody(t, r)
		if msg != "metrics store unavailable, try again later" || status != http.StatusServiceUnavailable {
			t.Errorf("GET %s: body %s, want the 503 JSON error", path, r.body)
		}
		_, port, _ := strings.Cut(f.redis.Addr, ":")
		for _, secret := range []string{"redis", "Redis", "127.0.0.1", port, "dial", "connect", "refused",
			"deadline", "context", "view:", "{searchflow}"} {
			if strings.Contains(string(r.body), secret) {
				t.Errorf("GET %s: error body %s leaks %q", path, r.body, secret)
			}
		}
		if r.header.Get("X-Total-Count") != "" {
			t.Errorf("GET %s: a failed answer carries X-Total-Count %q", path, r.header.Get("X-Total-Count"))
		}
	}

	failures := logs.FilterMessage("request failed").FilterLevelExact(zapcore.WarnLevel).All()
	if len(failures) != len(paths) {
		t.Fatalf("%d request failures logged, want %d: %v", len(failures), len(paths), logs.All())
	}
	for i, e := range failures {
		fields := e.ContextMap()
		if fields["path"] != paths[i] {
			t.Errorf("failure %d logged path %v, want %s", i, fields["path"], paths[i])
		}
		if errText, _ := fields["error"].(string); errText == "" {
			t.Errorf("failure %d logged without its cause: %v", i, fields)
		}
	}

	// Liveness does not read Redis, so it keeps answering.
	if r := get(t, f, "/healthz"); r.code != http.StatusOK {
		t.Errorf("GET /healthz with redis down: status %d, want 200", r.code)
	}
}

// TestRedisDownWithoutDeadline is the case of a client that sets no timeout: rueidis retries
// read-only commands while Redis is away, so the handlers bound their reads and answer 503.
func TestRedisDownWithoutDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	f.redis.Stop()
	c := f.http.Client()
	c.Timeout = 15 * time.Second
	for _, path := range []string{"/users", "/hotel_min_offer_per_advertiser"} {
		start := time.Now()
		code, err := getStatus(c, f.http.URL+path)
		if err != nil {
			t.Fatalf("GET %s with redis down and no client deadline: no answer after %v: %v",
				path, time.Since(start).Round(time.Millisecond), err)
		}
		if code != http.StatusServiceUnavailable {
			t.Errorf("GET %s with redis down: status %d, want 503", path, code)
		}
	}
}

// TestPanicBecomesJSON500 checks that a handler panic is recovered into the JSON error body.
func TestPanicBecomesJSON500(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	f.srv.echo.GET("/boom", func(echo.Context) error { panic("boom") })
	r := get(t, f, "/boom")
	if r.code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", r.code)
	}
	if msg, status := errorBody(t, r); msg != "internal error" || status != http.StatusInternalServerError {
		t.Errorf("body %s", r.body)
	}
	if r.header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id on the failed answer")
	}
}
