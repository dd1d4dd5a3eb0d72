package generator

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind: the Run tests start kfake
// clusters and kgo clients, and every one of them must be closed. None needs ignoring: kgo's
// Close and kfake's Close stop all their goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
