package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/internal/trendtest"
	"github.com/searchflow/searchflow/trends"
)

// disorderedEvents makes n raw events, one every step seconds of event time from t0 on: each moved
// back by up to jitter, and one in lateEvery moved back by 20 to 40 minutes. Users and hotels
// are drawn with a skew (the square of a uniform draw), so that a few are far ahead.
func disorderedEvents(n int, seed uint64, t0, step, jitter int64, lateEvery int) []*kgo.Record {
	rng := rand.New(rand.NewPCG(seed, 7))
	advs := []string{"Amoma", "Mercure", "expedia", "agoda", "HRS", "booking.com"}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		at := t0 + int64(i)*step - rng.Int64N(jitter+1)
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
		recs[i] = &kgo.Record{Topic: "raw_events", Key: []byte(user), Value: value, Timestamp: time.Unix(t0+int64(i)*step, 0)}
	}
	return recs
}

// TestTrendsMatchAnIndependentFold: events out of order by up to 3 minutes, with one in 15 late
// by 20-40 minutes, over 25 hours of event time (the default windows, 1h and 24h, each slide), through the whole daemon on the embedded broker
// and a real redis-server. Every window's endpoints equal the fold the test makes of the
// processed and hotel topics, late_events counts what that fold finds late, and the bucket keys
// stay within the bound of each window.
func TestTrendsMatchAnIndependentFold(t *testing.T) {
	t.Parallel()
	const windows, lateness = trends.DefaultWindows, 5 * time.Minute
	srv := redistest.Start(t)
	h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "STAGES": "transformer,aggregator,api",
		"TREND_WINDOWS": windows, "ALLOWED_LATENESS": lateness.String()})
	kafkatest.Produce(t, h.kafka, disorderedEvents(3000, 1, 1_700_000_000, 30, 180, 15)...)
	truth := trendtest.Wait(t, h.base, h.kafka, lateness, trendtest.Windows(t, windows))
	if truth.LateUsers == 0 || truth.LateHotels == 0 {
		t.Fatalf("the fold found no late events (%d, %d): the test does not test lateness", truth.LateUsers, truth.LateHotels)
	}
	t.Logf("late events: %d in the processed topic, %d in the hotel topic", truth.LateUsers, truth.LateHotels)
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
	_, metrics := getBody(t, h.base+"/metrics", nil)
	for stage, n := range map[string]int64{"aggregator": truth.LateUsers, "aggregator-hotels": truth.LateHotels} {
		line := fmt.Sprintf(`searchflow_stage_events_total{event="late_events",stage=%q} %d`, stage, n)
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	checkBucketKeys(t, srv, trends.DefaultWindows)
	h.stop()
}

// checkBucketKeys counts the bucket keys of each shard, window and kind in Redis after a run
// over hours of event time: at most W/b + 1 each (the view retires a bucket once no query can
// read it, sooner than trends.Window.MaxLiveBuckets allows).
func checkBucketKeys(t *testing.T, srv *redistest.Server, spec string) {
	t.Helper()
	ws, err := trends.ParseWindows(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	ctx := context.Background()
	perSet := map[string]int64{} // "<shard tag>:<window>:<kind>" -> bucket keys
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match("searchflow:{*}:trend:*:*:*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range e.Elements {
			perSet[k[:strings.LastIndexByte(k, ':')]]++
		}
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	if len(perSet) == 0 {
		t.Fatal("no bucket keys in Redis")
	}
	for set, n := range perSet {
		for _, w := range ws {
			if strings.Contains(set, fmt.Sprintf(":trend:%d:", w.Seconds())) && n > w.Seconds()/w.BucketSeconds()+1 {
				t.Errorf("%s: %d bucket keys, over %d", set, n, w.Seconds()/w.BucketSeconds()+1)
			}
		}
	}
	t.Logf("bucket keys per shard, window and kind: %v", perSet)
}

// sampleFile is the original project's sample, 47 hours of searches in no particular order.
const sampleFile = "testdata/search_results_data.txt"

// TestTrendsReplaySample replays the sample with ALLOWED_LATENESS=48h: its timestamps span 47
// hours, so no event is late, and the windows end at the file's own latest time, not the wall
// clock's. Then the same file with the default lateness: most of it is late, as the README says.
func TestTrendsReplaySample(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		lateness time.Duration
		check    func(t *testing.T, tr trendtest.Truth, events int64)
	}{
		{48 * time.Hour, func(t *testing.T, tr trendtest.Truth, events int64) {
			if tr.LateUsers != 0 || tr.LateHotels != 0 {
				t.Errorf("late events %d, %d with a lateness longer than the file", tr.LateUsers, tr.LateHotels)
			}
			if n := len(tr.Windows["24h"].Hotels); n == 0 {
				t.Error("no hotel in the last 24h of the file")
			}
		}},
		{5 * time.Minute, func(t *testing.T, tr trendtest.Truth, events int64) {
			if 2*tr.LateUsers <= events || 2*tr.LateHotels <= events {
				t.Errorf("%d and %d of %d events late with the default lateness: the README says most", tr.LateUsers, tr.LateHotels, events)
			}
		}},
	} {
		t.Run(tt.lateness.String(), func(t *testing.T) {
			srv := redistest.Start(t)
			h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "GENERATOR_REPLAY_FILE": sampleFile,
				"ALLOWED_LATENESS": tt.lateness.String()})
			tr := trendtest.Wait(t, h.base, h.kafka, tt.lateness, trendtest.Windows(t, trends.DefaultWindows))
			events := int64(len(kafkatest.ReadCommittedToEnd(t, h.kafka, "processed_events")))
			sum := func(m map[string]int64) (n int64) {
				for _, c := range m {
					n += c
				}
				return n
			}
			t.Logf("ALLOWED_LATENESS=%s: %d events, now %s, late %d (processed topic) %d (hotel topic); "+
				"last hour %d events of %d users, last day %d events of %d users",
				tt.lateness, events, time.Unix(tr.Now, 0).UTC().Format(time.RFC3339), tr.LateUsers, tr.LateHotels,
				sum(tr.Windows["1h"].Users), len(tr.Windows["1h"].Users), sum(tr.Windows["24h"].Users), len(tr.Windows["24h"].Users))
			tt.check(t, tr, events)
			h.stop()
		})
	}
}

// TestEmbeddedTrendSettingsChange: on embedded defaults the view lives in its snapshot. Started
// again with other TREND_WINDOWS, the view is rebuilt from the topics while they hold everything
// (and its new window is exact); once the topics were trimmed below the snapshot it cannot be,
// and the start is refused with what to do.
func TestEmbeddedTrendSettingsChange(t *testing.T) {
	t.Parallel()
	const lateness = 5 * time.Minute
	for _, trimmed := range []bool{false, true} {
		t.Run(fmt.Sprintf("trimmed=%v", trimmed), func(t *testing.T) {
			env := map[string]string{"DATA_DIR": t.TempDir(), "STAGES": "transformer,aggregator,api", "TREND_WINDOWS": "1h"}
			if trimmed {
				env["EMBEDDED_RETENTION"], env["EMBEDDED_SNAPSHOT_INTERVAL"] = "1s", "100ms"
			}
			h := start(t, env)
			kafkatest.Produce(t, h.kafka, disorderedEvents(600, 2, 1_700_000_000, 10, 30, 0)...)
			if trimmed {
				// The keeper deletes the records as soon as a snapshot holds them: there is no
				// topic left to fold a truth from.
				waitTrimmed(t, h.kafka, "processed_events")
			} else {
				trendtest.Wait(t, h.base, h.kafka, lateness, trendtest.Windows(t, "1h"))
			}
			h.stop() // a clean stop writes the snapshot
			env["TREND_WINDOWS"] = "2h"
			if !trimmed {
				h = start(t, env)
				trendtest.Wait(t, h.base, h.kafka, lateness, trendtest.Windows(t, "2h"))
				h.stop()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := RunWith(ctx, testConfig(t, env), zaptest.NewLogger(t), Options{})
			if err == nil || !strings.Contains(err.Error(), "TREND_WINDOWS") || ctx.Err() != nil {
				t.Fatalf("start with other windows over trimmed topics: %v, want a refusal naming TREND_WINDOWS", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// waitTrimmed waits until every partition of topic starts past offset 0.
func waitTrimmed(t *testing.T, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		starts, err := kadm.NewClient(cl).ListStartOffsets(context.Background(), topic)
		trimmed := err == nil && starts.Error() == nil
		starts.Each(func(o kadm.ListedOffset) { trimmed = trimmed && o.Offset > 0 })
		if trimmed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not trimmed within 30s: %v", topic, starts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
