package ops

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

// truth folds events as the view must count them (no copies, nothing dead-lettered).
type truth struct {
	users     map[string]int64
	minPrices map[string]map[string]int64
}

func fold(evs []event.Processed) truth {
	tr := truth{users: map[string]int64{}, minPrices: map[string]map[string]int64{}}
	for _, e := range evs {
		tr.users[e.UserID]++
		if tr.minPrices[e.HotelID] == nil {
			tr.minPrices[e.HotelID] = map[string]int64{}
		}
		for adv, p := range e.AdvertiserMinPrices {
			if low, ok := tr.minPrices[e.HotelID][adv]; !ok || p < low {
				tr.minPrices[e.HotelID][adv] = p
			}
		}
	}
	return tr
}

// TestVerifyFindsDifferencesAndRebuildRepairsThem runs the two aggregators over events with
// copies (raw positions processed twice, with other contents) and records nobody can read, which
// the aggregators dead-letter. verify finds the view equal, having dropped the copies and passed
// over the dead letters; then two keys are changed behind the aggregators' backs and verify
// names both; `rebuild --slot` of each damaged shard, with the aggregators running, makes the
// view equal again once they have caught up.
func TestVerifyFindsDifferencesAndRebuildRepairsThem(t *testing.T) {
	e := newPipelineEnv(t)
	recs := records(t, searches(0, 300), 0, 0)
	recs = append(recs, records(t, searches(500, 550), 0, 100)...) // copies of raw 0/100..149
	recs = append(recs, rawRecords([]byte("not json"), "x", "y", 1, 0)...)
	recs = append(recs, rawRecords([]byte(`{"user_id":"u1"}`), "x", "y", 1, 1)...)
	recs = append(recs, records(t, searches(300, 400), 1, 2)...)
	kafkatest.Produce(t, e.addr, recs...)
	e.startAggregators(t)
	e.waitApplied(t)

	equal, out := verify(t, e.cfg, 20)
	if !equal || !strings.Contains(out, "6 shards checked, 904 records read (100 copies dropped, 4 dead-lettered)") ||
		!strings.Contains(out, "0 differences") {
		t.Fatalf("verify of the applied view: equal %v\n%s", equal, out)
	}
	tr := fold(searches(0, 400))
	if got := e.countAll(t, view.Users); got != 400 {
		t.Fatalf("the user shards count %d events, want 400: verify compared the wrong thing", got)
	}

	ctx := context.Background()
	users, hotels := e.shardHolding(t, view.Users, "u3"), e.shardHolding(t, view.Hotels, "h2")
	for _, cmd := range []rueidis.Completed{
		e.client.B().Zincrby().Key(users.Key("users")).Increment(-1).Member("u3").Build(),
		e.client.B().Zadd().Key(hotels.Key("minprice:h2")).ScoreMember().ScoreMember(1, "a").Build(),
	} {
		if err := e.client.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	equal, out = verify(t, e.cfg, 20)
	for _, want := range []string{
		fmt.Sprintf(`difference: %v at offset `, users),
		fmt.Sprintf(`: user "u3": view %d, kafka %d`, tr.users["u3"]+1, tr.users["u3"]),
		fmt.Sprintf(`difference: %v at offset `, hotels),
		fmt.Sprintf(`: min price of hotel "h2" for advertiser "a": view 1, kafka %d`, tr.minPrices["h2"]["a"]),
		"2 differences (2 shown)",
	} {
		if equal || !strings.Contains(out, want) {
			t.Errorf("verify of the damaged view: equal %v, output lacks %q:\n%s", equal, want, out)
		}
	}
	if _, out = verify(t, e.cfg, 1); strings.Count(out, "difference:") != 1 || !strings.Contains(out, "2 differences (1 shown)") {
		t.Errorf("verify -max-diffs 1:\n%s", out)
	}

	for _, sh := range []view.Shard{users, hotels} {
		var rebuilt bytes.Buffer
		if err := Rebuild(ctx, e.cfg, &rebuilt, false, int(sh.Slot)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rebuilt.String(), fmt.Sprintf("reset shard %v: ", sh)) || strings.Count(rebuilt.String(), "reset shard") != 1 {
			t.Errorf("rebuild --slot %d said:\n%s", sh.Slot, rebuilt.String())
		}
	}
	e.waitApplied(t)
	if equal, out = verify(t, e.cfg, 20); !equal || !strings.Contains(out, "904 records read") {
		t.Errorf("verify after the rebuild of the damaged shards: equal %v\n%s", equal, out)
	}

	// rebuild --all under the running aggregators: they rebuild every shard and store the layout
	// again (their idle check), so that readers of other processes find the view.
	if err := Rebuild(ctx, e.cfg, io.Discard, true, -1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, l, err := view.New(e.client).Shards(ctx); err == nil && l.Users > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the layout was not stored again within 30 s of rebuild --all")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.waitApplied(t)
	if equal, out = verify(t, e.cfg, 20); !equal || !strings.Contains(out, "904 records read") {
		t.Errorf("verify after rebuild --all: equal %v\n%s", equal, out)
	}
}

// TestVerifyOnRedisCluster: on a real 3-master cluster, verify reads every shard on its master,
// finds a changed count and, once `rebuild --slot` has had the shard rebuilt, the view equal.
func TestVerifyOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	e := newPipelineEnvOn(t, cl.Client(t), strings.Join(cl.Addrs(), ","))
	kafkatest.Produce(t, e.addr, records(t, searches(0, 300), 0, 0)...)
	e.startAggregators(t)
	e.waitApplied(t)
	if equal, out := verify(t, e.cfg, 20); !equal || !strings.Contains(out, "600 records read") {
		t.Fatalf("verify of the applied view: equal %v\n%s", equal, out)
	}
	ctx := context.Background()
	hotels := e.shardHolding(t, view.Hotels, "h5")
	if err := e.client.Do(ctx, e.client.B().Zincrby().Key(hotels.Key("hotels")).Increment(3).Member("h5").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for _, ev := range searches(0, 300) {
		if ev.HotelID == "h5" {
			n++
		}
	}
	want := fmt.Sprintf(`: hotel "h5": view %d, kafka %d`, n-3, n)
	if equal, out := verify(t, e.cfg, 20); equal || !strings.Contains(out, want) {
		t.Errorf("verify of the changed view: equal %v, want %q:\n%s", equal, want, out)
	}
	if err := Rebuild(ctx, e.cfg, &bytes.Buffer{}, false, int(hotels.Slot)); err != nil {
		t.Fatal(err)
	}
	e.waitApplied(t)
	if equal, out := verify(t, e.cfg, 20); !equal {
		t.Errorf("verify after the rebuild: not equal\n%s", out)
	}
}

// countAll sums kind's counts over every shard.
func (e *pipelineEnv) countAll(t *testing.T, kind view.Kind) int64 {
	t.Helper()
	shards, _, err := e.view.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sh := range shards {
		d, err := e.view.ReadShard(context.Background(), sh)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Counts[kind] {
			n += c
		}
	}
	return n
}

// TestVerifyWhileRecordsArrive: verify compares each shard at the offset of its snapshot, so it
// finds a view equal while the aggregators keep applying new records under it.
func TestVerifyWhileRecordsArrive(t *testing.T) {
	e := newPipelineEnv(t)
	kafkatest.Produce(t, e.addr, records(t, searches(0, 200), 0, 0)...)
	e.startAggregators(t)
	e.waitApplied(t)

	ctx, cancel := context.WithCancel(context.Background())
	var produced atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- produceUntil(ctx, e.addr, 200, &produced) }()
	for i := range 3 {
		before := produced.Load()
		equal, out := verify(t, e.cfg, 20)
		if !equal {
			t.Errorf("verify %d while records arrive: not equal\n%s", i, out)
		}
		if produced.Load() == before {
			t.Errorf("verify %d: no record arrived while it ran, so it proves nothing", i)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	e.waitApplied(t)
	if equal, out := verify(t, e.cfg, 20); !equal {
		t.Errorf("verify once everything is applied: not equal\n%s", out)
	}
	t.Logf("%d events produced while verifying", produced.Load())
}

// produceUntil produces 10 events every 5 ms, from event from on, until ctx ends, counting them.
func produceUntil(ctx context.Context, addr string, from int, produced *atomic.Int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := from; ; i += 10 {
		recs, err := encode(searches(i, i+10), 0, int64(i))
		if err != nil {
			return err
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		produced.Add(10)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// TestVerifyReportsShardsItCannotCompare: a shard ahead of its partition, one marked as being
// rebuilt and one with a key of the wrong type are each a difference that says so.
func TestVerifyReportsShardsItCannotCompare(t *testing.T) {
	e := newPipelineEnv(t)
	ctx := context.Background()
	b := view.NewBatch()
	b.Count(0, view.Users, "u")
	b.Offsets[0] = view.PartitionOffsets{Expect: view.NoOffset, Next: 5}
	if err := e.view.Apply(ctx, view.UserShards, b); err != nil {
		t.Fatal(err)
	}
	shards, _, err := e.view.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users1, hotels0 := shards[1], shards[partitions]
	for _, cmd := range []rueidis.Completed{
		e.client.B().Set().Key(users1.Key("users")).Value("x").Build(),
		e.client.B().Hset().Key(hotels0.Key("state")).FieldValue().FieldValue("rebuilding", "1").Build(),
	} {
		if err := e.client.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	equal, out := verify(t, e.cfg, 20)
	for _, want := range []string{
		fmt.Sprintf("%v at offset 5: the shard holds offset 5 of %s partition 0, which ends at 0", shards[0], usersTopic),
		fmt.Sprintf("%v at offset 0: the shard is damaged: key %s holds a string", users1, users1.Key("users")),
		fmt.Sprintf("%v at offset 0: the shard is marked as being rebuilt", hotels0),
		"3 differences",
	} {
		if equal || !strings.Contains(out, want) {
			t.Errorf("verify: equal %v, output lacks %q:\n%s", equal, want, out)
		}
	}
}
