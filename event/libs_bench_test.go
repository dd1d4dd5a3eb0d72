package event_test

// The hand-written decoder against well-kept JSON libraries (issue 12): each library decodes a raw
// event into event.Raw and encodes its processed form — the floor of what the transform needs,
// without the validation (limits, duplicate keys, reasons) the decoder does on top, so the
// libraries are favoured. BenchmarkLibraries/searchflow is ours on the same event: the reused
// decoder, validating and writing both documents. The event is the generator's first of the
// default workload.

import (
	stdjson "encoding/json"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	jsonv2 "github.com/go-json-experiment/json"
	gojson "github.com/goccy/go-json"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/stages/generator"
)

// library is one JSON library's unmarshal and marshal.
type library struct {
	name      string
	unmarshal func([]byte, any) error
	marshal   func(any) ([]byte, error)
}

func libraries() []library {
	return []library{
		{"encoding/json", stdjson.Unmarshal, stdjson.Marshal},
		{"goccy/go-json", gojson.Unmarshal, gojson.Marshal},
		{"bytedance/sonic", sonic.Unmarshal, sonic.Marshal},
		{"go-json-experiment/json", func(b []byte, v any) error { return jsonv2.Unmarshal(b, v) },
			func(v any) ([]byte, error) { return jsonv2.Marshal(v) }},
	}
}

// processedOf is the transform's arithmetic on a decoded event: each advertiser's lowest offer,
// the cheapest overall (ties by name), the advertisers sorted by name.
func processedOf(raw *event.Raw) event.Processed {
	p := event.Processed{UserID: raw.UserID, HotelID: "h", SearchTimestamp: "1",
		AdvertiserMinPrices: make(map[string]int64, len(raw.HotelAdvertisers))}
	for name, offers := range raw.HotelAdvertisers {
		low := offers[0].Eurocents
		for _, o := range offers[1:] {
			low = min(low, o.Eurocents)
		}
		p.AdvertiserMinPrices[name] = low
		p.Advertisers = append(p.Advertisers, name)
		if p.MinOffer.Advertiser == "" || low < p.MinOffer.Price || (low == p.MinOffer.Price && name < p.MinOffer.Advertiser) {
			p.MinOffer.Price, p.MinOffer.Advertiser = low, name
		}
	}
	return p
}

// benchEvent is the generator's first event of the default workload.
func benchEvent(t testing.TB) []byte {
	v, err := generator.Encode(generator.NewSynth(1, 10_000, 1000).Event(0, time.Unix(1_620_000_000, 0)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func BenchmarkLibraries(b *testing.B) {
	raw := benchEvent(b)
	b.Run("searchflow", func(b *testing.B) {
		dec := event.DefaultLimits().NewDecoder()
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, _, _, err = dec.AppendRecords(buf[:0], raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, lib := range libraries() {
		b.Run(lib.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r event.Raw
				if err := lib.unmarshal(raw, &r); err != nil {
					b.Fatal(err)
				}
				p := processedOf(&r)
				if _, err := lib.marshal(&p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLibrariesReadTheBenchmarkEvent: each library decodes the benchmark's event as encoding/json
// does, so the comparison is of equal work.
func TestLibrariesReadTheBenchmarkEvent(t *testing.T) {
	raw := benchEvent(t)
	var want event.Raw
	if err := stdjson.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	for _, lib := range libraries() {
		var got event.Raw
		if err := lib.unmarshal(raw, &got); err != nil {
			t.Fatalf("%s: %v", lib.name, err)
		}
		if len(got.HotelAdvertisers) != len(want.HotelAdvertisers) || got.UserID != want.UserID {
			t.Errorf("%s read %+v, encoding/json %+v", lib.name, got, want)
		}
	}
}
