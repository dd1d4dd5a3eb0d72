package ops

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/view"
)

// maxSlot is the highest Redis Cluster hash slot.
const maxSlot = 16383

// Rebuild resets shards of the view so that the aggregators rebuild them from Kafka: with all,
// every shard of the stored layout, then the layout itself and any layout-1 keys, so that a
// process with other topics or another partition count can claim the view; otherwise the one
// shard whose slot is slot. Each reset is view.ResetShard: a live aggregator notices its
// shard's missing offset and reads that partition again from the start of the topic, exactly
// once. On embedded defaults (REDIS_ADDR empty) shards are reset to the snapshot in DATA_DIR
// instead (rebuildFromSnapshot). What was reset is printed on out. A *UsageError means nothing was done: both or neither
// of all and slot, a slot no shard is in, or settings that cannot reach the view.
func Rebuild(ctx context.Context, cfg config.Config, out io.Writer, all bool, slot int) error {
	switch {
	case all && slot >= 0:
		return usageError("give --all or --slot N, not both")
	case !all && slot < 0:
		return usageError("give --all (every shard) or --slot N (the shard in Redis Cluster hash slot N)")
	case slot > maxSlot:
		return usageError("slot %d is not a Redis Cluster hash slot (0..%d)", slot, maxSlot)
	}
	rc, err := connectRedis(cfg)
	if err != nil {
		return err
	}
	defer rc.client.Close()
	if cfg.EmbeddedRedis() {
		return rebuildFromSnapshot(ctx, cfg, rc, out, all, slot)
	}
	v := view.New(rc.client)
	shards, _, err := v.Shards(ctx)
	if err != nil {
		return rc.explain(fmt.Errorf("ops: read the view's layout: %w", err))
	}
	if !all {
		sh, ok := shardInSlot(shards, slot)
		if !ok {
			return usageError("no shard of the view is in slot %d; %s", slot, listShards(shards))
		}
		shards = []view.Shard{sh}
	}
	for _, sh := range shards {
		n, err := v.ResetShard(ctx, sh)
		if err != nil {
			return rc.explain(fmt.Errorf("ops: reset shard %v (run the command again to finish it): %w", sh, err))
		}
		if _, err := fmt.Fprintf(out, "reset shard %v: %d key(s) deleted; its aggregator reads the partition again from the start\n", sh, n); err != nil {
			return fmt.Errorf("ops: write the report: %w", err)
		}
	}
	if !all {
		return nil
	}
	// The layout goes last: a reset that fails half-way leaves it, so running the command
	// again finds the shards to finish.
	n, err := v.DeleteLayout(ctx)
	if err != nil {
		return rc.explain(fmt.Errorf("ops: %w", err))
	}
	_, err = fmt.Fprintf(out, "reset %d shards, then deleted the layout and layout-1 keys (%d key(s)): the next aggregator to start claims the view\n", len(shards), n)
	if err != nil {
		return fmt.Errorf("ops: write the report: %w", err)
	}
	return nil
}

// rebuildFromSnapshot is Rebuild for the embedded store's view, whose topics the daemon trims
// below its snapshot: each shard is reset to the snapshot's state of it (view.ResetShardTo), and
// its aggregator reads the partition again from the snapshot's offset. The layout stays: it is
// the snapshot's.
func rebuildFromSnapshot(ctx context.Context, cfg config.Config, rc *redisConn, out io.Writer, all bool, slot int) error {
	// The daemon's keeper must not write a newer snapshot and trim below it between our reading
	// the file and resetting the shards: the records in between would be lost. Its rounds take
	// the same lock.
	v := view.New(rc.client)
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	release, err := v.WaitLockSnapshots(lctx, 10*time.Minute, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	defer func() { _ = release(context.WithoutCancel(ctx)) }()
	s, err := view.ReadSnapshot(cfg.SnapshotPath())
	if err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	if s == nil {
		return usageError("the embedded view has no snapshot at %s yet (the daemon writes one every EMBEDDED_SNAPSHOT_INTERVAL): "+
			"run the command again in a moment, with the daemon's DATA_DIR", cfg.SnapshotPath())
	}
	shards, _, err := v.Shards(ctx)
	if err != nil {
		return fmt.Errorf("ops: read the view's layout: %w", err)
	}
	if !all {
		sh, ok := shardInSlot(shards, slot)
		if !ok {
			return usageError("no shard of the view is in slot %d; %s", slot, listShards(shards))
		}
		shards = []view.Shard{sh}
	}
	states := map[[2]int32]view.ShardState{}
	for _, st := range s.Shards {
		states[[2]int32{int32(st.Role), st.Partition}] = st
	}
	for _, sh := range shards {
		st, ok := states[[2]int32{int32(sh.Role), sh.Partition}]
		if !ok {
			st = view.ShardState{Role: sh.Role, Partition: sh.Partition, Next: view.NoOffset}
		}
		n, err := v.ResetShardTo(ctx, sh, st)
		if err != nil {
			return fmt.Errorf("ops: reset shard %v to its snapshot (run the command again to finish it): %w", sh, err)
		}
		from := "the start"
		if st.Next != view.NoOffset {
			from = fmt.Sprintf("offset %d", st.Next)
		}
		if _, err := fmt.Fprintf(out, "reset shard %v to its snapshot of %s: %d key(s) deleted; its aggregator reads the partition again from %s\n",
			sh, s.Taken.Format(time.RFC3339), n, from); err != nil {
			return fmt.Errorf("ops: write the report: %w", err)
		}
	}
	return nil
}

func shardInSlot(shards []view.Shard, slot int) (view.Shard, bool) {
	for _, sh := range shards {
		if int(sh.Slot) == slot {
			return sh, true
		}
	}
	return view.Shard{}, false
}

// listShards names every shard with its slot, for an operator who gave a slot none is in.
func listShards(shards []view.Shard) string {
	if len(shards) == 0 {
		return "redis holds no view (no searchflow:layout)"
	}
	names := make([]string, len(shards))
	for i, sh := range shards {
		names[i] = sh.String()
	}
	return "the shards are: " + strings.Join(names, ", ")
}
