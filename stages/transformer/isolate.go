package transformer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
)

// A failed produce inside a transaction aborts the whole transaction, and with it every partition
// of the batch. This file decides what an abort means, so that one record can never stop the
// stage. Every record whose produce failed for a reason of its own becomes a suspect. While any
// suspect remains, transactions stay small: one record each when the broker named the records
// (too large, invalid, a dead letter refused), halved after three unforeseen failures in a row
// otherwise. A suspect that commits is cleared; one that fails alone is dead-lettered — at once
// for a refusal the broker explained, after three tries for an unforeseen error, and only if
// other records committed meanwhile (else the failure is the pipeline's, not the record's). A
// broker or coordinator that is away is only waited for; a dead letter that cannot be written
// even alone stops its partition, retried with backoff, never skipped.

// failureKind sorts produce errors by what they say about the record.
type failureKind int

const (
	failOutage     failureKind = iota // broker, coordinator or network away: wait, blame no record
	failCollateral                    // failed only because the transaction was being aborted
	failRecord                        // the broker refused this very record
	failDenied                        // not authorized to write the topic
	failUnknown                       // not foreseen: retry, then isolate
)

// classify tells record errors from outages.
func classify(err error) failureKind {
	var netErr net.Error
	switch {
	case errors.Is(err, kgo.ErrAborting):
		return failCollateral
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.InvalidTimestamp), errors.Is(err, kerr.UnsupportedForMessageFormat):
		return failRecord
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.SaslAuthenticationFailed):
		return failDenied
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrRecordRetries),
		errors.Is(err, kgo.ErrClientClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.As(err, &netErr), kerr.IsRetriable(err),
		// The producer's or the session's own state, not the record's.
		errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.ProducerFenced),
		errors.Is(err, kerr.InvalidTxnState), errors.Is(err, kerr.ConcurrentTransactions),
		errors.Is(err, kerr.TransactionAbortable), errors.Is(err, kerr.OutOfOrderSequenceNumber),
		errors.Is(err, kerr.UnknownProducerID), errors.Is(err, kerr.InvalidProducerIDMapping),
		errors.Is(err, kerr.TransactionCoordinatorFenced), errors.Is(err, kerr.DuplicateSequenceNumber):
		return failOutage
	}
	// UNKNOWN_SERVER_ERROR and every code not named above: unforeseen.
	return failUnknown
}

// pos is a raw record's place.
type pos struct {
	partition int32
	offset    int64
}

func (p pos) String() string {
	return strconv.Itoa(int(p.partition)) + "@" + strconv.FormatInt(p.offset, 10)
}

// verdict is how a raw record must be dead-lettered on its next attempt, decided by isolation.
type verdict struct {
	reason event.Reason
	detail string
}

// Isolation bounds.
const (
	unknownRetries = 3               // unforeseen failures of one batch (or one record) before narrowing
	pauseFirst     = 5 * time.Second // first wait before retrying a partition whose dead letter failed
	pauseMax       = 2 * time.Minute // longest such wait
	abortsProblem  = 3               // aborts in a row that make /readyz fail
	abortBackoff   = 100 * time.Millisecond
	abortBackoffMx = 5 * time.Second
)

// isolator holds what the transformer learned from aborted transactions. It outlives sessions:
// a replaced session must not forget that a record is poison.
type isolator struct {
	mu       sync.Mutex
	max      int   // BatchMaxRecords
	size     int   // records per poll now: below max while suspects remain
	streak   int   // unforeseen aborts in a row at this size
	commits  int64 // transactions committed so far: evidence that the pipeline works
	suspects map[pos]*suspect
	verdicts map[pos]verdict
	paused   map[int32]*pause // raw partition -> why it is stopped
}

// suspect is a record whose produce failed for a reason of its own, not yet cleared or judged.
type suspect struct {
	alone   int   // failures with no other record in the transaction
	commits int64 // is.commits when it became a suspect
}

// pause is a partition that stopped because its dead letter could not be written.
type pause struct {
	at      pos
	err     error
	until   time.Time
	backoff time.Duration
}

func newIsolator(max int) *isolator {
	return &isolator{max: max, size: max, suspects: map[pos]*suspect{}, verdicts: map[pos]verdict{}, paused: map[int32]*pause{}}
}

// pollSize is how many records the next transaction may take.
func (is *isolator) pollSize() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.size
}

// verdict returns the dead-letter decision for a record, if isolation made one.
func (is *isolator) verdict(p pos) (verdict, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if len(is.verdicts) == 0 {
		return verdict{}, false
	}
	v, ok := is.verdicts[p]
	return v, ok
}

// remembers reports whether isolation holds anything a commit could settle.
func (is *isolator) remembers() bool {
	is.mu.Lock()
	defer is.mu.Unlock()
	return len(is.verdicts) > 0 || len(is.suspects) > 0 || len(is.paused) > 0
}

// committed forgets what was learned about records a transaction committed. Once no suspect is
// left, transactions grow back toward BatchMaxRecords; a commit of other partitions' records
// while a suspect waits does not end the narrowing.
func (is *isolator) committed(positions []pos) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.commits++
	for _, p := range positions {
		delete(is.verdicts, p)
		delete(is.suspects, p)
		if pa := is.paused[p.partition]; pa != nil && pa.at == p {
			delete(is.paused, p.partition)
		}
	}
	if len(is.suspects) == 0 {
		is.streak = 0
		is.size = min(is.max, 2*is.size)
	}
}

// failure is one produced record that failed, with the raw record it came from.
type failure struct {
	from       pos
	deadLetter bool
	err        error
}

// abortPlan is what to do after an aborted transaction.
type abortPlan struct {
	pause   map[int32]*pause // partitions to stop: their dead letter cannot be written
	wait    bool             // an outage or a denial: back off before the next attempt
	explain string           // the abort's cause, for the log and /readyz
}

// aborted learns from one aborted transaction of n raw records and says what to do next.
func (is *isolator) aborted(n int, failures []failure, now time.Time) abortPlan {
	is.mu.Lock()
	defer is.mu.Unlock()
	plan := abortPlan{pause: map[int32]*pause{}}
	named, unforeseen := false, false
	for _, f := range failures {
		kind := classify(f.err)
		switch {
		case kind == failCollateral:
			continue
		case kind == failOutage:
			plan.wait = true
			continue
		case kind == failDenied && !f.deadLetter:
			plan.wait = true // the processed topic is denied: every record would fail alike
			continue
		}
		if plan.explain == "" {
			plan.explain = f.err.Error()
		}
		if n > 1 {
			if is.suspects[f.from] == nil {
				is.suspects[f.from] = &suspect{commits: is.commits}
			}
			if kind == failUnknown && !f.deadLetter {
				unforeseen = true
			} else {
				named = true
			}
			continue
		}
		// One record alone: whatever it alone caused is its own.
		switch {
		case f.deadLetter:
			// Nowhere left to put this record: stop its partition rather than skip it.
			plan.pause[f.from.partition] = is.stop(f, now)
		case kind == failRecord:
			reason := event.ReasonPoison
			if errors.Is(f.err, kerr.MessageTooLarge) || errors.Is(f.err, kerr.RecordListTooLarge) {
				reason = event.ReasonProcessedTooLarge
			}
			is.verdicts[f.from] = verdict{reason: reason, detail: "the broker refused its processed record: " + f.err.Error()}
		default: // unforeseen
			s := is.suspects[f.from]
			if s == nil {
				s = &suspect{commits: is.commits}
				is.suspects[f.from] = s
			}
			s.alone++
			switch {
			case s.alone >= unknownRetries && is.commits > s.commits:
				is.verdicts[f.from] = verdict{reason: event.ReasonPoison,
					detail: fmt.Sprintf("failed %d times alone, while other records committed: %v", s.alone, f.err)}
			case s.alone >= unknownRetries:
				plan.wait = true // nothing else commits either: the fault may not be this record's
			}
		}
	}
	if plan.explain == "" && len(failures) > 0 {
		plan.explain = failures[0].err.Error()
	}
	switch {
	case named:
		// The broker named the records, but a produce batch shares one error: find the culprit
		// among them one record at a time.
		is.size, is.streak = 1, 0
	case unforeseen:
		is.streak++
		if is.streak >= unknownRetries {
			is.size, is.streak = max(1, is.size/2), 0
		}
	}
	return plan
}

// stop records that a partition must stop at f's record: its dead letter cannot be written.
// Called with mu held.
func (is *isolator) stop(f failure, now time.Time) *pause {
	pa := is.paused[f.from.partition]
	if pa == nil || pa.at != f.from {
		pa = &pause{at: f.from, backoff: pauseFirst}
		is.paused[f.from.partition] = pa
	} else {
		pa.backoff = min(2*pa.backoff, pauseMax)
	}
	pa.err, pa.until = f.err, now.Add(pa.backoff)
	return pa
}

// due returns the stopped partitions whose wait is over: they may try their dead letter again.
func (is *isolator) due(now time.Time) []int32 {
	is.mu.Lock()
	defer is.mu.Unlock()
	var out []int32
	for p, pa := range is.paused {
		if !pa.until.IsZero() && now.After(pa.until) {
			pa.until = time.Time{} // resumed; stop() sets it again if it fails again
			out = append(out, p)
		}
	}
	return out
}

// stillPaused returns the partitions that are stopped and not yet due, for a new session to
// pause again.
func (is *isolator) stillPaused() []int32 {
	is.mu.Lock()
	defer is.mu.Unlock()
	var out []int32
	for p, pa := range is.paused {
		if !pa.until.IsZero() {
			out = append(out, p)
		}
	}
	return out
}

// forget drops what was learned about partitions this process no longer owns.
func (is *isolator) forget(partitions []int32) {
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, part := range partitions {
		delete(is.paused, part)
		for p := range is.verdicts {
			if p.partition == part {
				delete(is.verdicts, p)
			}
		}
		for p := range is.suspects {
			if p.partition == part {
				delete(is.suspects, p)
			}
		}
	}
}

// problem describes stopped partitions and narrowing in progress, for /readyz ("" when none).
func (is *isolator) problem(topic string) string {
	is.mu.Lock()
	defer is.mu.Unlock()
	var parts []string
	for p, pa := range is.paused {
		parts = append(parts, fmt.Sprintf("%s/%d stopped at offset %d: its dead letter cannot be written: %v",
			topic, p, pa.at.offset, pa.err))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// sourceOf reads the raw position a produced record carries in its source headers (the last
// occurrence wins: searchflow appends its own after any it kept).
func sourceOf(r *kgo.Record) (pos, bool) {
	var p pos
	var okP, okO bool
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			n, err := strconv.ParseInt(string(h.Value), 10, 32)
			p.partition, okP = int32(n), err == nil
		case event.HeaderSourceOffset:
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			p.offset, okO = n, err == nil
		}
	}
	return p, okP && okO
}
