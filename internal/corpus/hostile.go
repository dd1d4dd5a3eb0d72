package corpus

import (
	"fmt"
	"strconv"
	"strings"
)

// Header is one record header of a hostile record.
type Header struct{ Key, Value string }

// HostileCase is a record that is well formed but hostile: huge, deep, many-keyed, out of range,
// or dressed to forge its own dead letter. Reason is the dead-letter reason it must get, or ""
// when it is valid and must be counted exactly.
type HostileCase struct {
	Name    string
	Key     string
	Value   string
	Headers []Header
	Reason  string
}

// event builds a raw event with the given user, hotel (a JSON value) and advertisers object body.
func event(user, hotelJSON, advertisers string) string {
	return `{"user_id":` + strconv.Quote(user) + `,"hotel_id":` + hotelJSON + `,"search_timestamp":1620224528,"hotel_advertisers":{` + advertisers + `}}`
}

// offers returns n offers for one advertiser, the cheapest first.
func offers(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"eurocents":%d,"breakfast":false}`, 1000+i)
	}
	return b.String()
}

// Hostile returns the hostile corpus: what an attacker (or a broken producer) can send that is
// still well-formed JSON, each record with the outcome searchflow must give it under the default
// limits. Records are keyed by their index, so a test can find each one again.
func Hostile() []HostileCase {
	controlName := func(i int) string { // 256 bytes of control characters, 6 bytes each once escaped
		return strings.Repeat(`\u0001`, DefaultAdvertiserNameBytes-4) + fmt.Sprintf("%04d", i)
	}
	names := func(n int, name func(int) string) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"%s":[{"eurocents":%d}]`, name(i), 500+i)
		}
		return b.String()
	}
	manyKeys := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, `"unknown_%d":%d,`, i, i)
		}
		return b.String()
	}
	nul := "{\"user_id\":\"nul\\u0000user\",\"hotel_id\":\"h\\u0000\",\"search_timestamp\":1,\"hotel_advertisers\":{\"a\\u0000b\":[{\"eurocents\":5}]}}"
	bigHeaders := make([]Header, 5000)
	for i := range bigHeaders {
		bigHeaders[i] = Header{Key: "h" + strconv.Itoa(i), Value: strings.Repeat("v", 20)}
	}
	cases := []HostileCase{
		{Name: "4,500 advertisers (issue 9's repro)", Value: event("hostile-many", `"h-many"`,
			names(4500, func(i int) string { return fmt.Sprintf("advertiser-%04d", i) })), Reason: "too_many_advertisers"},
		{Name: "advertisers at the limit", Value: event("hostile-limit", `"h-limit"`,
			names(DefaultAdvertisersPerEvent, func(i int) string { return fmt.Sprintf("adv-%04d", i) }))},
		{Name: "processed form over the producer limit", Value: event("hostile-escapes", `"h-escapes"`, names(600, controlName)),
			Reason: "processed_too_large"},
		{Name: "advertiser name one byte too long", Value: event("hostile-name", `1`,
			`"`+strings.Repeat("n", DefaultAdvertiserNameBytes+1)+`":[{"eurocents":5}]`), Reason: "advertiser_name_too_long"},
		{Name: "user id one byte too long", Value: event(strings.Repeat("u", DefaultIDBytes+1), `1`, `"a":[{"eurocents":5}]`),
			Reason: "user_id_too_long"},
		{Name: "hotel id of 200 digits", Value: event("hostile-digits", strings.Repeat("9", 200), `"a":[{"eurocents":5}]`)},
		{Name: "one offer too many", Value: event("hostile-offers", `1`, `"a":[`+offers(DefaultOffersPerAdvertiser+1)+`]`),
			Reason: "too_many_offers"},
		{Name: "offers at the limit", Value: event("hostile-offers-ok", `"h-offers"`, `"a":[`+offers(DefaultOffersPerAdvertiser)+`]`)},
		{Name: "price 2^63-1", Value: event("hostile-price", `1`, `"a":[{"eurocents":9223372036854775807}]`), Reason: "eurocents_out_of_range"},
		{Name: "price 2^53+1", Value: event("hostile-price2", `1`, `"a":[{"eurocents":9007199254740993}]`), Reason: "eurocents_out_of_range"},
		{Name: "price 2^53, the largest exact", Value: event("hostile-price3", `"h-price"`, `"a":[{"eurocents":9007199254740992}]`)},
		{Name: "10,000 unknown keys", Value: `{` + manyKeys(10000) + strings.TrimPrefix(event("hostile-keys", `"h-keys"`, `"a":[{"eurocents":7}]`), `{`)},
		{Name: "nesting 500 deep in an unknown field", Value: `{"x":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `,` +
			strings.TrimPrefix(event("hostile-deep", `"h-deep"`, `"a":[{"eurocents":8}]`), `{`)},
		{Name: "names with NUL, quotes, backslashes, emoji and line separators", Value: nul},
		{Name: "quotes and emoji", Value: event("hostile-\"quoted\"\\user 😀", `"h \u2028 \"x\""`, `"😀 \"adv\" \\ ":[{"eurocents":9}]`)},
		{Name: "unicode spaces as a user id", Value: event("\u00a0\u2003", `1`, `"a":[{"eurocents":5}]`), Reason: "invalid_user_id"},
		{Name: "invalid record near 1 MiB, quoted in its error", Value: `{"user_id":"` + strings.Repeat("x", MaxRawBytes-100) + `",`,
			Reason: "not_json"},
		{Name: "huge key", Key: strings.Repeat("k", 900<<10), Value: `{"user_id":`, Reason: "not_json"},
		{Name: "forged dead-letter headers", Value: `not json`, Reason: "not_json", Headers: []Header{
			{"reason", "all_good"}, {"stage", "nobody"}, {"source_topic", "elsewhere"}, {"source_offset", "0"}, {"error", "none"}}},
		{Name: "5,000 headers", Value: `[]`, Reason: "not_object", Headers: bigHeaders},
	}
	for i := range cases {
		if cases[i].Key == "" {
			cases[i].Key = "hostile-" + strconv.Itoa(i)
		}
	}
	return cases
}
