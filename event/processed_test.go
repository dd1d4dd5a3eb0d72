package event

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/searchflow/searchflow/internal/corpus"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for _, raw := range corpus.Valid() {
		p, err := Transform([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(p)
		if got := p.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
		}
	}
}

func TestParseProcessed(t *testing.T) {
	var f ProcessedFacts
	for _, raw := range corpus.Valid() {
		p, err := Transform([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseProcessed(p.AppendJSON(nil), &f); err != nil {
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
		if err := ParseProcessed([]byte(bad), &f); err == nil {
			t.Errorf("ParseProcessed(%s) accepted", bad)
		}
	}
}

func FuzzParseProcessed(f *testing.F) {
	for _, raw := range corpus.Valid() {
		p, _ := Transform([]byte(raw))
		f.Add(p.AppendJSON(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var facts ProcessedFacts
		_ = ParseProcessed(b, &facts) // must not panic
	})
}

func BenchmarkParseProcessed(b *testing.B) {
	p, _ := Transform([]byte(corpus.Valid()[0]))
	v := p.AppendJSON(nil)
	var f ProcessedFacts
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseProcessed(v, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransformAndEncode(b *testing.B) {
	raw := []byte(corpus.Valid()[0])
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		p, err := Transform(raw)
		if err != nil {
			b.Fatal(err)
		}
		buf = p.AppendJSON(buf[:0])
	}
}

func BenchmarkAppendProcessed(b *testing.B) {
	raw := []byte(corpus.Valid()[0])
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, _, err = AppendProcessed(buf[:0], raw); err != nil {
			b.Fatal(err)
		}
	}
}
