package trends_test

import (
	"testing"
	"time"

	"github.com/searchflow/searchflow/trends"
)

func mustWindow(t *testing.T, size time.Duration) trends.Window {
	t.Helper()
	w, err := trends.NewWindow(size)
	if err != nil {
		t.Fatalf("NewWindow(%s): %v", size, err)
	}
	return w
}

func TestBucketIndex(t *testing.T) {
	tests := []struct {
		t, b, want int64
	}{
		{0, 60, 0},
		{1, 60, 0},
		{59, 60, 0},
		{60, 60, 1},
		{61, 60, 1},
		{119, 60, 1},
		{120, 60, 2},
		{-1, 60, -1}, // floor, not truncation
		{-59, 60, -1},
		{-60, 60, -1},
		{-61, 60, -2},
		{1_700_000_000, 3600, 472_222},
		{1_700_002_799, 3600, 472_222},
		{1_700_002_800, 3600, 472_223},
		{1_700_000_000, 1, 1_700_000_000},
	}
	for _, tt := range tests {
		if got := trends.BucketIndex(tt.t, tt.b); got != tt.want {
			t.Errorf("BucketIndex(%d, %d) = %d, want %d", tt.t, tt.b, got, tt.want)
		}
	}
}

func TestQueryRangeEdges(t *testing.T) {
	hour := mustWindow(t, time.Hour) // 1m buckets
	tests := []struct {
		now         int64
		first, last int64
	}{
		// now-W = 3600 is bucket 60's first second: one extra second (3600) of bucket 60.
		{7200, 60, 120},
		// now-W = 3659 is bucket 60's last second: all of bucket 60 is extra.
		{7259, 60, 120},
		{7260, 61, 121},
		{3600, 0, 60},
		{3599, -1, 59},
	}
	for _, tt := range tests {
		first, last := hour.QueryRange(tt.now)
		if first != tt.first || last != tt.last {
			t.Errorf("QueryRange(%d) = [%d, %d], want [%d, %d]", tt.now, first, last, tt.first, tt.last)
		}
	}
}

// TestQueryRangeCovers checks, for many values of now, that every second of (now-W, now] falls in
// a bucket of the range, that the range holds W/b + 1 buckets, and that its first bucket holds
// now-W: what it reads beyond the window is at most that one bucket.
func TestQueryRangeCovers(t *testing.T) {
	for _, tt := range []struct {
		size time.Duration
		nows []int64
	}{
		{30 * time.Second, span(-100, 100)},
		{5 * time.Minute, span(1_700_000_000-25, 1_700_000_025)},
		{time.Hour, span(1_700_000_000-130, 1_700_000_130)},
		{5415 * time.Second, span(1_700_000_000-40, 1_700_000_040)},
		{24 * time.Hour, append(span(1_699_999_990, 1_700_000_010), 1_700_002_799, 1_700_002_800, 1_700_006_399)},
		{168 * time.Hour, []int64{1_699_999_199, 1_699_999_200, 1_699_999_201, 1_700_020_799, 1_700_020_800}},
	} {
		w := mustWindow(t, tt.size)
		b, n := w.BucketSeconds(), w.Seconds()
		for _, now := range tt.nows {
			first, last := w.QueryRange(now)
			if got := last - first + 1; got != n/b+1 {
				t.Fatalf("%s at %d: range [%d, %d] has %d buckets, want %d", tt.size, now, first, last, got, n/b+1)
			}
			if w.BucketOf(now-n) != first || w.BucketOf(now) != last {
				t.Fatalf("%s at %d: range [%d, %d], want the buckets of now-W and now", tt.size, now, first, last)
			}
			for sec := now - n + 1; sec <= now; sec++ {
				if k := w.BucketOf(sec); k < first || k > last {
					t.Fatalf("%s at %d: second %d in bucket %d, outside [%d, %d]", tt.size, now, sec, k, first, last)
				}
			}
		}
	}
}

// span is the integers of [from, to].
func span(from, to int64) []int64 {
	s := make([]int64, 0, to-from+1)
	for v := from; v <= to; v++ {
		s = append(s, v)
	}
	return s
}
