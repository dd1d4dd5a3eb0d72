package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/stages/deadletter"
)

// Headers a dead letter of the aggregator carries besides deadletter's: the raw record the
// processed one came from.
const (
	HeaderRawPartition = "raw_source_partition"
	HeaderRawOffset    = "raw_source_offset"
)

// deadLetterUndecodable dead-letters processed records the aggregator cannot read. Only something
// other than the transformer can write them, and then it may write many: the log says so at most
// once a second, with how many.
func (a *Aggregator) deadLetterUndecodable(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := a.deadLetter(ctx, recs, event.ReasonUndecodable, ""); err != nil {
		return err
	}
	if n, ok := a.undecodableLog.allow(time.Now(), len(recs)); ok {
		var facts event.ProcessedFacts
		err := parse(a.cfg.Role, recs[0].Value, &facts)
		a.log.Error("aggregator: dead-lettered processed records that cannot be read", zap.String("topic", recs[0].Topic),
			zap.Int32("partition", recs[0].Partition), zap.Int64("offset", recs[0].Offset), zap.Int("n", n),
			zap.Int64("total", a.undecodable.Load()), zap.Error(err))
	}
	return nil
}

// deadLetter writes the dead letters of recs and only then lets the folds pass over them: a
// record the view cannot take is never skipped without a trace. It retries until the broker takes
// them or ctx ends; meanwhile /readyz says why. detail "" means each record's parse error.
func (a *Aggregator) deadLetter(ctx context.Context, recs []*kgo.Record, reason event.Reason, detail string) error {
	if a.dlq == nil {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ClientID("searchflow-aggregator-dlq")}, a.kafkaOpts...)...)
		if err != nil {
			return fmt.Errorf("aggregator: dead-letter producer: %w", err)
		}
		a.dlq = cl
	}
	out := a.deadLetters(recs, reason, detail)
	err := a.retry.Retry(ctx, func() error {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return a.dlq.ProduceSync(pctx, out...).FirstErr()
	}, func(_ int, err error, _ time.Duration) {
		msg := fmt.Sprintf("cannot write dead letters to %s (%s/%d offset %d stays unapplied): %v",
			a.cfg.DeadLetterTopic, recs[0].Topic, recs[0].Partition, recs[0].Offset, err)
		if a.dlqProblem.Swap(&msg) == nil {
			a.log.Error("aggregator: "+msg+"; retrying", zap.String("reason", string(reason)))
		}
	})
	if err != nil {
		// Retry gives up only when ctx ends: say so, so that a drain is not taken for a failure.
		return fmt.Errorf("aggregator: write dead letters to %s: %w (last error: %v)", a.cfg.DeadLetterTopic, ctx.Err(), err)
	}
	a.dlqProblem.Store(nil)
	a.progress.markDeadLettered(recs)
	n := int64(len(recs))
	a.deadLettered.Add(n)
	a.consumed.Add(n)
	a.counts.DeadLetter(string(reason), n)
	switch reason {
	case event.ReasonApplyFailed:
		a.log.Warn("aggregator: dead-lettered records the view refused", zap.String("topic", recs[0].Topic),
			zap.Int32("partition", recs[0].Partition), zap.Int64("offset", recs[0].Offset), zap.Int("n", len(recs)),
			zap.String("reason", detail))
	case event.ReasonUndecodable:
		a.undecodable.Add(n)
	}
	return nil
}

// deadLetters makes the dead letters of recs; detail "" means each record's parse error.
func (a *Aggregator) deadLetters(recs []*kgo.Record, reason event.Reason, detail string) []*kgo.Record {
	out := make([]*kgo.Record, len(recs))
	var facts event.ProcessedFacts
	for i, r := range recs {
		why := detail
		if why == "" {
			if err := parse(a.cfg.Role, r.Value, &facts); err != nil {
				why = err.Error()
			}
		}
		var extra []kgo.RecordHeader
		for _, h := range r.Headers {
			switch h.Key {
			case event.HeaderSourcePartition:
				extra = append(extra, kgo.RecordHeader{Key: HeaderRawPartition, Value: h.Value})
			case event.HeaderSourceOffset:
				extra = append(extra, kgo.RecordHeader{Key: HeaderRawOffset, Value: h.Value})
			}
		}
		out[i] = deadletter.Record(a.cfg.DeadLetterTopic, r, a.Name(), reason, why, extra...)
	}
	return out
}

// throttle lets a log line through at most once a second and counts what it held back, so a
// flood of bad records is one line a second, not one per record.
type throttle struct {
	last time.Time
	held int
}

// allow counts n more occurrences at now and reports whether a line may be written, with the
// occurrences since the previous line.
func (t *throttle) allow(now time.Time, n int) (int, bool) {
	t.held += n
	if !t.last.IsZero() && now.Sub(t.last) < time.Second {
		return 0, false
	}
	n, t.held, t.last = t.held, 0, now
	return n, true
}
