package event

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/searchflow/searchflow/internal/corpus"
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

func TestTransformRejects(t *testing.T) {
	cases := corpus.Malformed()
	if len(cases) < 20 {
		t.Fatalf("the malformed corpus must hold at least 20 kinds, has %d", len(cases))
	}
	known := map[Reason]bool{}
	for _, r := range Reasons() {
		known[r] = true
	}
	covered := map[Reason]bool{}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if !known[Reason(c.Reason)] {
				t.Fatalf("corpus reason %q is not one of event.Reasons()", c.Reason)
			}
			covered[Reason(c.Reason)] = true
			_, err := Transform([]byte(c.Raw))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if string(ve.Reason) != c.Reason {
				t.Errorf("reason = %s (%v), want %s", ve.Reason, ve, c.Reason)
			}
		})
	}
	for r := range known {
		if !covered[r] {
			t.Errorf("no corpus record is rejected for %s", r)
		}
	}
}

// TestCorpusLimits keeps the corpus package's copy of the limits equal to ours.
func TestCorpusLimits(t *testing.T) {
	if corpus.MaxRawBytes != MaxRawBytes || corpus.MaxDepth != MaxDepth {
		t.Errorf("corpus limits %d/%d, event limits %d/%d", corpus.MaxRawBytes, corpus.MaxDepth, MaxRawBytes, MaxDepth)
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
