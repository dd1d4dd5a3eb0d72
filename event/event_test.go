package event

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestTransformValid(t *testing.T) {
	raw := `{"user_id":"u1","hotel_id":6036,"search_timestamp":1620224528,"extra":[1,2],
		"hotel_advertisers":{"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":null}],
		"Amoma":[{"eurocents":17558}],"Destinia":[{"eurocents":12621,"breakfast":true}]}}`
	got, err := Transform([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := Processed{
		UserID: "u1", HotelID: "6036", SearchTimestamp: "1620224528",
		Advertisers:         []string{"Amoma", "Destinia", "Mercure"},
		MinOffer:            MinOffer{Price: 12621, Advertiser: "Destinia"}, // tie: first by name
		AdvertiserMinPrices: map[string]int64{"Amoma": 17558, "Destinia": 12621, "Mercure": 12621},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	out, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"user_id":"u1","hotel_id":"6036","search_timestamp":1620224528,"advertisers":["Amoma","Destinia","Mercure"],` +
		`"min_offer":{"price":12621,"advertiser":"Destinia"},"advertiser_min_prices":{"Amoma":17558,"Destinia":12621,"Mercure":12621}}`
	if string(out) != wantJSON {
		t.Errorf("json\n got %s\nwant %s", out, wantJSON)
	}
}

func TestTransformAcceptsEdgeValues(t *testing.T) {
	cases := map[string]string{
		"string hotel id":    `{"user_id":"u","hotel_id":"h-1","search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`,
		"fractional ts":      `{"user_id":"u","hotel_id":1,"search_timestamp":1.5,"hotel_advertisers":{"a":[{"eurocents":1}]}}`,
		"null breakfast":     `{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1,"breakfast":null}]}}`,
		"escaped user id":    `{"user_id":"caf\u00e9 \ud83d\ude00 \"q\"","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`,
		"unknown nested":     `{"meta":{"a":[1,{"b":null}],"c":"\u0041"},"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1,"extra":{"x":[]}}]}}`,
		"whitespace padding": " \n{\"user_id\" : \"u\", \"hotel_id\" : 1 , \"search_timestamp\" : 7, \"hotel_advertisers\" : {\"a\" : [ {\"eurocents\" : 9 } ] } }\n",
	}
	for name, raw := range cases {
		if _, err := Transform([]byte(raw)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type malformed struct {
	name, raw string
	reason    Reason
}

// malformedCorpus is every kind of bad raw record the transformer must dead-letter, with its
// reason. It also seeds FuzzTransform.
func malformedCorpus() []malformed {
	ok := `"user_id":"u","hotel_id":1,"search_timestamp":1`
	adv := `"hotel_advertisers":{"a":[{"eurocents":1}]}`
	return []malformed{
		{"too large", `{"user_id":"` + strings.Repeat("x", MaxRawBytes) + `"}`, ReasonTooLarge},
		{"invalid utf8", "{\"user_id\":\"\xff\"," + adv + "}", ReasonInvalidUTF8},
		{"not json", `{"user_id":`, ReasonNotJSON},
		{"empty", ``, ReasonNotJSON},
		{"array", `[1,2]`, ReasonNotObject},
		{"null", `null`, ReasonNotObject},
		{"string", `"hello"`, ReasonNotObject},
		{"missing user", `{"hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonMissingUserID},
		{"null user", `{"user_id":null,"hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonMissingUserID},
		{"empty user", `{"user_id":"","hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonInvalidUserID},
		{"blank user", `{"user_id":"  ","hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonInvalidUserID},
		{"numeric user", `{"user_id":5,"hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonInvalidUserID},
		{"missing hotel", `{"user_id":"u","search_timestamp":1,` + adv + `}`, ReasonMissingHotelID},
		{"empty hotel", `{"user_id":"u","hotel_id":"","search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"fractional hotel", `{"user_id":"u","hotel_id":1.5,"search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"bool hotel", `{"user_id":"u","hotel_id":true,"search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"object hotel", `{"user_id":"u","hotel_id":{},"search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"missing ts", `{"user_id":"u","hotel_id":1,` + adv + `}`, ReasonMissingTimestamp},
		{"string ts", `{"user_id":"u","hotel_id":1,"search_timestamp":"1620224528",` + adv + `}`, ReasonInvalidTimestamp},
		{"zero ts", `{"user_id":"u","hotel_id":1,"search_timestamp":0,` + adv + `}`, ReasonInvalidTimestamp},
		{"negative ts", `{"user_id":"u","hotel_id":1,"search_timestamp":-5,` + adv + `}`, ReasonInvalidTimestamp},
		{"bool ts", `{"user_id":"u","hotel_id":1,"search_timestamp":true,` + adv + `}`, ReasonInvalidTimestamp},
		{"missing advertisers", `{` + ok + `}`, ReasonMissingAdvertisers},
		{"advertisers array", `{` + ok + `,"hotel_advertisers":[]}`, ReasonInvalidAdvertisers},
		{"advertisers string", `{` + ok + `,"hotel_advertisers":"a"}`, ReasonInvalidAdvertisers},
		{"no advertisers", `{` + ok + `,"hotel_advertisers":{}}`, ReasonNoAdvertisers},
		{"empty advertiser name", `{` + ok + `,"hotel_advertisers":{"":[{"eurocents":1}]}}`, ReasonInvalidAdvertiser},
		{"advertiser without offers", `{` + ok + `,"hotel_advertisers":{"a":[]}}`, ReasonNoOffers},
		{"offers not a list", `{` + ok + `,"hotel_advertisers":{"a":{"eurocents":1}}}`, ReasonNoOffers},
		{"offers null", `{` + ok + `,"hotel_advertisers":{"a":null}}`, ReasonNoOffers},
		{"offer not an object", `{` + ok + `,"hotel_advertisers":{"a":[5]}}`, ReasonInvalidOffer},
		{"offer without price", `{` + ok + `,"hotel_advertisers":{"a":[{"breakfast":true}]}}`, ReasonInvalidEurocents},
		{"string price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":"100"}]}}`, ReasonInvalidEurocents},
		{"fractional price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":10.5}]}}`, ReasonInvalidEurocents},
		{"exponent price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1e3}]}}`, ReasonInvalidEurocents},
		{"huge price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":99999999999999999999}]}}`, ReasonInvalidEurocents},
		{"zero price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":0}]}}`, ReasonNonPositiveEurocent},
		{"negative price", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":-100}]}}`, ReasonNonPositiveEurocent},
		{"one bad offer among good", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":5},{"eurocents":0}],"b":[{"eurocents":2}]}}`, ReasonNonPositiveEurocent},
		{"deeply nested", `{` + ok + `,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `,` + adv + `}`, ReasonTooDeep},
		{"nested just too deep", `{` + ok + `,"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `,` + adv + `}`, ReasonTooDeep},
		{"truncated", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}`, ReasonNotJSON},
		{"trailing data", `{` + ok + `,` + adv + `} {}`, ReasonNotJSON},
		{"single quotes", `{'user_id':'u'}`, ReasonNotJSON},
		{"trailing comma", `{` + ok + `,` + adv + `,}`, ReasonNotJSON},
		{"bad escape", `{"user_id":"\x41","hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonNotJSON},
		{"raw control char", "{\"user_id\":\"a\tb\",\"hotel_id\":1,\"search_timestamp\":1," + adv + "}", ReasonNotJSON},
		{"leading zero", `{"user_id":"u","hotel_id":01,"search_timestamp":1,` + adv + `}`, ReasonNotJSON},
		{"NaN", `{"user_id":"u","hotel_id":1,"search_timestamp":NaN,` + adv + `}`, ReasonNotJSON},
		{"syntax error after a field error", `{"user_id":5,"hotel_id":1,"search_timestamp":1,` + adv + `,}`, ReasonNotJSON},
		{"duplicate user", `{"user_id":"u","user_id":"v","hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonDuplicateKey},
		{"duplicate among many keys", `{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k3":0,` + ok + `,` + adv + `}`, ReasonDuplicateKey},
		{"duplicate unknown key", `{"x":1,"x":2,` + ok + `,` + adv + `}`, ReasonDuplicateKey},
		{"duplicate advertiser", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}],"a":[{"eurocents":2}]}}`, ReasonDuplicateKey},
		{"duplicate advertiser via escape", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1}],"\u0061":[{"eurocents":2}]}}`, ReasonDuplicateKey},
		{"duplicate eurocents", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":1,"eurocents":0}]}}`, ReasonDuplicateKey},
		{"advertisers null", `{` + ok + `,"hotel_advertisers":null}`, ReasonMissingAdvertisers},
		{"advertisers number", `{` + ok + `,"hotel_advertisers":5}`, ReasonInvalidAdvertisers},
		{"offer null", `{` + ok + `,"hotel_advertisers":{"a":[null]}}`, ReasonInvalidOffer},
		{"price null", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":null}]}}`, ReasonInvalidEurocents},
		{"price bool", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":true}]}}`, ReasonInvalidEurocents},
		{"price array", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":[1]}]}}`, ReasonInvalidEurocents},
		{"price minus zero", `{` + ok + `,"hotel_advertisers":{"a":[{"eurocents":-0}]}}`, ReasonNonPositiveEurocent},
		{"ts huge", `{"user_id":"u","hotel_id":1,"search_timestamp":1e999,` + adv + `}`, ReasonInvalidTimestamp},
		{"ts null", `{"user_id":"u","hotel_id":1,"search_timestamp":null,` + adv + `}`, ReasonMissingTimestamp},
		{"hotel null", `{"user_id":"u","hotel_id":null,"search_timestamp":1,` + adv + `}`, ReasonMissingHotelID},
		{"hotel blank", `{"user_id":"u","hotel_id":" ","search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"hotel array", `{"user_id":"u","hotel_id":[1],"search_timestamp":1,` + adv + `}`, ReasonInvalidHotelID},
		{"user object", `{"user_id":{"id":"u"},"hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonInvalidUserID},
		{"user escaped blank", `{"user_id":"\u0020","hotel_id":1,"search_timestamp":1,` + adv + `}`, ReasonInvalidUserID},
	}
}

func TestTransformRejects(t *testing.T) {
	cases := malformedCorpus()
	if len(cases) < 20 {
		t.Fatalf("the malformed corpus must hold at least 20 kinds, has %d", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Transform([]byte(c.raw))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if ve.Reason != c.reason {
				t.Errorf("reason = %s (%v), want %s", ve.Reason, ve, c.reason)
			}
		})
	}
}

func BenchmarkTransform(b *testing.B) {
	raw := []byte(`{"user_id":"001adddd-6a55-4cd0-a1a1-9ca20e20d488","hotel_id":"6036","search_timestamp":1620224528,"hotel_advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}],"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":false},{"eurocents":20883,"breakfast":false},{"eurocents":29014,"breakfast":null}],"booking.com":[{"eurocents":24856,"breakfast":null},{"eurocents":39257,"breakfast":false}],"Tui.com":[{"eurocents":15607,"breakfast":false},{"eurocents":36172,"breakfast":false}],"Destinia":[{"eurocents":24599,"breakfast":false}]}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Transform(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReferenceTransform(b *testing.B) {
	raw := []byte(`{"user_id":"001adddd-6a55-4cd0-a1a1-9ca20e20d488","hotel_id":"6036","search_timestamp":1620224528,"hotel_advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}],"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":false},{"eurocents":20883,"breakfast":false},{"eurocents":29014,"breakfast":null}],"booking.com":[{"eurocents":24856,"breakfast":null},{"eurocents":39257,"breakfast":false}],"Tui.com":[{"eurocents":15607,"breakfast":false},{"eurocents":36172,"breakfast":false}],"Destinia":[{"eurocents":24599,"breakfast":false}]}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := referenceTransform(raw); err != nil {
			b.Fatal(err)
		}
	}
}
