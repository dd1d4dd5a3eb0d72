package aggregator

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// recAt is rec with the event's search_timestamp.
func recAt(t *testing.T, off, at int64, hotel string, prices map[string]int64) *kgo.Record {
	t.Helper()
	v, err := json.Marshal(event.Processed{UserID: "u", HotelID: hotel, SearchTimestamp: json.Number(strconv.FormatInt(at, 10)),
		AdvertiserMinPrices: prices})
	if err != nil {
		t.Fatal(err)
	}
	return raw(0, off, v)
}

// trendPrices collects what a batch offers for the trend buckets' minimums.
func trendPrices(b *view.Batch) map[int]map[int64]map[string]int64 {
	out := map[int]map[int64]map[string]int64{}
	b.TrendPrices(func(w int, bucket int64, hotel, adv string, price int64) {
		if out[w] == nil {
			out[w] = map[int64]map[string]int64{}
		}
		if out[w][bucket] == nil {
			out[w][bucket] = map[string]int64{}
		}
		out[w][bucket][hotel+"/"+adv] = price
	})
	return out
}

// TestFoldWindows: the fold's lateness, stream time and trend prices. An event more than the
// lateness behind the partition's stream time is late (counted all time, in no window, moving
// nothing); a price at or above one the view holds for its bucket is left out, one of another
// bucket is not.
func TestFoldWindows(t *testing.T) {
	ws, err := trends.ParseWindows("1h")
	if err != nil {
		t.Fatal(err)
	}
	spec := view.TrendSpec{Windows: ws, Lateness: 5 * time.Minute}
	const t0 = 1_700_000_080 // second 40 of its minute
	held := snapshot{0: {next: 0, stream: trends.StreamTime{T: t0, Set: true}}}
	var cache priceCache
	first := view.NewBatch()
	first.TrendPrice(0, 1, 0, ws[0].BucketOf(t0), "h", "a", 100)
	cache.rememberTrends(first)

	records := []*kgo.Record{
		recAt(t, 0, t0-301, "h", map[string]int64{"a": 1}),  // 301 s behind: late
		recAt(t, 1, t0-300, "h", map[string]int64{"a": 50}), // exactly the lateness: on time, 5 minutes back
		recAt(t, 2, t0, "h", map[string]int64{"a": 100}),    // the cached bucket, not lower: left out
		recAt(t, 3, t0+10, "h", map[string]int64{"a": 99}),  // the cached bucket, lower: sent
		recAt(t, 4, t0+30, "h", map[string]int64{"a": 500}), // the next minute: sent
	}
	f := fold(records, held, &cache, view.HotelShards, spec)
	if f.late != 1 || f.events != 5 {
		t.Errorf("late %d of %d events, want 1 of 5", f.late, f.events)
	}
	if st, ok := f.batch.StreamAfter(0); !ok || st.T != t0+30 {
		t.Errorf("stream time after %v %v, want %d", st, ok, t0+30)
	}
	b := ws[0].BucketOf(t0)
	want := map[int64]map[string]int64{b - 5: {"h/a": 50}, b: {"h/a": 99}, b + 1: {"h/a": 500}}
	got := trendPrices(f.batch)[0]
	if len(got) != len(want) {
		t.Fatalf("trend prices %v, want %v", got, want)
	}
	for k, m := range want {
		if got[k]["h/a"] != m["h/a"] {
			t.Errorf("bucket %d: %v, want %v", k, got[k], m)
		}
	}
	// Remembering the batch moves the cache to the latest bucket.
	cache.rememberTrends(f.batch)
	if low := cache.knownInBucket(0, b+1, "h")["a"]; low != 500 {
		t.Errorf("cache of bucket %d: %d, want 500", b+1, low)
	}
	if got := cache.knownInBucket(0, b, "h"); got != nil {
		t.Errorf("cache still answers for bucket %d: %v", b, got)
	}
}
