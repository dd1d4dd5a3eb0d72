package generator

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"time"
)

// driftPeriod is how long, in event time, one ranking of the items lasts: an item rises over one
// period and fades over the next (see popularity).
const driftPeriod = 30 * time.Minute

// popularity draws item numbers in [0, n) with Zipf-like weights whose favourites drift with
// event time, in O(1) and without a per-item table (n goes up to 100,000,000).
//
// A draw first picks a rank: rank r with weight about 1/(r+1)^skew (zipf). Event time is cut
// into periods of driftPeriod, and period e has its own seeded scramble of the ranks onto the
// items, the bijection rank -> (a*rank + b) mod n with gcd(a, n) = 1, so every item stays
// reachable and the favourites of a period are spread over the item space. At phase f in [0, 1)
// of period e a draw goes through period e+1's scramble with probability f and through e's
// otherwise: so each period's top item rises smoothly over the period before its own, peaks at
// its start and fades over it, and the top set of a given minute is mostly the one of the next
// minute while hours apart they are unrelated.
type popularity struct {
	n    uint64
	zipf zipf
	salt uint64 // seed-derived, different for users and hotels
}

func newPopularity(n int, skew float64, salt uint64) popularity {
	return popularity{n: uint64(n), zipf: newZipf(skew, n), salt: salt}
}

// draw returns the item for rank uniform u and blend uniform blend (both in [0, 1)) at event
// time ts.
func (p popularity) draw(u, blend float64, ts time.Time) int {
	rank := p.zipf.rank(u)
	period, phase := driftPhase(ts)
	if blend < phase {
		period++
	}
	return int(p.scramble(uint64(rank), period))
}

// scramble maps rank onto an item by period's bijection (a*rank + b) mod n.
func (p popularity) scramble(rank uint64, period int64) uint64 {
	h := rand.NewPCG(p.salt, uint64(period))
	a, b := h.Uint64()%p.n, h.Uint64()%p.n
	for gcd(a, p.n) != 1 { // ends: 1 is coprime with n; a few steps at most in practice
		a = (a + 1) % p.n
	}
	hi, lo := bits.Mul64(a, rank)
	return (bits.Rem64(hi, lo, p.n) + b) % p.n
}

// driftPhase returns the drift period ts falls in and how far into it, in [0, 1).
func driftPhase(ts time.Time) (period int64, phase float64) {
	const periodSec = int64(driftPeriod / time.Second)
	sec := ts.Unix()
	period = sec / periodSec
	if sec%periodSec < 0 {
		period-- // floor, for times before 1970
	}
	into := time.Duration(sec-period*periodSec)*time.Second + time.Duration(ts.Nanosecond())
	return period, float64(into) / float64(driftPeriod)
}

// zipf turns u, uniform in [0, 1), into a rank in [0, n) drawn with weight about 1/(rank+1)^s:
// the inverse transform of the continuous power law x^-s bounded to [1, n+1), floored, less
// one. It is exactly uniform for s = 0 and continuous through s = 1. The parts that depend only
// on s and n are computed once, leaving two transcendental calls per draw.
type zipf struct {
	n    int
	s    float64
	l    float64 // ln(n+1)
	em   float64 // (n+1)^(1-s) - 1, for s away from 1
	invA float64 // 1/(1-s)
}

func newZipf(s float64, n int) zipf {
	z := zipf{n: n, s: s, l: math.Log(float64(n) + 1)}
	if a := 1 - s; !z.nearOne() {
		z.em, z.invA = math.Expm1(a*z.l), 1/a
	}
	return z
}

// nearOne says s is 1, or so close that the general form divides by almost nothing; the two
// forms agree there to far less than a rank.
func (z zipf) nearOne() bool { return math.Abs(1-z.s) < 1e-9 }

func (z zipf) rank(u float64) int {
	if z.s == 0 {
		return min(int(u*float64(z.n)), z.n-1)
	}
	var x float64
	if z.nearOne() {
		x = math.Exp(u * z.l) // (n+1)^u
	} else {
		// (((n+1)^a - 1)*u + 1)^(1/a), with expm1 and log1p so that small |a| keeps its precision.
		x = math.Exp(math.Log1p(z.em*u) * z.invA)
	}
	switch {
	case !(x < float64(z.n)+1): // also NaN, though valid arguments give none
		return z.n - 1
	case x < 2:
		return 0
	}
	return min(int(x)-1, z.n-1)
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
