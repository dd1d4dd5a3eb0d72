package transformer

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/corpus"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/stages/deadletter"
)

func TestTransformerRoutesValidAndInvalid(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "raw", "processed", "hotels", "dlq")
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

	tr := New(Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dlq", Group: "g-transformer",
		BatchMaxRecords: 64}, []kgo.Opt{kgo.SeedBrokers(addr)}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()

	// Once the stage has committed the whole raw topic, both outputs are read to their ends: a
	// late copy would show.
	kafkatest.WaitCommitted(t, addr, "g-transformer", "raw")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	processed := kafkatest.ReadCommittedToEnd(t, addr, "processed")
	nBad := 4 * len(invalid)
	dead := kafkatest.ReadCommittedToEnd(t, addr, "dlq")
	if len(processed) != nValid || len(dead) != nBad {
		t.Errorf("%d processed and %d dead letters, want %d and %d", len(processed), len(dead), nValid, nBad)
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
		p, err := eventref.Transform([]byte(valid(i)))
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
	checkHotelTopic(t, addr, processed)
	for _, r := range dead {
		want, ok := invalid[string(r.Value)]
		if !ok {
			t.Errorf("unexpected dead letter %q", r.Value)
			continue
		}
		if got := kafkatest.Header(r, event.HeaderReason); got != string(want) {
			t.Errorf("reason header %q, want %q", got, want)
		}
		if kafkatest.Header(r, event.HeaderError) == "" || kafkatest.Header(r, event.HeaderSourceTopic) != "raw" || kafkatest.Header(r, event.HeaderStage) != "transformer" ||
			kafkatest.Header(r, event.HeaderSourcePartition) == "" || kafkatest.Header(r, event.HeaderSourceOffset) == "" || kafkatest.Header(r, "origin") != "test" {
			t.Errorf("dead letter headers %+v", r.Headers)
		}
	}
	if c := tr.Counters().Map(); c["produced"] != nValid || c["dead_lettered"] != int64(nBad) {
		t.Errorf("counts %v", c)
	}
}

// produceUsers writes raw records for users u<from> to u<to-1>, one each, keyed by user so that
// they spread over the partitions.
func produceUsers(t *testing.T, addr string, from, to int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		user := fmt.Sprintf("u%d", i)
		recs = append(recs, &kgo.Record{Topic: "raw", Key: []byte(user), Value: []byte(fmt.Sprintf(
			`{"user_id":"%s","hotel_id":"h","search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`, user))})
	}
	kafkatest.Produce(t, addr, recs...)
}

// expectEachUserOnce reads the processed topic to its end and wants users u0 to u<n-1> in it
// exactly once each, and nothing dead-lettered.
func expectEachUserOnce(t *testing.T, addr string, n int) {
	t.Helper()
	got := kafkatest.ReadCommittedToEnd(t, addr, "processed")
	users := countUsers(got)
	for i := 0; i < n; i++ {
		if u := fmt.Sprintf("u%d", i); users[u] != 1 {
			t.Errorf("user %s processed %d times, want once", u, users[u])
		}
	}
	if len(got) != n || len(users) != n {
		t.Errorf("the processed topic holds %d records of %d users, want %d of %d", len(got), len(users), n, n)
	}
	if dead := kafkatest.ReadCommittedToEnd(t, addr, "dlq"); len(dead) != 0 {
		t.Errorf("%d dead letters of valid records", len(dead))
	}
}

// waitCount waits until the stage's count key reaches n.
func waitCount(t *testing.T, tr *Transformer, key string, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for tr.Counters().Map()[key] < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed at %d within 30s, want %d", key, tr.Counters().Map()[key], n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTransformerRestartDoesNotDuplicate stops the stage once it has committed everything, adds
// records and starts it again: the processed topic, read to its end, holds each record once.
func TestTransformerRestartDoesNotDuplicate(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels", "dlq")
	run := func() (stop func()) {
		_, stop = runStoppable(t, Config{BatchMaxRecords: 10}, kgo.SeedBrokers(addr))
		return stop
	}
	produceUsers(t, addr, 0, 100)
	stop := run()
	kafkatest.WaitCommitted(t, addr, "g", "raw")
	stop()
	produceUsers(t, addr, 100, 150)
	stop = run()
	kafkatest.WaitCommitted(t, addr, "g", "raw")
	stop()
	expectEachUserOnce(t, addr, 150)
}

// TestTwoTransformersWithRebalance runs two instances in one consumer group with a rebalance in
// the middle of the stream twice: the second joins while the first has records in hand, then the
// first leaves while both have. Every raw record must be processed exactly once.
func TestTwoTransformersWithRebalance(t *testing.T) {
	const step = 1000
	_, addr := kafkatest.Start(t, 4, "raw", "processed", "hotels", "dlq")
	cfg := Config{BatchMaxRecords: 20} // small transactions: many of them are open across a rebalance
	produceUsers(t, addr, 0, step)
	a, stopA := runStoppable(t, cfg, kgo.SeedBrokers(addr))
	waitCount(t, a, "produced", 100)
	produceUsers(t, addr, step, 2*step)
	b, stopB := runStoppable(t, cfg, kgo.SeedBrokers(addr))
	if n := a.Counters().Map()["consumed"]; n >= 2*step {
		t.Logf("the first instance had read all %d records before the second joined", n)
	}
	waitCount(t, b, "produced", 1) // the group rebalanced: the second owns partitions
	produceUsers(t, addr, 2*step, 3*step)
	stopA() // its partitions move to the second instance
	produceUsers(t, addr, 3*step, 4*step)
	kafkatest.WaitCommitted(t, addr, "g", "raw")
	stopB()
	t.Logf("first instance: %v; second: %v", a.Counters().Map(), b.Counters().Map())
	expectEachUserOnce(t, addr, 4*step)
}

// TestTransformerDeadLettersTheCorpus sends every kind of malformed record in the corpus through
// the stage, between valid ones: each lands in the dead-letter topic once with its reason, the
// valid ones are processed, and the stage keeps running.
func TestTransformerDeadLettersTheCorpus(t *testing.T) {
	_, addr := kafkatest.Start(t, 2, "raw", "processed", "hotels", "dlq")
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

	tr := New(Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dlq", Group: "g",
		BatchMaxRecords: 16}, []kgo.Opt{kgo.SeedBrokers(addr)}, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	kafkatest.WaitCommitted(t, addr, "g", "raw")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	dead := kafkatest.ReadCommittedToEnd(t, addr, "dlq")
	processed := kafkatest.ReadCommittedToEnd(t, addr, "processed")
	if len(dead) != len(cases) || len(processed) != len(cases) {
		t.Errorf("%d dead letters and %d processed, want %d each", len(dead), len(processed), len(cases))
	}
	for _, r := range dead {
		i, err := strconv.Atoi(string(r.Key))
		if err != nil || i >= len(cases) {
			t.Fatalf("dead letter with unexpected key %q", r.Key)
		}
		c := cases[i]
		if got := kafkatest.Header(r, event.HeaderReason); got != c.Reason {
			t.Errorf("%s: reason header %q, want %q", c.Name, got, c.Reason)
		}
		if len(c.Raw) > deadletter.MaxValueBytes {
			if kafkatest.Header(r, deadletter.HeaderValueTruncated) != strconv.Itoa(len(c.Raw)) || len(r.Value) != deadletter.MaxValueBytes {
				t.Errorf("%s: oversized value kept %d bytes, header %q", c.Name, len(r.Value), kafkatest.Header(r, deadletter.HeaderValueTruncated))
			}
		} else if string(r.Value) != c.Raw {
			t.Errorf("%s: dead letter value %q, want the original bytes", c.Name, r.Value)
		}
	}
}

// checkHotelTopic: every processed event has its compact hotel record in the hotel topic, keyed
// by its hotel, under the same raw position, holding its hotel and its advertisers' minimums.
func checkHotelTopic(t *testing.T, addr string, processed []*kgo.Record) {
	t.Helper()
	want := map[string]event.Processed{}
	for _, r := range processed {
		var p event.Processed
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		want[kafkatest.Header(r, event.HeaderSourcePartition)+"/"+kafkatest.Header(r, event.HeaderSourceOffset)] = p
	}
	hotels := kafkatest.ReadCommittedToEnd(t, addr, "hotels")
	if len(hotels) != len(processed) {
		t.Errorf("%d hotel records for %d processed events", len(hotels), len(processed))
	}
	for _, r := range hotels {
		pos := kafkatest.Header(r, event.HeaderSourcePartition) + "/" + kafkatest.Header(r, event.HeaderSourceOffset)
		p, ok := want[pos]
		var h struct {
			HotelID string           `json:"hotel_id"`
			Prices  map[string]int64 `json:"advertiser_min_prices"`
		}
		err := json.Unmarshal(r.Value, &h)
		if !ok || err != nil || string(r.Key) != p.HotelID || h.HotelID != p.HotelID || !reflect.DeepEqual(h.Prices, p.AdvertiserMinPrices) {
			t.Errorf("hotel record %s (key %q, raw position %s, err %v), want hotel %q with %v", r.Value, r.Key, pos, err, p.HotelID, p.AdvertiserMinPrices)
		}
		delete(want, pos)
	}
}
