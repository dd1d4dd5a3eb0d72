package pipeline

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind. One is ignored: after a failed
// connect (the wrong-credential and outage tests) rueidis schedules its next dial in a goroutine
// that sleeps up to about a second and that no Close can stop; it ends by itself.
func TestMain(m *testing.M) {
	// rueidis: a closed cluster client can leave its topology refresh asleep for a few seconds.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}
