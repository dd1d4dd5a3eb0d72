package transformer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/internal/kafkatest"
)

// TestStableIDAbortsThePredecessorsTransaction: a process crashed with a transaction open in the
// processed topic. On real Kafka nobody aborts it until the transaction timeout, and
// read_committed readers wait behind it. A successor with the same stable transactional ID fences
// the old producer and the broker aborts its transaction at once: the successor's records are
// readable long before the old transaction's 60 s timeout, and the dangling records never are.
func TestStableIDAbortsThePredecessorsTransaction(t *testing.T) {
	_, addr := kafkatest.Start(t, 1, "raw", "processed", "hotels", "dlq")
	const txnID = "g-transformer-host-0"
	crashed, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID(txnID), kgo.TransactionTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer crashed.Close()
	ctx := context.Background()
	if err := crashed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := crashed.ProduceSync(ctx, &kgo.Record{Topic: "processed", Value: []byte(fmt.Sprintf("dangling-%d", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The predecessor never ends its transaction: it "crashed". The successor starts.
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: "raw", Value: validRaw(fmt.Sprintf("u%d", i), i)})
	}
	kafkatest.Produce(t, addr, recs...)
	start := time.Now()
	runStage(t, Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dlq",
		Group: "g-transformer", TransactionalID: txnID, TransactionTimeout: 60 * time.Second}, kgo.SeedBrokers(addr))
	kafkatest.WaitCommitted(t, addr, "g-transformer", "raw")
	processed := kafkatest.ReadCommittedToEnd(t, addr, "processed")
	took := time.Since(start)
	if len(processed) != 20 {
		t.Errorf("%d processed records readable, want the successor's 20", len(processed))
	}
	for _, r := range processed {
		if strings.HasPrefix(string(r.Value), "dangling") {
			t.Errorf("a record of the aborted transaction is readable: %s", r.Value)
		}
	}
	if took > 30*time.Second {
		t.Errorf("read_committed readers waited %s: the open transaction was not aborted by the successor", took)
	}
	t.Logf("the successor's records were readable %s after it started (the predecessor's timeout: 60 s)", took.Round(time.Millisecond))
}

// TestSameInstanceIDTwiceStops: two live processes given the same INSTANCE_ID (so the same
// transactional ID) would fence each other forever. The transformer notices being fenced twice in
// a row and stops with an error that names INSTANCE_ID.
func TestSameInstanceIDTwiceStops(t *testing.T) {
	_, addr := kafkatest.Start(t, 4, "raw", "processed", "hotels", "dlq")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // input keeps coming: each process keeps opening transactions
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			return
		}
		defer cl.Close()
		for i := 0; ctx.Err() == nil; i++ {
			_ = cl.ProduceSync(ctx, &kgo.Record{Topic: "raw", Value: validRaw(fmt.Sprintf("u%d", i), i)}).FirstErr()
		}
	}()
	cfg := Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dlq",
		Group: "g-transformer", BatchMaxRecords: 10, TransactionalID: "g-transformer-same"}
	errs := make(chan error, 2)
	for i := range 2 {
		tr := New(cfg, []kgo.Opt{kgo.SeedBrokers(addr)}, zaptest.NewLogger(t).Named(fmt.Sprint("process-", i)))
		go func() { errs <- tr.Run(ctx) }()
	}
	select {
	case err := <-errs:
		if err == nil || !strings.Contains(err.Error(), "INSTANCE_ID") {
			t.Fatalf("Run returned %v, want an error naming INSTANCE_ID", err)
		}
		t.Logf("stopped: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("two processes with one transactional ID ran on for 90 s")
	}
	cancel()
	<-errs
}
