package trends

import "time"

// StreamTime is one partition's stream time: the highest event time (Unix seconds) of the events
// folded so far, unset before the first. It moves only with the events, never with the clock,
// so lateness decisions replay identically.
type StreamTime struct {
	T   int64
	Set bool
}

// Late reports whether an event at eventTime is late: more than lateness behind the stream time
// (s.T - eventTime > lateness). Before the first event nothing is late. A lateness of a fraction
// of a second counts as its whole seconds, as event times are whole seconds; a negative one as 0.
func (s StreamTime) Late(eventTime int64, lateness time.Duration) bool {
	if !s.Set || eventTime >= s.T {
		return false
	}
	// Unsigned, s.T - eventTime cannot overflow, however far apart a bogus timestamp puts them.
	return uint64(s.T)-uint64(eventTime) > uint64(lateSeconds(lateness))
}

// Observe decides whether an event at eventTime is late (see Late) and folds it into the stream
// time: an on-time event advances it to max(T, eventTime); a late one leaves it, being behind
// anyway. The caller must not count a late event in any bucket: Retired may already have
// dropped its bucket.
func (s *StreamTime) Observe(eventTime int64, lateness time.Duration) (late bool) {
	if s.Late(eventTime, lateness) {
		return true
	}
	if !s.Set || eventTime > s.T {
		s.T, s.Set = eventTime, true
	}
	return false
}

// lateSeconds is the lateness an integer distance between event times is compared with: for a
// whole number of seconds n, n > lateness exactly when n > floor(lateness).
func lateSeconds(lateness time.Duration) int64 {
	return max(0, int64(lateness/time.Second))
}
