package aggregator

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
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
	tr.addHotel(p)
}

// addHotel counts what the hotel aggregator folds of p: its hotel, advertisers and prices.
func (tr *truth) addHotel(p event.Processed) {
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

// produce writes processed events as the transformer does: to the processed topic keyed by user
// and to the hotel topic keyed by hotel.
func produce(t *testing.T, addr string, tr *truth, evs []event.Processed) {
	var recs []*kgo.Record
	for _, p := range evs {
		recs = append(recs, processedRecords(t, p, nil)...)
		tr.add(p)
	}
	kafkatest.Produce(t, addr, recs...)
}

// processedRecords returns p's records in the processed and hotel topics, with headers.
func processedRecords(t *testing.T, p event.Processed, headers []kgo.RecordHeader) []*kgo.Record {
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return []*kgo.Record{
		{Topic: testTopic, Key: []byte(p.UserID), Value: b, Headers: headers},
		{Topic: hotelTopic, Key: []byte(p.HotelID), Value: b, Headers: headers},
	}
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

// The topics and groups the aggregators of these tests use.
const (
	testTopic  = "processed"
	testGroup  = "g-aggregator"
	hotelTopic = "hotels"
	hotelGroup = "g-aggregator-hotels"
)

// startKafka starts kfake with the two topics the aggregators read, and extra topics.
func startKafka(t *testing.T, partitions int32, extra ...string) string {
	_, addr := kafkatest.Start(t, partitions, append([]string{testTopic, hotelTopic}, extra...)...)
	return addr
}

// newView returns a view over c claimed for the test topics of partitions partitions.
func newView(t *testing.T, c rueidis.Client, partitions int) *view.View {
	t.Helper()
	v := view.New(c)
	err := v.Claim(context.Background(), view.Layout{UsersTopic: testTopic, Users: partitions, HotelsTopic: hotelTopic, Hotels: partitions})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitExact polls the view until it equals the truth. A first match does not prove exactness: an
// over-count could land a moment later. So it then waits until nothing is left to read and the
// stages aggs are idle, and compares again; both must be equal. It fails after a deadline.
func waitExact(t *testing.T, addr string, v *view.View, tr *truth, runs ...*running) {
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
	var aggs []*Aggregator
	for _, r := range runs {
		aggs = append(aggs, r.agg, r.hotels)
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

// leftToRead names a partition of a test topic whose committed offset in its group is short of
// its end offset, "" when there is none.
func leftToRead(ctx context.Context, adm *kadm.Client) (string, error) {
	for topic, group := range map[string]string{testTopic: testGroup, hotelTopic: hotelGroup} {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			return "", fmt.Errorf("end offsets: %w", err)
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			err = committed.Error()
		}
		if err != nil {
			return "", fmt.Errorf("committed offsets: %w", err)
		}
		left := ""
		ends.Each(func(end kadm.ListedOffset) {
			c, ok := committed.Lookup(topic, end.Partition)
			if end.Offset > 0 && (!ok || c.At != end.Offset) && left == "" {
				left = fmt.Sprintf("%s partition %d: committed %d of %d", topic, end.Partition, c.At, end.Offset)
			}
		})
		if left != "" {
			return left, nil
		}
	}
	return "", nil
}

// running is the two aggregators of one process: users and hotels.
type running struct {
	agg, hotels *Aggregator
	cancel      context.CancelFunc
	done        chan error
}

func start(t *testing.T, addr string, v *view.View) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 2)}
	for _, role := range []view.Role{view.UserShards, view.HotelShards} {
		cfg := Config{Role: role, Topic: testTopic, Group: testGroup, DeadLetterTopic: "dlq", BatchMaxRecords: 50}
		if role == view.HotelShards {
			cfg.Topic, cfg.Group = hotelTopic, hotelGroup
		}
		a := New(cfg, []kgo.Opt{kgo.SeedBrokers(addr)}, v, zaptest.NewLogger(t).Named(StageName(role)))
		if role == view.UserShards {
			r.agg = a
		} else {
			r.hotels = a
		}
		go func() { r.done <- a.Run(ctx) }()
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	for range 2 {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("aggregator Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("aggregator did not drain within 30s")
		}
	}
}

func TestAggregateAndRestart(t *testing.T) {
	addr := startKafka(t, 3)
	v := newView(t, redistest.Start(t).Client(t), 3)
	tr := newTruth()
	produce(t, addr, tr, events(0, 500))
	r := start(t, addr, v)
	waitExact(t, addr, v, tr, r)
	r.stop(t)

	// A new instance resumes from the offsets stored in Redis: nothing is counted twice.
	produce(t, addr, tr, events(500, 800))
	r = start(t, addr, v)
	waitExact(t, addr, v, tr, r)
	if c := r.agg.Counters().Map(); c["applied"] != 300 || c["consumed"] != 300 {
		t.Errorf("the second instance applied %d and consumed %d, want the 300 new events", c["applied"], c["consumed"])
	}
}

func TestRebuildsAfterRedisLosesEverything(t *testing.T) {
	addr := startKafka(t, 3)
	srv := redistest.Start(t)
	v := newView(t, srv.Client(t), 3)
	tr := newTruth()
	produce(t, addr, tr, events(0, 300))
	r := start(t, addr, v)
	waitExact(t, addr, v, tr, r)

	srv.Restart(t) // an empty Redis on the same port, as after a crash without persistence
	// Nothing new arrives: the idle aggregator must notice on its own and rebuild, exactly.
	waitExact(t, addr, v, tr, r)
	produce(t, addr, tr, events(300, 400))
	waitExact(t, addr, v, tr, r)
	if r.agg.Counters().Map()["offset_conflicts"] == 0 {
		t.Error("the rebuild should have been triggered by an offset conflict")
	}
}

func TestTwoInstancesWithRebalance(t *testing.T) {
	addr := startKafka(t, 6)
	v := newView(t, redistest.Start(t).Client(t), 6)
	tr := newTruth()
	a := start(t, addr, v)
	b := start(t, addr, v)
	for i := 0; i < 10; i++ {
		produce(t, addr, tr, events(i*100, i*100+100))
		if i == 5 {
			b.stop(t) // its partitions move to a
		}
	}
	waitExact(t, addr, v, tr, a)
	c := start(t, addr, v) // and some move back
	produce(t, addr, tr, events(1000, 1200))
	waitExact(t, addr, v, tr, a, c)
	a.stop(t)
}

// produceFrom writes processed events carrying the raw source position the transformer stamps
// on them; the truth counts only the first copy of each position.
func produceFrom(t *testing.T, addr string, tr *truth, evs []event.Processed, firstRawOffset int64, count bool) {
	var recs []*kgo.Record
	for i, p := range evs {
		recs = append(recs, processedRecords(t, p, []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte("0")},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(firstRawOffset+int64(i), 10))},
		})...)
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
	addr := startKafka(t, 1)
	v := newView(t, redistest.Start(t).Client(t), 1)
	tr := newTruth()
	produceFrom(t, addr, tr, events(0, 100), 0, true)
	produceFrom(t, addr, tr, events(50, 70), 50, false) // reprocessed raw offsets 50..69
	r := start(t, addr, v)
	produceFrom(t, addr, tr, events(100, 150), 100, true)
	waitExact(t, addr, v, tr, r)
	// Copies are consumed (read and settled) but not applied.
	wantCounts(t, r.agg, map[string]int64{"duplicates_dropped": 20, "applied": 150, "consumed": 170})
	r.stop(t)

	// A new instance loads the watermarks from Redis and still recognises copies.
	produceFrom(t, addr, tr, events(120, 150), 120, false)
	produceFrom(t, addr, tr, events(150, 160), 150, true)
	r = start(t, addr, v)
	waitExact(t, addr, v, tr, r)
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
