package view

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/trends"
)

// newUsers returns n user ids the view has not seen, counting on from *u.
func newUsers(u *int, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%08x-1111-2222-3333-%012d", *u, *u)
		*u++
	}
	return out
}

// BenchmarkApplyNewUsers applies batches of 5,000 users the view has never seen, all on time in
// one bucket of each window (the aggregator's common case, TrendShare), into a real redis-server:
// what each trend window adds to the all-time count of a user (README, The cost of the trend
// windows). us/user is the wall time of the apply (the script and its round trip) per user.
func BenchmarkApplyNewUsers(b *testing.B) {
	for _, windows := range []string{"none", "1h", "1h,24h"} {
		b.Run("windows="+windows, func(b *testing.B) {
			v, ws := claimTrends(b, redistest.Start(b).Client(b), strings.TrimPrefix(windows, "none"))
			a := newUserApplier(v, ws)
			const users, t0 = 5000, 1_700_000_000
			u := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer() // only the apply is measured
				batch := newUsers(&u, users)
				b.StartTimer()
				a.apply(b, t0, batch...)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*users), "us/user")
		})
	}
}

// BenchmarkCloseBucket measures the apply that moves the stream time a window past a bucket of n
// distinct users: the script takes each of them off the window's sum before it deletes the
// bucket, and Redis runs nothing else meanwhile (README, The cost of the trend windows).
func BenchmarkCloseBucket(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			v, ws := claimTrends(b, redistest.Start(b).Client(b), "1h")
			a := newUserApplier(v, ws)
			at, u := int64(1_700_000_000), 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for filled := 0; filled < n; filled += 5000 {
					a.apply(b, at, newUsers(&u, min(5000, n-filled))...)
				}
				at += ws[0].Seconds() + ws[0].BucketSeconds() // the bucket just filled closes
				b.StartTimer()
				a.apply(b, at, newUsers(&u, 1)...)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/close")
		})
	}
}

// userApplier applies batches of users to partition 0's user shard, each batch all on time in
// one bucket of every window (TrendShare), moving the stream time to the batch's time.
type userApplier struct {
	v      *View
	ws     []trends.Window
	next   int64
	stream trends.StreamTime
}

func newUserApplier(v *View, ws []trends.Window) *userApplier {
	return &userApplier{v: v, ws: ws, next: NoOffset}
}

// apply counts one event of each user at event time at.
func (a *userApplier) apply(tb testing.TB, at int64, users ...string) {
	tb.Helper()
	batch := NewBatch()
	for w := range a.ws {
		batch.TrendShare(0, len(a.ws), w, a.ws[w].BucketOf(at))
	}
	for _, u := range users {
		batch.Count(0, Users, u)
	}
	after := trends.StreamTime{T: max(a.stream.T, at), Set: true}
	if len(a.ws) > 0 {
		batch.StreamTimes(0, len(a.ws), a.stream, after)
	}
	batch.Offsets[0] = PartitionOffsets{Expect: a.next, Next: max(a.next, 0) + int64(len(users))}
	if err := a.v.Apply(context.Background(), UserShards, batch); err != nil {
		tb.Fatal(err)
	}
	a.next, a.stream = max(a.next, 0)+int64(len(users)), after
}
