package main

import (
	"bufio"
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/daemontest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/stages/generator"
	"github.com/searchflow/searchflow/view"
)

// keptTopics are the topics embedded mode trims.
var keptTopics = []string{"raw_events", "processed_events", "processed_events_by_hotel", "dead_letter_events"}

// TestEmbeddedViewSnapshotAndTrim runs the daemon on embedded defaults — the embedded broker and
// the embedded store, whose view lives only in memory and in its snapshot — with a retention of
// one second, so that the keeper trims every topic while events keep coming. The view must stay
// exact through clean restarts (the final snapshot) and through SIGKILLs at random moments (the
// last periodic snapshot, written before any trim that relies on it), and the topics' first
// offsets must move: the records are gone, the counts are not.
func TestEmbeddedViewSnapshotAndTrim(t *testing.T) {
	seed := rand.Uint64()
	if v := os.Getenv("SEARCHFLOW_CRASH_SEED"); v != "" {
		seed = crashTestSeed(t)
	}
	t.Logf("seed %d (replay with SEARCHFLOW_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	bin := buildBinary(t)
	dataDir := t.TempDir()
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": dataDir, "STAGES": "transformer,aggregator,api",
		"TOPIC_PARTITIONS": "3", "BATCH_MAX_RECORDS": "400", "LOG_LEVEL": "warn",
		"EMBEDDED_RETENTION": "1s", "EMBEDDED_SNAPSHOT_INTERVAL": "150ms",
	}
	want := apitest.New()
	synth := generator.NewSynth(int64(seed), 300, 40)
	var next int64
	produce := func(n int, round int) {
		recs := make([]*kgo.Record, 0, n)
		for range n {
			ev := synth.Event(next, time.Now())
			next++
			v, err := generator.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			want.AddRaw(v)
			recs = append(recs, &kgo.Record{Topic: "raw_events", Key: []byte(ev.UserID), Value: v})
		}
		kafkatest.Produce(t, env["EMBEDDED_KAFKA_ADDR"], recs...)
		want.Invalid += int64(kafkatest.ProduceInvalidRaw(t, env["EMBEDDED_KAFKA_ADDR"], "raw_events", round))
	}

	const rounds = 4
	for round := range rounds {
		d := daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR")
		produce(3000, round)
		if round%2 == 0 {
			wait := time.Duration(100+rng.IntN(1500)) * time.Millisecond
			time.Sleep(wait) // the random moment of the crash, not a synchronisation
			d.Kill()
			t.Logf("round %d: SIGKILL after %v", round, wait)
			continue
		}
		want.WaitEqual(t, d.Base, 60*time.Second)
		waitTrimmed(t, env["EMBEDDED_KAFKA_ADDR"])
		for _, series := range []string{`searchflow_view_snapshot_timestamp_seconds`,
			`searchflow_embedded_deleted_records_total{topic="processed_events"}`} {
			if v := metricValue(t, d.Base, series); v <= 0 {
				t.Errorf("round %d: %s is %v, want > 0", round, series, v)
			}
		}
		d.Terminate()
		t.Logf("round %d: equal, trimmed, SIGTERM", round)
	}

	// The last run gives the embedded store a fixed address, for verify and rebuild, and writes no
	// snapshot while it runs: verify and rebuild must start from the one the last clean stop wrote,
	// on topics that no longer hold offset 0, and fold what came after it.
	env["EMBEDDED_SNAPSHOT_INTERVAL"] = "1h"
	d := daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR", "EMBEDDED_REDIS_ADDR")
	produce(1000, rounds)
	want.WaitEqual(t, d.Base, 60*time.Second)
	starts := waitTrimmed(t, env["EMBEDDED_KAFKA_ADDR"])
	t.Logf("%d events counted exactly; the topics start at %v", want.Events, starts)

	verifyAndRebuild(t, env, want, d.Base)
	d.Terminate()
	if _, err := os.Stat(filepath.Join(dataDir, "view.snapshot")); err != nil {
		t.Errorf("no snapshot after a clean stop: %v", err)
	}
}

// verifyAndRebuild runs searchflow verify and rebuild against the daemon at base on embedded
// defaults: verify equal having folded the records after the snapshot, then a count raised behind
// the pipeline's back found, rebuild --all, the view equal to want again, and verify equal.
func verifyAndRebuild(t *testing.T, env map[string]string, want *apitest.Expected, base string) {
	t.Helper()
	getenv := func(k string) string { return env[k] }
	verify := func(wantCode int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := verifyCommand(nil, getenv, &stdout, &stderr)
		if code != wantCode || !regexp.MustCompile(`checked, [1-9]\d* records read`).Match(stdout.Bytes()) {
			t.Fatalf("verify: exit %d, want %d, having read the records after the snapshot\n%s%s", code, wantCode, stdout.String(), stderr.String())
		}
	}
	verify(exitOK)
	overCount(t, env["EMBEDDED_REDIS_ADDR"])
	verify(exitFailed)
	var stdout, stderr bytes.Buffer
	if code := rebuildCommand([]string{"--all"}, getenv, &stdout, &stderr); code != exitOK {
		t.Fatalf("rebuild --all: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Logf("rebuild --all:\n%s", stdout.String())
	want.WaitEqual(t, base, 60*time.Second)
	verify(exitOK)
}

// metricValue reads one series of the daemon's /metrics (-1 when it is not there).
func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", series, v, err)
			}
			return f
		}
	}
	return -1
}

// overCount counts one more search for a user of the embedded store's view, behind the
// pipeline's back.
func overCount(t *testing.T, addr string) {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	shards, _, err := view.New(c).Shards(ctx)
	if err != nil || len(shards) == 0 {
		t.Fatalf("shards: %v, %v", shards, err)
	}
	key := shards[0].Key(string(view.Users))
	top, err := c.Do(ctx, c.B().Zrange().Key(key).Min("0").Max("0").Build()).AsStrSlice()
	if err != nil || len(top) == 0 {
		t.Fatalf("a user of %s: %v, %v", key, top, err)
	}
	// Scores are -count.
	if err := c.Do(ctx, c.B().Zincrby().Key(key).Increment(-1).Member(top[0]).Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

// waitTrimmed waits until every kept topic's first offset has moved past 0 on every partition
// that holds records, and returns the first offsets.
func waitTrimmed(t *testing.T, addr string) map[string]map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		starts, err1 := adm.ListStartOffsets(ctx, keptTopics...)
		ends, err2 := adm.ListEndOffsets(ctx, keptTopics...)
		cancel()
		out, untrimmed := map[string]map[int32]int64{}, ""
		if err1 == nil && err2 == nil {
			starts.Each(func(o kadm.ListedOffset) {
				if out[o.Topic] == nil {
					out[o.Topic] = map[int32]int64{}
				}
				out[o.Topic][o.Partition] = o.Offset
				if end, ok := ends.Lookup(o.Topic, o.Partition); ok && end.Offset > 0 && o.Offset == 0 {
					untrimmed = o.Topic
				}
			})
		}
		if err1 == nil && err2 == nil && untrimmed == "" && len(out) == len(keptTopics) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the topics were not trimmed within 30 s: first offsets %v (%v, %v; %s starts at 0)", out, err1, err2, untrimmed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
