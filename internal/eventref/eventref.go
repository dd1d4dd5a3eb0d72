// Package eventref is an independent oracle of the event model for tests: the first,
// encoding/json-based implementation of the transform, slow and plain. The event package's
// hand-written decoder is compared with it (differential and fuzz tests), and tests fold their
// expected view with it, so that a bug in the decoder cannot hide in the truth it is checked
// against.
package eventref

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/searchflow/searchflow/event"
)

func invalid(r event.Reason, format string, args ...any) *event.ValidationError {
	return &event.ValidationError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Transform validates one raw record under the default limits and derives its processed event,
// or says why it is invalid with an *event.ValidationError.
func Transform(value []byte) (event.Processed, error) {
	lim := event.DefaultLimits()
	var p event.Processed
	if len(value) > event.MaxRawBytes {
		return p, invalid(event.ReasonTooLarge, "record is %d bytes, over the %d byte limit", len(value), event.MaxRawBytes)
	}
	if !utf8.Valid(value) {
		return p, invalid(event.ReasonInvalidUTF8, "record is not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil {
		if !json.Valid(value) {
			return p, invalid(event.ReasonNotJSON, "%v", err)
		}
		return p, invalid(event.ReasonNotObject, "record is JSON but not an object")
	}
	if top == nil {
		return p, invalid(event.ReasonNotObject, "record is JSON null")
	}

	u, ok := top["user_id"]
	if !ok || isNull(u) {
		return p, invalid(event.ReasonMissingUserID, "user_id is missing")
	}
	var err error
	if p.UserID, err = nonBlankString(u); err != nil {
		return p, invalid(event.ReasonInvalidUserID, "user_id %s", err)
	}
	if len(p.UserID) > lim.IDBytes {
		return p, invalid(event.ReasonUserIDTooLong, "user_id too long")
	}

	h, ok := top["hotel_id"]
	if !ok || isNull(h) {
		return p, invalid(event.ReasonMissingHotelID, "hotel_id is missing")
	}
	if p.HotelID, err = hotelID(h); err != nil {
		return p, invalid(event.ReasonInvalidHotelID, "hotel_id %s", err)
	}
	if len(p.HotelID) > lim.IDBytes {
		return p, invalid(event.ReasonHotelIDTooLong, "hotel_id too long")
	}

	ts, ok := top["search_timestamp"]
	if !ok || isNull(ts) {
		return p, invalid(event.ReasonMissingTimestamp, "search_timestamp is missing")
	}
	if p.SearchTimestamp, err = positiveNumber(ts); err != nil {
		return p, invalid(event.ReasonInvalidTimestamp, "search_timestamp %s", err)
	}

	ha, ok := top["hotel_advertisers"]
	if !ok || isNull(ha) {
		return p, invalid(event.ReasonMissingAdvertisers, "hotel_advertisers is missing")
	}
	if verr := advertisers(&p, ha, lim); verr != nil {
		return p, verr
	}
	return p, nil
}

// advertisers judges hotel_advertisers and fills p's advertisers, their lowest prices and the
// cheapest offer.
func advertisers(p *event.Processed, ha json.RawMessage, lim event.Limits) *event.ValidationError {
	var advertisers map[string]json.RawMessage
	if kind(ha) != '{' || json.Unmarshal(ha, &advertisers) != nil {
		return invalid(event.ReasonInvalidAdvertisers, "hotel_advertisers is not an object")
	}
	if len(advertisers) == 0 {
		return invalid(event.ReasonNoAdvertisers, "hotel_advertisers is empty")
	}
	if len(advertisers) > lim.AdvertisersPerEvent {
		return invalid(event.ReasonTooManyAdvertisers, "too many advertisers")
	}
	p.AdvertiserMinPrices = make(map[string]int64, len(advertisers))
	p.Advertisers = make([]string, 0, len(advertisers))
	for name, offersRaw := range advertisers {
		if name == "" {
			return invalid(event.ReasonInvalidAdvertiser, "advertiser name is empty")
		}
		if len(name) > lim.AdvertiserNameBytes {
			return invalid(event.ReasonNameTooLong, "advertiser name too long")
		}
		low, verr := lowestOffer(name, offersRaw, lim.OffersPerAdvertiser)
		if verr != nil {
			return verr
		}
		p.AdvertiserMinPrices[name] = low
		p.Advertisers = append(p.Advertisers, name)
	}
	// JSON objects carry no order that survives decoding; sorted names make the output and the
	// choice between equally cheap advertisers deterministic.
	sort.Strings(p.Advertisers)
	for _, name := range p.Advertisers {
		if price := p.AdvertiserMinPrices[name]; p.MinOffer.Advertiser == "" || price < p.MinOffer.Price {
			p.MinOffer = event.MinOffer{Price: price, Advertiser: name}
		}
	}
	return nil
}

func lowestOffer(name string, raw json.RawMessage, maxOffers int) (int64, *event.ValidationError) {
	var offers []json.RawMessage
	if kind(raw) != '[' || json.Unmarshal(raw, &offers) != nil {
		return 0, invalid(event.ReasonNoOffers, "advertiser %q: offers are not a list", name)
	}
	if len(offers) == 0 {
		return 0, invalid(event.ReasonNoOffers, "advertiser %q has no offers", name)
	}
	var low int64
	for i, o := range offers {
		if i >= maxOffers {
			return 0, invalid(event.ReasonTooManyOffers, "advertiser %q has too many offers", name)
		}
		var offer map[string]json.RawMessage
		if kind(o) != '{' || json.Unmarshal(o, &offer) != nil {
			return 0, invalid(event.ReasonInvalidOffer, "advertiser %q offer %d is not an object", name, i)
		}
		c, ok := offer["eurocents"]
		if !ok || kind(c) != '0' || !refIsIntegerLiteral(c) {
			return 0, invalid(event.ReasonInvalidEurocents, "advertiser %q offer %d: eurocents is not an integer", name, i)
		}
		literal := strings.TrimSpace(string(c))
		cents, err := strconv.ParseInt(literal, 10, 64)
		if err != nil && strings.HasPrefix(literal, "-") {
			return 0, invalid(event.ReasonNonPositiveEurocent, "advertiser %q offer %d: eurocents %s is not positive", name, i, c)
		}
		if err != nil || cents > 1<<53 {
			return 0, invalid(event.ReasonEurocentsRange, "advertiser %q offer %d: eurocents %s out of range", name, i, c)
		}
		if cents <= 0 {
			return 0, invalid(event.ReasonNonPositiveEurocent, "advertiser %q offer %d: eurocents %d is not positive", name, i, cents)
		}
		if i == 0 || cents < low {
			low = cents
		}
	}
	return low, nil
}

// kind returns the first byte that tells a JSON value's type: '"', '{', '[', 't', 'f', 'n', or
// '0' for a number.
func kind(v json.RawMessage) byte {
	s := strings.TrimLeft(string(v), " \t\r\n")
	if s == "" {
		return 0
	}
	switch c := s[0]; c {
	case '"', '{', '[', 't', 'f', 'n':
		return c
	default:
		return '0'
	}
}

func isNull(v json.RawMessage) bool { return kind(v) == 'n' }

func refIsIntegerLiteral(v json.RawMessage) bool {
	s := strings.TrimSpace(string(v))
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func nonBlankString(v json.RawMessage) (string, error) {
	if kind(v) != '"' {
		return "", fmt.Errorf("is not a string")
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("is not a string: %w", err)
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("is empty")
	}
	return s, nil
}

func hotelID(v json.RawMessage) (string, error) {
	switch kind(v) {
	case '"':
		return nonBlankString(v)
	case '0':
		if !refIsIntegerLiteral(v) {
			return "", fmt.Errorf("%s is not an integer", v)
		}
		return strings.TrimSpace(string(v)), nil
	default:
		return "", fmt.Errorf("is neither a string nor an integer")
	}
}

func positiveNumber(v json.RawMessage) (json.Number, error) {
	if kind(v) != '0' {
		return "", fmt.Errorf("is not a number")
	}
	s := strings.TrimSpace(string(v))
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "", fmt.Errorf("%s is not a number", s)
	}
	if f <= 0 {
		return "", fmt.Errorf("%s is not positive", s)
	}
	return json.Number(s), nil
}
