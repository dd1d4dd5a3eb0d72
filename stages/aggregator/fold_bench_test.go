package aggregator

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// BenchmarkFold measures coalescing a poll of 10,000 processed events into one batch: parsing,
// duplicate check, counting and the minimum-price cache.
func BenchmarkFold(b *testing.B) {
	const n = 10_000
	records := make([]*kgo.Record, n)
	for i, p := range events(0, n) {
		p.UserID = "user-" + strconv.Itoa(i) // mostly distinct users, as with 1M users
		p.Advertisers = []string{"a", "adv" + strconv.Itoa(i%4)}
		value, err := json.Marshal(p) // the bytes the transformer writes (event's tests hold it to that)
		if err != nil {
			b.Fatal(err)
		}
		records[i] = &kgo.Record{Partition: 0, Offset: int64(i), Value: value, Headers: []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte("0")},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.Itoa(i))},
		}}
	}
	held := snapshot{0: {next: view.NoOffset}}
	b.ReportAllocs()
	for b.Loop() {
		var prices priceCache
		f := fold(records, held, &prices, view.HotelShards, view.TrendSpec{})
		if f.events != n || f.batch.Empty() {
			b.Fatalf("folded %d of %d", f.events, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}
