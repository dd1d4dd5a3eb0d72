package trends

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The range of window sizes: a window needs room for 24 buckets of at least a second, and the
// longest window sets how many buckets every window keeps (see MaxLiveBuckets), so it is capped.
const (
	MinWindow = 24 * time.Second
	MaxWindow = 30 * 24 * time.Hour
)

// Window is a sliding window of the last Size of event time, counted in fixed buckets of Bucket
// (epoch-aligned, Bucket divides Size). Build it with NewWindow or ParseWindows: the zero value
// has no bucket size and its methods divide by zero.
type Window struct {
	Size   time.Duration
	Bucket time.Duration
	name   string
}

// NewWindow returns the window of the given size with its bucket size chosen (see bucketFor),
// named in short form ("1h", "24h", "1h30m"). Sizes that are not whole seconds or are outside
// [MinWindow, MaxWindow] are refused.
func NewWindow(size time.Duration) (Window, error) {
	if err := checkSize(size); err != nil {
		return Window{}, fmt.Errorf("trends: window %s: %w", shortName(size), err)
	}
	return Window{Size: size, Bucket: bucketFor(size), name: shortName(size)}, nil
}

// Name is the window's name in the API's ?window= parameter: the text it was configured with,
// spaces trimmed, or NewWindow's short form.
func (w Window) Name() string { return w.name }

// Seconds is the window's size in seconds.
func (w Window) Seconds() int64 { return int64(w.Size / time.Second) }

// BucketSeconds is the window's bucket size in seconds.
func (w Window) BucketSeconds() int64 { return int64(w.Bucket / time.Second) }

// checkSize says what is wrong with a window size, or nil.
func checkSize(size time.Duration) error {
	switch {
	case size <= 0:
		return fmt.Errorf("must be positive")
	case size%time.Second != 0:
		return fmt.Errorf("not a whole number of seconds")
	case size < MinWindow:
		return fmt.Errorf("shorter than the %s minimum", shortName(MinWindow))
	case size > MaxWindow:
		return fmt.Errorf("longer than the %s (30 days) maximum", shortName(MaxWindow))
	}
	return nil
}

// bucketFor is the bucket size of a valid window: the largest "nice" size (one a person reads at
// a glance, so bucket bounds fall on round clock times) that is at most 1/24 of the window and
// divides it. Dividing it keeps a query range at exactly size/bucket + 1 buckets whatever "now"
// is; at most 1/24 keeps the one extra bucket a query may include under ~4% of the window.
// 1s always qualifies for a valid window (size ≥ 24s, whole seconds).
func bucketFor(size time.Duration) time.Duration {
	nice := [...]time.Duration{
		24 * time.Hour, 12 * time.Hour, 6 * time.Hour, 3 * time.Hour, 2 * time.Hour, time.Hour,
		30 * time.Minute, 15 * time.Minute, 10 * time.Minute, 5 * time.Minute, time.Minute,
		30 * time.Second, 15 * time.Second, 10 * time.Second, 5 * time.Second, time.Second,
	}
	for _, b := range nice {
		if 24*b <= size && size%b == 0 {
			return b
		}
	}
	return time.Second
}

// shortName writes a whole-second duration without its zero parts ("1h", not time's "1h0m0s").
func shortName(d time.Duration) string {
	if d <= 0 || d%time.Second != 0 {
		return d.String()
	}
	var b strings.Builder
	for _, u := range [...]struct {
		size time.Duration
		unit string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.size; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10) + u.unit)
			d -= n * u.size
		}
	}
	return b.String()
}
