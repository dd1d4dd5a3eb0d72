package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/view"
)

// A partition's progress is what the view holds of it: its next offset and its source marks,
// mirrored here (under mu) so that a fold knows which records the view already has.

// advance makes the batch's offsets and source watermarks what the next fold expects of the
// view. Called with mu held.
func (a *Aggregator) advance(batch *view.Batch) {
	for p, o := range batch.Offsets {
		if _, owned := a.next[p]; !owned {
			continue
		}
		a.next[p] = o.Next
		for sp, so := range batch.Sources[p] {
			if a.sources[p] == nil {
				a.sources[p] = map[int32]int64{}
			}
			a.sources[p][sp] = so
		}
	}
}

// forgetDeadLettered drops the dead-lettered offsets an applied batch moved past: the view's
// offsets now pass over them.
func (a *Aggregator) forgetDeadLettered(batch *view.Batch) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, o := range batch.Offsets {
		for off := range a.skip[p] {
			if off < o.Next {
				delete(a.skip[p], off)
			}
		}
	}
}

// resolve reacts to a batch the view refused because stored offsets moved under us. Every
// partition of the batch goes back to what Redis holds: unchanged ones to the batch's Expect
// (nothing was written), moved ones to the stored offset.
func (a *Aggregator) resolve(ctx context.Context, batch *view.Batch, stored map[int32]int64) error {
	expected := make(map[int32]int64, len(batch.Offsets))
	all := make(map[int32]int64, len(batch.Offsets))
	for p, o := range batch.Offsets {
		expected[p] = o.Expect
		all[p] = o.Expect
	}
	for p, o := range stored {
		all[p] = o
	}
	return a.reset(ctx, expected, all)
}

// reset points each partition in stored at the offset Redis holds and reloads its source
// watermarks. A stored offset ahead of the expected one means another writer applied those
// records: later folds skip them. One behind (or gone) means Redis lost data: reset returns
// errRewind, and Run reconnects so that the partitions are read again from the stored offsets
// (the start of the topic when none) and the view is rebuilt exactly.
func (a *Aggregator) reset(ctx context.Context, expected, stored map[int32]int64) error {
	a.mu.Lock()
	a.minKnown = nil // what Redis holds is no longer what we remember
	rewind := false
	parts := make([]int32, 0, len(stored))
	for p, st := range stored {
		if _, owned := a.next[p]; owned {
			a.next[p] = st
			parts = append(parts, p)
		}
		if st == expected[p] {
			continue
		}
		a.log.Warn("aggregator: stored offset differs from expected", zap.String("topic", a.cfg.Topic),
			zap.Int32("partition", p), zap.Int64("stored", st), zap.Int64("expected", expected[p]))
		rewind = rewind || st < expected[p]
	}
	a.mu.Unlock()
	if rewind {
		return errRewind
	}
	var sources map[int32]map[int32]int64
	err := a.retryRedis(ctx, "reload source watermarks", func() (err error) {
		sources, err = a.view.Sources(ctx, a.cfg.Topic, parts)
		return err
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range parts {
		if _, owned := a.next[p]; !owned {
			continue
		}
		if err != nil {
			// Shutting down: leave the partition unusable rather than judge duplicates blindly.
			delete(a.next, p)
			continue
		}
		a.sources[p] = sources[p]
	}
	return nil
}

// resumeFromView points newly assigned partitions at the offsets stored in the view, or at the
// start of the topic for a partition the view holds nothing of.
func (a *Aggregator) resumeFromView(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := make([]int32, 0, len(assigned[a.cfg.Topic]))
	for p := range assigned[a.cfg.Topic] {
		parts = append(parts, p)
	}
	var stored map[int32]int64
	var sources map[int32]map[int32]int64
	err := a.retryRedis(ctx, "read stored offsets", func() (err error) {
		if stored, err = a.view.Offsets(ctx, a.cfg.Topic, parts); err != nil {
			return err
		}
		sources, err = a.view.Sources(ctx, a.cfg.Topic, parts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]map[int32]kgo.Offset{a.cfg.Topic: {}}
	for _, p := range parts {
		a.next[p] = stored[p]
		a.sources[p] = sources[p]
		if stored[p] == view.NoOffset {
			out[a.cfg.Topic][p] = kgo.NewOffset().AtStart()
		} else {
			out[a.cfg.Topic][p] = kgo.NewOffset().At(stored[p]).WithEpoch(-1)
		}
	}
	a.log.Info("aggregator: partitions assigned, resuming from the view's offsets", zap.Any("offsets", stored))
	return out, nil
}

// retryRedis calls fn until it succeeds or ctx ends, backing off up to 5 s.
func (a *Aggregator) retryRedis(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		a.redisErrors.Add(1)
		a.log.Warn("aggregator: cannot "+what+"; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// forget drops what the aggregator knew of revoked or lost partitions.
func (a *Aggregator) forget(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	// A batch still being applied may hold records of these partitions: let it land before the
	// next owner reads the view's offsets.
	a.mu.Lock()
	landing := a.landing
	a.mu.Unlock()
	if landing != nil {
		<-landing
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range revoked[a.cfg.Topic] {
		delete(a.next, p)
		delete(a.sources, p)
		delete(a.skip, p)
	}
}
