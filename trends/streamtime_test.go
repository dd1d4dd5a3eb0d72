package trends_test

import (
	"math"
	"testing"
	"time"

	"github.com/searchflow/searchflow/trends"
)

func TestStreamTimeObserve(t *testing.T) {
	type step struct {
		event int64
		late  bool
		t     int64 // stream time after the event
	}
	tests := []struct {
		name     string
		lateness time.Duration
		steps    []step
	}{
		{"first event is never late", 0, []step{{1000, false, 1000}}},
		{"first event far in the past is not late", time.Second, []step{{-5, false, -5}, {-6, false, -5}, {-7, true, -5}}},
		{"exactly at the bound is on time", 10 * time.Second, []step{{1000, false, 1000}, {990, false, 1000}}},
		{"one second past the bound is late", 10 * time.Second, []step{{1000, false, 1000}, {989, true, 1000}}},
		{"late events do not move stream time", 10 * time.Second, []step{
			{1000, false, 1000}, {900, true, 1000}, {989, true, 1000}, {990, false, 1000}}},
		{"on-time events behind do not move it back", time.Minute, []step{
			{1000, false, 1000}, {950, false, 1000}, {1001, false, 1001}, {941, false, 1001}, {940, true, 1001}}},
		{"stream time advances", 0, []step{{1000, false, 1000}, {1000, false, 1000}, {1005, false, 1005}, {1004, true, 1005}}},
		{"zero lateness: equal is on time", 0, []step{{1000, false, 1000}, {1000, false, 1000}, {999, true, 1000}}},
		{"fractional lateness counts whole seconds", 1500 * time.Millisecond, []step{
			{1000, false, 1000}, {999, false, 1000}, {998, true, 1000}}},
		{"negative lateness counts as zero", -time.Hour, []step{{1000, false, 1000}, {1000, false, 1000}, {999, true, 1000}}},
		{"no overflow on absurd distances", time.Hour, []step{
			{math.MaxInt64, false, math.MaxInt64}, {math.MinInt64, true, math.MaxInt64}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st trends.StreamTime
			for i, s := range tt.steps {
				before := st
				if got := before.Late(s.event, tt.lateness); got != s.late {
					t.Errorf("step %d: Late(%d) = %v, want %v", i, s.event, got, s.late)
				}
				if late := st.Observe(s.event, tt.lateness); late != s.late {
					t.Errorf("step %d: Observe(%d) late = %v, want %v", i, s.event, late, s.late)
				}
				if !st.Set || st.T != s.t {
					t.Errorf("step %d: stream time %+v after %d, want %d", i, st, s.event, s.t)
				}
			}
		})
	}
}
