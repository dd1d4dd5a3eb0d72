package generator

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/eventref"
)

// fixedTS keeps events comparable across synths: Event's timestamp is an argument.
var fixedTS = time.Date(2021, 5, 5, 14, 22, 8, 0, time.UTC)

// uuidV4 matches the canonical text form of a version-4 UUID with the RFC 4122 variant: the
// version nibble starts the third group, the variant bits 10xx start the fourth.
//
// Checked by hand rather than with github.com/google/uuid because that module is not in go.mod.
var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestSynthDeterministic(t *testing.T) {
	const n = 2000
	a, b, other := NewSynth(42, 500, 80), NewSynth(42, 500, 80), NewSynth(43, 500, 80)

	want := make([][]byte, n)
	for i := range int64(n) {
		want[i] = mustEncode(t, a.Event(i, fixedTS))
	}
	// Event i must not depend on which events the synth made before: b walks backwards.
	for i := int64(n - 1); i >= 0; i-- {
		if got := mustEncode(t, b.Event(i, fixedTS)); !bytes.Equal(got, want[i]) {
			t.Fatalf("event %d differs between synths with the same seed:\n%s\n%s", i, got, want[i])
		}
	}
	for i := range int64(n) {
		if got := mustEncode(t, other.Event(i, fixedTS)); bytes.Equal(got, want[i]) {
			t.Fatalf("event %d is identical for seeds 42 and 43: %s", i, got)
		}
	}
}

func TestSynthUserIDIsUUIDv4(t *testing.T) {
	for _, seed := range []int64{0, 1, -1, 42, 1 << 62} {
		s := NewSynth(seed, 1000, 10)
		seen := make(map[string]bool)
		for n := range 1000 {
			id := s.UserID(n)
			if !uuidV4.MatchString(id) {
				t.Fatalf("seed %d: UserID(%d) = %q is not a version-4 RFC 4122 UUID", seed, n, id)
			}
			if seen[id] {
				t.Fatalf("seed %d: UserID(%d) = %q repeats an earlier user's id", seed, n, id)
			}
			seen[id] = true
		}
		if got := NewSynth(seed, 1000, 10).UserID(7); got != s.UserID(7) {
			t.Fatalf("seed %d: UserID(7) is not stable: %q vs %q", seed, got, s.UserID(7))
		}
	}
}

func TestSynthCardinality(t *testing.T) {
	tests := []struct {
		name          string
		users, hotels int
	}{
		{"one of each", 1, 1},
		{"few", 7, 5},
		{"more users than draws", 5000, 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSynth(9, tt.users, tt.hotels)
			validUsers := make(map[string]bool, tt.users)
			for n := range tt.users {
				validUsers[s.UserID(n)] = true
			}
			validHotels := make(map[string]bool, tt.hotels)
			for n := range tt.hotels {
				validHotels[s.HotelID(n)] = true
			}
			users, hotels := make(map[string]bool), make(map[string]bool)
			for i := range int64(1000) {
				ev := s.Event(i, fixedTS)
				if !validUsers[ev.UserID] {
					t.Fatalf("event %d: user %q is not one of UserID(0..%d)", i, ev.UserID, tt.users-1)
				}
				if !validHotels[ev.HotelID] {
					t.Fatalf("event %d: hotel %q is not one of HotelID(0..%d)", i, ev.HotelID, tt.hotels-1)
				}
				users[ev.UserID], hotels[ev.HotelID] = true, true
			}
			if len(users) > tt.users || len(hotels) > tt.hotels {
				t.Fatalf("got %d users and %d hotels, want at most %d and %d", len(users), len(hotels), tt.users, tt.hotels)
			}
			// 1000 uniform draws over 7 values miss one with probability ~1e-66: a synth that
			// collapses onto few users is broken, not unlucky (and the seed is fixed anyway).
			if tt.users == 7 && len(users) != 7 || tt.hotels == 5 && len(hotels) != 5 {
				t.Fatalf("got %d users and %d hotels over 1000 draws, want all 7 and 5", len(users), len(hotels))
			}
		})
	}
}

func TestSynthEventShape(t *testing.T) {
	s := NewSynth(3, 100, 50)
	for i := range int64(1000) {
		ev := s.Event(i, fixedTS)
		if ev.SearchTimestamp != fixedTS.Unix() {
			t.Fatalf("event %d: search_timestamp %d, want %d", i, ev.SearchTimestamp, fixedTS.Unix())
		}
		if n := len(ev.HotelAdvertisers); n < 1 || n > 6 {
			t.Fatalf("event %d has %d advertisers, want 1..6", i, n)
		}
		for name, offers := range ev.HotelAdvertisers {
			if !slices.Contains(advertiserNames[:], name) {
				t.Fatalf("event %d: unknown advertiser %q", i, name)
			}
			if n := len(offers); n < 1 || n > 4 {
				t.Fatalf("event %d: advertiser %q has %d offers, want 1..4", i, name, n)
			}
			for j, o := range offers {
				if o.Eurocents <= 0 {
					t.Fatalf("event %d: advertiser %q offer %d has eurocents %d", i, name, j, o.Eurocents)
				}
			}
		}

		value := mustEncode(t, ev)
		p, err := eventref.Transform(value)
		if err != nil {
			t.Fatalf("event %d fails the transformer: %v\n%s", i, err, value)
		}
		if p.UserID != ev.UserID || p.HotelID != ev.HotelID || string(p.SearchTimestamp) != strconv.FormatInt(fixedTS.Unix(), 10) {
			t.Fatalf("event %d: transformed to %+v, from %s", i, p, value)
		}
		if len(p.Advertisers) != len(ev.HotelAdvertisers) {
			t.Fatalf("event %d: transformed advertisers %v, from %s", i, p.Advertisers, value)
		}
	}
}

func BenchmarkSynthEncode(b *testing.B) {
	s := NewSynth(1, 100_000, 5_000)
	b.ReportAllocs()
	for i := int64(0); b.Loop(); i++ {
		if _, err := Encode(s.Event(i, fixedTS)); err != nil {
			b.Fatal(err)
		}
	}
}

func mustEncode(t *testing.T, ev event.Raw) []byte {
	t.Helper()
	b, err := Encode(ev)
	if err != nil {
		t.Fatalf("encode %+v: %v", ev, err)
	}
	return b
}
