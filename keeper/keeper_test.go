package keeper

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/view"
)

func TestTrimPoint(t *testing.T) {
	for _, tt := range []struct {
		name   string
		log    partitionLog
		budget int64
		want   int64
	}{
		{"all expired and read: all but the last record", partitionLog{start: 0, end: 100, aged: 100, size: 10, needed: 100}, 1000, 99},
		{"expired, read up to 40", partitionLog{start: 0, end: 100, aged: 100, size: 10, needed: 40}, 1000, 40},
		{"nothing expired, within budget", partitionLog{start: 0, end: 100, aged: 0, size: 1000, needed: 100}, 1000, 0},
		{"over budget: keep what fits", partitionLog{start: 0, end: 100, aged: 0, size: 1000, needed: 100}, 250, 75},
		{"over budget, but needed", partitionLog{start: 0, end: 100, aged: 0, size: 1000, needed: 10}, 250, 10},
		{"expired past the budget's point", partitionLog{start: 20, end: 100, aged: 90, size: 800, needed: 100}, 400, 90},
		{"empty partition", partitionLog{start: 0, end: 0, aged: 0, size: 0, needed: 0}, 1, -1},
	} {
		if got := tt.log.trimPoint(tt.budget); got != tt.want {
			t.Errorf("%s: trim point %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestTrimKeepsWhatIsNeeded: with everything expired, the raw topic is trimmed only below the
// transformer group's committed offset, the processed topics only below the snapshot's offsets
// (not at all before a snapshot), the dead letters to their last record.
func TestTrimKeepsWhatIsNeeded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "raw", "processed", "hotels", "dead"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	old := time.Now().Add(-time.Hour)
	for _, topic := range []string{"raw", "processed", "hotels", "dead"} {
		for i := range 50 {
			r := &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i)), Timestamp: old}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	adm := kadm.NewClient(cl)
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "raw", Partition: 0, At: 30})
	if _, err := adm.CommitOffsets(ctx, "g-transformer", commit); err != nil {
		t.Fatal(err)
	}
	k := New(Config{RawTopic: "raw", ProcessedTopic: "processed", HotelTopic: "hotels", DeadLetterTopic: "dead",
		TransformerGroup: "g-transformer", Retention: time.Minute, TopicBudget: 1 << 30, Interval: time.Second, Trim: true},
		adm, nil, zap.NewNop())
	starts := func() map[string]int64 {
		t.Helper()
		l, err := adm.ListStartOffsets(ctx, "raw", "processed", "hotels", "dead")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		l.Each(func(o kadm.ListedOffset) { out[o.Topic] = o.Offset })
		return out
	}

	if _, err := k.Trim(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := starts(), map[string]int64{"raw": 30, "processed": 0, "hotels": 0, "dead": 49}; !equal(got, want) {
		t.Errorf("before a snapshot: first offsets %v, want %v", got, want)
	}

	k.snapshot = &view.Snapshot{Shards: []view.ShardState{{Role: view.UserShards, Partition: 0, Next: 20}, {Role: view.HotelShards, Partition: 0, Next: view.NoOffset}}}
	if _, err := k.Trim(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := starts(), map[string]int64{"raw": 30, "processed": 20, "hotels": 0, "dead": 49}; !equal(got, want) {
		t.Errorf("after a snapshot: first offsets %v, want %v", got, want)
	}
}

func equal(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
