package trends

// BucketIndex is the index of the epoch-aligned bucket of bucketSeconds that holds eventTime:
// floor(eventTime / bucketSeconds), so bucket k covers the seconds [k·b, (k+1)·b). Floor, not Go's
// truncating division, so times before 1970 fall in their own bucket rather than sharing bucket 0
// with the first seconds after it. bucketSeconds must be positive.
func BucketIndex(eventTime, bucketSeconds int64) int64 {
	q := eventTime / bucketSeconds
	if eventTime%bucketSeconds != 0 && eventTime < 0 {
		q--
	}
	return q
}

// BucketOf is the index of w's bucket that holds eventTime (Unix seconds).
func (w Window) BucketOf(eventTime int64) int64 {
	return BucketIndex(eventTime, w.BucketSeconds())
}

// QueryRange is the inclusive range of w's bucket indexes a query at now reads, now being the
// highest event time seen over all partitions: [floor((now-W)/b), floor(now/b)], always exactly
// W/b + 1 buckets since b divides W.
//
// Edge precision: the window is the W seconds (now-W, now]. The range covers them all and, before
// them, the seconds from the first bucket's start up to and including now-W: ((now-W) mod b) + 1
// extra seconds, at least 1 and at most b (a whole extra bucket when now-W is a bucket's last
// second). Nothing is extra past now, since no event is later than now. So a count read over the
// range may include up to one bucket of events older than the window, never miss one inside it.
func (w Window) QueryRange(now int64) (first, last int64) {
	b := w.BucketSeconds()
	return BucketIndex(now-w.Seconds(), b), BucketIndex(now, b)
}
