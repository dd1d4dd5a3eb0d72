package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// Reading Kafka for verify: the partitions each from its start up to an end offset, as a
// read_committed consumer sees them, and the aggregators' dead letters.

// The stage header of the aggregators' dead letters (the stage names of stages/aggregator).
const (
	stageUsers  = "aggregator"
	stageHotels = "aggregator-hotels"
)

// position names one record.
type position struct {
	topic     string
	partition int32
	offset    int64
}

// deadLetters are the records of the view's topics that an aggregator dead-lettered.
type deadLetters map[position]bool

// readTo reads each partition of ends from its offset in from (its start when from has none) up
// to its end offset (exclusive) with read_committed isolation and calls fn with every committed
// record in between; a partition with nothing in between is not read. The consumer keeps control records, so that a partition whose
// last offsets are a commit marker or an aborted batch is known to be read to its end all the
// same; fn sees no control record. It returns when every partition is read, or with ctx's error.
func readTo(ctx context.Context, opts []kgo.Opt, from, ends map[string]map[int32]int64, fn func(*kgo.Record)) error {
	parts := map[string]map[int32]kgo.Offset{}
	left := 0
	for topic, ps := range ends {
		for p, end := range ps {
			start, ok := from[topic][p]
			if end > start {
				if parts[topic] == nil {
					parts[topic] = map[int32]kgo.Offset{}
				}
				parts[topic][p] = kgo.NewOffset().AtStart()
				if ok {
					parts[topic][p] = kgo.NewOffset().At(start)
				}
				left++
			}
		}
	}
	if left == 0 {
		return nil
	}
	// No reset: a partition trimmed while it is read must fail the read, not skip records.
	cl, err := kgo.NewClient(append(slices.Clone(opts), kgo.ConsumePartitions(parts), kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer cl.Close()
	done := map[position]bool{}
	for left > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("%d partitions not read to their end offsets: %w", left, ctx.Err())
		}
		if err := firstFetchError(fetches); err != nil {
			return err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			at := position{topic: r.Topic, partition: r.Partition}
			end := ends[r.Topic][r.Partition]
			if done[at] {
				return // a record past the end, fetched with the last ones below it
			}
			if r.Offset < end && !r.Attrs.IsControl() {
				fn(r)
			}
			if r.Offset >= end-1 {
				done[at] = true
				left--
				cl.PauseFetchPartitions(map[string][]int32{r.Topic: {r.Partition}})
			}
		})
	}
	return nil
}

// firstFetchError returns the first error of fetches that is not the end of the poll.
func firstFetchError(fetches kgo.Fetches) error {
	for _, fe := range fetches.Errors() {
		if errors.Is(fe.Err, context.Canceled) || errors.Is(fe.Err, context.DeadlineExceeded) {
			continue
		}
		return fmt.Errorf("fetch %s partition %d: %w", fe.Topic, fe.Partition, fe.Err)
	}
	return nil
}

// readDeadLetters reads the dead-letter topic to the end offsets it has now and returns the
// records of the view's topics an aggregator dead-lettered, with how many dead letters it read.
// A partition that no longer starts at 0 has lost old dead letters to retention; a note on out
// says so, since the records they named then show up as differences.
func (k *kafkaConn) readDeadLetters(ctx context.Context, topic string, l view.Layout, out io.Writer) (deadLetters, int64, error) {
	starts, ends, err := k.offsets(ctx, topic)
	if err != nil {
		return nil, 0, err
	}
	want := map[string]map[int32]int64{topic: {}}
	ends.Each(func(e kadm.ListedOffset) {
		want[topic][e.Partition] = e.Offset
		s, ok := starts.Lookup(topic, e.Partition)
		if ok && s.Offset >= e.Offset {
			want[topic][e.Partition] = 0 // nothing left to read
		}
		if ok && s.Offset > 0 {
			fmt.Fprintf(out, "note: %s partition %d starts at offset %d: older dead letters are deleted, "+
				"and a record of the view's topics that one of them named shows as a difference\n", topic, e.Partition, s.Offset)
		}
	})
	dead := deadLetters{}
	var n int64
	err = readTo(ctx, k.opts, nil, want, func(r *kgo.Record) {
		n++
		if at, ok := deadLettered(r, l); ok {
			dead[at] = true
		}
	})
	if err != nil {
		return nil, 0, k.explain(fmt.Errorf("read the dead-letter topic %s: %w", topic, err))
	}
	return dead, n, nil
}

// deadLettered returns the record of the view's topics a dead letter names, if an aggregator
// wrote it.
func deadLettered(r *kgo.Record, l view.Layout) (position, bool) {
	h := map[string]string{}
	for _, hd := range r.Headers {
		h[hd.Key] = string(hd.Value) // the last of each name, as deadletter.Record writes them
	}
	stage, topic := h[event.HeaderStage], h[event.HeaderSourceTopic]
	if (stage != stageUsers && stage != stageHotels) || (topic != l.UsersTopic && topic != l.HotelsTopic) {
		return position{}, false
	}
	p, err1 := strconv.ParseInt(h[event.HeaderSourcePartition], 10, 32)
	o, err2 := strconv.ParseInt(h[event.HeaderSourceOffset], 10, 64)
	if err1 != nil || err2 != nil {
		return position{}, false
	}
	return position{topic: topic, partition: int32(p), offset: o}, true
}

// offsets lists the start and end offsets of every partition of topics.
func (k *kafkaConn) offsets(ctx context.Context, topics ...string) (starts, ends kadm.ListedOffsets, err error) {
	adm := kadm.NewClient(k.admin)
	err = withTimeout(ctx, func(ctx context.Context) error {
		if starts, err = adm.ListStartOffsets(ctx, topics...); err == nil {
			err = starts.Error()
		}
		if err != nil {
			return err
		}
		if ends, err = adm.ListEndOffsets(ctx, topics...); err == nil {
			err = ends.Error()
		}
		return err
	})
	if err != nil {
		return nil, nil, k.explain(fmt.Errorf("list the offsets of %v: %w", topics, err))
	}
	return starts, ends, nil
}
