package ops

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A closed rueidis cluster client can leave its topology refresh asleep for a few seconds
	// before it notices the close.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}
