// Package transformer is the second stage: it reads raw events, validates and reshapes them into
// processed events, and sends what it cannot read to the dead-letter topic. Each polled batch is one
// Kafka transaction: its processed and dead-letter records and its consumed offsets commit together
// or not at all.
package transformer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/backoff"
	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/stages/deadletter"
)

// Config is the transformer's slice of the configuration.
type Config struct {
	RawTopic, ProcessedTopic, DeadLetterTopic string
	// HotelTopic receives every valid event a second time, as a compact document (hotel and
	// prices) keyed by hotel id, in the same transaction: the hotel aggregator folds it, so that
	// each hotel is counted by one partition's consumer (README, The Redis view).
	HotelTopic      string
	Group           string
	BatchMaxRecords int
	// Limits bound a valid event (MAX_* variables); past one, it is dead-lettered. The zero value
	// means event.DefaultLimits().
	Limits event.Limits
	// MaxRecordBytes is the largest processed record produced; a valid event whose processed form
	// is larger is dead-lettered as processed_too_large. 0 means DefaultMaxRecordBytes.
	MaxRecordBytes int
	// MaxFutureSkew is how far an event's search_timestamp may be ahead of its raw record's
	// timestamp; further, it is dead-lettered as future_timestamp. 0 means DefaultMaxFutureSkew.
	MaxFutureSkew time.Duration
	// OnBatch, if set, is called after each committed batch with its size and processing time.
	OnBatch func(records int, took time.Duration)
	// TransactionalID, when set, is this process's stable transactional ID: a restarted process
	// fences its predecessor and aborts the transaction it left open at once. Empty: a fresh
	// random ID per session (the embedded broker's crash recovery needs that; README, Delivery
	// guarantees).
	TransactionalID string
	// TransactionTimeout is how long the broker waits before it aborts a transaction nobody
	// finishes; 0: DefaultTransactionTimeout.
	TransactionTimeout time.Duration
}

// DefaultTransactionTimeout is the transaction timeout when Config leaves it 0 (franz-go's own
// default is 40 s).
const DefaultTransactionTimeout = 10 * time.Second

// Producer limits. A produce batch holds at most maxBatchBytes (Kafka's default record limit is
// 1 MiB too); a processed record must leave room for the batch's own header.
const (
	maxBatchBytes         = 1 << 20
	DefaultMaxRecordBytes = maxBatchBytes - 1<<10
	DefaultMaxFutureSkew  = time.Hour
	pollWait              = time.Second // a bounded poll lets a stopped partition be retried while idle
)

// Transformer is the transform stage.
type Transformer struct {
	cfg       Config
	kafkaOpts []kgo.Opt
	log       *zap.Logger
	iso       *isolator

	counts                                                           counters.Set
	consumed, produced, deadLettered, aborted, fetchErrors, isolated *counters.Counter
	abortsInRow                                                      atomic.Int64
	lastAbort, sessionProblem                                        atomic.Pointer[string]
	lastAbortLog                                                     time.Time      // owned by the session goroutine
	failures                                                         failureLog     // the current transaction's failed records
	decoder                                                          *event.Decoder // reused event after event (session goroutine only)
	judged                                                           bool           // isolation holds verdicts: look records up (session goroutine only)
}

// New returns a transformer whose clients start from kafkaOpts (seed brokers, logger).
func New(cfg Config, kafkaOpts []kgo.Opt, log *zap.Logger) *Transformer {
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if cfg.MaxFutureSkew <= 0 {
		cfg.MaxFutureSkew = DefaultMaxFutureSkew
	}
	if cfg.Limits == (event.Limits{}) {
		cfg.Limits = event.DefaultLimits()
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = DefaultTransactionTimeout
	}
	t := &Transformer{cfg: cfg, kafkaOpts: kafkaOpts, log: log, iso: newIsolator(cfg.BatchMaxRecords), decoder: cfg.Limits.NewDecoder()}
	t.consumed, t.produced = t.counts.New(counters.Consumed), t.counts.New(counters.Produced)
	t.deadLettered, t.aborted = t.counts.New(counters.DeadLettered), t.counts.New("aborted_batches")
	t.fetchErrors, t.isolated = t.counts.New(counters.FetchErrors), t.counts.New("isolated")
	t.failures.deadLetterTopic = cfg.DeadLetterTopic
	return t
}

// Name implements the pipeline's stage.
func (t *Transformer) Name() string { return "transformer" }

// Counters returns the stage's running totals and its dead letters by reason.
func (t *Transformer) Counters() *counters.Set { return &t.counts }

// Problem says why the stage cannot make progress right now ("" when it can), for /readyz: a
// broken session, transactions aborting in a row, or partitions stopped because their dead
// letter cannot be written.
func (t *Transformer) Problem() string {
	var parts []string
	if p := t.sessionProblem.Load(); p != nil {
		parts = append(parts, *p)
	}
	if n := t.abortsInRow.Load(); n >= abortsProblem {
		last := ""
		if p := t.lastAbort.Load(); p != nil {
			last = *p
		}
		parts = append(parts, fmt.Sprintf("%d transactions aborted in a row (last: %s)", n, last))
	}
	if p := t.iso.problem(t.cfg.RawTopic); p != "" {
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// Run transforms until ctx ends, then finishes the batch in hand and returns nil. A broken
// transactional session (broker gone for longer than the client retries, a fenced producer) is
// replaced by a new one after a capped backoff: its open transaction aborts and its records are
// read again, so nothing is lost or doubled and the process does not crash-loop.
func (t *Transformer) Run(ctx context.Context) error {
	wait := backoff.Policy{First: time.Second, Max: 30 * time.Second}.New()
	var lastFenced time.Time
	for {
		err := t.session(ctx, wait.Reset)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *configError
		if errors.As(err, &fatal) {
			return err
		}
		if t.cfg.TransactionalID != "" && fenced(err) {
			// Once is a restart meeting its predecessor (or this process a zombie): take over
			// again. Twice in a row means another live process has the same ID: they would fence
			// each other forever.
			if !lastFenced.IsZero() && time.Since(lastFenced) < fencedTwiceWithin {
				return fmt.Errorf("transformer: transactional ID %q fenced twice within %s: another live process uses the same INSTANCE_ID; give each process its own: %w",
					t.cfg.TransactionalID, fencedTwiceWithin, err)
			}
			lastFenced = time.Now()
		}
		msg := "transactional session failed: " + err.Error()
		t.sessionProblem.Store(&msg)
		d := wait.Next()
		t.log.Error("transformer: session failed; starting a new one", zap.Duration("backoff", d), zap.Error(err))
		if !backoff.Wait(ctx, d) {
			return nil
		}
	}
}

// fencedTwiceWithin is how close two fencings of a stable transactional ID must come to tell
// another live process with the same ID from a predecessor.
const fencedTwiceWithin = 2 * time.Minute

// fenced reports whether err says another producer with this transactional ID took over.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// configError is a session that cannot be built at all: retrying would not help.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// session runs one transactional session until ctx ends (nil) or the session breaks.
func (t *Transformer) session(ctx context.Context, committed func()) error {
	txnID := t.cfg.TransactionalID
	if txnID == "" {
		// A fresh transactional ID per session: kfake can hide a reused ID's later records after
		// a crash (README, Delivery guarantees); zombie fencing comes from the group generation
		// (KIP-447).
		suffix := make([]byte, 6)
		_, _ = rand.Read(suffix)
		txnID = t.cfg.Group + "-" + hex.EncodeToString(suffix)
	}
	forget := func(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
		if parts := lost[t.cfg.RawTopic]; len(parts) > 0 {
			t.iso.forget(parts)
			cl.ResumeFetchPartitions(map[string][]int32{t.cfg.RawTopic: parts})
		}
	}
	opts := append([]kgo.Opt{
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(t.cfg.TransactionTimeout),
		kgo.ConsumerGroup(t.cfg.Group),
		kgo.ConsumeTopics(t.cfg.RawTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(maxBatchBytes),
		kgo.OnPartitionsRevoked(forget),
		kgo.OnPartitionsLost(forget),
		kgo.WithHooks(&t.failures),
	}, t.kafkaOpts...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return &configError{fmt.Errorf("transformer: create transactional session: %w", err)}
	}
	defer sess.Close()
	t.log.Info("transformer session started", zap.String("topic", t.cfg.RawTopic), zap.String("group", t.cfg.Group),
		zap.String("transactional_id", txnID))
	if parts := t.iso.stillPaused(); len(parts) > 0 {
		sess.Client().PauseFetchPartitions(map[string][]int32{t.cfg.RawTopic: parts})
	}

	var lastWarn time.Time
	wait := backoff.Policy{First: abortBackoff, Max: abortBackoffMx}.New()
	for {
		if due := t.iso.due(time.Now()); len(due) > 0 {
			t.log.Info("transformer: retrying stopped partitions", zap.String("topic", t.cfg.RawTopic), zap.Int32s("partitions", due))
			sess.Client().ResumeFetchPartitions(map[string][]int32{t.cfg.RawTopic: due})
		}
		pollCtx, cancel := context.WithTimeout(ctx, pollWait)
		fetches := sess.PollRecords(pollCtx, t.iso.pollSize())
		cancel()
		if ctx.Err() != nil {
			// Records polled but not transformed were never committed: the next owner reads them.
			return nil
		}
		t.countFetchErrors(fetches, &lastWarn)
		if fetches.NumRecords() == 0 {
			continue
		}
		plan, ok, err := t.transformBatch(ctx, sess, fetches)
		if err != nil {
			return err
		}
		if ok {
			t.sessionProblem.Store(nil)
			wait.Reset()
			committed()
			continue
		}
		if !t.followPlan(ctx, sess.Client(), plan, wait) {
			return nil
		}
	}
}

// countFetchErrors counts a poll's fetch errors (its own deadline aside) and logs them at most
// every 5 s: the client retries them.
func (t *Transformer) countFetchErrors(fetches kgo.Fetches, lastWarn *time.Time) {
	var errs []kgo.FetchError
	for _, e := range fetches.Errors() {
		if !errors.Is(e.Err, context.DeadlineExceeded) {
			errs = append(errs, e)
		}
	}
	t.fetchErrors.Add(int64(len(errs)))
	if len(errs) > 0 && time.Since(*lastWarn) > 5*time.Second {
		*lastWarn = time.Now()
		t.log.Warn("fetch errors (the client retries)", zap.Int("n", len(errs)), zap.String("topic", errs[0].Topic),
			zap.Int32("partition", errs[0].Partition), zap.Error(errs[0].Err))
	}
}

// followPlan stops the partitions an aborted transaction says must stop and, after an outage,
// waits the next step of wait. It reports false when ctx ended meanwhile.
func (t *Transformer) followPlan(ctx context.Context, cl *kgo.Client, plan abortPlan, wait *backoff.Backoff) bool {
	for p, pa := range plan.pause {
		cl.PauseFetchPartitions(map[string][]int32{t.cfg.RawTopic: {p}})
		t.log.Error("transformer: partition stopped: the dead letter of a record cannot be written; retrying later",
			zap.String("topic", t.cfg.RawTopic), zap.Int32("partition", p), zap.Int64("offset", pa.at.offset),
			zap.Duration("retry_in", pa.backoff), zap.Error(pa.err))
	}
	return !plan.wait || backoff.Wait(ctx, wait.Next())
}

// transformBatch runs one batch as one transaction. It reports whether the transaction
// committed and, when it did not, what the abort teaches.
func (t *Transformer) transformBatch(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) (abortPlan, bool, error) {
	if err := sess.Begin(); err != nil {
		return abortPlan{}, false, fmt.Errorf("transformer: begin transaction: %w", err)
	}
	// Finish the batch even when a drain begins meanwhile; only the client's own timeouts bound it.
	work := context.WithoutCancel(ctx)
	// The first failed record aborts what is still buffered (franz-go's aborting promise) and
	// stops this batch's producing: the transaction cannot commit any more. Which records failed,
	// and how, comes from the failures hook, for isolate.go to read the abort.
	first := kgo.AbortingFirstErrPromise(sess.Client())
	t.failures.reset()
	t.judged = t.iso.remembers() // a lock per batch, not per record, while nothing is isolated
	var n, dl int64
	start := time.Now()
	reasons := map[event.Reason]int64{}
	fetches.EachRecord(func(r *kgo.Record) {
		if t.failures.any() {
			return
		}
		out, byHotel, reason := t.transform(r)
		if reason != "" {
			dl++
			reasons[reason]++
		} else {
			n++
		}
		sess.Produce(work, out, first.Promise())
		if byHotel != nil {
			sess.Produce(work, byHotel, first.Promise())
		}
	})
	commit := kgo.TryCommit
	if first.Err() != nil {
		commit = kgo.TryAbort
	}
	failed := t.failures.take()
	endCtx, cancel := context.WithTimeout(work, 30*time.Second)
	defer cancel()
	committed, err := sess.End(endCtx, commit)
	if err != nil {
		return abortPlan{}, false, fmt.Errorf("transformer: end transaction: %w", err)
	}
	if !committed {
		// A failed produce or a rebalance: the session rewinds to the last commit and the batch is
		// read again, by us or by the partition's new owner.
		return t.abortedBatch(fetches.NumRecords(), failed), false, nil
	}
	t.committedBatch(fetches, n, dl, reasons, time.Since(start))
	return abortPlan{}, true, nil
}

// failureLog keeps the current transaction's failed records: a franz-go hook, told of every
// record as it leaves the producer's buffer, so no promise per record is needed for it.
type failureLog struct {
	deadLetterTopic string
	mu              sync.Mutex
	failures        []failure
	failed          atomic.Bool
}

// OnProduceRecordUnbuffered implements kgo.HookProduceRecordUnbuffered.
func (l *failureLog) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	from, _ := sourceOf(r)
	l.mu.Lock()
	l.failures = append(l.failures, failure{from: from, deadLetter: r.Topic == l.deadLetterTopic, err: err})
	l.mu.Unlock()
	l.failed.Store(true)
}

func (l *failureLog) reset() {
	l.mu.Lock()
	l.failures = nil
	l.mu.Unlock()
	l.failed.Store(false)
}

// any reports whether a record of the transaction failed.
func (l *failureLog) any() bool { return l.failed.Load() }

// take returns the failures so far.
func (l *failureLog) take() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]failure(nil), l.failures...)
}

// abortedBatch learns from an aborted transaction of n records and says what to do next.
func (t *Transformer) abortedBatch(n int, failed []failure) abortPlan {
	t.aborted.Add(1)
	plan := t.iso.aborted(n, failed, time.Now())
	if plan.explain == "" {
		plan.explain = "the group rebalanced or refused the commit"
	}
	t.lastAbort.Store(&plan.explain)
	inRow := t.abortsInRow.Add(1)
	// At most a line a second: narrowing down can abort a transaction per record.
	if (inRow == abortsProblem || len(failed) > 0) && time.Since(t.lastAbortLog) >= time.Second {
		t.log.Warn("transformer: transaction aborted; the batch is read again", zap.Int("records", n),
			zap.Int("failed_records", len(failed)), zap.Int64("aborted_in_a_row", inRow),
			zap.Int("next_poll_size", t.iso.pollSize()), zap.String("cause", plan.explain))
		t.lastAbortLog = time.Now()
	}
	return plan
}

// committedBatch records a committed transaction: n processed records, dl dead letters.
func (t *Transformer) committedBatch(fetches kgo.Fetches, n, dl int64, reasons map[event.Reason]int64, took time.Duration) {
	t.abortsInRow.Store(0)
	t.consumed.Add(n + dl)
	t.produced.Add(n)
	t.deadLettered.Add(dl)
	t.isolated.Add(reasons[event.ReasonPoison] + reasons[event.ReasonProcessedTooLarge])
	for r, k := range reasons {
		t.counts.DeadLetter(string(r), k)
	}
	var positions []pos
	if t.iso.remembers() {
		fetches.EachRecord(func(r *kgo.Record) { positions = append(positions, pos{r.Partition, r.Offset}) })
	}
	t.iso.committed(positions)
	if t.cfg.OnBatch != nil {
		t.cfg.OnBatch(int(n+dl), took)
	}
}

// transform returns the records to produce for r — its processed event in the processed topic
// and its compact hotel document in the hotel topic, or its dead letter alone — and the dead-letter reason ("" for a
// processed event). It never panics: a panic would be a bug in the decoder, and it makes the
// record poison rather than the stage dead.
func (t *Transformer) transform(r *kgo.Record) (out, byHotel *kgo.Record, reason event.Reason) {
	defer func() {
		if p := recover(); p != nil {
			out, byHotel, reason = t.deadLetter(r, event.ReasonPoison, fmt.Sprintf("the transform panicked: %v", p)), nil, event.ReasonPoison
		}
	}()
	if v, ok := t.verdictOf(r); ok {
		return t.deadLetter(r, v.reason, v.detail), nil, v.reason
	}
	// One buffer for both documents: the processed one is about 60 % of the raw event, the hotel
	// one about 30 %.
	value, compact, keys, err := t.decoder.AppendRecords(make([]byte, 0, len(r.Value)+192), r.Value)
	if err == nil && event.Future(keys.SearchTime, r.Timestamp, t.cfg.MaxFutureSkew) {
		return t.deadLetter(r, event.ReasonFutureTimestamp, fmt.Sprintf("search_timestamp %.0f is more than %s ahead of the record's timestamp %s",
			keys.SearchTime, t.cfg.MaxFutureSkew, r.Timestamp.UTC().Format(time.RFC3339))), nil, event.ReasonFutureTimestamp
	}
	if err == nil {
		// The source position lets the aggregator drop an event that a crash made us produce twice.
		headers := []kgo.RecordHeader{
			{Key: event.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
			{Key: event.HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		}
		out := &kgo.Record{Topic: t.cfg.ProcessedTopic, Key: []byte(keys.User), Value: value, Timestamp: r.Timestamp, Headers: headers}
		byHotel := &kgo.Record{Topic: t.cfg.HotelTopic, Key: []byte(keys.Hotel), Value: compact, Timestamp: r.Timestamp, Headers: headers}
		if size := max(deadletter.Size(out), deadletter.Size(byHotel)); size > t.cfg.MaxRecordBytes {
			return t.deadLetter(r, event.ReasonProcessedTooLarge, fmt.Sprintf(
				"the processed record is %d bytes, over the %d byte producer limit", size, t.cfg.MaxRecordBytes)), nil, event.ReasonProcessedTooLarge
		}
		return out, byHotel, ""
	}
	reason = "invalid"
	var ve *event.ValidationError
	if errors.As(err, &ve) {
		reason = ve.Reason
	}
	return t.deadLetter(r, reason, err.Error()), nil, reason
}

// verdictOf returns isolation's decision for r, if it made one.
func (t *Transformer) verdictOf(r *kgo.Record) (verdict, bool) {
	if !t.judged {
		return verdict{}, false
	}
	return t.iso.verdict(pos{r.Partition, r.Offset})
}

func (t *Transformer) deadLetter(r *kgo.Record, reason event.Reason, detail string) *kgo.Record {
	return deadletter.Record(t.cfg.DeadLetterTopic, r, "transformer", reason, detail)
}
