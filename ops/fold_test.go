package ops

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/view"
)

// rec returns a processed record at offset of p, from raw position (sp, so) unless sp < 0.
func rec(t *testing.T, offset int64, sp int32, so int64, p event.Processed) *kgo.Record {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &kgo.Record{Offset: offset, Value: b}
	if sp >= 0 {
		r.Headers = []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(sp)))},
			{Key: event.HeaderSourceOffset, Value: []byte(strconv.FormatInt(so, 10))},
		}
	}
	return r
}

func search(user, hotel string, prices map[string]int64) event.Processed {
	return event.Processed{UserID: user, HotelID: hotel, SearchTimestamp: "1", AdvertiserMinPrices: prices}
}

// TestFoldRules: the rules verify folds by, one record after the other: copies (a raw position
// at or below its partition's mark) are dropped, and judged before dead letters, so a
// dead-lettered record still raises the mark; dead-lettered records are passed over; a record
// without a raw position is never a copy; the lowest price wins; a record nobody could read and
// nobody dead-lettered is kept for the report.
func TestFoldRules(t *testing.T) {
	users, hotels := newShardFold(view.UserShards), newShardFold(view.HotelShards)
	recs := []struct {
		r    *kgo.Record
		dead bool
	}{
		{rec(t, 0, 0, 10, search("u1", "h1", map[string]int64{"a": 500, "b": 900})), false},
		{rec(t, 1, 0, 10, search("u2", "h2", map[string]int64{"a": 1})), false},   // copy of raw 0/10
		{rec(t, 2, 1, 4, search("u1", "h1", map[string]int64{"a": 300})), false},  // another raw partition
		{rec(t, 3, 0, 12, search("u3", "h3", map[string]int64{"c": 5})), true},    // dead-lettered: raises the mark
		{rec(t, 4, 0, 12, search("u3", "h3", map[string]int64{"c": 5})), true},    // a copy, though dead-lettered too
		{rec(t, 5, 0, 11, search("u4", "h4", map[string]int64{"c": 5})), false},   // below the mark: a copy
		{rec(t, 6, -1, 0, search("u1", "h1", map[string]int64{"a": 800})), false}, // no position: counted
		{rec(t, 7, -1, 0, search("u1", "h1", map[string]int64{"a": 800})), false}, // and again
		{&kgo.Record{Offset: 8, Value: []byte("not json")}, true},                 // dead-lettered
		{&kgo.Record{Offset: 9, Value: []byte(`{"user_id":"u9"}`)}, false},        // unreadable, not dead-lettered
		{rec(t, 10, 1, 5, search("u2", "h1", map[string]int64{"b": 950})), false}, // a higher price loses
	}
	for _, tt := range recs {
		users.add(tt.r, tt.dead)
		hotels.add(tt.r, tt.dead)
	}
	for _, f := range []*shardFold{users, hotels} {
		if f.records != 11 || f.copies != 3 || f.deadLettered != 2 || len(f.unread) != 1 || f.unread[0].offset != 9 {
			t.Errorf("%v: %d records, %d copies, %d dead-lettered, unread %v", f.role, f.records, f.copies, f.deadLettered, f.unread)
		}
		if want := map[int32]int64{0: 12, 1: 5}; !reflect.DeepEqual(f.marks, want) {
			t.Errorf("%v: marks %v, want %v", f.role, f.marks, want)
		}
	}
	if want := map[string]int64{"u1": 4, "u2": 1}; !reflect.DeepEqual(users.counts[view.Users], want) {
		t.Errorf("users %v, want %v", users.counts[view.Users], want)
	}
	if want := map[string]int64{"h1": 5}; !reflect.DeepEqual(hotels.counts[view.Hotels], want) {
		t.Errorf("hotels %v, want %v", hotels.counts[view.Hotels], want)
	}
	if want := map[string]int64{"a": 4, "b": 2}; !reflect.DeepEqual(hotels.counts[view.Advertisers], want) {
		t.Errorf("advertisers %v, want %v", hotels.counts[view.Advertisers], want)
	}
	if want := map[string]map[string]int64{"h1": {"a": 300, "b": 900}}; !reflect.DeepEqual(hotels.minPrices, want) {
		t.Errorf("min prices %v, want %v", hotels.minPrices, want)
	}
}

// TestDecodeProcessedAgreesWithTheAggregator: verify's encoding/json reading takes and refuses
// the same documents as the aggregator's parser, so a record one of them cannot read is not
// counted by the other.
func TestDecodeProcessedAgreesWithTheAggregator(t *testing.T) {
	for _, doc := range []string{
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":5,"b":9007199254740992}}`,
		`{"user_id":"u","hotel_id":"h"}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{}, "extra": [1, {"x": null}]}`,
		` {"hotel_id":"h\u00e9","user_id":"\"u\""} `,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":0}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":-3}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":1.5}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":1e3}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":"5"}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":9007199254740993}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":null}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":[]}`,
		`{"user_id":"","hotel_id":"h"}`,
		`{"user_id":null,"hotel_id":"h"}`,
		`{"user_id":7,"hotel_id":"h"}`,
		`{"user_id":"u"}`,
		`{"hotel_id":"h","advertiser_min_prices":{"a":5}}`,
		`{"hotel_id":"","advertiser_min_prices":{"a":5}}`,
		`{"advertiser_min_prices":{"a":5}}`,
		`{"user_id":"u","hotel_id":"h"`,
		`{"user_id":"u","hotel_id":"h"} x`,
		`["u","h"]`,
		`null`,
		``,
	} {
		for _, needUser := range []bool{true, false} { // a processed event, and a hotel record
			var facts event.ProcessedFacts
			theirs := event.ParseProcessed([]byte(doc), &facts)
			if !needUser {
				theirs = event.ParseHotel([]byte(doc), &facts)
			}
			ev, ours := decodeProcessed([]byte(doc), needUser)
			if (theirs == nil) != (ours == nil) {
				t.Errorf("%s (user needed %v): the aggregator says %v, verify says %v", doc, needUser, theirs, ours)
				continue
			}
			if ours != nil {
				continue
			}
			prices := map[string]int64{}
			for _, p := range facts.Prices {
				prices[p.Advertiser] = p.Price
			}
			if ev.user != facts.UserID || ev.hotel != facts.HotelID || !reflect.DeepEqual(ev.prices, prices) {
				t.Errorf("%s: verify reads %+v, the aggregator %+v", doc, ev, facts)
			}
		}
	}
}

// TestDeadLetterStagesAreTheAggregators: verify recognises the aggregators' dead letters by the
// stage names they write.
func TestDeadLetterStagesAreTheAggregators(t *testing.T) {
	if stageUsers != aggregator.StageName(view.UserShards) || stageHotels != aggregator.StageName(view.HotelShards) {
		t.Errorf("stages %q, %q; the aggregators write %q, %q", stageUsers, stageHotels,
			aggregator.StageName(view.UserShards), aggregator.StageName(view.HotelShards))
	}
	l := view.Layout{UsersTopic: "p", Users: 1, HotelsTopic: "h", Hotels: 1}
	header := func(stage, topic string) *kgo.Record {
		return &kgo.Record{Headers: []kgo.RecordHeader{
			{Key: event.HeaderStage, Value: []byte(stage)}, {Key: event.HeaderSourceTopic, Value: []byte(topic)},
			{Key: event.HeaderSourcePartition, Value: []byte("2")}, {Key: event.HeaderSourceOffset, Value: []byte("41")},
		}}
	}
	if at, ok := deadLettered(header("aggregator-hotels", "h"), l); !ok || at != (position{topic: "h", partition: 2, offset: 41}) {
		t.Errorf("a hotel aggregator's dead letter names %+v (%v)", at, ok)
	}
	for _, r := range []*kgo.Record{header("transformer", "p"), header("aggregator", "raw")} {
		if at, ok := deadLettered(r, l); ok {
			t.Errorf("%s: taken for an aggregator's dead letter of %+v", strings.TrimSpace(string(r.Headers[0].Value)), at)
		}
	}
}
