package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"testing"
)

// TestListFormMatchesObjectForm: ?format=list answers the same page as the default object form,
// in the same order, as arrays a client cannot reorder — counts as {"count","data":[{id,count}]},
// minimum prices as [{hotel_id, advertisers:[{advertiser, eurocents}]}] with each hotel's
// advertisers cheapest first — and a page's next link keeps the form.
func TestListFormMatchesObjectForm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)

	for _, path := range []string{"/users", "/hotels", "/advertisers"} {
		count, want := decodeCounts(t, get(t, f, path).body)
		r := get(t, f, path+"?format=list")
		if r.code != http.StatusOK {
			t.Fatalf("%s?format=list: %d %s", path, r.code, r.body)
		}
		var list struct {
			Count int64 `json:"count"`
			Data  []struct {
				ID    string `json:"id"`
				Count int64  `json:"count"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.body, &list); err != nil {
			t.Fatalf("%s?format=list: %v in %s", path, err, r.body)
		}
		var got []entry
		for _, e := range list.Data {
			got = append(got, entry{e.ID, e.Count})
		}
		if list.Count != count || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: list form %d %v, object form %d %v", path, list.Count, got, count, want)
		}
	}

	objects := decodeMinPrices(t, get(t, f, "/hotel_min_offer_per_advertiser").body)
	var list []struct {
		HotelID     string `json:"hotel_id"`
		Advertisers []struct {
			Advertiser string `json:"advertiser"`
			Eurocents  int64  `json:"eurocents"`
		} `json:"advertisers"`
	}
	r := get(t, f, "/hotel_min_offer_per_advertiser?format=list")
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("min prices list: %v in %s", err, r.body)
	}
	if len(list) != len(objects) {
		t.Fatalf("min prices: %d hotels in the list form, %d in the object form", len(list), len(objects))
	}
	for i, h := range objects {
		cheapestFirst := append([]entry(nil), h.prices...)
		sort.Slice(cheapestFirst, func(a, b int) bool {
			return cheapestFirst[a].n < cheapestFirst[b].n || cheapestFirst[a].n == cheapestFirst[b].n && cheapestFirst[a].id < cheapestFirst[b].id
		})
		var got []entry
		for _, a := range list[i].Advertisers {
			got = append(got, entry{a.Advertiser, a.Eurocents})
		}
		if list[i].HotelID != h.hotel || !reflect.DeepEqual(got, cheapestFirst) {
			t.Errorf("hotel %d: list form %s %v, want %s %v", i, list[i].HotelID, got, h.hotel, cheapestFirst)
		}
	}

	if link := get(t, f, "/users?format=list&limit=1").header.Get("Link"); link != `</users?format=list&limit=1&offset=1>; rel="next"` {
		t.Errorf("Link %q: the next page must keep the form", link)
	}
	if r := get(t, f, "/hotels?format=csv"); r.code != http.StatusBadRequest {
		t.Errorf("format=csv: %d, want 400", r.code)
	}
}

// TestCheapestPerSearchScope: ?scope=cheapest_per_search answers each advertiser's lowest price
// among the searches it won (worked out by hand from fixedBatches below), the default scope
// every offer; an unknown scope is a 400, and a view that predates the scope a 409.
func TestCheapestPerSearchScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	load(t, f, fixedBatches)
	// Winners: h2: a2 300, a1 400, a2 350; h1: a1 450, a2 700, a2 650, a1 460; h3: a1 999;
	// h10: a4 1. a3 never wins.
	want := []hotelPrices{
		{"h1", []entry{{"a1", 450}, {"a2", 650}}},
		{"h10", []entry{{"a4", 1}}},
		{"h2", []entry{{"a1", 400}, {"a2", 300}}},
		{"h3", []entry{{"a1", 999}}},
	}
	r := get(t, f, "/hotel_min_offer_per_advertiser?scope=cheapest_per_search")
	if got := decodeMinPrices(t, r.body); r.code != http.StatusOK || !reflect.DeepEqual(got, want) {
		t.Errorf("cheapest per search: %d %v, want %v", r.code, got, want)
	}
	every := decodeMinPrices(t, get(t, f, "/hotel_min_offer_per_advertiser?scope=every_offer").body)
	if !reflect.DeepEqual(every, decodeMinPrices(t, get(t, f, "/hotel_min_offer_per_advertiser").body)) || len(every[0].prices) != 3 {
		t.Errorf("every_offer is not the default: %v", every)
	}
	if r := get(t, f, "/hotel_min_offer_per_advertiser?scope=winners"); r.code != http.StatusBadRequest {
		t.Errorf("scope=winners: %d, want 400", r.code)
	}

	c := f.redis.Client(t)
	if err := c.Do(context.Background(), c.B().Hdel().Key("searchflow:layout").Field("cheapest").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if r := get(t, f, "/hotel_min_offer_per_advertiser?scope=cheapest_per_search"); r.code != http.StatusConflict {
		t.Errorf("a view that predates the scope: %d %s, want 409", r.code, r.body)
	}
}
