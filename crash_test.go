package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/daemontest"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/internal/trendtest"
)

// crashSeed replays a run of TestCrashRecoveryExactlyOnce, e.g.
// go test -run '^TestCrashRecoveryExactlyOnce$' -seed=N . (or SEARCHFLOW_CRASH_SEED=N).
var crashSeed = flag.Uint64("seed", 0, "TestCrashRecoveryExactlyOnce: the seed of the crash moments, as a run logged it (0: a new one; SEARCHFLOW_CRASH_SEED sets it too)")

// crashTestSeed is the -seed flag, else SEARCHFLOW_CRASH_SEED, else a new seed. The test logs it,
// and again when it fails, so that the failure can be replayed.
func crashTestSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *crashSeed
	if v := os.Getenv("SEARCHFLOW_CRASH_SEED"); seed == 0 && v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SEARCHFLOW_CRASH_SEED=%q: %v", v, err)
		}
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("random seed %d (replay with -seed=%d or SEARCHFLOW_CRASH_SEED=%d)", seed, seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay this run: go test -run '^TestCrashRecoveryExactlyOnce$' -seed=%d .", seed)
		}
	})
	return seed
}

// TestCrashRecoveryExactlyOnce SIGKILLs the daemon at random moments while it generates, then
// lets it drain with the generator off. Every valid record of the raw topic must be counted
// exactly once in the API — when it first equals the truth and again once nothing is left to read
// — and every raw record must be in the processed or the dead-letter topic, at least once (the
// embedded broker can repeat one, see below). The seed fixes the crash moments; the scheduling of
// the processes is not fixed, so a replay retries the same moments, not the same interleaving.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the daemon five times; skipped with -short")
	}
	seed := crashTestSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	bin := buildBinary(t)
	redis := redistest.Start(t)
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": redis.Addr, "DATA_DIR": t.TempDir(),
		"GENERATOR_RATE": "4000", "GENERATOR_USERS": "300", "GENERATOR_HOTELS": "40",
		"TOPIC_PARTITIONS": "3", "BATCH_MAX_RECORDS": "400", "LOG_LEVEL": "warn",
		// Trends through the crashes: event times out of order by up to two minutes, one in 20
		// events late, and windows short enough that the run crosses many of their buckets.
		"GENERATOR_DISORDER": "2m", "GENERATOR_LATE_FRACTION": "0.05", "TREND_WINDOWS": crashTrendWindows,
	}
	const kills = 4
	bad := 0 // invalid raw records slipped in
	for round := 0; round < kills; round++ {
		env["GENERATOR_SEED"] = strconv.Itoa(round)
		d := daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR")
		bad += kafkatest.ProduceInvalidRaw(t, env["EMBEDDED_KAFKA_ADDR"], "raw_events", round)
		wait := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		time.Sleep(wait) // the random moment of the crash, not a synchronisation
		d.Kill()
		t.Logf("round %d: SIGKILL after %v", round, wait)
	}

	env["STAGES"] = "transformer,aggregator,api"
	d := daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR")
	kafka := env["EMBEDDED_KAFKA_ADDR"]
	want := apitest.New()
	raw := kafkatest.ReadToEnd(t, kafka, "raw_events")
	for _, r := range raw {
		want.AddRaw(r.Value)
	}
	t.Logf("raw topic: %d records, %d valid, %d invalid", len(raw), want.Events, want.Invalid)
	if want.Events == 0 || want.Invalid != int64(bad) {
		t.Fatalf("raw topic holds %d valid and %d invalid records; want some valid and %d invalid",
			want.Events, want.Invalid, bad)
	}
	want.WaitEqual(t, d.Base, 120*time.Second)

	// Every valid raw record reaches the processed topic and every invalid one the dead-letter
	// topic, each under its raw position. A copy is possible: the embedded broker writes a commit's
	// markers partition by partition, so a crash in the middle can leave one copy committed while
	// the raw offsets roll back. The aggregator drops such copies by their source position; the
	// counts above are exact all the same. Both topics are read to their ends now that nothing is
	// left to read, so a record that does not belong there cannot go unseen.
	valid, invalid := map[string]bool{}, map[string]bool{}
	for _, r := range raw {
		pos := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
		if _, err := eventref.Transform(r.Value); err == nil {
			valid[pos] = true
		} else {
			invalid[pos] = true
		}
	}
	covered := func(topic string, want map[string]bool) {
		recs := kafkatest.ReadCommittedToEnd(t, kafka, topic)
		seen := map[string]bool{}
		for _, r := range recs {
			seen[source(r)] = true
			if !want[source(r)] {
				t.Errorf("%s holds a record from raw position %s, which does not belong there", topic, source(r))
			}
		}
		for pos := range want {
			if !seen[pos] {
				t.Errorf("%s holds no record from raw position %s", topic, pos)
			}
		}
		t.Logf("%s: %d records for %d raw records (%d copies)", topic, len(recs), len(want), len(recs)-len(seen))
	}
	covered("processed_events", valid)
	covered("dead_letter_events", invalid)

	// The windows equal an independent fold of the processed and hotel topics, late events
	// included, through the SIGKILLs: stream times were stored with the offsets they belong to.
	truth := trendtest.Wait(t, d.Base, kafka, 5*time.Minute, trendtest.Windows(t, crashTrendWindows))
	if truth.LateUsers == 0 || truth.LateHotels == 0 {
		t.Errorf("no late events (%d, %d): GENERATOR_LATE_FRACTION did not reach the trends", truth.LateUsers, truth.LateHotels)
	}
	t.Logf("trends: now %d, %d and %d late events", truth.Now, truth.LateUsers, truth.LateHotels)

	d.Terminate()
}

// crashTrendWindows are the crash test's TREND_WINDOWS: seconds-long buckets.
const crashTrendWindows = "1m,10m"

// source is the raw position a processed or dead-lettered record names in its headers.
func source(r *kgo.Record) string {
	var part, off string
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			part = string(h.Value)
		case event.HeaderSourceOffset:
			off = string(h.Value)
		}
	}
	return part + "/" + off
}
