package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// authCookie carries the proof of a token for browsers, whose EventSource cannot send an
// Authorization header. It holds the token's SHA-256 digest rather than the token: a browser
// sends a host's cookies to every port of the host, and the digest is no bearer token anywhere.
const authCookie = "searchflow_auth"

// tokens checks credentials against the configured tokens. It keeps and compares SHA-256
// digests, in constant time and against every token, so that the time taken tells nothing of a
// token's bytes, its length or which token matched.
type tokens struct {
	digests [][sha256.Size]byte
}

func newTokens(list []string) tokens {
	var t tokens
	for _, tok := range list {
		if tok != "" {
			t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
		}
	}
	return t
}

func (t tokens) enabled() bool { return len(t.digests) > 0 }

func (t tokens) matchDigest(d []byte) bool {
	match := 0
	for _, want := range t.digests {
		match |= subtle.ConstantTimeCompare(d, want[:])
	}
	return match == 1
}

func (t tokens) match(token string) bool {
	d := sha256.Sum256([]byte(token))
	return t.matchDigest(d[:])
}

// bearer reports whether the request's Authorization header carries one of the tokens.
func (t tokens) bearer(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	return token != "" && t.match(token)
}

// cookie reports whether the request carries the cookie of one of the tokens.
func (t tokens) cookie(r *http.Request) bool {
	c, err := r.Cookie(authCookie)
	if err != nil {
		return false
	}
	d, err := hex.DecodeString(c.Value)
	return err == nil && len(d) == sha256.Size && t.matchDigest(d)
}

// The messages of a 401: the second one where there is a dashboard to log in to.
const (
	unauthorizedBearer  = "a valid bearer token is required: send Authorization: Bearer <token>"
	unauthorizedBrowser = unauthorizedBearer + ", or open /dashboard?token=<token> in a browser"
)

// requireToken lets a request through with a valid bearer token or token cookie, and answers
// 401 otherwise; the probes stay open for orchestrators, and /dashboard?token= logs a browser in.
func (s *Server) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.Path() {
		case "/healthz", "/readyz":
			return next(c)
		case "/dashboard":
			if c.QueryParams().Has("token") {
				return s.dashboardLogin(c)
			}
		}
		r := c.Request()
		if s.tokens.bearer(r) || s.tokens.cookie(r) {
			return next(c)
		}
		return s.unauthorized(c)
	}
}

func (s *Server) unauthorized(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, "Bearer")
	msg := unauthorizedBearer
	if s.opts.stats != nil {
		msg = unauthorizedBrowser
	}
	return echo.NewHTTPError(http.StatusUnauthorized, msg)
}

// dashboardLogin turns a valid ?token= into the cookie, and redirects to /dashboard so that the
// token leaves the address bar (Referrer-Policy keeps it from going on as a Referer meanwhile).
func (s *Server) dashboardLogin(c echo.Context) error {
	token := c.QueryParam("token")
	if !s.tokens.match(token) {
		return s.unauthorized(c)
	}
	d := sha256.Sum256([]byte(token))
	c.SetCookie(&http.Cookie{
		Name:     authCookie,
		Value:    hex.EncodeToString(d[:]),
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		// Scheme is https for TLS, and for a TLS-terminating proxy on a private address that
		// says so; a false claim can only keep the cookie from coming back.
		Secure: c.Scheme() == "https",
	})
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	return c.Redirect(http.StatusSeeOther, "/dashboard")
}

// RequireToken returns middleware that lets a request through only with "Authorization: Bearer
// <token>" for one of tokens, and answers anything else 401 with the JSON error body of the API
// and "WWW-Authenticate: Bearer". It is for servers beside the API, such as the admin server of
// /metrics and /debug/pprof; no tokens (or only empty ones) leaves the handler open.
func RequireToken(tokens []string) func(http.Handler) http.Handler {
	t := newTokens(tokens)
	return func(next http.Handler) http.Handler {
		if !t.enabled() {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if t.bearer(r) {
				next.ServeHTTP(w, r)
				return
			}
			body, _ := json.Marshal(map[string]any{"error": unauthorizedBearer, "status": http.StatusUnauthorized})
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(body)
		})
	}
}
