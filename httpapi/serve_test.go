package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// serve runs srv on a fresh loopback listener; the returned channel yields what Serve returned.
func serve(t *testing.T, srv *Server) (baseURL string, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), errc
}

// shutdown stops a server that serve started, for tests that are not about shutting down.
func shutdown(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// client returns an HTTP client whose idle connections are closed when the test ends, so that
// goleak sees no transport goroutines.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func waitFor[T any](t *testing.T, what string, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func getStatus(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func TestServeAndShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)
	base, served := serve(t, f.srv)
	c := client(t)

	for _, path := range []string{"/healthz", "/users?limit=2"} {
		if code, err := getStatus(c, base+path); err != nil || code != http.StatusOK {
			t.Fatalf("GET %s = %d, %v; want 200", path, code, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	if err := waitFor(t, "Serve to return", served); err != nil {
		t.Fatalf("Serve = %v, want nil after Shutdown", err)
	}
	c.CloseIdleConnections()
	if _, err := getStatus(c, base+"/healthz"); err == nil {
		t.Error("the server still answers after Shutdown")
	}
}

// TestShutdownWaitsForRequestInFlight holds a /readyz request inside the readiness check while
// the server shuts down: Serve returns at once, Shutdown only once the request is answered.
func TestShutdownWaitsForRequestInFlight(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	f := newFixture(t, func(ctx context.Context) map[string]string {
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return map[string]string{"test": "released too late: " + ctx.Err().Error()}
		}
	}, nil)
	base, served := serve(t, f.srv)
	c := client(t)

	type result struct {
		code int
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		code, err := getStatus(c, base+"/readyz")
		answered <- result{code, err}
	}()
	waitFor(t, "the request to reach the readiness check", entered)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- f.srv.Shutdown(ctx)
	}()
	// Serve returns as soon as Shutdown has closed the listener.
	if err := waitFor(t, "Serve to return", served); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}

	close(release)
	if r := waitFor(t, "the request in flight", answered); r.err != nil || r.code != http.StatusOK {
		t.Fatalf("request in flight = %d, %v; want 200", r.code, r.err)
	}
	if err := waitFor(t, "Shutdown", shutdown); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	f := newFixture(t, func(ctx context.Context) map[string]string {
		close(entered)
		<-release
		return nil
	}, nil)
	base, served := serve(t, f.srv)
	c := client(t)

	answered := make(chan error, 1)
	go func() {
		_, err := getStatus(c, base+"/readyz")
		answered <- err
	}()
	waitFor(t, "the request to reach the readiness check", entered)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // already expired: Shutdown cannot wait for the request
	if err := f.srv.Shutdown(ctx); err == nil {
		t.Error("Shutdown with an expired context and a request in flight = nil, want an error")
	}
	if err := waitFor(t, "Serve to return", served); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	close(release)
	waitFor(t, "the request in flight", answered)
}
