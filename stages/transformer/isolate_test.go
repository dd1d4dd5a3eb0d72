package transformer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
)

// The isolator is pure bookkeeping: these tests drive it with the aborts and commits a session
// would report, without a broker.

var errUnforeseen = fmt.Errorf("produce: %w", kerr.PolicyViolation)

// TestNarrowingSurvivesOtherPartitionsCommits: partition 0's record fails in a way nobody
// foresaw, while partition 1 keeps committing in between. Those commits must neither reset the
// narrowing nor grow the transactions back, else the record is never alone and never judged.
func TestNarrowingSurvivesOtherPartitionsCommits(t *testing.T) {
	is := newIsolator(64)
	now := time.Now()
	poison := pos{0, 7}
	for i := 0; is.pollSize() > 1; i++ {
		if i > 100 {
			t.Fatalf("the poll size never reached 1: %d", is.pollSize())
		}
		is.aborted(is.pollSize(), []failure{{from: poison, err: errUnforeseen}}, now)
		is.committed([]pos{{1, int64(i)}}) // partition 1 alone commits in between
	}
	for i := 0; ; i++ {
		if _, ok := is.verdict(poison); ok {
			break
		}
		if i > 10 {
			t.Fatal("the record failing alone was never judged")
		}
		is.aborted(1, []failure{{from: poison, err: errUnforeseen}}, now)
		is.committed([]pos{{1, int64(1000 + i)}})
	}
	if v, _ := is.verdict(poison); v.reason != event.ReasonPoison {
		t.Errorf("verdict %v", v)
	}
	is.committed([]pos{poison}) // its dead letter committed
	for i := 0; i < 10; i++ {
		is.committed([]pos{{1, int64(2000 + i)}})
	}
	if is.pollSize() != 64 || is.remembers() {
		t.Errorf("after the poison record: size %d, still remembers %v", is.pollSize(), is.remembers())
	}
}

// TestNoEvidenceNoVerdict: a record that fails alone while nothing else commits is not judged:
// the failure may be the pipeline's.
func TestNoEvidenceNoVerdict(t *testing.T) {
	is := newIsolator(8)
	p := pos{0, 1}
	for i := 0; i < 10; i++ {
		plan := is.aborted(1, []failure{{from: p, err: errUnforeseen}}, time.Now())
		if i >= unknownRetries-1 && !plan.wait {
			t.Errorf("attempt %d: the stage must back off", i)
		}
	}
	if _, ok := is.verdict(p); ok {
		t.Fatal("judged without evidence that other records can be produced")
	}
}

func TestIsolatorClassifies(t *testing.T) {
	now := time.Now()
	t.Run("a refused record alone is dead-lettered at once", func(t *testing.T) {
		is := newIsolator(8)
		is.aborted(1, []failure{{from: pos{0, 1}, err: kerr.MessageTooLarge}}, now)
		if v, ok := is.verdict(pos{0, 1}); !ok || v.reason != event.ReasonProcessedTooLarge {
			t.Errorf("verdict %v %v", v, ok)
		}
	})
	t.Run("a refused record among others isolates one at a time", func(t *testing.T) {
		is := newIsolator(8)
		is.aborted(5, []failure{{from: pos{0, 1}, err: kerr.InvalidRecord}, {from: pos{1, 3}, err: kerr.InvalidRecord}}, now)
		if is.pollSize() != 1 {
			t.Errorf("size %d, want 1", is.pollSize())
		}
		if _, ok := is.verdict(pos{0, 1}); ok {
			t.Error("judged before it failed alone")
		}
	})
	t.Run("a dead letter refused among others blames no partition yet", func(t *testing.T) {
		is := newIsolator(8)
		plan := is.aborted(4, []failure{{from: pos{0, 1}, deadLetter: true, err: kerr.MessageTooLarge},
			{from: pos{1, 2}, deadLetter: true, err: kerr.MessageTooLarge}}, now)
		if len(plan.pause) != 0 || is.pollSize() != 1 {
			t.Errorf("paused %v, size %d", plan.pause, is.pollSize())
		}
		plan = is.aborted(1, []failure{{from: pos{0, 1}, deadLetter: true, err: kerr.MessageTooLarge}}, now)
		if plan.pause[0] == nil || len(plan.pause) != 1 {
			t.Errorf("alone, its partition must stop: %v", plan.pause)
		}
	})
	t.Run("outages and collateral blame no record", func(t *testing.T) {
		is := newIsolator(8)
		plan := is.aborted(5, []failure{{from: pos{0, 1}, err: kgo.ErrRecordTimeout}, {from: pos{0, 2}, err: kgo.ErrAborting},
			{from: pos{0, 3}, err: kerr.UnknownProducerID}, {from: pos{0, 4}, err: kerr.TopicAuthorizationFailed}}, now)
		if !plan.wait || is.remembers() || is.pollSize() != 8 {
			t.Errorf("wait %v, remembers %v, size %d", plan.wait, is.remembers(), is.pollSize())
		}
	})
	t.Run("unknown server error is unforeseen, not an outage", func(t *testing.T) {
		if k := classify(errors.Join(kerr.UnknownServerError)); k != failUnknown {
			t.Errorf("UNKNOWN_SERVER_ERROR classified %d", k)
		}
	})
}
