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
		"whitespace padding": " \n{\"user_id\" : \"u\", \"hotel_id\" : 1 , \"search_timestamp\" : 7, \"hotel_advertisers\" : {\"a\" : [ {\"eurocents\" : 9 } ] } }\n",
	}
	for name, raw := range cases {
		if _, err := Transform([]byte(raw)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTransformRejects(t *testing.T) {
	ok := `"user_id":"u","hotel_id":1,"search_timestamp":1`
	adv := `"hotel_advertisers":{"a":[{"eurocents":1}]}`
	cases := []struct {
		name, raw string
		reason    Reason
	}{
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
		{"deeply nested", `{` + ok + `,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `,` + adv + `}`, ReasonNotJSON},
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
