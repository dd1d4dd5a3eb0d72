package event

import (
	"fmt"
	"math"
	"strconv"

	"github.com/searchflow/searchflow/internal/jsonw"
)

// appendJSON writes a processed event's document, as encoding/json writes a Processed.
func (v *verdict) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"user_id":`...)
	dst = jsonw.AppendString(dst, v.user)
	dst = append(dst, `,"hotel_id":`...)
	dst = jsonw.AppendString(dst, v.hotel)
	dst = append(dst, `,"search_timestamp":`...)
	dst = append(dst, v.ts...)
	dst = append(dst, `,"advertisers":[`...)
	for i, a := range v.advertisers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, a.name)
	}
	dst = append(dst, `],"min_offer":{"price":`...)
	dst = strconv.AppendInt(dst, v.min.low, 10)
	dst = append(dst, `,"advertiser":`...)
	dst = jsonw.AppendString(dst, v.min.name)
	dst = append(dst, `},"advertiser_min_prices":{`...)
	return v.appendPrices(dst)
}

// appendHotelJSON writes the event's compact document for the hotel topic: only what the hotel
// aggregator counts, {"hotel_id":...,"search_timestamp":...,"advertiser_min_prices":{...}}, the
// processed document's own fields and order, so it stays readable by anything that reads
// processed events.
func (v *verdict) appendHotelJSON(dst []byte) []byte {
	dst = append(dst, `{"hotel_id":`...)
	dst = jsonw.AppendString(dst, v.hotel)
	dst = append(dst, `,"search_timestamp":`...)
	dst = append(dst, v.ts...)
	dst = append(dst, `,"advertiser_min_prices":{`...)
	return v.appendPrices(dst)
}

// appendPrices writes the advertisers' minimums, the members of advertiser_min_prices, and closes
// that object and the document.
func (v *verdict) appendPrices(dst []byte) []byte {
	for i, a := range v.advertisers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, a.name)
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, a.low, 10)
	}
	return append(dst, "}}"...)
}

// userPrefix is how every processed document begins.
const userPrefix = `{"user_id":"`

// BeginsWithUser reports whether a processed document begins with user as its user_id, written
// without escapes: {"user_id":"<user>". AppendProcessed writes every document that way, so a
// reader that needs only the user can take it from the record's key after this check.
func BeginsWithUser(doc, user []byte) bool {
	n := len(userPrefix)
	return len(doc) > n+len(user) && string(doc[:n]) == userPrefix &&
		string(doc[n:n+len(user)]) == string(user) && doc[n+len(user)] == '"'
}

// AdvertiserPrice is one advertiser's lowest price in a processed event.
type AdvertiserPrice struct {
	Advertiser string
	Price      int64
}

// ProcessedFacts is what the aggregator needs of a processed event. ParseProcessed reuses its
// Prices slice from call to call.
type ProcessedFacts struct {
	UserID, HotelID string
	Prices          []AdvertiserPrice
	// EventTime is search_timestamp in whole Unix seconds (see EventSeconds); Timed is false when
	// the document has none it can use (a hotel record written before trends existed).
	EventTime int64
	Timed     bool
}

// The event times EventSeconds accepts: far beyond any real search, and far inside int64, so
// that differences of two of them never overflow.
const (
	minEventTime = -1 << 52
	maxEventTime = 1 << 52
)

// EventSeconds reads a search_timestamp's JSON number as whole Unix seconds, rounded down (a
// fraction of a second is dropped: 1764123456.9 is second 1764123456). ok is false for text that
// is not a number or is outside ±2^52 seconds.
func EventSeconds(num []byte) (int64, bool) {
	if n, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return n, n >= minEventTime && n <= maxEventTime
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || math.IsNaN(f) || f < minEventTime || f > maxEventTime {
		return 0, false
	}
	return int64(math.Floor(f)), true
}

// EventTimeAfterUser reads the event time of a processed document the transformer wrote, for a
// reader that took the user from the record's key (see BeginsWithUser, which must hold for
// userLen): the transformer writes {"user_id":"<user>","hotel_id":"<hotel>","search_timestamp":N,
// in that order. ok is false for a document laid out any other way; parse it instead.
func EventTimeAfterUser(doc []byte, userLen int) (int64, bool) {
	i := len(userPrefix) + userLen + 1 // past the user id's closing quote
	const hotel = `,"hotel_id":"`
	if len(doc) < i+len(hotel) || string(doc[i:i+len(hotel)]) != hotel {
		return 0, false
	}
	i += len(hotel)
	for ; i < len(doc) && doc[i] != '"'; i++ {
		if doc[i] == '\\' {
			i++ // the escaped byte cannot end the string
		}
	}
	const ts = `","search_timestamp":`
	if i+len(ts) > len(doc) || string(doc[i:i+len(ts)]) != ts {
		return 0, false
	}
	i += len(ts)
	end := i
	for end < len(doc) && doc[end] != ',' && doc[end] != '}' {
		end++
	}
	// The JSON grammar's number, as the full parse reads it: not "+5" or "0x10", which strconv takes.
	sc := scanner{b: doc[i:end]}
	num := sc.number()
	if sc.err != nil || sc.i != len(sc.b) {
		return 0, false
	}
	return EventSeconds(num)
}

// ParseProcessed reads the facts the aggregator counts from a processed event: user_id,
// hotel_id and advertiser_min_prices; other fields are checked for syntax and skipped.
func ParseProcessed(value []byte, f *ProcessedFacts) error { return parseFacts(value, f, true) }

// ParseHotel reads a record of the hotel topic — the compact document AppendRecords writes, or a
// whole processed event — as ParseProcessed does, but needs no user_id.
func ParseHotel(value []byte, f *ProcessedFacts) error { return parseFacts(value, f, false) }

func parseFacts(value []byte, f *ProcessedFacts, needUser bool) error {
	s := scanner{b: value}
	f.UserID, f.HotelID, f.Prices = "", "", f.Prices[:0]
	f.EventTime, f.Timed = 0, false
	s.object(func(key []byte, esc bool) {
		switch string(unescapeKey(key, esc)) {
		case "user_id":
			raw, e := s.str()
			f.UserID = unescape(raw, e)
		case "hotel_id":
			raw, e := s.str()
			f.HotelID = unescape(raw, e)
		case "search_timestamp":
			if s.kindAt() != '0' {
				s.skipValue() // not a number: the event has no usable time
				return
			}
			f.EventTime, f.Timed = EventSeconds(s.number())
		case "advertiser_min_prices":
			s.object(func(adv []byte, esc bool) {
				n := s.number()
				price, err := strconv.ParseInt(string(n), 10, 64)
				switch {
				case s.err != nil:
				case err != nil:
					s.fail("advertiser price %q is not an integer", n)
				case price < 1 || price > MaxExactEurocents:
					s.fail("advertiser price %d is outside 1..2^53", price)
				}
				f.Prices = append(f.Prices, AdvertiserPrice{Advertiser: unescape(adv, esc), Price: price})
			})
		default:
			s.skipValue()
		}
	})
	if s.err != nil {
		return fmt.Errorf("processed event: %w", s.err)
	}
	if (needUser && f.UserID == "") || f.HotelID == "" {
		if !needUser {
			return fmt.Errorf("hotel record: hotel_id missing")
		}
		return fmt.Errorf("processed event: user_id or hotel_id missing")
	}
	return nil
}
