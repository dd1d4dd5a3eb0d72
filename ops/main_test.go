package ops

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A closed rueidis cluster client can leave its topology refresh asleep for a few seconds
	// before it notices the close.
	// So can its singleflight of a refresh (DelayDo), as pipeline's and transport's tests know.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}
