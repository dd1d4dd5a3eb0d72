package aggregator

import (
	"maps"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/trends"
	"github.com/searchflow/searchflow/view"
)

// progress mirrors, for each partition this aggregator owns, what the view holds of it: the next
// offset it expects and the source marks, plus the offsets already dead-lettered. It holds the
// rules of the offset protocol and nothing else (no Kafka client, no Redis). It has its own mutex
// because franz-go runs the rebalance callbacks on its own goroutines.
type progress struct {
	mu    sync.Mutex
	parts map[int32]position
}

// position is what the view holds of one partition, as far as this aggregator knows. Its maps
// are never changed once a position is stored — they are replaced — so a snapshot can share them.
type position struct {
	next int64 // the next offset the view expects (view.NoOffset: it holds nothing yet)
	// The highest raw offset applied through this partition from each raw partition. A processed
	// event at or below it is one the transformer produced twice (see snapshot.claim).
	marks map[int32]int64
	skip  map[int64]bool // offsets already dead-lettered, which folds pass over
	// stream is the partition's stream time after the events before next (view.PartitionState).
	stream trends.StreamTime
}

// expects reports whether the view does not hold the record at offset yet.
func (pos position) expects(offset int64) bool { return offset >= pos.next }

// isCopy reports whether a record from raw partition sp, offset so, repeats one the view holds.
func (pos position) isCopy(sp int32, so int64) bool {
	high, seen := pos.marks[sp]
	return seen && so <= high
}

func newProgress() *progress { return &progress{parts: map[int32]position{}} }

// snapshot is a read-only copy of the progress of every owned partition: what a fold works from.
type snapshot map[int32]position

// snapshot returns the progress as it is now; later changes do not show in it.
func (p *progress) snapshot() snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return snapshot(maps.Clone(p.parts))
}

// verdict is what a record is to the batch being folded.
type verdict int

const (
	alreadyHeld  verdict = iota // the view holds it already, or the partition is not ours: ignore it
	fresh                       // count it
	copied                      // a copy of an event the view or the batch holds: drop it
	deadLettered                // already dead-lettered: pass over it
)

// claim says what r is to batch b, folded from s, and moves b's offsets past it unless the view
// already holds it; src is r's raw position (sourceOf). A batch expects of each partition the
// offset s holds and ends after its last record. Records of one raw partition reach a processed
// partition in raw-offset order, so a source position at or below the highest one applied — by
// the view or earlier in b — is a copy (the embedded broker can commit part of a transaction and
// roll back its raw offsets when it dies in the middle of the commit); any other raises b's mark.
func (s snapshot) claim(b *view.Batch, r *kgo.Record, src source) verdict {
	pos, owned := s[r.Partition]
	if !owned || !pos.expects(r.Offset) {
		return alreadyHeld
	}
	o, seen := b.Offsets[r.Partition]
	if !seen {
		o.Expect = pos.next
	}
	o.Next = r.Offset + 1
	b.Offsets[r.Partition] = o
	if sp, so := src.partition, src.offset; src.ok {
		marks := b.Sources[r.Partition]
		high, seen := marks[sp]
		if (seen && so <= high) || (!seen && pos.isCopy(sp, so)) {
			return copied
		}
		if marks == nil {
			marks = map[int32]int64{}
			b.Sources[r.Partition] = marks
		}
		marks[sp] = so
	}
	if pos.skip[r.Offset] {
		return deadLettered
	}
	return fresh
}

// outstanding returns the records of run that the view does not hold and that are not
// dead-lettered yet.
func (s snapshot) outstanding(run []*kgo.Record) []*kgo.Record {
	out := run[:0:0]
	for _, r := range run {
		if pos, owned := s[r.Partition]; owned && pos.expects(r.Offset) && !pos.skip[r.Offset] {
			out = append(out, r)
		}
	}
	return out
}

// isCopy reports whether r repeats an event the view holds (see claim).
func (s snapshot) isCopy(r *kgo.Record) bool {
	sp, so, ok := sourcePosition(r)
	return ok && s[r.Partition].isCopy(sp, so)
}

// nexts returns the next offset the view expects of each owned partition.
func (s snapshot) nexts() map[int32]int64 {
	out := make(map[int32]int64, len(s))
	for p, pos := range s {
		out[p] = pos.next
	}
	return out
}

// assign takes partitions over at the offsets, stream times and marks the view stores for them.
func (p *progress) assign(parts []int32, stored map[int32]view.PartitionState, marks map[int32]map[int32]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range parts {
		pos := p.parts[part]
		pos.next, pos.stream, pos.marks = stored[part].Next, stored[part].Stream, marks[part]
		p.parts[part] = pos
	}
}

// forget drops revoked or lost partitions.
func (p *progress) forget(parts []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, part := range parts {
		delete(p.parts, part)
	}
}

// advance makes the batch's offsets and source marks what the next fold expects of the view.
// Partitions no longer owned stay forgotten.
func (p *progress) advance(b *view.Batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, o := range b.Offsets {
		pos, owned := p.parts[part]
		if !owned {
			continue
		}
		pos.next = o.Next
		if st, ok := b.StreamAfter(part); ok {
			pos.stream = st
		}
		if srcs := b.Sources[part]; len(srcs) > 0 {
			marks := maps.Clone(pos.marks)
			if marks == nil {
				marks = make(map[int32]int64, len(srcs))
			}
			maps.Copy(marks, srcs)
			pos.marks = marks
		}
		p.parts[part] = pos
	}
}

// markDeadLettered lets later folds pass over recs: their dead letters are written.
func (p *progress) markDeadLettered(recs []*kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range recs {
		pos, owned := p.parts[r.Partition]
		if !owned || pos.skip[r.Offset] {
			continue
		}
		skip := maps.Clone(pos.skip)
		if skip == nil {
			skip = map[int64]bool{}
		}
		skip[r.Offset] = true
		pos.skip = skip
		p.parts[r.Partition] = pos
	}
}

// passed forgets the dead-lettered offsets an applied batch moved past: the view's offsets now
// pass over them.
func (p *progress) passed(b *view.Batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, o := range b.Offsets {
		pos, owned := p.parts[part]
		if !owned || len(pos.skip) == 0 {
			continue
		}
		pos.skip = maps.Clone(pos.skip)
		maps.DeleteFunc(pos.skip, func(off int64, _ bool) bool { return off < o.Next })
		p.parts[part] = pos
	}
}

// drift is a partition whose offset in the view is not the one this aggregator expected.
type drift struct {
	partition        int32
	expected, stored int64
}

// rebase points each owned partition of stored at the offset the view holds. A stored offset
// ahead of the expected one means another writer applied those records: later folds skip them.
// One behind, or gone, means the view lost data: rewind is true, and the partitions must be
// read again from the view's offsets (the start of the topic when none) so that the view is
// rebuilt exactly. reload names the owned partitions whose marks must be read from the view
// again before the next fold.
func (p *progress) rebase(expected, stored map[int32]int64) (reload []int32, drifts []drift, rewind bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, st := range stored {
		if pos, owned := p.parts[part]; owned {
			pos.next = st
			p.parts[part] = pos
			reload = append(reload, part)
		}
		if st == expected[part] {
			continue
		}
		drifts = append(drifts, drift{partition: part, expected: expected[part], stored: st})
		rewind = rewind || st < expected[part]
	}
	return reload, drifts, rewind
}

// reload sets the marks and stream times the view stores for partitions that rebase moved.
func (p *progress) reload(marks map[int32]map[int32]int64, states map[int32]view.PartitionState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for part, m := range marks {
		if pos, owned := p.parts[part]; owned {
			pos.marks = m
			p.parts[part] = pos
		}
	}
	for part, st := range states {
		if pos, owned := p.parts[part]; owned {
			pos.stream = st.Stream
			p.parts[part] = pos
		}
	}
}
