package scaleout_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/daemontest"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// services are the Kafka cluster (kfake, three brokers) and the Redis Cluster (three masters) the
// daemons of a test share, with the environment that points a daemon at them.
type services struct {
	kafka  *kfake.Cluster
	broker string // one broker's address, for the test's own clients
	redis  *redistest.Cluster
	env    map[string]string
}

func startServices(t *testing.T) *services {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	rc := redistest.StartCluster(t, 3)
	return &services{kafka: kc, broker: kc.ListenAddrs()[0], redis: rc, env: map[string]string{
		"KAFKA_BROKERS": strings.Join(kc.ListenAddrs(), ","), "REDIS_ADDR": strings.Join(rc.Addrs(), ","),
		"REDIS_CLUSTER": "on", "TOPIC_PARTITIONS": "6", "BATCH_MAX_RECORDS": "500", "LOG_LEVEL": "info",
		// A killed daemon's partitions move after this; the default 45 s only makes the test longer.
		"GROUP_SESSION_TIMEOUT": "10s",
		"STAGES":                "transformer,aggregator,api",
	}}
}

// worker starts a daemon with the transformer, the aggregators and the API, named instance.
func (s *services) worker(t *testing.T, bin, instance string, extra map[string]string) (*daemontest.Daemon, map[string]string) {
	t.Helper()
	env := map[string]string{"INSTANCE_ID": instance}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	d := daemontest.Start(t, bin, env)
	t.Cleanup(func() { dumpOnFailure(t, instance, d) })
	return d, env
}

// dumpOnFailure logs what a daemon says about itself when the test failed: /readyz, the lag on
// /stats and the end of its log.
func dumpOnFailure(t *testing.T, name string, d *daemontest.Daemon) {
	if !t.Failed() {
		return
	}
	c := http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/readyz", "/stats"} {
		if resp, err := c.Get(d.Base + path); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%s %s: %d %s", name, path, resp.StatusCode, body)
		}
	}
	logs := strings.Split(d.Logs(), "\n")
	t.Logf("%s: last log lines:\n%s", name, strings.Join(logs[max(0, len(logs)-80):], "\n"))
}

// testSeed is SEARCHFLOW_SCALEOUT_SEED, else a new seed; logged so that a failure can be replayed.
func testSeed(t *testing.T) uint64 {
	seed := rand.Uint64()
	if v := os.Getenv("SEARCHFLOW_SCALEOUT_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SEARCHFLOW_SCALEOUT_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (replay with SEARCHFLOW_SCALEOUT_SEED=%d)", seed, seed)
	return seed
}

// TestThreeDaemonsKilledAtRandom runs three daemons (transformer, aggregators and API each) and
// one generator on a 3-broker Kafka cluster and a 3-master Redis Cluster. Mid-stream it SIGKILLs
// one daemon and starts a replacement with the same INSTANCE_ID (as a StatefulSet would); while
// the group rebalances for it, it SIGKILLs another. The survivors drain. The view, read through
// every live daemon's API, must equal the fold of the raw topic — when it first does, and again
// once nothing is left to read — `searchflow verify` must find every shard equal, and every
// invalid record must be in the dead-letter topic.
func TestThreeDaemonsKilledAtRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five daemons; skipped with -short")
	}
	rng := rand.New(rand.NewPCG(testSeed(t), 7))
	bin := daemontest.Build(t)
	s := startServices(t)
	const events = 20_000
	a, aEnv := s.worker(t, bin, "searchflow-0", nil)
	b, _ := s.worker(t, bin, "searchflow-1", nil)
	c, _ := s.worker(t, bin, "searchflow-2", nil)
	gen := daemontest.Start(t, bin, map[string]string{"KAFKA_BROKERS": s.env["KAFKA_BROKERS"], "STAGES": "generator",
		"INSTANCE_ID": "generator", "GENERATOR_MAX_EVENTS": strconv.Itoa(events), "GENERATOR_RATE": "4000",
		"GENERATOR_USERS": "500", "GENERATOR_HOTELS": "60", "TOPIC_PARTITIONS": "6", "LOG_LEVEL": "warn"})

	bad := kafkatest.ProduceInvalidRaw(t, s.broker, "raw_events", 0)
	wait := time.Duration(500+rng.IntN(1500)) * time.Millisecond
	time.Sleep(wait) // the random moment of the first crash, not a synchronisation
	a.Kill()
	t.Logf("SIGKILL searchflow-0 after %v", wait)
	bad += kafkatest.ProduceInvalidRaw(t, s.broker, "raw_events", 1)
	a, _ = s.worker(t, bin, "searchflow-0", map[string]string{"HTTP_ADDR": aEnv["HTTP_ADDR"]})
	wait = time.Duration(100+rng.IntN(900)) * time.Millisecond
	time.Sleep(wait) // while the group takes the replacement in
	b.Kill()
	t.Logf("replacement of searchflow-0 started; SIGKILL searchflow-1 %v later", wait)
	bad += kafkatest.ProduceInvalidRaw(t, s.broker, "raw_events", 2)

	raw := waitRaw(t, s.broker, events+bad)
	gen.Terminate()
	want := apitest.New()
	for _, r := range raw {
		want.AddRaw(r.Value)
	}
	t.Logf("raw topic: %d records, %d valid, %d invalid", len(raw), want.Events, want.Invalid)
	for _, d := range []*daemontest.Daemon{a, c} {
		want.WaitEqual(t, d.Base, 180*time.Second)
	}
	checkDeadLetters(t, s.broker, raw)
	verify(t, bin, s.env)
	a.Terminate()
	c.Terminate()
}

// waitRaw waits until the raw topic holds n records and returns them.
func waitRaw(t *testing.T, broker string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(120 * time.Second)
	for {
		ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), "raw_events")
		total := int64(0)
		if err == nil {
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		}
		if total >= int64(n) {
			return kafkatest.ReadToEnd(t, broker, "raw_events")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the raw topic holds %d records after 120 s, want %d (%v)", total, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkDeadLetters: every invalid raw record is in the dead-letter topic, under its raw position,
// and nothing else is.
func checkDeadLetters(t *testing.T, broker string, raw []*kgo.Record) {
	t.Helper()
	invalid := map[string]bool{}
	for _, r := range raw {
		if _, err := eventref.Transform(r.Value); err != nil {
			invalid[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = true
		}
	}
	seen := map[string]bool{}
	for _, r := range kafkatest.ReadCommittedToEnd(t, broker, "dead_letter_events") {
		pos := kafkatest.Header(r, event.HeaderSourcePartition) + "/" + kafkatest.Header(r, event.HeaderSourceOffset)
		if !invalid[pos] {
			t.Errorf("a dead letter from raw position %s, which holds a valid record", pos)
		}
		seen[pos] = true
	}
	for pos := range invalid {
		if !seen[pos] {
			t.Errorf("the invalid raw record at %s is not in the dead-letter topic", pos)
		}
	}
}
