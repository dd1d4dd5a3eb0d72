package scaleout_test

import (
	"os"
	"os/exec"
	"testing"
)

// verify runs `searchflow verify` against the services of env: it must find every shard of the
// view equal to the fold of the topics at the offsets the view records (exit 0).
func verify(t *testing.T, bin string, env map[string]string) {
	t.Helper()
	cmd := exec.Command(bin, "verify")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("searchflow verify: %v\n%s", err, out)
		return
	}
	t.Logf("searchflow verify:\n%s", out)
}
