package keeper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/view"
)

// partitionLog is what the trim knows of one partition.
type partitionLog struct {
	start, end int64 // the log's first offset and its end
	aged       int64 // the first offset within the retention
	size       int64 // bytes the broker holds
	needed     int64 // the first offset something still needs
}

// trimPoint is where the partition's log should start: past what expired or what is over the
// partition's share of the budget, but never past what is needed, and never past the last
// record: the embedded broker forgets a partition's end offset when no segment of it is left,
// and after a restart it would hand out offsets the readers have already passed (their
// committed offsets, the view's source marks) again.
func (l partitionLog) trimPoint(budget int64) int64 {
	from := l.aged
	if l.size > budget && l.end > l.start {
		// Keep the newest records that fit the budget, at the partition's average record size.
		keep := int64(float64(l.end-l.start) * float64(budget) / float64(l.size))
		from = max(from, l.end-keep)
	}
	return min(from, l.needed, l.end-1)
}

// Trim deletes what no longer needs keeping, and returns the records deleted per topic.
func (k *Keeper) Trim(ctx context.Context) (map[string]int64, error) {
	topics := []string{k.cfg.RawTopic, k.cfg.DeadLetterTopic}
	if k.snapshot != nil {
		topics = append(topics, k.cfg.ProcessedTopic, k.cfg.HotelTopic)
	}
	logs, err := k.logs(ctx, topics)
	if err != nil {
		return nil, err
	}
	plan := kadm.Offsets{}
	for t, parts := range logs {
		budget := k.cfg.TopicBudget / int64(max(len(parts), 1))
		for p, l := range parts {
			if to := l.trimPoint(budget); to > l.start {
				plan.Add(kadm.Offset{Topic: t, Partition: p, At: to})
			}
		}
	}
	if len(plan) == 0 {
		return map[string]int64{}, nil
	}
	resp, err := k.adm.DeleteRecords(ctx, plan)
	if err != nil {
		return nil, fmt.Errorf("keeper: delete records: %w", err)
	}
	deleted := map[string]int64{}
	var failed []error
	resp.Each(func(r kadm.DeleteRecordsResponse) {
		if r.Err != nil {
			failed = append(failed, fmt.Errorf("%s/%d: %w", r.Topic, r.Partition, r.Err))
			return
		}
		deleted[r.Topic] += r.LowWatermark - logs[r.Topic][r.Partition].start
	})
	k.log.Info("keeper: deleted records no longer needed", zap.Any("records_per_topic", deleted))
	if k.cfg.OnDeleted != nil {
		for t, n := range deleted {
			k.cfg.OnDeleted(t, n)
		}
	}
	if len(failed) > 0 {
		return deleted, fmt.Errorf("keeper: delete records: %w", errors.Join(failed...))
	}
	return deleted, nil
}

// logs reads the start, end, retention point, size and need of every partition of topics.
func (k *Keeper) logs(ctx context.Context, topics []string) (map[string]map[int32]partitionLog, error) {
	starts, err := k.adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("keeper: list start offsets: %w", err)
	}
	ends, err := k.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("keeper: list end offsets: %w", err)
	}
	aged, err := k.adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-k.cfg.Retention).UnixMilli(), topics...)
	if err != nil {
		return nil, fmt.Errorf("keeper: list offsets by time: %w", err)
	}
	dirs, err := k.adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("keeper: describe log dirs: %w", err)
	}
	needed, err := k.needed(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]map[int32]partitionLog{}
	starts.Each(func(s kadm.ListedOffset) {
		e, ok := ends.Lookup(s.Topic, s.Partition)
		if s.Err != nil || !ok || e.Err != nil {
			return // a topic not created yet, or a partition the broker could not answer for
		}
		l := partitionLog{start: s.Offset, end: e.Offset, aged: e.Offset, needed: e.Offset}
		if a, ok := aged.Lookup(s.Topic, s.Partition); ok && a.Err == nil && a.Offset >= 0 {
			l.aged = a.Offset
		}
		dirs.Each(func(d kadm.DescribedLogDir) {
			if p, ok := d.Topics[s.Topic][s.Partition]; ok {
				l.size += p.Size
			}
		})
		if need, ok := needed[s.Topic]; ok {
			l.needed = s.Offset // what no one vouched for stays
			if n, ok := need[s.Partition]; ok {
				l.needed = n
			}
		}
		if out[s.Topic] == nil {
			out[s.Topic] = map[int32]partitionLog{}
		}
		out[s.Topic][s.Partition] = l
	})
	return out, nil
}

// needed returns, for every topic that has readers, the first offset of each partition they
// still need; the dead-letter topic has none.
func (k *Keeper) needed(ctx context.Context) (map[string]map[int32]int64, error) {
	out := map[string]map[int32]int64{k.cfg.RawTopic: {}}
	committed, err := k.adm.FetchOffsets(ctx, k.cfg.TransformerGroup)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("keeper: committed offsets of %s: %w", k.cfg.TransformerGroup, err)
	}
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Topic == k.cfg.RawTopic && o.Err == nil && o.At >= 0 {
			out[k.cfg.RawTopic][o.Partition] = o.At
		}
	})
	if k.snapshot != nil {
		for topic, role := range map[string]view.Role{k.cfg.ProcessedTopic: view.UserShards, k.cfg.HotelTopic: view.HotelShards} {
			out[topic] = map[int32]int64{}
			for p, next := range k.snapshot.Next(role) {
				if next != view.NoOffset {
					out[topic][p] = next
				}
			}
		}
	}
	return out, nil
}
