package apitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI serves the four metric endpoints and /stats from what state says at each moment since
// it started: the users' counts (the other endpoints stay empty) and one partition's lag.
func fakeAPI(t *testing.T, state func(since time.Duration) (users map[string]int64, lag int64)) string {
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		users, lag := state(time.Since(start))
		var body any
		switch r.URL.Path {
		case "/users":
			body = countsBody{Count: int64(len(users)), Data: users}
			w.Header().Set("X-Total-Count", strconv.Itoa(len(users)))
		case "/hotels", "/advertisers":
			body = countsBody{Data: map[string]int64{}}
			w.Header().Set("X-Total-Count", "0")
		case "/hotel_min_offer_per_advertiser":
			body = map[string]map[string]int64{}
			w.Header().Set("X-Total-Count", "0")
		case "/stats":
			body = map[string]any{
				"lag":    map[string]map[string]int64{"processed_events": {"0": lag}},
				"stages": map[string]any{"aggregator": map[string]any{"rates": map[string]map[string]float64{"1s": {"consumed": 0}}}},
			}
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the goroutine, as the
// real one does.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// waitEqual runs WaitEqual against base and returns its failure, "" when it passed.
func waitEqual(t *testing.T, e *Expected, base string) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.WaitEqual(rec, base, 10*time.Second)
	}()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.msg
}

func TestWaitEqualSeesALateOverCount(t *testing.T) {
	want := New()
	want.Add("u1", "h1", nil)
	want.Hotels, want.Min = map[string]int64{}, map[string]map[string]int64{} // the fake serves users only
	base := fakeAPI(t, func(since time.Duration) (map[string]int64, int64) {
		switch {
		case since < 300*time.Millisecond:
			return map[string]int64{"u1": 1}, 1 // equal, with a copy still to read
		case since < time.Second:
			return map[string]int64{"u1": 2}, 1 // the copy is counted
		default:
			return map[string]int64{"u1": 2}, 0
		}
	})
	if msg := waitEqual(t, want, base); !strings.Contains(msg, "then differed") {
		t.Errorf("WaitEqual: %q, want the late over-count reported", msg)
	}
}

func TestWaitEqualPassesOnceIdle(t *testing.T) {
	want := New()
	want.Add("u1", "h1", nil)
	want.Hotels, want.Min = map[string]int64{}, map[string]map[string]int64{}
	base := fakeAPI(t, func(since time.Duration) (map[string]int64, int64) {
		if since < 500*time.Millisecond {
			return map[string]int64{"u1": 1}, 2 // the commit marker not yet known for one
		}
		return map[string]int64{"u1": 1}, 0
	})
	start := time.Now()
	if msg := waitEqual(t, want, base); msg != "" {
		t.Fatalf("WaitEqual: %s", msg)
	}
	if took := time.Since(start); took < settleFor || took > idleFor {
		t.Errorf("WaitEqual took %s; want the %s settling after a new reading of 0, not the %s wait", took, settleFor, idleFor)
	}
}

// TestWaitEqualDistrustsAnOldLagReading: the lag reads 0 from the start, and may be a reading
// from before the last records arrived. An over-count that lands a second after the first match,
// before the daemon would have read the lag again, must not be missed.
func TestWaitEqualDistrustsAnOldLagReading(t *testing.T) {
	want := New()
	want.Add("u1", "h1", nil)
	want.Hotels, want.Min = map[string]int64{}, map[string]map[string]int64{}
	base := fakeAPI(t, func(since time.Duration) (map[string]int64, int64) {
		if since < 2*time.Second {
			return map[string]int64{"u1": 1}, 0
		}
		return map[string]int64{"u1": 2}, 0
	})
	if msg := waitEqual(t, want, base); !strings.Contains(msg, "then differed") {
		t.Errorf("WaitEqual: %q, want the late over-count reported", msg)
	}
}
