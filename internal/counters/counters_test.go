package counters

import (
	"reflect"
	"sync"
	"testing"
)

func TestSet(t *testing.T) {
	var s Set
	a, b := s.New(Consumed), s.New("aborted_batches")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				a.Add(1)
				s.DeadLetter("not_json", 1)
			}
		}()
	}
	wg.Wait()
	b.Add(2)
	if got, want := s.Counts(), []Count{{Consumed, 8000}, {"aborted_batches", 2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	if got := s.Map(); got[Consumed] != 8000 || got["aborted_batches"] != 2 {
		t.Errorf("map %v", got)
	}
	if got := s.DeadLetters(); !reflect.DeepEqual(got, map[string]int64{"not_json": 8000}) {
		t.Errorf("dead letters %v", got)
	}
}
