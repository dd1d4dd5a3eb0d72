// Package viewtest fills a view the way the two aggregators do, for tests of its readers: each
// event's user is counted in the user shard of its processed partition, its hotel, advertisers
// and prices in the hotel shard of its hotel partition.
package viewtest

import (
	"context"
	"hash/fnv"
	"testing"

	"github.com/searchflow/searchflow/view"
)

// Event is one search as the aggregators fold it.
type Event struct {
	User, Hotel string
	Prices      map[string]int64 // advertiser -> lowest eurocents in the event
}

// Loader applies events to one view, keeping each shard's offsets.
type Loader struct {
	v      *view.View
	layout view.Layout
	next   [2]map[int32]int64 // role -> partition -> next offset
}

// Claim claims a layout of n partitions per topic in v and returns a loader for it.
func Claim(t testing.TB, v *view.View, n int) *Loader {
	t.Helper()
	l := &Loader{v: v, layout: view.Layout{UsersTopic: "searches", Users: n, HotelsTopic: "searches_by_hotel", Hotels: n}}
	if err := v.Claim(context.Background(), l.layout); err != nil {
		t.Fatal(err)
	}
	l.next = [2]map[int32]int64{{}, {}}
	return l
}

// Partition is the partition of key among n, like a keyed producer's partitioner (FNV here: any
// fixed function of the key will do for the view).
func Partition(key string, n int) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int32(h.Sum32() % uint32(n))
}

// Apply applies events as one batch per topic, each event one record of its partitions.
func (l *Loader) Apply(t testing.TB, events []Event) {
	t.Helper()
	users, hotels := view.NewBatch(), view.NewBatch()
	for _, e := range events {
		up, hp := Partition(e.User, l.layout.Users), Partition(e.Hotel, l.layout.Hotels)
		users.Count(up, view.Users, e.User)
		l.advance(users, view.UserShards, up)
		hotels.Count(hp, view.Hotels, e.Hotel)
		win, low := "", int64(0)
		for adv, price := range e.Prices {
			hotels.Count(hp, view.Advertisers, adv)
			hotels.OfferPrice(hp, e.Hotel, adv, price)
			if win == "" || price < low || price == low && adv < win {
				win, low = adv, price
			}
		}
		if win != "" {
			hotels.OfferWin(hp, e.Hotel, win, low)
		}
		l.advance(hotels, view.HotelShards, hp)
	}
	ctx := context.Background()
	if err := l.v.Apply(ctx, view.UserShards, users); err != nil {
		t.Fatalf("viewtest: apply users: %v", err)
	}
	if err := l.v.Apply(ctx, view.HotelShards, hotels); err != nil {
		t.Fatalf("viewtest: apply hotels: %v", err)
	}
}

// advance moves partition p of role on by one record in b.
func (l *Loader) advance(b *view.Batch, r view.Role, p int32) {
	o, seen := b.Offsets[p]
	if !seen {
		o.Expect = view.NoOffset
		if n, ok := l.next[r][p]; ok {
			o.Expect = n
		}
		o.Next = o.Expect
		if o.Next < 0 {
			o.Next = 0
		}
	}
	o.Next++
	b.Offsets[p] = o
	l.next[r][p] = o.Next
}
