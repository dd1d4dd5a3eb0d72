package event_test

import (
	"encoding/json"
	"github.com/searchflow/searchflow/event"
	"reflect"
	"testing"

	"github.com/searchflow/searchflow/internal/corpus"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for _, raw := range corpus.Valid() {
		p, err := transform([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(p)
		if got := encode(t, p); string(got) != string(want) {
			t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
		}
	}
}

func TestParseProcessed(t *testing.T) {
	var f event.ProcessedFacts
	for _, raw := range corpus.Valid() {
		p, err := transform([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := event.ParseProcessed(encode(t, p), &f); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, ap := range f.Prices {
			got[ap.Advertiser] = ap.Price
		}
		if f.UserID != p.UserID || f.HotelID != p.HotelID || !reflect.DeepEqual(got, p.AdvertiserMinPrices) {
			t.Errorf("ParseProcessed = %+v, want %+v", f, p)
		}
	}
	for _, bad := range []string{``, `{`, `[]`, `{"user_id":"u"}`, `{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":1.5}}`,
		`{"user_id":5,"hotel_id":"h"}`, `{"user_id":"u","hotel_id":"h","advertiser_min_prices":[]}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":0}}`,
		`{"user_id":"u","hotel_id":"h","advertiser_min_prices":{"a":9007199254740993}}`} {
		if err := event.ParseProcessed([]byte(bad), &f); err == nil {
			t.Errorf("ParseProcessed(%s) accepted", bad)
		}
	}
}

func FuzzParseProcessed(f *testing.F) {
	for _, raw := range corpus.Valid() {
		p, _ := transform([]byte(raw))
		f.Add(encode(f, p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var facts event.ProcessedFacts
		_ = event.ParseProcessed(b, &facts) // must not panic
	})
}

func BenchmarkParseProcessed(b *testing.B) {
	p, _ := transform([]byte(corpus.Valid()[0]))
	v := encode(b, p)
	var f event.ProcessedFacts
	b.ReportAllocs()
	for b.Loop() {
		if err := event.ParseProcessed(v, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendProcessed(b *testing.B) {
	raw := []byte(corpus.Valid()[0])
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, _, err = event.AppendProcessed(buf[:0], raw); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBeginsWithUser(t *testing.T) {
	doc, keys, err := event.AppendProcessed(nil, []byte(`{"user_id":"u-1","hotel_id":2,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":5}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		doc, user string
		want      bool
	}{
		{string(doc), keys.User, true},
		{string(doc), "u-", false},
		{string(doc), "u-12", false},
		{`{"user_id":"u-1"`, "u-1", true},
		{`{"user_id":"u-1`, "u-1", false},
		{`not json`, "u-1", false},
		{`{"hotel_id":"2","user_id":"u-1"}`, "u-1", false},
		{`{"user_id":"a\"b","hotel_id":"h"}`, `a"b`, false},
	} {
		if got := event.BeginsWithUser([]byte(tt.doc), []byte(tt.user)); got != tt.want {
			t.Errorf("BeginsWithUser(%s, %q) = %v, want %v", tt.doc, tt.user, got, tt.want)
		}
	}
}

func TestEventSeconds(t *testing.T) {
	tests := []struct {
		num  string
		want int64
		ok   bool
	}{
		{"1764123456", 1764123456, true},
		{"1764123456.9", 1764123456, true}, // rounded down
		{"1.5e9", 1500000000, true},
		{"0.001", 0, true},
		{"-0.5", -1, true}, // down, not toward zero
		{"4503599627370496", 1 << 52, true},
		{"4503599627370497", 0, false},
		{"1e300", 0, false},
		{"-1e300", 0, false},
		{"abc", 0, false},
	}
	for _, tt := range tests {
		got, ok := event.EventSeconds([]byte(tt.num))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("EventSeconds(%s) = %d, %v; want %d, %v", tt.num, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEventTimeAfterUser(t *testing.T) {
	tests := []struct {
		doc  string
		want int64
		ok   bool
	}{
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":1700000000,"advertisers":[]}`, 1700000000, true},
		{`{"user_id":"u1","hotel_id":"a\"b\\","search_timestamp":17.5,"advertisers":[]}`, 17, true},
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":1700000000}`, 1700000000, true},
		{`{"user_id":"u1","search_timestamp":1,"hotel_id":"42"}`, 0, false}, // another order: parse it
		{`{"user_id":"u1","hotel_id":"42"`, 0, false},
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":x}`, 0, false},
		{`{"user_id":"u1","hotel_id":"4`, 0, false},
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":+5}`, 0, false},
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":0x10}`, 0, false},
		{`{"user_id":"u1","hotel_id":"42","search_timestamp":1e3}`, 1000, true},
	}
	for _, tt := range tests {
		got, ok := event.EventTimeAfterUser([]byte(tt.doc), len("u1"))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("EventTimeAfterUser(%s) = %d, %v; want %d, %v", tt.doc, got, ok, tt.want, tt.ok)
		}
	}
}
