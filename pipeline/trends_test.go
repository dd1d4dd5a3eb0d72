package pipeline

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/internal/trendtest"
)

// disorderedEvents makes n raw events over about 3 s of event time each, from t0 on: each moved
// back by up to jitter, and one in lateEvery moved back by 20 to 40 minutes. Users and hotels
// are drawn with a skew (the square of a uniform draw), so that a few are far ahead.
func disorderedEvents(n int, seed uint64, t0 int64, jitter int64, lateEvery int) []*kgo.Record {
	rng := rand.New(rand.NewPCG(seed, 7))
	advs := []string{"Amoma", "Mercure", "expedia", "agoda", "HRS", "booking.com"}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		at := t0 + int64(i)*3 - rng.Int64N(jitter+1)
		if lateEvery > 0 && i%lateEvery == lateEvery-1 {
			at -= 1200 + rng.Int64N(1200)
		}
		skew := func(k int) int { f := rng.Float64(); return int(f * f * float64(k)) }
		user, hotel := fmt.Sprintf("u%d", skew(80)), fmt.Sprintf("%d", 1000+skew(30))
		offers := map[string][]map[string]int64{}
		for _, a := range rng.Perm(len(advs))[:1+rng.IntN(3)] {
			offers[advs[a]] = []map[string]int64{{"eurocents": 1000 + rng.Int64N(9000)}}
		}
		value, _ := json.Marshal(map[string]any{"user_id": user, "hotel_id": hotel, "search_timestamp": at,
			"hotel_advertisers": offers})
		// The record's own time is the event's: the transformer measures future_timestamp against it.
		recs[i] = &kgo.Record{Topic: "raw_events", Key: []byte(user), Value: value, Timestamp: time.Unix(t0+int64(i)*3, 0)}
	}
	return recs
}

// TestTrendsMatchAnIndependentFold: events out of order by up to 3 minutes, with one in 15 late
// by 20-40 minutes, over 2.5 hours of event time, through the whole daemon on the embedded broker
// and a real redis-server. Every window's endpoints equal the fold the test makes of the
// processed and hotel topics, late_events counts what that fold finds late, and the bucket keys
// stay within the bound of each window.
func TestTrendsMatchAnIndependentFold(t *testing.T) {
	t.Parallel()
	const windows, lateness = "10m,1h", 5 * time.Minute
	srv := redistest.Start(t)
	h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "STAGES": "transformer,aggregator,api",
		"TREND_WINDOWS": windows, "ALLOWED_LATENESS": lateness.String()})
	kafkatest.Produce(t, h.kafka, disorderedEvents(3000, 1, 1_700_000_000, 180, 15)...)
	truth := trendtest.Wait(t, h.base, h.kafka, lateness, trendtest.Windows(t, windows))
	if truth.LateUsers == 0 || truth.LateHotels == 0 {
		t.Fatalf("the fold found no late events (%d, %d): the test does not test lateness", truth.LateUsers, truth.LateHotels)
	}
	var stats struct {
		Stages map[string]struct {
			Totals map[string]int64 `json:"totals"`
		} `json:"stages"`
	}
	h.get("/stats", &stats)
	if got := stats.Stages["aggregator"].Totals["late_events"]; got != truth.LateUsers {
		t.Errorf("aggregator late_events = %d, the fold finds %d", got, truth.LateUsers)
	}
	if got := stats.Stages["aggregator-hotels"].Totals["late_events"]; got != truth.LateHotels {
		t.Errorf("aggregator-hotels late_events = %d, the fold finds %d", got, truth.LateHotels)
	}
	h.stop()
}
