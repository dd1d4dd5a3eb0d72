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
	held    snapshot                    // the stream times the view holds
	streams map[int32]trends.StreamTime // after the run's on-time events, for the partitions it has one of
	bounds  priceBounds                 // bucket minimums the view holds: a price at or above is left out
	modes   map[int32][]windowMode      // per partition, per window
}

// windowMode is how a window of a partition holds the run's counts. Usually every event of a
// batch is on time and in the same bucket of a window: then the window's counts are the batch's
// all-time counts, and the batch sends them once (view.Batch.TrendShare). The first event that
// breaks that gives the window its own copy, and from then on it counts apart.
type windowMode struct {
	state  uint8 // modeNone, modeShared or modeOwn
	bucket int64 // the shared bucket
}

const (
	modeNone uint8 = iota
	modeShared
	modeOwn
)

func newWindower(spec view.TrendSpec, held snapshot, b *view.Batch, bounds priceBounds) *windower {
	return &windower{spec: spec, b: b, held: held, bounds: bounds,
		streams: map[int32]trends.StreamTime{}, modes: map[int32][]windowMode{}}
}

// on reports whether the view keeps trends.
func (w *windower) on() bool { return len(w.spec.Windows) > 0 }

// event folds one on-time or late event of partition p at event time at (timed false: none); for
// user shards user is its user, for hotel shards facts holds it. It reports whether it was on
// time. It runs before the event is counted all time (see windowMode).
func (w *windower) event(p int32, at int64, timed bool, user string, facts *event.ProcessedFacts) bool {
	st, seen := w.streams[p]
	if !seen {
		st = w.held[p].stream
	}
	late := !timed || st.Observe(at, w.spec.Lateness)
	if !late {
		w.streams[p] = st
	}
	modes := w.modes[p]
	if modes == nil {
		modes = make([]windowMode, len(w.spec.Windows))
		w.modes[p] = modes
	}
	n := len(w.spec.Windows)
	for i, win := range w.spec.Windows {
		bucket := win.BucketOf(at)
		// A bucket the stream time has left a whole window behind is never read again.
		counted := !late && bucket >= trends.BucketIndex(st.T-win.Seconds(), win.BucketSeconds())
		m := &modes[i]
		switch {
		case m.state == modeNone && counted:
			m.state, m.bucket = modeShared, bucket
			w.b.TrendShare(p, n, i, bucket)
		case m.state == modeNone:
			m.state = modeOwn
		case m.state == modeShared && (!counted || bucket != m.bucket):
			w.b.TrendUnshare(p, n, i)
			m.state = modeOwn
		}
		if !counted {
			continue
		}
		if m.state == modeOwn {
			w.countOwn(p, i, bucket, user, facts)
		}
		if user == "" {
			w.offerPrices(p, i, bucket, facts)
		}
	}
	return !late
}

// countOwn counts the event in bucket of window i, which counts apart.
func (w *windower) countOwn(p int32, i int, bucket int64, user string, facts *event.ProcessedFacts) {
	n := len(w.spec.Windows)
	if user != "" {
		w.b.TrendCount(p, n, i, bucket, view.Users, user)
		return
	}
	w.b.TrendCount(p, n, i, bucket, view.Hotels, facts.HotelID)
	for _, ap := range facts.Prices {
		w.b.TrendCount(p, n, i, bucket, view.Advertisers, ap.Advertiser)
	}
}

// offerPrices lets the event's prices compete for bucket's minimums of window i, but those at or
// above what the view holds.
func (w *windower) offerPrices(p int32, i int, bucket int64, facts *event.ProcessedFacts) {
	known := w.bounds.knownInBucket(i, bucket, facts.HotelID)
	for _, ap := range facts.Prices {
		if low, ok := known[ap.Advertiser]; ok && ap.Price >= low {
			continue
		}
		w.b.TrendPrice(p, len(w.spec.Windows), i, bucket, facts.HotelID, ap.Advertiser, ap.Price)
	}
}

// finish records, for every partition with an on-time event, the stream times before and after
// the run.
func (w *windower) finish() {
	for p, st := range w.streams {
		w.b.StreamTimes(p, len(w.spec.Windows), w.held[p].stream, st)
	}
}
