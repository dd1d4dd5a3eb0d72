package aggregator

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
)

// BenchmarkFold measures coalescing a poll of 10,000 processed events into one batch: parsing,
// duplicate check, counting and the minimum-price cache.
func BenchmarkFold(b *testing.B) {
	const n = 10_000
	records := make([]*kgo.Record, n)
	for i, p := range events(0, n) {
		p.UserID = "user-" + strconv.Itoa(i) // mostly distinct users, as with 1M users
		p.Advertisers = []string{"a", "adv" + strconv.Itoa(i%4)}
		records[i] = &kgo.Record{Partition: 0, Offset: int64(i), Value: p.AppendJSON(nil), Headers: []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte("0")},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.Itoa(i))},
		}}
	}
	a := New(Config{Topic: "t"}, nil, nil, zap.NewNop())
	b.ReportAllocs()
	for b.Loop() {
		a.next[0] = -1
		a.sources = map[int32]map[int32]int64{}
		f := a.fold(records)
		if f.events != n || f.batch.Empty() {
			b.Fatalf("folded %d of %d", f.events, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}
