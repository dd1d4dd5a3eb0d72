package transport

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind: the tests start kfake clusters,
// kgo clients and rueidis clients, and every one of them must be closed. One is ignored: after a
// failed connect rueidis schedules its next dial in a goroutine that sleeps (up to about a second)
// and that no Close can stop; it ends by itself.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}
