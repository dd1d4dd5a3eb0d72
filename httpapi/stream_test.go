package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/redistest"
)

// sseEvent is one event a test client received: data, and the number of the snapshot it came
// from (countingStats).
type sseEvent struct {
	id   int
	read int64
	data string
}

// sseConn is an open /stream whose events a goroutine collects.
type sseConn struct {
	mu     sync.Mutex
	events []sseEvent
	cancel context.CancelFunc
	done   chan struct{} // closed when the stream has ended
}

// countingStats returns a stats function that numbers its calls: the broadcaster calls it once
// per snapshot, so each event tells which read of the view it carries.
func countingStats() (func() Stats, *atomic.Int64) {
	var n atomic.Int64
	return func() Stats { return Stats{UptimeSeconds: float64(n.Add(1))} }, &n
}

// openStream opens GET /stream and collects its events until closed or the test ends. The
// status is returned, with the body of an answer that is not a stream.
func openStream(t *testing.T, c *http.Client, url string) (*sseConn, int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		return nil, resp.StatusCode, b.String()
	}
	s := &sseConn{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		id := -1
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "id: "); ok {
				id, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				var u struct {
					Stats struct {
						UptimeSeconds float64 `json:"uptime_seconds"`
					} `json:"stats"`
				}
				_ = json.Unmarshal([]byte(v), &u)
				s.mu.Lock()
				s.events = append(s.events, sseEvent{id: id, read: int64(u.Stats.UptimeSeconds), data: v})
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(s.close)
	return s, resp.StatusCode, ""
}

// close ends the stream from the client's side and waits for the collector to stop.
func (s *sseConn) close() {
	s.cancel()
	<-s.done
}

func (s *sseConn) received() []sseEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sseEvent(nil), s.events...)
}

// eventually polls cond until it holds, or fails the test after 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zcardCalls is how many ZCARD commands redis-server has run: each snapshot of the view runs 4.
func zcardCalls(t *testing.T, rs *redistest.Server) int64 {
	t.Helper()
	c := rs.Client(t)
	info, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_zcard:calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// TestStreamOneReadPerTick opens as many streams as the server allows: the view is read once per
// tick for all of them (counted by the snapshots and by redis-server itself), every client gets
// the same events, one more client is turned away with 503, and the reads stop with the last
// client.
func TestStreamOneReadPerTick(t *testing.T) {
	t.Parallel()
	const clients, every = 50, 50 * time.Millisecond
	stats, reads := countingStats()
	f := newFixture(t, nil, nil, WithStats(stats), WithStreamInterval(every), WithStreamMaxClients(clients))
	load(t, f, fixedBatches)
	c := f.http.Client()

	conns := make([]*sseConn, clients)
	for i := range conns {
		s, code, body := openStream(t, c, f.http.URL+"/stream")
		if code != http.StatusOK {
			t.Fatalf("client %d: status %d (%s)", i, code, body)
		}
		conns[i] = s
	}
	allPast := func(read int64) func() bool {
		return func() bool {
			for _, s := range conns {
				if ev := s.received(); len(ev) == 0 || ev[len(ev)-1].read <= read {
					return false
				}
			}
			return true
		}
	}
	eventually(t, "every client's first event", allPast(0))

	// One more is turned away, on GET and on HEAD, with the JSON error.
	_, code, body := openStream(t, c, f.http.URL+"/stream")
	r := response{code: code, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}
	if code != http.StatusServiceUnavailable {
		t.Fatalf("client %d: status %d, want 503 (%s)", clients+1, code, body)
	}
	if msg, status := errorBody(t, r); status != http.StatusServiceUnavailable || !strings.Contains(msg, "streams") {
		t.Errorf("client %d: body %s", clients+1, body)
	}
	if r := do(t, f, http.MethodHead, "/stream"); r.code != http.StatusServiceUnavailable {
		t.Errorf("HEAD /stream with every place taken: %d, want 503", r.code)
	}

	// A window of at least 10 ticks, all clients connected.
	start, reads0, zcard0 := time.Now(), reads.Load(), zcardCalls(t, f.redis)
	eventually(t, "10 more events at every client", allPast(reads0+10))
	elapsed, readsN, zcardN := time.Since(start), reads.Load()-reads0, zcardCalls(t, f.redis)-zcard0
	// Each client polling on its own would read clients times as often.
	if most := int64(elapsed/every) + 2; readsN > most {
		t.Errorf("%d snapshots in %v, want at most %d (one per %v tick)", readsN, elapsed, most, every)
	}
	// A snapshot counts users, hotels and hotels with prices: one ZCARD per shard each.
	perSnapshot := int64(3 * fixturePartitions)
	if zcardN > perSnapshot*(readsN+1) {
		t.Errorf("redis-server ran %d ZCARD for %d snapshots, want %d each", zcardN, readsN, perSnapshot)
	}
	t.Logf("%d clients: %d snapshots, %d ZCARD in %v", clients, readsN, zcardN, elapsed.Round(time.Millisecond))

	// The clients share the events: the same snapshot, byte for byte, at every client.
	seen := map[int64]map[string]int{}
	for _, s := range conns {
		for i, ev := range s.received() {
			if ev.id != i {
				t.Fatalf("event %d of a client has id %d", i, ev.id)
			}
			if seen[ev.read] == nil {
				seen[ev.read] = map[string]int{}
			}
			seen[ev.read][ev.data]++
		}
	}
	shared := 0
	for read, datas := range seen {
		if len(datas) != 1 {
			t.Errorf("snapshot %d reached the clients in %d encodings", read, len(datas))
		}
		for _, n := range datas {
			if n == clients {
				shared++
			}
		}
	}
	if shared < 5 {
		t.Errorf("only %d snapshots reached all %d clients, want at least 5", shared, clients)
	}

	// A place freed is a place taken.
	conns[0].close()
	eventually(t, "a place for a new client", func() bool { return !f.srv.live.full() })
	conns[0], code, body = openStream(t, c, f.http.URL+"/stream")
	if code != http.StatusOK {
		t.Fatalf("after a client left: status %d (%s)", code, body)
	}

	// With the last client the loop stops: once it is gone, nothing is left to read the view.
	for _, s := range conns {
		s.close()
	}
	eventually(t, "the loop to stop", func() bool {
		f.srv.live.mu.Lock()
		defer f.srv.live.mu.Unlock()
		return f.srv.live.stop == nil && len(f.srv.live.clients) == 0
	})
	f.srv.live.loops.Wait()
	stopped := reads.Load()

	// And a new client starts it again.
	s, code, _ := openStream(t, c, f.http.URL+"/stream")
	if code != http.StatusOK {
		t.Fatalf("after every client left: status %d", code)
	}
	eventually(t, "an event after the restart", func() bool {
		ev := s.received()
		return len(ev) > 0 && ev[0].read > stopped && ev[0].id == 0
	})
}

// TestBroadcasterSlowClient checks that a client that takes no events holds nobody back: the
// other keeps getting every new event, and the slow one's mailbox holds only the newest.
func TestBroadcasterSlowClient(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	read := func(context.Context) ([]byte, error) { return []byte(strconv.FormatInt(reads.Add(1), 10)), nil }
	b := newBroadcaster(time.Millisecond, 2, read, zaptest.NewLogger(t))
	defer b.close()
	fast, err := b.join()
	if err != nil {
		t.Fatal(err)
	}
	slow, err := b.join()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.join(); err == nil {
		t.Error("a third client joined a broadcaster for two")
	}
	last := 0
	timeout := time.After(20 * time.Second)
	for got := 0; got < 50; got++ {
		select {
		case data := <-fast.events:
			n, _ := strconv.Atoi(string(data))
			if n <= last {
				t.Fatalf("the fast client got event %d after %d", n, last)
			}
			last = n
		case <-timeout:
			t.Fatalf("the fast client got %d events, then none: the slow one holds it back", got)
		}
	}
	// The slow client's one pending event is at least as new as what the fast one has seen.
	b.mu.Lock()
	pending := len(slow.events)
	b.mu.Unlock()
	if pending != 1 {
		t.Fatalf("the slow client has %d events pending, want 1", pending)
	}
	n, _ := strconv.Atoi(string(<-slow.events))
	if n < last {
		t.Errorf("the slow client's pending event is %d, older than %d", n, last)
	}
	b.leave(fast)
	b.leave(slow)
	b.loops.Wait()
}

// TestBroadcasterReadFailure checks that a failed read sends nothing and the next tick tries
// again.
func TestBroadcasterReadFailure(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	read := func(context.Context) ([]byte, error) {
		if reads.Add(1)%2 == 1 {
			return nil, errors.New("view unavailable")
		}
		return []byte(strconv.FormatInt(reads.Load(), 10)), nil
	}
	b := newBroadcaster(time.Millisecond, 1, read, zaptest.NewLogger(t))
	defer b.close()
	c, err := b.join()
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		select {
		case data := <-c.events:
			if n, _ := strconv.Atoi(string(data)); n%2 != 0 {
				t.Fatalf("event %q from a failed read", data)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no event after failed reads")
		}
	}
	b.leave(c)
}

// TestShutdownEndsStreams checks that Shutdown ends open streams at once and refuses new ones.
func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	stats, _ := countingStats()
	f := newFixture(t, nil, nil, WithStats(stats), WithStreamInterval(10*time.Millisecond))
	base, served := serve(t, f.srv)
	c := client(t)
	s, code, _ := openStream(t, c, base+"/stream")
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	eventually(t, "an event", func() bool { return len(s.received()) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a stream open: %v", err)
	}
	waitFor(t, "the stream to end", s.done)
	if err := waitFor(t, "Serve to return", served); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if _, err := f.srv.live.join(); err == nil {
		t.Error("a stream joined after Shutdown")
	}
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Errorf("a second Shutdown: %v", err)
	}
}
