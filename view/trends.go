package view

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/searchflow/searchflow/trends"
)

// Trends: event-time windows of the counts and minimum prices, kept in each shard beside its
// all-time keys and written by the same apply script, with the same offsets check.
//
// Per shard and window W (bucket size b, see trends.Window):
//
//	{tag}:trend:<W>:<kind>            sorted set, score = -count: the events of the shard's open
//	                                  buckets, summed (the window as the shard sees it)
//	{tag}:trend:<W>:<kind>:<k>        hash, id -> events: the events of bucket k alone
//	{tag}:trendmin:<W>:<k>            hash, hotel -> JSON {advertiser: "price", ...}: bucket k's
//	                                  lowest price of each advertiser (hotel shards)
//	{tag}:state "stream"              the partition's stream time, written with its offset
//
// W and k are in seconds and bucket indexes (trends.BucketIndex). A bucket k is open while it
// can be part of a query: k ≥ floor((st-W)/b), st the partition's stream time. Since the "now" of
// a query is at least every partition's stream time, a bucket before that can never be read
// again: the apply that moves the stream time past it subtracts it from the sum and deletes it.
// That is sooner than trends.Window.Retired (which also waits out the lateness), so a shard holds
// at most W/b + 1 buckets of each window and kind.

// TrendSpec is what a view keeps trends for: its windows and the lateness that decides which
// events count in them. The zero value keeps none.
type TrendSpec struct {
	Windows  []trends.Window
	Lateness time.Duration
}

// String is the spec as the layout stores it: "late=<seconds>;w=<seconds>,<seconds>", or "" for
// none.
func (s TrendSpec) String() string {
	if len(s.Windows) == 0 {
		return ""
	}
	ws := make([]string, len(s.Windows))
	for i, w := range s.Windows {
		ws[i] = strconv.FormatInt(w.Seconds(), 10)
	}
	return fmt.Sprintf("late=%d;w=%s", int64(s.Lateness/time.Second), strings.Join(ws, ","))
}

// parseTrendSpec reads what String wrote.
func parseTrendSpec(text string) (TrendSpec, error) {
	if text == "" {
		return TrendSpec{}, nil
	}
	late, ws, ok := strings.Cut(text, ";w=")
	n, err := strconv.ParseInt(strings.TrimPrefix(late, "late="), 10, 64)
	if !ok || !strings.HasPrefix(late, "late=") || err != nil || n < 0 {
		return TrendSpec{}, fmt.Errorf("view: trend spec %q is not late=<s>;w=<s>,...", text)
	}
	spec := TrendSpec{Lateness: time.Duration(n) * time.Second}
	for _, f := range strings.Split(ws, ",") {
		sec, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return TrendSpec{}, fmt.Errorf("view: trend spec %q: window %q", text, f)
		}
		w, err := trends.NewWindow(time.Duration(sec) * time.Second)
		if err != nil {
			return TrendSpec{}, fmt.Errorf("view: trend spec %q: %w", text, err)
		}
		spec.Windows = append(spec.Windows, w)
	}
	return spec, nil
}

// Window finds the spec's window of the given size.
func (s TrendSpec) Window(size time.Duration) (trends.Window, int, bool) {
	for i, w := range s.Windows {
		if w.Size == size {
			return w, i, true
		}
	}
	return trends.Window{}, 0, false
}

// Key names of the trends, after the shard's prefix.
func trendSumKey(w trends.Window, k Kind) string {
	return "trend:" + strconv.FormatInt(w.Seconds(), 10) + ":" + string(k)
}

func trendBucketKey(w trends.Window, k Kind, bucket int64) string {
	return trendSumKey(w, k) + ":" + strconv.FormatInt(bucket, 10)
}

func trendMinKey(w trends.Window, bucket int64) string {
	return trendMinPrefix(w) + strconv.FormatInt(bucket, 10)
}

// trendMinPrefix is the name of w's minimum hashes before their bucket.
func trendMinPrefix(w trends.Window) string {
	return "trendmin:" + strconv.FormatInt(w.Seconds(), 10) + ":"
}

// streamField is the state hash's field of the partition's stream time.
const streamField = "stream"

// firstOpen is the lowest bucket of w a partition at stream time st may still be queried for.
func firstOpen(w trends.Window, st int64) int64 {
	return trends.BucketIndex(st-w.Seconds(), w.BucketSeconds())
}

// trendPart is what a batch carries of one partition's trends.
type trendPart struct {
	before, after trends.StreamTime
	windows       []windowPart // by the index of the window in the spec
}

// windowPart is one window's buckets in a batch.
type windowPart struct {
	counts map[int64]*[3]map[string]int64        // bucket -> kind index -> id -> events
	mins   map[int64]map[string]map[string]int64 // bucket -> hotel -> advertiser -> lowest price
	// shared says that the window's counts are the partition's all-time counts of the batch, all
	// in bucket sharedBucket (TrendShare): the common case, sent without a copy.
	shared       bool
	sharedBucket int64
}

// trend returns partition p's trend part, made for n windows (the spec's, the same in every call
// of a batch) when missing.
func (b *Batch) trend(p int32, n int) *trendPart {
	pt := b.part(p)
	if pt.trend == nil {
		pt.trend = &trendPart{windows: make([]windowPart, n)}
	}
	return pt.trend
}

// StreamTimes records partition p's stream time before the batch (as the view holds it) and
// after it. n is the number of windows of the view's spec.
func (b *Batch) StreamTimes(p int32, n int, before, after trends.StreamTime) {
	t := b.trend(p, n)
	t.before, t.after = before, after
}

// TrendCount counts one on-time event of partition p for id, of kind, in bucket of window w
// (the index of the window in the spec, of n).
func (b *Batch) TrendCount(p int32, n, w int, bucket int64, kind Kind, id string) {
	b.trendAdd(p, n, w, bucket, kind, id, 1)
}

// trendAdd counts events events of id in bucket of window w.
func (b *Batch) trendAdd(p int32, n, w int, bucket int64, kind Kind, id string, events int64) {
	wp := &b.trend(p, n).windows[w]
	if wp.counts == nil {
		wp.counts = map[int64]*[3]map[string]int64{}
	}
	c := wp.counts[bucket]
	if c == nil {
		c = &[3]map[string]int64{}
		wp.counts[bucket] = c
		b.bytes += perPartitionBytes
	}
	m := c[kindIndex(kind)]
	if m == nil {
		m = map[string]int64{}
		c[kindIndex(kind)] = m
	}
	before := len(m)
	m[id] += events
	if len(m) > before {
		b.bytes += len(id) + entryBytes
	}
}

// TrendShare says that window w (of n) of partition p counts, in bucket, exactly what the batch
// counts of p all time: every event of p in the batch is on time and in that bucket. The script
// then takes the window's increments from the all-time ones, with no copy in the batch. Call
// TrendUnshare before counting an event all time that breaks it.
func (b *Batch) TrendShare(p int32, n, w int, bucket int64) {
	pt := b.part(p)
	wp := &b.trend(p, n).windows[w]
	if !wp.shared {
		pt.shares++
		b.bytes += pt.countBytes + perPartitionBytes // the copy it may need, in a bucket of its own
	}
	wp.shared, wp.sharedBucket = true, bucket
}

// TrendUnshare gives window w (of n) of partition p its own copy of the counts it shared, so that
// later events can be counted in it apart (TrendCount).
func (b *Batch) TrendUnshare(p int32, n, w int) {
	pt := b.part(p)
	wp := &b.trend(p, n).windows[w]
	if !wp.shared {
		return
	}
	wp.shared = false
	pt.shares--
	b.bytes -= pt.countBytes + perPartitionBytes // the copy takes the place of what was set aside
	for ki, counts := range pt.counts {
		for id, c := range counts {
			b.trendAdd(p, n, w, wp.sharedBucket, kindAt(ki), id, c)
		}
	}
}

// kindAt is the kind of a part's count index (kindIndex's inverse).
func kindAt(i int) Kind {
	switch i {
	case 1:
		return Hotels
	case 2:
		return Advertisers
	}
	return Users
}

// TrendPrice lets price compete for bucket's minimum of adv at hotel, in window w (of n).
func (b *Batch) TrendPrice(p int32, n, w int, bucket int64, hotel, adv string, price int64) {
	wp := &b.trend(p, n).windows[w]
	if wp.mins == nil {
		wp.mins = map[int64]map[string]map[string]int64{}
	}
	byHotel := wp.mins[bucket]
	if byHotel == nil {
		byHotel = map[string]map[string]int64{}
		wp.mins[bucket] = byHotel
		b.bytes += perPartitionBytes
	}
	b.offer(byHotel, hotel, adv, price)
}

// trendArgs encodes partition p's trend part for apply.lua: the keys it appends to keys and the
// one JSON argument (see apply.lua), or "" when the batch moves no stream time and counts nothing.
//
// Only buckets still open at the batch's final stream time are sent: one the batch's own events
// moved past would be deleted by the same script. The buckets that close are those open before
// the batch, up to the bucket of its earlier stream time (no event of the partition is later).
func (t *trendPart) args(spec TrendSpec, r Role, prefix string, keys []string, counts [3]map[string]int64) ([]string, string) {
	if t == nil || !t.after.Set || (t.before.Set && t.before.T == t.after.T && t.empty()) {
		return keys, ""
	}
	kl := &keyList{keys: keys, prefix: prefix}
	var w jsonList
	w.open()
	for i, win := range spec.Windows {
		var wp windowPart
		if i < len(t.windows) {
			wp = t.windows[i]
		}
		wp.encode(&w, win, r, kl, t.before, t.after, counts)
	}
	w.close()
	w.int(t.after.T)
	return kl.keys, w.take()
}

// keyList is a script's KEYS as they are added.
type keyList struct {
	keys   []string
	prefix string
}

// add appends the shard's key name and returns its 1-based position, as Lua indexes KEYS.
func (l *keyList) add(name string) int64 {
	l.keys = append(l.keys, l.prefix+name)
	return int64(len(l.keys))
}

func (t *trendPart) empty() bool {
	for _, wp := range t.windows {
		if len(wp.counts) > 0 || len(wp.mins) > 0 || wp.shared {
			return false
		}
	}
	return true
}

// encode writes one window's element: [[sum key index per kind], [[kind, bucket key index,
// [id, n, ...] or 0 for the all-time increments of the kind], ...] increments, [[kind, bucket key index], ...] closing buckets, [[hash key
// index, [hotel, [advertiser, "price", ...]], ...], ...] minimums, [hash key index, ...] closing
// minimum hashes]. Key indexes are 1-based positions in KEYS.
func (wp windowPart) encode(w *jsonList, win trends.Window, r Role, kl *keyList, before, after trends.StreamTime, counts [3]map[string]int64) {
	open := firstOpen(win, after.T)
	kinds := r.kinds()
	key := kl.add
	w.open()
	w.open()
	for _, k := range kinds {
		w.int(key(trendSumKey(win, k)))
	}
	w.close()
	w.open()
	if wp.shared && wp.sharedBucket >= open {
		for ki, k := range kinds {
			if len(counts[kindIndex(k)]) > 0 {
				w.ints(int64(ki+1), key(trendBucketKey(win, k, wp.sharedBucket)), 0)
			}
		}
	}
	for bucket, byKind := range wp.counts {
		if bucket < open {
			continue
		}
		for ki, k := range kinds {
			ids := byKind[kindIndex(k)]
			if len(ids) == 0 {
				continue
			}
			w.open()
			w.int(int64(ki + 1))
			w.int(key(trendBucketKey(win, k, bucket)))
			w.open()
			for id, n := range ids {
				w.str(id)
				w.int(n)
			}
			w.close()
			w.close()
		}
	}
	w.close()
	closing := closingBuckets(win, before, open)
	w.open()
	for _, bucket := range closing {
		for ki, k := range kinds {
			w.ints(int64(ki+1), key(trendBucketKey(win, k, bucket)))
		}
	}
	w.close()
	wp.encodeMins(w, win, r, open, kl)
	w.open()
	if r == HotelShards {
		for _, bucket := range closing {
			w.int(key(trendMinKey(win, bucket)))
		}
	}
	w.close()
	w.close()
}

// encodeMins writes the minimums of the open buckets.
func (wp windowPart) encodeMins(w *jsonList, win trends.Window, r Role, open int64, kl *keyList) {
	w.open()
	for bucket, byHotel := range wp.mins {
		if bucket < open || r != HotelShards {
			continue
		}
		w.open()
		w.int(kl.add(trendMinKey(win, bucket)))
		w.open()
		for hotel, prices := range byHotel {
			w.str(hotel)
			w.open()
			for adv, price := range prices {
				w.str(adv)
				w.str(strconv.FormatInt(price, 10))
			}
			w.close()
		}
		w.close()
		w.close()
	}
	w.close()
}

// closingBuckets are the buckets of win open at stream time before that are no longer open at
// open (the first bucket open after the batch), up to before's bucket: nothing later exists.
func closingBuckets(win trends.Window, before trends.StreamTime, open int64) []int64 {
	if !before.Set {
		return nil
	}
	var out []int64
	last := min(open-1, win.BucketOf(before.T))
	for k := firstOpen(win, before.T); k <= last; k++ {
		out = append(out, k)
	}
	return out
}

// StreamAfter returns partition p's stream time after the batch, if the batch set one.
func (b *Batch) StreamAfter(p int32) (trends.StreamTime, bool) {
	pt := b.parts[p]
	if pt == nil || pt.trend == nil || !pt.trend.after.Set {
		return trends.StreamTime{}, false
	}
	return pt.trend.after, true
}

// TrendPrices calls fn with every (window index, bucket, hotel, advertiser, lowest price) the
// batch carries.
func (b *Batch) TrendPrices(fn func(w int, bucket int64, hotel, adv string, price int64)) {
	for _, pt := range b.parts {
		if pt.trend == nil {
			continue
		}
		for w, wp := range pt.trend.windows {
			for bucket, byHotel := range wp.mins {
				for hotel, prices := range byHotel {
					for adv, price := range prices {
						fn(w, bucket, hotel, adv, price)
					}
				}
			}
		}
	}
}
