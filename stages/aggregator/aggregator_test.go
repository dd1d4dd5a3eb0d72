package aggregator

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

type snapshot struct {
	users, hotels, advs map[string]int64
	min                 map[string]map[string]int64
}

func read(t *testing.T, v *view.View) (snapshot, error) {
	ctx := context.Background()
	s := snapshot{min: map[string]map[string]int64{}}
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

func (tr *truth) equal(s snapshot) bool {
	return reflect.DeepEqual(s.users, tr.users) && reflect.DeepEqual(s.hotels, tr.hotels) &&
		reflect.DeepEqual(s.advs, tr.advs) && reflect.DeepEqual(s.min, tr.min)
}

// waitExact polls the view until it equals the truth, failing after a deadline with a diff.
func waitExact(t *testing.T, v *view.View, tr *truth) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var s snapshot
	for time.Now().Before(deadline) {
		var err error
		if s, err = read(t, v); err == nil && tr.equal(s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("view never equalled the truth:\n users %v\n want %v\n hotels %v\n want %v\n advs %v\n want %v",
		s.users, tr.users, s.hotels, tr.hotels, s.advs, tr.advs)
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
	waitExact(t, v, tr)
	r.stop(t)

	// A new instance resumes from the offsets stored in Redis: nothing is counted twice.
	produce(t, addr, tr, events(500, 800))
	start(t, addr, v)
	waitExact(t, v, tr)
}

func TestRebuildsAfterRedisLosesEverything(t *testing.T) {
	_, addr := kafkatest.Start(t, 3, "processed")
	srv := redistest.Start(t)
	v := view.New(srv.Client(t))
	tr := newTruth()
	produce(t, addr, tr, events(0, 300))
	r := start(t, addr, v)
	waitExact(t, v, tr)

	srv.Restart(t) // an empty Redis on the same port, as after a crash without persistence
	// Nothing new arrives: the idle aggregator must notice on its own and rebuild, exactly.
	waitExact(t, v, tr)
	produce(t, addr, tr, events(300, 400))
	waitExact(t, v, tr)
	if r.agg.Counts()["offset_conflicts"] == 0 {
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
	waitExact(t, v, tr)
	start(t, addr, v) // and some move back
	produce(t, addr, tr, events(1000, 1200))
	waitExact(t, v, tr)
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
	waitExact(t, v, tr)
	deadline := time.Now().Add(30 * time.Second)
	for r.agg.Counts()["duplicates_dropped"] != 20 {
		if time.Now().After(deadline) {
			t.Fatalf("duplicates dropped = %d, want 20", r.agg.Counts()["duplicates_dropped"])
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)

	// A new instance loads the watermarks from Redis and still recognises copies.
	produceFrom(t, addr, tr, events(120, 150), 120, false)
	produceFrom(t, addr, tr, events(150, 160), 150, true)
	r = start(t, addr, v)
	waitExact(t, v, tr)
	for r.agg.Counts()["duplicates_dropped"] != 30 {
		if time.Now().After(deadline) {
			t.Fatalf("duplicates dropped after restart = %d, want 30", r.agg.Counts()["duplicates_dropped"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
