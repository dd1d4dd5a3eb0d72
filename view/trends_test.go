package view

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/trends"
)

// trendEvent is one on-time event of a partition in the trend tests.
type trendEvent struct {
	at    int64
	id    string // the user (user shards) or the hotel (hotel shards)
	price int64  // hotel shards: advertiser "a"'s price, and "b"'s at twice it
}

// trendModel is the test's own account of the events applied, per role.
type trendModel struct {
	events  [2][]trendEvent
	streams [2]map[int32]trends.StreamTime
	next    [2]map[int32]int64
}

// applyTrend applies one batch of on-time events of partition p of role, as an aggregator
// would: its offsets, its stream times, a count in each window's bucket.
func (m *trendModel) applyTrend(t *testing.T, v *View, spec TrendSpec, r Role, p int32, evs []trendEvent) {
	t.Helper()
	b := NewBatch()
	before := m.streams[r][p]
	st := before
	for _, e := range evs {
		if st.Observe(e.at, spec.Lateness) {
			t.Fatalf("test event at %d is late behind %d", e.at, st.T)
		}
		for i, w := range spec.Windows {
			k := w.BucketOf(e.at)
			if r == UserShards {
				b.TrendCount(p, len(spec.Windows), i, k, Users, e.id)
				continue
			}
			b.TrendCount(p, len(spec.Windows), i, k, Hotels, e.id)
			for adv, price := range map[string]int64{"a": e.price, "b": 2 * e.price} {
				b.TrendCount(p, len(spec.Windows), i, k, Advertisers, adv)
				b.TrendPrice(p, len(spec.Windows), i, k, e.id, adv, price)
			}
		}
		m.events[r] = append(m.events[r], e)
	}
	b.StreamTimes(p, len(spec.Windows), before, st)
	next := m.next[r][p]
	b.Offsets[p] = PartitionOffsets{Expect: next, Next: next + int64(len(evs))}
	if next == 0 {
		b.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: int64(len(evs))}
	}
	if err := v.Apply(context.Background(), r, b); err != nil {
		t.Fatalf("apply %s/%d: %v", r, p, err)
	}
	m.streams[r][p], m.next[r][p] = st, b.Offsets[p].Next
}

// want is the model's answer for kind in w: the events whose bucket the query at the highest
// stream time reads.
func (m *trendModel) want(w trends.Window, kind Kind) (map[string]int64, map[string]map[string]int64) {
	var now trends.StreamTime
	for _, streams := range m.streams {
		for _, st := range streams {
			if st.Set && (!now.Set || st.T > now.T) {
				now = st
			}
		}
	}
	first, last := w.QueryRange(now.T)
	counts, prices := map[string]int64{}, map[string]map[string]int64{}
	for _, e := range m.events[kind.role()] {
		if k := w.BucketOf(e.at); k < first || k > last {
			continue
		}
		if kind != Advertisers {
			counts[e.id]++
		}
		if kind.role() == HotelShards {
			if prices[e.id] == nil {
				prices[e.id] = map[string]int64{}
			}
			for adv, p := range map[string]int64{"a": e.price, "b": 2 * e.price} {
				if kind == Advertisers {
					counts[adv]++
				}
				if low, ok := prices[e.id][adv]; !ok || p < low {
					prices[e.id][adv] = p
				}
			}
		}
	}
	return counts, prices
}

// TestTrendsAcrossLaggingShards: shards whose stream times lag the query's now by a few buckets
// (their sums still hold buckets the query does not read), one far behind (nothing of it is in
// the window) and one with no events. Every page and the totals equal the model's, on a real
// redis-server and on the embedded store, and the buckets a shard holds stay within W/b + 1.
func TestTrendsAcrossLaggingShards(t *testing.T) {
	ws, err := trends.ParseWindows("10m,1h")
	if err != nil {
		t.Fatal(err)
	}
	spec := TrendSpec{Windows: ws, Lateness: 5 * time.Minute}
	layout := testLayout
	layout.Trends = spec.String()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := New(c)
			if err := v.Claim(context.Background(), layout); err != nil {
				t.Fatal(err)
			}
			m := &trendModel{}
			for r := range m.streams {
				m.streams[r], m.next[r] = map[int32]trends.StreamTime{}, map[int32]int64{}
			}
			rng := rand.New(rand.NewPCG(3, 4))
			const t0 = 1_700_000_000
			// Partition 0 runs to t0+2h, 1 stops 150 s (2.5 one-minute buckets) short of it,
			// 2 stops at t0+30m; 3 has nothing.
			ends := map[int32]int64{0: t0 + 7200, 1: t0 + 7050, 2: t0 + 1800}
			for step := int64(0); step < 40; step++ {
				for p, end := range ends {
					for _, r := range []Role{UserShards, HotelShards} {
						var evs []trendEvent
						from := t0 + (end-t0)*step/40
						for i := range 20 {
							at := from + (end-t0)/40*int64(i)/20 - rng.Int64N(60)
							evs = append(evs, trendEvent{at: at, id: fmt.Sprintf("p%d-x%d", p, rng.IntN(30)), price: 100 + rng.Int64N(900)})
						}
						m.applyTrend(t, v, spec, r, p, evs)
					}
				}
				checkTrends(t, v, m, ws)
			}
			checkBucketBound(t, c, v, ws)
			checkTrendSnapshot(t, v, ws)
		})
	}
}

// checkTrendSnapshot restores a snapshot of v into an empty store and compares every window's
// answers there with v's: the snapshot carries the buckets, sums and stream times.
func checkTrendSnapshot(t *testing.T, v *View, ws []trends.Window) {
	t.Helper()
	ctx := context.Background()
	snap, err := v.TakeSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mr := miniredis.RunT(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	restored := New(c)
	if err := restored.RestoreSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		for _, kind := range []Kind{Users, Hotels, Advertisers} {
			want, err1 := v.TrendCounts(ctx, kind, w.Size, 0, 1000)
			got, err2 := restored.TrendCounts(ctx, kind, w.Size, 0, 1000)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if !reflect.DeepEqual(got, want) || len(want.Entries) == 0 {
				t.Errorf("restored %s %s: %+v, want %+v", w.Name(), kind, got, want)
			}
		}
		want, err1 := v.TrendMinPrices(ctx, w.Size, 0, 1000)
		got, err2 := restored.TrendMinPrices(ctx, w.Size, 0, 1000)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("restored %s prices: %+v (%v), want %+v (%v)", w.Name(), got, err2, want, err1)
		}
	}
	if err := restored.Claim(ctx, snap.Layout); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{UserShards, HotelShards} {
		a, err1 := v.States(ctx, r, []int32{0, 1, 2, 3})
		b, err2 := restored.States(ctx, r, []int32{0, 1, 2, 3})
		if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("restored %s states %v (%v), want %v (%v)", r, b, err2, a, err1)
		}
	}
}

// checkTrends compares every kind's whole list, a middle page and the prices with the model.
func checkTrends(t *testing.T, v *View, m *trendModel, ws []trends.Window) {
	t.Helper()
	ctx := context.Background()
	for _, w := range ws {
		for _, kind := range []Kind{Users, Hotels, Advertisers} {
			want, prices := m.want(w, kind)
			page, err := v.TrendCounts(ctx, kind, w.Size, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, e := range page.Entries {
				got[e.ID] = e.Count
			}
			if !maps.Equal(got, want) || page.Total != int64(len(want)) {
				t.Fatalf("%s %s at %d: total %d %v, want %d %v", w.Name(), kind, page.Now.T, page.Total, got, len(want), want)
			}
			mid, err := v.TrendCounts(ctx, kind, w.Size, 3, 4)
			if err != nil {
				t.Fatal(err)
			}
			if end := min(7, len(page.Entries)); len(page.Entries) > 3 && !reflect.DeepEqual(mid.Entries, page.Entries[3:end]) {
				t.Fatalf("%s %s page [3, 7) = %v, want %v", w.Name(), kind, mid.Entries, page.Entries[3:end])
			}
			if kind != Hotels {
				continue
			}
			tp, err := v.TrendMinPrices(ctx, w.Size, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			gotPrices := map[string]map[string]int64{}
			for _, h := range tp.Hotels {
				gotPrices[h.HotelID] = h.Prices
			}
			if !reflect.DeepEqual(gotPrices, prices) && len(prices) > 0 {
				t.Fatalf("%s prices %v, want %v", w.Name(), gotPrices, prices)
			}
		}
	}
}

// checkBucketBound counts each shard's bucket keys of each window and kind: at most W/b + 1.
func checkBucketBound(t *testing.T, c interface{}, v *View, ws []trends.Window) {
	t.Helper()
	shards, _, err := v.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		for _, w := range ws {
			for _, kind := range sh.Role.kinds() {
				keys := scanKeys(t, v, sh.Key(trendSumKey(w, kind))+":*")
				if bound := w.Seconds()/w.BucketSeconds() + 1; int64(len(keys)) > bound {
					t.Errorf("shard %v holds %d buckets of %s %s, over %d", sh, len(keys), w.Name(), kind, bound)
				}
			}
		}
	}
}

// scanKeys lists the keys matching pattern.
func scanKeys(t *testing.T, v *View, pattern string) []string {
	t.Helper()
	var out []string
	var cursor uint64
	for {
		e, err := v.client.Do(context.Background(), v.client.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Elements...)
		if cursor = e.Cursor; cursor == 0 {
			return out
		}
	}
}

// TestTrendSpecIsPartOfTheLayout: a view keeps the windows and lateness it was built with;
// another spec is refused like other topics would be.
func TestTrendSpecIsPartOfTheLayout(t *testing.T) {
	c := redistest.Start(t).Client(t)
	ctx := context.Background()
	ws, err := trends.ParseWindows("1h,24h")
	if err != nil {
		t.Fatal(err)
	}
	l := testLayout
	l.Trends = TrendSpec{Windows: ws, Lateness: 5 * time.Minute}.String()
	if err := New(c).Claim(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := New(c).Claim(ctx, l); err != nil {
		t.Errorf("the same spec again: %v", err)
	}
	for _, other := range []TrendSpec{{Windows: ws[:1], Lateness: 5 * time.Minute}, {Windows: ws, Lateness: time.Hour}, {}} {
		o := testLayout
		o.Trends = other.String()
		var layoutErr *LayoutError
		if err := New(c).Claim(ctx, o); !errors.As(err, &layoutErr) {
			t.Errorf("claim with trends %q over %q: %v, want a *LayoutError", o.Trends, l.Trends, err)
		}
	}
	spec, err := New(c).TrendSpec(ctx)
	if err != nil || spec.String() != l.Trends {
		t.Errorf("stored spec %q (%v), want %q", spec.String(), err, l.Trends)
	}
}

// TestTrendPageCost: a page of a window reads offset+limit members of each shard's sum when no
// shard lags, like an all-time page, whatever the number of ids.
func TestTrendPageCost(t *testing.T) {
	ctx := context.Background()
	v, ws := claimTrends(t, redistest.Start(t).Client(t), "1h")
	const t0 = 1_700_000_000
	for p := range int32(testLayout.Users) {
		b := NewBatch()
		for i := range 5000 {
			b.TrendCount(p, 1, 0, ws[0].BucketOf(t0), Users, fmt.Sprintf("p%d-u%d", p, i))
		}
		b.StreamTimes(p, 1, trends.StreamTime{}, trends.StreamTime{T: t0, Set: true})
		b.Offsets[p] = PartitionOffsets{Expect: NoOffset, Next: 5000}
		if err := v.Apply(ctx, UserShards, b); err != nil {
			t.Fatal(err)
		}
	}
	before := v.MembersRead()
	page, err := v.TrendCounts(ctx, Users, time.Hour, 20, 10)
	if err != nil {
		t.Fatal(err)
	}
	read := v.MembersRead() - before
	if page.Total != 20000 || len(page.Entries) != 10 || read > int64(30*testLayout.Users) {
		t.Errorf("total %d, %d entries, %d members read: want 20000, 10, at most %d", page.Total, len(page.Entries), read, 30*testLayout.Users)
	}
}

// TestTrendShare: a window that shares the batch's all-time counts (TrendShare) counts them in its
// bucket; one that stops sharing (TrendUnshare) keeps them and counts apart from then on.
func TestTrendShare(t *testing.T) {
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			v, ws := claimTrends(t, c, "1h")
			const t0 = 1_700_000_000
			k := ws[0].BucketOf(t0)
			b := NewBatch()
			b.TrendShare(0, 1, 0, k)
			b.Count(0, Users, "a")
			b.Count(0, Users, "a")
			b.Count(0, Users, "b")
			b.TrendUnshare(0, 1, 0)                // a and b stay counted in bucket k
			b.Count(0, Users, "c")                 // counted all time, in no window (as a late event)
			b.TrendCount(0, 1, 0, k+1, Users, "d") // the next minute
			b.Count(0, Users, "d")
			b.StreamTimes(0, 1, trends.StreamTime{}, trends.StreamTime{T: t0 + 60, Set: true})
			b.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: 5}
			if err := v.Apply(ctx, UserShards, b); err != nil {
				t.Fatal(err)
			}
			b = NewBatch()
			b.TrendShare(0, 1, 0, k+1)
			b.Count(0, Users, "b")
			b.StreamTimes(0, 1, trends.StreamTime{T: t0 + 60, Set: true}, trends.StreamTime{T: t0 + 61, Set: true})
			b.Offsets[0] = PartitionOffsets{Expect: 5, Next: 6}
			if err := v.Apply(ctx, UserShards, b); err != nil {
				t.Fatal(err)
			}
			page, err := v.TrendCounts(ctx, Users, time.Hour, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := []Entry{{ID: "a", Count: 2}, {ID: "b", Count: 2}, {ID: "d", Count: 1}}
			if !reflect.DeepEqual(page.Entries, want) || page.Total != 3 {
				t.Errorf("window %v (total %d), want %v", page.Entries, page.Total, want)
			}
		})
	}
}

// TestTrendPricesOfManyHotels: a page of minimum prices whose hotels outnumber what a script may
// unpack at once (thousands in one shard) is read whole.
func TestTrendPricesOfManyHotels(t *testing.T) {
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			v, ws := claimTrends(t, c, "1h")
			const t0, hotels = 1_700_000_000, 9000
			b := NewBatch()
			k := ws[0].BucketOf(t0)
			for i := range hotels {
				h := fmt.Sprintf("h%05d", i)
				b.TrendCount(0, 1, 0, k, Hotels, h)
				b.TrendPrice(0, 1, 0, k, h, "a", int64(100+i))
			}
			b.StreamTimes(0, 1, trends.StreamTime{}, trends.StreamTime{T: t0, Set: true})
			b.Offsets[0] = PartitionOffsets{Expect: NoOffset, Next: hotels}
			if err := v.Apply(ctx, HotelShards, b); err != nil {
				t.Fatal(err)
			}
			got, err := v.TrendMinPrices(ctx, time.Hour, 0, hotels)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Hotels) != hotels {
				t.Fatalf("%d hotels, want %d", len(got.Hotels), hotels)
			}
			for _, h := range got.Hotels {
				var i int64
				fmt.Sscanf(h.HotelID, "h%d", &i)
				if h.Prices["a"] != 100+i || len(h.Prices) != 1 {
					t.Fatalf("hotel %s: %v, want a: %d", h.HotelID, h.Prices, 100+i)
				}
			}
		})
	}
}

// TestSharedCountsAreBudgeted: Bytes counts, for each window sharing a partition's counts, the
// copy TrendUnshare may make, so that a batch closed at its budget stays under MaxBatchBytes
// whatever its windows do.
func TestSharedCountsAreBudgeted(t *testing.T) {
	b := NewBatch()
	for i := range 1000 {
		b.Count(0, Users, fmt.Sprintf("user-%04d", i))
	}
	counts := b.Bytes()
	b.TrendShare(0, 2, 0, 7)
	b.TrendShare(0, 2, 1, 7)
	shared := b.Bytes()
	b.TrendUnshare(0, 2, 0)
	b.TrendUnshare(0, 2, 1)
	copied := b.Bytes()
	if shared < copied || copied < 3*counts {
		t.Errorf("bytes: %d counted, %d shared by two windows, %d once both copied: the shared must cover the copies", counts, shared, copied)
	}
}

// claimTrends returns a view over c that has claimed testLayout with the trends of windows ("":
// none) and a lateness of 5 minutes.
func claimTrends(t testing.TB, c rueidis.Client, windows string) (*View, []trends.Window) {
	t.Helper()
	var ws []trends.Window
	if windows != "" {
		var err error
		if ws, err = trends.ParseWindows(windows); err != nil {
			t.Fatal(err)
		}
	}
	l := testLayout
	l.Trends = TrendSpec{Windows: ws, Lateness: 5 * time.Minute}.String()
	v := New(c)
	if err := v.Claim(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return v, ws
}
