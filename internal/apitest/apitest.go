// Package apitest folds events into the metrics the API must serve, independently of the
// aggregator and the Redis view, and compares a running API with them.
package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/searchflow/searchflow/event"
)

// Expected is the ground truth of the four metric endpoints.
type Expected struct {
	Events, Invalid     int64
	Users, Hotels, Advs map[string]int64
	Min                 map[string]map[string]int64
}

// New returns an empty truth.
func New() *Expected {
	return &Expected{Users: map[string]int64{}, Hotels: map[string]int64{}, Advs: map[string]int64{},
		Min: map[string]map[string]int64{}}
}

// Add folds one search: each offer list is every price the advertiser quoted.
func (e *Expected) Add(user, hotel string, offers map[string][]int64) {
	e.Events++
	e.Users[user]++
	e.Hotels[hotel]++
	if e.Min[hotel] == nil {
		e.Min[hotel] = map[string]int64{}
	}
	for adv, prices := range offers {
		e.Advs[adv]++
		for _, p := range prices {
			if cur, ok := e.Min[hotel][adv]; !ok || p < cur {
				e.Min[hotel][adv] = p
			}
		}
	}
}

// AddRaw folds one raw record if it is valid and counts it as invalid otherwise.
func (e *Expected) AddRaw(value []byte) {
	p, err := event.Transform(value)
	if err != nil {
		e.Invalid++
		return
	}
	offers := make(map[string][]int64, len(p.AdvertiserMinPrices))
	for adv, price := range p.AdvertiserMinPrices {
		offers[adv] = []int64{price}
	}
	e.Add(p.UserID, p.HotelID, offers)
}

type countsBody struct {
	Count int64            `json:"count"`
	Data  map[string]int64 `json:"data"`
}

func get(base, path string, into any) (http.Header, error) {
	resp, err := http.Get(base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", path, resp.StatusCode, body)
	}
	return resp.Header, json.Unmarshal(body, into)
}

// Diff compares the API at base (e.g. "http://127.0.0.1:5000") with e and describes the first
// differences; "" means equal.
func (e *Expected) Diff(base string) string {
	for path, want := range map[string]map[string]int64{"/users": e.Users, "/hotels": e.Hotels, "/advertisers": e.Advs} {
		var b countsBody
		hdr, err := get(base, path+"?limit=100000", &b)
		if err != nil {
			return err.Error()
		}
		if b.Count != int64(len(want)) || hdr.Get("X-Total-Count") != strconv.Itoa(len(want)) {
			return fmt.Sprintf("%s: count %d, X-Total-Count %q, want %d", path, b.Count, hdr.Get("X-Total-Count"), len(want))
		}
		if !reflect.DeepEqual(b.Data, want) {
			for k, v := range want {
				if b.Data[k] != v {
					return fmt.Sprintf("%s: %s = %d, want %d", path, k, b.Data[k], v)
				}
			}
			return fmt.Sprintf("%s: unexpected entries", path)
		}
	}
	var prices map[string]map[string]int64
	hdr, err := get(base, "/hotel_min_offer_per_advertiser?limit=100000", &prices)
	if err != nil {
		return err.Error()
	}
	if hdr.Get("X-Total-Count") != strconv.Itoa(len(e.Min)) {
		return fmt.Sprintf("/hotel_min_offer_per_advertiser: X-Total-Count %q, want %d", hdr.Get("X-Total-Count"), len(e.Min))
	}
	if !reflect.DeepEqual(prices, e.Min) {
		for h, m := range e.Min {
			if !reflect.DeepEqual(prices[h], m) {
				return fmt.Sprintf("/hotel_min_offer_per_advertiser: hotel %s = %v, want %v", h, prices[h], m)
			}
		}
		return "/hotel_min_offer_per_advertiser: unexpected hotels"
	}
	return ""
}

// WaitEqual polls the API until it equals e, failing the test with the last difference when
// the deadline passes.
func (e *Expected) WaitEqual(t testing.TB, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	diff := ""
	for time.Now().Before(deadline) {
		if diff = e.Diff(base); diff == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the API never equalled the truth within %s: %s", timeout, diff)
}
