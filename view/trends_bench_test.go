package view

import (
	"context"
	"fmt"
	"strings"
	"testing"

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
			v, ws := claimTrends(b, redistest.Start(b).Client(b), strings.TrimPrefix(windows, "none"))
			ctx := context.Background()
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

// BenchmarkCloseBucket measures the apply that closes a bucket of n distinct users: the stream
// time moves a window past it, and the script takes each of them off the window's sum before it
// deletes the bucket. Redis runs nothing else meanwhile (README, The cost of the trend windows).
func BenchmarkCloseBucket(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			v, ws := claimTrends(b, redistest.Start(b).Client(b), "1h")
			ctx := context.Background()
			next, u := NoOffset, 0
			stream := trends.StreamTime{}
			apply := func(users int, at int64) {
				batch := NewBatch()
				batch.TrendShare(0, 1, 0, ws[0].BucketOf(at))
				for range users {
					batch.Count(0, Users, fmt.Sprintf("%08x-1111-2222-3333-%012d", u, u))
					u++
				}
				now := trends.StreamTime{T: max(stream.T, at), Set: true}
				batch.StreamTimes(0, 1, stream, now)
				batch.Offsets[0] = PartitionOffsets{Expect: next, Next: max(next, 0) + int64(users)}
				if err := v.Apply(ctx, UserShards, batch); err != nil {
					b.Fatal(err)
				}
				next, stream = max(next, 0)+int64(users), now
			}
			at := int64(1_700_000_000)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for filled := 0; filled < n; filled += 5000 {
					apply(min(5000, n-filled), at)
				}
				at += int64(ws[0].Size.Seconds()) + 120 // the bucket just filled closes
				b.StartTimer()
				apply(1, at)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/close")
		})
	}
}
