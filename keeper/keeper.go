// Package keeper bounds what embedded mode keeps: it writes the embedded store's view to a
// snapshot file in DATA_DIR, and deletes the embedded broker's records that are older than the
// retention or past a topic's budget — only once nothing needs them any more.
//
// What "needed" means per topic:
//   - the raw topic: the transformer has not committed past it (its group's committed offsets);
//   - the processed and hotel topics: the snapshot does not hold it yet. With an external Redis
//     (no snapshot) they are the view's source of truth and are kept whole;
//   - the dead-letter topic: nothing reads it back; it goes by age and budget alone.
//
// A crash between a snapshot and a trim is harmless: the file is replaced whole (view.WriteSnapshot)
// before any trim that relies on it, and a trim deletes only below the offsets of the snapshot on
// disk, so the next start loads a snapshot whose offsets are still in the topics.
package keeper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/view"
)

// Config is what the keeper keeps and for how long.
type Config struct {
	RawTopic, ProcessedTopic, HotelTopic, DeadLetterTopic string
	// TransformerGroup is the consumer group whose committed offsets bound the raw topic's trim.
	TransformerGroup string
	// Retention is how long a record is kept at least, unless its topic is over budget.
	Retention time.Duration
	// TopicBudget is the bytes a topic may hold (spread evenly over its partitions) before its
	// oldest records are deleted, within the retention too — once nothing needs them.
	TopicBudget int64
	// Interval is the time between two rounds (snapshot, then trim).
	Interval time.Duration
	// SnapshotPath is where the view is written; empty when the view is not the embedded store's,
	// and then the processed and hotel topics are kept whole.
	SnapshotPath string
	// Trim is set when the broker is the embedded one: an external broker's retention is its
	// operator's.
	Trim bool
	// OnSnapshot and OnDeleted, when set, hear of each snapshot written and of the records
	// deleted from a topic (for metrics).
	OnSnapshot func(*view.Snapshot)
	OnDeleted  func(topic string, n int64)
}

// Keeper runs the rounds. Owned by one goroutine.
type Keeper struct {
	cfg  Config
	adm  *kadm.Client
	view *view.View
	log  *zap.Logger
	// snapshot is the latest snapshot written to SnapshotPath: the processed topics' trims go no
	// further than its offsets.
	snapshot *view.Snapshot
}

// New returns a keeper over the broker adm reaches and v, the embedded view (nil without one).
func New(cfg Config, adm *kadm.Client, v *view.View, log *zap.Logger) *Keeper {
	return &Keeper{cfg: cfg, adm: adm, view: v, log: log}
}

// Run does a round every Interval until ctx ends. A failed round is logged and the next one
// tries again: nothing is lost by keeping records longer.
func (k *Keeper) Run(ctx context.Context) error {
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := k.Round(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("keeper: round failed; the next one tries again", zap.Error(err))
		}
	}
}

// lockTTL bounds how long a round holds the snapshot lock if its process dies holding it.
const lockTTL = 10 * time.Minute

// Round is one snapshot (with an embedded view) followed by one trim; it returns the records
// deleted per topic. With an embedded view the round holds the view's snapshot lock, which a
// rebuild from the snapshot takes too; a round that finds it taken is skipped. A failed snapshot
// does not stop the trim: it trims below the last snapshot written, which is still on disk.
func (k *Keeper) Round(ctx context.Context) (map[string]int64, error) {
	var snapErr error
	if k.cfg.SnapshotPath != "" {
		release, ok, err := k.view.LockSnapshots(ctx, lockTTL)
		if err != nil {
			return nil, fmt.Errorf("keeper: %w", err)
		}
		if !ok {
			k.log.Debug("keeper: a rebuild holds the snapshot lock; round skipped")
			return map[string]int64{}, nil
		}
		defer func() {
			if err := release(context.WithoutCancel(ctx)); err != nil {
				k.log.Warn("keeper: release the snapshot lock", zap.Error(err))
			}
		}()
		snapErr = k.Snapshot(ctx)
	}
	if !k.cfg.Trim {
		return map[string]int64{}, snapErr
	}
	deleted, err := k.Trim(ctx)
	return deleted, errors.Join(snapErr, err)
}

// Snapshots reports whether the keeper writes the view's snapshot.
func (k *Keeper) Snapshots() bool { return k.cfg.SnapshotPath != "" }

// Snapshot writes the view to SnapshotPath now (also called once more after the stages stopped,
// so that a clean restart replays nothing).
func (k *Keeper) Snapshot(ctx context.Context) error {
	start := time.Now()
	s, err := k.view.TakeSnapshot(ctx)
	if err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	if s == nil {
		return nil // no view yet
	}
	if err := view.WriteSnapshot(k.cfg.SnapshotPath, s); err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	k.snapshot = s
	if k.cfg.OnSnapshot != nil {
		k.cfg.OnSnapshot(s)
	}
	k.log.Debug("keeper: view snapshot written", zap.String("path", k.cfg.SnapshotPath),
		zap.Int64("events", s.Events()), zap.Duration("took", time.Since(start)))
	return nil
}
