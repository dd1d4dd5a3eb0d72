package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// trendNow is the event time of the trend fixture's latest event.
const trendNow = 1_700_000_000

// newTrendFixture serves windows over a view that keeps the trends of kept (the same windows,
// or fewer to see a 409), holding a few on-time events of both shards of partition 0.
func newTrendFixture(t *testing.T, windows, kept string) *fixture {
	t.Helper()
	ws, err := trends.ParseWindows(windows)
	if err != nil {
		t.Fatal(err)
	}
	keptWs, err := trends.ParseWindows(kept)
	if err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	v := view.New(rs.Client(t))
	spec := view.TrendSpec{Windows: keptWs, Lateness: 5 * time.Minute}
	layout := view.Layout{UsersTopic: "t", Users: 2, HotelsTopic: "t-hotels", Hotels: 2, Trends: spec.String()}
	if err := v.Claim(context.Background(), layout); err != nil {
		t.Fatal(err)
	}
	events := []struct {
		at          int64
		user, hotel string
		prices      map[string]int64
	}{
		{trendNow - 7200, "u1", "h1", map[string]int64{"a": 50}}, // in 24h only
		{trendNow - 60, "u1", "h1", map[string]int64{"a": 70, "b": 90}},
		{trendNow, "u2", "h2", map[string]int64{"b": 80}},
	}
	n := len(keptWs)
	for _, r := range []view.Role{view.UserShards, view.HotelShards} {
		b := view.NewBatch()
		var st trends.StreamTime
		for _, e := range events {
			st.Observe(e.at, spec.Lateness)
			for i, w := range keptWs {
				k := w.BucketOf(e.at)
				if r == view.UserShards {
					b.TrendCount(0, n, i, k, view.Users, e.user)
					continue
				}
				b.TrendCount(0, n, i, k, view.Hotels, e.hotel)
				for adv, p := range e.prices {
					b.TrendCount(0, n, i, k, view.Advertisers, adv)
					b.TrendPrice(0, n, i, k, e.hotel, adv, p)
				}
			}
		}
		b.StreamTimes(0, n, trends.StreamTime{}, st)
		b.Offsets[0] = view.PartitionOffsets{Expect: view.NoOffset, Next: int64(len(events))}
		if err := v.Apply(context.Background(), r, b); err != nil {
			t.Fatal(err)
		}
	}
	srv := New(v, alwaysReady, zaptest.NewLogger(t), WithTrendWindows(ws))
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &fixture{redis: rs, view: v, srv: srv, http: hs}
}

// TestTrendResponsesMatchOpenAPI: the trends endpoints' answers, their X-Trends-Now and their
// errors, as the document describes them.
func TestTrendResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	c := newOpenAPIChecker(t)
	f := newTrendFixture(t, "1h,24h", "1h,24h")
	only1h := newTrendFixture(t, "1h,24h", "1h")
	now := time.Unix(trendNow, 0).UTC().Format(time.RFC3339)
	tests := []struct {
		f    *fixture
		path string
		want int
		body string
	}{
		{f, "/trends/users", http.StatusOK, `{"count":2,"data":{"u1":1,"u2":1}}`},
		{f, "/trends/users?window=24h", http.StatusOK, `{"count":2,"data":{"u1":2,"u2":1}}`},
		{f, "/trends/users?window=24h&limit=1&offset=1", http.StatusOK, `{"count":2,"data":{"u2":1}}`},
		{f, "/trends/hotels?format=list", http.StatusOK, `{"count":2,"data":[{"id":"h1","count":1},{"id":"h2","count":1}]}`},
		{f, "/trends/advertisers?window=24h", http.StatusOK, `{"count":2,"data":{"a":2,"b":2}}`},
		{f, "/trends/hotel_min_offer_per_advertiser", http.StatusOK, `{"h1":{"a":70,"b":90},"h2":{"b":80}}`},
		{f, "/trends/hotel_min_offer_per_advertiser?window=24h", http.StatusOK, `{"h1":{"a":50,"b":90},"h2":{"b":80}}`},
		{f, "/trends/hotel_min_offer_per_advertiser?window=24h&format=list&limit=1", http.StatusOK,
			`[{"hotel_id":"h1","advertisers":[{"advertiser":"a","eurocents":50},{"advertiser":"b","eurocents":90}]}]`},
		{f, "/trends/users?window=2h", http.StatusBadRequest, ""},
		{f, "/trends/hotels?limit=0", http.StatusBadRequest, ""},
		{only1h, "/trends/users?window=24h", http.StatusConflict, ""},
		{only1h, "/trends/hotel_min_offer_per_advertiser?window=24h", http.StatusConflict, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := get(t, tt.f, tt.path)
			if r.code != tt.want {
				t.Fatalf("GET %s: %d %s, want %d", tt.path, r.code, r.body, tt.want)
			}
			c.check(t, tt.path, r)
			if tt.want != http.StatusOK {
				return
			}
			if string(r.body) != tt.body {
				t.Errorf("GET %s: %s, want %s", tt.path, r.body, tt.body)
			}
			if got := r.header.Get("X-Trends-Now"); got != now {
				t.Errorf("GET %s: X-Trends-Now %q, want %q", tt.path, got, now)
			}
		})
	}
}

// TestOpenAPIListsTheConfiguredWindows: the served document's window values are TREND_WINDOWS.
func TestOpenAPIListsTheConfiguredWindows(t *testing.T) {
	t.Parallel()
	f := newTrendFixture(t, "30m,2h", "30m,2h")
	r := get(t, f, "/openapi.json")
	var doc struct {
		Components struct {
			Parameters map[string]struct {
				Schema struct {
					Enum []string `json:"enum"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.Components.Parameters["Window"].Schema.Enum; !slices.Equal(got, []string{"30m", "2h"}) {
		t.Errorf("served window values %v, want [30m 2h]", got)
	}
	if r := get(t, f, "/trends/users?window=30m"); r.code != http.StatusOK {
		t.Errorf("window=30m: %d %s", r.code, r.body)
	}
}
