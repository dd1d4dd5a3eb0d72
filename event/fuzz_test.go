package event

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// validCorpus is a set of accepted raw records that exercise the decoder's paths.
func validCorpus() []string {
	return []string{
		`{"user_id":"u1","hotel_id":6036,"search_timestamp":1620224528,"hotel_advertisers":{"Mercure":[{"eurocents":31266,"breakfast":false},{"eurocents":12621,"breakfast":null}],"Amoma":[{"eurocents":17558}]}}`,
		`{"user_id":"caf\u00e9 \ud83d\ude00","hotel_id":"h-1","search_timestamp":1.5e9,"hotel_advertisers":{"\u0041":[{"eurocents":1}],"b":[{"eurocents":1}]}}`,
		`{"hotel_advertisers":{"a":[{"x":[1,2,{"y":"z"}],"eurocents":9223372036854775807}]},"search_timestamp":0.001,"hotel_id":-3,"user_id":"\ud800"}`,
		`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":1}]}}`,
		" {\"user_id\" : \"u\" , \"hotel_id\" : 1 , \"search_timestamp\" : 7 , \"hotel_advertisers\" : { \"a\" : [ { \"eurocents\" : 9 } ] } } ",
	}
}

// advertiserReasons come from one advertiser's offers; the reference walks advertisers in map
// order, so when several are bad it may name a different one.
var advertiserReasons = map[Reason]bool{ReasonInvalidAdvertiser: true, ReasonNoOffers: true, ReasonInvalidOffer: true,
	ReasonInvalidEurocents: true, ReasonNonPositiveEurocent: true}

// checkAgainstReference compares Transform with the encoding/json-based reference: the same
// verdict, the same event, the same reason — except for what Transform is deliberately stricter
// about (duplicate keys, nesting depth).
func checkAgainstReference(t *testing.T, raw []byte) {
	got, err := Transform(raw)
	want, refErr := referenceTransform(raw)
	var ve, refVE *ValidationError
	if err != nil && !errors.As(err, &ve) {
		t.Fatalf("Transform(%q) returned a non-validation error %v", raw, err)
	}
	if refErr != nil && !errors.As(refErr, &refVE) {
		t.Fatalf("reference(%q) returned a non-validation error %v", raw, refErr)
	}
	if ve != nil && (ve.Reason == ReasonDuplicateKey || ve.Reason == ReasonTooDeep) {
		return
	}
	switch {
	case err == nil && refErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Transform(%q)\n got %+v\nwant %+v", raw, got, want)
		}
		if _, merr := json.Marshal(got); merr != nil {
			t.Fatalf("processed event does not encode: %v", merr)
		}
	case err == nil || refErr == nil:
		t.Fatalf("Transform(%q): err %v, reference err %v", raw, err, refErr)
	case ve.Reason != refVE.Reason && !(advertiserReasons[ve.Reason] && advertiserReasons[refVE.Reason]):
		t.Fatalf("Transform(%q): reason %s, reference reason %s", raw, ve.Reason, refVE.Reason)
	}
}

func TestTransformMatchesReference(t *testing.T) {
	for _, raw := range validCorpus() {
		if _, err := Transform([]byte(raw)); err != nil {
			t.Errorf("valid corpus record rejected: %v\n%s", err, raw)
		}
		checkAgainstReference(t, []byte(raw))
	}
	for _, c := range malformedCorpus() {
		checkAgainstReference(t, []byte(c.raw))
	}
}

// FuzzTransform checks that no input panics the decoder and that it agrees with the reference.
// `make test` runs the seed corpus; `go test -fuzz FuzzTransform ./event` explores further.
func FuzzTransform(f *testing.F) {
	for _, raw := range validCorpus() {
		f.Add([]byte(raw))
	}
	for _, c := range malformedCorpus() {
		if len(c.raw) < 4096 {
			f.Add([]byte(c.raw))
		}
	}
	f.Add([]byte(strings.Repeat("[", 600)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkAgainstReference(t, raw)
	})
}
