package generator

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"
)

const rawTopic = "raw"

func TestRunSynthetic(t *testing.T) {
	tests := []struct {
		name      string
		rate      int
		maxEvents int64
	}{
		{"as fast as the broker takes them", 0, 500},
		{"paced", 2000, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrs := startBroker(t)
			g := New(Config{Topic: rawTopic, Rate: tt.rate, MaxEvents: tt.maxEvents, Seed: 7, Users: 50, Hotels: 20},
				newProducer(t, addrs), zaptest.NewLogger(t))

			start := time.Now()
			if err := waitRun(t, runGenerator(t, context.Background(), g), time.Minute); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// Event i is due i/rate after the start; the pacer lets it out up to 1ms early.
			if tt.rate > 0 {
				minimum := time.Duration(tt.maxEvents-1)*time.Second/time.Duration(tt.rate) - time.Millisecond
				if elapsed := time.Since(start); elapsed < minimum {
					t.Errorf("Run took %v for %d events at %d/s, want at least %v", elapsed, tt.maxEvents, tt.rate, minimum)
				}
			}
			checkCounts(t, g, map[string]int64{"produced": tt.maxEvents, "failed": 0, "bad_lines": 0})
			if n := topicSize(t, addrs, rawTopic); n != tt.maxEvents {
				t.Errorf("topic %s holds %d records, want %d", rawTopic, n, tt.maxEvents)
			}
			for _, r := range readTopic(t, addrs, rawTopic, int(tt.maxEvents)) {
				p, err := eventref.Transform(r.Value)
				if err != nil {
					t.Fatalf("offset %d/%d: Transform: %v\n%s", r.Partition, r.Offset, err, r.Value)
				}
				if string(r.Key) != p.UserID {
					t.Fatalf("offset %d/%d: key %q, want the event's user_id %q", r.Partition, r.Offset, r.Key, p.UserID)
				}
			}
		})
	}
}

// TestRunSyntheticOptions: Run passes the config's options to the synth. With every event late,
// each search_timestamp trails its record's timestamp (set when produced, after the event was
// made) by at least 2*Lateness + Disorder + 1s; bad options fail the run before producing.
func TestRunSyntheticOptions(t *testing.T) {
	addrs := startBroker(t)
	cfg := Config{Topic: rawTopic, MaxEvents: 200, Seed: 7, Users: 50, Hotels: 20,
		Skew: 1.1, Disorder: 30 * time.Second, LateFraction: 1, Lateness: time.Minute}
	g := New(cfg, newProducer(t, addrs), zaptest.NewLogger(t))
	if err := waitRun(t, runGenerator(t, context.Background(), g), time.Minute); err != nil {
		t.Fatalf("Run: %v", err)
	}
	const gap = 151 // seconds: 2*1m + 30s + 1s
	for _, r := range readTopic(t, addrs, rawTopic, int(cfg.MaxEvents)) {
		var ev event.Raw
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("offset %d/%d: %v\n%s", r.Partition, r.Offset, err, r.Value)
		}
		if back := r.Timestamp.Unix() - ev.SearchTimestamp; back < gap {
			t.Fatalf("offset %d/%d: search_timestamp %d only %ds before the record's %s, want >= %ds",
				r.Partition, r.Offset, ev.SearchTimestamp, back, r.Timestamp, gap)
		}
	}

	cfg.Skew = -1
	bad := New(cfg, newProducer(t, addrs), zaptest.NewLogger(t))
	err := waitRun(t, runGenerator(t, context.Background(), bad), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "skew -1") {
		t.Fatalf("Run with skew -1 = %v, want an error naming the skew", err)
	}
	checkCounts(t, bad, map[string]int64{"produced": 0})
}

func TestRunDrainsOnCancel(t *testing.T) {
	addrs := startBroker(t)
	g := New(Config{Topic: rawTopic, Seed: 1, Users: 100, Hotels: 10}, newProducer(t, addrs), zaptest.NewLogger(t))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runGenerator(t, ctx, g)
	poll(t, 30*time.Second, "100 records produced", func() bool { return g.Counters().Map()["produced"] >= 100 })
	cancel()
	if err := waitRun(t, done, 30*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v, want nil (a clean drain)", err)
	}

	counts := g.Counters().Map()
	if counts["produced"] < 100 || counts["failed"] != 0 {
		t.Errorf("Counts() = %v, want at least 100 produced and none failed (canceled records are no failure)", counts)
	}
	// Records failed by the cancellation were never written: the topic holds exactly what the
	// generator counted as produced, no more, no less.
	if n := topicSize(t, addrs, rawTopic); n != counts["produced"] {
		t.Errorf("topic %s holds %d records, the generator counted %v", rawTopic, n, counts)
	}
}

// replayFixture is a small file in the original format: 7 events over 5 good lines' hotels, one
// unreadable line, one blank line and no newline after the last line.
const replayFixture = "u1\t1620224528\t{6036:{\"advertisers\":{\"Amoma\":[{\"eurocents\":17558,\"breakfast\":false}]}}," +
	"6035:{\"advertisers\":{\"Mercure\":[{\"eurocents\":31266,\"breakfast\":true},{\"eurocents\":12621}]}}}\n" +
	"u2\t1620224529\t{1:{\"advertisers\":{\"24:7 {x}\":[{\"eurocents\":100}]}}}\n" +
	"\n" +
	"u3\tnot-a-timestamp\t{2:{\"advertisers\":{\"Amoma\":[{\"eurocents\":1}]}}}\n" +
	"u4\t1620224530\t{7:{\"advertisers\":{\"HRS\":[{\"eurocents\":5000}]}},8:{},9:{\"advertisers\":{\"agoda\":[{\"eurocents\":7000}]}}}\r\n" +
	"u5\t1620224531\t{42:{\"advertisers\":{\"expedia\":[{\"eurocents\":9900,\"breakfast\":null}]}}}"

func TestRunReplay(t *testing.T) {
	// Events in file order, as "user/hotel"; hotel 8 has no advertisers and is produced anyway,
	// for the transformer to dead-letter.
	all := []string{"u1/6036", "u1/6035", "u2/1", "u4/7", "u4/8", "u4/9", "u5/42"}
	timestamps := map[string]int64{"u1": 1620224528, "u2": 1620224529, "u4": 1620224530, "u5": 1620224531}
	tests := []struct {
		name      string
		maxEvents int64
		want      []string
	}{
		{"whole file", 0, all},
		{"cap above the file", 100, all},
		{"cap inside the file", 4, all[:4]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "sample.txt")
			if err := os.WriteFile(file, []byte(replayFixture), 0o600); err != nil {
				t.Fatal(err)
			}
			addrs := startBroker(t)
			g := New(Config{Topic: rawTopic, MaxEvents: tt.maxEvents, ReplayFile: file, Users: 1, Hotels: 1},
				newProducer(t, addrs), zaptest.NewLogger(t))
			if err := waitRun(t, runGenerator(t, context.Background(), g), time.Minute); err != nil {
				t.Fatalf("Run: %v", err)
			}

			checkCounts(t, g, map[string]int64{"produced": int64(len(tt.want)), "failed": 0, "bad_lines": 1})
			if n := topicSize(t, addrs, rawTopic); n != int64(len(tt.want)) {
				t.Errorf("topic %s holds %d records, want %d", rawTopic, n, len(tt.want))
			}
			// Records of one user share a key, hence a partition, so their order survives.
			byUser := make(map[string][]string)
			for _, r := range readTopic(t, addrs, rawTopic, len(tt.want)) {
				var v struct {
					UserID  string `json:"user_id"`
					HotelID string `json:"hotel_id"`
					TS      int64  `json:"search_timestamp"`
				}
				if err := json.Unmarshal(r.Value, &v); err != nil {
					t.Fatalf("offset %d/%d: %v\n%s", r.Partition, r.Offset, err, r.Value)
				}
				if string(r.Key) != v.UserID || v.TS != timestamps[v.UserID] {
					t.Errorf("offset %d/%d: key %q, value %s", r.Partition, r.Offset, r.Key, r.Value)
				}
				_, err := eventref.Transform(r.Value)
				var verr *event.ValidationError
				switch {
				case v.HotelID == "8" && (!errors.As(err, &verr) || verr.Reason != event.ReasonMissingAdvertisers):
					t.Errorf("hotel 8: Transform error %v, want reason %s", err, event.ReasonMissingAdvertisers)
				case v.HotelID != "8" && err != nil:
					t.Errorf("offset %d/%d: Transform: %v\n%s", r.Partition, r.Offset, err, r.Value)
				}
				byUser[v.UserID] = append(byUser[v.UserID], v.UserID+"/"+v.HotelID)
			}
			var got []string
			for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
				got = append(got, byUser[u]...)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("topic holds %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRunReplayMissingFile(t *testing.T) {
	addrs := startBroker(t)
	g := New(Config{Topic: rawTopic, ReplayFile: filepath.Join(t.TempDir(), "absent.txt")},
		newProducer(t, addrs), zaptest.NewLogger(t))
	err := waitRun(t, runGenerator(t, context.Background(), g), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "absent.txt") {
		t.Fatalf("Run = %v, want an error naming the missing file", err)
	}
}

// startBroker runs a one-broker kfake cluster with the raw topic (3 partitions), closed in
// t.Cleanup.
func startBroker(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, rawTopic))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// newProducer returns a default (idempotent) producer, closed in t.Cleanup.
func newProducer(t *testing.T, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// runGenerator starts g.Run(ctx) and returns where its result arrives. If the test ends first,
// the cleanup cancels the run and waits for it, so it never outlives the producer or broker
// (registered earlier, closed later).
func runGenerator(t *testing.T, ctx context.Context, g *Generator) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- g.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return done
}

func waitRun(t *testing.T, done <-chan error, within time.Duration) error {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		t.Fatalf("Run did not return within %v", within)
		return nil
	}
}

// poll checks cond every few milliseconds until it holds, failing the test at the deadline.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("no %s within %v", what, within)
		case <-tick.C:
		}
	}
}

// readTopic reads topic from the start until want records arrived, failing at a deadline.
func readTopic(t *testing.T, addrs []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: got %d records, want %d before the deadline", topic, len(out), want)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Logf("fetch %s/%d: %v", tp, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// topicSize returns how many records topic holds: the sum of its partitions' end offsets (the
// topic is fresh, so nothing was deleted).
func topicSize(t *testing.T, addrs []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offsets, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	var n int64
	offsets.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		n += o.Offset
	})
	return n
}

// checkCounts checks the named totals of g.Counters().Map(); totals not named are not checked.
func checkCounts(t *testing.T, g *Generator, want map[string]int64) {
	t.Helper()
	got := g.Counters().Map()
	for name, n := range want {
		if v, ok := got[name]; !ok || v != n {
			t.Errorf("Counts() = %v, want %s = %d", got, name, n)
		}
	}
}
