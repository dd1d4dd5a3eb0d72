package aggregator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/view"
)

func redisDo(t *testing.T, c rueidis.Client, args ...string) {
	t.Helper()
	if err := c.Do(context.Background(), c.B().Arbitrary(args...).Build()).Error(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// TestRefusedHotelIsDeadLettered: something other than searchflow left a string where hotel h3's
// prices live. The apply script refuses every batch holding an h3 event — writing nothing — and
// says so; the aggregator dead-letters the h3 events (stage aggregator, reason apply_failed) and
// applies everything else exactly, so the partitions move on.
func TestRefusedHotelIsDeadLettered(t *testing.T) {
	addr := startKafka(t, 3, "dlq")
	srv := redistest.Start(t)
	c := srv.Client(t)
	v := newView(t, c, 3)
	damage(t, v, c, view.HotelShards, "minprice:h3")

	// The hotel aggregator dead-letters the h3 records of the hotel topic; the users of those
	// events are counted from the processed topic all the same.
	all := events(0, 400)
	want := newTruth()
	h3 := 0
	for _, p := range all {
		want.users[p.UserID]++
		if p.HotelID == "h3" {
			h3++
			continue
		}
		want.addHotel(p)
	}
	produceFrom(t, addr, newTruth(), all, 0, false)
	r := start(t, addr, v)

	dead := kafkatest.ReadAll(t, addr, "dlq", h3)
	waitExact(t, addr, v, want, r)
	if len(dead) != h3 {
		t.Errorf("%d dead letters, want the %d events of h3", len(dead), h3)
	}
	for _, d := range dead {
		var p event.Processed
		if err := json.Unmarshal(d.Value, &p); err != nil || p.HotelID != "h3" {
			t.Errorf("dead letter of hotel %q (%v), want h3 only", p.HotelID, err)
		}
		if kafkatest.Header(d, event.HeaderReason) != string(event.ReasonApplyFailed) || kafkatest.Header(d, event.HeaderStage) != "aggregator-hotels" ||
			kafkatest.Header(d, event.HeaderSourceTopic) != hotelTopic || kafkatest.Header(d, HeaderRawOffset) == "" ||
			!strings.Contains(kafkatest.Header(d, event.HeaderError), "h3") {
			t.Errorf("dead letter headers %v", d.Headers)
		}
	}
	waitCounts(t, r.hotels, func(c map[string]int64) bool {
		return c["apply_refused"] > 0 && c["dead_lettered"] == int64(h3) && c["applied"] == int64(len(all)-h3) &&
			c["consumed"] == int64(len(all))
	})
	waitCounts(t, r.agg, func(c map[string]int64) bool {
		return c["apply_refused"] == 0 && c["dead_lettered"] == 0 && c["applied"] == int64(len(all))
	})
	waitProblem(t, r.hotels, func(p string) bool { return p == "" })
}

// damage writes a string where a key of every shard of role lives (name after the shard's prefix).
func damage(t *testing.T, v *view.View, c rueidis.Client, r view.Role, name string) {
	everyShard(t, v, r, func(sh view.Shard) { redisDo(t, c, "SET", sh.Key(name), "not a sorted set") })
}

// repair deletes what damage wrote.
func repair(t *testing.T, v *view.View, c rueidis.Client, r view.Role, name string) {
	everyShard(t, v, r, func(sh view.Shard) { redisDo(t, c, "DEL", sh.Key(name)) })
}

func everyShard(t *testing.T, v *view.View, r view.Role, fn func(view.Shard)) {
	t.Helper()
	shards, _, err := v.Shards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		if sh.Role == r {
			fn(sh)
		}
	}
}

// TestDamagedViewBlamesNoRecord: a key every batch writes has the wrong type. No record is at
// fault, so none is dead-lettered: the stage reports the damaged view on /readyz and waits; once
// the key is repaired, everything is applied exactly.
func TestDamagedViewBlamesNoRecord(t *testing.T) {
	addr := startKafka(t, 2, "dlq")
	srv := redistest.Start(t)
	c := srv.Client(t)
	v := newView(t, c, 2)
	damage(t, v, c, view.HotelShards, "advertisers")
	want := newTruth()
	evs := events(0, 100)
	for _, p := range evs {
		want.add(p)
	}
	produceFrom(t, addr, newTruth(), evs, 0, false)
	r := start(t, addr, v)
	waitProblem(t, r.hotels, func(p string) bool { return strings.Contains(p, "damaged") })
	repair(t, v, c, view.HotelShards, "advertisers")
	waitExact(t, addr, v, want, r)
	waitProblem(t, r.hotels, func(p string) bool { return p == "" })
	if n := r.hotels.Counters().Map()["dead_lettered"]; n != 0 {
		t.Errorf("%d records dead-lettered for a damaged view", n)
	}
}

// TestUndecodableProcessedIsDeadLettered: records in the processed topic that the aggregator
// cannot read (written by something other than the transformer) are dead-lettered, not skipped
// in silence; the events around them are applied exactly.
func TestUndecodableProcessedIsDeadLettered(t *testing.T) {
	addr := startKafka(t, 1, "dlq")
	v := newView(t, redistest.Start(t).Client(t), 1)
	want := newTruth()
	evs := events(0, 50)
	for _, p := range evs {
		want.add(p)
	}
	produceFrom(t, addr, newTruth(), evs[:25], 0, false)
	kafkatest.Produce(t, addr, // only in the processed topic: the user aggregator meets them
		&kgo.Record{Topic: "processed", Value: []byte("not json")},
		&kgo.Record{Topic: "processed", Value: []byte(`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":9007199254740993}}`)})
	produceFrom(t, addr, newTruth(), evs[25:], 25, false)
	r := start(t, addr, v)
	dead := kafkatest.ReadAll(t, addr, "dlq", 2)
	waitExact(t, addr, v, want, r)
	for _, d := range dead {
		if kafkatest.Header(d, event.HeaderReason) != string(event.ReasonUndecodable) || kafkatest.Header(d, event.HeaderError) == "" {
			t.Errorf("dead letter %q: reason %q error %q", d.Value, kafkatest.Header(d, event.HeaderReason), kafkatest.Header(d, event.HeaderError))
		}
	}
	// The counts follow the view once the batch in flight is settled; both kinds of record are
	// consumed, only the events applied.
	waitCounts(t, r.agg, func(c map[string]int64) bool {
		return c["undecodable"] == 2 && c["applied"] == 50 && c["consumed"] == 52
	})
}

// TestRecordTooLargeForTheScriptIsNarrowedDown: one processed record carries a 40 MiB user id
// (the topic allows it; the transformer would never write it). A batch holding it is past what
// Apply sends to Redis; the refusal names no hotel, so the aggregator halves the run until the
// record is alone, checks that the view takes an empty batch, and dead-letters that record. The
// rest is applied exactly.
func TestRecordTooLargeForTheScriptIsNarrowedDown(t *testing.T) {
	_, addr := kafkatest.Start(t, 1, "dlq", hotelTopic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerBatchMaxBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	limit := fmt.Sprint(64 << 20)
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &limit}, testTopic); err != nil {
		t.Fatal(err)
	}
	v := newView(t, redistest.Start(t).Client(t), 1)
	want := newTruth()
	evs := events(0, 40)
	for _, p := range evs {
		want.add(p)
	}
	produceFrom(t, addr, newTruth(), evs[:20], 0, false)
	huge := event.Processed{UserID: strings.Repeat("u", 40<<20), HotelID: "h", SearchTimestamp: "1",
		AdvertiserMinPrices: map[string]int64{"a": 1}}
	b, _ := json.Marshal(huge)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "processed", Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produceFrom(t, addr, newTruth(), evs[20:], 20, false)
	r := start(t, addr, v)
	waitExact(t, addr, v, want, r)
	dead := kafkatest.ReadAll(t, addr, "dlq", 1)
	if kafkatest.Header(dead[0], event.HeaderReason) != string(event.ReasonApplyFailed) || len(dead[0].Value) > 1<<20 {
		t.Errorf("dead letter of %d bytes with reason %q", len(dead[0].Value), kafkatest.Header(dead[0], event.HeaderReason))
	}
	waitCounts(t, r.agg, func(c map[string]int64) bool {
		return c["dead_lettered"] == 1 && c["applied"] == 40 && c["consumed"] == 41
	})
}

// waitCounts polls the stage's counts until ok accepts them.
func waitCounts(t *testing.T, a *Aggregator, ok func(map[string]int64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(a.Counters().Map()) {
		if time.Now().After(deadline) {
			t.Fatalf("counts stayed %v", a.Counters().Map())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitProblem polls the stage's /readyz problem until ok accepts it.
func waitProblem(t *testing.T, a *Aggregator, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok(a.Problem()) {
		if time.Now().After(deadline) {
			t.Fatalf("problem stayed %q", a.Problem())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
