package transformer

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestProcessedTopicNeedsReadCommitted documents why a consumer of the processed topic must read
// committed (README: Migrating from the original). The transformer writes it in transactions, as
// here: one aborted, one committed. A read_uncommitted consumer sees the aborted records as if
// they were events; a read_committed one sees only the committed ones. Every transaction also
// ends in a control record (its commit or abort marker) in each partition it wrote: a client that
// does not know control records reads them as messages — Debian's kafka-python 2.0.2 fails on one
// with "'utf-32-be' codec can't decode".
func TestProcessedTopicNeedsReadCommitted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "processed_events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("readers-test"),
		kgo.DefaultProduceTopic("processed_events"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	txn := func(commit kgo.TransactionEndTry, values ...string) {
		t.Helper()
		if err := producer.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := producer.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := producer.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	txn(kgo.TryAbort, "aborted-1", "aborted-2", "aborted-3")
	txn(kgo.TryCommit, "committed-1", "committed-2")

	read := func(opts ...kgo.Opt) (values []string, control int) {
		t.Helper()
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("processed_events"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		// Five data records and two markers: offsets 0..6.
		for seen := 0; seen < 7; {
			fetches := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %v and %d control records before the deadline", values, control)
			}
			fetches.EachRecord(func(r *kgo.Record) {
				seen = int(r.Offset) + 1
				if r.Attrs.IsControl() {
					control++
					return
				}
				values = append(values, string(r.Value))
			})
		}
		return values, control
	}
	uncommitted, markers := read(kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords())
	if len(uncommitted) != 5 || markers != 2 {
		t.Errorf("read_uncommitted: %v and %d control records, want all 5 records (the 3 aborted too) and 2 markers", uncommitted, markers)
	}
	committed, _ := read(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if len(committed) != 2 || committed[0] != "committed-1" || committed[1] != "committed-2" {
		t.Errorf("read_committed: %v, want only the 2 committed records", committed)
	}
}
