package aggregator

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/backoff"
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

// apply writes one batch, waiting out outages with capped backoff, until the view takes it,
// refuses it (*view.OffsetConflictError, or *view.RefusedError refusalRetries times in a row) or
// ctx ends. A damaged view is waited for too: no record is at fault.
func (a *Aggregator) apply(ctx context.Context, batch *view.Batch) error {
	wait := a.retry.New()
	refusals := 0
	// An attempt under way finishes even if a drain starts meanwhile; only retries stop on ctx.
	work := context.WithoutCancel(ctx)
	for {
		applyCtx, cancel := context.WithTimeout(work, 10*time.Second)
		err := a.view.Apply(applyCtx, a.cfg.Role, batch)
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
		if !backoff.Wait(ctx, wait.Next()) {
			return ctx.Err()
		}
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
		f := fold(records, a.progress.snapshot(), &a.prices, a.cfg.Role, a.cfg.Trends)
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
			a.progress.advance(f.batch)
			a.applied(ctx, cl, f, records[:f.used], time.Now(), time.Since(t0))
			records = records[f.used:]
		case errors.As(err, &conflict):
			a.conflicts.Add(1)
			a.tookInPart(f)
			if err := a.resolve(ctx, f.batch, conflict.Stored); err != nil {
				return err
			}
		default:
			// The partitions the view took stay taken: move past them before giving up.
			if a.tookInPart(f) {
				if rerr := a.resolve(ctx, f.batch, nil); rerr != nil {
					return rerr
				}
			}
			return err
		}
	}
	return nil
}

// narrow applies a run of records the view refused, dead-letters the records at fault and moves
// past them. refused is the latest refusal. Each step either applies a prefix of the run or
// dead-letters a record, so it ends.
func (a *Aggregator) narrow(ctx context.Context, cl *kgo.Client, records []*kgo.Record, refused *view.RefusedError) error {
	queue := a.progress.snapshot().outstanding(records)
	n := len(queue)
	a.log.Warn("aggregator: the view refused a batch; looking for the records at fault",
		zap.String("topic", a.cfg.Topic), zap.Int("records", n), zap.Error(refused))
	wait := a.retry.New()
	for len(queue) > 0 {
		n = min(n, len(queue))
		err := a.applyOnce(ctx, cl, queue[:n])
		if err == nil {
			queue, n = a.progress.snapshot().outstanding(queue[n:]), len(queue) // the rest may well pass whole
			continue
		}
		if !errors.As(err, &refused) {
			return err // ctx ended
		}
		if refused.Hotel != "" {
			if culprits := a.ofHotel(queue[:n], refused.Hotel); len(culprits) > 0 {
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
			if !backoff.Wait(ctx, wait.Next()) {
				return ctx.Err()
			}
			continue
		}
		wait.Reset()
		if err := a.deadLetter(ctx, queue[:1], event.ReasonApplyFailed, refused.Error()); err != nil {
			return err
		}
	}
	return nil
}

// ofHotel returns the records of run the view does not hold yet that are events of hotel,
// copies of applied events left out (see snapshot.claim).
func (a *Aggregator) ofHotel(run []*kgo.Record, hotel string) []*kgo.Record {
	held := a.progress.snapshot()
	var out []*kgo.Record
	var facts event.ProcessedFacts
	for _, r := range held.outstanding(run) {
		if parse(a.cfg.Role, r.Value, &facts) == nil && facts.HotelID == hotel && !held.isCopy(r) {
			out = append(out, r)
		}
	}
	return out
}

// probe applies a batch that holds nothing but a partition's current offset: if the view refuses
// even that, no record is at fault.
func (a *Aggregator) probe(ctx context.Context, partition int32) error {
	pos, owned := a.progress.snapshot()[partition]
	if !owned {
		return nil
	}
	b := view.NewBatch()
	b.Offsets[partition] = view.PartitionOffsets{Expect: pos.next, Next: pos.next}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := a.view.Apply(pctx, a.cfg.Role, b)
	var refused *view.RefusedError
	if err == nil || errors.As(err, &refused) {
		return err
	}
	return nil // an outage or a conflict says nothing about the records; the next try will
}
