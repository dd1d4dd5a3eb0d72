package trends_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/searchflow/searchflow/trends"
)

func TestMaxLiveBuckets(t *testing.T) {
	tests := []struct {
		window, longest, lateness time.Duration
		want                      int64
	}{
		{time.Hour, 24 * time.Hour, 0, 1441},                                  // 86400/60 + 1
		{time.Hour, 24 * time.Hour, 5 * time.Minute, 1446},                    // 86700/60 + 1
		{time.Hour, 24 * time.Hour, 90 * time.Second, 1443},                   // ceil(86490/60) + 1
		{24 * time.Hour, 24 * time.Hour, 0, 25},                               // 86400/3600 + 1
		{24 * time.Hour, 24 * time.Hour, 5 * time.Minute, 26},                 // ceil(86700/3600) + 1
		{24 * time.Hour, 24 * time.Hour, 1500 * time.Millisecond, 26},         // 1.5s counts as 1s
		{time.Hour, time.Hour, 0, 61},                                         // alone
		{time.Hour, 0, 0, 61},                                                 // longest below w is w
		{5 * time.Minute, 168 * time.Hour, time.Hour, (168*3600+3600)/10 + 1}, // 10s buckets
	}
	for _, tt := range tests {
		w := mustWindow(t, tt.window)
		if got := w.MaxLiveBuckets(tt.lateness, tt.longest); got != tt.want {
			t.Errorf("%s.MaxLiveBuckets(%s, %s) = %d, want %d", tt.window, tt.lateness, tt.longest, got, tt.want)
		}
	}
}

// TestRetiredSweep checks Retired at every stream time over two buckets' worth of seconds (so
// every position of the stream time within a bucket), for every bucket near the live range:
//   - it is the documented rule, st ≥ (k+1)·b + lateness + longest;
//   - a retired bucket is before the query range at the stream time (so at any later now), and
//     before the bucket of the earliest event that would still be on time;
//   - retired buckets are all those below some index, and stay retired as stream time grows;
//   - the live buckets (not retired, up to the stream time's) never exceed MaxLiveBuckets, and
//     reach it: the bound is exact.
func TestRetiredSweep(t *testing.T) {
	for _, set := range []string{"30s,5m", "1h,24h", "5m,1h30m15s"} {
		ws, err := trends.ParseWindows(set)
		if err != nil {
			t.Fatal(err)
		}
		longest := trends.Longest(ws)
		for _, lateness := range []time.Duration{0, 1500 * time.Millisecond, 7 * time.Second, 90 * time.Second, 5 * time.Minute} {
			for _, w := range ws {
				t.Run(fmt.Sprintf("%s/%s/%s", set, w.Name(), lateness), func(t *testing.T) {
					sweepRetired(t, w, lateness, longest)
				})
			}
		}
	}
}

func sweepRetired(t *testing.T, w trends.Window, lateness, longest time.Duration) {
	b := w.BucketSeconds()
	bound := w.MaxLiveBuckets(lateness, longest)
	horizon := int64(lateness/time.Second) + int64(longest/time.Second)
	start := int64(1_700_000_000)
	var maxLive int64
	for st := start; st < start+2*b; st++ {
		stream := trends.StreamTime{T: st, Set: true}
		earliestOnTime := st // found by asking Late, not by the formula
		for !stream.Late(earliestOnTime-1, lateness) {
			earliestOnTime--
		}
		queryFirst, _ := w.QueryRange(st)
		top := w.BucketOf(st)
		var live int64
		sawRetired := false
		for k := top; k >= top-bound-3; k-- {
			retired := w.Retired(k, st, lateness, longest)
			if want := st >= (k+1)*b+horizon; retired != want {
				t.Fatalf("st %d bucket %d: Retired = %v, want %v", st, k, retired, want)
			}
			if !retired {
				if sawRetired {
					t.Fatalf("st %d: bucket %d live below a retired bucket", st, k)
				}
				live++
				continue
			}
			sawRetired = true
			if k >= queryFirst {
				t.Fatalf("st %d: bucket %d retired, but the query range starts at %d", st, k, queryFirst)
			}
			if k >= w.BucketOf(earliestOnTime) {
				t.Fatalf("st %d: bucket %d retired, but an event at %d is on time", st, k, earliestOnTime)
			}
			if !w.Retired(k, st+1, lateness, longest) {
				t.Fatalf("bucket %d retired at %d, live again at %d", k, st, st+1)
			}
		}
		if live > bound {
			t.Fatalf("st %d: %d live buckets, bound %d", st, live, bound)
		}
		maxLive = max(maxLive, live)
	}
	if maxLive != bound {
		t.Errorf("at most %d live buckets over the sweep, bound %d is not exact", maxLive, bound)
	}
}

// TestRetireSimulation folds a random stream of events from three partitions — mostly in order,
// some within lateness, some late, some jumping ahead — the way the aggregator will: Observe per
// partition, count on-time events in every window's bucket, delete what Retired allows. After
// every event no on-time event may land in a deleted bucket and no shard may hold more buckets
// than MaxLiveBuckets; regularly, a query at the global now (the highest stream time) must still
// count every event of the range it reads.
func TestRetireSimulation(t *testing.T) {
	ws, err := trends.ParseWindows("5m,1h,24h")
	if err != nil {
		t.Fatal(err)
	}
	// Lateness beyond the shortest window: safe retirement then hinges on lateness, not only on
	// the windows.
	longest, lateness := trends.Longest(ws), 10*time.Minute
	type shard struct {
		counts  map[int64]int
		deleted map[int64]bool
	}
	type partition struct {
		stream trends.StreamTime
		cursor int64
		onTime []int64
		shards []shard
	}
	rng := rand.New(rand.NewPCG(1, 2))
	parts := make([]*partition, 3)
	for i := range parts {
		p := &partition{cursor: 1_700_000_000 + int64(i)*500}
		for range ws {
			p.shards = append(p.shards, shard{counts: map[int64]int{}, deleted: map[int64]bool{}})
		}
		parts[i] = p
	}
	var now int64
	var late, retired int
	for step := range 30000 {
		p := parts[rng.IntN(len(parts))]
		event := nextEvent(rng, &p.cursor)
		if p.stream.Observe(event, lateness) {
			late++
			continue
		}
		p.onTime = append(p.onTime, event)
		now = max(now, p.stream.T)
		for i, w := range ws {
			s := &p.shards[i]
			k := w.BucketOf(event)
			if s.deleted[k] {
				t.Fatalf("step %d: on-time event %d (stream time %d) lands in retired %s bucket %d", step, event, p.stream.T, w.Name(), k)
			}
			s.counts[k]++
			for k := range s.counts {
				if w.Retired(k, p.stream.T, lateness, longest) {
					delete(s.counts, k)
					s.deleted[k] = true
					retired++
				}
			}
			if n, bound := int64(len(s.counts)), w.MaxLiveBuckets(lateness, longest); n > bound {
				t.Fatalf("step %d: %s shard holds %d buckets, bound %d", step, w.Name(), n, bound)
			}
		}
		if step%250 == 0 {
			for _, p := range parts {
				checkQueries(t, ws, now, p.onTime, func(i int, k int64) int { return p.shards[i].counts[k] })
			}
		}
	}
	if late == 0 || retired == 0 {
		t.Fatalf("simulation too tame: %d late events, %d buckets retired", late, retired)
	}
}

// nextEvent moves a partition's producer cursor on and returns an event time near it: mostly
// within the simulation's 10m lateness, some around and past it, a few far behind or ahead.
func nextEvent(rng *rand.Rand, cursor *int64) int64 {
	*cursor += int64(rng.IntN(90))
	event := *cursor
	switch r := rng.IntN(100); {
	case r < 60: // close behind, within lateness
		event -= int64(rng.IntN(601))
	case r < 75: // around and past the lateness bound
		event -= 550 + int64(rng.IntN(100))
	case r < 80: // far behind
		event -= int64(rng.IntN(200_000))
	case r < 82: // a jump ahead
		*cursor += int64(rng.IntN(7200))
		event = *cursor
	}
	return event
}

// checkQueries compares what each window's query at now reads from a shard's buckets with the
// on-time events that fall in the range's seconds, counted one by one.
func checkQueries(t *testing.T, ws []trends.Window, now int64, onTime []int64, count func(window int, k int64) int) {
	t.Helper()
	for i, w := range ws {
		first, last := w.QueryRange(now)
		got := 0
		for k := first; k <= last; k++ {
			got += count(i, k)
		}
		want := 0
		for _, e := range onTime {
			if e >= first*w.BucketSeconds() && e <= now {
				want++
			}
		}
		if got != want {
			t.Fatalf("%s query at %d reads %d events, want %d", w.Name(), now, got, want)
		}
	}
}
