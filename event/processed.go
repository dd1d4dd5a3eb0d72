package event

import (
	"fmt"
	"strconv"

	"github.com/searchflow/searchflow/internal/jsonw"
)

// AppendJSON appends the processed event's JSON to dst: the same document encoding/json makes
// of Processed (advertiser_min_prices with sorted keys), written without reflection because the
// transformer does it for every event.
func (p *Processed) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"user_id":`...)
	dst = jsonw.AppendString(dst, p.UserID)
	dst = append(dst, `,"hotel_id":`...)
	dst = jsonw.AppendString(dst, p.HotelID)
	dst = append(dst, `,"search_timestamp":`...)
	dst = append(dst, p.SearchTimestamp...)
	dst = append(dst, `,"advertisers":[`...)
	for i, a := range p.Advertisers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, a)
	}
	dst = append(dst, `],"min_offer":{"price":`...)
	dst = strconv.AppendInt(dst, p.MinOffer.Price, 10)
	dst = append(dst, `,"advertiser":`...)
	dst = jsonw.AppendString(dst, p.MinOffer.Advertiser)
	dst = append(dst, `},"advertiser_min_prices":{`...)
	// Advertisers is sorted and holds exactly the keys of AdvertiserMinPrices.
	for i, a := range p.Advertisers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonw.AppendString(dst, a)
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, p.AdvertiserMinPrices[a], 10)
	}
	return append(dst, "}}"...)
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
}

// ParseProcessed reads the facts the aggregator counts from a processed event: user_id,
// hotel_id and advertiser_min_prices; other fields are checked for syntax and skipped.
func ParseProcessed(value []byte, f *ProcessedFacts) error {
	s := scanner{b: value}
	f.UserID, f.HotelID, f.Prices = "", "", f.Prices[:0]
	s.object(func(key []byte, esc bool) {
		switch string(unescapeKey(key, esc)) {
		case "user_id":
			raw, e := s.str()
			f.UserID = unescape(raw, e)
		case "hotel_id":
			raw, e := s.str()
			f.HotelID = unescape(raw, e)
		case "advertiser_min_prices":
			s.object(func(adv []byte, esc bool) {
				n := s.number()
				price, err := strconv.ParseInt(string(n), 10, 64)
				if err != nil && s.err == nil {
					s.fail("advertiser price %q is not an integer", n)
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
	if f.UserID == "" || f.HotelID == "" {
		return fmt.Errorf("processed event: user_id or hotel_id missing")
	}
	return nil
}
