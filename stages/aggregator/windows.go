package aggregator

import (
	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// windower folds the events of one run into the batch's trend buckets. Each partition has a
// stream time, the highest event time of its events so far (the view stores it with the
// partition's offset). An event more than the lateness behind it is late: it counts all time
// and in no window, and moves nothing. Every other event moves the stream time up to its own
// and counts in the bucket of its time in each window that is still open (a bucket the stream
// time has left behind by a whole window can never be read again, see view/trends.go).
//
// An event without a usable time (a hotel record written before trends existed) is late too.
type windower struct {
	spec    view.TrendSpec
	b       *view.Batch
	before  map[int32]trends.StreamTime // as the view holds them
	streams map[int32]trends.StreamTime // after the events so far
	touched map[int32]bool              // partitions with an on-time event in the run
	bounds  priceBounds                 // bucket minimums the view holds: a price at or above is left out
}

func newWindower(spec view.TrendSpec, held snapshot, b *view.Batch, bounds priceBounds) *windower {
	w := &windower{spec: spec, b: b, bounds: bounds}
	if len(spec.Windows) > 0 {
		w.before, w.streams, w.touched = map[int32]trends.StreamTime{}, map[int32]trends.StreamTime{}, map[int32]bool{}
		for p, pos := range held {
			w.before[p], w.streams[p] = pos.stream, pos.stream
		}
	}
	return w
}

// on reports whether the view keeps trends.
func (w *windower) on() bool { return len(w.spec.Windows) > 0 }

// event folds one on-time or late event of partition p at event time at (timed false: none); for
// user shards user is its user, for hotel shards facts holds it. It reports whether it was on
// time.
func (w *windower) event(p int32, at int64, timed bool, user string, facts *event.ProcessedFacts) bool {
	st := w.streams[p]
	if !timed || st.Observe(at, w.spec.Lateness) {
		return false
	}
	w.streams[p], w.touched[p] = st, true
	n := len(w.spec.Windows)
	for i, win := range w.spec.Windows {
		bucket := win.BucketOf(at)
		if bucket < trends.BucketIndex(st.T-win.Seconds(), win.BucketSeconds()) {
			continue // already closed: no query reads it again
		}
		if user != "" {
			w.b.TrendCount(p, n, i, bucket, view.Users, user)
			continue
		}
		w.b.TrendCount(p, n, i, bucket, view.Hotels, facts.HotelID)
		known := w.bounds.knownInBucket(i, bucket, facts.HotelID)
		for _, ap := range facts.Prices {
			w.b.TrendCount(p, n, i, bucket, view.Advertisers, ap.Advertiser)
			if low, ok := known[ap.Advertiser]; ok && ap.Price >= low {
				continue
			}
			w.b.TrendPrice(p, n, i, bucket, facts.HotelID, ap.Advertiser, ap.Price)
		}
	}
	return true
}

// finish records, for every partition with an on-time event, the stream times before and after
// the run.
func (w *windower) finish() {
	for p := range w.touched {
		w.b.StreamTimes(p, len(w.spec.Windows), w.before[p], w.streams[p])
	}
}
