package aggregator

import (
	"reflect"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/view"
)

// owning returns a progress that owns partitions at the given next offsets.
func owning(next map[int32]int64) *progress {
	p := newProgress()
	parts := make([]int32, 0, len(next))
	for part := range next {
		parts = append(parts, part)
	}
	p.assign(parts, states(next), nil)
	return p
}

func TestProgressRebase(t *testing.T) {
	tests := []struct {
		name            string
		owned           map[int32]int64 // what progress held before
		expected        map[int32]int64 // what the batch expected; nil: owned
		stored          map[int32]int64 // what the view holds
		next            map[int32]int64 // what progress holds after
		reload, drifted []int32
		rewind          bool
	}{
		{
			name:   "the view holds what was expected",
			owned:  map[int32]int64{0: 10},
			stored: map[int32]int64{0: 10},
			next:   map[int32]int64{0: 10},
			reload: []int32{0},
		},
		{
			name:    "ahead: another writer applied the records, move on",
			owned:   map[int32]int64{0: 10, 1: 4},
			stored:  map[int32]int64{0: 25},
			next:    map[int32]int64{0: 25, 1: 4},
			reload:  []int32{0},
			drifted: []int32{0},
		},
		{
			name:    "behind: the view lost its last writes, rewind",
			owned:   map[int32]int64{0: 10},
			stored:  map[int32]int64{0: 6},
			next:    map[int32]int64{0: 6},
			reload:  []int32{0},
			drifted: []int32{0},
			rewind:  true,
		},
		{
			name:    "gone: the view lost everything, rewind",
			owned:   map[int32]int64{0: 10},
			stored:  map[int32]int64{0: view.NoOffset},
			next:    map[int32]int64{0: view.NoOffset},
			reload:  []int32{0},
			drifted: []int32{0},
			rewind:  true,
		},
		{
			name:    "one partition ahead and one behind: rewind",
			owned:   map[int32]int64{0: 10, 1: 10},
			stored:  map[int32]int64{0: 12, 1: 8},
			next:    map[int32]int64{0: 12, 1: 8},
			reload:  []int32{0, 1},
			drifted: []int32{0, 1},
			rewind:  true,
		},
		{
			name:     "a partition revoked meanwhile is neither revived nor reloaded",
			owned:    map[int32]int64{0: 10},
			expected: map[int32]int64{0: 10, 3: 39},
			stored:   map[int32]int64{0: 10, 3: 40},
			next:     map[int32]int64{0: 10},
			reload:   []int32{0},
			drifted:  []int32{3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := owning(tt.owned)
			expected := tt.expected
			if expected == nil {
				expected = tt.owned
			}
			reload, drifts, rewind := p.rebase(expected, tt.stored)
			var drifted []int32
			for _, d := range drifts {
				drifted = append(drifted, d.partition)
				if d.stored != tt.stored[d.partition] || d.expected != expected[d.partition] {
					t.Errorf("drift %+v", d)
				}
			}
			slices.Sort(reload)
			slices.Sort(drifted)
			if !slices.Equal(reload, tt.reload) || !slices.Equal(drifted, tt.drifted) || rewind != tt.rewind {
				t.Errorf("reload %v drifted %v rewind %v, want %v %v %v", reload, drifted, rewind, tt.reload, tt.drifted, tt.rewind)
			}
			if got := p.snapshot().nexts(); !reflect.DeepEqual(got, tt.next) {
				t.Errorf("next offsets %v, want %v", got, tt.next)
			}
		})
	}
}

func TestProgressReloadMarks(t *testing.T) {
	p := owning(map[int32]int64{0: 10})
	p.reload(map[int32]map[int32]int64{0: {2: 77}, 1: {2: 5}}, nil)
	s := p.snapshot()
	if !s.isCopy(raw(0, 10, nil, 2, 77)) || s.isCopy(raw(0, 10, nil, 2, 78)) {
		t.Errorf("marks after reload %v, want raw partition 2 up to 77", s[0].marks)
	}
	if _, owned := s[1]; owned {
		t.Error("reloading marks took a partition over")
	}
}

func TestProgressAdvance(t *testing.T) {
	p := newProgress()
	p.assign([]int32{0, 1}, states(map[int32]int64{0: 10, 1: view.NoOffset}), map[int32]map[int32]int64{0: {0: 100, 1: 7}})
	before := p.snapshot()
	b := view.NewBatch()
	b.Offsets[0] = view.PartitionOffsets{Expect: 10, Next: 15}
	b.Offsets[1] = view.PartitionOffsets{Expect: view.NoOffset, Next: 3}
	b.Offsets[2] = view.PartitionOffsets{Expect: 0, Next: 9} // not ours (any more)
	b.Sources[0] = map[int32]int64{0: 104}
	b.Sources[1] = map[int32]int64{5: 1}
	p.advance(b)

	after := p.snapshot()
	if got, want := after.nexts(), map[int32]int64{0: 15, 1: 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("next offsets %v, want %v", got, want)
	}
	if got, want := after[0].marks, map[int32]int64{0: 104, 1: 7}; !reflect.DeepEqual(got, want) {
		t.Errorf("marks of partition 0 %v, want %v (raised, and the untouched one kept)", got, want)
	}
	if got, want := after[1].marks, map[int32]int64{5: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("marks of partition 1 %v, want %v", got, want)
	}
	// A snapshot is a fold's view of the progress: advancing must not change one already taken.
	if before[0].next != 10 || before[0].marks[0] != 100 || before[1].marks != nil {
		t.Errorf("an earlier snapshot changed: %+v", before)
	}
}

func TestProgressDeadLettered(t *testing.T) {
	p := owning(map[int32]int64{0: 0})
	p.markDeadLettered([]*kgo.Record{raw(0, 3, nil), raw(0, 5, nil), raw(7, 1, nil)})
	marked := p.snapshot()
	if !marked[0].skip[3] || !marked[0].skip[5] {
		t.Fatalf("dead-lettered offsets %v, want 3 and 5", marked[0].skip)
	}
	if _, owned := marked[7]; owned {
		t.Error("a dead letter of a partition not owned took it over")
	}
	run := []*kgo.Record{raw(0, 2, nil), raw(0, 3, nil), raw(0, 4, nil), raw(0, 5, nil)}
	if got := offsetsOf(marked.outstanding(run)); !slices.Equal(got, []int64{2, 4}) {
		t.Errorf("outstanding %v, want 2 and 4", got)
	}

	// A batch that moved the view past offset 3 lets it go; 5 stays until one moves past it.
	b := view.NewBatch()
	b.Offsets[0] = view.PartitionOffsets{Expect: 0, Next: 4}
	p.advance(b)
	p.passed(b)
	after := p.snapshot()
	if after[0].skip[3] || !after[0].skip[5] {
		t.Errorf("dead-lettered offsets after the batch %v, want only 5", after[0].skip)
	}
	if !marked[0].skip[3] {
		t.Error("an earlier snapshot changed")
	}
	if got := offsetsOf(after.outstanding(run)); !slices.Equal(got, []int64{4}) {
		t.Errorf("outstanding %v, want 4 only: 2 and 3 are held, 5 is dead-lettered", got)
	}
}

// TestProgressForgetsRevokedPartition: once a partition is revoked, nothing of it is expected:
// folds leave its records alone and a batch in flight does not bring it back.
func TestProgressForgetsRevokedPartition(t *testing.T) {
	p := newProgress()
	p.assign([]int32{0, 1}, states(map[int32]int64{0: 0, 1: 0}), map[int32]map[int32]int64{1: {0: 9}})
	b := view.NewBatch()
	b.Offsets[1] = view.PartitionOffsets{Expect: 0, Next: 5} // folded before the revocation
	p.forget([]int32{1})
	p.advance(b)
	p.markDeadLettered([]*kgo.Record{raw(1, 6, nil)})

	s := p.snapshot()
	if _, owned := s[1]; owned {
		t.Fatalf("partition 1 is still known: %+v", s[1])
	}
	f := fold([]*kgo.Record{rec(t, 1, 5, "u", "h", map[string]int64{"a": 1})}, s, bounds{}, view.HotelShards, view.TrendSpec{})
	if !f.batch.Empty() || f.events != 0 {
		t.Errorf("a fold took a record of a revoked partition: %+v", f.batch.Offsets)
	}

	// Assigned again, it starts from what the view stores, with no stale marks.
	p.assign([]int32{1}, states(map[int32]int64{1: 5}), nil)
	if pos := p.snapshot()[1]; pos.next != 5 || pos.marks != nil || pos.skip != nil {
		t.Errorf("reassigned partition %+v, want next 5 and nothing else", pos)
	}
}

func offsetsOf(recs []*kgo.Record) []int64 {
	var out []int64
	for _, r := range recs {
		out = append(out, r.Offset)
	}
	return out
}

// states makes stored partition states of next offsets, without stream times.
func states(next map[int32]int64) map[int32]view.PartitionState {
	out := make(map[int32]view.PartitionState, len(next))
	for p, n := range next {
		out[p] = view.PartitionState{Next: n}
	}
	return out
}
