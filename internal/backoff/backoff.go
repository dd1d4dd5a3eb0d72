// Package backoff is searchflow's one way to wait between attempts: capped exponential backoff
// that ends when the context does. Retry runs a whole retry loop; Backoff serves loops that decide
// for themselves what to do between attempts.
package backoff

import (
	"context"
	"errors"
	"time"
)

// Policy is how long to wait after the first failure, and the longest wait it doubles up to.
type Policy struct {
	First, Max time.Duration
}

// Retry calls fn until it returns nil or ctx ends, waiting between attempts (First, doubling up
// to Max). onFail, if set, hears of each failure and the wait that follows it. It returns nil, the
// last error of fn when ctx ended first, or at once an error fn marked Permanent.
func (p Policy) Retry(ctx context.Context, fn func() error, onFail func(attempt int, err error, wait time.Duration)) error {
	b := p.New()
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		var perm *permanent
		if errors.As(err, &perm) {
			return err
		}
		wait := b.Next()
		if onFail != nil {
			onFail(attempt, err, wait)
		}
		if !Wait(ctx, wait) {
			return err
		}
	}
}

// Permanent marks an error that retrying cannot cure: Retry returns it (unmarked) at once.
func Permanent(err error) error { return &permanent{err: err} }

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Backoff is the sequence of waits of one retry loop.
type Backoff struct {
	p    Policy
	next time.Duration
}

// New starts a sequence at p.First.
func (p Policy) New() *Backoff { return &Backoff{p: p, next: p.First} }

// Next returns the wait after one more failure, and doubles the following one up to Max.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.p.Max)
	return d
}

// Reset starts the sequence over, after a success.
func (b *Backoff) Reset() { b.next = b.p.First }

// Wait sleeps for d, or until ctx ends; it reports whether the whole wait passed.
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
