package trends_test

import (
	"strings"
	"testing"
	"time"

	"github.com/searchflow/searchflow/trends"
)

func TestParseWindowsBucketSizes(t *testing.T) {
	tests := []struct {
		in      string
		names   []string
		sizes   []time.Duration
		buckets []time.Duration
	}{
		{"1h", []string{"1h"}, []time.Duration{time.Hour}, []time.Duration{time.Minute}},
		{"24h", []string{"24h"}, []time.Duration{24 * time.Hour}, []time.Duration{time.Hour}},
		{"5m", []string{"5m"}, []time.Duration{5 * time.Minute}, []time.Duration{10 * time.Second}},
		{"168h", []string{"168h"}, []time.Duration{168 * time.Hour}, []time.Duration{6 * time.Hour}},
		{"30s", []string{"30s"}, []time.Duration{30 * time.Second}, []time.Duration{time.Second}},
		{"24s", []string{"24s"}, []time.Duration{24 * time.Second}, []time.Duration{time.Second}},
		{"720h", []string{"720h"}, []time.Duration{720 * time.Hour}, []time.Duration{24 * time.Hour}},
		// 1h30m15s/24 = 226.25s; 1m and 30s do not divide 5415s, 15s does.
		{"1h30m15s", []string{"1h30m15s"}, []time.Duration{5415 * time.Second}, []time.Duration{15 * time.Second}},
		{trends.DefaultWindows, []string{"1h", "24h"},
			[]time.Duration{time.Hour, 24 * time.Hour}, []time.Duration{time.Minute, time.Hour}},
		{" 24h , 1h,30m ", []string{"30m", "1h", "24h"},
			[]time.Duration{30 * time.Minute, time.Hour, 24 * time.Hour},
			[]time.Duration{time.Minute, time.Minute, time.Hour}},
		{"60m", []string{"60m"}, []time.Duration{time.Hour}, []time.Duration{time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ws, err := trends.ParseWindows(tt.in)
			if err != nil {
				t.Fatalf("ParseWindows(%q): %v", tt.in, err)
			}
			if len(ws) != len(tt.names) {
				t.Fatalf("ParseWindows(%q): %d windows, want %d", tt.in, len(ws), len(tt.names))
			}
			for i, w := range ws {
				if w.Name() != tt.names[i] || w.Size != tt.sizes[i] || w.Bucket != tt.buckets[i] {
					t.Errorf("window %d = {%q %s bucket %s}, want {%q %s bucket %s}", i,
						w.Name(), w.Size, w.Bucket, tt.names[i], tt.sizes[i], tt.buckets[i])
				}
			}
		})
	}
}

func TestParseWindowsRejects(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error, each naming the element and the fault
	}{
		{"", []string{"no windows"}},
		{"  ", []string{"no windows"}},
		{"0", []string{`element 1 "0": must be positive`}},
		{"-1h", []string{`element 1 "-1h": must be positive`}},
		{"10s", []string{`element 1 "10s": shorter than the 24s minimum`}},
		{"23s", []string{`element 1 "23s": shorter than the 24s minimum`}},
		{"744h", []string{`element 1 "744h": longer than the 720h (30 days) maximum`}},
		{"720h1s", []string{`element 1 "720h1s": longer than`}},
		{"abc", []string{`element 1 "abc": not a Go duration`}},
		{"7d", []string{`element 1 "7d": not a Go duration`}},
		{"1h30m15.5s", []string{`element 1 "1h30m15.5s": not a whole number of seconds`}},
		{"1h,1h", []string{`element 2 "1h": same window as element 1`}},
		{"1h,24h,60m", []string{`element 3 "60m": same window as element 1`}},
		{"1h,,24h", []string{`element 2 "": empty`}},
		{"1h,", []string{`element 2 "": empty`}},
		// Every bad element is reported, not only the first.
		{"10s,1h,abc,3600s", []string{
			`element 1 "10s": shorter`, `element 3 "abc": not a Go duration`,
			`element 4 "3600s": same window as element 2`}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ws, err := trends.ParseWindows(tt.in)
			if err == nil {
				t.Fatalf("ParseWindows(%q) = %v, want an error", tt.in, ws)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("ParseWindows(%q) error %q, want it to contain %q", tt.in, err, want)
				}
			}
		})
	}
}

// TestBucketSizeRule checks the bucket of every whole-second window from 24s to 30 days (every
// second up to 48h, then every minute) against the rule stated independently: the largest size
// of the list that is at most 1/24 of the window and divides it.
func TestBucketSizeRule(t *testing.T) {
	nice := []time.Duration{time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second,
		30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
		30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
		24 * time.Hour}
	check := func(size time.Duration) {
		w, err := trends.NewWindow(size)
		if err != nil {
			t.Fatalf("NewWindow(%s): %v", size, err)
		}
		var want time.Duration
		for _, b := range nice {
			if float64(b) <= float64(size)/24 && size%b == 0 {
				want = b
			}
		}
		if w.Bucket != want {
			t.Fatalf("NewWindow(%s).Bucket = %s, want %s", size, w.Bucket, want)
		}
	}
	for size := trends.MinWindow; size <= 48*time.Hour; size += time.Second {
		check(size)
	}
	for size := 48 * time.Hour; size <= trends.MaxWindow; size += time.Minute {
		check(size)
	}
}

func TestNewWindow(t *testing.T) {
	tests := []struct {
		size    time.Duration
		name    string
		wantErr string
	}{
		{time.Hour, "1h", ""},
		{24 * time.Hour, "24h", ""},
		{90 * time.Minute, "1h30m", ""},
		{45 * time.Second, "45s", ""},
		{time.Hour + time.Second, "1h1s", ""},
		{10 * time.Second, "", "trends: window 10s: shorter than the 24s minimum"},
		{31 * 24 * time.Hour, "", "trends: window 744h: longer than the 720h (30 days) maximum"},
		{90*time.Second + time.Millisecond, "", "not a whole number of seconds"},
		{0, "", "must be positive"},
	}
	for _, tt := range tests {
		w, err := trends.NewWindow(tt.size)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("NewWindow(%s) error %v, want %q", tt.size, err, tt.wantErr)
		case tt.wantErr == "" && err != nil:
			t.Errorf("NewWindow(%s): %v", tt.size, err)
		case tt.wantErr == "" && w.Name() != tt.name:
			t.Errorf("NewWindow(%s).Name() = %q, want %q", tt.size, w.Name(), tt.name)
		}
	}
}

func TestLookupAndLongest(t *testing.T) {
	ws, err := trends.ParseWindows("24h, 30m ,1h")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		size time.Duration
		ok   bool
	}{
		{"30m", 30 * time.Minute, true},
		{"1h", time.Hour, true},
		{"24h", 24 * time.Hour, true},
		{"60m", 0, false}, // names are exact: the API takes the configured spelling only
		{" 1h", 0, false},
		{"", 0, false},
	} {
		w, ok := trends.Lookup(ws, tt.name)
		if ok != tt.ok || w.Size != tt.size {
			t.Errorf("Lookup(%q) = %s, %v; want %s, %v", tt.name, w.Size, ok, tt.size, tt.ok)
		}
	}
	if got := trends.Longest(ws); got != 24*time.Hour {
		t.Errorf("Longest = %s, want 24h", got)
	}
	if got := trends.Longest(nil); got != 0 {
		t.Errorf("Longest(nil) = %s, want 0", got)
	}
}
