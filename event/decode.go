package event

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendProcessed validates one raw record and appends to dst its processed event's JSON — the
// document encoding/json makes of the event's Processed — without building the event: the
// transformer's hot path. It also returns the event's user and hotel ids, the keys of its records
// in the processed and hotel topics. A
// *ValidationError says why the record is invalid; no other error is returned. Unknown fields are
// ignored; a key that appears twice in an object is an error (JSON leaves its meaning open).
//
// It is a single pass over the bytes, without reflection. Syntax is checked in full before any
// field is judged, so a record that is not JSON is always reported as not_json, and the field
// errors come in a fixed order (user, hotel, timestamp, advertisers in document order), whatever
// the key order.
func AppendProcessed(dst, value []byte) ([]byte, Keys, error) {
	return DefaultLimits().AppendProcessed(dst, value)
}

// Keys are a processed event's record keys: its user id in the processed topic, its hotel id in
// the hotel topic.
type Keys struct {
	User, Hotel string
	// SearchTime is the event's search_timestamp, in Unix seconds.
	SearchTime float64
}

// AppendRecords is AppendProcessed that also writes the event's compact hotel document (see
// ParseHotel), after the processed one in the same buffer: processed and byHotel share dst's
// array, processed capped so that appending to it cannot overwrite byHotel.
func (l Limits) AppendRecords(dst, value []byte) (processed, byHotel []byte, keys Keys, err error) {
	return l.NewDecoder().AppendRecords(dst, value)
}

// Decoder is Limits.AppendRecords for a stream of events: it reuses its memory from one call to
// the next. It is not safe for concurrent use.
type Decoder struct {
	lim Limits
	d   decoder
}

// NewDecoder returns a decoder of events under the limits l.
func (l Limits) NewDecoder() *Decoder { return &Decoder{lim: l} }

// AppendRecords is Limits.AppendRecords.
func (x *Decoder) AppendRecords(dst, value []byte) (processed, byHotel []byte, keys Keys, err error) {
	d := &x.d
	if err := decodeInto(d, value, x.lim); err != nil {
		return nil, nil, Keys{}, err
	}
	v, err := d.judge()
	if err != nil {
		return nil, nil, Keys{}, err
	}
	start := len(dst)
	dst = v.appendJSON(dst)
	mid := len(dst)
	dst = v.appendHotelJSON(dst)
	return dst[start:mid:mid], dst[mid:], Keys{User: v.user, Hotel: v.hotel, SearchTime: v.seconds}, nil
}

// AppendProcessed is the package's AppendProcessed under the limits l.
func (l Limits) AppendProcessed(dst, value []byte) ([]byte, Keys, error) {
	d, err := decode(value, l)
	if err != nil {
		return dst, Keys{}, err
	}
	v, err := d.judge()
	if err != nil {
		return dst, Keys{}, err
	}
	return v.appendJSON(dst), Keys{User: v.user, Hotel: v.hotel, SearchTime: v.seconds}, nil
}

// decode runs the single pass over value: size, encoding and syntax errors come back here,
// field errors from judge.
func decode(value []byte, lim Limits) (*decoder, error) {
	d := &decoder{}
	if err := decodeInto(d, value, lim); err != nil {
		return nil, err
	}
	return d, nil
}

// decodeInto is decode into d, which it resets first (keeping the memory of its advertisers).
func decodeInto(d *decoder, value []byte, lim Limits) error {
	*d = decoder{s: scanner{b: value}, lim: lim, advertisers: d.advertisers[:0]}
	if len(value) > MaxRawBytes {
		return invalid(ReasonTooLarge, "record is %d bytes, over the %d byte limit", len(value), MaxRawBytes)
	}
	if !utf8.Valid(value) {
		return invalid(ReasonInvalidUTF8, "record is not valid UTF-8")
	}
	d.s.ws()
	if d.s.peek() != '{' {
		if json.Valid(value) {
			return invalid(ReasonNotObject, "record is JSON but not an object")
		}
		return invalid(ReasonNotJSON, "record is not JSON")
	}
	d.top()
	if d.s.err == nil {
		d.s.ws()
		if d.s.i != len(d.s.b) {
			d.s.fail("trailing data at byte %d", d.s.i)
		}
	}
	if d.s.err != nil {
		if d.s.tooDeep {
			return invalid(ReasonTooDeep, "nesting deeper than %d", MaxDepth)
		}
		return invalid(ReasonNotJSON, "%s", d.s.err.Error())
	}
	return nil
}

// field is what the decoder saw of one known top-level key.
type field struct {
	seen bool
	kind byte   // as the scanner's kindAt: '"', '{', '[', 't', 'f', 'n', '0'
	raw  []byte // the value's bytes (strings: without quotes, still escaped)
	esc  bool   // raw string holds escapes
}

type advertiser struct {
	name string
	low  int64
}

type decoder struct {
	s                 scanner
	lim               Limits
	user, hotel, ts   field
	advs              field
	advertisers       []advertiser
	advErr            *ValidationError // first advertiser-level error in document order
	dupErr            *ValidationError
	advertisersParsed bool
}

func (d *decoder) dup(where string, key []byte) {
	if d.dupErr == nil {
		d.dupErr = invalid(ReasonDuplicateKey, "key %q appears twice in %s", key, where)
	}
}

func (d *decoder) top() {
	s := &d.s
	var seen keySet
	s.object(func(key []byte, esc bool) {
		k := unescapeKey(key, esc)
		if seen.add(k) {
			d.dup("the record", k)
		}
		var f *field
		switch string(k) {
		case "user_id":
			f = &d.user
		case "hotel_id":
			f = &d.hotel
		case "search_timestamp":
			f = &d.ts
		case "hotel_advertisers":
			f = &d.advs
		default:
			s.skipValue()
			return
		}
		f.seen = true
		f.kind = s.kindAt()
		switch f.kind {
		case '"':
			f.raw, f.esc = s.str()
		case '0':
			f.raw = s.number()
		case '{':
			if f == &d.advs {
				d.advertisersParsed = true
				d.advertisers = d.advertisers[:0]
				d.advErr = nil
				d.parseAdvertisers()
				return
			}
			s.skipValue()
		default:
			s.skipValue()
		}
	})
}

func (d *decoder) parseAdvertisers() {
	s := &d.s
	var seen keySet
	s.object(func(key []byte, esc bool) {
		name := unescapeKey(key, esc)
		if seen.add(name) {
			d.dup("hotel_advertisers", name)
		}
		if d.advErr != nil {
			s.skipValue()
			return
		}
		if len(name) == 0 {
			d.advErr = invalid(ReasonInvalidAdvertiser, "advertiser name is empty")
			s.skipValue()
			return
		}
		if over(seen.keys(), d.lim.AdvertisersPerEvent) {
			d.advErr = invalid(ReasonTooManyAdvertisers, "more than %d advertisers", d.lim.AdvertisersPerEvent)
			s.skipValue()
			return
		}
		if over(len(name), d.lim.AdvertiserNameBytes) {
			d.advErr = invalid(ReasonNameTooLong, "advertiser name of %d bytes, over the %d byte limit", len(name), d.lim.AdvertiserNameBytes)
			s.skipValue()
			return
		}
		if s.kindAt() != '[' {
			d.advErr = invalid(ReasonNoOffers, "advertiser %q: offers are not a list", name)
			s.skipValue()
			return
		}
		low, n := int64(0), 0
		s.array(func() {
			i := n
			n++
			if d.advErr != nil {
				s.skipValue()
				return
			}
			if over(n, d.lim.OffersPerAdvertiser) {
				d.advErr = invalid(ReasonTooManyOffers, "advertiser %q has more than %d offers", name, d.lim.OffersPerAdvertiser)
				s.skipValue()
				return
			}
			v, ok := d.parseOffer(name, i)
			if !ok {
				return
			}
			if i == 0 || v < low {
				low = v
			}
		})
		if s.err != nil || d.advErr != nil {
			return
		}
		if n == 0 {
			d.advErr = invalid(ReasonNoOffers, "advertiser %q has no offers", name)
			return
		}
		d.advertisers = append(d.advertisers, advertiser{name: string(name), low: low})
	})
}

// parseOffer reads offer i of advertiser name at the scanner's position and returns its price;
// false (with d.advErr or the scanner's error set) when it is not a valid offer.
func (d *decoder) parseOffer(name []byte, i int) (int64, bool) {
	s := &d.s
	if s.kindAt() != '{' {
		d.advErr = invalid(ReasonInvalidOffer, "advertiser %q offer %d is not an object", name, i)
		s.skipValue()
		return 0, false
	}
	if v, ok := s.compactOffer(); ok {
		return v, true
	}
	var cents []byte
	centsKind := byte(0)
	var offerKeys keySet
	s.object(func(key []byte, esc bool) {
		k := unescapeKey(key, esc)
		if offerKeys.add(k) {
			d.dup("an offer", k)
		}
		if string(k) != "eurocents" {
			s.skipValue()
			return
		}
		centsKind = s.kindAt()
		if centsKind == '0' {
			cents = s.number()
		} else {
			s.skipValue()
		}
	})
	if s.err != nil || d.advErr != nil {
		return 0, false
	}
	if centsKind != '0' || !isIntegerLiteral(cents) {
		d.advErr = invalid(ReasonInvalidEurocents, "advertiser %q offer %d: eurocents is not an integer", name, i)
		return 0, false
	}
	v, verr := checkEurocents(name, i, cents)
	if verr != nil {
		d.advErr = verr
		return 0, false
	}
	return v, true
}

// verdict is a valid record's facts, before they become a Processed or its JSON.
type verdict struct {
	user, hotel string
	ts          []byte
	seconds     float64      // ts, read
	advertisers []advertiser // sorted by name
	min         advertiser
}

// judge checks the fields in a fixed order and returns the record's facts.
func (d *decoder) judge() (verdict, error) {
	var v verdict
	if d.dupErr != nil {
		return v, d.dupErr
	}
	if !d.user.seen || d.user.kind == 'n' {
		return v, invalid(ReasonMissingUserID, "user_id is missing")
	}
	if d.user.kind != '"' {
		return v, invalid(ReasonInvalidUserID, "user_id is not a string")
	}
	v.user = unescape(d.user.raw, d.user.esc)
	if strings.TrimSpace(v.user) == "" {
		return v, invalid(ReasonInvalidUserID, "user_id is empty")
	}
	if over(len(v.user), d.lim.IDBytes) {
		return v, invalid(ReasonUserIDTooLong, "user_id of %d bytes, over the %d byte limit", len(v.user), d.lim.IDBytes)
	}

	switch {
	case !d.hotel.seen || d.hotel.kind == 'n':
		return v, invalid(ReasonMissingHotelID, "hotel_id is missing")
	case d.hotel.kind == '"':
		v.hotel = unescape(d.hotel.raw, d.hotel.esc)
		if strings.TrimSpace(v.hotel) == "" {
			return v, invalid(ReasonInvalidHotelID, "hotel_id is empty")
		}
	case d.hotel.kind == '0':
		if !isIntegerLiteral(d.hotel.raw) {
			return v, invalid(ReasonInvalidHotelID, "hotel_id %s is not an integer", d.hotel.raw)
		}
		v.hotel = string(d.hotel.raw)
	default:
		return v, invalid(ReasonInvalidHotelID, "hotel_id is neither a string nor an integer")
	}
	if over(len(v.hotel), d.lim.IDBytes) {
		return v, invalid(ReasonHotelIDTooLong, "hotel_id of %d bytes, over the %d byte limit", len(v.hotel), d.lim.IDBytes)
	}

	if !d.ts.seen || d.ts.kind == 'n' {
		return v, invalid(ReasonMissingTimestamp, "search_timestamp is missing")
	}
	if d.ts.kind != '0' {
		return v, invalid(ReasonInvalidTimestamp, "search_timestamp is not a number")
	}
	f, err := strconv.ParseFloat(string(d.ts.raw), 64)
	if err != nil {
		return v, invalid(ReasonInvalidTimestamp, "search_timestamp %s is not a number", d.ts.raw)
	}
	if f <= 0 {
		return v, invalid(ReasonInvalidTimestamp, "search_timestamp %s is not positive", d.ts.raw)
	}
	v.ts, v.seconds = d.ts.raw, f

	if !d.advs.seen || d.advs.kind == 'n' {
		return v, invalid(ReasonMissingAdvertisers, "hotel_advertisers is missing")
	}
	if d.advs.kind != '{' || !d.advertisersParsed {
		return v, invalid(ReasonInvalidAdvertisers, "hotel_advertisers is not an object")
	}
	if d.advErr != nil {
		return v, d.advErr
	}
	if len(d.advertisers) == 0 {
		return v, invalid(ReasonNoAdvertisers, "hotel_advertisers is empty")
	}
	// JSON objects carry no order that survives decoding; sorted names make the output and the
	// choice between equally cheap advertisers deterministic.
	slices.SortFunc(d.advertisers, func(a, b advertiser) int { return strings.Compare(a.name, b.name) })
	v.advertisers = d.advertisers
	for i, a := range d.advertisers {
		if i == 0 || a.low < v.min.low {
			v.min = a
		}
	}
	return v, nil
}

// compactOffer reads, at the scanner's '{', an offer in the form the original data and the
// generator write — {"eurocents":<n>} with, at most, a "breakfast" of true, false or null after
// it, no spaces — whose price is a positive integer of up to 15 digits (below 2^53, so exact).
// It reports false, reading nothing, for any other offer: the general parse judges those.
func (s *scanner) compactOffer() (int64, bool) {
	const head = `{"eurocents":`
	b := s.b[s.i:]
	if len(b) <= len(head) || string(b[:len(head)]) != head || b[len(head)] < '1' || b[len(head)] > '9' {
		return 0, false
	}
	j, v := len(head), int64(0)
	for ; j < len(b) && isDigit(b[j]); j++ {
		if j-len(head) == 15 {
			return 0, false
		}
		v = v*10 + int64(b[j]-'0')
	}
	rest := string(b[j:min(len(b), j+len(`,"breakfast":false}`))])
	for _, tail := range [...]string{`}`, `,"breakfast":true}`, `,"breakfast":false}`, `,"breakfast":null}`} {
		if strings.HasPrefix(rest, tail) {
			s.i += j + len(tail)
			return v, true
		}
	}
	return 0, false
}

// checkEurocents judges an integer literal as a price — positive, and exact as a Redis score —
// and returns it.
func checkEurocents(name []byte, i int, cents []byte) (int64, *ValidationError) {
	v, err := strconv.ParseInt(string(cents), 10, 64)
	switch {
	case err != nil && len(cents) > 0 && cents[0] == '-':
		return 0, invalid(ReasonNonPositiveEurocent, "advertiser %q offer %d: eurocents %s is not positive", name, i, cents)
	case err != nil || v > MaxExactEurocents:
		return 0, invalid(ReasonEurocentsRange, "advertiser %q offer %d: eurocents %s is above %d, the largest price kept exactly", name, i, cents, int64(MaxExactEurocents))
	case v <= 0:
		return 0, invalid(ReasonNonPositiveEurocent, "advertiser %q offer %d: eurocents %d is not positive", name, i, v)
	}
	return v, nil
}

func isIntegerLiteral(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// keySet remembers the keys of one object to find duplicates: a fixed array for the few keys
// real objects have (no allocation), a map beyond that.
type keySet struct {
	few  [8][]byte
	n    int
	many map[string]struct{}
}

// keys returns how many distinct keys were added.
func (ks *keySet) keys() int {
	if ks.many != nil {
		return len(ks.many)
	}
	return ks.n
}

// add records k and reports whether it was already there.
func (ks *keySet) add(k []byte) bool {
	if ks.many != nil {
		if _, ok := ks.many[string(k)]; ok {
			return true
		}
		ks.many[string(k)] = struct{}{}
		return false
	}
	for _, f := range ks.few[:ks.n] {
		if bytes.Equal(f, k) {
			return true
		}
	}
	if ks.n < len(ks.few) {
		ks.few[ks.n] = k
		ks.n++
		return false
	}
	ks.many = make(map[string]struct{}, 2*len(ks.few))
	for _, f := range ks.few {
		ks.many[string(f)] = struct{}{}
	}
	ks.many[string(k)] = struct{}{}
	return false
}

func unescapeKey(raw []byte, esc bool) []byte {
	if !esc {
		return raw
	}
	return []byte(unescape(raw, true))
}

// unescape decodes the body of a JSON string as encoding/json does (lone surrogates become
// U+FFFD).
func unescape(raw []byte, esc bool) string {
	if !esc {
		return string(raw)
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(raw[i+1 : i+5]))
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 < len(raw)+0 && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2 = rune(hex4(raw[i+3 : i+7]))
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		}
	}
	return string(out)
}

func hex4(b []byte) int {
	n := 0
	for _, c := range b {
		n <<= 4
		switch {
		case c >= '0' && c <= '9':
			n |= int(c - '0')
		case c >= 'a' && c <= 'f':
			n |= int(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			n |= int(c - 'A' + 10)
		}
	}
	return n
}
