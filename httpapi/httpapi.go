// Package httpapi serves the metrics of the Redis view over HTTP with echo. It only reads the
// view; it never builds Redis keys.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/jsonw"
	"github.com/searchflow/searchflow/metrics"
	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// Paging limits of every list endpoint.
const (
	DefaultLimit = 1000
	MaxLimit     = 100000
)

// readTimeout bounds each request's reads of the view: the Redis client retries reads while
// Redis is away, and a request must not wait for it indefinitely.
const readTimeout = 5 * time.Second

// storeUnavailable is the message of a 503 for a read of the view that Redis cannot serve now.
const storeUnavailable = "metrics store unavailable, try again later"

// maxHeaderBytes is the most bytes of header names and values a request may carry. net/http
// enforces http.Server.MaxHeaderBytes itself, before any handler runs, and answers in plain
// text; so the server's own cap is the higher serverMaxHeaderBytes and limitHeaders enforces this
// one with the JSON error every other failure has. Only requests past serverMaxHeaderBytes still
// get net/http's plain-text 431.
const (
	maxHeaderBytes       = 64 << 10
	serverMaxHeaderBytes = 1 << 20
)

// Readiness reports what keeps the process from serving fresh data; an empty map means ready.
type Readiness func(ctx context.Context) map[string]string

// Server is the HTTP API.
type Server struct {
	store  atomic.Pointer[view.View] // nil until SetView: Redis not reached yet
	ready  Readiness
	log    *zap.Logger
	echo   *echo.Echo
	http   *http.Server
	opts   options
	tokens tokens       // empty: every route is open
	live   *broadcaster // feeds /stream
	// openAPIDoc is openapi.json with this server's trend windows.
	openAPIDoc []byte
}

type options struct {
	stats         func() Stats
	metrics       *metrics.Metrics
	metricsOnMain bool
	corsOrigins   []string
	streamEvery   time.Duration
	streamMax     int
	tokens        []string
	trendWindows  []trends.Window
}

// Option configures the server.
type Option func(*options)

// WithStats serves /stats, /stream and /dashboard from stats, a snapshot of the pipeline's
// numbers.
func WithStats(stats func() Stats) Option { return func(o *options) { o.stats = stats } }

// WithMetrics records every request in m, and serves m on /metrics when onMain is true (else the
// admin server does).
func WithMetrics(m *metrics.Metrics, onMain bool) Option {
	return func(o *options) { o.metrics, o.metricsOnMain = m, onMain }
}

// WithCORS allows cross-origin reads from origins ("*" for any).
func WithCORS(origins []string) Option { return func(o *options) { o.corsOrigins = origins } }

// WithStreamInterval sets how often /stream sends an update (default 1 s).
func WithStreamInterval(d time.Duration) Option { return func(o *options) { o.streamEvery = d } }

// WithStreamMaxClients caps the /stream clients served at once; one more is answered 503
// (default DefaultStreamMaxClients; n < 1 keeps the default).
func WithStreamMaxClients(n int) Option { return func(o *options) { o.streamMax = n } }

// WithTokens requires one of tokens on every route but the probes /healthz and /readyz: as
// "Authorization: Bearer <token>", or as the cookie that /dashboard?token=<token> sets for
// browsers. Empty strings are ignored; no tokens leaves every route open.
func WithTokens(tokens []string) Option { return func(o *options) { o.tokens = tokens } }

// New returns the API over v; ready backs /readyz.
func New(v *view.View, ready Readiness, log *zap.Logger, opts ...Option) *Server {
	if ready == nil {
		ready = func(context.Context) map[string]string { return nil }
	}
	s := &Server{ready: ready, log: log, echo: echo.New(),
		opts: options{streamEvery: time.Second, streamMax: DefaultStreamMaxClients}}
	for _, o := range opts {
		o(&s.opts)
	}
	if v != nil {
		s.store.Store(v)
	}
	if s.opts.streamMax < 1 {
		s.opts.streamMax = DefaultStreamMaxClients
	}
	s.tokens = newTokens(s.opts.tokens)
	doc, err := openAPIFor(s.opts.trendWindows)
	if err != nil {
		// The document is embedded and tested: this is a build defect, not a run-time condition.
		log.Error("httpapi: serving openapi.json without the trend windows", zap.Error(err))
		doc = openAPIJSON
	}
	s.openAPIDoc = doc
	s.live = newBroadcaster(s.opts.streamEvery, s.opts.streamMax, s.encodeSnapshot, log)
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestID())
	if m := s.opts.metrics; m != nil {
		e.Use(observe(m))
	}
	e.Use(middleware.Recover())
	e.Use(limitHeaders(maxHeaderBytes))
	if len(s.opts.corsOrigins) > 0 {
		// Before the token check: a preflight carries no credentials, and a 401 needs the CORS
		// headers for the browser to show it to the page.
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{AllowOrigins: s.opts.corsOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodHead, http.MethodOptions},
			ExposeHeaders: []string{"X-Total-Count", "X-Truncated", "Link", trendsNowHeader, echo.HeaderXRequestID}}))
	}
	if s.tokens.enabled() {
		e.Use(s.requireToken)
	}
	e.Use(middleware.GzipWithConfig(middleware.GzipConfig{MinLength: 1024,
		// The event stream is flushed event by event; compressing it would hold events back.
		// /metrics compresses itself (promhttp): twice would leave a scraper with gzip inside gzip.
		Skipper: func(c echo.Context) bool { return c.Path() == "/stream" || c.Path() == "/metrics" }}))
	routeGET(e, "/", s.welcome)
	routeGET(e, "/healthz", s.healthz)
	routeGET(e, "/readyz", s.readyz)
	routeGET(e, "/users", s.counts(view.Users))
	routeGET(e, "/hotels", s.counts(view.Hotels))
	routeGET(e, "/advertisers", s.counts(view.Advertisers))
	routeGET(e, "/hotel_min_offer_per_advertiser", s.minPrices)
	if len(s.opts.trendWindows) > 0 {
		routeGET(e, "/trends/users", s.trendCounts(view.Users))
		routeGET(e, "/trends/hotels", s.trendCounts(view.Hotels))
		routeGET(e, "/trends/advertisers", s.trendCounts(view.Advertisers))
		routeGET(e, "/trends/hotel_min_offer_per_advertiser", s.trendMinPrices)
	}
	routeGET(e, "/openapi.json", s.openAPI)
	if s.opts.stats != nil {
		routeGET(e, "/stats", s.statsHandler)
		routeGET(e, "/stream", s.stream)
		routeGET(e, "/dashboard", s.dashboard)
	}
	if s.opts.metrics != nil && s.opts.metricsOnMain {
		routeGET(e, "/metrics", echo.WrapHandler(s.opts.metrics.Handler()))
	}
	s.http = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    serverMaxHeaderBytes,
	}
	return s
}

// routeGET serves h on GET and HEAD. net/http answers a HEAD with the status and headers the
// handler sets, Content-Length included, and discards the body it writes, so HEAD needs no
// handler of its own; only /stream looks at the method, so as not to stay open.
func routeGET(e *echo.Echo, path string, h echo.HandlerFunc) {
	e.Match([]string{http.MethodGet, http.MethodHead}, path, h)
}

// limitHeaders answers 431 to a request whose header names and values add up to more than limit
// bytes.
func limitHeaders(limit int) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			n := len("Host") + len(r.Host) // net/http moves Host out of r.Header
			for name, values := range r.Header {
				for _, v := range values {
					n += len(name) + len(v)
				}
			}
			if n > limit {
				return echo.NewHTTPError(http.StatusRequestHeaderFieldsTooLarge,
					fmt.Sprintf("request header fields too large: at most %d bytes of names and values", limit))
			}
			return next(c)
		}
	}
}

// SetView gives the server the view to read once Redis is reached. Until then the metric
// endpoints answer 503 while /healthz and /readyz already serve: the process can say why it is
// not ready before its services answer.
func (s *Server) SetView(v *view.View) { s.store.Store(v) }

// errNotConnected answers a metric read before Redis was reached.
var errNotConnected = echo.NewHTTPError(http.StatusServiceUnavailable, "metrics store not connected yet, try again later")

// view returns the view, or the 503 to answer while there is none.
func (s *Server) view() (*view.View, error) {
	if v := s.store.Load(); v != nil {
		return v, nil
	}
	return nil, errNotConnected
}

// reader returns what a request reads the view with: the view, and a context bounded by
// readTimeout (cancel it when done).
func (s *Server) reader(c echo.Context) (context.Context, context.CancelFunc, *view.View, error) {
	v, err := s.view()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
	return ctx, cancel, v, nil
}

// Handler returns the routes, for tests that serve them with httptest.
func (s *Server) Handler() http.Handler { return s.echo }

// Serve answers on ln until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("httpapi: serve: %w", err)
	}
	return nil
}

// Shutdown ends the event streams, stops accepting connections and waits for requests in
// flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.live.close()
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("httpapi: shutdown: %w", err)
	}
	return nil
}

func (s *Server) welcome(c echo.Context) error {
	return c.String(http.StatusOK, "Welcome to searchflow: live hotel-search metrics. "+
		"Try /users, /hotels, /advertisers and /hotel_min_offer_per_advertiser (?limit=&offset=&format=list); "+
		"watch it live on /dashboard; the API is described at /openapi.json.\n")
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if problems := s.ready(ctx); len(problems) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// page reads ?limit= and ?offset=.
func page(c echo.Context) (offset, limit int, err error) {
	limit, offset = DefaultLimit, 0
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > MaxLimit {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("limit must be an integer in 1..%d, got %q", MaxLimit, v))
		}
	}
	if v := c.QueryParam("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 || offset > 1<<40 {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("offset must be an integer >= 0, got %q", v))
		}
	}
	return offset, limit, nil
}

// pageHeaders tells the size of the whole list (X-Total-Count), and, when the page of n entries
// from offset does not end it, says so (X-Truncated: true) with the next page's link (Link,
// rel="next": this request with offset moved past the page). A client written for the original
// project, which answered every entry, then sees that it got a part.
func pageHeaders(c echo.Context, total int64, offset, n int) {
	h := c.Response().Header()
	h.Set("X-Total-Count", strconv.FormatInt(total, 10))
	if int64(offset+n) >= total || n == 0 {
		return
	}
	next := *c.Request().URL
	q := next.Query()
	q.Set("offset", strconv.Itoa(offset+n))
	next.RawQuery = q.Encode()
	h.Set("X-Truncated", "true")
	h.Set("Link", "<"+next.RequestURI()+`>; rel="next"`)
}

// listForm reads ?format=: "object" (the default, the original project's form) or "list", an
// array whose order survives clients that reorder an object's members (JavaScript puts
// integer-like keys first; Go maps have no order).
func listForm(c echo.Context) (bool, error) {
	switch v := c.QueryParam("format"); v {
	case "", "object":
		return false, nil
	case "list":
		return true, nil
	default:
		return false, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("format must be object or list, got %q", v))
	}
}

// priceScope reads ?scope= of /hotel_min_offer_per_advertiser: every_offer (the default: each
// advertiser's lowest price over all its offers, what the endpoint is documented to mean) or
// cheapest_per_search (its lowest price among the searches it won, the original project's numbers).
func priceScope(c echo.Context) (view.PriceScope, error) {
	switch v := c.QueryParam("scope"); v {
	case "", "every_offer":
		return view.EveryOffer, nil
	case "cheapest_per_search":
		return view.CheapestPerSearch, nil
	default:
		return 0, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("scope must be every_offer or cheapest_per_search, got %q", v))
	}
}

// pageQuery is what every list endpoint reads: ?offset=, ?limit= and ?format=.
type pageQuery struct {
	offset, limit int
	list          bool
}

func readPage(c echo.Context) (pageQuery, error) {
	offset, limit, err := page(c)
	if err != nil {
		return pageQuery{}, err
	}
	list, err := listForm(c)
	return pageQuery{offset: offset, limit: limit, list: list}, err
}

func (s *Server) counts(kind view.Kind) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := readPage(c)
		if err != nil {
			return err
		}
		ctx, cancel, v, err := s.reader(c)
		if err != nil {
			return err
		}
		defer cancel()
		total, entries, err := v.Counts(ctx, kind, q.offset, q.limit)
		if err != nil {
			return readError(ctx, fmt.Errorf("read %s: %w", kind, err))
		}
		pageHeaders(c, total, q.offset, len(entries))
		return c.JSONBlob(http.StatusOK, countsBody(total, entries, q.list))
	}
}

// countsBody is a page of counts as appendCounts writes it.
func countsBody(total int64, entries []view.Entry, list bool) []byte {
	return appendCounts(make([]byte, 0, 64+len(entries)*48), total, entries, list)
}

// appendCounts writes a page of counts: {"count":N,"data":{"<id>":n,...}}, or with list
// {"count":N,"data":[{"id":"<id>","count":n},...]}. Built by hand: a Go map would lose the
// count-descending order.
func appendCounts(buf []byte, total int64, entries []view.Entry, list bool) []byte {
	open, close := `,"data":{`, "}}"
	if list {
		open, close = `,"data":[`, "]}"
	}
	buf = append(buf, `{"count":`...)
	buf = strconv.AppendInt(buf, total, 10)
	buf = append(buf, open...)
	for i, e := range entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		if list {
			buf = append(buf, `{"id":`...)
			buf = jsonw.AppendString(buf, e.ID)
			buf = append(buf, `,"count":`...)
			buf = strconv.AppendInt(buf, e.Count, 10)
			buf = append(buf, '}')
			continue
		}
		buf = jsonw.AppendString(buf, e.ID)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, e.Count, 10)
	}
	return append(buf, close...)
}

func (s *Server) minPrices(c echo.Context) error {
	q, err := readPage(c)
	if err != nil {
		return err
	}
	scope, err := priceScope(c)
	if err != nil {
		return err
	}
	ctx, cancel, v, err := s.reader(c)
	if err != nil {
		return err
	}
	defer cancel()
	total, hotels, err := v.ScopedMinPrices(ctx, scope, q.offset, q.limit)
	if errors.Is(err, view.ErrScopeUnavailable) {
		return echo.NewHTTPError(http.StatusConflict, err.Error())
	}
	if err != nil {
		return readError(ctx, fmt.Errorf("read min prices: %w", err))
	}
	pageHeaders(c, total, q.offset, len(hotels))
	return c.JSONBlob(http.StatusOK, minPricesBody(hotels, q.list))
}

// minPricesBody is a page of minimum prices in the object form (appendMinPrices) or the list form
// (appendMinPricesList).
func minPricesBody(hotels []view.HotelPrices, list bool) []byte {
	buf := make([]byte, 0, 64+len(hotels)*128)
	if list {
		return appendMinPricesList(buf, hotels)
	}
	return appendMinPrices(buf, hotels)
}

// appendMinPrices writes the original project's form: {"<hotel>":{"<advertiser>":price,...},...},
// hotels in page order, advertisers by name.
func appendMinPrices(buf []byte, hotels []view.HotelPrices) []byte {
	buf = append(buf, '{')
	names := make([]string, 0, 16)
	for i, h := range hotels {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = jsonw.AppendString(buf, h.HotelID)
		buf = append(buf, ":{"...)
		names = advertiserNames(names, h.Prices)
		sort.Strings(names)
		for j, adv := range names {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = jsonw.AppendString(buf, adv)
			buf = append(buf, ':')
			buf = strconv.AppendInt(buf, h.Prices[adv], 10)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// advertiserNames refills names with the advertisers of prices, in no order.
func advertiserNames(names []string, prices map[string]int64) []string {
	names = names[:0]
	for adv := range prices {
		names = append(names, adv)
	}
	return names
}

// appendMinPricesList writes the list form:
// [{"hotel_id":"<hotel>","advertisers":[{"advertiser":"<name>","eurocents":n},...]},...], hotels in
// page order, each hotel's advertisers cheapest first (ties by name).
func appendMinPricesList(buf []byte, hotels []view.HotelPrices) []byte {
	buf = append(buf, '[')
	names := make([]string, 0, 16)
	for i, h := range hotels {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"hotel_id":`...)
		buf = jsonw.AppendString(buf, h.HotelID)
		buf = append(buf, `,"advertisers":[`...)
		names = advertiserNames(names, h.Prices)
		sort.Slice(names, func(a, b int) bool {
			pa, pb := h.Prices[names[a]], h.Prices[names[b]]
			return pa < pb || pa == pb && names[a] < names[b]
		})
		for j, adv := range names {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"advertiser":`...)
			buf = jsonw.AppendString(buf, adv)
			buf = append(buf, `,"eurocents":`...)
			buf = strconv.AppendInt(buf, h.Prices[adv], 10)
			buf = append(buf, '}')
		}
		buf = append(buf, "]}"...)
	}
	return append(buf, ']')
}

// readError answers 503 (cause logged) when Redis cannot serve the read now: it cannot be
// reached, did not answer in time, or said so in an error reply (see temporarilyUnable). Any other
// error reply, such as WRONGTYPE, means a bug or a damaged view: a 500.
func readError(ctx context.Context, err error) error {
	// The view wraps what rueidis returns, so rueidis.IsRedisErr, a plain type assertion, would
	// not see the reply.
	var reply *rueidis.RedisError
	if errors.As(err, &reply) && ctx.Err() == nil && !temporarilyUnable(reply) {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return err // the client went away
	}
	return &echo.HTTPError{Code: http.StatusServiceUnavailable, Message: storeUnavailable, Internal: err}
}

// temporarilyUnable reports whether an error reply says that Redis cannot serve now but will
// again without anyone repairing the data; the view owns the list of such replies.
func temporarilyUnable(reply *rueidis.RedisError) bool { return view.TemporarilyUnavailable(reply) }

// handleError answers every error as JSON: the HTTP errors the handlers chose, 404/405 from the
// router, and 500 for anything else (logged, without internals in the body).
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		code, msg = he.Code, fmt.Sprint(he.Message)
		if he.Internal != nil {
			s.log.Warn("request failed", zap.String("path", c.Path()), zap.Int("status", code),
				zap.String("request_id", requestID(c)), zap.Error(he.Internal))
		}
	case errors.Is(c.Request().Context().Err(), context.Canceled):
		s.log.Debug("client went away", zap.String("path", c.Path()), zap.Error(err))
	default:
		s.log.Error("request failed", zap.String("path", c.Path()), zap.String("request_id", requestID(c)), zap.Error(err))
	}
	if jerr := c.JSON(code, map[string]any{"error": msg, "status": code}); jerr != nil {
		s.log.Debug("write error response", zap.Error(jerr))
	}
}
