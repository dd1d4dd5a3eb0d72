package view

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/trends"
)

// BenchmarkApplyNewUsers applies batches of 5,000 users the view has never seen, all on time in
// one bucket of each window (the aggregator's common case, TrendShare), into a real redis-server:
// what each trend window adds to the all-time count of a user (README, The cost of the trend
// windows). us/user is the wall time of the apply (the script and its round trip) per user.
func BenchmarkApplyNewUsers(b *testing.B) {
	for _, windows := range []string{"none", "1h", "1h,24h"} {
		b.Run("windows="+windows, func(b *testing.B) {
			var ws []trends.Window
			if windows != "none" {
				var err error
				if ws, err = trends.ParseWindows(windows); err != nil {
					b.Fatal(err)
				}
			}
			l := testLayout
			l.Trends = TrendSpec{Windows: ws, Lateness: 5 * time.Minute}.String()
			v := New(redistest.Start(b).Client(b))
			ctx := context.Background()
			if err := v.Claim(ctx, l); err != nil {
				b.Fatal(err)
			}
			const users, t0 = 5000, 1_700_000_000
			next, u := NoOffset, 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer() // only the apply is measured
				batch := NewBatch()
				for w := range ws {
					batch.TrendShare(0, len(ws), w, ws[w].BucketOf(t0))
				}
				for range users {
					batch.Count(0, Users, fmt.Sprintf("%08x-1111-2222-3333-%012d", u, u))
					u++
				}
				if len(ws) > 0 {
					batch.StreamTimes(0, len(ws), trends.StreamTime{T: t0, Set: i > 0}, trends.StreamTime{T: t0, Set: true})
				}
				batch.Offsets[0] = PartitionOffsets{Expect: next, Next: max(next, 0) + users}
				b.StartTimer()
				if err := v.Apply(ctx, UserShards, batch); err != nil {
					b.Fatal(err)
				}
				next = max(next, 0) + users
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*users), "us/user")
		})
	}
}
