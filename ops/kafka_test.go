package ops

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/internal/kafkatest"
)

// TestReadToStopsAtATransactionMarker: a topic written in transactions ends with a commit or an
// abort marker, which no consumer returns as a record. readTo still knows it has read to the
// end, and returns the committed records only.
func TestReadToStopsAtATransactionMarker(t *testing.T) {
	_, addr := kafkatest.Start(t, 1, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID("ops-test"), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, tx := range []struct {
		values []string
		commit kgo.TransactionEndTry
	}{{[]string{"a", "b"}, kgo.TryCommit}, {[]string{"c"}, kgo.TryAbort}, {[]string{"d"}, kgo.TryCommit}, {[]string{"e", "f"}, kgo.TryAbort}} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range tx.values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, tx.commit); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "t")
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets: %v %v", err, ends.Error())
	}
	end, _ := ends.Lookup("t", 0)
	var got []string
	err = readTo(ctx, []kgo.Opt{kgo.SeedBrokers(addr)}, nil, map[string]map[int32]int64{"t": {0: end.Offset}}, func(r *kgo.Record) {
		got = append(got, string(r.Value))
	})
	if err != nil || len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "d" {
		t.Errorf("read %v up to offset %d (%v), want the committed a, b and d", got, end.Offset, err)
	}
}
