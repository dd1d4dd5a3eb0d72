package transformer

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/corpus"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/stages/deadletter"
)

func TestTransformerRoutesValidAndInvalid(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "raw", "processed", "dlq")
	valid := func(i int) string {
		return fmt.Sprintf(`{"user_id":"u%d","hotel_id":%d,"search_timestamp":1620000000,"hotel_advertisers":{"a":[{"eurocents":%d},{"eurocents":5}],"b":[{"eurocents":7}]}}`, i%7, i%5, 100+i)
	}
	invalid := map[string]event.Reason{
		`not json`: event.ReasonNotJSON,
		`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{}}`:                        event.ReasonNoAdvertisers,
		`{"user_id":"u","hotel_id":1,"search_timestamp":-1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`:  event.ReasonInvalidTimestamp,
		`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":0.5}]}}`: event.ReasonInvalidEurocents,
		`[]`: event.ReasonNotObject,
	}
	var recs []*kgo.Record
	const nValid = 200
	for i := 0; i < nValid; i++ {
		recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte("k"), Value: []byte(valid(i))})
		if i%50 == 0 { // bad records sit between good ones in the same batches
			for raw := range invalid {
				recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte("bad"), Value: []byte(raw),
					Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte("test")}}})
			}
		}
	}
	kafkatest.Produce(t, addr, recs...)

	tr := New(Config{RawTopic: "raw", ProcessedTopic: "processed", DeadLetterTopic: "dlq", Group: "g-transformer",
		BatchMaxRecords: 64}, []kgo.Opt{kgo.SeedBrokers(addr)}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()

	processed := kafkatest.ReadAll(t, addr, "processed", nValid)
	nBad := 4 * len(invalid)
	dead := kafkatest.ReadAll(t, addr, "dlq", nBad)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	seen := map[string]int{}
	for _, r := range processed {
		var p event.Processed
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatalf("processed record is not JSON: %v", err)
		}
		if string(r.Key) != p.UserID {
			t.Errorf("processed key %q, want user id %q", r.Key, p.UserID)
		}
		if p.MinOffer.Price != 5 || p.MinOffer.Advertiser != "a" || p.AdvertiserMinPrices["b"] != 7 {
			t.Errorf("processed event %+v", p)
		}
		seen[string(r.Value)]++
	}
	// Every valid raw event appears exactly once (compare with our own transform of the inputs).
	for i := 0; i < nValid; i++ {
		p, err := event.Transform([]byte(valid(i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(p)
		seen[string(b)]--
	}
	for v, n := range seen {
		if n != 0 {
			t.Errorf("processed %s off by %d", v, n)
		}
	}
	for _, r := range dead {
		want, ok := invalid[string(r.Value)]
		if !ok {
			t.Errorf("unexpected dead letter %q", r.Value)
			continue
		}
		if got := kafkatest.Header(r, HeaderReason); got != string(want) {
			t.Errorf("reason header %q, want %q", got, want)
		}
		if kafkatest.Header(r, HeaderError) == "" || kafkatest.Header(r, HeaderSourceTopic) != "raw" || kafkatest.Header(r, HeaderStage) != "transformer" ||
			kafkatest.Header(r, HeaderSourcePartition) == "" || kafkatest.Header(r, HeaderSourceOffset) == "" || kafkatest.Header(r, "origin") != "test" {
			t.Errorf("dead letter headers %+v", r.Headers)
		}
	}
	if c := tr.Counts(); c["produced"] != nValid || c["dead_lettered"] != int64(nBad) {
		t.Errorf("counts %v", c)
	}
}

func TestTransformerRestartDoesNotDuplicate(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "processed", "dlq")
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: "raw", Value: []byte(fmt.Sprintf(
				`{"user_id":"u%d","hotel_id":"h","search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`, i))})
		}
		kafkatest.Produce(t, addr, recs...)
	}
	run := func() (stop func()) {
		_, stop = runStoppable(t, Config{BatchMaxRecords: 10}, kgo.SeedBrokers(addr))
		return stop
	}
	produce(0, 100)
	stop := run()
	kafkatest.ReadAll(t, addr, "processed", 100)
	stop()
	produce(100, 150)
	stop = run()
	got := kafkatest.ReadAll(t, addr, "processed", 150)
	stop()
	users := map[string]int{}
	for _, r := range got {
		users[string(r.Key)]++
	}
	if len(users) != 150 {
		t.Errorf("%d distinct users processed, want 150", len(users))
	}
	for u, n := range users {
		if n != 1 {
			t.Errorf("user %s processed %d times", u, n)
		}
	}
}

// TestTransformerDeadLettersTheCorpus sends every kind of malformed record in the corpus through
// the stage, between valid ones: each lands in the dead-letter topic once with its reason, the
// valid ones are processed, and the stage keeps running.
func TestTransformerDeadLettersTheCorpus(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "processed", "dlq")
	cases := corpus.Malformed()
	var recs []*kgo.Record
	for i, c := range cases {
		recs = append(recs,
			&kgo.Record{Topic: "raw", Key: []byte(strconv.Itoa(i)), Value: []byte(c.Raw)},
			&kgo.Record{Topic: "raw", Value: []byte(corpus.Valid()[i%len(corpus.Valid())])})
	}
	big, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if err := big.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce the corpus: %v", err)
	}

	tr := New(Config{RawTopic: "raw", ProcessedTopic: "processed", DeadLetterTopic: "dlq", Group: "g",
		BatchMaxRecords: 16}, []kgo.Opt{kgo.SeedBrokers(addr)}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	dead := kafkatest.ReadAll(t, addr, "dlq", len(cases))
	processed := kafkatest.ReadAll(t, addr, "processed", len(cases))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(dead) != len(cases) || len(processed) != len(cases) {
		t.Errorf("%d dead letters and %d processed, want %d each", len(dead), len(processed), len(cases))
	}
	for _, r := range dead {
		i, err := strconv.Atoi(string(r.Key))
		if err != nil || i >= len(cases) {
			t.Fatalf("dead letter with unexpected key %q", r.Key)
		}
		c := cases[i]
		if got := kafkatest.Header(r, HeaderReason); got != c.Reason {
			t.Errorf("%s: reason header %q, want %q", c.Name, got, c.Reason)
		}
		if len(c.Raw) > deadletter.MaxValueBytes {
			if kafkatest.Header(r, HeaderTruncated) != strconv.Itoa(len(c.Raw)) || len(r.Value) != deadletter.MaxValueBytes {
				t.Errorf("%s: oversized value kept %d bytes, header %q", c.Name, len(r.Value), kafkatest.Header(r, HeaderTruncated))
			}
		} else if string(r.Value) != c.Raw {
			t.Errorf("%s: dead letter value %q, want the original bytes", c.Name, r.Value)
		}
	}
}
