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

	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/internal/eventref"
)

// Expected is the ground truth of the four metric endpoints.
type Expected struct {
	Events, Invalid     int64
	Users, Hotels, Advs map[string]int64
	Min                 map[string]map[string]int64
	// Cheapest is, per hotel, each advertiser's lowest price among the searches it won: whose
	// lowest offer was its, ties to the first name (scope=cheapest_per_search).
	Cheapest map[string]map[string]int64
}

// New returns an empty truth.
func New() *Expected {
	return &Expected{Users: map[string]int64{}, Hotels: map[string]int64{}, Advs: map[string]int64{},
		Min: map[string]map[string]int64{}, Cheapest: map[string]map[string]int64{}}
}

// Add folds one search: each offer list is every price the advertiser quoted.
func (e *Expected) Add(user, hotel string, offers map[string][]int64) {
	e.Events++
	e.Users[user]++
	e.Hotels[hotel]++
	if e.Min[hotel] == nil {
		e.Min[hotel] = map[string]int64{}
	}
	winner, low := "", int64(0)
	for adv, prices := range offers {
		e.Advs[adv]++
		for _, p := range prices {
			if cur, ok := e.Min[hotel][adv]; !ok || p < cur {
				e.Min[hotel][adv] = p
			}
			if winner == "" || p < low || p == low && adv < winner {
				winner, low = adv, p
			}
		}
	}
	if winner == "" {
		return
	}
	if e.Cheapest[hotel] == nil {
		e.Cheapest[hotel] = map[string]int64{}
	}
	if cur, ok := e.Cheapest[hotel][winner]; !ok || low < cur {
		e.Cheapest[hotel][winner] = low
	}
}

// AddRaw folds one raw record if it is valid and counts it as invalid otherwise.
func (e *Expected) AddRaw(value []byte) {
	p, err := eventref.Transform(value)
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

// Get reads path of the API at base into into (JSON), failing on any status but 200.
func Get(base, path string, into any) (http.Header, error) {
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
		hdr, err := Get(base, path+"?limit=100000", &b)
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
	for scope, want := range map[string]map[string]map[string]int64{"every_offer": e.Min, "cheapest_per_search": e.Cheapest} {
		if diff := diffPrices(base, scope, want); diff != "" {
			return diff
		}
	}
	return ""
}

// diffPrices compares /hotel_min_offer_per_advertiser?scope=scope with want.
func diffPrices(base, scope string, want map[string]map[string]int64) string {
	path := "/hotel_min_offer_per_advertiser?scope=" + scope
	var prices map[string]map[string]int64
	hdr, err := Get(base, path+"&limit=100000", &prices)
	if err != nil {
		return err.Error()
	}
	if hdr.Get("X-Total-Count") != strconv.Itoa(len(want)) {
		return fmt.Sprintf("%s: X-Total-Count %q, want %d", path, hdr.Get("X-Total-Count"), len(want))
	}
	if !reflect.DeepEqual(prices, want) {
		for h, m := range want {
			if !reflect.DeepEqual(prices[h], m) {
				return fmt.Sprintf("%s: hotel %s = %v, want %v", path, h, prices[h], m)
			}
		}
		return path + ": unexpected hotels"
	}
	return ""
}

// WaitEqual polls the API until it equals e, then waits until the pipeline is idle (WaitIdle)
// and compares again: both must be equal, so an over-count that lands after the first match fails
// the test instead of going unseen. timeout bounds the first match; going idle has its own budget.
func (e *Expected) WaitEqual(t testing.TB, base string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for diff := e.Diff(base); diff != ""; diff = e.Diff(base) {
		if time.Now().After(deadline) {
			t.Fatalf("the API never equalled the truth within %s: %s", timeout, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
	equal := time.Now()
	WaitIdle(t, base)
	if diff := e.Diff(base); diff != "" {
		t.Fatalf("the API equalled the truth, then differed once nothing was left to read: %s", diff)
	}
	t.Logf("apitest: the API equalled the truth after %s, and again once idle %s later",
		equal.Sub(start).Round(time.Millisecond), time.Since(equal).Round(time.Millisecond))
}

// The daemon re-reads its consumer groups' lag every lagInterval (pipeline's lagInterval), so a
// lag of 0 on /stats may be a reading from before the last records arrived. A reading that
// differs from the first one seen is new; without one, idleness must hold for longer than that
// interval, which takes in at least one new reading. settleFor is how long the stages must stay
// idle after a new reading of 0.
const (
	lagInterval = 5 * time.Second
	idleFor     = lagInterval + 2*time.Second
	settleFor   = 1500 * time.Millisecond
	idleTimeout = 60 * time.Second
)

// WaitIdle waits until the daemon at base has nothing left to read and its stages are idle, as
// its /stats tells: every consumer lag is 0 (there the daemon does not count a transactional
// topic's trailing commit marker or aborted records) and no stage consumed, produced or applied
// anything in the last second — in every sample for settleFor once the lag reading is a new one,
// or for idleFor while it may be an old one. It does not ask /readyz: a test may end with the
// daemon rightly not ready.
func WaitIdle(t testing.TB, base string) {
	t.Helper()
	deadline := time.Now().Add(idleTimeout)
	var since time.Time // when the current idle stretch began; zero while busy
	firstLag := ""      // the first lag reading seen
	fresh := false      // a lag reading other than the first was seen: the daemon read the lag since
	last := ""          // why it was busy the last time it was
	for {
		why, lag := busy(base)
		if firstLag == "" {
			firstLag = lag
		}
		fresh = fresh || lag != "" && lag != firstLag
		need := idleFor
		if fresh {
			need = settleFor
		}
		now := time.Now()
		switch {
		case why != "":
			since, last = time.Time{}, why
		case since.IsZero():
			since = now
		case now.Sub(since) >= need:
			return
		}
		if now.After(deadline) {
			t.Fatalf("the pipeline did not stay idle within %s; last busy: %s", idleTimeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stats is the part of the /stats document that tells idleness.
type stats struct {
	Lag    map[string]map[string]int64 `json:"lag"`
	Stages map[string]struct {
		Rates map[string]map[string]float64 `json:"rates"`
	} `json:"stages"`
}

// busy reads /stats once and says why the pipeline is not idle ("" when it is) and what the lag
// reading is, as JSON ("" when /stats could not be read).
func busy(base string) (why, lag string) {
	var st stats
	if _, err := Get(base, "/stats", &st); err != nil {
		return err.Error(), ""
	}
	b, _ := json.Marshal(st.Lag) // map keys sorted: equal readings give equal strings
	lag = string(b)
	if len(st.Lag) == 0 {
		return "/stats shows no consumer lag yet", lag
	}
	for topic, parts := range st.Lag {
		for p, n := range parts {
			if n != 0 {
				return fmt.Sprintf("%s/%s: %d records left to read", topic, p, n), lag
			}
		}
	}
	consumers := 0
	for name, s := range st.Stages {
		rates := s.Rates["1s"]
		if _, ok := rates[counters.Consumed]; ok {
			consumers++
		}
		for _, work := range []string{counters.Consumed, counters.Produced, counters.Applied} {
			if rates[work] != 0 {
				return fmt.Sprintf("%s %s %.0f records in the last second", name, work, rates[work]), lag
			}
		}
	}
	if consumers == 0 {
		return "no stage reports a consumed rate on /stats", lag
	}
	return "", lag
}
