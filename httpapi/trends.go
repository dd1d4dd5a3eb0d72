package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// The trends endpoints: /trends/users, /trends/hotels, /trends/advertisers and
// /trends/hotel_min_offer_per_advertiser, the all-time endpoints' shapes over a sliding window of
// event time (?window=, one of TREND_WINDOWS; the shortest by default). X-Trends-Now says the
// "now" the window ends at: the highest event time the view has folded, not the wall clock.

// WithTrendWindows serves the trends endpoints for windows (TREND_WINDOWS); none serves them 404.
func WithTrendWindows(windows []trends.Window) Option {
	return func(o *options) { o.trendWindows = windows }
}

// trendsNowHeader carries the query's "now", RFC 3339.
const trendsNowHeader = "X-Trends-Now"

// window reads ?window=.
func (s *Server) window(c echo.Context) (trends.Window, error) {
	ws := s.opts.trendWindows
	name := c.QueryParam("window")
	if name == "" {
		return ws[0], nil
	}
	if w, ok := trends.Lookup(ws, name); ok {
		return w, nil
	}
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name()
	}
	return trends.Window{}, echo.NewHTTPError(http.StatusBadRequest,
		fmt.Sprintf("window must be one of %s, got %q", strings.Join(names, ", "), name))
}

// trendQuery reads the parameters every trends endpoint takes.
func (s *Server) trendQuery(c echo.Context) (trends.Window, pageQuery, error) {
	w, err := s.window(c)
	if err != nil {
		return w, pageQuery{}, err
	}
	q, err := readPage(c)
	return w, q, err
}

func (s *Server) trendCounts(kind view.Kind) echo.HandlerFunc {
	return func(c echo.Context) error {
		w, q, err := s.trendQuery(c)
		if err != nil {
			return err
		}
		ctx, cancel, v, err := s.reader(c)
		if err != nil {
			return err
		}
		defer cancel()
		page, err := v.TrendCounts(ctx, kind, w.Size, q.offset, q.limit)
		if err != nil {
			return trendError(ctx, w, fmt.Errorf("read %s trends: %w", kind, err))
		}
		nowHeader(c, page.Now)
		pageHeaders(c, page.Total, q.offset, len(page.Entries))
		return c.JSONBlob(http.StatusOK, countsBody(page.Total, page.Entries, q.list))
	}
}

func (s *Server) trendMinPrices(c echo.Context) error {
	w, q, err := s.trendQuery(c)
	if err != nil {
		return err
	}
	ctx, cancel, v, err := s.reader(c)
	if err != nil {
		return err
	}
	defer cancel()
	page, err := v.TrendMinPrices(ctx, w.Size, q.offset, q.limit)
	if err != nil {
		return trendError(ctx, w, fmt.Errorf("read trend min prices: %w", err))
	}
	nowHeader(c, page.Now)
	pageHeaders(c, page.Total, q.offset, len(page.Hotels))
	return c.JSONBlob(http.StatusOK, minPricesBody(page.Hotels, q.list))
}

// nowHeader sets X-Trends-Now; a view that holds no event yet has no now and sends none.
func nowHeader(c echo.Context, now trends.StreamTime) {
	if now.Set {
		c.Response().Header().Set(trendsNowHeader, time.Unix(now.T, 0).UTC().Format(time.RFC3339))
	}
}

// trendError answers 409 for a window the view does not keep (built with other TREND_WINDOWS,
// or before trends), else as every read of the view.
func trendError(ctx context.Context, w trends.Window, err error) error {
	if errors.Is(err, view.ErrNoTrends) {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("the view keeps no %s window: it was built "+
			"with other TREND_WINDOWS or ALLOWED_LATENESS, or before trends; rebuild it (searchflow rebuild --all)", w.Name()))
	}
	return readError(ctx, err)
}

// openAPIFor returns the OpenAPI document with the window parameter's values set to windows
// (the document lists the defaults, 1h and 24h).
func openAPIFor(windows []trends.Window) ([]byte, error) {
	if len(windows) == 0 {
		return openAPIJSON, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(openAPIJSON, &doc); err != nil {
		return nil, fmt.Errorf("httpapi: read openapi.json: %w", err)
	}
	names := make([]any, len(windows))
	for i, w := range windows {
		names[i] = w.Name()
	}
	param, _ := lookup(doc, "components", "parameters", "Window", "schema").(map[string]any)
	if param == nil {
		return nil, errors.New("httpapi: openapi.json has no components.parameters.Window.schema")
	}
	param["enum"] = names
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("httpapi: write openapi.json: %w", err)
	}
	return out, nil
}

// lookup walks nested JSON objects by key; nil when a key is missing.
func lookup(doc map[string]any, keys ...string) any {
	var cur any = doc
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}
