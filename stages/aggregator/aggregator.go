// Package aggregator is the third stage: it folds processed events into the Redis view. Two run
// side by side (Config.Role): one folds the processed topic into the user shards, the other the
// hotel topic into the hotel shards. Each polled batch is coalesced in memory and applied in one
// atomic step per partition — one script in that partition's shard — together with the
// partition's next offset, so the view itself records how far it has read: on assignment the
// aggregator resumes from the offsets in Redis, never from the group's commits, and a batch the
// view already holds can never be applied twice.
//
// Files: progress.go keeps what the view holds of each owned partition (next offset, source
// marks, dead-lettered offsets) and the rules of the offset protocol; fold.go turns records into
// a view batch from a snapshot of that progress, with no I/O; aggregator.go runs the loop (poll,
// fold, apply in the background while the next poll is folded); resume.go keeps the progress in
// step with the view (assignment, conflicts, the idle check, revocation); refused.go handles a
// batch the view refuses: it finds the records at fault, which deadletters.go writes to the
// dead-letter topic, so one record never stops a partition.
package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/backoff"
	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/view"
)

// Config is the aggregator's slice of the configuration.
type Config struct {
	// Role is what the aggregator counts: the users of the processed topic, or the hotels,
	// advertisers and minimum prices of the hotel topic (view.Role).
	Role            view.Role
	Topic           string
	Group           string
	DeadLetterTopic string // where records the view cannot take go
	BatchMaxRecords int
	// Trends are the event-time windows the view keeps and the lateness past which an event
	// counts in none of them (view.TrendSpec; the zero value keeps none). It must be the spec of
	// the claimed layout.
	Trends view.TrendSpec
	// OnApplied, if set, is called after each successful apply with the batch's records (their
	// timestamps give the end-to-end latency), when Redis took them and how long the apply took.
	// It runs on the stage's goroutine: keep it cheap.
	OnApplied func(records []*kgo.Record, appliedAt time.Time, took time.Duration)
}

// Aggregator is the aggregate stage.
type Aggregator struct {
	cfg       Config
	kafkaOpts []kgo.Opt
	view      *view.View
	log       *zap.Logger
	retry     backoff.Policy // waits between attempts at Redis and at the dead-letter topic

	progress *progress
	landing  atomic.Pointer[chan struct{}] // closed when the background apply under way ends

	// Owned by the polling goroutine.
	prices         priceCache
	dlq            *kgo.Client // producer of dead letters, made on first use
	undecodableLog throttle
	fetchErrorLog  time.Time

	counts                                                                                    counters.Set
	consumed, appliedN, batches, undecodable, conflicts, redisErrors, duplicates, fetchErrors *counters.Counter
	refused, deadLettered, late                                                               *counters.Counter
	redisDown, applyProblem, dlqProblem                                                       atomic.Pointer[string]
}

// New returns an aggregator writing to v, whose Kafka clients start from kafkaOpts.
func New(cfg Config, kafkaOpts []kgo.Opt, v *view.View, log *zap.Logger) *Aggregator {
	a := &Aggregator{cfg: cfg, kafkaOpts: kafkaOpts, view: v, log: log,
		retry: backoff.Policy{First: backoffFirst, Max: backoffMax}, progress: newProgress()}
	c := &a.counts
	a.consumed, a.appliedN, a.batches = c.New(counters.Consumed), c.New(counters.Applied), c.New(counters.Batches)
	a.undecodable, a.duplicates, a.fetchErrors = c.New("undecodable"), c.New("duplicates_dropped"), c.New(counters.FetchErrors)
	a.conflicts, a.redisErrors, a.refused = c.New("offset_conflicts"), c.New("redis_errors"), c.New("apply_refused")
	a.deadLettered = c.New(counters.DeadLettered)
	a.late = c.New("late_events")
	return a
}

// Name implements the pipeline's stage (see StageName).
func (a *Aggregator) Name() string { return StageName(a.cfg.Role) }

// StageName is the stage name of the aggregator of role: "aggregator" folds the users of the
// processed topic, "aggregator-hotels" the hotel topic.
func StageName(role view.Role) string {
	if role == view.HotelShards {
		return "aggregator-hotels"
	}
	return "aggregator"
}

// Counters returns the stage's running totals and its dead letters by reason.
func (a *Aggregator) Counters() *counters.Set { return &a.counts }

// Problem says why the stage cannot make progress right now ("" when it can), for /readyz: Redis
// away, the view refusing batches, or dead letters that cannot be written.
func (a *Aggregator) Problem() string {
	var parts []string
	for _, p := range []*atomic.Pointer[string]{&a.redisDown, &a.applyProblem, &a.dlqProblem} {
		if s := p.Load(); s != nil {
			parts = append(parts, *s)
		}
	}
	return strings.Join(parts, "; ")
}

// Run aggregates until ctx ends, then returns nil; a batch not yet applied stays unapplied and is
// read again by whoever owns its partition next.
func (a *Aggregator) Run(ctx context.Context) error {
	defer func() {
		if a.dlq != nil {
			a.dlq.Close()
		}
	}()
	for {
		err := a.consume(ctx)
		if !errors.Is(err, errRewind) {
			return err
		}
		// A fresh client rejoins the group and resumes from what the view holds now; reusing the
		// old one could hand over records it fetched from the old positions.
		a.log.Warn("aggregator: the view lost data; reconnecting to re-read from its stored offsets")
	}
}

// errRewind says the view holds less than the aggregator expected (Redis lost data): the
// partitions must be read again from the offsets the view stores.
var errRewind = errors.New("aggregator: the view lost data")

// consume runs one Kafka client until ctx ends (nil), the view needs a re-read (errRewind) or a
// fatal error.
func (a *Aggregator) consume(ctx context.Context) error {
	opts := append([]kgo.Opt{
		kgo.ConsumerGroup(a.cfg.Group),
		kgo.ConsumeTopics(a.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(a.resumeFromView),
		kgo.OnPartitionsRevoked(a.forget),
		kgo.OnPartitionsLost(a.forget),
	}, a.kafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("aggregator: create client: %w", err)
	}
	defer cl.CloseAllowingRebalance()
	a.log.Info("aggregator started", zap.String("topic", a.cfg.Topic), zap.String("group", a.cfg.Group))

	var lastVerify time.Time
	var pending *inflight // the batch being applied, if any
	for {
		records := a.poll(ctx, cl, pending)
		if ctx.Err() != nil {
			if pending != nil {
				_, _ = a.settle(ctx, cl, pending) // finish the batch in hand
			}
			return nil
		}
		switch {
		case len(records) > 0:
			var err error
			if pending, err = a.foldAndStart(ctx, cl, records, pending); err != nil {
				return err
			}
		case pending != nil:
			_, err := a.settle(ctx, cl, pending)
			pending = nil
			if err != nil {
				return err
			}
		case time.Since(lastVerify) > verifyInterval:
			lastVerify = time.Now()
			if err := a.verify(ctx, cl); err != nil {
				return err
			}
		}
		cl.AllowRebalance()
	}
}

// poll returns the next records, or none after pollWait — a bounded poll lets an idle aggregator
// still verify the view now and then — or as soon as the batch in flight lands, so that its
// counts and commit need not wait out the poll.
func (a *Aggregator) poll(ctx context.Context, cl *kgo.Client, pending *inflight) []*kgo.Record {
	pollCtx, cancel := context.WithTimeout(ctx, pollWait)
	defer cancel()
	if pending != nil {
		go func() {
			select {
			case <-pending.landing:
				cancel()
			case <-pollCtx.Done():
			}
		}()
	}
	fetches := cl.PollRecords(pollCtx, a.cfg.BatchMaxRecords)
	var errs []kgo.FetchError
	for _, e := range fetches.Errors() {
		if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
			errs = append(errs, e)
		}
	}
	a.fetchErrors.Add(int64(len(errs)))
	if len(errs) > 0 && time.Since(a.fetchErrorLog) > 5*time.Second {
		a.fetchErrorLog = time.Now()
		a.log.Warn("fetch errors (the client retries)", zap.Int("n", len(errs)), zap.String("topic", errs[0].Topic),
			zap.Int32("partition", errs[0].Partition), zap.Error(errs[0].Err))
	}
	return fetches.Records()
}

// foldAndStart folds records batch by batch (a fold stops at the byte budget) while the previous
// batch is still being applied — Go and Redis work in parallel — settles that one, and starts
// applying the new one. It returns the batch now in flight; nil error with ctx ended is a drain.
func (a *Aggregator) foldAndStart(ctx context.Context, cl *kgo.Client, records []*kgo.Record, pending *inflight) (*inflight, error) {
	for len(records) > 0 {
		f := fold(records, a.progress.snapshot(), &a.prices, a.cfg.Role, a.cfg.Trends)
		if pending != nil {
			ok, err := a.settle(ctx, cl, pending)
			pending = nil
			if err != nil || ctx.Err() != nil {
				return nil, err
			}
			if !ok {
				continue // the offsets changed under the fold: fold again
			}
		}
		run := records[:f.used]
		records = records[f.used:]
		if err := a.deadLetterUndecodable(ctx, f.undecodable); err != nil {
			if ctx.Err() != nil {
				return nil, nil // draining: nothing of the run was applied, it is read again
			}
			return nil, err
		}
		if !f.batch.Empty() {
			pending = a.start(ctx, f, run)
		}
	}
	return pending, nil
}

// Idle-time checks: an aggregator with nothing to read still notices within verifyInterval that
// Redis lost the view (and rebuilds it) or cannot be reached (and says so on /readyz).
const (
	pollWait       = time.Second
	verifyInterval = 2 * time.Second
)

// inflight is a batch being applied in the background while the next poll is read and folded.
type inflight struct {
	folded
	records []*kgo.Record
	landed  time.Time     // when the view took it; set before done is sent
	took    time.Duration // how long the apply took
	done    chan error    // nil, an *view.OffsetConflictError, a *view.RefusedError, or ctx's error
	landing chan struct{} // closed once done holds the outcome
}

// start applies a folded batch in the background. The offsets the next fold expects become the
// batch's (optimistically: settle undoes that if the view refuses the batch).
func (a *Aggregator) start(ctx context.Context, f folded, records []*kgo.Record) *inflight {
	in := &inflight{folded: f, records: records, done: make(chan error, 1), landing: make(chan struct{})}
	a.landing.Store(&in.landing)
	a.progress.advance(f.batch)
	go func() {
		defer close(in.landing)
		t0 := time.Now()
		err := a.apply(ctx, f.batch)
		in.landed = time.Now()
		in.took = in.landed.Sub(t0)
		in.done <- err
	}()
	return in
}

// settle waits for an in-flight batch and records its outcome. It reports whether the view took
// the batch. If another writer had moved the offsets on, or the view refused the batch, the
// batch's records are applied again from what the view holds (finding and dead-lettering the
// records at fault if it refused them); if the view lost data it returns errRewind.
func (a *Aggregator) settle(ctx context.Context, cl *kgo.Client, in *inflight) (bool, error) {
	err := <-in.done
	if err == nil {
		a.applied(ctx, cl, in.folded, in.records, in.landed, in.took)
		return true, nil
	}
	a.tookInPart(in.folded)
	var conflict *view.OffsetConflictError
	var refused *view.RefusedError
	switch {
	case errors.As(err, &conflict):
		a.conflicts.Add(1)
		if err := a.resolve(ctx, in.batch, conflict.Stored); err != nil {
			return false, err
		}
	case errors.As(err, &refused):
		// Nothing was written: every partition goes back to the batch's Expect.
		if err := a.resolve(ctx, in.batch, nil); err != nil {
			return false, err
		}
	default:
		return false, nil // ctx ended first: the records stay for whoever reads next
	}
	if err := a.applyRecords(ctx, cl, in.records); err != nil && !errors.Is(err, ctx.Err()) {
		return false, err
	}
	return false, nil
}

// tookInPart counts the partitions of a batch the view took when it did not take all of them
// (each partition is applied on its own, in its shard). It reports whether it took any.
func (a *Aggregator) tookInPart(f folded) bool {
	took := false
	for p := range f.batch.Offsets {
		if !f.batch.Applied(p) {
			continue
		}
		took = true
		t := f.byPart[p]
		a.consumed.Add(t.events + t.copies)
		a.appliedN.Add(t.events)
		a.duplicates.Add(t.copies)
		a.late.Add(t.late)
	}
	return took
}

// applied records a batch the view took.
func (a *Aggregator) applied(ctx context.Context, cl *kgo.Client, f folded, records []*kgo.Record, landed time.Time, took time.Duration) {
	if ce := a.log.Check(zap.DebugLevel, "aggregator: batch applied"); ce != nil {
		ce.Write(zap.Any("offsets", f.batch.Offsets), zap.Int64("events", f.events), zap.Duration("took", took))
	}
	a.redisDown.Store(nil)
	a.applyProblem.Store(nil)
	a.progress.passed(f.batch)
	a.prices.remember(f.batch)
	// Every record the batch settled: its events and the copies it dropped. Dead-lettered
	// records were counted when their dead letters were written.
	a.consumed.Add(f.events + f.copies)
	a.appliedN.Add(f.events)
	a.duplicates.Add(f.copies)
	a.late.Add(f.late)
	a.batches.Add(1)
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied(records, landed, took)
	}
	// The group's commits only feed lag monitoring; resuming reads the view's own offsets.
	cl.CommitUncommittedOffsets(context.WithoutCancel(ctx))
}
