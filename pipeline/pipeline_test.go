package pipeline

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
)

type harness struct {
	t      *testing.T
	base   string // the API, http://host:port
	admin  string // ADMIN_ADDR's listen address, "" without it
	kafka  string // the first seed broker: the embedded broker's address when it runs
	cancel context.CancelFunc
	done   chan error
}

// start runs the daemon through the same function main uses, with env over the test defaults,
// and returns once it serves the view. The tests that end with apitest's WaitEqual run in
// parallel: most of their time is spent waiting for the daemon to show it is idle.
func start(t *testing.T, env map[string]string) *harness {
	t.Helper()
	return startLogged(t, env, zaptest.NewLogger(t))
}

// testConfig loads the test defaults with env over them.
func testConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	vars := map[string]string{
		"DATA_DIR":            t.TempDir(),
		"EMBEDDED_KAFKA_ADDR": "127.0.0.1:0",
		"HTTP_ADDR":           "127.0.0.1:0",
		"GENERATOR_RATE":      "0",
		"STATS_INTERVAL":      "1s",
		"TOPIC_PARTITIONS":    "3",
		"BATCH_MAX_RECORDS":   "500",
		// Uniform popularity: the skewed one drifts with the wall clock at which events are made,
		// so synthTruth could not fold them again from the seed.
		"GENERATOR_SKEW": "0",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startLogged is start with the daemon's logger given. The daemon listens on port 0 (the
// embedded broker, the API, and ADMIN_ADDR when env sets it so) and tells the addresses it got.
func startLogged(t *testing.T, env map[string]string, log *zap.Logger) *harness {
	t.Helper()
	cfg := testConfig(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	var mu sync.Mutex
	var admin, kafka string
	opts := Options{
		OnListening: func(_, a string) { mu.Lock(); admin = a; mu.Unlock() },
		OnKafka:     func(b []string) { mu.Lock(); kafka = b[0]; mu.Unlock() },
		OnReady:     func(a string) { addr <- a },
	}
	h := &harness{t: t, cancel: cancel, done: make(chan error, 1)}
	go func() {
		h.done <- RunWith(ctx, cfg, log, opts)
	}()
	select {
	case a := <-addr:
		h.base = "http://" + a
		mu.Lock()
		h.admin, h.kafka = admin, kafka
		mu.Unlock()
	case err := <-h.done:
		t.Fatalf("pipeline exited before serving: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("API did not come up within 60s")
	}
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels the context as SIGTERM does and expects a clean drain.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("RunWith after cancel: %v", err)
		}
	case <-time.After(45 * time.Second):
		h.t.Fatal("pipeline did not drain within 45s")
	}
}

func (h *harness) get(path string, into any) (int, http.Header) {
	h.t.Helper()
	resp, err := http.Get(h.base + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			h.t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return resp.StatusCode, resp.Header
}

func (h *harness) waitReady() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := h.get("/readyz", nil); code == http.StatusOK {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var body any
	h.get("/readyz", &body)
	h.t.Fatalf("/readyz never ready: %v", body)
}

// TestEndToEndGenerated runs the whole daemon on the embedded broker and a real redis-server,
// generates a fixed number of events and checks every endpoint against a truth the test folds
// from the same seed.
func TestEndToEndGenerated(t *testing.T) {
	t.Parallel()
	const n, seed, users, hotels = 3000, 42, 200, 40
	srv := redistest.Start(t)
	h := start(t, map[string]string{
		"REDIS_ADDR": srv.Addr, "GENERATOR_MAX_EVENTS": strconv.Itoa(n), "GENERATOR_SEED": strconv.Itoa(seed),
		"GENERATOR_USERS": strconv.Itoa(users), "GENERATOR_HOTELS": strconv.Itoa(hotels),
	})
	want := synthTruth(n, seed, users, hotels)
	want.WaitEqual(t, h.base, 90*time.Second)
	h.waitReady() // the generator finished by design; the process stays ready
	h.stop()
}

// replayFixture is a small file in the original project's format: good lines, a hotel whose
// offers are invalid (dead-lettered), an unreadable line and a blank one.
const replayFixture = "u1\t1620224528\t{6036:{\"advertisers\":{\"Amoma\":[{\"eurocents\":17558,\"breakfast\":false}],\"Mercure\":[{\"eurocents\":31266,\"breakfast\":false},{\"eurocents\":12621,\"breakfast\":null}]}},6035:{\"advertisers\":{\"Amoma\":[{\"eurocents\":13328,\"breakfast\":false}]}}}\n" +
	"u2\t1620224529\t{6036:{\"advertisers\":{\"Amoma\":[{\"eurocents\":9000,\"breakfast\":true}],\"expedia\":[{\"eurocents\":11471,\"breakfast\":false}]}}}\n" +
	"this line is broken\n" +
	"\n" +
	"u1\t1620224530\t{7046:{\"advertisers\":{\"Destinia\":[{\"eurocents\":0,\"breakfast\":false}]}},6035:{\"advertisers\":{\"Destinia\":[{\"eurocents\":8359,\"breakfast\":false}]}}}\n"

// TestEndToEndReplayEmbedded replays a fixture on the fully embedded defaults (kfake and the
// in-process Redis store): it proves the embedded store boots and serves, that the replay's
// counts are exact, and that the invalid hotel lands in the dead-letter topic.
func TestEndToEndReplayEmbedded(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "replay.txt")
	if err := os.WriteFile(file, []byte(replayFixture), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]string{"GENERATOR_REPLAY_FILE": file})
	want := apitest.New()
	want.Add("u1", "6036", map[string][]int64{"Amoma": {17558}, "Mercure": {31266, 12621}})
	want.Add("u1", "6035", map[string][]int64{"Amoma": {13328}})
	want.Add("u2", "6036", map[string][]int64{"Amoma": {9000}, "expedia": {11471}})
	want.Add("u1", "6035", map[string][]int64{"Destinia": {8359}})
	want.WaitEqual(t, h.base, 60*time.Second)

	dead := kafkatest.ReadCommittedToEnd(t, h.kafka, "dead_letter_events")
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	if !strings.Contains(string(dead[0].Value), `"hotel_id":"7046"`) {
		t.Errorf("dead letter %s, want the hotel 7046 event", dead[0].Value)
	}
	reason := ""
	for _, hd := range dead[0].Headers {
		if hd.Key == "reason" {
			reason = string(hd.Value)
		}
	}
	if reason != string(event.ReasonNonPositiveEurocent) {
		t.Errorf("dead letter reason %q", reason)
	}
	// The processed topic, which a lost view is rebuilt from, keeps everything.
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	configs, err := kadm.NewClient(cl).DescribeTopicConfigs(context.Background(), "processed_events")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := configs.On("processed_events", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe processed_events: %v %v", err, rc.Err)
	}
	retention := "unset"
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" && c.Value != nil {
			retention = *c.Value
		}
	}
	if retention != "-1" {
		t.Errorf("processed_events retention.ms = %s, want -1", retention)
	}
	h.stop()
}

// TestTransactionalIDs: with external Kafka the transformer's transactional ID is stable, from
// INSTANCE_ID; with the embedded broker it stays fresh per session (empty here), as its crash
// recovery needs. TRANSACTION_TIMEOUT reaches the transformer.
func TestTransactionalIDs(t *testing.T) {
	load := func(env map[string]string) config.Config {
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	external := TransformerConfig(load(map[string]string{"KAFKA_BROKERS": "k:9092", "INSTANCE_ID": "searchflow-2",
		"TRANSACTION_TIMEOUT": "20s"}))
	if external.TransactionalID != "searchflow-transformer-searchflow-2" || external.TransactionTimeout != 20*time.Second {
		t.Errorf("external Kafka: transactional ID %q, timeout %s", external.TransactionalID, external.TransactionTimeout)
	}
	if embedded := TransformerConfig(load(map[string]string{"INSTANCE_ID": "searchflow-2"})); embedded.TransactionalID != "" {
		t.Errorf("embedded broker: transactional ID %q, want a fresh one per session", embedded.TransactionalID)
	}
	if got := sanitizeInstance("pod_7.ns/x y"); got != "pod_7.ns-x-y" {
		t.Errorf("sanitizeInstance = %q", got)
	}
}
