package generator

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// SynthOptions shape a synthetic stream for event-time features; the zero value shapes nothing.
type SynthOptions struct {
	// Skew is the Zipf exponent of user and hotel popularity, whose favourites drift with event
	// time (see popularity); 0 draws them uniformly, as NewSynth does.
	Skew float64
	// Disorder moves each search time back by a random amount in [0, Disorder].
	Disorder time.Duration
	// LateFraction is the share of events moved back a further 2*Lateness + Disorder + 1s,
	// rounded up to whole seconds, so that a consumer allowing Lateness finds them late.
	LateFraction float64
	Lateness     time.Duration
}

// maxShift bounds Disorder and Lateness so that the furthest shift, 2*Lateness + 2*Disorder + 2s,
// stays far inside a time.Duration.
const maxShift = 10 * 8760 * time.Hour

func (o SynthOptions) validate(users, hotels int) error {
	var errs []error
	if users < 1 || hotels < 1 {
		errs = append(errs, fmt.Errorf("%d users and %d hotels: need at least 1 of each", users, hotels))
	}
	if !(o.Skew >= 0) || math.IsInf(o.Skew, 1) {
		errs = append(errs, fmt.Errorf("skew %v: must be a finite number >= 0", o.Skew))
	}
	if o.Disorder < 0 || o.Disorder > maxShift {
		errs = append(errs, fmt.Errorf("disorder %s: must be between 0 and %s", o.Disorder, maxShift))
	}
	if !(o.LateFraction >= 0 && o.LateFraction <= 1) {
		errs = append(errs, fmt.Errorf("late fraction %v: must be between 0 and 1", o.LateFraction))
	}
	if o.Lateness < 0 || o.Lateness > maxShift {
		errs = append(errs, fmt.Errorf("lateness %s: must be between 0 and %s", o.Lateness, maxShift))
	}
	return errors.Join(errs...)
}

// lateGap is how far a late event goes back beyond its own disorder: twice the lateness, so that
// it is late even against a stream time that trails the newest events by up to the lateness,
// plus the disorder that other events' times may trail by, plus a second, rounded up to whole
// seconds because search_timestamp counts seconds.
func lateGap(lateness, disorder time.Duration) time.Duration {
	g := 2*lateness + disorder + time.Second
	if r := g % time.Second; r != 0 {
		g += time.Second - r
	}
	return g
}

// shape applies the options to event i at nominal time ts: a skewed, drifting user and hotel in
// place of the uniform ones when Skew is set, and a search time moved back. Its draws come from a
// stream of their own, always the same six in the same order, so the offers stay NewSynth's and
// which events are late depends on neither skew nor disorder.
func (s *Synth) shape(i int64, ts time.Time, user, hotel int) (int, int, time.Time) {
	s.shapePCG.Seed(s.seed^shapeSalt, uint64(i))
	r := s.shapeRNG
	uUser, blendUser, uHotel, blendHotel := r.Float64(), r.Float64(), r.Float64(), r.Float64()
	uDisorder, uLate := r.Float64(), r.Float64()
	if s.opts.Skew > 0 {
		user = s.userPop.draw(uUser, blendUser, ts)
		hotel = s.hotelPop.draw(uHotel, blendHotel, ts)
	}
	stamp := ts
	if s.opts.Disorder > 0 {
		// Float64 < 1, but the product may round up to Disorder (or past it, beyond 2^53ns).
		stamp = stamp.Add(-min(time.Duration(uDisorder*float64(s.opts.Disorder)), s.opts.Disorder))
	}
	if uLate < s.opts.LateFraction {
		stamp = stamp.Add(-s.lateGap)
	}
	return user, hotel, stamp
}
