package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/stages/deadletter"
	"github.com/searchflow/searchflow/view"
)

// How the aggregator meets a batch the view will not take. An outage (Redis away, loading, busy,
// out of memory, credentials refused) is waited out: the records are innocent. A refusal (the
// script found a key of the wrong type, or failed in a way nobody foresaw) is retried a few
// times, then narrowed down to the records at fault — at once when the script names the hotel,
// by halving the run otherwise — which go to the dead-letter topic, so the partition moves on.
// A view damaged in a key every batch writes blames no record: it is reported and waited for.

// Bounds of the retries.
const (
	refusalRetries = 3 // refusals of one batch before its records are narrowed down
	backoffFirst   = 100 * time.Millisecond
	backoffMax     = 5 * time.Second
)

// Headers a dead letter of the aggregator carries besides deadletter's: the raw record the
// processed one came from.
const (
	HeaderRawPartition = "raw_source_partition"
	HeaderRawOffset    = "raw_source_offset"
)

// apply writes one batch, waiting out outages with capped backoff, until the view takes it,
// refuses it (*view.OffsetConflictError, or *view.RefusedError refusalRetries times in a row) or
// ctx ends. A damaged view is waited for too: no record is at fault.
func (a *Aggregator) apply(ctx context.Context, batch *view.Batch) error {
	backoff := backoffFirst
	refusals := 0
	// An attempt under way finishes even if a drain starts meanwhile; only retries stop on ctx.
	work := context.WithoutCancel(ctx)
	for {
		applyCtx, cancel := context.WithTimeout(work, 10*time.Second)
		err := a.view.Apply(applyCtx, a.cfg.Topic, batch)
		cancel()
		var conflict *view.OffsetConflictError
		var refused *view.RefusedError
		switch {
		case err == nil:
			a.redisDown.Store(nil)
			return nil
		case errors.As(err, &conflict):
			return err
		case errors.As(err, &refused):
			a.refused.Add(1)
			msg := "the view refuses a batch: " + err.Error()
			if a.applyProblem.Swap(&msg) == nil {
				a.log.Error("aggregator: the view refused a batch; nothing of it was written", zap.Error(err))
			}
			if !refused.Damaged {
				if refusals++; refusals >= refusalRetries {
					return err
				}
			}
		default:
			a.redisErrors.Add(1)
			msg := "redis unavailable: " + err.Error()
			if a.redisDown.Swap(&msg) == nil {
				a.log.Error("aggregator: cannot apply batch; retrying until redis answers", zap.Error(err))
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// applyRecords applies records synchronously until the view holds them or ctx ends, narrowing a
// refused run down to the records at fault.
func (a *Aggregator) applyRecords(ctx context.Context, cl *kgo.Client, records []*kgo.Record) error {
	err := a.applyOnce(ctx, cl, records)
	var refused *view.RefusedError
	if errors.As(err, &refused) {
		return a.narrow(ctx, cl, records, refused)
	}
	return err
}

// applyOnce applies records synchronously, re-folding after each conflict, until the view holds
// them, refuses a batch of them (*view.RefusedError; the batches before it are applied) or ctx
// ends. Only records at or past a partition's stored offset are counted.
func (a *Aggregator) applyOnce(ctx context.Context, cl *kgo.Client, records []*kgo.Record) error {
	for len(records) > 0 {
		f := a.fold(records)
		if err := a.deadLetterUndecodable(ctx, f.undecodable); err != nil {
			return err
		}
		if f.batch.Empty() {
			records = records[f.used:]
			continue
		}
		t0 := time.Now()
		err := a.apply(ctx, f.batch)
		var conflict *view.OffsetConflictError
		switch {
		case err == nil:
			a.mu.Lock()
			a.advance(f.batch)
			a.mu.Unlock()
			a.applied(ctx, cl, f, records[:f.used], time.Now(), time.Since(t0))
			records = records[f.used:]
		case errors.As(err, &conflict):
			a.conflicts.Add(1)
			if err := a.resolve(ctx, f.batch, conflict.Stored); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

// narrow applies a run of records the view refused, dead-letters the records at fault and moves
// past them. refused is the latest refusal. Each step either applies a prefix of the run or
// dead-letters a record, so it ends.
func (a *Aggregator) narrow(ctx context.Context, cl *kgo.Client, records []*kgo.Record, refused *view.RefusedError) error {
	queue := a.pending(records)
	n := len(queue)
	a.log.Warn("aggregator: the view refused a batch; looking for the records at fault",
		zap.String("topic", a.cfg.Topic), zap.Int("records", n), zap.Error(refused))
	backoff := backoffFirst
	for len(queue) > 0 {
		n = min(n, len(queue))
		err := a.applyOnce(ctx, cl, queue[:n])
		if err == nil {
			queue, n = a.pending(queue[n:]), len(queue) // the rest may well pass whole
			continue
		}
		if !errors.As(err, &refused) {
			return err // ctx ended
		}
		if refused.Hotel != "" {
			if culprits := a.ofHotel(a.pending(queue[:n]), refused.Hotel); len(culprits) > 0 {
				if err := a.deadLetter(ctx, culprits, event.ReasonApplyFailed, refused.Error()); err != nil {
					return err
				}
				continue
			}
		}
		if n > 1 {
			n /= 2
			continue
		}
		// One record alone is refused. Unless the view refuses even a batch without any record —
		// then nothing here is at fault, and it is waited for — the record is.
		if perr := a.probe(ctx, queue[0].Partition); perr != nil {
			if !errors.As(perr, &refused) {
				return perr
			}
			msg := "the view refuses every batch, even an empty one: " + perr.Error()
			a.applyProblem.Store(&msg)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		if err := a.deadLetter(ctx, queue[:1], event.ReasonApplyFailed, refused.Error()); err != nil {
			return err
		}
	}
	return nil
}

// pending returns the records of run the view does not hold yet.
func (a *Aggregator) pending(run []*kgo.Record) []*kgo.Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := run[:0:0]
	for _, r := range run {
		if next, owned := a.next[r.Partition]; owned && r.Offset >= next && !a.skip[r.Partition][r.Offset] {
			out = append(out, r)
		}
	}
	return out
}

// ofHotel returns the records of run that are events of hotel, copies of applied events left
// out (see duplicate).
func (a *Aggregator) ofHotel(run []*kgo.Record, hotel string) []*kgo.Record {
	var out []*kgo.Record
	var facts event.ProcessedFacts
	for _, r := range run {
		if event.ParseProcessed(r.Value, &facts) == nil && facts.HotelID == hotel && !a.copyOf(r) {
			out = append(out, r)
		}
	}
	return out
}

// copyOf reports whether r is a copy of an event the view already holds (see duplicate).
func (a *Aggregator) copyOf(r *kgo.Record) bool {
	sp, so, ok := sourcePosition(r)
	if !ok {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	high, seen := a.sources[r.Partition][sp]
	return seen && so <= high
}

// probe applies a batch that holds nothing but a partition's current offset: if the view refuses
// even that, no record is at fault.
func (a *Aggregator) probe(ctx context.Context, partition int32) error {
	a.mu.Lock()
	next, owned := a.next[partition]
	a.mu.Unlock()
	if !owned {
		return nil
	}
	b := view.NewBatch()
	b.Offsets[partition] = view.PartitionOffsets{Expect: next, Next: next}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := a.view.Apply(pctx, a.cfg.Topic, b)
	var refused *view.RefusedError
	if err == nil || errors.As(err, &refused) {
		return err
	}
	return nil // an outage or a conflict says nothing about the records; the next try will
}

// deadLetterUndecodable dead-letters processed records the aggregator cannot read.
func (a *Aggregator) deadLetterUndecodable(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	var facts event.ProcessedFacts
	err := event.ParseProcessed(recs[0].Value, &facts)
	a.log.Error("aggregator: processed records that cannot be read; dead-lettering them", zap.String("topic", recs[0].Topic),
		zap.Int32("partition", recs[0].Partition), zap.Int64("offset", recs[0].Offset), zap.Int("n", len(recs)), zap.Error(err))
	return a.deadLetter(ctx, recs, event.ReasonUndecodable, "")
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
	out := make([]*kgo.Record, len(recs))
	var facts event.ProcessedFacts
	for i, r := range recs {
		why := detail
		if why == "" {
			if err := event.ParseProcessed(r.Value, &facts); err != nil {
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
		out[i] = deadletter.Record(a.cfg.DeadLetterTopic, r, "aggregator", reason, why, extra...)
	}
	backoff := backoffFirst
	for {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.dlq.ProduceSync(pctx, out...).FirstErr()
		cancel()
		if err == nil {
			break
		}
		msg := fmt.Sprintf("cannot write dead letters to %s (%s/%d offset %d stays unapplied): %v",
			a.cfg.DeadLetterTopic, recs[0].Topic, recs[0].Partition, recs[0].Offset, err)
		if a.dlqProblem.Swap(&msg) == nil {
			a.log.Error("aggregator: "+msg+"; retrying", zap.String("reason", string(reason)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
	}
	a.dlqProblem.Store(nil)
	a.mu.Lock()
	for _, r := range recs {
		if _, owned := a.next[r.Partition]; !owned {
			continue
		}
		if a.skip[r.Partition] == nil {
			a.skip[r.Partition] = map[int64]bool{}
		}
		a.skip[r.Partition][r.Offset] = true
	}
	a.mu.Unlock()
	a.deadLettered.Add(int64(len(recs)))
	switch reason {
	case event.ReasonApplyFailed:
		a.applyFailed.Add(int64(len(recs)))
		a.log.Warn("aggregator: dead-lettered records the view refused", zap.String("topic", recs[0].Topic),
			zap.Int32("partition", recs[0].Partition), zap.Int64("offset", recs[0].Offset), zap.Int("n", len(recs)),
			zap.String("reason", detail))
	case event.ReasonUndecodable:
		a.undecodable.Add(int64(len(recs)))
	}
	return nil
}
