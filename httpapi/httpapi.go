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
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/jsonw"
	"github.com/searchflow/searchflow/metrics"
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

// errStoreUnavailable answers a read that ran out of time.
var errStoreUnavailable = echo.NewHTTPError(http.StatusServiceUnavailable, "metrics store unavailable, try again later")

// Readiness reports what keeps the process from serving fresh data; an empty map means ready.
type Readiness func(ctx context.Context) map[string]string

// Server is the HTTP API.
type Server struct {
	view    *view.View
	ready   Readiness
	log     *zap.Logger
	echo    *echo.Echo
	http    *http.Server
	opts    options
	closing chan struct{} // closed by Shutdown: ends the event streams
}

type options struct {
	stats         func() any
	metrics       *metrics.Metrics
	metricsOnMain bool
	corsOrigins   []string
	streamEvery   time.Duration
}

// Option configures the server.
type Option func(*options)

// WithStats serves /stats, /stream and /dashboard from stats, a snapshot of the pipeline's
// numbers (anything that encodes to JSON).
func WithStats(stats func() any) Option { return func(o *options) { o.stats = stats } }

// WithMetrics records every request in m, and serves m on /metrics when onMain is true (else the
// admin server does).
func WithMetrics(m *metrics.Metrics, onMain bool) Option {
	return func(o *options) { o.metrics, o.metricsOnMain = m, onMain }
}

// WithCORS allows cross-origin reads from origins ("*" for any).
func WithCORS(origins []string) Option { return func(o *options) { o.corsOrigins = origins } }

// WithStreamInterval sets how often /stream sends an update (default 1 s).
func WithStreamInterval(d time.Duration) Option { return func(o *options) { o.streamEvery = d } }

// New returns the API over v; ready backs /readyz.
func New(v *view.View, ready Readiness, log *zap.Logger, opts ...Option) *Server {
	if ready == nil {
		ready = func(context.Context) map[string]string { return nil }
	}
	s := &Server{view: v, ready: ready, log: log, echo: echo.New(), closing: make(chan struct{}),
		opts: options{streamEvery: time.Second}}
	for _, o := range opts {
		o(&s.opts)
	}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestID())
	if m := s.opts.metrics; m != nil {
		e.Use(observe(m))
	}
	e.Use(middleware.Recover())
	if len(s.opts.corsOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{AllowOrigins: s.opts.corsOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodHead, http.MethodOptions},
			ExposeHeaders: []string{"X-Total-Count", echo.HeaderXRequestID}}))
	}
	e.Use(middleware.GzipWithConfig(middleware.GzipConfig{MinLength: 1024,
		// The event stream is flushed event by event; compressing it would hold events back.
		Skipper: func(c echo.Context) bool { return c.Path() == "/stream" }}))
	e.GET("/", s.welcome)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/users", s.counts(view.Users))
	e.GET("/hotels", s.counts(view.Hotels))
	e.GET("/advertisers", s.counts(view.Advertisers))
	e.GET("/hotel_min_offer_per_advertiser", s.minPrices)
	e.GET("/openapi.json", s.openAPI)
	if s.opts.stats != nil {
		e.GET("/stats", s.statsHandler)
		e.GET("/stream", s.stream)
		e.GET("/dashboard", s.dashboard)
	}
	if s.opts.metrics != nil && s.opts.metricsOnMain {
		e.GET("/metrics", echo.WrapHandler(s.opts.metrics.Handler()))
	}
	s.http = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	return s
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

// Shutdown stops accepting connections and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("httpapi: shutdown: %w", err)
	}
	return nil
}

func (s *Server) welcome(c echo.Context) error {
	return c.String(http.StatusOK, "Welcome to searchflow: live hotel-search metrics. "+
		"Try /users, /hotels, /advertisers and /hotel_min_offer_per_advertiser (?limit=&offset=); "+
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

func (s *Server) counts(kind view.Kind) echo.HandlerFunc {
	return func(c echo.Context) error {
		offset, limit, err := page(c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
		defer cancel()
		total, entries, err := s.view.Counts(ctx, kind, offset, limit)
		if err != nil {
			return readError(ctx, fmt.Errorf("read %s: %w", kind, err))
		}
		// Built by hand: a Go map would lose the count-descending order.
		buf := make([]byte, 0, 64+len(entries)*48)
		buf = append(buf, `{"count":`...)
		buf = strconv.AppendInt(buf, total, 10)
		buf = append(buf, `,"data":{`...)
		for i, e := range entries {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = jsonw.AppendString(buf, e.ID)
			buf = append(buf, ':')
			buf = strconv.AppendInt(buf, e.Count, 10)
		}
		buf = append(buf, "}}"...)
		c.Response().Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
		return c.JSONBlob(http.StatusOK, buf)
	}
}

func (s *Server) minPrices(c echo.Context) error {
	offset, limit, err := page(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
	defer cancel()
	total, hotels, err := s.view.MinPrices(ctx, offset, limit)
	if err != nil {
		return readError(ctx, fmt.Errorf("read min prices: %w", err))
	}
	buf := make([]byte, 0, 64+len(hotels)*128)
	buf = append(buf, '{')
	names := make([]string, 0, 16)
	for i, h := range hotels {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = jsonw.AppendString(buf, h.HotelID)
		buf = append(buf, ":{"...)
		names = names[:0]
		for adv := range h.Prices {
			names = append(names, adv)
		}
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
	buf = append(buf, '}')
	c.Response().Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
	return c.JSONBlob(http.StatusOK, buf)
}

// readError answers 503 when Redis cannot be reached or did not answer in time (logged), and
// leaves anything else, such as an error reply from Redis, a 500.
func readError(ctx context.Context, err error) error {
	if _, isReply := rueidis.IsRedisErr(err); isReply && ctx.Err() == nil {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return err // the client went away
	}
	return &echo.HTTPError{Code: http.StatusServiceUnavailable, Message: errStoreUnavailable.Message, Internal: err}
}

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
