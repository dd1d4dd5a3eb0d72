package aggregator

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// batchBudget is the argument size at which a fold closes its batch. One more record can add at
// most about two processed-record limits (1 MiB each, escaped once more in the script's JSON), so
// a batch stays under view.MaxBatchBytes, which Apply refuses past.
const batchBudget = view.MaxBatchBytes / 2

// folded is what fold made of a run of records.
type folded struct {
	batch       *view.Batch
	events      int64           // events counted in the batch
	copies      int64           // copies of applied events dropped (see snapshot.claim)
	byPart      map[int32]tally // events and copies per partition, for a batch the view took in part
	late        int64           // events counted all time but in no window (see windower)
	used        int             // records of the run it covers: it stops at batchBudget
	undecodable []*kgo.Record   // records it could not read: dead-letter them before the apply
}

// tally is what a fold counted of one partition.
type tally struct{ events, copies, late int64 }

// priceBounds is what a fold reads of the minimum-price cache.
type priceBounds interface {
	// known returns, per advertiser of hotel, a price the view holds or beats (nil if none): of
	// every offer, and of the cheapest-per-search minimums.
	known(hotel string) (every, wins map[string]int64)
	// knownInBucket is known for the minimums of one bucket of trend window w.
	knownInBucket(w int, bucket int64, hotel string) map[string]int64
}

// fold coalesces the records the view does not hold yet, as held says, into one batch for role's
// shards, until the batch reaches batchBudget: for user shards the users, for hotel shards the
// hotels, the advertisers and their prices. Records already applied, copies and records already dead-lettered
// only move the batch's offsets on. A price at or above one in bounds is left out: the view
// already holds it or a lower one. fold reads and writes nothing but its result.
func fold(records []*kgo.Record, held snapshot, bounds priceBounds, role view.Role, spec view.TrendSpec) folded {
	f := folded{batch: view.NewBatch(), used: len(records), byPart: map[int32]tally{}}
	b := f.batch
	win := newWindower(spec, held, b, bounds)
	defer win.finish()
	var facts event.ProcessedFacts
	for i, r := range records {
		if b.Bytes() >= batchBudget {
			f.used = i
			break
		}
		src := sourceOf(r)
		switch held.claim(b, r, src) {
		case alreadyHeld:
			continue
		case copied:
			f.copies++
			t := f.byPart[r.Partition]
			t.copies++
			f.byPart[r.Partition] = t
			continue
		case deadLettered:
			continue
		}
		user, keyed := "", false
		if role == view.UserShards {
			user, keyed = transformersUser(r, src)
		}
		if !keyed && parse(role, r.Value, &facts) != nil {
			// Only the transformer writes this topic; anything else is dead-lettered before the
			// batch that moves past it is applied.
			f.undecodable = append(f.undecodable, r)
			continue
		}
		at, timed := int64(0), false
		switch {
		case !keyed:
			at, timed = facts.EventTime, facts.Timed
			if role == view.UserShards {
				user = facts.UserID
			}
		case win.on():
			if at, timed = event.EventTimeAfterUser(r.Value, len(user)); !timed && parse(role, r.Value, &facts) == nil {
				at, timed = facts.EventTime, facts.Timed
			}
		}
		// The windows first: a window that shares the batch's counts (see windower) must take its
		// own copy before this event is counted, if the event does not belong in it.
		late := win.on() && !win.event(r.Partition, at, timed, user, &facts)
		if role == view.UserShards {
			b.Count(r.Partition, view.Users, user)
		} else {
			foldHotel(b, r.Partition, &facts, bounds)
		}
		t := f.byPart[r.Partition]
		if late {
			f.late++
			t.late++
		}
		f.events++
		t.events++
		f.byPart[r.Partition] = t
	}
	return f
}

// transformersUser returns the user of a processed record the transformer wrote without parsing
// the document — the user shards count nothing else. Such a record carries a source position and
// is keyed by its user id, and its document begins with that user id ({"user_id":"<key>", the
// transformer's order). Anything else (another writer, an id the document had to escape) is
// parsed, and dead-lettered if it cannot be read.
func transformersUser(r *kgo.Record, src source) (string, bool) {
	if !src.ok || len(r.Key) == 0 || !event.BeginsWithUser(r.Value, r.Key) {
		return "", false
	}
	return string(r.Key), true
}

// parse reads a record of role's topic: a processed event (users), or a hotel record.
func parse(role view.Role, value []byte, f *event.ProcessedFacts) error {
	if role == view.HotelShards {
		return event.ParseHotel(value, f)
	}
	return event.ParseProcessed(value, f)
}

// foldHotel counts an event's hotel and advertisers in partition p's part of b, and offers its
// prices that may lower a minimum the view holds.
//
// The search's cheapest offer — the lowest price, ties to the first advertiser name, the
// transformer's min_offer — competes for the hotel's cheapest-per-search minimum of its advertiser.
func foldHotel(b *view.Batch, p int32, facts *event.ProcessedFacts, bounds priceBounds) {
	b.Count(p, view.Hotels, facts.HotelID)
	known, knownWins := bounds.known(facts.HotelID)
	win := -1
	for i, ap := range facts.Prices {
		b.Count(p, view.Advertisers, ap.Advertiser)
		if w := facts.Prices[max(win, 0)]; win < 0 || ap.Price < w.Price || ap.Price == w.Price && ap.Advertiser < w.Advertiser {
			win = i
		}
		if low, ok := known[ap.Advertiser]; ok && ap.Price >= low {
			continue
		}
		b.OfferPrice(p, facts.HotelID, ap.Advertiser, ap.Price)
	}
	if win >= 0 {
		w := facts.Prices[win]
		if low, ok := knownWins[w.Advertiser]; !ok || w.Price < low {
			b.OfferWin(p, facts.HotelID, w.Advertiser, w.Price)
		}
	}
}

// source is the raw position a processed record carries; ok is false when it carries none.
type source struct {
	partition int32
	offset    int64
	ok        bool
}

// sourceOf reads r's raw position once, for claim and for transformersUser.
func sourceOf(r *kgo.Record) source {
	p, o, ok := sourcePosition(r)
	return source{partition: p, offset: o, ok: ok}
}

// sourcePosition reads the raw partition and offset a processed record carries.
func sourcePosition(r *kgo.Record) (partition int32, offset int64, ok bool) {
	var sp, so int64 = -1, -1
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			sp, _ = strconv.ParseInt(string(h.Value), 10, 32)
		case event.HeaderSourceOffset:
			so, _ = strconv.ParseInt(string(h.Value), 10, 64)
		}
	}
	return int32(sp), so, sp >= 0 && so >= 0
}

// maxKnownPrices bounds the minimum-price cache; past it the cache starts over.
const maxKnownPrices = 1 << 20

// priceCache remembers the minimum prices the view holds, so that a fold need not send a price
// that cannot lower one. The view's minimum only ever falls, so each remembered price is an upper
// bound of what Redis holds as long as nothing else writes the view; the cache is cleared when
// the view's offsets move under the aggregator (Redis lost data, or another writer). Owned by the
// polling goroutine.
type priceCache struct {
	byHotel map[string]*knownPrices
	n       int
	// trend is, per trend window, the minimums of its latest bucket the view took: a bucket's
	// minimum only falls until the bucket closes, and then nothing counts in it any more.
	trend []bucketPrices
}

// bucketPrices is one trend bucket's minimums: hotel -> advertiser -> price.
type bucketPrices struct {
	bucket  int64
	byHotel map[string]map[string]int64
}

// knownPrices is, per advertiser of one hotel, a price the view holds or beats.
type knownPrices struct {
	every, wins map[string]int64 // of every offer; of the cheapest-per-search minimums
}

func (c *priceCache) known(hotel string) (every, wins map[string]int64) {
	if k := c.byHotel[hotel]; k != nil {
		return k.every, k.wins
	}
	return nil, nil
}

// clear forgets everything: what Redis holds is no longer what the cache remembers.
func (c *priceCache) clear() { c.byHotel, c.n, c.trend = nil, 0, nil }

func (c *priceCache) knownInBucket(w int, bucket int64, hotel string) map[string]int64 {
	if w < len(c.trend) && c.trend[w].byHotel != nil && c.trend[w].bucket == bucket {
		return c.trend[w].byHotel[hotel]
	}
	return nil
}

// rememberTrends records the trend minimums of a batch the view took, of each window's latest
// bucket.
func (c *priceCache) rememberTrends(b *view.Batch) {
	b.TrendPrices(func(w int, bucket int64, hotel, adv string, price int64) {
		for len(c.trend) <= w {
			c.trend = append(c.trend, bucketPrices{})
		}
		t := &c.trend[w]
		switch {
		case t.byHotel == nil || bucket > t.bucket:
			t.bucket, t.byHotel = bucket, map[string]map[string]int64{}
		case bucket < t.bucket:
			return
		}
		prices := t.byHotel[hotel]
		if prices == nil {
			prices = make(map[string]int64, 8)
			t.byHotel[hotel] = prices
		}
		if low, ok := prices[adv]; !ok || price < low {
			prices[adv] = price
		}
	})
}

// remember records the minimums of a batch the view took.
func (c *priceCache) remember(b *view.Batch) {
	if c.byHotel == nil || c.n > maxKnownPrices {
		c.byHotel, c.n = map[string]*knownPrices{}, 0
	}
	b.MinPrices(func(hotel, adv string, price int64) { c.keep(&c.of(hotel).every, adv, price) })
	b.WinPrices(func(hotel, adv string, price int64) { c.keep(&c.of(hotel).wins, adv, price) })
	c.rememberTrends(b)
}

// of returns hotel's entry, made when missing.
func (c *priceCache) of(hotel string) *knownPrices {
	k := c.byHotel[hotel]
	if k == nil {
		k = &knownPrices{}
		c.byHotel[hotel] = k
	}
	return k
}

// keep records price for adv in *m when it is lower than what *m holds.
func (c *priceCache) keep(m *map[string]int64, adv string, price int64) {
	if *m == nil {
		*m = make(map[string]int64, 8)
	}
	if low, ok := (*m)[adv]; !ok || price < low {
		if !ok {
			c.n++
		}
		(*m)[adv] = price
	}
}
