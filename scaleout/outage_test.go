package scaleout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/daemontest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/view"
)

// produceRaw writes n valid raw events, from the n-th on, and adds them to want.
func produceRaw(t *testing.T, broker string, want *apitest.Expected, from, n int) {
	t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range n {
		k := from + i
		v := fmt.Sprintf(`{"user_id":"u%d","hotel_id":%d,"search_timestamp":1620000000,"hotel_advertisers":{"a%d":[{"eurocents":%d}],"b":[{"eurocents":%d}]}}`,
			k%97, k%31, k%5, 100+k%1000, 50+k%77)
		recs[i] = &kgo.Record{Topic: "raw_events", Key: []byte(fmt.Sprint(k)), Value: []byte(v)}
		want.AddRaw([]byte(v))
	}
	kafkatest.Produce(t, broker, recs...)
}

// statusOf GETs path and returns the status code (0 when nothing answered).
func statusOf(base, path string) int {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// consumed is the records both aggregators of the daemon at base consumed so far.
func consumed(t *testing.T, base string) int64 {
	t.Helper()
	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s httpapi.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.Stages["aggregator"].Totals["consumed"] + s.Stages["aggregator-hotels"].Totals["consumed"]
}

// TestRedisMasterDies kills a master of the Redis Cluster under a running daemon. With no replica
// and cluster-require-full-coverage yes (the default), every node answers CLUSTERDOWN meanwhile:
// the API answers 503, /readyz too, and the pipeline waits without loss while events keep
// arriving. The master comes back with its data and the view is exact. Then another master loses
// its data entirely: only the shards it held are rebuilt from Kafka — the aggregators consume
// exactly the records of those shards' partitions again, not the whole topics — and the view is
// exact again.
func TestRedisMasterDies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a daemon on a Redis Cluster; skipped with -short")
	}
	bin := daemontest.Build(t)
	s := startServices(t)
	d, _ := s.worker(t, bin, "searchflow-0", nil)
	want := apitest.New()
	produceRaw(t, s.broker, want, 0, 3000)
	want.WaitEqual(t, d.Base, 90*time.Second)

	s.redis.Kill(1)
	s.redis.WaitDown(t)
	produceRaw(t, s.broker, want, 3000, 1000) // while the view cannot be written
	waitStatus(t, d.Base, "/users", http.StatusServiceUnavailable)
	waitStatus(t, d.Base, "/readyz", http.StatusServiceUnavailable)
	s.redis.Restart(t, 1)
	want.WaitEqual(t, d.Base, 90*time.Second)

	// Master 2 loses everything. Its shards, and the records their partitions hold:
	ctx := context.Background()
	shards, layout, err := view.New(s.redis.Client(t)).Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perPartition := map[string]map[int32]int64{}
	for _, topic := range []string{layout.UsersTopic, layout.HotelsTopic} {
		perPartition[topic] = map[int32]int64{}
		for _, r := range kafkatest.ReadCommittedToEnd(t, s.broker, topic) {
			perPartition[topic][r.Partition]++
		}
	}
	var affected int64
	var lost []string
	for _, sh := range shards {
		if s.redis.SlotOwner(t, int(sh.Slot)) == 2 {
			affected += perPartition[layout.Topic(sh.Role)][sh.Partition]
			lost = append(lost, sh.String())
		}
	}
	before := consumed(t, d.Base)
	s.redis.RestartEmpty(t, 2)
	want.WaitEqual(t, d.Base, 90*time.Second)
	if again := consumed(t, d.Base) - before; again != affected {
		t.Errorf("after master 2 lost shards %v the aggregators read %d records again, want exactly the %d of those shards' partitions (all: %d)",
			lost, again, affected, int64(want.Events)*2)
	}
	t.Logf("master 2 lost shards %v: %d records read again of %d in both topics", lost, affected, int64(want.Events)*2)
	verify(t, bin, s.env)
	d.Terminate()
}

// waitStatus polls path until it answers code.
func waitStatus(t *testing.T, base, path string, code int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := statusOf(base, path)
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s answers %d after 60 s, want %d", path, got, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
