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
	events      int64         // events counted in the batch
	duplicates  int64         // copies dropped (see duplicate)
	used        int           // records of the run it covers: it stops at batchBudget
	undecodable []*kgo.Record // records it could not read: dead-letter them before the apply
}

// fold coalesces the records the view does not hold yet into one batch, until the batch reaches
// batchBudget. Records already applied, copies and records already dead-lettered only move the
// offsets on.
func (a *Aggregator) fold(records []*kgo.Record) folded {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := folded{batch: view.NewBatch(), used: len(records)}
	b := f.batch
	for i, r := range records {
		if b.Bytes() >= batchBudget {
			f.used = i
			break
		}
		next, owned := a.next[r.Partition]
		if !owned || r.Offset < next {
			continue
		}
		o, seen := b.Offsets[r.Partition]
		if !seen {
			o.Expect = next
		}
		o.Next = r.Offset + 1
		b.Offsets[r.Partition] = o
		if a.duplicate(b, r) {
			f.duplicates++
			continue
		}
		if a.skip[r.Partition][r.Offset] {
			continue
		}
		if err := event.ParseProcessed(r.Value, &a.facts); err != nil {
			// Only the transformer writes this topic; anything else is dead-lettered before the
			// batch that moves past it is applied.
			f.undecodable = append(f.undecodable, r)
			continue
		}
		facts := &a.facts
		b.Count(facts.UserID, facts.HotelID)
		known := a.minKnown[facts.HotelID]
		for _, ap := range facts.Prices {
			b.CountAdvertiser(ap.Advertiser)
			if low, ok := known[ap.Advertiser]; ok && ap.Price >= low {
				continue // the view already holds this price or a lower one
			}
			b.OfferPrice(facts.HotelID, ap.Advertiser, ap.Price)
		}
		f.events++
	}
	return f
}

// duplicate reports whether r is an event the view already holds under another offset: the
// transformer produced it twice, which the embedded broker can cause when it dies in the middle of
// committing a transaction (it writes the commit markers partition by partition, so a crash can
// leave one partition's copy committed while the raw offsets roll back). Records of one raw
// partition reach a processed partition in raw-offset order, so a source offset at or below the
// highest one applied is a repeat. Otherwise it raises the batch's watermark. Called with mu held.
func (a *Aggregator) duplicate(b *view.Batch, r *kgo.Record) bool {
	sp, so, ok := sourcePosition(r)
	if !ok {
		return false // no source position: nothing to compare
	}
	srcs := b.Sources[r.Partition]
	high, seen := srcs[sp]
	if !seen {
		high, seen = a.sources[r.Partition][sp]
	}
	if seen && so <= high {
		return true
	}
	if srcs == nil {
		srcs = map[int32]int64{}
		b.Sources[r.Partition] = srcs
	}
	srcs[sp] = so
	return false
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

// rememberPrices records the minimums a successful apply wrote. The view's minimum only ever
// falls, so each remembered price is an upper bound of what Redis holds, and a later price at or
// above it can be skipped without asking Redis — the cache is only forgotten when the view's
// offsets move under us (Redis lost data, or another writer), see resolve.
func (a *Aggregator) rememberPrices(b *view.Batch) {
	if a.minKnown == nil || a.knownPrices > maxKnownPrices {
		a.minKnown, a.knownPrices = map[string]map[string]int64{}, 0
	}
	b.MinPrices(func(hotel, adv string, price int64) {
		known := a.minKnown[hotel]
		if known == nil {
			known = make(map[string]int64, 8)
			a.minKnown[hotel] = known
		}
		if low, ok := known[adv]; !ok || price < low {
			if !ok {
				a.knownPrices++
			}
			known[adv] = price
		}
	})
}
