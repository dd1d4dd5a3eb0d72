package httpapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// authCookie carries a browser session, since a browser's EventSource cannot send an
// Authorization header. It holds no token and no digest of one: "<expiry>.<MAC>", where the MAC
// (HMAC-SHA256 under a key drawn at start) binds the expiry to the token that logged in. A
// browser sends a host's cookies to every port of the host, so the cookie proves nothing to any
// other server, ends after sessionTTL, and every session ends when the process restarts.
const authCookie = "searchflow_auth"

// sessionTTL is how long a dashboard login lasts.
const sessionTTL = 12 * time.Hour

// tokens checks credentials against the configured tokens. It keeps and compares SHA-256
// digests, in constant time and against every token, so that the time taken tells nothing of a
// token's bytes, its length or which token matched.
type tokens struct {
	digests [][sha256.Size]byte
	key     []byte // signs session cookies; drawn at start
}

func newTokens(list []string) tokens {
	var t tokens
	for _, tok := range list {
		if tok != "" {
			t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
		}
	}
	t.key = make([]byte, 32)
	_, _ = rand.Read(t.key) // crypto/rand.Read never fails (Go 1.24+)
	return t
}

// session returns the cookie value of a login with the token of digest d, valid until expiry.
func (t tokens) session(d []byte, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return exp + "." + hex.EncodeToString(t.mac(exp, d))
}

func (t tokens) mac(exp string, d []byte) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(exp))
	m.Write([]byte{0})
	m.Write(d)
	return m.Sum(nil)
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

// cookie reports whether the request carries an unexpired session cookie of one of the tokens.
func (t tokens) cookie(r *http.Request, now time.Time) bool {
	c, err := r.Cookie(authCookie)
	if err != nil {
		return false
	}
	exp, sum, ok := strings.Cut(c.Value, ".")
	if !ok {
		return false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	got, herr := hex.DecodeString(sum)
	if err != nil || herr != nil || now.Unix() >= unix {
		return false
	}
	match := 0
	for _, d := range t.digests {
		match |= subtle.ConstantTimeCompare(got, t.mac(exp, d[:]))
	}
	return match == 1
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
		if s.tokens.bearer(r) || s.tokens.cookie(r, time.Now()) {
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
		Value:    s.tokens.session(d[:], time.Now().Add(sessionTTL)),
		MaxAge:   int(sessionTTL.Seconds()),
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
