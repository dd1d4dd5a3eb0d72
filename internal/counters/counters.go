// Package counters holds a stage's running totals: each one a typed counter the stage increments,
// all of them read as one list from which /stats, /metrics, the periodic log line and the
// dashboard are derived. The names that more than one stage uses are spelled here, once.
package counters

import (
	"sync"
	"sync/atomic"
)

// Names more than one stage counts under.
const (
	Consumed     = "consumed"
	Produced     = "produced"
	Applied      = "applied"
	DeadLettered = "dead_lettered"
	FetchErrors  = "fetch_errors"
	Batches      = "batches"
)

// Counter is one running total.
type Counter struct {
	name string
	v    atomic.Int64
}

// Add adds n and returns the new total.
func (c *Counter) Add(n int64) int64 { return c.v.Add(n) }

// Load returns the total.
func (c *Counter) Load() int64 { return c.v.Load() }

// Count is one total as read.
type Count struct {
	Name  string
	Value int64
}

// Set is a stage's counters, in the order they were made, and its dead letters by reason.
type Set struct {
	list []*Counter

	mu      sync.Mutex
	reasons map[string]int64
}

// New makes a counter of the set. Make every counter before the stage runs.
func (s *Set) New(name string) *Counter {
	c := &Counter{name: name}
	s.list = append(s.list, c)
	return c
}

// Counts reads every counter.
func (s *Set) Counts() []Count {
	out := make([]Count, len(s.list))
	for i, c := range s.list {
		out[i] = Count{Name: c.name, Value: c.Load()}
	}
	return out
}

// Map reads every counter into a map, for tests and for the /stats document.
func (s *Set) Map() map[string]int64 {
	out := make(map[string]int64, len(s.list))
	for _, c := range s.list {
		out[c.name] = c.Load()
	}
	return out
}

// DeadLetter adds n dead letters of reason. They count toward the stage's DeadLettered counter
// only if the stage adds them there too: the set keeps the split by reason.
func (s *Set) DeadLetter(reason string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reasons == nil {
		s.reasons = map[string]int64{}
	}
	s.reasons[reason] += n
}

// DeadLetters returns the dead letters by reason.
func (s *Set) DeadLetters() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.reasons))
	for r, n := range s.reasons {
		out[r] = n
	}
	return out
}
