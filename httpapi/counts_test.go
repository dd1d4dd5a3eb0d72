package httpapi

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

func TestCountsOrderAndPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)

	users := []entry{{"u3", 4}, {"u1", 3}, {"u2", 1}, {"u4", 1}, {`user "ü"`, 1}}
	hotels := []entry{{"h1", 4}, {"h2", 3}, {"h10", 1}, {"h3", 1}, {"h4", 1}}
	advertisers := []entry{{"a1", 5}, {"a2", 4}, {"a3", 2}, {"a4", 1}}

	tests := []struct {
		path  string
		total int64
		want  []entry
	}{
		{"/users", 5, users},
		{"/hotels", 5, hotels},
		{"/advertisers", 4, advertisers},
		{"/users?limit=2", 5, users[:2]},
		{"/users?limit=2&offset=2", 5, users[2:4]},
		{"/users?offset=4&limit=2", 5, users[4:]},
		{"/users?offset=3", 5, users[3:]},
		{"/users?limit=1", 5, users[:1]},
		{"/users?limit=100000", 5, users},
		{"/users?offset=5", 5, nil},
		{"/users?offset=1000000&limit=10", 5, nil},
		{"/users?offset=1099511627776", 5, nil}, // the largest offset accepted
		{"/hotels?offset=1&limit=3", 5, hotels[1:4]},
		{"/advertisers?offset=3&limit=5", 4, advertisers[3:]},
		{"/advertisers?offset=4", 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := get(t, f, tt.path)
			if r.code != http.StatusOK {
				t.Fatalf("status %d, body %s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if got := r.header.Get("X-Total-Count"); got != strconv.FormatInt(tt.total, 10) {
				t.Errorf("X-Total-Count = %q, want %d", got, tt.total)
			}
			count, data := decodeCounts(t, r.body)
			if count != tt.total {
				t.Errorf("count = %d, want %d", count, tt.total)
			}
			if !reflect.DeepEqual(data, tt.want) {
				t.Errorf("data in body order = %v, want %v (body %s)", data, tt.want, r.body)
			}
		})
	}
}

func TestCountsEmptyView(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	for _, path := range []string{"/users", "/hotels", "/advertisers"} {
		r := get(t, f, path)
		if r.code != http.StatusOK || string(r.body) != `{"count":0,"data":{}}` {
			t.Errorf("GET %s = %d %s, want 200 {\"count\":0,\"data\":{}}", path, r.code, r.body)
		}
		if got := r.header.Get("X-Total-Count"); got != "0" {
			t.Errorf("GET %s: X-Total-Count = %q, want 0", path, got)
		}
	}
}

// TestCountsDefaultLimit checks that a request without ?limit= gets DefaultLimit entries, not all.
func TestCountsDefaultLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	const n = DefaultLimit + 250
	var events []event
	for i := range n {
		// user i is seen i%7+1 times, so that counts tie in large groups.
		for range i%7 + 1 {
			events = append(events, event{user: fmt.Sprintf("user-%05d", i), hotel: "h"})
		}
	}
	f.apply(t, events)

	r := get(t, f, "/users")
	if r.code != http.StatusOK {
		t.Fatalf("status %d, body %s", r.code, r.body)
	}
	count, data := decodeCounts(t, r.body)
	if count != n || r.header.Get("X-Total-Count") != strconv.Itoa(n) {
		t.Errorf("count = %d, X-Total-Count = %q, want %d", count, r.header.Get("X-Total-Count"), n)
	}
	if len(data) != DefaultLimit {
		t.Fatalf("%d entries, want DefaultLimit = %d", len(data), DefaultLimit)
	}
	for i := 1; i < len(data); i++ {
		prev, cur := data[i-1], data[i]
		if prev.n < cur.n || prev.n == cur.n && prev.id >= cur.id {
			t.Fatalf("entries %d and %d out of order: %v then %v", i-1, i, prev, cur)
		}
	}

	// A page that does not end the list says so, and links the next one.
	next := fmt.Sprintf(`</users?offset=%d>; rel="next"`, DefaultLimit)
	if r.header.Get("X-Truncated") != "true" || r.header.Get("Link") != next {
		t.Errorf("X-Truncated %q, Link %q; want true and %s", r.header.Get("X-Truncated"), r.header.Get("Link"), next)
	}

	// The next page starts where the first ended and holds the rest; it is the last.
	second := get(t, f, "/users?offset="+strconv.Itoa(DefaultLimit))
	_, rest := decodeCounts(t, second.body)
	if len(rest) != n-DefaultLimit {
		t.Fatalf("second page has %d entries, want %d", len(rest), n-DefaultLimit)
	}
	if second.header.Get("X-Truncated") != "" || second.header.Get("Link") != "" {
		t.Errorf("the last page: X-Truncated %q, Link %q; want neither", second.header.Get("X-Truncated"), second.header.Get("Link"))
	}
	// The link keeps the other parameters.
	if link := get(t, f, "/users?limit=10&offset=20").header.Get("Link"); link != `</users?limit=10&offset=30>; rel="next"` {
		t.Errorf("Link %q, want the same limit and offset 30", link)
	}
	last, first := data[len(data)-1], rest[0]
	if last.n < first.n || last.n == first.n && last.id >= first.id {
		t.Errorf("pages overlap or skip: first page ends with %v, second starts with %v", last, first)
	}
}

func TestMinPricesPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)

	all := []hotelPrices{
		{"h1", []entry{{"a1", 450}, {"a2", 650}, {"a3", 1000}}},
		{"h10", []entry{{"a4", 1}}},
		{"h2", []entry{{"a1", 400}, {"a2", 300}, {"a3", 800}}},
		{"h3", []entry{{"a1", 999}}},
	}
	tests := []struct {
		query string
		want  []hotelPrices
	}{
		{"", all},
		{"?limit=2", all[:2]},
		{"?offset=2&limit=1", all[2:3]},
		{"?offset=3&limit=100000", all[3:]},
		{"?offset=4", nil},
		{"?offset=99999", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := get(t, f, "/hotel_min_offer_per_advertiser"+tt.query)
			if r.code != http.StatusOK {
				t.Fatalf("status %d, body %s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if got := r.header.Get("X-Total-Count"); got != "4" {
				t.Errorf("X-Total-Count = %q, want 4 (hotels with offers)", got)
			}
			if got := decodeMinPrices(t, r.body); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("body %s decodes to %v, want %v", r.body, got, tt.want)
			}
		})
	}
}

func TestMinPricesEmptyView(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	r := get(t, f, "/hotel_min_offer_per_advertiser")
	if r.code != http.StatusOK || string(r.body) != "{}" || r.header.Get("X-Total-Count") != "0" {
		t.Errorf("GET on an empty view = %d %s, X-Total-Count %q; want 200 {} 0",
			r.code, r.body, r.header.Get("X-Total-Count"))
	}
}

// TestGolden pins the exact bodies of the four metrics endpoints on fixedBatches.
func TestGolden(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)
	for _, name := range []string{"users", "hotels", "advertisers", "hotel_min_offer_per_advertiser"} {
		t.Run(name, func(t *testing.T) {
			r := get(t, f, "/"+name)
			if r.code != http.StatusOK {
				t.Fatalf("status %d, body %s", r.code, r.body)
			}
			golden(t, name+".json", r.body)
		})
	}
}

// TestIDsAreEscaped checks that ids are written as JSON strings, whatever bytes they hold.
func TestIDsAreEscaped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	odd := []string{`quote"`, `back\slash`, "new\nline", "<tag>&", "tab\t", "ünï"}
	var events []event
	for _, id := range odd {
		events = append(events, event{user: id, hotel: id, prices: map[string]int64{id: 7}})
	}
	f.apply(t, events)
	for _, path := range []string{"/users", "/hotels", "/advertisers"} {
		_, data := decodeCounts(t, get(t, f, path).body)
		var got []string
		for _, e := range data {
			got = append(got, e.id)
		}
		if want := slices.Sorted(slices.Values(odd)); !reflect.DeepEqual(got, want) {
			t.Errorf("GET %s ids = %q, want %q", path, got, want)
		}
	}
	hotels := decodeMinPrices(t, get(t, f, "/hotel_min_offer_per_advertiser").body)
	for _, h := range hotels {
		if len(h.prices) != 1 || h.prices[0] != (entry{h.hotel, 7}) {
			t.Errorf("hotel %q prices = %v, want [%q:7]", h.hotel, h.prices, h.hotel)
		}
	}
	if len(hotels) != len(odd) {
		t.Errorf("%d hotels, want %d", len(hotels), len(odd))
	}
}
