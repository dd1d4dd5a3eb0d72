package ops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// The fold verify compares the view with: what one shard must hold after the records of its
// partition below the shard's offset, written from the README's rules rather than from the
// aggregator's code, so that a mistake in one is not repeated in the other.

// maxPrice is the largest price the view keeps exactly (a sorted-set score is a double).
const maxPrice = 1 << 53

// shardFold is what one shard must hold, folded from its partition in offset order.
type shardFold struct {
	role view.Role
	// marks is the highest raw offset counted or passed over, per raw partition: a record at or
	// below it is a copy of one already folded.
	marks     map[int32]int64
	counts    map[view.Kind]map[string]int64
	minPrices map[string]map[string]int64 // hotel -> advertiser -> lowest price
	// cheapest is, per hotel, each advertiser's lowest price among the records whose cheapest
	// offer was its (the lowest price; of two, the first name).
	cheapest map[string]map[string]int64

	records, copies, deadLettered int64
	unread                        []unreadRecord // neither readable nor dead-lettered
}

// unreadRecord is a record the fold cannot read that the aggregator did not dead-letter either.
type unreadRecord struct {
	offset int64
	err    error
}

func newShardFold(role view.Role) *shardFold {
	f := &shardFold{role: role, marks: map[int32]int64{}, counts: map[view.Kind]map[string]int64{},
		minPrices: map[string]map[string]int64{}, cheapest: map[string]map[string]int64{}}
	for _, k := range roleKinds(role) {
		f.counts[k] = map[string]int64{}
	}
	return f
}

// seed starts the fold from a snapshot of the shard: what it counted, its minimum prices and
// its raw watermarks.
func (f *shardFold) seed(st view.ShardState) {
	for k, counts := range st.Counts {
		if f.counts[k] == nil {
			continue
		}
		for id, n := range counts {
			f.counts[k][id] = n
		}
	}
	for hotel, prices := range st.MinPrices {
		f.minPrices[hotel] = maps.Clone(prices)
	}
	for hotel, prices := range st.Cheapest {
		f.cheapest[hotel] = maps.Clone(prices)
	}
	for p, o := range st.Sources {
		f.marks[p] = o
	}
}

// roleKinds are the kinds role's shards count.
func roleKinds(role view.Role) []view.Kind {
	if role == view.HotelShards {
		return []view.Kind{view.Hotels, view.Advertisers}
	}
	return []view.Kind{view.Users}
}

// add folds the next record of the partition. Copies are judged first: a record whose raw
// position is at or below the mark of its raw partition repeats one already folded and is
// dropped; any other raises the mark, dead-lettered or not. A record the aggregator
// dead-lettered is then passed over; any other is counted.
func (f *shardFold) add(r *kgo.Record, deadLettered bool) {
	f.records++
	sp, so, positioned := rawPosition(r)
	if positioned {
		if high, seen := f.marks[sp]; seen && so <= high {
			f.copies++
			return
		}
		f.marks[sp] = so
	}
	if deadLettered {
		f.deadLettered++
		return
	}
	// The transformer's records (a source position, keyed by the user id the document begins
	// with, unescaped) count their key's user: the user shards need nothing else of them.
	if f.role == view.UserShards && positioned && len(r.Key) > 0 && beginsWithUser(r.Value, r.Key) {
		f.counts[view.Users][string(r.Key)]++
		return
	}
	ev, err := decodeProcessed(r.Value, f.role == view.UserShards)
	if err != nil {
		f.unread = append(f.unread, unreadRecord{offset: r.Offset, err: err})
		return
	}
	if f.role == view.UserShards {
		f.counts[view.Users][ev.user]++
		return
	}
	f.counts[view.Hotels][ev.hotel]++
	f.win(ev)
	prices := f.minPrices[ev.hotel]
	for adv, price := range ev.prices {
		f.counts[view.Advertisers][adv]++
		if prices == nil {
			prices = map[string]int64{}
			f.minPrices[ev.hotel] = prices
		}
		if low, ok := prices[adv]; !ok || price < low {
			prices[adv] = price
		}
	}
}

// win lets the record's cheapest offer lower its advertiser's cheapest-per-search price.
func (f *shardFold) win(ev processed) {
	winner, low := "", int64(0)
	for adv, price := range ev.prices {
		if winner == "" || price < low || price == low && adv < winner {
			winner, low = adv, price
		}
	}
	if winner == "" {
		return
	}
	wins := f.cheapest[ev.hotel]
	if wins == nil {
		wins = map[string]int64{}
		f.cheapest[ev.hotel] = wins
	}
	if cur, ok := wins[winner]; !ok || low < cur {
		wins[winner] = low
	}
}

// beginsWithUser reports whether doc begins {"user_id":"<key>" (the aggregator's rule, written
// again here).
func beginsWithUser(doc, key []byte) bool {
	prefix := append([]byte(`{"user_id":"`), key...)
	return len(doc) > len(prefix) && bytes.HasPrefix(doc, prefix) && doc[len(prefix)] == '"'
}

// rawPosition reads the raw partition and offset the transformer stamps on a processed record
// (the last header of each name). A record without both, or with a value that is not a
// non-negative number, has no position and is never taken for a copy.
func rawPosition(r *kgo.Record) (partition int32, offset int64, ok bool) {
	sp, so := "", ""
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			sp = string(h.Value)
		case event.HeaderSourceOffset:
			so = string(h.Value)
		}
	}
	p, err1 := strconv.ParseInt(sp, 10, 32)
	o, err2 := strconv.ParseInt(so, 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return 0, 0, false
	}
	return int32(p), o, true
}

// processed is what the view counts of a processed event.
type processed struct {
	user, hotel string
	prices      map[string]int64
}

// decodeProcessed reads a processed document, or a hotel record (needUser false: its user_id may
// be absent), with encoding/json: an object with a non-empty string user_id and hotel_id, and
// advertiser_min_prices (when present) an object of integer prices in 1..2^53. Other fields need
// only be valid JSON, and bytes after the object are not read.
func decodeProcessed(value []byte, needUser bool) (processed, error) {
	var doc struct {
		UserID  json.RawMessage `json:"user_id"`
		HotelID *string         `json:"hotel_id"`
		Prices  json.RawMessage `json:"advertiser_min_prices"`
	}
	if t := bytes.TrimSpace(value); len(t) == 0 || t[0] != '{' {
		return processed{}, errors.New("not a JSON object")
	}
	// The first JSON value only: like the aggregator's parser, what follows it is not read.
	if err := json.NewDecoder(bytes.NewReader(value)).Decode(&doc); err != nil {
		return processed{}, err
	}
	var user string
	if len(doc.UserID) > 0 {
		// Present, it must be a string (null included: the aggregator's parser refuses it too).
		if string(doc.UserID) == "null" || json.Unmarshal(doc.UserID, &user) != nil {
			return processed{}, errors.New("user_id is not a string")
		}
	}
	if (needUser && user == "") || doc.HotelID == nil || *doc.HotelID == "" {
		return processed{}, errors.New("user_id or hotel_id missing or empty")
	}
	var prices map[string]json.RawMessage
	if len(doc.Prices) > 0 {
		// null is no object of prices, though encoding/json would take it for an absent field.
		if string(doc.Prices) == "null" {
			return processed{}, errors.New("advertiser_min_prices is null")
		}
		if err := json.Unmarshal(doc.Prices, &prices); err != nil {
			return processed{}, fmt.Errorf("advertiser_min_prices: %w", err)
		}
	}
	ev := processed{user: user, hotel: *doc.HotelID, prices: make(map[string]int64, len(prices))}
	for adv, raw := range prices {
		price, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || price < 1 || price > maxPrice {
			return processed{}, fmt.Errorf("advertiser %q: price %s is not an integer in 1..2^53", adv, raw)
		}
		ev.prices[adv] = price
	}
	return ev, nil
}
