package view

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/redistest"
)

// testLayout is the layout of the tests: four partitions of each topic.
var testLayout = Layout{UsersTopic: "t", Users: 4, HotelsTopic: "t-hotels", Hotels: 4}

// claimed returns a view over c that has claimed testLayout.
func claimed(t testing.TB, c rueidis.Client) *View {
	t.Helper()
	v := New(c)
	if err := v.Claim(context.Background(), testLayout); err != nil {
		t.Fatal(err)
	}
	return v
}

// testEvent is one processed event of a testBatch.
type testEvent struct {
	user, hotel string
	prices      map[string]int64
}

// testBatch is what the two aggregators fold from the same events: the users from the
// processed topic, the hotels, advertisers and prices from the hotel topic. Its events belong
// to its lowest partition, in both topics; its offsets and sources are the same in both.
type testBatch struct {
	events  []testEvent
	offsets map[int32]PartitionOffsets
	sources map[int32]map[int32]int64
}

func newTestBatch() *testBatch {
	return &testBatch{offsets: map[int32]PartitionOffsets{}, sources: map[int32]map[int32]int64{}}
}

// add folds one event as the aggregators' folds do: its user, its hotel and each advertiser
// count once, and each advertiser's lowest price competes for the hotel's minimum.
func add(b *testBatch, user, hotel string, advertiserMinPrices map[string]int64) {
	b.events = append(b.events, testEvent{user, hotel, advertiserMinPrices})
}

func (b *testBatch) at(p int32, o PartitionOffsets) { b.offsets[p] = o }

// batches builds the two batches.
func (b *testBatch) batches() (users, hotels *Batch) {
	users, hotels = NewBatch(), NewBatch()
	first := int32(-1)
	for p, o := range b.offsets {
		users.Offsets[p], hotels.Offsets[p] = o, o
		if first < 0 || p < first {
			first = p
		}
	}
	for p, m := range b.sources {
		users.Sources[p], hotels.Sources[p] = m, m
	}
	for _, e := range b.events {
		users.Count(first, Users, e.user)
		hotels.Count(first, Hotels, e.hotel)
		win, low := "", int64(0)
		for adv, price := range e.prices {
			hotels.Count(first, Advertisers, adv)
			hotels.OfferPrice(first, e.hotel, adv, price)
			if win == "" || price < low || price == low && adv < win {
				win, low = adv, price
			}
		}
		if win != "" {
			hotels.OfferWin(first, e.hotel, win, low)
		}
	}
	return users, hotels
}

// apply applies the hotel batch, then (if the view took it) the user batch.
func (b *testBatch) apply(ctx context.Context, v *View) error {
	users, hotels := b.batches()
	if err := v.Apply(ctx, HotelShards, hotels); err != nil {
		return err
	}
	return v.Apply(ctx, UserShards, users)
}

// shardKey returns the name of a key of role's shard for partition p.
func shardKey(t testing.TB, v *View, r Role, p int32, name string) string {
	t.Helper()
	s, ok, err := v.currentLayout(context.Background())
	if err != nil || !ok {
		t.Fatalf("no layout: %v", err)
	}
	prefix, _ := s.of(r, p)
	return prefix + name
}

// clients returns the view over a real redis-server and over miniredis (the embedded store), so
// the Lua script is proven on both.
func clients(t *testing.T) map[string]*View {
	out := map[string]*View{}
	for name, c := range rawClients(t) {
		out[name] = claimed(t, c)
	}
	return out
}

// rawClients returns clients of a real redis-server and of miniredis.
func rawClients(t *testing.T) map[string]rueidis.Client {
	real := redistest.Start(t).Client(t)
	mr := miniredis.RunT(t)
	mc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mc.Close)
	return map[string]rueidis.Client{"redis-server": real, "miniredis": mc}
}

func TestApplyAndRead(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 500, "b": 300})
			add(b, "u2", "h1", map[string]int64{"a": 400})
			add(b, "u1", "h2", map[string]int64{"c": 100})
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 3})
			b.sources[0] = map[int32]int64{4: 77, 5: 9}
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			b = newTestBatch()
			add(b, "u3", "h1", map[string]int64{"a": 450, "b": 200})
			b.at(0, PartitionOffsets{Expect: 3, Next: 10})
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}

			total, got, err := v.Counts(ctx, Users, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := []Entry{{"u1", 2}, {"u2", 1}, {"u3", 1}}
			if total != 3 || !reflect.DeepEqual(got, want) {
				t.Errorf("users = %d %v, want 3 %v", total, got, want)
			}
			_, got, _ = v.Counts(ctx, Advertisers, 1, 2)
			if want := []Entry{{"b", 2}, {"c", 1}}; !reflect.DeepEqual(got, want) {
				t.Errorf("advertisers page = %v, want %v", got, want)
			}
			total, prices, err := v.MinPrices(ctx, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			wantPrices := []HotelPrices{{"h1", map[string]int64{"a": 400, "b": 200}}, {"h2", map[string]int64{"c": 100}}}
			if total != 2 || !reflect.DeepEqual(prices, wantPrices) {
				t.Errorf("min prices = %d %v, want 2 %v", total, prices, wantPrices)
			}
			srcs, err := v.Sources(ctx, UserShards, []int32{0, 1})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int32]map[int32]int64{0: {4: 77, 5: 9}, 1: {}}; !reflect.DeepEqual(srcs, want) {
				t.Errorf("sources = %v, want %v", srcs, want)
			}
			offs, err := v.Offsets(ctx, UserShards, []int32{0, 1, 2})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int32]int64{0: 10, 1: NoOffset, 2: NoOffset}; !reflect.DeepEqual(offs, want) {
				t.Errorf("offsets = %v, want %v", offs, want)
			}
		})
	}
}

func TestApplyRejectsStaleOffsets(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 5})
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 1})
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			// The same batch again (a replay after a crash, or a second writer) must not count.
			err := b.apply(ctx, v)
			var conflict *OffsetConflictError
			if !errors.As(err, &conflict) || conflict.Stored[0] != 1 {
				t.Fatalf("err = %v, want a conflict holding offset 1", err)
			}
			_, got, _ := v.Counts(ctx, Users, 0, 10)
			if want := []Entry{{"u1", 1}}; !reflect.DeepEqual(got, want) {
				t.Errorf("users after rejected replay = %v, want %v", got, want)
			}
		})
	}
}

func TestEmptyPages(t *testing.T) {
	ctx := context.Background()
	for name, v := range clients(t) {
		t.Run(name, func(t *testing.T) {
			total, got, err := v.Counts(ctx, Hotels, 5, 10)
			if err != nil || total != 0 || len(got) != 0 {
				t.Errorf("empty hotels = %d %v %v", total, got, err)
			}
			total, prices, err := v.MinPrices(ctx, 0, 10)
			if err != nil || total != 0 || len(prices) != 0 {
				t.Errorf("empty prices = %d %v %v", total, prices, err)
			}
			if err := v.Ping(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}

func BenchmarkApply(b *testing.B) {
	v := claimed(b, redistest.Start(b).Client(b))
	ctx := context.Background()
	const events = 5000
	next := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		batch := newTestBatch()
		for i := 0; i < events; i++ {
			add(batch, fmt.Sprintf("user-%d", i%3000), fmt.Sprintf("h%d", i%500), map[string]int64{"a": int64(i%900 + 1), "b": 7})
		}
		batch.at(0, PartitionOffsets{Expect: map[bool]int64{true: NoOffset, false: next}[next == 0], Next: next + events})
		if err := batch.apply(ctx, v); err != nil {
			b.Fatal(err)
		}
		next += events
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestCachedReadsSeeNewWrites reads through rueidis's client-side cache (as the API does with a
// real Redis) and checks that a write made by another client invalidates what was cached.
func TestCachedReadsSeeNewWrites(t *testing.T) {
	srv := redistest.Start(t)
	cached, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cached.Close)
	writer := claimed(t, srv.Client(t))
	reader := New(cached)
	ctx := context.Background()
	apply := func(next int64, user string, price int64) {
		b := newTestBatch()
		add(b, user, "h1", map[string]int64{"a": price})
		b.at(0, PartitionOffsets{Expect: next - 1, Next: next})
		if next == 1 {
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: next})
		}
		if err := b.apply(ctx, writer); err != nil {
			t.Fatal(err)
		}
	}
	apply(1, "u1", 500)
	if total, _, _ := reader.Counts(ctx, Users, 0, 10); total != 1 {
		t.Fatalf("users = %d, want 1", total)
	}
	_, _, _ = reader.MinPrices(ctx, 0, 10) // cache the prices too
	apply(2, "u2", 300)
	deadline := time.Now().Add(10 * time.Second)
	for {
		total, _, err := reader.Counts(ctx, Users, 0, 10)
		_, prices, err2 := reader.MinPrices(ctx, 0, 10)
		if err == nil && err2 == nil && total == 2 && len(prices) == 1 && prices[0].Prices["a"] == 300 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cached reads still stale after 10s: users %d, prices %v", total, prices)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCheapestPerSearch: besides each advertiser's lowest price over every offer, the view keeps
// its lowest price among the searches it won (each search's cheapest offer, ties to the first
// name), the original project's numbers: an advertiser that never won is absent. A view whose
// layout predates them answers ErrScopeUnavailable rather than a partial page. On both stores;
// the snapshot keeps them.
func TestCheapestPerSearch(t *testing.T) {
	ctx := context.Background()
	for name, c := range rawClients(t) {
		t.Run(name, func(t *testing.T) {
			v := claimed(t, c)
			b := newTestBatch()
			add(b, "u1", "h1", map[string]int64{"a": 500, "b": 300}) // b wins at 300
			add(b, "u2", "h1", map[string]int64{"a": 200, "b": 900}) // a wins at 200
			add(b, "u3", "h1", map[string]int64{"a": 700, "b": 250}) // b wins at 250
			add(b, "u4", "h2", map[string]int64{"c": 100, "d": 100}) // a tie: c, the first name
			b.at(0, PartitionOffsets{Expect: NoOffset, Next: 4})
			if err := b.apply(ctx, v); err != nil {
				t.Fatal(err)
			}
			want := []HotelPrices{{"h1", map[string]int64{"a": 200, "b": 250}}, {"h2", map[string]int64{"c": 100}}}
			total, got, err := v.ScopedMinPrices(ctx, CheapestPerSearch, 0, 10)
			if err != nil || total != 2 || !reflect.DeepEqual(got, want) {
				t.Errorf("cheapest per search: %d %v (%v), want 2 %v", total, got, err, want)
			}
			_, every, _ := v.MinPrices(ctx, 0, 10)
			if !reflect.DeepEqual(every[0].Prices, map[string]int64{"a": 200, "b": 250}) || !reflect.DeepEqual(every[1].Prices, map[string]int64{"c": 100, "d": 100}) {
				t.Errorf("every offer: %v", every)
			}

			s, err := v.TakeSnapshot(ctx)
			if err != nil || !s.Cheapest {
				t.Fatalf("snapshot %+v, %v: want the cheapest flag", s, err)
			}
			if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if err := New(c).RestoreSnapshot(ctx, s); err != nil {
				t.Fatal(err)
			}
			if _, got, err := New(c).ScopedMinPrices(ctx, CheapestPerSearch, 0, 10); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("restored: %v (%v), want %v", got, err, want)
			}

			// A layout claimed before the cheapest prices were kept.
			if err := c.Do(ctx, c.B().Hdel().Key(layoutKey).Field(cheapestField).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := New(c).ScopedMinPrices(ctx, CheapestPerSearch, 0, 10); !errors.Is(err, ErrScopeUnavailable) {
				t.Errorf("a view that predates them: %v, want ErrScopeUnavailable", err)
			}
		})
	}
}
