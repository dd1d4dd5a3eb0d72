package event_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/internal/corpus"
)

func TestTransformValid(t *testing.T) {
	raw := `{"user_id":"u1","hotel_id":6036,"search_timestamp":1620224528,"extra":[1,2],
		"hotel_advertisers":{"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":null}],
		"Amoma":[{"eurocents":17558}],"Destinia":[{"eurocents":12621,"breakfast":true}]}}`
	got, err := transform([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := event.Processed{
		UserID: "u1", HotelID: "6036", SearchTimestamp: "1620224528",
		Advertisers:         []string{"Amoma", "Destinia", "Mercure"},
		MinOffer:            event.MinOffer{Price: 12621, Advertiser: "Destinia"}, // tie: first by name
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
		if _, err := transform([]byte(raw)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTransformRejects(t *testing.T) {
	cases := corpus.Malformed()
	if len(cases) < 20 {
		t.Fatalf("the malformed corpus must hold at least 20 kinds, has %d", len(cases))
	}
	known := map[event.Reason]bool{}
	for _, r := range event.Reasons() {
		// Decided by the transformer against the record's timestamp, which a document does not
		// hold: transformer.TestFutureTimestampsAreDeadLettered covers it.
		known[r] = r != event.ReasonFutureTimestamp
	}
	covered := map[event.Reason]bool{}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if !known[event.Reason(c.Reason)] {
				t.Fatalf("corpus reason %q is not one of event.Reasons()", c.Reason)
			}
			covered[event.Reason(c.Reason)] = true
			_, err := transform([]byte(c.Raw))
			var ve *event.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *event.ValidationError", err)
			}
			if string(ve.Reason) != c.Reason {
				t.Errorf("reason = %s (%v), want %s", ve.Reason, ve, c.Reason)
			}
		})
	}
	for r, decoder := range known {
		if decoder && !covered[r] {
			t.Errorf("no corpus record is rejected for %s", r)
		}
	}
}

// TestCorpusLimits keeps the corpus package's copy of the limits equal to ours.
func TestCorpusLimits(t *testing.T) {
	if corpus.MaxRawBytes != event.MaxRawBytes || corpus.MaxDepth != event.MaxDepth {
		t.Errorf("corpus limits %d/%d, event limits %d/%d", corpus.MaxRawBytes, corpus.MaxDepth, event.MaxRawBytes, event.MaxDepth)
	}
	d := event.DefaultLimits()
	if corpus.DefaultAdvertisersPerEvent != d.AdvertisersPerEvent || corpus.DefaultOffersPerAdvertiser != d.OffersPerAdvertiser ||
		corpus.DefaultAdvertiserNameBytes != d.AdvertiserNameBytes || corpus.DefaultIDBytes != d.IDBytes {
		t.Errorf("corpus default limits differ from event.DefaultLimits() %+v", d)
	}
}

func BenchmarkTransform(b *testing.B) {
	raw := []byte(`{"user_id":"001adddd-6a55-4cd0-a1a1-9ca20e20d488","hotel_id":"6036","search_timestamp":1620224528,"hotel_advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}],"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":false},{"eurocents":20883,"breakfast":false},{"eurocents":29014,"breakfast":null}],"booking.com":[{"eurocents":24856,"breakfast":null},{"eurocents":39257,"breakfast":false}],"Tui.com":[{"eurocents":15607,"breakfast":false},{"eurocents":36172,"breakfast":false}],"Destinia":[{"eurocents":24599,"breakfast":false}]}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, _, err := event.AppendProcessed(nil, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReferenceTransform(b *testing.B) {
	raw := []byte(`{"user_id":"001adddd-6a55-4cd0-a1a1-9ca20e20d488","hotel_id":"6036","search_timestamp":1620224528,"hotel_advertisers":{"Amoma":[{"eurocents":17558,"breakfast":false}],"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":false},{"eurocents":20883,"breakfast":false},{"eurocents":29014,"breakfast":null}],"booking.com":[{"eurocents":24856,"breakfast":null},{"eurocents":39257,"breakfast":false}],"Tui.com":[{"eurocents":15607,"breakfast":false},{"eurocents":36172,"breakfast":false}],"Destinia":[{"eurocents":24599,"breakfast":false}]}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eventref.Transform(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLimitsAreConfigurable: each limit holds exactly at its value, and a record past the default
// is accepted under a raised limit.
func TestLimitsAreConfigurable(t *testing.T) {
	record := func(user, hotel, name string, advertisers, offers int) []byte {
		var b strings.Builder
		fmt.Fprintf(&b, `{"user_id":%q,"hotel_id":%q,"search_timestamp":1,"hotel_advertisers":{`, user, hotel)
		for i := 0; i < advertisers; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"%s%d":[`, name, i)
			for j := 0; j < offers; j++ {
				if j > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"eurocents":%d}`, 1000+j)
			}
			b.WriteByte(']')
		}
		b.WriteString("}}")
		return []byte(b.String())
	}
	lim := event.Limits{AdvertisersPerEvent: 3, OffersPerAdvertiser: 2, AdvertiserNameBytes: 5, IDBytes: 4}
	cases := []struct {
		name string
		raw  []byte
		want event.Reason // "" = valid
	}{
		{"all at their limit", record("uuuu", "hhhh", "nnnn", 3, 2), ""},
		{"one advertiser too many", record("u", "h", "n", 4, 1), event.ReasonTooManyAdvertisers},
		{"one offer too many", record("u", "h", "n", 1, 3), event.ReasonTooManyOffers},
		{"name one byte too long", record("u", "h", "nnnnn", 1, 1), event.ReasonNameTooLong},
		{"user one byte too long", record("uuuuu", "h", "n", 1, 1), event.ReasonUserIDTooLong},
		{"hotel one byte too long", record("u", "hhhhh", "n", 1, 1), event.ReasonHotelIDTooLong},
	}
	for _, c := range cases {
		_, err := transformWithin(lim, c.raw)
		var ve *event.ValidationError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: rejected: %v", c.name, err)
		case c.want != "" && (!errors.As(err, &ve) || ve.Reason != c.want):
			t.Errorf("%s: err = %v, want reason %s", c.name, err, c.want)
		}
	}
	// The repro of issue 9: a hotel with 4,500 advertisers is dead-lettered by default and exact
	// under a raised limit.
	big := record("u", "h", "advertiser-", 4500, 1)
	if _, err := transform(big); err == nil || !strings.Contains(err.Error(), string(event.ReasonTooManyAdvertisers)) {
		t.Errorf("4,500 advertisers under the default limit: err = %v", err)
	}
	raised := event.DefaultLimits()
	raised.AdvertisersPerEvent = 5000
	p, err := transformWithin(raised, big)
	if err != nil || len(p.Advertisers) != 4500 {
		t.Errorf("4,500 advertisers under a limit of 5,000: %d advertisers, err %v", len(p.Advertisers), err)
	}
}

// TestEurocentsExactRange: 2^53 is the largest price a Redis score holds exactly; it passes and
// anything above is refused, never rounded.
func TestEurocentsExactRange(t *testing.T) {
	for raw, want := range map[string]event.Reason{
		"9007199254740992":    "",
		"9007199254740993":    event.ReasonEurocentsRange,
		"9223372036854775807": event.ReasonEurocentsRange,
		"9223372036854775808": event.ReasonEurocentsRange,
	} {
		p, err := transform([]byte(`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":` + raw + `}]}}`))
		var ve *event.ValidationError
		switch {
		case want == "" && (err != nil || strconv.FormatInt(p.MinOffer.Price, 10) != raw):
			t.Errorf("%s: %+v, %v", raw, p.MinOffer, err)
		case want != "" && (!errors.As(err, &ve) || ve.Reason != want):
			t.Errorf("%s: err = %v, want %s", raw, err, want)
		}
	}
}
