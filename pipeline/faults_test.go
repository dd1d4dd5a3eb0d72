package pipeline

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/internal/trendtest"
	"github.com/searchflow/searchflow/stages/generator"
)

// synthTruth folds the n events the generator makes for seed, users and hotels.
func synthTruth(n, seed int64, users, hotels int) *apitest.Expected {
	want := apitest.New()
	s := generator.NewSynth(seed, users, hotels)
	for i := int64(0); i < n; i++ {
		ev := s.Event(i, time.Unix(1, 0))
		offers := map[string][]int64{}
		for adv, os := range ev.HotelAdvertisers {
			for _, o := range os {
				offers[adv] = append(offers[adv], o.Eurocents)
			}
		}
		want.Add(ev.UserID, ev.HotelID, offers)
	}
	return want
}

func readyz(t *testing.T, base string) (int, map[string]string) {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var b struct {
		Problems map[string]string `json:"problems"`
	}
	_ = json.Unmarshal(body, &b)
	return resp.StatusCode, b.Problems
}

// waitReadyz polls /readyz until ok says its answer is the expected one, for up to 30 s, and
// returns the last problems.
func waitReadyz(t *testing.T, base, what string, ok func(code int, problems map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, problems := readyz(t, base)
		if ok(code, problems) {
			return problems
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not %s within 30s: %d %v", what, code, problems)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisOutage kills redis-server mid-stream and starts an empty one on the same port: /readyz
// must say not ready meanwhile, and the view must end exact (rebuilt from Kafka), its trend
// windows too (events out of order and late: their stream times are rebuilt with them).
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	const n, seed, users, hotels = 6000, 7, 300, 30
	srv := redistest.Start(t)
	h := start(t, map[string]string{
		"REDIS_ADDR": srv.Addr, "GENERATOR_MAX_EVENTS": strconv.Itoa(n), "GENERATOR_SEED": strconv.Itoa(seed),
		"GENERATOR_USERS": strconv.Itoa(users), "GENERATOR_HOTELS": strconv.Itoa(hotels), "GENERATOR_RATE": "3000",
		// Only the timestamps: the users, hotels and offers stay synthTruth's.
		"GENERATOR_DISORDER": "1m", "GENERATOR_LATE_FRACTION": "0.05", "TREND_WINDOWS": "1m,10m",
	})
	waitSomeAggregated(t, h.base)

	srv.Stop()
	problems := waitReadyz(t, h.base, "report Redis down", func(code int, problems map[string]string) bool {
		return code == http.StatusServiceUnavailable && problems["redis"] != ""
	})
	t.Logf("not ready while Redis is down: %v", problems)
	srv.Restart(t) // empty, as a Redis without persistence comes back

	synthTruth(n, seed, users, hotels).WaitEqual(t, h.base, 90*time.Second)
	waitReadyz(t, h.base, "be ready again after the outage", func(code int, _ map[string]string) bool {
		return code == http.StatusOK
	})
	truth := trendtest.Wait(t, h.base, h.kafka, 5*time.Minute, trendtest.Windows(t, "1m,10m"))
	if truth.LateUsers == 0 {
		t.Error("no late events: GENERATOR_LATE_FRACTION did not reach the trends")
	}
	h.stop()
}

// faultInjector closes the client's connection on every nth request of some keys, up to a
// budget per key, as a flaky broker or network would.
type faultInjector struct {
	mu       sync.Mutex
	every    int
	budget   int
	seen     map[int16]int
	injected map[int16]int
}

func (f *faultInjector) control(key int16) func(kmsg.Request) (kmsg.Response, error, bool) {
	return func(kmsg.Request) (kmsg.Response, error, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.seen[key]++
		if f.seen[key]%f.every != 0 || f.injected[key] >= f.budget {
			return nil, nil, false // let the broker handle it
		}
		f.injected[key]++
		return nil, errors.New("injected fault"), true
	}
}

// TestBrokerFaults runs the daemon against a kfake broker that drops connections on produce,
// fetch, transaction, commit and heartbeat requests; the counts must end exact, and every kind
// of fault must have been injected, or the test did not test it. AddPartitionsToTxn and
// AddOffsetsToTxn are not among them: franz-go leaves both out against a broker with transaction
// version 2 (KIP-890), as kfake is, so they are never sent.
func TestBrokerFaults(t *testing.T) {
	t.Parallel()
	const n, seed, users, hotels = 5000, 11, 250, 25
	cluster, addr := kafkatest.Start(t, 3)
	f := &faultInjector{every: 7, budget: 15, seen: map[int16]int{}, injected: map[int16]int{}}
	keys := []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.OffsetCommit, kmsg.TxnOffsetCommit, kmsg.EndTxn, kmsg.Heartbeat}
	for _, key := range keys {
		cluster.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			cluster.KeepControl()
			return f.control(req.Key())(req)
		})
	}
	srv := redistest.Start(t)
	h := start(t, map[string]string{
		"KAFKA_BROKERS": addr, "REDIS_ADDR": srv.Addr, "GENERATOR_MAX_EVENTS": strconv.Itoa(n),
		"GENERATOR_SEED": strconv.Itoa(seed), "GENERATOR_USERS": strconv.Itoa(users),
		"GENERATOR_HOTELS": strconv.Itoa(hotels), "GENERATOR_RATE": "5000", "BATCH_MAX_RECORDS": "200",
	})
	synthTruth(n, seed, users, hotels).WaitEqual(t, h.base, 120*time.Second)
	h.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	t.Logf("faults injected per request key: %v (requests seen: %v)", f.injected, f.seen)
	for _, key := range keys {
		if f.injected[key.Int16()] == 0 {
			t.Errorf("no fault was injected on %s requests (%d seen): the test did not test it", key.Name(), f.seen[key.Int16()])
		}
	}
}

// TestBrokerOutage stops the (external) broker mid-stream and brings it back on the same port
// and data: the stages must retry rather than exit, /readyz must say Kafka is unreachable, and the
// counts must end exact.
func TestBrokerOutage(t *testing.T) {
	t.Parallel()
	const n, seed, users, hotels = 6000, 13, 200, 20
	dir := t.TempDir()
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir)) // on a port of its choosing
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { broker.Close() })
	addr := broker.ListenAddrs()[0]
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	// The broker comes back on the port it had; while it was down another process may have taken
	// the port for a while.
	restartBroker := func() *kfake.Cluster {
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir))
			if err == nil {
				return c
			}
			if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
				t.Fatalf("restart broker on port %d: %v", port, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	srv := redistest.Start(t)
	h := start(t, map[string]string{
		"KAFKA_BROKERS": addr, "REDIS_ADDR": srv.Addr, "GENERATOR_MAX_EVENTS": strconv.Itoa(n),
		"GENERATOR_SEED": strconv.Itoa(seed), "GENERATOR_USERS": strconv.Itoa(users),
		"GENERATOR_HOTELS": strconv.Itoa(hotels), "GENERATOR_RATE": "2000",
	})
	waitSomeAggregated(t, h.base)

	broker.Close()
	problems := waitReadyz(t, h.base, "report Kafka down", func(code int, problems map[string]string) bool {
		return code == http.StatusServiceUnavailable && problems["kafka"] != ""
	})
	t.Logf("not ready while the broker is down: %v", problems["kafka"])
	broker = restartBroker()

	synthTruth(n, seed, users, hotels).WaitEqual(t, h.base, 120*time.Second)
	h.stop()
}

// waitSomeAggregated waits until the API shows at least one user.
func waitSomeAggregated(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var b struct{ Count int }
		if resp, err := http.Get(base + "/users?limit=1"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&b)
			resp.Body.Close()
		}
		if b.Count > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing aggregated within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
