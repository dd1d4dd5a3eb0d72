package trends

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultWindows is the window list used when none is configured.
const DefaultWindows = "1h,24h"

// ParseWindows parses a comma-separated list of Go durations ("1h,24h") into windows sorted by
// size, each with its bucket size. Every bad element is reported, each error naming the element
// by position and text: empty, not a Go duration, out of range, not whole seconds, or the same
// size as an earlier one ("1h,60m" are the same window under two names, which the API could not
// tell apart in its results).
func ParseWindows(s string) ([]Window, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("trends: no windows given (want a list like \"1h,24h\")")
	}
	var (
		windows []Window
		errs    []error
		seen    = map[time.Duration]int{} // size -> position of its first element
	)
	for i, text := range strings.Split(s, ",") {
		pos, text := i+1, strings.TrimSpace(text)
		w, err := parseWindow(text)
		if err == nil {
			if first, dup := seen[w.Size]; dup {
				err = fmt.Errorf("same window as element %d", first)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("trends: window element %d %q: %w", pos, text, err))
			continue
		}
		seen[w.Size] = pos
		windows = append(windows, w)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(windows, func(a, b Window) int { return cmp.Compare(a.Size, b.Size) })
	return windows, nil
}

// parseWindow parses one trimmed element; its error is the bare reason, for ParseWindows to
// place.
func parseWindow(text string) (Window, error) {
	if text == "" {
		return Window{}, errors.New("empty")
	}
	size, err := time.ParseDuration(text)
	if err != nil {
		// time's own message repeats the text and says nothing of the accepted units.
		return Window{}, errors.New("not a Go duration (use s, m or h, e.g. 30m, 24h, 168h)")
	}
	if err := checkSize(size); err != nil {
		return Window{}, err
	}
	return Window{Size: size, Bucket: bucketFor(size), name: text}, nil
}

// Lookup finds the window named name (exactly as Name returns it) among windows.
func Lookup(windows []Window, name string) (Window, bool) {
	for _, w := range windows {
		if w.name == name {
			return w, true
		}
	}
	return Window{}, false
}

// Longest is the size of the longest of windows, 0 if there are none: the span every shard keeps
// (see Retired).
func Longest(windows []Window) time.Duration {
	var longest time.Duration
	for _, w := range windows {
		longest = max(longest, w.Size)
	}
	return longest
}
