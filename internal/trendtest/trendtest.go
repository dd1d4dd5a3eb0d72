// Package trendtest is the tests' independent truth of the trends: it folds the processed and
// hotel topics as read from Kafka, partition by partition in offset order, with the rules the
// README states (stream time per partition, lateness, epoch-aligned buckets, a query at the
// highest stream time reading the buckets from floor((now-W)/b) to floor(now/b)), written here
// again with encoding/json and plain arithmetic rather than with the code it checks. It then
// compares the /trends endpoints with that fold.
package trendtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/trends"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Window is one window as the API names it, with its size and bucket size in seconds.
type Window struct {
	Name            string
	Seconds, Bucket int64
}

// Truth is what the /trends endpoints must answer once the pipeline is idle.
type Truth struct {
	Now         int64 // the highest stream time of any partition; 0 with none
	HasNow      bool
	LateUsers   int64 // late events of the processed topic
	LateHotels  int64 // late events of the hotel topic
	Windows     map[string]*WindowTruth
	windowsList []Window
}

// WindowTruth is one window's counts and minimum prices.
type WindowTruth struct {
	Users, Hotels, Advertisers map[string]int64
	Prices                     map[string]map[string]int64
}

// timed is one on-time event of a partition.
type timed struct {
	at     int64
	user   string
	hotel  string
	prices map[string]int64
}

// doc is what the fold reads of a processed or hotel record.
type doc struct {
	UserID    string           `json:"user_id"`
	HotelID   string           `json:"hotel_id"`
	Timestamp json.Number      `json:"search_timestamp"`
	Prices    map[string]int64 `json:"advertiser_min_prices"`
}

// Fold folds the two topics' committed records (as kafkatest.ReadCommittedToEnd returns them).
func Fold(processed, hotel []*kgo.Record, lateness time.Duration, windows []Window) (Truth, error) {
	tr := Truth{Windows: map[string]*WindowTruth{}, windowsList: windows}
	users, lateU, nowU, okU, err := foldTopic(processed, int64(lateness/time.Second))
	if err != nil {
		return tr, err
	}
	hotels, lateH, nowH, okH, err := foldTopic(hotel, int64(lateness/time.Second))
	if err != nil {
		return tr, err
	}
	tr.LateUsers, tr.LateHotels = lateU, lateH
	tr.HasNow = okU || okH
	tr.Now = max(nowU, nowH)
	if !okU {
		tr.Now = nowH
	} else if !okH {
		tr.Now = nowU
	}
	for _, w := range windows {
		wt := &WindowTruth{Users: map[string]int64{}, Hotels: map[string]int64{}, Advertisers: map[string]int64{},
			Prices: map[string]map[string]int64{}}
		first, last := floorDiv(tr.Now-w.Seconds, w.Bucket), floorDiv(tr.Now, w.Bucket)
		in := func(at int64) bool { k := floorDiv(at, w.Bucket); return tr.HasNow && k >= first && k <= last }
		for _, e := range users {
			if in(e.at) {
				wt.Users[e.user]++
			}
		}
		for _, e := range hotels {
			if !in(e.at) {
				continue
			}
			wt.Hotels[e.hotel]++
			if wt.Prices[e.hotel] == nil {
				wt.Prices[e.hotel] = map[string]int64{}
			}
			for adv, p := range e.prices {
				wt.Advertisers[adv]++
				if low, ok := wt.Prices[e.hotel][adv]; !ok || p < low {
					wt.Prices[e.hotel][adv] = p
				}
			}
		}
		tr.Windows[w.Name] = wt
	}
	return tr, nil
}

// foldTopic returns the on-time events of a topic's records, the number of late ones and the
// highest stream time of its partitions.
func foldTopic(records []*kgo.Record, lateness int64) (events []timed, late, now int64, hasNow bool, err error) {
	type partition struct {
		stream  int64
		set     bool
		sources map[string]int64 // source partition -> highest source offset: later copies drop
	}
	parts := map[int32]*partition{}
	for _, r := range records {
		p := parts[r.Partition]
		if p == nil {
			p = &partition{sources: map[string]int64{}}
			parts[r.Partition] = p
		}
		if sp, so, ok := source(r); ok {
			if high, seen := p.sources[sp]; seen && so <= high {
				continue // a copy the transformer produced twice
			}
			p.sources[sp] = so
		}
		var d doc
		dec := json.NewDecoder(bytes.NewReader(r.Value))
		dec.UseNumber()
		if err := dec.Decode(&d); err != nil {
			return nil, 0, 0, false, fmt.Errorf("trendtest: %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		f, err := d.Timestamp.Float64()
		if err != nil {
			return nil, 0, 0, false, fmt.Errorf("trendtest: %s/%d@%d: search_timestamp %q", r.Topic, r.Partition, r.Offset, d.Timestamp)
		}
		at := int64(math.Floor(f))
		if p.set && p.stream-at > lateness {
			late++
			continue
		}
		if !p.set || at > p.stream {
			p.stream, p.set = at, true
		}
		events = append(events, timed{at: at, user: d.UserID, hotel: d.HotelID, prices: d.Prices})
	}
	for _, p := range parts {
		if p.set && (!hasNow || p.stream > now) {
			now, hasNow = p.stream, true
		}
	}
	return events, late, now, hasNow, nil
}

func source(r *kgo.Record) (string, int64, bool) {
	sp, so := "", int64(-1)
	for _, h := range r.Headers {
		switch h.Key {
		case "source_partition":
			sp = string(h.Value)
		case "source_offset":
			so, _ = strconv.ParseInt(string(h.Value), 10, 64)
		}
	}
	return sp, so, sp != "" && so >= 0
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Diff compares the API at base with the truth: every window's four endpoints, their counts and
// X-Trends-Now. It returns "" when they agree.
func (tr Truth) Diff(base string) string {
	for _, w := range tr.windowsList {
		wt := tr.Windows[w.Name]
		for path, want := range map[string]map[string]int64{"users": wt.Users, "hotels": wt.Hotels, "advertisers": wt.Advertisers} {
			var got struct {
				Count int64            `json:"count"`
				Data  map[string]int64 `json:"data"`
			}
			h, err := apitest.Get(base, "/trends/"+path+"?limit=100000&window="+url.QueryEscape(w.Name), &got)
			if err != nil {
				return err.Error()
			}
			if d := tr.checkNow(h); d != "" {
				return d
			}
			if got.Count != int64(len(want)) || !maps.Equal(got.Data, want) {
				return fmt.Sprintf("/trends/%s?window=%s: count %d, %v; want %d, %v", path, w.Name, got.Count, got.Data, len(want), want)
			}
		}
		var prices map[string]map[string]int64
		if _, err := apitest.Get(base, "/trends/hotel_min_offer_per_advertiser?limit=100000&window="+url.QueryEscape(w.Name), &prices); err != nil {
			return err.Error()
		}
		if !reflect.DeepEqual(prices, wt.Prices) && !(len(prices) == 0 && len(wt.Prices) == 0) {
			return fmt.Sprintf("/trends/hotel_min_offer_per_advertiser?window=%s: %v, want %v", w.Name, prices, wt.Prices)
		}
	}
	return ""
}

// checkNow compares X-Trends-Now with the truth's now.
func (tr Truth) checkNow(h http.Header) string {
	got := h.Get("X-Trends-Now")
	want := ""
	if tr.HasNow {
		want = time.Unix(tr.Now, 0).UTC().Format(time.RFC3339)
	}
	if got != want {
		return fmt.Sprintf("X-Trends-Now %q, want %q", got, want)
	}
	return ""
}

// Wait waits until the API at base agrees with the fold of the processed and hotel topics of
// the broker at kafka, and agrees again once the pipeline is idle: an over-count that lands late
// is caught. It returns the truth.
func Wait(t testing.TB, base, kafka string, lateness time.Duration, windows []Window) Truth {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 1; ; attempt++ {
		apitest.WaitIdle(t, base)
		processed := kafkatest.ReadCommittedToEnd(t, kafka, "processed_events")
		hotels := kafkatest.ReadCommittedToEnd(t, kafka, "processed_events_by_hotel")
		truth, err := Fold(processed, hotels, lateness, windows)
		if err != nil {
			t.Fatal(err)
		}
		diff := truth.Diff(base)
		if diff == "" {
			apitest.WaitIdle(t, base)
			if diff = truth.Diff(base); diff == "" {
				return truth
			}
			t.Fatalf("the trends agreed with the fold of the topics, then differed once idle: %s", diff)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trends differ from the fold of the topics after %d tries: %s", attempt, diff)
		}
	}
}

// Windows names the windows of spec (TREND_WINDOWS) for the fold.
func Windows(t testing.TB, spec string) []Window {
	t.Helper()
	ws, err := trends.ParseWindows(spec)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Window, len(ws))
	for i, w := range ws {
		out[i] = Window{Name: w.Name(), Seconds: w.Seconds(), Bucket: w.BucketSeconds()}
	}
	return out
}
