package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/corpus"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/stages/deadletter"
	"github.com/searchflow/searchflow/stages/generator"
)

// TestHostileRecordsBetweenNormalEvents replays the hostile corpus (huge, deep, many-keyed,
// out-of-range, forged records) between normal events through the whole daemon. Every normal
// event must come out exact and every hostile one exact or dead-lettered with its reason,
// within a bounded time — and the view must still be exact once every lag is 0 and the stages
// are idle, so a late double count would show.
func TestHostileRecordsBetweenNormalEvents(t *testing.T) {
	kafka := freePort(t)
	srv := redistest.Start(t)
	h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "EMBEDDED_KAFKA_ADDR": kafka,
		"STAGES": "transformer,aggregator,api", "STALL_TIMEOUT": "3s"})

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := apitest.New()
	synth := generator.NewSynth(9, 300, 40)
	hostile := corpus.Hostile()
	type at struct {
		partition int32
		offset    int64
	}
	expected := map[at]corpus.HostileCase{} // dead letters expected, by raw position
	var recs []*kgo.Record
	for i := 0; i < 2000; i++ {
		ev := synth.Event(int64(i), time.Unix(1, 0))
		value, err := generator.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: "raw_events", Key: []byte(ev.UserID), Value: value})
		want.AddRaw(value)
		if i%100 == 50 && i/100 < len(hostile) {
			c := hostile[i/100]
			r := &kgo.Record{Topic: "raw_events", Key: []byte(c.Key), Value: []byte(c.Value)}
			for _, hd := range c.Headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: hd.Key, Value: []byte(hd.Value)})
			}
			recs = append(recs, r)
			if c.Reason == "" {
				want.AddRaw([]byte(c.Value))
			}
		}
	}
	if len(hostile) > 20 {
		t.Fatalf("the corpus has %d cases; the loop above places at most 20", len(hostile))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results := cl.ProduceSync(ctx, recs...)
	if err := results.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	for _, res := range results {
		for _, c := range hostile {
			if c.Reason != "" && string(res.Record.Value) == c.Value && string(res.Record.Key) == c.Key {
				expected[at{res.Record.Partition, res.Record.Offset}] = c
			}
		}
	}

	want.WaitEqual(t, h.base, 90*time.Second)
	dead := kafkatest.ReadAll(t, kafka, "dead_letter_events", len(expected))
	for _, d := range dead {
		p, _ := strconv.Atoi(kafkatest.Header(d, "source_partition"))
		o, _ := strconv.ParseInt(kafkatest.Header(d, "source_offset"), 10, 64)
		c, ok := expected[at{int32(p), o}]
		if !ok {
			t.Errorf("unexpected dead letter from %d@%d: %.80q (%s)", p, o, d.Value, kafkatest.Header(d, "error"))
			continue
		}
		delete(expected, at{int32(p), o})
		if got := kafkatest.Header(d, "reason"); got != c.Reason || kafkatest.Header(d, "stage") != "transformer" {
			t.Errorf("%s: reason %q stage %q, want %q from the transformer (%s)", c.Name, got, kafkatest.Header(d, "stage"), c.Reason, kafkatest.Header(d, "error"))
		}
		if size := deadletter.Size(d); size > deadletter.MaxRecordBytes {
			t.Errorf("%s: dead letter of %d bytes", c.Name, size)
		}
	}
	for _, c := range expected {
		t.Errorf("%s: no dead letter", c.Name)
	}
	waitIdle(t, h.base)
	if diff := want.Diff(h.base); diff != "" {
		t.Fatalf("after the stages went idle: %s", diff)
	}
	h.stop()
}

// waitIdle waits until every consumer lag is 0 (a transactional topic's trailing commit marker
// and aborted records are not lag), nothing was consumed in the last second and /readyz is 200.
func waitIdle(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		var st Stats
		code, problems := readyz(t, base)
		resp, err := http.Get(base + "/stats")
		if err == nil {
			err = decodeJSON(resp, &st)
		}
		idle := err == nil && code == http.StatusOK && len(st.Lag) > 0
		for topic, parts := range st.Lag {
			for p, l := range parts {
				if l != 0 {
					idle, last = false, topic+"/"+p+" lag "+strconv.FormatInt(l, 10)
				}
			}
		}
		for name, s := range st.Stages {
			if s.Rates["1s"]["consumed"] != 0 {
				idle, last = false, name+" still consuming"
			}
		}
		if code != http.StatusOK {
			last = "not ready: " + strconv.Itoa(code) + " " + strconv.Quote(stringify(problems))
		}
		if idle {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the pipeline never went idle within 60s: %s", last)
}

func decodeJSON(resp *http.Response, into any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(into)
}

func stringify(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}
