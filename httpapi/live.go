package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/searchflow/searchflow/metrics"
	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

//go:embed dashboard.html
var dashboardHTML []byte

//go:embed openapi.json
var openAPIJSON []byte

func (s *Server) openAPI(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, s.openAPIDoc)
}

func (s *Server) dashboard(c echo.Context) error {
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", dashboardHTML)
}

func (s *Server) statsHandler(c echo.Context) error {
	return c.JSON(http.StatusOK, s.opts.stats())
}

// Cheapest is one hotel's cheapest advertiser, for the dashboard.
type Cheapest struct {
	Hotel      string `json:"hotel"`
	Advertiser string `json:"advertiser"`
	Price      int64  `json:"price"`
}

// liveUpdate is one /stream event: the stats and the current top lists.
type liveUpdate struct {
	Stats    Stats                 `json:"stats"`
	Top      map[string][]topEntry `json:"top"`
	Cheapest []Cheapest            `json:"cheapest"`
	Trending *trending             `json:"trending,omitempty"` // absent when the view keeps no trends
}

// trending is the top hotels of the dashboard's window: "1h" when configured, else the shortest.
type trending struct {
	Window string     `json:"window"`
	Now    string     `json:"now,omitempty"` // RFC 3339, as X-Trends-Now
	Hotels []topEntry `json:"hotels"`
}

type topEntry struct {
	ID    string `json:"id"`
	Count int64  `json:"count"`
}

const topN = 10

// snapshot reads the numbers one stream event carries.
func (s *Server) snapshot(ctx context.Context) (liveUpdate, error) {
	u := liveUpdate{Stats: s.opts.stats(), Top: map[string][]topEntry{}}
	v, err := s.view()
	if err != nil {
		return u, err
	}
	for _, kind := range []view.Kind{view.Users, view.Hotels, view.Advertisers} {
		_, entries, err := v.Counts(ctx, kind, 0, topN)
		if err != nil {
			return u, err
		}
		list := make([]topEntry, len(entries))
		for i, e := range entries {
			list[i] = topEntry{ID: e.ID, Count: e.Count}
		}
		u.Top[string(kind)] = list
	}
	_, hotels, err := v.MinPrices(ctx, 0, topN)
	if err != nil {
		return u, err
	}
	for _, h := range hotels {
		best := Cheapest{Hotel: h.HotelID}
		for adv, price := range h.Prices {
			if best.Advertiser == "" || price < best.Price || price == best.Price && adv < best.Advertiser {
				best.Advertiser, best.Price = adv, price
			}
		}
		u.Cheapest = append(u.Cheapest, best)
	}
	u.Trending, err = s.trending(ctx, v)
	return u, err
}

// trending reads the top hotels of the dashboard's window; nil when the server or the view has
// no such window.
func (s *Server) trending(ctx context.Context, v *view.View) (*trending, error) {
	ws := s.opts.trendWindows
	if len(ws) == 0 {
		return nil, nil
	}
	w, ok := trends.Lookup(ws, "1h")
	if !ok {
		w = ws[0]
	}
	page, err := v.TrendCounts(ctx, view.Hotels, w.Size, 0, topN)
	if errors.Is(err, view.ErrNoTrends) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := &trending{Window: w.Name(), Hotels: make([]topEntry, len(page.Entries))}
	if page.Now.Set {
		out.Now = time.Unix(page.Now.T, 0).UTC().Format(time.RFC3339)
	}
	for i, e := range page.Entries {
		out.Hotels[i] = topEntry{ID: e.ID, Count: e.Count}
	}
	return out, nil
}

// encodeSnapshot reads the numbers of one stream event and encodes them as the event's data.
func (s *Server) encodeSnapshot(ctx context.Context) ([]byte, error) {
	u, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("encode stream event: %w", err)
	}
	return data, nil
}

// observe records each request's route, status and duration.
func observe(m *metrics.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			var he *echo.HTTPError
			if err != nil && errors.As(err, &he) {
				status = he.Code
			} else if err != nil && !c.Response().Committed {
				status = http.StatusInternalServerError
			}
			m.HTTPRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
			m.HTTPSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
			return err
		}
	}
}

func requestID(c echo.Context) string {
	if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
		return id
	}
	return c.Request().Header.Get(echo.HeaderXRequestID)
}
