package aggregator

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

// truth is the expected view, folded independently of view.Batch.
type truth struct {
	users, hotels, advs map[string]int64
	min                 map[string]map[string]int64
}

func newTruth() *truth {
	return &truth{users: map[string]int64{}, hotels: map[string]int64{}, advs: map[string]int64{}, min: map[string]map[string]int64{}}
}

func (tr *truth) add(p event.Processed) {
	tr.users[p.UserID]++
	tr.hotels[p.HotelID]++
	if tr.min[p.HotelID] == nil {
		tr.min[p.HotelID] = map[string]int64{}
	}
	for a, price := range p.AdvertiserMinPrices {
		tr.advs[a]++
		if cur, ok := tr.min[p.HotelID][a]; !ok || price < cur {
			tr.min[p.HotelID][a] = price
		}
	}
}

// events returns processed events from..to, deterministic in i.
func events(from, to int) []event.Processed {
	var out []event.Processed
	for i := from; i < to; i++ {
		out = append(out, event.Processed{
			UserID: fmt.Sprintf("u%d", i%37), HotelID: fmt.Sprintf("h%d", i%11), SearchTimestamp: "1",
			AdvertiserMinPrices: map[string]int64{"a": int64(1000 - i%500), fmt.Sprintf("adv%d", i%4): int64(50 + i%13)},
		})
	}
	return out
}

func produce(t *testing.T, addr string, tr *truth, evs []event.Processed) {
	recs := make([]*kgo.Record, len(evs))
	for i, p := range evs {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: "processed", Key: []byte(p.UserID), Value: b}
		tr.add(p)
	}
	kafkatest.Produce(t, addr, recs...)
}

type viewState struct {
	users, hotels, advs map[string]int64
	min                 map[string]map[string]int64
}

func read(t *testing.T, v *view.View) (viewState, error) {
	ctx := context.Background()
	s := viewState{min: map[string]map[string]int64{}}
	for kind, dst := range map[view.Kind]*map[string]int64{view.Users: &s.users, view.Hotels: &s.hotels, view.Advertisers: &s.advs} {
		_, entries, err := v.Counts(ctx, kind, 0, 100000)
		if err != nil {
			return s, err
		}
		*dst = map[string]int64{}
		for _, e := range entries {
			(*dst)[e.ID] = e.Count
		}
	}
	_, hotels, err := v.MinPrices(ctx, 0, 100000)
	if err != nil {
		return s, err
	}
	for _, h := range hotels {
		s.min[h.HotelID] = h.Prices
	}
	return s, nil
}

func (tr *truth) equal(s viewState) bool {
	return reflect.DeepEqual(s.users, tr.users) && reflect.DeepEqual(s.hotels, tr.hotels) &&
		reflect.DeepEqual(s.advs, tr.advs) && reflect.DeepEqual(s.min, tr.min)
}

// The topic and group every aggregator of these tests uses.
const (
	testTopic = "processed"
	testGroup = "g-aggregator"
)

// waitExact polls the view until it equals the truth. A first match does not prove exactness: an
// over-count could land a moment later. So it then waits until nothing is left to read and the
// stages aggs are idle, and compares again; both must be equal. It fails after a deadline.
func waitExact(t *testing.T, addr string, v *view.View, tr *truth, aggs ...*Aggregator) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var s viewState
	for {
		var err error
		if s, err = read(t, v); err == nil && tr.equal(s) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("view never equalled the truth:\n users %v\n want %v\n hotels %v\n want %v\n advs %v\n want %v",
				s.users, tr.users, s.hotels, tr.hotels, s.advs, tr.advs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitSettled(t, addr, deadline, aggs...)
	s, err := read(t, v)
	if err != nil {
		t.Fatalf("read the view once idle: %v", err)
	}
	if !tr.equal(s) {
		t.Fatalf("the view equalled the truth, then changed once idle:\n users %v\n want %v\n hotels %v\n want %v\n advs %v\n want %v\n min %v\n want %v",
			s.users, tr.users, s.hotels, tr.hotels, s.advs, tr.advs, s.min, tr.min)
	}
}

// idlePoll is how far apart two samples of the stages' counts must agree for them to be idle.
const idlePoll = 300 * time.Millisecond

// waitSettled waits until nothing is left to read — the group's committed offsets are the
// topic's end offsets (the test topics are written without transactions, so no commit marker
// trails them) — and the stages aggs are idle: their counts unchanged across two polls idlePoll
// apart, both taken with nothing left to read.
func waitSettled(t *testing.T, addr string, deadline time.Time, aggs ...*Aggregator) {
	t.Helper()
	if len(aggs) == 0 {
		t.Fatal("waitSettled: no aggregator to watch")
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	var prev []map[string]int64
	why := ""
	for {
		counts := make([]map[string]int64, len(aggs))
		for i, a := range aggs {
			counts[i] = a.Counters().Map()
		}
		left, err := leftToRead(ctx, adm)
		switch {
		case err != nil:
			why, counts = err.Error(), nil
		case left != "":
			why, counts = left, nil
		case prev != nil && reflect.DeepEqual(prev, counts):
			return
		default:
			why = fmt.Sprintf("counts still moving: %v", counts)
		}
		prev = counts
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the stages never settled: %s", why)
		}
	}
}

// leftToRead names a partition of the test topic whose committed offset in the test group is
// short of its end offset, "" when there is none.
func leftToRead(ctx context.Context, adm *kadm.Client) (string, error) {
	ends, err := adm.ListEndOffsets(ctx, testTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return "", fmt.Errorf("end offsets: %w", err)
	}
	committed, err := adm.FetchOffsets(ctx, testGroup)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return "", fmt.Errorf("committed offsets: %w", err)
	}
	left := ""
	ends.Each(func(end kadm.ListedOffset) {
		c, ok := committed.Lookup(testTopic, end.Partition)
		if end.Offset > 0 && (!ok || c.At != end.Offset) && left == "" {
			left = fmt.Sprintf("partition %d: committed %d of %d", end.Partition, c.At, end.Offset)
		}
	})
	return left, nil
}

type running struct {
	agg    *Aggregator
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, addr string, v *view.View) *running {
	a := New(Config{Topic: "processed", Group: "g-aggregator", DeadLetterTopic: "dlq", BatchMaxRecords: 50},
		[]kgo.Opt{kgo.SeedBrokers(addr)}, v, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agg: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("aggregator Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("aggregator did not drain within 30s")
	}
}

func TestAggregateAndRestart(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "processed")
	v := view.New(redistest.Start(t).Client(t))
	tr := newTruth()
	produce(t, addr, tr, events(0, 500))
	r := start(t, addr, v)
	waitExact(t, addr, v, tr, r.agg)
	r.stop(t)

	// A new instance resumes from the offsets stored in Redis: nothing is counted twice.
	produce(t, addr, tr, events(500, 800))
	r = start(t, addr, v)
	waitExact(t, addr, v, tr, r.agg)
	if c := r.agg.Counters().Map(); c["applied"] != 300 || c["consumed"] != 300 {
		t.Errorf("the second instance applied %d and consumed %d, want the 300 new events", c["applied"], c["consumed"])
	}
}

func TestRebuildsAfterRedisLosesEverything(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "processed")
	srv := redistest.Start(t)
	v := view.New(srv.Client(t))
	tr := newTruth()
	produce(t, addr, tr, events(0, 300))
	r := start(t, addr, v)
	waitExact(t, addr, v, tr, r.agg)

	srv.Restart(t) // an empty Redis on the same port, as after a crash without persistence
	// Nothing new arrives: the idle aggregator must notice on its own and rebuild, exactly.
	waitExact(t, addr, v, tr, r.agg)
	produce(t, addr, tr, events(300, 400))
	waitExact(t, addr, v, tr, r.agg)
	if r.agg.Counters().Map()["offset_conflicts"] == 0 {
		t.Error("the rebuild should have been triggered by an offset conflict")
	}
}

func TestTwoInstancesWithRebalance(t *testing.T) {
	_, addr := kafkatest.Start(t, 6, "processed")
	v := view.New(redistest.Start(t).Client(t))
	tr := newTruth()
	a := start(t, addr, v)
	b := start(t, addr, v)
	for i := 0; i < 10; i++ {
		produce(t, addr, tr, events(i*100, i*100+100))
		if i == 5 {
			b.stop(t) // its partitions move to a
		}
	}
	waitExact(t, addr, v, tr, a.agg)
	c := start(t, addr, v) // and some move back
	produce(t, addr, tr, events(1000, 1200))
	waitExact(t, addr, v, tr, a.agg, c.agg)
	a.stop(t)
}

// produceFrom writes processed events carrying the raw source position the transformer stamps
// on them; the truth counts only the first copy of each position.
func produceFrom(t *testing.T, addr string, tr *truth, evs []event.Processed, firstRawOffset int64, count bool) {
	recs := make([]*kgo.Record, len(evs))
	for i, p := range evs {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: "processed", Key: []byte(p.UserID), Value: b, Headers: []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte("0")},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(firstRawOffset+int64(i), 10))},
		}}
		if count {
			tr.add(p)
		}
	}
	kafkatest.Produce(t, addr, recs...)
}

// TestDropsEventsProducedTwice replays what a broker crash in the middle of a transaction commit
// can leave behind: the same raw positions processed again after the originals were committed.
// The copies must not count, also across a restart of the aggregator.
func TestDropsEventsProducedTwice(t *testing.T) {
	_, addr := kafkatest.Start(t, 1, "processed")
	v := view.New(redistest.Start(t).Client(t))
	tr := newTruth()
	produceFrom(t, addr, tr, events(0, 100), 0, true)
	produceFrom(t, addr, tr, events(50, 70), 50, false) // reprocessed raw offsets 50..69
	r := start(t, addr, v)
	produceFrom(t, addr, tr, events(100, 150), 100, true)
	waitExact(t, addr, v, tr, r.agg)
	// Copies are consumed (read and settled) but not applied.
	wantCounts(t, r.agg, map[string]int64{"duplicates_dropped": 20, "applied": 150, "consumed": 170})
	r.stop(t)

	// A new instance loads the watermarks from Redis and still recognises copies.
	produceFrom(t, addr, tr, events(120, 150), 120, false)
	produceFrom(t, addr, tr, events(150, 160), 150, true)
	r = start(t, addr, v)
	waitExact(t, addr, v, tr, r.agg)
	wantCounts(t, r.agg, map[string]int64{"duplicates_dropped": 30, "applied": 10, "consumed": 40})
}

// wantCounts checks some of a settled stage's counts.
func wantCounts(t *testing.T, a *Aggregator, want map[string]int64) {
	t.Helper()
	got := a.Counters().Map()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %d, want %d (counts %v)", k, got[k], w, got)
		}
	}
}
