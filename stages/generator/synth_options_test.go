package generator

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustSynthWith(t testing.TB, seed int64, users, hotels int, opts SynthOptions) *Synth {
	t.Helper()
	s, err := NewSynthWith(seed, users, hotels, opts)
	if err != nil {
		t.Fatalf("NewSynthWith(%d, %d, %d, %+v): %v", seed, users, hotels, opts, err)
	}
	return s
}

// nominal is event i's nominal time in the tests: a stream of 10 events a second from fixedTS,
// off whole seconds so that second truncation is exercised.
func nominal(i int64) time.Time {
	return fixedTS.Add(time.Duration(i)*100*time.Millisecond + 30*time.Millisecond)
}

func TestSynthWithZeroOptionsIsNewSynth(t *testing.T) {
	tests := []struct {
		name          string
		seed          int64
		users, hotels int
		opts          SynthOptions
	}{
		{"zero options", 42, 500, 80, SynthOptions{}},
		{"one of each", -3, 1, 1, SynthOptions{}},
		{"lateness without a late fraction", 7, 100_000_000, 100_000_000, SynthOptions{Lateness: 5 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := NewSynth(tt.seed, tt.users, tt.hotels)
			got := mustSynthWith(t, tt.seed, tt.users, tt.hotels, tt.opts)
			for i := range int64(5000) {
				w, g := mustEncode(t, want.Event(i, nominal(i))), mustEncode(t, got.Event(i, nominal(i)))
				if !bytes.Equal(g, w) {
					t.Fatalf("event %d:\n got %s\nwant %s (NewSynth's)", i, g, w)
				}
			}
		})
	}
}

// TestNewSynthStreamUnchanged pins NewSynth's stream to the one it made before the options
// existed: the pipeline's and the benchmarks' tests build their expectations on it. The digest
// was taken from that version's code.
func TestNewSynthStreamUnchanged(t *testing.T) {
	const want = "3956dfad5e8b20c86de796b800c2c8a6478c1c48e2296befa9a575a9267fbdcf"
	h := sha256.New()
	for _, c := range []struct {
		seed          int64
		users, hotels int
	}{{42, 500, 80}, {1, 100_000_000, 100_000_000}, {-9, 1, 1}} {
		s := NewSynth(c.seed, c.users, c.hotels)
		for i := range int64(1000) {
			h.Write(mustEncode(t, s.Event(i, fixedTS.Add(time.Duration(i)*time.Second))))
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("NewSynth's stream changed: SHA-256 of 3000 events %s, want %s", got, want)
	}
}

// TestSynthWithDeterministic: with every option set, event i is still a pure function of the
// seed, i and the time passed in, whatever the synth made before.
func TestSynthWithDeterministic(t *testing.T) {
	const n = 2000
	opts := SynthOptions{Skew: 1.1, Disorder: 10 * time.Minute, LateFraction: 0.1, Lateness: time.Minute}
	a, b := mustSynthWith(t, 42, 5000, 800, opts), mustSynthWith(t, 42, 5000, 800, opts)
	want := make([][]byte, n)
	for i := range int64(n) {
		want[i] = mustEncode(t, a.Event(i, nominal(i)))
	}
	for i := int64(n - 1); i >= 0; i-- {
		if got := mustEncode(t, b.Event(i, nominal(i))); !bytes.Equal(got, want[i]) {
			t.Fatalf("event %d differs between synths with the same seed and options:\n%s\n%s", i, got, want[i])
		}
	}
}

// TestSynthOptionsKeepOffers: the options pick who, which hotel and when; the offers are
// NewSynth's.
func TestSynthOptionsKeepOffers(t *testing.T) {
	plain := NewSynth(5, 1000, 100)
	shaped := mustSynthWith(t, 5, 1000, 100, SynthOptions{Skew: 2, Disorder: time.Hour, LateFraction: 0.5, Lateness: time.Minute})
	for i := range int64(2000) {
		p, s := plain.Event(i, nominal(i)), shaped.Event(i, nominal(i))
		if !reflect.DeepEqual(p.HotelAdvertisers, s.HotelAdvertisers) {
			t.Fatalf("event %d: offers %v, want NewSynth's %v", i, s.HotelAdvertisers, p.HotelAdvertisers)
		}
	}
}

func TestSynthDisorder(t *testing.T) {
	const n, disorder = 5000, 10 * time.Minute
	s := mustSynthWith(t, 11, 1000, 100, SynthOptions{Disorder: disorder})
	var back time.Duration
	var minBack, maxBack = disorder, time.Duration(0)
	stamps := make(map[int64]bool)
	outOfOrder := 0
	prev := int64(math.MinInt64)
	for i := range int64(n) {
		ts := nominal(i)
		got := s.Event(i, ts).SearchTimestamp
		if lo, hi := ts.Add(-disorder).Unix(), ts.Unix(); got < lo || got > hi {
			t.Fatalf("event %d at %s: search_timestamp %d outside [%d, %d]", i, ts, got, lo, hi)
		}
		b := ts.Sub(time.Unix(got, 0))
		back += b
		minBack, maxBack = min(minBack, b), max(maxBack, b)
		stamps[got] = true
		if got < prev {
			outOfOrder++
		}
		prev = got
	}
	// Moved back uniformly in [0, 10m]: the mean is 5m give or take 0.3% (one standard error);
	// 5000 draws all missing the first or last 1% of the range has odds of 1e-22.
	if mean := back / n; mean < 4*time.Minute+30*time.Second || mean > 5*time.Minute+30*time.Second {
		t.Errorf("events moved back %s on average, want about %s", mean, disorder/2)
	}
	if minBack > disorder/100 || maxBack < disorder*99/100 {
		t.Errorf("events moved back between %s and %s, want about 0 to %s", minBack, maxBack, disorder)
	}
	// The stamps can take any second from the first event's nominal time less the disorder to
	// the last one's; uniform draws leave few of them out.
	if span := nominal(n-1).Unix() - nominal(0).Add(-disorder).Unix() + 1; int64(len(stamps)) < span*3/4 {
		t.Errorf("only %d distinct search timestamps over %d events, that could take %d", len(stamps), n, span)
	}
	// Neighbours 100ms apart, each moved back up to 10m: about half the pairs swap.
	if outOfOrder < n/3 {
		t.Errorf("%d of %d events are stamped before their predecessor, want about half", outOfOrder, n)
	}
}

func TestSynthLateFraction(t *testing.T) {
	tests := []struct {
		name               string
		fraction           float64
		lateness, disorder time.Duration
		// ruleAgrees: disorder within the lateness and some events on time, so the aggregators'
		// rule finds exactly the events stamped late.
		ruleAgrees bool
	}{
		{"none", 0, 5 * time.Minute, 2 * time.Minute, true},
		{"one percent", 0.01, 5 * time.Minute, 2 * time.Minute, true},
		{"a fifth, no disorder", 0.2, 5 * time.Minute, 0, true},
		{"a fifth, fractional durations", 0.2, 1500 * time.Millisecond, 700 * time.Millisecond, true},
		{"half, no lateness allowed", 0.5, 0, 0, false},
		{"all", 1, 5 * time.Minute, 2 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 20_000
			s := mustSynthWith(t, 13, 1000, 100, SynthOptions{LateFraction: tt.fraction, Lateness: tt.lateness, Disorder: tt.disorder})
			// How many whole seconds a late event's search_timestamp trails its nominal time by,
			// at least: 2*lateness + disorder + 1s, rounded up.
			gap := int64((2*tt.lateness + tt.disorder + 2*time.Second - 1) / time.Second)
			late, disagree := 0, 0
			streamTime, onTimeSeen := int64(math.MinInt64), false
			for i := range int64(n) {
				ts := nominal(i)
				got := s.Event(i, ts).SearchTimestamp
				isLate := ts.Unix()-got >= gap
				lo, hi := ts.Add(-tt.disorder).Unix(), ts.Unix()
				if isLate {
					lo, hi = lo-gap, hi-gap
					late++
				}
				if got < lo || got > hi {
					t.Fatalf("event %d (late %t): search_timestamp %d outside [%d, %d]", i, isLate, got, lo, hi)
				}
				// The aggregators' rule, in one partition: late when more than the lateness behind
				// the highest event time so far; judged once an on-time event set that time.
				judged := float64(got) < float64(streamTime)-tt.lateness.Seconds()
				if onTimeSeen && judged != isLate {
					disagree++
				}
				onTimeSeen = onTimeSeen || !isLate
				streamTime = max(streamTime, got)
			}
			// Five standard errors of a binomial share: a wrong share fails, a fair one does not
			// (and the seed is fixed anyway).
			share, tol := float64(late)/n, 5*math.Sqrt(tt.fraction*(1-tt.fraction)/n)
			if math.Abs(share-tt.fraction) > tol {
				t.Errorf("%d of %d events late (%.4f), want %.4f ± %.4f", late, n, share, tt.fraction, tol)
			}
			if tt.ruleAgrees && disagree > 0 {
				t.Errorf("the aggregators' rule disagrees with the stamps on %d of %d events", disagree, n)
			}
		})
	}
}

// hotelDraws returns how many of n events at nominal time ts went to each hotel.
func hotelDraws(s *Synth, n int, ts time.Time) map[string]int {
	counts := make(map[string]int)
	for i := range int64(n) {
		counts[s.Event(i, ts).HotelID]++
	}
	return counts
}

// top returns the k most drawn of counts, most first (ties by id), and their share of all draws.
func top(counts map[string]int, k int) ([]string, float64) {
	ids := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		if c := counts[b] - counts[a]; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	ids = ids[:min(k, len(ids))]
	total, inTop := 0, 0
	for _, n := range counts {
		total += n
	}
	for _, id := range ids {
		inTop += counts[id]
	}
	return ids, float64(inTop) / float64(total)
}

// powerLawCDF is the share of zipf's draws at ranks <= r out of n at exponent s.
func powerLawCDF(r, n int, s float64) float64 {
	if s == 1 {
		return math.Log(float64(r)+2) / math.Log(float64(n)+1)
	}
	a := 1 - s
	return math.Expm1(a*math.Log(float64(r)+2)) / math.Expm1(a*math.Log(float64(n)+1))
}

func TestSynthSkewTopShare(t *testing.T) {
	const draws, hotels = 100_000, 1000
	tests := []struct {
		skew     float64
		min, max float64 // share of the top 1% of hotels
	}{
		// Uniform: the 10 luckiest of 1000 hotels at 100 draws each get about 120.
		{0, 0.01, 0.015},
		// Skewed: the top 10 ranks' share, 0.43 at skew 1.1, give or take sampling noise (0.002
		// is one standard error).
		{1, powerLawCDF(9, hotels, 1) - 0.015, powerLawCDF(9, hotels, 1) + 0.015},
		{1.1, powerLawCDF(9, hotels, 1.1) - 0.015, powerLawCDF(9, hotels, 1.1) + 0.015},
		{3, powerLawCDF(9, hotels, 3) - 0.015, powerLawCDF(9, hotels, 3) + 0.015},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatFloat(tt.skew, 'g', -1, 64), func(t *testing.T) {
			s := mustSynthWith(t, 17, 1000, hotels, SynthOptions{Skew: tt.skew})
			// At the start of a drift period, draws go through that period's scramble only.
			_, share := top(hotelDraws(s, draws, fixedTS.Truncate(driftPeriod)), hotels/100)
			t.Logf("skew %v: top 1%% of hotels take %.4f of %d events", tt.skew, share, draws)
			if share < tt.min || share > tt.max {
				t.Errorf("skew %v: top 1%% of hotels take %.4f of the events, want %.4f..%.4f", tt.skew, share, tt.min, tt.max)
			}
			if tt.skew >= 1 && share < 0.30 {
				t.Errorf("skew %v: top 1%% of hotels take %.4f of the events, want a large share (> 0.30)", tt.skew, share)
			}
		})
	}
}

func TestSynthSkewDrift(t *testing.T) {
	const draws, hotels = 30_000, 1000
	s := mustSynthWith(t, 19, 1000, hotels, SynthOptions{Skew: 1.1})
	topAt := func(ts time.Time) []string {
		ids, _ := top(hotelDraws(s, draws, ts), 10)
		return ids
	}
	overlap := func(a, b []string) int {
		n := 0
		for _, id := range a {
			if slices.Contains(b, id) {
				n++
			}
		}
		return n
	}
	now := topAt(fixedTS)
	if n := overlap(now, topAt(fixedTS.Add(time.Minute))); n < 8 {
		t.Errorf("top 10 hotels a minute apart share %d, want most (>= 8)", n)
	}
	for _, later := range []time.Duration{3 * time.Hour, 6 * time.Hour, 24 * time.Hour} {
		if n := overlap(now, topAt(fixedTS.Add(later))); n > 2 {
			t.Errorf("top 10 hotels %s apart share %d, want almost none (<= 2)", later, n)
		}
	}

	// The leader at the start of a drift period stays ahead for a while, then fades.
	start := fixedTS.Truncate(driftPeriod)
	leaderIDs, _ := top(hotelDraws(s, draws, start), 1)
	leader := leaderIDs[0]
	shareAt := func(d time.Duration) float64 {
		return float64(hotelDraws(s, draws, start.Add(d))[leader]) / draws
	}
	peak := shareAt(0)
	if ids := topAt(start.Add(10 * time.Minute)); !slices.Contains(ids[:3], leader) {
		t.Errorf("hotel %s leads at %s but is not in the top 3 ten minutes later: %v", leader, start, ids)
	}
	if later := shareAt(90 * time.Minute); later > peak/10 {
		t.Errorf("hotel %s has %.4f of the events at %s and still %.4f 90 minutes later, want it faded", leader, peak, start, later)
	}
}

func TestZipfMatchesPowerLaw(t *testing.T) {
	// Stratified u: the share of draws at ranks <= r is the exact CDF within 1/strata, so the
	// test has no sampling noise.
	const strata = 100_000
	for _, n := range []int{1, 10, 1000, 100_000_000} {
		for _, skew := range []float64{0, 0.5, 1 - 1e-12, 1, 1 + 1e-7, 1.1, 2, 3} {
			z := newZipf(skew, n)
			ranks := []int{0, 1, 9, n / 2, n - 1}
			atMost := make([]int, len(ranks))
			for k := range strata {
				r := z.rank((float64(k) + 0.5) / strata)
				if r < 0 || r >= n {
					t.Fatalf("n %d, skew %v: rank %d, out of range", n, skew, r)
				}
				for j, limit := range ranks {
					if r <= limit {
						atMost[j]++
					}
				}
			}
			for j, r := range ranks {
				if r >= n {
					continue
				}
				want := min(powerLawCDF(r, n, skew), 1)
				if math.Abs(skew-1) < 1e-6 {
					want = powerLawCDF(r, n, 1)
				}
				if got := float64(atMost[j]) / strata; math.Abs(got-want) > 2.0/strata {
					t.Errorf("n %d, skew %v: share of ranks <= %d is %.6f, want %.6f", n, skew, r, got, want)
				}
			}
		}
	}
}

// TestScrambleIsBijection: every period's scramble maps the ranks onto all n items, so no item
// becomes unreachable.
func TestScrambleIsBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 6, 30, 210, 1000, 1024, 30030} {
		p := newPopularity(int(n), 1.1, 99)
		for _, period := range []int64{-5, 0, 1, 2, 123_456} {
			seen := make([]bool, n)
			for r := range n {
				item := p.scramble(r, period)
				if item >= n || seen[item] {
					t.Fatalf("n %d, period %d: rank %d goes to item %d, out of range or taken", n, period, r, item)
				}
				seen[item] = true
			}
		}
	}
}

func TestSynthIDsInRange(t *testing.T) {
	times := []time.Time{fixedTS, time.Unix(0, 0), time.Unix(-1_000_000_007, 999_999_999), time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)}
	edges := []float64{0, 0x1p-53, 0.5, 1 - 0x1p-53}
	for _, n := range []int{1, 2, 100_000_000} {
		for _, skew := range []float64{0, 1, 3} {
			opts := SynthOptions{Skew: skew, Disorder: time.Hour, LateFraction: 0.5, Lateness: time.Hour}
			s := mustSynthWith(t, 23, n, n, opts)
			for i := range int64(2000) {
				ts := times[i%int64(len(times))].Add(time.Duration(i) * 37 * time.Second)
				ev := s.Event(i, ts)
				if h, err := strconv.Atoi(ev.HotelID); err != nil || h < 1000 || h >= 1000+n {
					t.Fatalf("n %d, skew %v, event %d: hotel %q is not one of HotelID(0..%d)", n, skew, i, ev.HotelID, n-1)
				}
				if n == 1 && ev.UserID != s.UserID(0) || !uuidV4.MatchString(ev.UserID) {
					t.Fatalf("n %d, skew %v, event %d: user %q", n, skew, i, ev.UserID)
				}
			}
			if skew == 0 {
				continue // uniform draws do not go through popularity
			}
			for _, u := range edges {
				for _, blend := range edges {
					for _, ts := range times {
						if got := s.userPop.draw(u, blend, ts); got < 0 || got >= n {
							t.Fatalf("n %d, skew %v: draw(%v, %v, %s) = %d, out of range", n, skew, u, blend, ts, got)
						}
					}
				}
			}
		}
	}
}

func TestNewSynthWithRejects(t *testing.T) {
	tests := []struct {
		name          string
		users, hotels int
		opts          SynthOptions
		want          []string
	}{
		{"no users", 0, 10, SynthOptions{}, []string{"0 users"}},
		{"negative skew", 10, 10, SynthOptions{Skew: -0.1}, []string{"skew -0.1"}},
		{"NaN skew", 10, 10, SynthOptions{Skew: math.NaN()}, []string{"skew NaN"}},
		{"infinite skew", 10, 10, SynthOptions{Skew: math.Inf(1)}, []string{"skew +Inf"}},
		{"negative disorder", 10, 10, SynthOptions{Disorder: -time.Second}, []string{"disorder -1s"}},
		{"late fraction above 1", 10, 10, SynthOptions{LateFraction: 1.5}, []string{"late fraction 1.5"}},
		{"all at once", 10, -1, SynthOptions{Skew: -1, LateFraction: -1, Lateness: -time.Minute},
			[]string{"-1 hotels", "skew -1", "late fraction -1", "lateness -1m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSynthWith(1, tt.users, tt.hotels, tt.opts)
			if err == nil {
				t.Fatalf("NewSynthWith(%d, %d, %+v) = %v, want an error", tt.users, tt.hotels, tt.opts, s)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "generator: synth: ") {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func BenchmarkSynthEvent(b *testing.B) {
	benchmarks := []struct {
		name string
		opts SynthOptions
	}{
		{"uniform", SynthOptions{}},
		{"disorder and late", SynthOptions{Disorder: 10 * time.Minute, LateFraction: 0.01, Lateness: 5 * time.Minute}},
		{"skew", SynthOptions{Skew: 1.1}},
		{"all options", SynthOptions{Skew: 1.1, Disorder: 10 * time.Minute, LateFraction: 0.01, Lateness: 5 * time.Minute}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			s := mustSynthWith(b, 1, 100_000, 5_000, bm.opts)
			b.ReportAllocs()
			for i := int64(0); b.Loop(); i++ {
				s.Event(i, nominal(i))
			}
		})
	}
}
