package pipeline

import (
	"context"
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
// are idle (WaitEqual), so a late double count would show; the dead-letter topic is read to its
// end then, so a late or unexpected dead letter would too.
func TestHostileRecordsBetweenNormalEvents(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := start(t, map[string]string{"REDIS_ADDR": srv.Addr, "STAGES": "transformer,aggregator,api", "STALL_TIMEOUT": "3s"})
	kafka := h.kafka

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
	dead := kafkatest.ReadCommittedToEnd(t, kafka, "dead_letter_events")
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
	h.stop()
}
