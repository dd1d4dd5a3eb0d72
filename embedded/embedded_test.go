package embedded

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// TestTrimmedPartitionKeepsItsEnd is the embedded broker behaviour package keeper relies on: a
// partition trimmed to all but its last record keeps its end offset across a restart from
// DATA_DIR, so offsets are never handed out twice. (Trimmed to its very end, kfake drops every
// segment file of the partition and may restart it at offset 0 — readers' committed offsets and
// the view's source marks would then skip the new records: the keeper never trims the last one.)
func TestTrimmedPartitionKeepsItsEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	k, err := StartKafka("127.0.0.1:0", dir, 1<<20, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.DefaultProduceTopic("t"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	trim := kadm.Offsets{}
	trim.Add(kadm.Offset{Topic: "t", Partition: 0, At: 99})
	if resp, err := adm.DeleteRecords(ctx, trim); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v, %v", err, resp.Error())
	}
	cl.Close()
	k.Close()

	k, err = StartKafka("127.0.0.1:0", dir, 1<<20, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cl, err = kgo.NewClient(kgo.SeedBrokers(k.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm = kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	starts, err := adm.ListStartOffsets(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("t", 0)
	start, _ := starts.Lookup("t", 0)
	if end.Offset != 100 {
		t.Errorf("after a restart the partition ends at %d, want 100", end.Offset)
	}
	if start.Offset < 1 || start.Offset > 99 {
		t.Errorf("after a restart the partition starts at %d, want 1..99 (trimmed)", start.Offset)
	}
}
