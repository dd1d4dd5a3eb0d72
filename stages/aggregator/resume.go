package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/backoff"
	"github.com/searchflow/searchflow/view"
)

// How the aggregator's progress follows the view: on assignment it resumes from what the view
// stores, when the view's offsets moved under it (a conflict, or the idle check) it rebases on
// them, and on revocation it forgets the partition once its batch in flight has landed.

// resumeFromView points newly assigned partitions at the offsets stored in the view, or at the
// start of the topic for a partition the view holds nothing of.
func (a *Aggregator) resumeFromView(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := make([]int32, 0, len(assigned[a.cfg.Topic]))
	for p := range assigned[a.cfg.Topic] {
		parts = append(parts, p)
	}
	var states map[int32]view.PartitionState
	var marks map[int32]map[int32]int64
	err := a.retryRedis(ctx, "read stored offsets", func() (err error) {
		// Redis may have lost the view, its layout with it: store it again for the readers.
		if err := a.view.Reclaim(ctx); err != nil {
			return err
		}
		if states, err = a.view.States(ctx, a.cfg.Role, parts); err != nil {
			return err
		}
		marks, err = a.view.Sources(ctx, a.cfg.Role, parts)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.progress.assign(parts, states, marks)
	stored := make(map[int32]int64, len(states))
	for p, st := range states {
		stored[p] = st.Next
	}
	out := map[string]map[int32]kgo.Offset{a.cfg.Topic: {}}
	for _, p := range parts {
		if stored[p] == view.NoOffset {
			out[a.cfg.Topic][p] = kgo.NewOffset().AtStart()
		} else {
			out[a.cfg.Topic][p] = kgo.NewOffset().At(stored[p]).WithEpoch(-1)
		}
	}
	a.log.Info("aggregator: partitions assigned, resuming from the view's offsets", zap.Any("offsets", stored))
	return out, nil
}

// forget drops what the aggregator knew of revoked or lost partitions.
func (a *Aggregator) forget(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	// A batch still being applied may hold records of these partitions: let it land before the
	// next owner reads the view's offsets.
	if landing := a.landing.Load(); landing != nil {
		<-*landing
	}
	a.progress.forget(revoked[a.cfg.Topic])
}

// resolve reacts to a batch the view did not take whole because stored offsets moved under us
// (stored), or because a script refused it (stored nil). Every partition of the batch goes back
// to what Redis holds: the ones the view took to the batch's Next, unchanged ones to its Expect
// (nothing was written), moved ones to the stored offset.
func (a *Aggregator) resolve(ctx context.Context, batch *view.Batch, stored map[int32]int64) error {
	expected := make(map[int32]int64, len(batch.Offsets))
	all := make(map[int32]int64, len(batch.Offsets))
	for p, o := range batch.Offsets {
		expected[p] = o.Expect
		if batch.Applied(p) {
			expected[p] = o.Next
		}
		all[p] = expected[p]
	}
	for p, o := range stored {
		all[p] = o
	}
	return a.reset(ctx, expected, all)
}

// reset rebases the progress on the offsets the view stores (see progress.rebase) and reloads
// the source marks of the partitions it moved. It returns errRewind when the view lost data:
// Run then reconnects so that the partitions are read again from the stored offsets.
func (a *Aggregator) reset(ctx context.Context, expected, stored map[int32]int64) error {
	a.prices.clear()
	reload, drifts, rewind := a.progress.rebase(expected, stored)
	for _, d := range drifts {
		a.log.Warn("aggregator: stored offset differs from expected", zap.String("topic", a.cfg.Topic),
			zap.Int32("partition", d.partition), zap.Int64("stored", d.stored), zap.Int64("expected", d.expected))
	}
	if rewind {
		return errRewind
	}
	var marks map[int32]map[int32]int64
	var states map[int32]view.PartitionState
	err := a.retryRedis(ctx, "reload source marks", func() (err error) {
		if marks, err = a.view.Sources(ctx, a.cfg.Role, reload); err != nil {
			return err
		}
		states, err = a.view.States(ctx, a.cfg.Role, reload)
		return err
	})
	if err != nil {
		// Shutting down: leave the partitions unusable rather than judge copies blindly.
		a.progress.forget(reload)
		return nil
	}
	a.progress.reload(marks, states)
	return nil
}

// retryRedis calls fn until it succeeds or ctx ends, backing off up to 5 s. A view built for
// other topics or fewer partitions (*view.LayoutError, *view.ShardError) is not retried: the
// stage stops with the way to rebuild it.
func (a *Aggregator) retryRedis(ctx context.Context, what string, fn func() error) error {
	permanent := func() error {
		err := fn()
		var layout *view.LayoutError
		var shard *view.ShardError
		if errors.As(err, &layout) || errors.As(err, &shard) {
			return backoff.Permanent(err)
		}
		return err
	}
	err := a.retry.Retry(ctx, permanent, func(_ int, err error, wait time.Duration) {
		a.redisErrors.Add(1)
		a.log.Warn("aggregator: cannot "+what+"; retrying", zap.Error(err), zap.Duration("wait", wait))
	})
	if err != nil {
		return fmt.Errorf("aggregator: %s: %w", what, err)
	}
	return nil
}

// verify compares the offsets stored in the view with the ones this aggregator expects for its
// partitions: ahead means another writer took over (skip), behind means the view lost data
// (errRewind). When they agree it brings the group's commits up to them.
func (a *Aggregator) verify(ctx context.Context, cl *kgo.Client) error {
	expected := a.progress.snapshot().nexts()
	if len(expected) == 0 {
		return nil
	}
	parts := make([]int32, 0, len(expected))
	for p := range expected {
		parts = append(parts, p)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stored, err := a.view.Offsets(rctx, a.cfg.Role, parts)
	if err != nil {
		a.redisErrors.Add(1)
		msg := "redis unavailable: " + err.Error()
		if a.redisDown.Swap(&msg) == nil {
			a.log.Error("aggregator: cannot read the view's offsets", zap.Error(err))
		}
		return nil
	}
	a.redisDown.Store(nil)
	// `searchflow rebuild --all` (or a Redis that lost it) may have deleted the layout: store it
	// again for the readers of other processes. One that another process claimed meanwhile stops
	// this one: its shards are not the view's any more.
	var wrong *view.LayoutError
	if err := a.view.Reclaim(rctx); errors.As(err, &wrong) {
		return fmt.Errorf("aggregator: %w", err)
	}
	moved := map[int32]int64{}
	for p, o := range stored {
		if o != expected[p] {
			moved[p] = o
		}
	}
	if len(moved) == 0 {
		a.commitChanged(ctx, cl, expected)
		return nil
	}
	a.conflicts.Add(1)
	return a.reset(ctx, expected, moved)
}

// commitChanged lets the group's commits say what the view holds. They only feed lag
// monitoring, and after a restart they can trail the view (a crash between an apply and its
// commit) until a new record arrives, which would read as records left to read. Only what differs
// from the group's commits, and synchronously, before the loop allows a rebalance: a commit
// landing after a new owner's would move the group back.
func (a *Aggregator) commitChanged(ctx context.Context, cl *kgo.Client, expected map[int32]int64) {
	commits := map[int32]kgo.EpochOffset{}
	committed := cl.CommittedOffsets()[a.cfg.Topic]
	for p, o := range expected {
		if c, ok := committed[p]; o >= 0 && (!ok || c.Offset != o) {
			commits[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
		}
	}
	if len(commits) > 0 {
		cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{a.cfg.Topic: commits}, nil)
	}
}
