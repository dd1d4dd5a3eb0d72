// Package corpus holds raw records for tests: every kind of malformed record the transformer
// must dead-letter, with the reason it must give, and valid records that exercise the decoder.
// The event package's tests, its fuzz test (as seeds) and the transformer's tests share it.
package corpus

import (
	"fmt"
	"strings"
)

// Limits of the event package, repeated here so that this package imports nothing of ours
// (the event package's own tests use it); TestCorpusLimits in package event keeps them equal.
const (
	MaxRawBytes                = 1 << 20
	MaxDepth                   = 512
	DefaultAdvertisersPerEvent = 1000
	DefaultOffersPerAdvertiser = 1000
	DefaultAdvertiserNameBytes = 256
	DefaultIDBytes             = 256
)

// advertisers returns n distinct advertisers with one offer each, as the members of a JSON object.
func advertisers(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"adv%d":[{"eurocents":%d}]`, i, 100+i)
	}
	return b.String()
}

// Case is one malformed raw record and the dead-letter reason it must get.
type Case struct {
	Name, Raw string
	Reason    string // as event.Reason spells it
}

// Malformed returns every kind of bad raw record the transformer must dead-letter, with its
// reason: syntax, encoding, size, depth, duplicate keys, and wrong types, nulls, empties and
// out-of-range values for every field.
func Malformed() []Case {
	return append(malformedSyntaxAndShape(), malformedValues()...)
}

// malformedSyntaxAndShape: syntax, encoding, size, depth and the shape of the record.
func malformedSyntaxAndShape() []Case {
	ok := `"user_id":"u","hotel_id":1,"search_timestamp":1`
	adv := `"hotel_advertisers":{"a":[{"eurocents":1}]}`
	return []Case{
		{"too large", `{"user_id":"` + strings.Repeat("x", MaxRawBytes) + `"}`, "too_large"},
		{"invalid utf8", "{\"user_id\":\"\xff\"," + adv + "}", "invalid_utf8"},
		{"not json", `{"user_id":`, "not_json"},
		{"empty", ``, "not_json"},
		{"array", `[1,2]`, "not_object"},
		{"null", `null`, "not_object"},
		{"string", `"hello"`, "not_object"},
		{"missing user", `{"hotel_id":1,"search_timestamp":1,` + adv + `}`, "missing_user_id"},
		{"null user", `{"user_id":null,"hotel_id":1,"search_timestamp":1,` + adv + `}`, "missing_user_id"},
		{"empty user", `{"user_id":"","hotel_id":1,"search_timestamp":1,` + adv + `}`, "invalid_user_id"},
		{"blank user", `{"user_id":"  ","hotel_id":1,"search_timestamp":1,` + adv + `}`, "invalid_user_id"},
		{"numeric user", `{"user_id":5,"hotel_id":1,"search_timestamp":1,` + adv + `}`, "invalid_user_id"},
		{"missing hotel", `{"user_id":"u","search_timestamp":1,` + adv + `}`, "missing_hotel_id"},
		{"empty hotel", `{"user_id":"u","hotel_id":"","search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"fractional hotel", `{"user_id":"u","hotel_id":1.5,"search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"bool hotel", `{"user_id":"u","hotel_id":true,"search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"object hotel", `{"user_id":"u","hotel_id":{},"search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"missing ts", `{"user_id":"u","hotel_id":1,` + adv + `}`, "missing_search_timestamp"},
		{"string ts", `{"user_id":"u","hotel_id":1,"search_timestamp":"1620224528",` + adv + `}`, "invalid_search_timestamp"},
		{"zero ts", `{"user_id":"u","hotel_id":1,"search_timestamp":0,` + adv + `}`, "invalid_search_timestamp"},
		{"negative ts", `{"user_id":"u","hotel_id":1,"search_timestamp":-5,` + adv + `}`, "invalid_search_timestamp"},
		{"bool ts", `{"user_id":"u","hotel_id":1,"search_timestamp":true,` + adv + `}`, "invalid_search_timestamp"},
		{"missing advertisers", `{` + ok + `}`, "missing_hotel_advertisers"},
		{"advertisers array", `{` + ok + `,"hotel_advertisers":[]}`, "invalid_hotel_advertisers"},
		{"advertisers string", `{` + ok + `,"hotel_advertisers":"a"}`, "invalid_hotel_advertisers"},
		{"no advertisers", `{` + ok + `,"hotel_advertisers":{}}`, "no_advertisers"},
		{"empty advertiser name", `{` + ok + `,"hotel_advertisers":{"":[{"eurocents":1}]}}`, "invalid_advertiser"},
		{"advertiser without offers", `{` + ok + `,"hotel_advertisers":{"a":[]}}`, "no_offers"},
		{"offers not a list", `{` + ok + `,"hotel_advertisers":{"a":{"eurocents":1}}}`, "no_offers"},
		{"offers null", `{` + ok + `,"hotel_advertisers":{"a":null}}`, "no_offers"},
		{"offer not an object", `{` + ok + `,"hotel_advertisers":{"a":[5]}}`, "invalid_offer"},
		{"offer without price", `{` + ok + `,"hotel_advertisers":{"a":[{"breakfast":true}]}}`, "invalid_eurocents"},
		{"string price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":"100"}]}}`, "invalid_eurocents"},
		{"fractional price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":10.5}]}}`, "invalid_eurocents"},
		{"exponent price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1e3}]}}`, "invalid_eurocents"},
		{"huge price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":99999999999999999999}]}}`, "eurocents_out_of_range"},
		{"price int64 max", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":9223372036854775807}]}}`, "eurocents_out_of_range"},
		{"price 2^53+1", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":9007199254740993}]}}`, "eurocents_out_of_range"},
		{"huge negative price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":-99999999999999999999}]}}`, "non_positive_eurocents"},
		{"user id too long", `{"user_id":"` + strings.Repeat("u", DefaultIDBytes+1) + `","hotel_id":1,"search_timestamp":1,` + adv + `}`, "user_id_too_long"},
	}
}

// malformedValues: wrong types, nulls, empties, out-of-range values and duplicate keys.
func malformedValues() []Case {
	ok := `"user_id":"u","hotel_id":1,"search_timestamp":1`
	adv := `"hotel_advertisers":{"a":[{"eurocents":1}]}`
	return []Case{
		{"user id too long once unescaped", `{"user_id":"` + strings.Repeat(`\u00e9`, DefaultIDBytes/2+1) + `","hotel_id":1,"search_timestamp":1,` + adv + `}`, "user_id_too_long"},
		{"hotel id too long", `{"user_id":"u","hotel_id":"` + strings.Repeat("h", DefaultIDBytes+1) + `","search_timestamp":1,` + adv + `}`, "hotel_id_too_long"},
		{"numeric hotel id too long", `{"user_id":"u","hotel_id":` + strings.Repeat("7", DefaultIDBytes+1) + `,"search_timestamp":1,` + adv + `}`, "hotel_id_too_long"},
		{"too many advertisers", `{` + ok + `,"hotel_advertisers":{` + advertisers(DefaultAdvertisersPerEvent+1) + `}}`, "too_many_advertisers"},
		{"too many offers", `{` + ok + `,"hotel_advertisers":{"a":[` + strings.TrimSuffix(strings.Repeat(`{"eurocents":5},`, DefaultOffersPerAdvertiser+1), ",") + `]}}`, "too_many_offers"},
		{"advertiser name too long", `{` + ok + `,"hotel_advertisers":{"` + strings.Repeat("n", DefaultAdvertiserNameBytes+1) + `":[{"eurocents":1}]}}`, "advertiser_name_too_long"},
		{"zero price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":0}]}}`, "non_positive_eurocents"},
		{"negative price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":-100}]}}`, "non_positive_eurocents"},
		{"one bad offer among good", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":5},{"eurocents":0}],"b":[{"eurocents":2}]}}`, "non_positive_eurocents"},
		{"deeply nested", `{` + ok + `,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `,` + adv + `}`, "too_deep"},
		{"nested just too deep", `{` + ok + `,"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `,` + adv + `}`, "too_deep"},
		{"truncated", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}`, "not_json"},
		{"trailing data", `{` + ok + `,` + adv + `} {}`, "not_json"},
		{"single quotes", `{'user_id':'u'}`, "not_json"},
		{"trailing comma", `{` + ok + `,` + adv + `,}`, "not_json"},
		{"bad escape", `{"user_id":"\x41","hotel_id":1,"search_timestamp":1,` + adv + `}`, "not_json"},
		{"raw control char", "{\"user_id\":\"a\tb\",\"hotel_id\":1,\"search_timestamp\":1," + adv + "}", "not_json"},
		{"leading zero", `{"user_id":"u","hotel_id":01,"search_timestamp":1,` + adv + `}`, "not_json"},
		{"NaN", `{"user_id":"u","hotel_id":1,"search_timestamp":NaN,` + adv + `}`, "not_json"},
		{"syntax error after a field error", `{"user_id":5,"hotel_id":1,"search_timestamp":1,` + adv + `,}`, "not_json"},
		{"duplicate user", `{"user_id":"u","user_id":"v","hotel_id":1,"search_timestamp":1,` + adv + `}`, "duplicate_key"},
		{"duplicate among many keys", `{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k3":0,` + ok + `,` + adv + `}`, "duplicate_key"},
		{"duplicate unknown key", `{"x":1,"x":2,` + ok + `,` + adv + `}`, "duplicate_key"},
		{"duplicate advertiser", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}],"a":[{"eurocents":2}]}}`, "duplicate_key"},
		{"duplicate advertiser via escape", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}],"\u0061":[{"eurocents":2}]}}`, "duplicate_key"},
		{"duplicate eurocents", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1,"eurocents":0}]}}`, "duplicate_key"},
		{"advertisers null", `{` + ok + `,"hotel_advertisers":null}`, "missing_hotel_advertisers"},
		{"advertisers number", `{` + ok + `,"hotel_advertisers":5}`, "invalid_hotel_advertisers"},
		{"offer null", `{` + ok + `,"hotel_advertisers":{"a":[null]}}`, "invalid_offer"},
		{"price null", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":null}]}}`, "invalid_eurocents"},
		{"price bool", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":true}]}}`, "invalid_eurocents"},
		{"price array", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":[1]}]}}`, "invalid_eurocents"},
		{"price minus zero", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":-0}]}}`, "non_positive_eurocents"},
		{"ts huge", `{"user_id":"u","hotel_id":1,"search_timestamp":1e999,` + adv + `}`, "invalid_search_timestamp"},
		{"ts null", `{"user_id":"u","hotel_id":1,"search_timestamp":null,` + adv + `}`, "missing_search_timestamp"},
		{"hotel null", `{"user_id":"u","hotel_id":null,"search_timestamp":1,` + adv + `}`, "missing_hotel_id"},
		{"hotel blank", `{"user_id":"u","hotel_id":" ","search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"hotel array", `{"user_id":"u","hotel_id":[1],"search_timestamp":1,` + adv + `}`, "invalid_hotel_id"},
		{"user object", `{"user_id":{"id":"u"},"hotel_id":1,"search_timestamp":1,` + adv + `}`, "invalid_user_id"},
		{"user escaped blank", `{"user_id":"\u0020","hotel_id":1,"search_timestamp":1,` + adv + `}`, "invalid_user_id"},
	}
}

// Valid returns accepted raw records that exercise the decoder's paths.
func Valid() []string {
	return []string{
		`{"user_id":"u1","hotel_id":6036,"search_timestamp":1620224528,"hotel_advertisers":{"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":null}],"Amoma":[{"eurocents":17558}]}}`,
		`{"user_id":"caf\u00e9 \ud83d\ude00","hotel_id":"h-1","search_timestamp":1.5e9,"hotel_advertisers":{"\u0041":[{"eurocents":1}],"b":[{"eurocents":1}]}}`,
		`{"hotel_advertisers":{"a":[{"x":[1,2,{"y":"z"}],"eurocents":9007199254740992}]},"search_timestamp":0.001,"hotel_id":-3,"user_id":"\ud800"}`,
		`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`,
		" {\"user_id\" : \"u\" , \"hotel_id\" : 1 , \"search_timestamp\" : 7 , \"hotel_advertisers\" : { \"a\" : [ { \"eurocents\" : 9 } ] } } ",
	}
}
