package ops

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/view"
)

// Verify compares every shard of the view in Redis with what the aggregators' rules make of the
// Kafka records it was built from, and reports each difference on out (the first maxDiffs of
// them) and a summary line. equal is true when there is none. An error means verify could not
// run: bad settings, a service it cannot reach, a view with no layout, records deleted from a
// processed topic.
//
// Each shard is read whole at one instant (view.ReadShard), so verify works on a running
// pipeline: it folds the shard's partition up to the offset that snapshot holds and compares
// there. The dead-letter topic is read after the last snapshot, because an aggregator writes a
// dead letter before the batch that passes its record is applied: every dead letter a snapshot
// relies on is there by then.
//
// On embedded defaults (REDIS_ADDR empty) the view continues the snapshot in DATA_DIR and its
// topics may be trimmed below it: each shard's fold starts from the snapshot's state of it, at
// the snapshot's offset.
func Verify(ctx context.Context, cfg config.Config, out io.Writer, maxDiffs int) (equal bool, err error) {
	rc, err := connectRedis(cfg)
	if err != nil {
		return false, err
	}
	defer rc.client.Close()
	// The embedded store's view continues the snapshot in DATA_DIR, and its topics may be trimmed
	// below the snapshot's offsets: fold from the snapshot. Read it before the shards, which are
	// never behind it then.
	var base *view.Snapshot
	if cfg.EmbeddedRedis() {
		if base, err = view.ReadSnapshot(cfg.SnapshotPath()); err != nil {
			return false, fmt.Errorf("ops: %w", err)
		}
	}
	v := view.New(rc.client)
	shards, layout, err := v.Shards(ctx)
	if err != nil {
		return false, rc.explain(fmt.Errorf("ops: read the view's layout: %w", err))
	}
	if len(shards) == 0 {
		return false, errors.New("ops: redis holds no view (no searchflow:layout): nothing to verify; the aggregators store it when they start")
	}
	checks, err := readShards(ctx, v, shards, rc.explain)
	if err != nil {
		return false, err
	}
	if base != nil {
		startFrom(checks, base)
	}
	cheapest, err := v.KeepsCheapest(ctx)
	if err != nil {
		return false, rc.explain(fmt.Errorf("ops: %w", err))
	}
	for _, c := range checks {
		c.cheapest = cheapest
	}
	kc, err := connectKafka(cfg)
	if err != nil {
		return false, err
	}
	defer kc.admin.Close()
	dead, deadRead, err := kc.readDeadLetters(ctx, cfg.DeadLetterTopic, layout, out)
	if err != nil {
		return false, fmt.Errorf("ops: %w", err)
	}
	if err := kc.foldShards(ctx, layout, checks, dead); err != nil {
		return false, fmt.Errorf("ops: %w", err)
	}
	rep := &report{out: out, max: maxDiffs}
	for _, c := range checks {
		c.compare(rep)
	}
	rep.summary(checks, deadRead)
	if rep.err != nil {
		return false, fmt.Errorf("ops: write the report: %w", rep.err)
	}
	return rep.n == 0, nil
}

// shardCheck is one shard's snapshot and the fold it is compared with.
type shardCheck struct {
	dump view.ShardDump
	// from is the offset the fold starts at: 0, or the offset of the snapshot it starts from.
	from int64
	// cheapest is set when the view keeps the cheapest-per-search prices (view.KeepsCheapest).
	cheapest bool
	// problem, when set, is why the shard cannot be compared record by record (damaged, being
	// rebuilt, ahead of its topic): itself a difference.
	problem string
	fold    *shardFold
}

// readShards takes the snapshot of every shard.
func readShards(ctx context.Context, v *view.View, shards []view.Shard, explain func(error) error) ([]*shardCheck, error) {
	checks := make([]*shardCheck, 0, len(shards))
	for _, sh := range shards {
		c := &shardCheck{dump: view.ShardDump{Shard: sh, Next: view.NoOffset}}
		d, err := v.ReadShard(ctx, sh)
		var damaged *view.DamagedError
		switch {
		case errors.As(err, &damaged):
			c.problem = fmt.Sprintf("is damaged: key %s %s", damaged.Key, damaged.Problem)
		case err != nil:
			return nil, explain(fmt.Errorf("ops: %w", err))
		case d.Rebuilding:
			c.dump = d
			c.problem = fmt.Sprintf("is marked as being rebuilt: a reset is under way, or one stopped half-way (run `searchflow rebuild --slot %d` again)", sh.Slot)
		default:
			c.dump, c.fold = d, newShardFold(sh.Role)
		}
		checks = append(checks, c)
	}
	return checks, nil
}

// startFrom seeds each shard's fold with the snapshot's state of the shard, and starts it at the
// snapshot's offset.
func startFrom(checks []*shardCheck, base *view.Snapshot) {
	states := map[[2]int32]view.ShardState{}
	for _, st := range base.Shards {
		states[[2]int32{int32(st.Role), st.Partition}] = st
	}
	for _, c := range checks {
		st, ok := states[[2]int32{int32(c.dump.Shard.Role), c.dump.Shard.Partition}]
		if c.fold == nil || !ok || st.Next == view.NoOffset {
			continue
		}
		c.from = st.Next
		c.fold.seed(st)
	}
}

// foldShards reads each shard's partition from the shard's start (0, or its snapshot's offset)
// up to the shard's offset and folds it. A shard whose
// offset lies beyond its partition's end gets a problem instead; a partition whose first records
// were deleted makes verify impossible.
func (k *kafkaConn) foldShards(ctx context.Context, l view.Layout, checks []*shardCheck, dead deadLetters) error {
	starts, ends, err := k.offsets(ctx, l.UsersTopic, l.HotelsTopic)
	if err != nil {
		return err
	}
	want := map[string]map[int32]int64{l.UsersTopic: {}, l.HotelsTopic: {}}
	from := map[string]map[int32]int64{l.UsersTopic: {}, l.HotelsTopic: {}}
	byPart := map[position]*shardCheck{}
	for _, c := range checks {
		if c.fold == nil || c.dump.Next <= c.from {
			if c.fold != nil && c.from > 0 && c.dump.Next < c.from {
				c.problem, c.fold = fmt.Sprintf("holds offset %d, behind the snapshot it was loaded from (%d)", c.dump.Next, c.from), nil
			}
			continue
		}
		sh, topic := c.dump.Shard, l.Topic(c.dump.Shard.Role)
		start, okStart := starts.Lookup(topic, sh.Partition)
		end, okEnd := ends.Lookup(topic, sh.Partition)
		holds := fmt.Sprintf("holds offset %d of %s partition %d", c.dump.Next, topic, sh.Partition)
		switch {
		case !okStart || !okEnd:
			c.problem, c.fold = holds+", which does not exist", nil
		case c.dump.Next > end.Offset:
			c.problem, c.fold = fmt.Sprintf("%s, which ends at %d: the view was built from other records", holds, end.Offset), nil
		case start.Offset > c.from && c.from == 0:
			return fmt.Errorf("%s partition %d starts at offset %d: its first records are deleted (retention), "+
				"so the view cannot be folded again from Kafka", topic, sh.Partition, start.Offset)
		case start.Offset > c.from:
			return fmt.Errorf("%s partition %d starts at offset %d, past the snapshot's %d: a newer snapshot was written "+
				"and the topic trimmed while verify ran; run it again", topic, sh.Partition, start.Offset, c.from)
		default:
			want[topic][sh.Partition] = c.dump.Next
			from[topic][sh.Partition] = c.from
			byPart[position{topic: topic, partition: sh.Partition}] = c
		}
	}
	err = readTo(ctx, k.opts, from, want, func(r *kgo.Record) {
		c := byPart[position{topic: r.Topic, partition: r.Partition}]
		c.fold.add(r, dead[position{topic: r.Topic, partition: r.Partition, offset: r.Offset}])
	})
	if err != nil {
		return k.explain(fmt.Errorf("read %s and %s: %w", l.UsersTopic, l.HotelsTopic, err))
	}
	return nil
}
