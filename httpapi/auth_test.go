package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/searchflow/searchflow/metrics"
)

// Two tokens of different lengths: either one opens every route.
var testTokens = []string{"token-one-0123456789abcdef", "second-token-that-is-longer-than-the-first-0123456789"}

// do2 sends method path with header and cookies through c, and does not follow redirects.
func do2(t *testing.T, c *http.Client, method, url string, header http.Header, cookies ...*http.Cookie) response {
	t.Helper()
	header = header.Clone()
	if header == nil {
		header = http.Header{}
	}
	req := &http.Request{Header: header}
	for _, ck := range cookies {
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	// A stream never ends by itself: its first bytes say enough.
	return exchange(t, c, method, url, header, 64<<10)
}

// noRedirects is a client that shows redirects instead of following them.
func noRedirects(t *testing.T) *http.Client {
	c := client(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// want401 fails the test unless r is the JSON 401 that asks for a bearer token.
func want401(t *testing.T, what string, r response) {
	t.Helper()
	if r.code != http.StatusUnauthorized {
		t.Fatalf("%s: status %d, want 401 (body %.200s)", what, r.code, r.body)
	}
	if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
		t.Errorf("%s: WWW-Authenticate %q, want Bearer", what, got)
	}
	if len(r.body) == 0 {
		return // HEAD
	}
	if msg, status := errorBody(t, r); status != http.StatusUnauthorized || !strings.Contains(msg, "token") {
		t.Errorf("%s: body %s, want the JSON 401", what, r.body)
	}
}

// TestTokensGuardEveryRoute checks that with tokens every route but the probes answers 401 to a
// request without a valid one, on GET and HEAD, and serves it with either token.
func TestTokensGuardEveryRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens(testTokens), WithStats(sampleStats),
		WithMetrics(metrics.New(), true), WithStreamInterval(10*time.Millisecond))
	load(t, f, fixedBatches)
	c := noRedirects(t)

	var paths []string
	for _, r := range f.srv.echo.Routes() {
		if r.Method == http.MethodGet {
			paths = append(paths, r.Path)
		}
	}
	if len(paths) < 12 {
		t.Fatalf("only %d GET routes: %v", len(paths), paths)
	}
	bad := map[string]http.Header{
		"no credentials":       nil,
		"an unknown token":     bearer("not-a-token-of-this-server"),
		"a prefix of a token":  bearer(testTokens[0][:len(testTokens[0])-1]),
		"a token and more":     bearer(testTokens[0] + "x"),
		"another scheme":       {"Authorization": {"Basic " + testTokens[0]}},
		"no scheme":            {"Authorization": {testTokens[0]}},
		"an empty bearer":      {"Authorization": {"Bearer "}},
		"the token as a query": nil, // ?token= opens /dashboard only
	}
	for _, path := range paths {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			t.Run(method+" "+path, func(t *testing.T) {
				if path == "/healthz" || path == "/readyz" {
					if r := do2(t, c, method, f.http.URL+path, nil); r.code != http.StatusOK {
						t.Errorf("probe without a token: status %d, want 200", r.code)
					}
					return
				}
				for what, h := range bad {
					target := f.http.URL + path
					if what == "the token as a query" && path != "/dashboard" {
						target += "?token=" + url.QueryEscape(testTokens[0])
					}
					want401(t, what, do2(t, c, method, target, h))
				}
				for i, tok := range testTokens {
					for _, scheme := range []string{"Bearer", "bearer"} {
						h := http.Header{"Authorization": {scheme + " " + tok}}
						if r := do2(t, c, method, f.http.URL+path, h); r.code != http.StatusOK {
							t.Errorf("%s token %d: status %d, want 200 (body %.200s)", scheme, i, r.code, r.body)
						}
					}
				}
			})
		}
	}

	// An unknown path tells nothing without a token.
	want401(t, "unknown path", do2(t, c, http.MethodGet, f.http.URL+"/nope", nil))
	if r := do2(t, c, http.MethodGet, f.http.URL+"/nope", bearer(testTokens[1])); r.code != http.StatusNotFound {
		t.Errorf("unknown path with a token: status %d, want 404", r.code)
	}
}

// TestDashboardLogin follows a browser: /dashboard?token= sets the cookie and redirects to
// /dashboard, whose page and stream, and every other route, then accept the cookie.
func TestDashboardLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens(testTokens), WithStats(sampleStats), WithStreamInterval(10*time.Millisecond))
	load(t, f, fixedBatches)
	c := noRedirects(t)

	r := do2(t, c, http.MethodGet, f.http.URL+"/dashboard?token="+url.QueryEscape(testTokens[1]), nil)
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/dashboard" {
		t.Fatalf("GET /dashboard?token=<valid>: %d, Location %q; want 303 to /dashboard", r.code, r.header.Get("Location"))
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("the redirect's Cache-Control is %q, want no-store", got)
	}
	resp := &http.Response{Header: r.header}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("%d cookies set, want 1: %v", len(cookies), r.header["Set-Cookie"])
	}
	ck := cookies[0]
	if ck.Name != authCookie || ck.Path != "/" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure {
		t.Errorf("cookie %s, want %s, Path=/, HttpOnly, SameSite=Strict, not Secure over plain HTTP", ck, authCookie)
	}
	for _, tok := range testTokens {
		for k, v := range r.header {
			if strings.Contains(strings.Join(v, " "), tok) {
				t.Errorf("header %s of the redirect carries the token", k)
			}
		}
	}

	jar := &http.Cookie{Name: ck.Name, Value: ck.Value}
	page := do2(t, c, http.MethodGet, f.http.URL+"/dashboard", nil, jar)
	if page.code != http.StatusOK || !strings.Contains(string(page.body), `new EventSource("/stream")`) {
		t.Errorf("GET /dashboard with the cookie: %d %.100s", page.code, page.body)
	}
	stream := do2(t, c, http.MethodGet, f.http.URL+"/stream", nil, jar)
	if stream.code != http.StatusOK || !strings.HasPrefix(string(stream.body), "id: 0\ndata: {") {
		t.Errorf("GET /stream with the cookie: %d %.100s", stream.code, stream.body)
	}
	for _, path := range []string{"/users", "/stats", "/openapi.json"} {
		if r := do2(t, c, http.MethodGet, f.http.URL+path, nil, jar); r.code != http.StatusOK {
			t.Errorf("GET %s with the cookie: %d", path, r.code)
		}
	}

	// What does not open the dashboard.
	other := sha256.Sum256([]byte("not-a-token-of-this-server"))
	for what, req := range map[string]struct {
		query  string
		cookie *http.Cookie
	}{
		"no token":                 {"", nil},
		"an invalid token":         {"?token=not-a-token-of-this-server", nil},
		"an empty token":           {"?token=", nil},
		"a forged cookie":          {"", &http.Cookie{Name: authCookie, Value: hex.EncodeToString(other[:])}},
		"the token as a cookie":    {"", &http.Cookie{Name: authCookie, Value: testTokens[0]}},
		"a cookie of another name": {"", &http.Cookie{Name: "token", Value: ck.Value}},
	} {
		var cookies []*http.Cookie
		if req.cookie != nil {
			cookies = append(cookies, req.cookie)
		}
		r := do2(t, c, http.MethodGet, f.http.URL+"/dashboard"+req.query, nil, cookies...)
		want401(t, what, r)
		if r.header.Get("Set-Cookie") != "" {
			t.Errorf("%s: a cookie was set: %s", what, r.header.Get("Set-Cookie"))
		}
	}

	// A browser's way: a cookie jar following the redirect ends on the page.
	cj, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := client(t)
	browser.Jar = cj
	resp, err = browser.Get(f.http.URL + "/dashboard?token=" + url.QueryEscape(testTokens[0]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.RawQuery != "" || resp.Request.URL.Path != "/dashboard" {
		t.Errorf("following the login: %d at %s, want 200 at /dashboard", resp.StatusCode, resp.Request.URL)
	}
}

// TestDashboardCookieSecureOverTLS checks that the cookie set over TLS is Secure.
func TestDashboardCookieSecureOverTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens(testTokens), WithStats(sampleStats))
	hs := httptest.NewTLSServer(f.srv.Handler())
	t.Cleanup(hs.Close)
	c := hs.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Cleanup(c.CloseIdleConnections)
	r := do2(t, c, http.MethodGet, hs.URL+"/dashboard?token="+url.QueryEscape(testTokens[0]), nil)
	cookies := (&http.Response{Header: r.header}).Cookies()
	if r.code != http.StatusSeeOther || len(cookies) != 1 || !cookies[0].Secure {
		t.Fatalf("over TLS: %d, cookies %v; want 303 and a Secure cookie", r.code, r.header["Set-Cookie"])
	}
}

// TestNoTokensStaysOpen checks that without tokens nothing asks for one, and ?token= changes
// nothing.
func TestNoTokensStaysOpen(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens([]string{""}), WithStats(sampleStats))
	c := noRedirects(t)
	for _, path := range []string{"/users", "/stats", "/dashboard", "/dashboard?token=whatever"} {
		r := do2(t, c, http.MethodGet, f.http.URL+path, nil)
		if r.code != http.StatusOK || r.header.Get("Set-Cookie") != "" {
			t.Errorf("GET %s without tokens: %d, Set-Cookie %q; want 200 and no cookie", path, r.code, r.header.Get("Set-Cookie"))
		}
	}
}

// TestTokensAndCORS checks that a preflight, which carries no credentials, is answered by CORS
// and not refused, and that a 401 carries the CORS headers for the page to read it.
func TestTokensAndCORS(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens(testTokens), WithCORS([]string{"https://dash.example"}))
	c := noRedirects(t)
	pre := do2(t, c, http.MethodOptions, f.http.URL+"/users", http.Header{
		"Origin":                         {"https://dash.example"},
		"Access-Control-Request-Method":  {"GET"},
		"Access-Control-Request-Headers": {"authorization"},
	})
	if pre.code != http.StatusNoContent || !strings.EqualFold(pre.header.Get("Access-Control-Allow-Headers"), "authorization") {
		t.Errorf("preflight: %d, Allow-Headers %q; want 204 allowing authorization", pre.code, pre.header.Get("Access-Control-Allow-Headers"))
	}
	r := do2(t, c, http.MethodGet, f.http.URL+"/users", http.Header{"Origin": {"https://dash.example"}})
	want401(t, "cross-origin without a token", r)
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "https://dash.example" {
		t.Errorf("the 401 lacks the CORS header: %q", got)
	}
}

// TestTokensNeverLogged sends good and bad tokens, some to failing reads, and checks that no log
// entry holds one.
func TestTokensNeverLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	f := newFixture(t, nil, zap.New(core), WithTokens(testTokens), WithStats(sampleStats),
		WithMetrics(metrics.New(), true))
	f.redis.Stop() // reads fail and are logged
	c := noRedirects(t)
	wrong := "wrong-token-never-to-be-logged"
	for _, tok := range append([]string{wrong}, testTokens...) {
		for _, path := range []string{"/users?limit=1", "/dashboard?token=" + url.QueryEscape(tok), "/nope", "/stats"} {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			req := httptest.NewRequest(http.MethodGet, path, nil).WithContext(ctx)
			req.Header.Set("Authorization", "Bearer "+tok)
			f.srv.Handler().ServeHTTP(httptest.NewRecorder(), req)
			cancel()
			_ = do2(t, c, http.MethodGet, f.http.URL+path, http.Header{"Cookie": {authCookie + "=" + tok}})
		}
	}
	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the test proves nothing")
	}
	for _, e := range logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		for _, tok := range append([]string{wrong}, testTokens...) {
			if strings.Contains(text, tok) {
				t.Errorf("a log entry holds a token: %s %v", e.Message, e.ContextMap())
			}
		}
	}
}

// TestRequireToken checks the middleware for other servers: the Authorization header only.
func TestRequireToken(t *testing.T) {
	t.Parallel()
	served := func(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "inside") })

	for _, open := range [][]string{nil, {}, {""}} {
		rec := served(RequireToken(open)(next), httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK || rec.Body.String() != "inside" {
			t.Errorf("RequireToken(%q) without a header: %d %q, want the handler", open, rec.Code, rec.Body)
		}
	}

	h := RequireToken(testTokens)(next)
	d := sha256.Sum256([]byte(testTokens[0]))
	for what, req := range map[string]*http.Request{
		"no header":      httptest.NewRequest(http.MethodGet, "/metrics", nil),
		"a wrong token":  withHeader(httptest.NewRequest(http.MethodGet, "/metrics", nil), "Authorization", "Bearer nope"),
		"the query":      httptest.NewRequest(http.MethodGet, "/debug/pprof/?token="+url.QueryEscape(testTokens[0]), nil),
		"the cookie":     withHeader(httptest.NewRequest(http.MethodGet, "/metrics", nil), "Cookie", authCookie+"="+hex.EncodeToString(d[:])),
		"another scheme": withHeader(httptest.NewRequest(http.MethodGet, "/metrics", nil), "Authorization", "Basic "+testTokens[0]),
	} {
		rec := served(h, req)
		r := response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		want401(t, what, r)
		if strings.Contains(rec.Body.String(), "inside") {
			t.Errorf("%s: the handler ran", what)
		}
	}
	for i, tok := range testTokens {
		rec := served(h, withHeader(httptest.NewRequest(http.MethodGet, "/metrics", nil), "Authorization", "Bearer "+tok))
		if rec.Code != http.StatusOK || rec.Body.String() != "inside" {
			t.Errorf("token %d: %d %q, want the handler", i, rec.Code, rec.Body)
		}
	}
}

func withHeader(r *http.Request, k, v string) *http.Request {
	r.Header.Set(k, v)
	return r
}

// TestSessionCookie: the dashboard's cookie proves a login to this server only, until it expires:
// it holds no token and no digest of one, so another server on the host that receives it learns
// nothing it could use, and a restarted server (a new key) does not take it.
func TestSessionCookie(t *testing.T) {
	now := time.Now()
	tk := newTokens(testTokens)
	d := sha256.Sum256([]byte(testTokens[0]))
	request := func(value string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/stream", nil)
		r.AddCookie(&http.Cookie{Name: authCookie, Value: value})
		return r
	}
	valid := tk.session(d[:], now.Add(time.Hour))
	if !tk.cookie(request(valid), now) {
		t.Fatal("a fresh session must be accepted")
	}
	if strings.Contains(valid, hex.EncodeToString(d[:])) || strings.Contains(valid, testTokens[0]) {
		t.Errorf("the cookie %q carries the token or its digest", valid)
	}
	for what, value := range map[string]string{
		"expired":             tk.session(d[:], now.Add(-time.Second)),
		"from another server": newTokens(testTokens).session(d[:], now.Add(time.Hour)),
		"expiry pushed later": strings.Replace(valid, strconv.FormatInt(now.Add(time.Hour).Unix(), 10), strconv.FormatInt(now.Add(48*time.Hour).Unix(), 10), 1),
		"of an unknown token": tk.session(make([]byte, sha256.Size), now.Add(time.Hour)),
		"garbage":             "not-a-session",
	} {
		if tk.cookie(request(value), now) {
			t.Errorf("a session cookie %s was accepted", what)
		}
	}
}
