package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/backoff"
	"github.com/searchflow/searchflow/keeper"
	"github.com/searchflow/searchflow/view"
)

// What embedded mode keeps: the embedded store's view in a snapshot file, loaded at start, and
// the embedded broker's topics trimmed by package keeper.

// segmentBytes is the embedded broker's segment size: a quarter of a partition's share of the
// budget, between 1 and 16 MiB, so that a trim frees disk in steps well within the budget.
func segmentBytes(cfg config.Config) int64 {
	perPartition := int64(cfg.EmbeddedRetentionMB) << 20 / int64(cfg.TopicPartitions)
	return min(max(perPartition/4, 1<<20), 16<<20)
}

// newKeeper returns the keeper of this process's embedded services: it trims the embedded
// broker's topics, and snapshots the view when the embedded store holds it and this process
// writes it. Nil when there is nothing to keep.
func (p *pipeline) newKeeper() *keeper.Keeper {
	cfg := p.cfg
	snapshots := cfg.EmbeddedRedis() && cfg.Enabled(config.StageAggregator)
	if !cfg.EmbeddedKafka() && !snapshots {
		return nil
	}
	kc := keeper.Config{RawTopic: cfg.RawTopic, ProcessedTopic: cfg.ProcessedTopic, HotelTopic: cfg.HotelTopic,
		DeadLetterTopic: cfg.DeadLetterTopic, TransformerGroup: TransformerConfig(cfg).Group,
		Retention: cfg.EmbeddedRetention, TopicBudget: int64(cfg.EmbeddedRetentionMB) << 20,
		Interval: cfg.EmbeddedSnapshotInterval, Trim: cfg.EmbeddedKafka(),
		OnSnapshot: func(s *view.Snapshot) { p.metrics.SnapshotTime.Set(float64(s.Taken.UnixNano()) / 1e9) },
		OnDeleted:  func(topic string, n int64) { p.metrics.DeletedRecords.WithLabelValues(topic).Add(float64(n)) }}
	if snapshots {
		kc.SnapshotPath = cfg.SnapshotPath()
	}
	return keeper.New(kc, kadm.NewClient(p.admin), p.view, p.log.With(zap.String("stage", "keeper")))
}

// restoreView loads the snapshot of DATA_DIR into the embedded store, which starts empty, after
// checking that the topics still hold every record after its offsets. Without a snapshot the
// view is rebuilt from the topics' first offsets, so they must not have been trimmed.
func (p *pipeline) restoreView(ctx context.Context, admin *kgo.Client) error {
	path := p.cfg.SnapshotPath()
	s, err := view.ReadSnapshot(path)
	if err != nil {
		return fmt.Errorf("pipeline: %w (delete %s, and the topics under %s/kafka with it, to start over)", err, path, p.cfg.DataDir)
	}
	return p.retry(ctx, "kafka", "check the view's snapshot against the topics", func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if want := TrendSpec(p.cfg).String(); s != nil && s.Layout.Trends != want {
			// Windows kept with other settings cannot become these: rebuild from the topics if
			// they still hold everything, else the operator chooses.
			if err := p.checkSnapshot(cctx, kadm.NewClient(admin), nil, path); err != nil {
				return backoff.Permanent(fmt.Errorf("the view in %s keeps trends %q, TREND_WINDOWS and ALLOWED_LATENESS ask for %q, "+
					"and the topics were trimmed since, so the view cannot be rebuilt with them: start with the settings it "+
					"was built with, or delete %s and %s/kafka to start over (%w)", path, s.Layout.Trends, want, path, p.cfg.DataDir, err))
			}
			p.log.Warn("the view's snapshot keeps other trends than TREND_WINDOWS and ALLOWED_LATENESS ask for; rebuilding the view from the topics",
				zap.String("path", path), zap.String("snapshot_trends", s.Layout.Trends), zap.String("trends", want))
			return nil
		}
		if err := p.checkSnapshot(cctx, kadm.NewClient(admin), s, path); err != nil {
			return err
		}
		if s == nil {
			return nil
		}
		// No short deadline for the restore itself: a large view takes a while to load, and a
		// restore cut short would stop every start alike.
		if err := p.view.RestoreSnapshot(ctx, s); err != nil {
			return backoff.Permanent(fmt.Errorf("load %s: %w", path, err))
		}
		p.log.Info("view restored from its snapshot", zap.String("path", path), zap.Time("taken", s.Taken),
			zap.Int64("events", s.Events()), zap.Any("users_next", s.Next(view.UserShards)))
		return nil
	})
}

// checkSnapshot refuses a snapshot (or its absence) that the topics cannot continue: a partition
// trimmed past the snapshot's offset, or one whose end is before it (another broker's topics).
func (p *pipeline) checkSnapshot(ctx context.Context, adm *kadm.Client, s *view.Snapshot, path string) error {
	topics := map[string]view.Role{p.cfg.ProcessedTopic: view.UserShards, p.cfg.HotelTopic: view.HotelShards}
	starts, err := adm.ListStartOffsets(ctx, p.cfg.ProcessedTopic, p.cfg.HotelTopic)
	if err != nil {
		return err
	}
	ends, err := adm.ListEndOffsets(ctx, p.cfg.ProcessedTopic, p.cfg.HotelTopic)
	if err != nil {
		return err
	}
	var problems, unanswered []error
	starts.Each(func(o kadm.ListedOffset) {
		end, ok := ends.Lookup(o.Topic, o.Partition)
		if o.Err != nil || !ok || end.Err != nil {
			// Not skipped: a partition left unchecked could hide a trim past the snapshot.
			unanswered = append(unanswered, fmt.Errorf("%s/%d: offsets not listed (%v, %v)", o.Topic, o.Partition, o.Err, end.Err))
			return
		}
		next := int64(0)
		if s != nil {
			if n, ok := s.Next(topics[o.Topic])[o.Partition]; ok && n != view.NoOffset {
				next = n
			}
		}
		switch {
		case o.Offset > next && s == nil:
			problems = append(problems, fmt.Errorf("%s/%d starts at offset %d, trimmed, so the view cannot be rebuilt from the topic's start without the snapshot %s",
				o.Topic, o.Partition, o.Offset, path))
		case o.Offset > next:
			problems = append(problems, fmt.Errorf("%s/%d starts at offset %d, past the snapshot's %d", o.Topic, o.Partition, o.Offset, next))
		case end.Offset < next:
			problems = append(problems, fmt.Errorf("%s/%d ends at offset %d, before the snapshot's %d: the snapshot is not of these topics",
				o.Topic, o.Partition, end.Offset, next))
		}
	})
	if len(unanswered) > 0 && len(problems) == 0 {
		return errors.Join(unanswered...) // retried
	}
	if len(problems) > 0 {
		return backoff.Permanent(fmt.Errorf("the embedded view cannot be rebuilt exactly: %w (delete %s and %s/kafka to start over)",
			errors.Join(problems...), path, p.cfg.DataDir))
	}
	return nil
}
