package event_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"

	"github.com/searchflow/searchflow/internal/corpus"
)

// advertiserReasons come from one advertiser's offers; the reference walks advertisers in map
// order, so when several are bad it may name a different one.
var advertiserReasons = map[event.Reason]bool{event.ReasonInvalidAdvertiser: true, event.ReasonNoOffers: true, event.ReasonInvalidOffer: true,
	event.ReasonInvalidEurocents: true, event.ReasonNonPositiveEurocent: true, event.ReasonEurocentsRange: true, event.ReasonTooManyAdvertisers: true,
	event.ReasonTooManyOffers: true, event.ReasonNameTooLong: true}

// seconds reads a processed search_timestamp as the decoder's Keys hold it.
func seconds(t *testing.T, n json.Number) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		t.Fatalf("search_timestamp %q: %v", n, err)
	}
	return f
}

// checkAgainstReference compares Transform with the encoding/json-based reference: the same
// verdict, the same event, the same reason — except for what Transform is deliberately stricter
// about (duplicate keys, nesting depth).
func checkAgainstReference(t *testing.T, raw []byte) {
	got, err := transform(raw)
	// The transformer's hot path must say exactly what Transform and AppendJSON say.
	fast, keys, fastErr := event.AppendProcessed(nil, raw)
	switch {
	case (err == nil) != (fastErr == nil):
		t.Fatalf("AppendProcessed(%q) err %v, Transform err %v", raw, fastErr, err)
	case err != nil && err.Error() != fastErr.Error():
		t.Fatalf("AppendProcessed(%q) err %v, Transform err %v", raw, fastErr, err)
	case err == nil && (string(fast) != string(encode(t, got)) || keys != event.Keys{User: got.UserID, Hotel: got.HotelID, SearchTime: seconds(t, got.SearchTimestamp)}):
		t.Fatalf("AppendProcessed(%q) = %s %+v, want %s %q %q", raw, fast, keys, encode(t, got), got.UserID, got.HotelID)
	}
	if err == nil {
		checkHotelRecord(t, raw, fast, got)
	}
	want, refErr := eventref.Transform(raw)
	var ve, refVE *event.ValidationError
	if err != nil && !errors.As(err, &ve) {
		t.Fatalf("transform(%q) returned a non-validation error %v", raw, err)
	}
	if refErr != nil && !errors.As(refErr, &refVE) {
		t.Fatalf("reference(%q) returned a non-validation error %v", raw, refErr)
	}
	if ve != nil && (ve.Reason == event.ReasonDuplicateKey || ve.Reason == event.ReasonTooDeep) {
		return
	}
	switch {
	case err == nil && refErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("transform(%q)\n got %+v\nwant %+v", raw, got, want)
		}
		if _, merr := json.Marshal(got); merr != nil {
			t.Fatalf("processed event does not encode: %v", merr)
		}
	case err == nil || refErr == nil:
		t.Fatalf("transform(%q): err %v, reference err %v", raw, err, refErr)
	case ve.Reason != refVE.Reason && !(advertiserReasons[ve.Reason] && advertiserReasons[refVE.Reason]):
		t.Fatalf("transform(%q): reason %s, reference reason %s", raw, ve.Reason, refVE.Reason)
	}
}

func TestTransformMatchesReference(t *testing.T) {
	reused := event.DefaultLimits().NewDecoder()
	for _, raw := range corpus.Valid() {
		if _, err := transform([]byte(raw)); err != nil {
			t.Errorf("valid corpus record rejected: %v\n%s", err, raw)
		}
		checkAgainstReference(t, []byte(raw))
		checkReusedDecoder(t, reused, []byte(raw))
	}
	for _, c := range corpus.Malformed() {
		checkAgainstReference(t, []byte(c.Raw))
		checkReusedDecoder(t, reused, []byte(c.Raw))
	}
}

// FuzzTransform checks that no input panics the decoder and that it agrees with the reference.
// `make test` runs the seed corpus; `go test -fuzz FuzzTransform ./event` explores further.
func FuzzTransform(f *testing.F) {
	for _, raw := range corpus.Valid() {
		f.Add([]byte(raw))
	}
	for _, c := range corpus.Malformed() {
		if len(c.Raw) < 4096 {
			f.Add([]byte(c.Raw))
		}
	}
	f.Add([]byte(strings.Repeat("[", 600)))
	// One decoder for every input, as the transformer keeps one: nothing of an event may leak
	// into the next.
	reused := event.DefaultLimits().NewDecoder()
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkAgainstReference(t, raw)
		checkReusedDecoder(t, reused, raw)
	})
}

// checkReusedDecoder: a decoder that has seen other events writes what a fresh one writes.
func checkReusedDecoder(t *testing.T, reused *event.Decoder, raw []byte) {
	t.Helper()
	p1, h1, k1, err1 := event.DefaultLimits().AppendRecords(nil, raw)
	p2, h2, k2, err2 := reused.AppendRecords(nil, raw)
	if string(p1) != string(p2) || string(h1) != string(h2) || k1 != k2 || fmt.Sprint(err1) != fmt.Sprint(err2) {
		t.Fatalf("reused decoder on %q: %s %s %v %v, a fresh one: %s %s %v %v", raw, p2, h2, k2, err2, p1, h1, k1, err1)
	}
}

// checkHotelRecord: AppendRecords writes the same processed document as AppendProcessed and,
// after it, the compact hotel document: the hotel and the advertisers' minimums, as encoding/json
// writes them, which ParseHotel reads back to the facts ParseProcessed reads from the processed one.
func checkHotelRecord(t *testing.T, raw, processed []byte, got event.Processed) {
	t.Helper()
	proc, hotel, _, err := event.DefaultLimits().AppendRecords([]byte("prefix"), raw)
	if err != nil || string(proc) != string(processed) {
		t.Fatalf("AppendRecords(%q) = %s (%v), want the processed document %s", raw, proc, err, processed)
	}
	want, _ := json.Marshal(struct {
		HotelID string           `json:"hotel_id"`
		Time    json.Number      `json:"search_timestamp"`
		Prices  map[string]int64 `json:"advertiser_min_prices"`
	}{got.HotelID, got.SearchTimestamp, got.AdvertiserMinPrices})
	if string(hotel) != string(want) {
		t.Fatalf("AppendRecords(%q) hotel record %s, want %s", raw, hotel, want)
	}
	var fromProc, fromHotel event.ProcessedFacts
	if err := event.ParseProcessed(processed, &fromProc); err != nil {
		t.Fatalf("ParseProcessed(%s): %v", processed, err)
	}
	if err := event.ParseHotel(hotel, &fromHotel); err != nil {
		t.Fatalf("ParseHotel(%s): %v", hotel, err)
	}
	checkEventTime(t, processed, got, fromProc)
	fromProc.UserID = ""
	if !reflect.DeepEqual(fromProc, fromHotel) && !(len(fromProc.Prices) == 0 && len(fromHotel.Prices) == 0) {
		t.Fatalf("the hotel record reads as %+v, the processed one as %+v", fromHotel, fromProc)
	}
}

// checkEventTime: the event time read from a processed document is its search_timestamp rounded
// down to whole seconds, and the shortcut after the user id (EventTimeAfterUser) reads the same.
func checkEventTime(t *testing.T, processed []byte, got event.Processed, facts event.ProcessedFacts) {
	t.Helper()
	f, err := got.SearchTimestamp.Float64()
	if err != nil {
		t.Fatalf("reference search_timestamp %q: %v", got.SearchTimestamp, err)
	}
	want, timed := int64(math.Floor(f)), math.Abs(f) <= 1<<52
	if facts.Timed != timed || (timed && facts.EventTime != want) {
		t.Fatalf("%s: event time %d (timed %v), want %d (timed %v)", processed, facts.EventTime, facts.Timed, want, timed)
	}
	if !event.BeginsWithUser(processed, []byte(got.UserID)) {
		return
	}
	if n, ok := event.EventTimeAfterUser(processed, len(got.UserID)); ok != timed || (ok && n != facts.EventTime) {
		t.Fatalf("%s: EventTimeAfterUser = %d, %v, want %d", processed, n, ok, facts.EventTime)
	}
}

// TestCompactOffersMatchReference: offers in the compact form the decoder reads on its fast path,
// and forms just beside it that it must leave to the general parse, judged as the reference does.
func TestCompactOffersMatchReference(t *testing.T) {
	reused := event.DefaultLimits().NewDecoder()
	for _, offer := range []string{
		`{"eurocents":5}`, `{"eurocents":05}`, `{"eurocents":0}`, `{"eurocents":-5}`, `{"eurocents":5.5}`, `{"eurocents":5e2}`,
		`{"eurocents":999999999999999}`, `{"eurocents":1000000000000000}`, `{"eurocents":9007199254740993}`,
		`{"eurocents":5,"breakfast":true}`, `{"eurocents":5,"breakfast":false}`, `{"eurocents":5,"breakfast":null}`,
		`{"eurocents":5,"breakfast":tru}`, `{"eurocents":5,"breakfast":true,"x":1}`, `{"eurocents":5,"breakfast":1}`,
		`{"eurocents":5,"eurocents":6}`, `{"eurocents":5,"breakfast":true,"breakfast":false}`, `{"eurocents":5 }`,
		`{"eurocents":5}}`, `{"eurocents":5`, `{"eurocents":"5"}`, `{"eurocents":}`, `{"eurocents":5,}`,
	} {
		for _, raw := range []string{
			`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[` + offer + `]}}`,
			`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":7},` + offer + `,{"eurocents":8}]}}`,
		} {
			checkAgainstReference(t, []byte(raw))
			checkReusedDecoder(t, reused, []byte(raw))
		}
	}
}
