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
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/event"
)

// Config is the transformer's slice of the configuration.
type Config struct {
	RawTopic, ProcessedTopic, DeadLetterTopic string
	Group                                     string
	BatchMaxRecords                           int
	// OnBatch, if set, is called after each committed batch with its size and processing time.
	OnBatch func(records int, took time.Duration)
}

// DeadLetterReasonPrefix marks the per-reason dead-letter totals in Counts.
const DeadLetterReasonPrefix = "dead_letter_reason:"

// Record headers, as the event package names them.
const (
	HeaderError           = event.HeaderError
	HeaderReason          = event.HeaderReason
	HeaderSourceTopic     = event.HeaderSourceTopic
	HeaderSourcePartition = event.HeaderSourcePartition
	HeaderSourceOffset    = event.HeaderSourceOffset
	HeaderStage           = event.HeaderStage
)

// Transformer is the transform stage.
type Transformer struct {
	cfg       Config
	kafkaOpts []kgo.Opt
	log       *zap.Logger

	consumed, produced, deadLettered, aborted, fetchErrors atomic.Int64
	problem                                                atomic.Pointer[string]
	reasonMu                                               sync.Mutex
	reasons                                                map[string]int64 // dead letters by reason
}

// Size limits. A dead-lettered record keeps at most maxDeadLetterValue bytes of the original value
// (the rest is cut and the original length put in a header), so an oversized raw record cannot
// fail its own dead-lettering and block its partition.
const (
	maxBatchBytes      = 1 << 20
	maxDeadLetterValue = 256 << 10
	HeaderTruncated    = "value_truncated_from"
)

// New returns a transformer whose clients start from kafkaOpts (seed brokers, logger).
func New(cfg Config, kafkaOpts []kgo.Opt, log *zap.Logger) *Transformer {
	return &Transformer{cfg: cfg, kafkaOpts: kafkaOpts, log: log, reasons: map[string]int64{}}
}

// Name implements the pipeline's stage.
func (t *Transformer) Name() string { return "transformer" }

// Counts returns the stage's running totals.
func (t *Transformer) Counts() map[string]int64 {
	c := map[string]int64{"consumed": t.consumed.Load(), "produced": t.produced.Load(),
		"dead_lettered": t.deadLettered.Load(), "aborted_batches": t.aborted.Load(), "fetch_errors": t.fetchErrors.Load()}
	t.reasonMu.Lock()
	defer t.reasonMu.Unlock()
	for r, n := range t.reasons {
		c[DeadLetterReasonPrefix+r] = n
	}
	return c
}

// Problem says why the stage cannot make progress right now ("" when it can), for /readyz.
func (t *Transformer) Problem() string {
	if p := t.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Run transforms until ctx ends, then finishes the batch in hand and returns nil. A broken
// transactional session (broker gone for longer than the client retries, a fenced producer) is
// replaced by a new one after a capped backoff: its open transaction aborts and its records are
// read again, so nothing is lost or doubled and the process does not crash-loop.
func (t *Transformer) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		err := t.session(ctx, func() { backoff = time.Second })
		if ctx.Err() != nil {
			return nil
		}
		var fatal *configError
		if errors.As(err, &fatal) {
			return err
		}
		msg := "transactional session failed: " + err.Error()
		t.problem.Store(&msg)
		t.log.Error("transformer: session failed; starting a new one", zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// configError is a session that cannot be built at all: retrying would not help.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// session runs one transactional session until ctx ends (nil) or the session breaks.
func (t *Transformer) session(ctx context.Context, committed func()) error {
	// A fresh transactional ID per session: kfake can hide a reused ID's later records after a
	// crash (../shared/TRAPS.md); zombie fencing comes from the group generation (KIP-447).
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	txnID := t.cfg.Group + "-" + hex.EncodeToString(suffix)
	opts := append([]kgo.Opt{
		kgo.TransactionalID(txnID),
		kgo.ConsumerGroup(t.cfg.Group),
		kgo.ConsumeTopics(t.cfg.RawTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(maxBatchBytes),
	}, t.kafkaOpts...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return &configError{fmt.Errorf("transformer: create transactional session: %w", err)}
	}
	defer sess.Close()
	t.log.Info("transformer session started", zap.String("topic", t.cfg.RawTopic), zap.String("group", t.cfg.Group),
		zap.String("transactional_id", txnID))

	var lastWarn time.Time
	for {
		fetches := sess.PollRecords(ctx, t.cfg.BatchMaxRecords)
		if ctx.Err() != nil {
			// Records polled but not transformed were never committed: the next owner reads them.
			return nil
		}
		errs := fetches.Errors()
		t.fetchErrors.Add(int64(len(errs)))
		if len(errs) > 0 && time.Since(lastWarn) > 5*time.Second {
			lastWarn = time.Now()
			t.log.Warn("fetch errors (the client retries)", zap.Int("n", len(errs)), zap.String("topic", errs[0].Topic),
				zap.Int32("partition", errs[0].Partition), zap.Error(errs[0].Err))
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		ok, err := t.transformBatch(ctx, sess, fetches)
		if err != nil {
			return err
		}
		if ok {
			t.problem.Store(nil)
			committed()
		}
	}
}

// transformBatch runs one batch as one transaction and reports whether it committed.
func (t *Transformer) transformBatch(ctx context.Context, sess *kgo.GroupTransactSession, fetches kgo.Fetches) (bool, error) {
	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("transformer: begin transaction: %w", err)
	}
	// Finish the batch even when a drain begins meanwhile; only the client's own timeouts bound it.
	work := context.WithoutCancel(ctx)
	var (
		failMu  sync.Mutex
		failErr error
		n, dl   int64
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failMu.Lock()
			if failErr == nil {
				failErr = err
			}
			failMu.Unlock()
		}
	}
	start := time.Now()
	reasons := map[string]int64{}
	fetches.EachRecord(func(r *kgo.Record) {
		out, reason := t.transform(r)
		if reason != "" {
			dl++
			reasons[reason]++
		} else {
			n++
		}
		sess.Produce(work, out, promise)
	})
	if err := sess.Client().Flush(work); err != nil {
		return false, fmt.Errorf("transformer: flush batch: %w", err)
	}
	failMu.Lock()
	produceErr := failErr
	failMu.Unlock()
	commit := kgo.TryCommit
	if produceErr != nil {
		commit = kgo.TryAbort
		t.log.Warn("aborting batch: a record was not produced", zap.Error(produceErr))
	}
	endCtx, cancel := context.WithTimeout(work, 30*time.Second)
	defer cancel()
	committed, err := sess.End(endCtx, commit)
	if err != nil {
		return false, fmt.Errorf("transformer: end transaction: %w", err)
	}
	if !committed {
		// A rebalance or a failed produce: the session rewinds to the last commit and the batch is
		// read again, by us or by the partition's new owner.
		t.aborted.Add(1)
		return false, nil
	}
	t.consumed.Add(n + dl)
	t.produced.Add(n)
	t.deadLettered.Add(dl)
	if len(reasons) > 0 {
		t.reasonMu.Lock()
		for r, k := range reasons {
			t.reasons[r] += k
		}
		t.reasonMu.Unlock()
	}
	if t.cfg.OnBatch != nil {
		t.cfg.OnBatch(int(n+dl), time.Since(start))
	}
	return true, nil
}

// transform returns the record to produce for r: its processed event, or r itself bound for the
// dead-letter topic with headers saying why and where it came from, and then the reason.
func (t *Transformer) transform(r *kgo.Record) (*kgo.Record, string) {
	value, user, err := event.AppendProcessed(make([]byte, 0, len(r.Value)/2+128), r.Value)
	if err == nil {
		// The source position lets the aggregator drop an event that a crash made us produce twice.
		return &kgo.Record{Topic: t.cfg.ProcessedTopic, Key: []byte(user), Value: value, Timestamp: r.Timestamp,
			Headers: []kgo.RecordHeader{
				{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
				{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
			}}, ""
	}
	reason := "invalid"
	var ve *event.ValidationError
	if errors.As(err, &ve) {
		reason = string(ve.Reason)
	}
	headers := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: HeaderError, Value: []byte(err.Error())},
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderStage, Value: []byte("transformer")},
	)
	value = r.Value
	if len(value) > maxDeadLetterValue {
		value = value[:maxDeadLetterValue]
		headers = append(headers, kgo.RecordHeader{Key: HeaderTruncated, Value: []byte(strconv.Itoa(len(r.Value)))})
	}
	return &kgo.Record{Topic: t.cfg.DeadLetterTopic, Key: r.Key, Value: value, Headers: headers, Timestamp: r.Timestamp}, reason
}
