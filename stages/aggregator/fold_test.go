package aggregator

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// These tests run fold and progress with no broker and no Redis: records are made in memory, the
// progress is a literal snapshot.

// rec is a processed record of partition p at offset off for user u in hotel h, with prices;
// from, if given, is its raw source position (partition, offset).
func rec(t testing.TB, p int32, off int64, u, h string, prices map[string]int64, from ...int64) *kgo.Record {
	t.Helper()
	v, err := json.Marshal(event.Processed{UserID: u, HotelID: h, SearchTimestamp: "1", AdvertiserMinPrices: prices})
	if err != nil {
		t.Fatal(err)
	}
	return raw(p, off, v, from...)
}

// raw is a record of partition p at offset off holding value, with a raw source position from.
func raw(p int32, off int64, value []byte, from ...int64) *kgo.Record {
	r := &kgo.Record{Topic: "processed", Partition: p, Offset: off, Value: value}
	if len(from) == 2 {
		r.Headers = []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte(strconv.FormatInt(from[0], 10))},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(from[1], 10))},
		}
	}
	return r
}

// bounds is a fixed minimum-price cache.
type bounds map[string]map[string]int64

// known knows no cheapest-per-search minimum: every win is sent.
func (b bounds) known(hotel string) (every, wins map[string]int64) { return b[hotel], nil }

// knownInBucket knows no trend minimum.
func (b bounds) knownInBucket(int, int64, string) map[string]int64 { return nil }

// prices collects what a batch offers for the hotels' minimums.
func prices(b *view.Batch) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	b.MinPrices(func(hotel, adv string, price int64) {
		if out[hotel] == nil {
			out[hotel] = map[string]int64{}
		}
		out[hotel][adv] = price
	})
	return out
}

func TestFold(t *testing.T) {
	p1 := map[string]int64{"a": 100}
	tests := []struct {
		name        string
		held        snapshot
		bounds      bounds
		records     []*kgo.Record
		events      int64
		copies      int64
		offsets     map[int32]view.PartitionOffsets
		sources     map[int32]map[int32]int64
		undecodable []int64 // offsets
		prices      map[string]map[string]int64
	}{
		{
			name:    "a partition the view holds nothing of starts from NoOffset",
			held:    snapshot{0: {next: view.NoOffset}},
			records: []*kgo.Record{rec(t, 0, 0, "u1", "h1", p1, 0, 7), rec(t, 0, 1, "u2", "h1", p1, 0, 8)},
			events:  2,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: view.NoOffset, Next: 2}},
			sources: map[int32]map[int32]int64{0: {0: 8}},
			prices:  map[string]map[string]int64{"h1": {"a": 100}},
		},
		{
			name: "records the view already holds are skipped",
			held: snapshot{0: {next: 5}},
			records: []*kgo.Record{rec(t, 0, 3, "u", "h", p1), rec(t, 0, 4, "u", "h", p1),
				rec(t, 0, 5, "u", "h", p1), rec(t, 0, 6, "u", "h", p1)},
			events:  2,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: 5, Next: 7}},
			prices:  map[string]map[string]int64{"h": {"a": 100}},
		},
		{
			name:    "a run the view holds whole makes an empty batch",
			held:    snapshot{0: {next: 10}},
			records: []*kgo.Record{rec(t, 0, 8, "u", "h", p1), rec(t, 0, 9, "u", "h", p1)},
			prices:  map[string]map[string]int64{},
		},
		{
			name:    "records of a partition not owned are left alone",
			held:    snapshot{0: {next: 0}},
			records: []*kgo.Record{rec(t, 1, 0, "u", "h", p1), rec(t, 0, 0, "u", "h", p1)},
			events:  1,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: 0, Next: 1}},
			prices:  map[string]map[string]int64{"h": {"a": 100}},
		},
		{
			name: "copies of applied events and copies within the batch are dropped",
			held: snapshot{0: {next: 10, marks: map[int32]int64{0: 50}}},
			records: []*kgo.Record{
				rec(t, 0, 10, "u", "h", p1, 0, 49), // below the view's mark
				rec(t, 0, 11, "u", "h", p1, 0, 50), // at it
				rec(t, 0, 12, "u", "h", p1, 0, 51), // new
				rec(t, 0, 13, "u", "h", p1, 0, 51), // a copy of the one just folded
				rec(t, 0, 14, "u", "h", p1, 1, 3),  // another raw partition: its own mark
				rec(t, 0, 15, "u", "h", p1),        // no source position: never a copy
			},
			events:  3,
			copies:  3,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: 10, Next: 16}},
			sources: map[int32]map[int32]int64{0: {0: 51, 1: 3}},
			prices:  map[string]map[string]int64{"h": {"a": 100}},
		},
		{
			name: "a dead-lettered offset is passed over",
			held: snapshot{0: {next: 0, skip: map[int64]bool{1: true}}},
			records: []*kgo.Record{rec(t, 0, 0, "u", "h", p1), raw(0, 1, []byte("not json"), 0, 1),
				rec(t, 0, 2, "u", "h", p1)},
			events:  2,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: 0, Next: 3}},
			sources: map[int32]map[int32]int64{0: {0: 1}},
			prices:  map[string]map[string]int64{"h": {"a": 100}},
		},
		{
			name: "an undecodable record is reported and moved past",
			held: snapshot{0: {next: 0}},
			records: []*kgo.Record{rec(t, 0, 0, "u", "h", p1), raw(0, 1, []byte("not json")),
				raw(0, 2, []byte(`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":9007199254740993}}`)),
				rec(t, 0, 3, "u", "h", p1)},
			events:      2,
			offsets:     map[int32]view.PartitionOffsets{0: {Expect: 0, Next: 4}},
			undecodable: []int64{1, 2},
			prices:      map[string]map[string]int64{"h": {"a": 100}},
		},
		{
			name:   "prices the view already holds or beats are not offered",
			held:   snapshot{0: {next: 0}},
			bounds: bounds{"h": {"a": 100, "b": 50}},
			records: []*kgo.Record{rec(t, 0, 0, "u", "h", map[string]int64{"a": 100, "b": 49, "c": 7}),
				rec(t, 0, 1, "u", "g", map[string]int64{"a": 500})},
			events:  2,
			offsets: map[int32]view.PartitionOffsets{0: {Expect: 0, Next: 2}},
			prices:  map[string]map[string]int64{"h": {"b": 49, "c": 7}, "g": {"a": 500}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fold(tt.records, tt.held, tt.bounds, view.HotelShards, view.TrendSpec{})
			if f.used != len(tt.records) {
				t.Errorf("used %d of %d records", f.used, len(tt.records))
			}
			if f.events != tt.events || f.copies != tt.copies {
				t.Errorf("events %d copies %d, want %d and %d", f.events, f.copies, tt.events, tt.copies)
			}
			if !equalMaps(f.batch.Offsets, tt.offsets) {
				t.Errorf("offsets %v, want %v", f.batch.Offsets, tt.offsets)
			}
			if !equalMaps(f.batch.Sources, tt.sources) {
				t.Errorf("sources %v, want %v", f.batch.Sources, tt.sources)
			}
			var undecodable []int64
			for _, r := range f.undecodable {
				undecodable = append(undecodable, r.Offset)
			}
			if !reflect.DeepEqual(undecodable, tt.undecodable) {
				t.Errorf("undecodable offsets %v, want %v", undecodable, tt.undecodable)
			}
			if got := prices(f.batch); !reflect.DeepEqual(got, tt.prices) {
				t.Errorf("prices offered %v, want %v", got, tt.prices)
			}
			if empty := tt.events == 0 && len(tt.offsets) == 0; f.batch.Empty() != empty {
				t.Errorf("batch empty %v, want %v", f.batch.Empty(), empty)
			}
		})
	}
}

// equalMaps is reflect.DeepEqual with a nil map equal to an empty one.
func equalMaps[K comparable, V any](a, b map[K]V) bool {
	return (len(a) == 0 && len(b) == 0) || reflect.DeepEqual(a, b)
}

// TestFoldStopsAtTheByteBudget: a run larger than the budget is folded in parts, each under what
// Apply takes, and the next part expects what the previous one ends at.
func TestFoldStopsAtTheByteBudget(t *testing.T) {
	var records []*kgo.Record
	big := strings.Repeat("u", 1<<20) // a 1 MiB user id: each record adds about 1 MiB
	for i := range 20 {
		records = append(records, rec(t, 0, int64(i), big+strconv.Itoa(i), "h", map[string]int64{"a": 1}))
	}
	f := fold(records, snapshot{0: {next: 0}}, bounds{}, view.UserShards, view.TrendSpec{})
	if f.used == 0 || f.used >= len(records) {
		t.Fatalf("used %d of %d records, want the fold to stop part-way", f.used, len(records))
	}
	if f.batch.Bytes() < batchBudget || f.batch.Bytes() > view.MaxBatchBytes {
		t.Errorf("batch of %d bytes, want at least the budget %d and at most %d", f.batch.Bytes(), batchBudget, view.MaxBatchBytes)
	}
	if o := f.batch.Offsets[0]; o.Expect != 0 || o.Next != int64(f.used) || f.events != int64(f.used) {
		t.Errorf("batch %+v with %d events, want 0..%d", o, f.events, f.used)
	}
	rest := fold(records[f.used:], snapshot{0: {next: int64(f.used)}}, bounds{}, view.UserShards, view.TrendSpec{})
	if rest.used != len(records)-f.used || rest.batch.Offsets[0] != (view.PartitionOffsets{Expect: int64(f.used), Next: 20}) {
		t.Errorf("the rest: used %d, offsets %+v", rest.used, rest.batch.Offsets[0])
	}
}

func TestPriceCacheRemembersTheLowest(t *testing.T) {
	var c priceCache
	b := view.NewBatch()
	b.OfferPrice(0, "h", "a", 100)
	b.OfferPrice(0, "h", "b", 30)
	c.remember(b)
	b = view.NewBatch()
	b.OfferPrice(0, "h", "a", 120) // folded before the first batch was remembered: the view keeps 100
	b.OfferPrice(0, "h", "b", 20)
	b.OfferWin(0, "h", "b", 20)
	c.remember(b)
	every, wins := c.known("h")
	if want := map[string]int64{"a": 100, "b": 20}; !reflect.DeepEqual(every, want) {
		t.Errorf("known %v, want %v", every, want)
	}
	if want := map[string]int64{"b": 20}; !reflect.DeepEqual(wins, want) {
		t.Errorf("known wins %v, want %v: kept apart from the prices of every offer", wins, want)
	}
	c.clear()
	if every, wins := c.known("h"); every != nil || wins != nil {
		t.Error("a cleared cache still knows prices")
	}
}

func TestThrottle(t *testing.T) {
	var th throttle
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		after  float64 // seconds since t0
		n      int
		lines  int // what allow returns as the count
		logged bool
	}{
		{0, 3, 3, true},
		{0.2, 5, 0, false},
		{0.9, 1, 0, false},
		{1.0, 2, 8, true}, // a second after the first line: the held-back count comes with it
		{1.5, 1, 0, false},
		{5, 0, 1, true},
	}
	for _, s := range steps {
		n, ok := th.allow(t0.Add(time.Duration(s.after*float64(time.Second))), s.n)
		if n != s.lines || ok != s.logged {
			t.Errorf("at %.1fs: allow = %d, %v; want %d, %v", s.after, n, ok, s.lines, s.logged)
		}
	}
}

// TestUserShardsTakeTheTransformersKey: a record the transformer wrote — a source position, keyed
// by the user id its document begins with — counts its key's user without the rest of its
// document being parsed; any other record is parsed, and dead-lettered when it cannot be read.
// The hotel shards always parse.
func TestUserShardsTakeTheTransformersKey(t *testing.T) {
	withSource := func(r *kgo.Record) *kgo.Record {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: event.HeaderSourcePartition, Value: []byte("0")},
			kgo.RecordHeader{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))})
		return r
	}
	records := []*kgo.Record{
		withSource(&kgo.Record{Offset: 0, Key: []byte("u1"), Value: []byte(`{"user_id":"u1","hotel_id":"h"}`)}),
		withSource(&kgo.Record{Offset: 1, Key: []byte("u2"), Value: []byte(`{"user_id":"u2","hotel_id":`)}), // not parsed
		{Offset: 2, Key: []byte("u3"), Value: []byte(`not json`)},
		{Offset: 3, Value: []byte(`{"user_id":"u4","hotel_id":"h"}`)},
		withSource(&kgo.Record{Offset: 4, Key: []byte("u5"), Value: []byte(`not json`)}),
	}
	offsets := func(recs []*kgo.Record) []int64 {
		var out []int64
		for _, r := range recs {
			out = append(out, r.Offset)
		}
		return out
	}
	f := fold(records, snapshot{0: {next: 0}}, bounds{}, view.UserShards, view.TrendSpec{})
	if got := offsets(f.undecodable); f.events != 3 || !reflect.DeepEqual(got, []int64{2, 4}) {
		t.Errorf("users: %d events, undecodable at %v; want 3, and 2 and 4", f.events, got)
	}
	f = fold(records, snapshot{0: {next: 0}}, bounds{}, view.HotelShards, view.TrendSpec{})
	if got := offsets(f.undecodable); f.events != 2 || !reflect.DeepEqual(got, []int64{1, 2, 4}) {
		t.Errorf("hotels: %d events, undecodable at %v; want 2, and 1, 2 and 4", f.events, got)
	}
}
