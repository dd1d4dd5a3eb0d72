// Package aggregator is the third stage: it folds processed events into the Redis view. Each
// polled batch is coalesced in memory and applied in one atomic step together with the next
// offset of every partition it covers, so the view itself records how far it has read: on
// assignment the aggregator resumes from the offsets in Redis, never from the group's commits,
// and a batch the view already holds can never be applied twice.
package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/view"
)

// Config is the aggregator's slice of the configuration.
type Config struct {
	Topic           string
	Group           string
	BatchMaxRecords int
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

	mu   sync.Mutex
	next map[int32]int64 // per owned partition: the next offset the view expects
	// Per owned partition: the highest raw offset applied from each raw partition. A processed
	// event at or below it is one the transformer produced twice (see fold).
	sources map[int32]map[int32]int64
	landing chan struct{} // closed when the background apply under way ends

	// Owned by the polling goroutine.
	facts       event.ProcessedFacts
	minKnown    map[string]map[string]int64 // hotel -> advertiser -> a price the view holds or beats
	knownPrices int

	consumed, appliedN, batches, undecodable, conflicts, redisErrors, duplicates, fetchErrors atomic.Int64
	redisDown                                                                                 atomic.Pointer[string]
}

// New returns an aggregator writing to v, whose Kafka client starts from kafkaOpts.
func New(cfg Config, kafkaOpts []kgo.Opt, v *view.View, log *zap.Logger) *Aggregator {
	return &Aggregator{cfg: cfg, kafkaOpts: kafkaOpts, view: v, log: log, next: map[int32]int64{},
		sources: map[int32]map[int32]int64{}}
}

// Name implements the pipeline's stage.
func (a *Aggregator) Name() string { return "aggregator" }

// Counts returns the stage's running totals.
func (a *Aggregator) Counts() map[string]int64 {
	return map[string]int64{"consumed": a.consumed.Load(), "applied": a.appliedN.Load(), "batches": a.batches.Load(),
		"undecodable": a.undecodable.Load(), "duplicates_dropped": a.duplicates.Load(), "fetch_errors": a.fetchErrors.Load(), "offset_conflicts": a.conflicts.Load(), "redis_errors": a.redisErrors.Load()}
}

// Problem says why the stage cannot make progress right now ("" when it can), for /readyz.
func (a *Aggregator) Problem() string {
	if p := a.redisDown.Load(); p != nil {
		return *p
	}
	return ""
}

// Run aggregates until ctx ends, then returns nil; a batch not yet applied stays unapplied and is
// read again by whoever owns its partition next.
func (a *Aggregator) Run(ctx context.Context) error {
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

	var lastWarn, lastVerify time.Time
	var pending *inflight // the batch being applied, if any
	for {
		// A bounded poll lets an idle aggregator still verify the view now and then.
		pollCtx, cancel := context.WithTimeout(ctx, pollWait)
		fetches := cl.PollRecords(pollCtx, a.cfg.BatchMaxRecords)
		cancel()
		if ctx.Err() != nil {
			if pending != nil {
				_, _ = a.settle(ctx, cl, pending) // finish the batch in hand
			}
			return nil
		}
		var errs []kgo.FetchError
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				errs = append(errs, e)
			}
		}
		a.fetchErrors.Add(int64(len(errs)))
		if len(errs) > 0 && time.Since(lastWarn) > 5*time.Second {
			lastWarn = time.Now()
			a.log.Warn("fetch errors (the client retries)", zap.Int("n", len(errs)), zap.String("topic", errs[0].Topic),
				zap.Int32("partition", errs[0].Partition), zap.Error(errs[0].Err))
		}
		if records := fetches.Records(); len(records) > 0 {
			// Fold while the previous batch is still being applied: Go and Redis work in parallel.
			batch, consumed := a.fold(records)
			if pending != nil {
				ok, err := a.settle(ctx, cl, pending)
				pending = nil
				if err != nil {
					return err
				}
				if !ok {
					if ctx.Err() != nil {
						return nil
					}
					batch, consumed = a.fold(records) // offsets changed under the fold
				}
			}
			if !batch.Empty() {
				pending = a.start(ctx, batch, records, consumed)
			}
		} else if pending != nil {
			_, err := a.settle(ctx, cl, pending)
			pending = nil
			if err != nil {
				return err
			}
		} else if time.Since(lastVerify) > verifyInterval {
			lastVerify = time.Now()
			if err := a.verify(ctx); err != nil {
				return err
			}
		}
		cl.AllowRebalance()
	}
}

// Idle-time checks: an aggregator with nothing to read still notices within verifyInterval that
// Redis lost the view (and rebuilds it) or cannot be reached (and says so on /readyz).
const (
	pollWait       = time.Second
	verifyInterval = 2 * time.Second
)

// verify compares the offsets stored in the view with the ones this aggregator expects for its
// partitions: ahead means another writer took over (skip), behind means the view lost data
// (errRewind).
func (a *Aggregator) verify(ctx context.Context) error {
	a.mu.Lock()
	expected := make(map[int32]int64, len(a.next))
	parts := make([]int32, 0, len(a.next))
	for p, o := range a.next {
		expected[p] = o
		parts = append(parts, p)
	}
	a.mu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stored, err := a.view.Offsets(rctx, a.cfg.Topic, parts)
	if err != nil {
		a.redisErrors.Add(1)
		msg := "redis unavailable: " + err.Error()
		if a.redisDown.Swap(&msg) == nil {
			a.log.Error("aggregator: cannot read the view's offsets", zap.Error(err))
		}
		return nil
	}
	a.redisDown.Store(nil)
	moved := map[int32]int64{}
	for p, o := range stored {
		if o != expected[p] {
			moved[p] = o
		}
	}
	if len(moved) == 0 {
		return nil
	}
	a.conflicts.Add(1)
	return a.reset(ctx, expected, moved)
}

// inflight is a batch being applied in the background while the next poll is read and folded.
type inflight struct {
	batch    *view.Batch
	records  []*kgo.Record
	consumed int64
	landed   time.Time     // when the view took it; set before done is sent
	took     time.Duration // how long the apply took
	done     chan error    // nil, an *view.OffsetConflictError, or ctx's error
}

// start applies batch in the background. The offsets the next fold expects become the batch's
// (optimistically: settle undoes that if the view refuses the batch).
func (a *Aggregator) start(ctx context.Context, batch *view.Batch, records []*kgo.Record, consumed int64) *inflight {
	f := &inflight{batch: batch, records: records, consumed: consumed, done: make(chan error, 1)}
	landing := make(chan struct{})
	a.mu.Lock()
	a.advance(batch)
	a.landing = landing
	a.mu.Unlock()
	go func() {
		defer close(landing)
		t0 := time.Now()
		err := a.apply(ctx, batch)
		f.landed = time.Now()
		f.took = f.landed.Sub(t0)
		f.done <- err
	}()
	return f
}

// settle waits for an in-flight batch and records its outcome. It reports whether the view took
// the batch; if another writer had moved the offsets on, the batch's records are re-applied from
// there, and if the view lost data it returns errRewind.
func (a *Aggregator) settle(ctx context.Context, cl *kgo.Client, f *inflight) (bool, error) {
	err := <-f.done
	if err == nil {
		a.applied(ctx, cl, f.batch, f.records, f.consumed, f.landed, f.took)
		return true, nil
	}
	var conflict *view.OffsetConflictError
	if !errors.As(err, &conflict) {
		return false, nil // ctx ended first: the records stay for whoever reads next
	}
	a.conflicts.Add(1)
	if err := a.resolve(ctx, f.batch, conflict.Stored); err != nil {
		return false, err
	}
	if err := a.applyRecords(ctx, cl, f.records); err != nil && !errors.Is(err, ctx.Err()) {
		return false, err
	}
	return false, nil
}

// applied records a batch the view took.
func (a *Aggregator) applied(ctx context.Context, cl *kgo.Client, batch *view.Batch, records []*kgo.Record, consumed int64, landed time.Time, took time.Duration) {
	if ce := a.log.Check(zap.DebugLevel, "aggregator: batch applied"); ce != nil {
		ce.Write(zap.Any("offsets", batch.Offsets), zap.Int64("events", consumed), zap.Duration("took", took))
	}
	a.redisDown.Store(nil)
	a.rememberPrices(batch)
	a.consumed.Add(consumed)
	a.appliedN.Add(consumed)
	a.batches.Add(1)
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied(records, landed, took)
	}
	// The group's commits only feed lag monitoring; resuming reads the view's own offsets.
	cl.CommitUncommittedOffsets(context.WithoutCancel(ctx))
}

// advance makes the batch's offsets and source watermarks what the next fold expects of the
// view. Called with mu held.
func (a *Aggregator) advance(batch *view.Batch) {
	for p, o := range batch.Offsets {
		if _, owned := a.next[p]; !owned {
			continue
		}
		a.next[p] = o.Next
		for sp, so := range batch.Sources[p] {
			if a.sources[p] == nil {
				a.sources[p] = map[int32]int64{}
			}
			a.sources[p][sp] = so
		}
	}
}

// apply writes one batch, retrying Redis failures with capped backoff until the view takes it,
// refuses it (an *view.OffsetConflictError) or ctx ends.
func (a *Aggregator) apply(ctx context.Context, batch *view.Batch) error {
	backoff := 100 * time.Millisecond
	// An attempt under way finishes even if a drain starts meanwhile; only retries stop on ctx.
	work := context.WithoutCancel(ctx)
	for {
		applyCtx, cancel := context.WithTimeout(work, 10*time.Second)
		err := a.view.Apply(applyCtx, a.cfg.Topic, batch)
		cancel()
		var conflict *view.OffsetConflictError
		if err == nil || errors.As(err, &conflict) {
			return err
		}
		a.redisErrors.Add(1)
		msg := "redis unavailable: " + err.Error()
		if a.redisDown.Swap(&msg) == nil {
			a.log.Error("aggregator: cannot apply batch; retrying until redis answers", zap.Error(err))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// applyRecords applies records synchronously, re-folding after each conflict, until the view
// holds them or ctx ends. Only records at or past a partition's stored offset are counted.
func (a *Aggregator) applyRecords(ctx context.Context, cl *kgo.Client, records []*kgo.Record) error {
	for {
		batch, consumed := a.fold(records)
		if batch.Empty() {
			return nil
		}
		t0 := time.Now()
		err := a.apply(ctx, batch)
		var conflict *view.OffsetConflictError
		switch {
		case err == nil:
			a.mu.Lock()
			a.advance(batch)
			a.mu.Unlock()
			a.applied(ctx, cl, batch, records, consumed, time.Now(), time.Since(t0))
			return nil
		case errors.As(err, &conflict):
			a.conflicts.Add(1)
			if err := a.resolve(ctx, batch, conflict.Stored); err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// resolve reacts to a batch the view refused because stored offsets moved under us. Every
// partition of the batch goes back to what Redis holds: unchanged ones to the batch's Expect
// (nothing was written), moved ones to the stored offset.
func (a *Aggregator) resolve(ctx context.Context, batch *view.Batch, stored map[int32]int64) error {
	expected := make(map[int32]int64, len(batch.Offsets))
	all := make(map[int32]int64, len(batch.Offsets))
	for p, o := range batch.Offsets {
		expected[p] = o.Expect
		all[p] = o.Expect
	}
	for p, o := range stored {
		all[p] = o
	}
	return a.reset(ctx, expected, all)
}

// reset points each partition in stored at the offset Redis holds and reloads its source
// watermarks. A stored offset ahead of the expected one means another writer applied those
// records: later folds skip them. One behind (or gone) means Redis lost data: reset returns
// errRewind, and Run reconnects so that the partitions are read again from the stored offsets
// (the start of the topic when none) and the view is rebuilt exactly.
func (a *Aggregator) reset(ctx context.Context, expected, stored map[int32]int64) error {
	a.mu.Lock()
	a.minKnown = nil // what Redis holds is no longer what we remember
	rewind := false
	parts := make([]int32, 0, len(stored))
	for p, st := range stored {
		if _, owned := a.next[p]; owned {
			a.next[p] = st
			parts = append(parts, p)
		}
		if st == expected[p] {
			continue
		}
		a.log.Warn("aggregator: stored offset differs from expected", zap.String("topic", a.cfg.Topic),
			zap.Int32("partition", p), zap.Int64("stored", st), zap.Int64("expected", expected[p]))
		rewind = rewind || st < expected[p]
	}
	a.mu.Unlock()
	if rewind {
		return errRewind
	}
	var sources map[int32]map[int32]int64
	err := a.retryRedis(ctx, "reload source watermarks", func() (err error) {
		sources, err = a.view.Sources(ctx, a.cfg.Topic, parts)
		return err
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range parts {
		if _, owned := a.next[p]; !owned {
			continue
		}
		if err != nil {
			// Shutting down: leave the partition unusable rather than judge duplicates blindly.
			delete(a.next, p)
			continue
		}
		a.sources[p] = sources[p]
	}
	return nil
}

// fold coalesces the records the view does not hold yet into one batch.
func (a *Aggregator) fold(records []*kgo.Record) (*view.Batch, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := view.NewBatch()
	var n int64
	for _, r := range records {
		next, owned := a.next[r.Partition]
		if !owned || r.Offset < next {
			continue
		}
		o, seen := b.Offsets[r.Partition]
		if !seen {
			o.Expect = next
		}
		o.Next = r.Offset + 1
		b.Offsets[r.Partition] = o
		if a.duplicate(b, r) {
			a.duplicates.Add(1)
			continue
		}
		if err := event.ParseProcessed(r.Value, &a.facts); err != nil {
			// Only the transformer writes this topic; anything else is reported, and its offset
			// still advances so it cannot block the partition.
			a.undecodable.Add(1)
			a.log.Error("aggregator: skipping undecodable processed record", zap.String("topic", r.Topic),
				zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Error(err))
			continue
		}
		f := &a.facts
		b.Count(f.UserID, f.HotelID)
		known := a.minKnown[f.HotelID]
		for _, ap := range f.Prices {
			b.CountAdvertiser(ap.Advertiser)
			if low, ok := known[ap.Advertiser]; ok && ap.Price >= low {
				continue // the view already holds this price or a lower one
			}
			b.OfferPrice(f.HotelID, ap.Advertiser, ap.Price)
		}
		n++
	}
	return b, n
}

// duplicate reports whether r is an event the view already holds under another offset: the
// transformer produced it twice, which the embedded broker can cause when it dies in the middle of
// committing a transaction (it writes the commit markers partition by partition, so a crash can
// leave one partition's copy committed while the raw offsets roll back). Records of one raw
// partition reach a processed partition in raw-offset order, so a source offset at or below the
// highest one applied is a repeat. Otherwise it raises the batch's watermark. Called with mu held.
func (a *Aggregator) duplicate(b *view.Batch, r *kgo.Record) bool {
	var sp, so int64 = -1, -1
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			sp, _ = strconv.ParseInt(string(h.Value), 10, 32)
		case event.HeaderSourceOffset:
			so, _ = strconv.ParseInt(string(h.Value), 10, 64)
		}
	}
	if sp < 0 || so < 0 {
		return false // no source position: nothing to compare
	}
	srcs := b.Sources[r.Partition]
	high, seen := srcs[int32(sp)]
	if !seen {
		high, seen = a.sources[r.Partition][int32(sp)]
	}
	if seen && so <= high {
		return true
	}
	if srcs == nil {
		srcs = map[int32]int64{}
		b.Sources[r.Partition] = srcs
	}
	srcs[int32(sp)] = so
	return false
}

// maxKnownPrices bounds the minimum-price cache; past it the cache starts over.
const maxKnownPrices = 1 << 20

// rememberPrices records the minimums a successful apply wrote. The view's minimum only ever
// falls, so each remembered price is an upper bound of what Redis holds, and a later price at or
// above it can be skipped without asking Redis — the cache is only forgotten when the view's
// offsets move under us (Redis lost data, or another writer), see resolve.
func (a *Aggregator) rememberPrices(b *view.Batch) {
	if a.minKnown == nil || a.knownPrices > maxKnownPrices {
		a.minKnown, a.knownPrices = map[string]map[string]int64{}, 0
	}
	b.MinPrices(func(hotel, adv string, price int64) {
		known := a.minKnown[hotel]
		if known == nil {
			known = make(map[string]int64, 8)
			a.minKnown[hotel] = known
		}
		if low, ok := known[adv]; !ok || price < low {
			if !ok {
				a.knownPrices++
			}
			known[adv] = price
		}
	})
}

// resumeFromView points newly assigned partitions at the offsets stored in the view, or at the
// start of the topic for a partition the view holds nothing of.
func (a *Aggregator) resumeFromView(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := make([]int32, 0, len(assigned[a.cfg.Topic]))
	for p := range assigned[a.cfg.Topic] {
		parts = append(parts, p)
	}
	var stored map[int32]int64
	var sources map[int32]map[int32]int64
	err := a.retryRedis(ctx, "read stored offsets", func() (err error) {
		if stored, err = a.view.Offsets(ctx, a.cfg.Topic, parts); err != nil {
			return err
		}
		sources, err = a.view.Sources(ctx, a.cfg.Topic, parts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]map[int32]kgo.Offset{a.cfg.Topic: {}}
	for _, p := range parts {
		a.next[p] = stored[p]
		a.sources[p] = sources[p]
		if stored[p] == view.NoOffset {
			out[a.cfg.Topic][p] = kgo.NewOffset().AtStart()
		} else {
			out[a.cfg.Topic][p] = kgo.NewOffset().At(stored[p]).WithEpoch(-1)
		}
	}
	a.log.Info("aggregator: partitions assigned, resuming from the view's offsets", zap.Any("offsets", stored))
	return out, nil
}

// retryRedis calls fn until it succeeds or ctx ends, backing off up to 5 s.
func (a *Aggregator) retryRedis(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		a.redisErrors.Add(1)
		a.log.Warn("aggregator: cannot "+what+"; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// forget drops what the aggregator knew of revoked or lost partitions.
func (a *Aggregator) forget(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	// A batch still being applied may hold records of these partitions: let it land before the
	// next owner reads the view's offsets.
	a.mu.Lock()
	landing := a.landing
	a.mu.Unlock()
	if landing != nil {
		<-landing
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range revoked[a.cfg.Topic] {
		delete(a.next, p)
		delete(a.sources, p)
	}
}
