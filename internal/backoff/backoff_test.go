package backoff

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestBackoffDoublesUpToMax(t *testing.T) {
	b := Policy{First: time.Millisecond, Max: 5 * time.Millisecond}.New()
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	b.Reset()
	if b.Next() != time.Millisecond {
		t.Error("Reset must start over")
	}
}

func TestRetry(t *testing.T) {
	calls, failures := 0, 0
	err := Policy{First: time.Microsecond, Max: time.Microsecond}.Retry(context.Background(), func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}, func(int, error, time.Duration) { failures++ })
	if err != nil || calls != 3 || failures != 2 {
		t.Errorf("err %v after %d calls and %d failures", err, calls, failures)
	}

	ctx, cancel := context.WithCancel(context.Background())
	boom := errors.New("boom")
	err = Policy{First: time.Hour, Max: time.Hour}.Retry(ctx, func() error { cancel(); return boom }, nil)
	if !errors.Is(err, boom) {
		t.Errorf("a retry whose context ends must return the last error, got %v", err)
	}
}

func TestRetryStopsAtAPermanentError(t *testing.T) {
	cause := errors.New("wrong layout")
	calls := 0
	err := Policy{First: time.Hour, Max: time.Hour}.Retry(context.Background(), func() error {
		calls++
		return fmt.Errorf("claim: %w", Permanent(cause))
	}, nil)
	if calls != 1 || !errors.Is(err, cause) || err.Error() != "claim: wrong layout" {
		t.Errorf("calls %d, err %v: want one call and the error as fn returned it", calls, err)
	}
}
