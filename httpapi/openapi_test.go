package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"

	"github.com/searchflow/searchflow/metrics"
	"github.com/searchflow/searchflow/trends"
)

// openAPIFile is the OpenAPI document of this API, beside the code it describes.
const openAPIFile = "openapi.json"

// loadOpenAPI reads and validates the document; routers and validators assume a valid one.
func loadOpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	data, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("%s does not load as OpenAPI: %v", openAPIFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIFile, err)
	}
	return doc
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	if doc.Info.Title != "searchflow" || doc.Info.Version != "1.0.0" || doc.Info.Description == "" {
		t.Errorf("info = %q %q %q, want title searchflow, version 1.0.0 and a description",
			doc.Info.Title, doc.Info.Version, doc.Info.Description)
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != "http://localhost:5000" {
		t.Errorf("servers = %v, want [http://localhost:5000]", doc.Servers)
	}
	// Unknown paths and methods answer the JSON error, so every operation documents it as default.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Responses.Default() == nil {
				t.Errorf("%s %s has no default (error) response", method, path)
			}
		}
	}
}

// openAPIChecker validates real answers of the API against the document.
type openAPIChecker struct {
	doc    *openapi3.T
	router routers.Router
	// authenticate decides, for one security scheme of the document, whether a request's
	// credentials are good, as the server under test does.
	authenticate openapi3filter.AuthenticationFunc
}

func newOpenAPIChecker(t testing.TB) *openAPIChecker {
	t.Helper()
	doc := loadOpenAPI(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("router over %s: %v", openAPIFile, err)
	}
	// A server without tokens is open: whatever the document asks for, it accepts every request.
	return &openAPIChecker{doc: doc, router: router, authenticate: openapi3filter.NoopAuthenticationFunc}
}

// requiring returns a checker for a server that requires one of tokens, by the rules the
// document's security schemes state: a bearer token, or a session cookie the server issued at a
// dashboard login (sessions).
func (c *openAPIChecker) requiring(tokens []string, sessions ...string) *openAPIChecker {
	valid := func(presented string, cookie bool) bool {
		want := tokens
		if cookie {
			want = sessions
		}
		for _, w := range want {
			if presented == w {
				return true
			}
		}
		return false
	}
	cp := *c
	cp.authenticate = func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
		r := in.RequestValidationInput.Request
		switch scheme := in.SecurityScheme; {
		case scheme.Type == "http" && scheme.Scheme == "bearer":
			if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && valid(tok, false) {
				return nil
			}
		case scheme.Type == "apiKey" && scheme.In == "cookie":
			if ck, err := r.Cookie(scheme.Name); err == nil && valid(ck.Value, true) {
				return nil
			}
		case scheme.Type == "apiKey" && scheme.In == "query":
			if valid(r.URL.Query().Get(scheme.Name), false) {
				return nil
			}
		default:
			return fmt.Errorf("the checker does not know security scheme %s", in.SecuritySchemeName)
		}
		return errors.New("no valid credentials")
	}
	return &cp
}

// route finds the operation of method path as if the request, with header, went to the
// documented server: the test servers listen on other addresses, and the router matches host and
// port too.
func (c *openAPIChecker) route(t testing.TB, method, path string, header http.Header) (*openapi3filter.RequestValidationInput, error) {
	t.Helper()
	req := httptest.NewRequest(method, c.doc.Servers[0].URL+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		return nil, err
	}
	return &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: c.authenticate}}, nil
}

// check fails the test unless the document describes GET path answered with r, and agrees with
// the server on whether the request was acceptable.
func (c *openAPIChecker) check(t testing.TB, path string, r response) {
	t.Helper()
	c.checkRequest(t, path, nil, r)
}

// checkRequest is check for a request that carried header. The document and the server must
// agree on whether the request is acceptable: its credentials first (401 if not), then its
// parameters (400 if not).
func (c *openAPIChecker) checkRequest(t testing.TB, path string, header http.Header, r response) {
	t.Helper()
	ctx := context.Background()
	in, err := c.route(t, http.MethodGet, path, header)
	if err != nil {
		t.Fatalf("GET %s: not in %s: %v", path, openAPIFile, err)
	}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	var secErr *openapi3filter.SecurityRequirementsError
	wantCode := 0 // the status of a request the document rejects
	switch {
	case errors.As(reqErr, &secErr):
		wantCode = http.StatusUnauthorized
	case reqErr != nil:
		wantCode = http.StatusBadRequest
	}
	switch {
	case wantCode == 0 && (r.code == http.StatusBadRequest || r.code == http.StatusUnauthorized):
		t.Errorf("GET %s: the server answers %d (%s) but the document accepts the request", path, r.code, r.body)
	case wantCode != 0 && r.code != wantCode:
		t.Errorf("GET %s: the server answers %d but the document rejects the request (%d): %v", path, r.code, wantCode, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 r.code,
		Header:                 r.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	out.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("GET %s: answer does not match %s:\nstatus %d, Content-Type %q, X-Total-Count %q\nbody %s\n%v",
			path, openAPIFile, r.code, r.header.Get("Content-Type"), r.header.Get("X-Total-Count"), r.body, err)
	}
}

// checkError fails the test unless r carries the documented error body with status want.
func (c *openAPIChecker) checkError(t testing.TB, what string, r response, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("%s: status %d, want %d (body %s)", what, r.code, want, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var body any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("%s: body %s is not JSON: %v", what, r.body, err)
	}
	if err := c.doc.Components.Schemas["Error"].Value.VisitJSON(body, openapi3.VisitAsResponse()); err != nil {
		t.Errorf("%s: body %s does not match components/schemas/Error: %v", what, r.body, err)
	}
}

func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	c := newOpenAPIChecker(t)

	loaded := newFixture(t, nil, nil)
	load(t, loaded, fixedBatches)
	// Draining: not ready, and nothing applied yet.
	draining := newFixture(t, func(context.Context) map[string]string {
		return map[string]string{"redis": "ping: connection refused", "pipeline": "draining"}
	}, nil)
	// Redis stopped before any read, so that no client-side cached read can answer instead.
	down := newFixture(t, nil, nil)
	down.redis.Stop()

	fromLoaded := func(t testing.TB, path string) response { return get(t, loaded, path) }
	fromDraining := func(t testing.TB, path string) response { return get(t, draining, path) }
	// A short deadline of the request's own makes the read give up quickly, as in TestRedisDown.
	fromDown := func(t testing.TB, path string) response {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		down.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil).WithContext(ctx))
		return response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	}

	// /stats, /stream, /dashboard, /metrics and /openapi.json are documented but not checked here.
	tests := []struct {
		state string
		get   func(t testing.TB, path string) response
		path  string
		want  int
	}{
		{"loaded", fromLoaded, "/", http.StatusOK},
		{"loaded", fromLoaded, "/users", http.StatusOK},
		{"loaded", fromLoaded, "/hotels", http.StatusOK},
		{"loaded", fromLoaded, "/advertisers", http.StatusOK},
		{"loaded", fromLoaded, "/users?limit=2", http.StatusOK},
		{"loaded", fromLoaded, "/users?limit=2&offset=2", http.StatusOK},
		{"loaded", fromLoaded, "/hotels?offset=1&limit=3", http.StatusOK},
		{"loaded", fromLoaded, "/advertisers?offset=3&limit=100000", http.StatusOK},
		{"loaded", fromLoaded, "/advertisers?offset=1099511627776", http.StatusOK},
		{"loaded", fromLoaded, "/users?offset=5", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?limit=2", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?offset=2&limit=1", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?offset=4", http.StatusOK},
		{"loaded", fromLoaded, "/users?format=list&limit=2", http.StatusOK},
		{"loaded", fromLoaded, "/hotels?format=list", http.StatusOK},
		{"loaded", fromLoaded, "/advertisers?format=object", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?format=list", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?format=list&offset=1&limit=2", http.StatusOK},
		{"loaded", fromLoaded, "/users?format=table", http.StatusBadRequest},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?scope=cheapest_per_search", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?scope=cheapest_per_search&format=list&limit=2", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?scope=every_offer", http.StatusOK},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?scope=winners", http.StatusBadRequest},
		{"loaded", fromLoaded, "/healthz", http.StatusOK},
		{"loaded", fromLoaded, "/readyz", http.StatusOK},
		{"loaded", fromLoaded, "/users?limit=0", http.StatusBadRequest},
		{"loaded", fromLoaded, "/users?limit=100001", http.StatusBadRequest},
		{"loaded", fromLoaded, "/hotels?limit=abc", http.StatusBadRequest},
		{"loaded", fromLoaded, "/advertisers?limit=1.5", http.StatusBadRequest},
		{"loaded", fromLoaded, "/users?offset=-1", http.StatusBadRequest},
		{"loaded", fromLoaded, "/hotels?offset=1099511627777", http.StatusBadRequest},
		{"loaded", fromLoaded, "/hotel_min_offer_per_advertiser?limit=10&offset=x", http.StatusBadRequest},
		{"draining", fromDraining, "/users", http.StatusOK},
		{"draining", fromDraining, "/hotel_min_offer_per_advertiser", http.StatusOK},
		{"draining", fromDraining, "/healthz", http.StatusOK},
		{"draining", fromDraining, "/readyz", http.StatusServiceUnavailable},
		{"redis down", fromDown, "/users?limit=10", http.StatusServiceUnavailable},
		{"redis down", fromDown, "/hotel_min_offer_per_advertiser", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.state+" "+tt.path, func(t *testing.T) {
			r := tt.get(t, tt.path)
			if r.code != tt.want {
				t.Fatalf("GET %s: status %d, want %d (body %s)", tt.path, r.code, tt.want, r.body)
			}
			c.check(t, tt.path, r)
		})
	}

	// What the router does not know, the document does not list either; the answer is still the
	// documented error body.
	unknown := []struct {
		method, path string
		want         int
		routeErr     error
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, routers.ErrPathNotFound},
		{http.MethodGet, "/users/u1", http.StatusNotFound, routers.ErrPathNotFound},
		{http.MethodPost, "/users", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed},
		{http.MethodDelete, "/readyz", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed},
	}
	for _, tt := range unknown {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if _, err := c.route(t, tt.method, tt.path, nil); !errors.Is(err, tt.routeErr) {
				t.Errorf("%s %s in %s: route error %v, want %v", tt.method, tt.path, openAPIFile, err, tt.routeErr)
			}
			c.checkError(t, tt.method+" "+tt.path, do(t, loaded, tt.method, tt.path), tt.want)
		})
	}
}

// TestEveryRouteIsDocumented checks that each route the server registers is an operation of the
// document. The document may run ahead of the server, not behind it.
func TestEveryRouteIsDocumented(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	windows, err := trends.ParseWindows(trends.DefaultWindows)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, nil, WithStats(sampleStats), WithMetrics(metrics.New(), true), WithTrendWindows(windows))
	routes := f.srv.echo.Routes()
	if len(routes) == 0 {
		t.Fatal("the server registers no routes")
	}
	registered := map[string]bool{}
	for _, r := range routes {
		if r.Method == echo.RouteNotFound {
			continue
		}
		path := openAPIPath(r.Path)
		registered[r.Method+" "+path] = true
		item := doc.Paths.Value(path)
		if item == nil {
			t.Errorf("route %s %s is not a path of %s", r.Method, r.Path, openAPIFile)
			continue
		}
		if item.GetOperation(r.Method) == nil {
			t.Errorf("route %s %s: %s documents %s but not %s", r.Method, r.Path, openAPIFile, path, r.Method)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !registered[method+" "+path] {
				t.Errorf("%s %s is documented but not served", method, path)
			}
		}
	}
}

// openAPIPath turns echo's path parameters (:id) into OpenAPI templates ({id}).
func openAPIPath(echoPath string) string {
	segments := strings.Split(echoPath, "/")
	for i, s := range segments {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segments[i] = "{" + name + "}"
		}
	}
	return strings.Join(segments, "/")
}

// sampleStats has the shape of the pipeline's /stats document (the pipeline's tests validate the
// real one against the same schema).
func sampleStats() Stats {
	return Stats{
		Mode:          map[string]string{"kafka": "embedded", "redis": "external"},
		UptimeSeconds: 12.5,
		Stages: map[string]StageStats{"aggregator": {
			Running: true,
			Totals:  map[string]int64{"applied": 10, "consumed": 10},
			Rates:   map[string]map[string]float64{"1s": {"applied": 2}, "10s": {"applied": 1}, "60s": {}},
		}},
		Lag:          map[string]map[string]int64{"processed_events": {"0": 3}},
		DeadLettered: 1,
	}
}

// TestObservabilityRoutesMatchOpenAPI validates /stats, /metrics, /dashboard and /openapi.json
// against the document, and checks /stream opens as an event stream.
func TestObservabilityRoutesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	c := newOpenAPIChecker(t)
	f := newFixture(t, nil, nil, WithStats(sampleStats), WithMetrics(metrics.New(), true), WithStreamInterval(10*time.Millisecond),
		WithStreamMaxClients(1))
	for _, path := range []string{"/stats", "/metrics", "/dashboard", "/openapi.json"} {
		c.check(t, path, get(t, f, path))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.http.URL+"/stream", nil)
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, _ := io.ReadAtLeast(resp.Body, buf, 10)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(string(buf[:n]), "id: 0\ndata: {") {
		t.Errorf("/stream: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), buf[:n])
	}
	// The one stream the server allows is open: the next is turned away.
	r := get(t, f, "/stream")
	if r.code != http.StatusServiceUnavailable {
		t.Errorf("a second /stream with one allowed: %d, want 503", r.code)
	}
	c.check(t, "/stream", r)
}

// TestTokenResponsesMatchOpenAPI validates the answers of a server with tokens: the document's
// security says which requests are refused (401) and which are served, with the probes open, the
// dashboard's login answered 303, and a request with too large headers answered 431.
func TestTokenResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil, WithTokens(testTokens), WithStats(sampleStats), WithMetrics(metrics.New(), true))
	load(t, f, fixedBatches)
	login := do2(t, noRedirects(t), http.MethodGet, f.http.URL+"/dashboard?token="+url.QueryEscape(testTokens[1]), nil)
	session := ""
	for _, ck := range (&http.Response{Header: login.header}).Cookies() {
		if ck.Name == authCookie {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatalf("the dashboard login set no session cookie: %d %v", login.code, login.header)
	}
	c := newOpenAPIChecker(t).requiring(testTokens, session)
	var (
		none   = http.Header{}
		token  = http.Header{"Authorization": {"Bearer " + testTokens[0]}}
		wrong  = http.Header{"Authorization": {"Bearer not-a-token-of-this-server"}}
		cookie = http.Header{"Cookie": {authCookie + "=" + session}}
		huge   = http.Header{"Authorization": token["Authorization"], "X-Filler": {strings.Repeat("x", 70<<10)}}
	)
	tests := []struct {
		path   string
		header http.Header
		want   int
	}{
		{"/users", none, http.StatusUnauthorized},
		{"/users", wrong, http.StatusUnauthorized},
		{"/users", token, http.StatusOK},
		{"/users", cookie, http.StatusOK},
		{"/users?limit=0", token, http.StatusBadRequest},
		{"/users?limit=0", none, http.StatusUnauthorized},
		{"/hotel_min_offer_per_advertiser?limit=2", cookie, http.StatusOK},
		{"/users", huge, http.StatusRequestHeaderFieldsTooLarge},
		{"/healthz", none, http.StatusOK},
		{"/readyz", none, http.StatusOK},
		{"/healthz", huge, http.StatusRequestHeaderFieldsTooLarge},
		{"/", none, http.StatusUnauthorized},
		{"/stats", none, http.StatusUnauthorized},
		{"/stats", token, http.StatusOK},
		{"/metrics", none, http.StatusUnauthorized},
		{"/openapi.json", cookie, http.StatusOK},
		{"/dashboard", none, http.StatusUnauthorized},
		{"/dashboard", cookie, http.StatusOK},
		{"/dashboard?token=" + testTokens[1], none, http.StatusSeeOther},
		{"/dashboard?token=not-a-token-of-this-server", none, http.StatusUnauthorized},
	}
	hc := f.http.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.path, tt.want), func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, f.http.URL+tt.path, nil)
			req.Header = tt.header.Clone()
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			r := response{code: resp.StatusCode, header: resp.Header, body: body}
			if r.code != tt.want {
				t.Fatalf("GET %s: status %d, want %d (body %.200s)", tt.path, r.code, tt.want, r.body)
			}
			c.checkRequest(t, tt.path, tt.header, r)
		})
	}
}
