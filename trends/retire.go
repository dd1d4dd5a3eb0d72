package trends

import "time"

// Retired reports whether a shard may delete bucket of w once its partition's stream time is
// streamTime: when the stream time has passed the bucket's last second, (bucket+1)·b - 1, by at
// least lateness + longest, i.e. streamTime ≥ (bucket+1)·b + lateness + longest.
//
// Why that is safe, with L = lateness in whole seconds:
//   - no on-time event lands in it: an on-time event is at ≥ streamTime - L ≥ (bucket+1)·b + longest,
//     past the bucket's end; and stream time never goes back, so this stays true;
//   - no query needs it: a query reads from floor((now-W)/b), now ≥ this partition's stream time
//     and W ≤ longest, so now - W ≥ (bucket+1)·b and the query starts after the bucket. That
//     needs the now a reader uses to be at least the stream time the deletion was decided at:
//     a writer must publish its stream time no later than the deletions it allows.
//
// longest is the longest configured window (see Longest); a smaller value is taken as w.Size so
// a wrong argument cannot retire a bucket w's own queries need. A bucket retired at one stream
// time stays retired at every later one.
func (w Window) Retired(bucket, streamTime int64, lateness, longest time.Duration) bool {
	return bucket < firstLive(w, streamTime, horizon(w, lateness, longest))
}

// MaxLiveBuckets bounds the buckets of w a shard holds at any stream time when it deletes every
// bucket Retired allows: ceil(H/b) + 1 with H = lateness (whole seconds) + longest.
//
// The buckets that may hold events at stream time st are those up to floor(st/b) (every folded
// event is at or before st), and the live ones start at floor((st-H)/b) (Retired), so there are
// floor(st/b) - floor((st-H)/b) + 1. Writing st-H = q·b + r with 0 ≤ r < b, that is
// floor((r+H)/b) + 1 ≤ floor((b-1+H)/b) + 1 = ceil(H/b) + 1, reached when r = b-1: the bound is
// tight. When b divides H (lateness a multiple of b) every st has exactly H/b + 1.
func (w Window) MaxLiveBuckets(lateness, longest time.Duration) int64 {
	h, b := horizon(w, lateness, longest), w.BucketSeconds()
	return (h+b-1)/b + 1
}

// firstLive is the lowest bucket index of w not retired at streamTime.
func firstLive(w Window, streamTime, horizon int64) int64 {
	return BucketIndex(streamTime-horizon, w.BucketSeconds())
}

// horizon is H: how far, in seconds, the stream time must pass a bucket's end before it retires.
// A longest of a fraction of a second is rounded up, to retire later rather than too early.
func horizon(w Window, lateness, longest time.Duration) int64 {
	longest = max(longest, w.Size)
	return lateSeconds(lateness) + int64((longest+time.Second-1)/time.Second)
}
