package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/kafkatest"
)

// buildBinary compiles searchflow once per test into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "searchflow")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestBadConfigExitsTwo(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TOPIC_PARTITIONS=zero", "LOG_FORMAT=xml")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2", err)
	}
	for _, want := range []string{"TOPIC_PARTITIONS", "LOG_FORMAT", "accepts"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not mention %s:\n%s", want, stderr.String())
		}
	}
}

// TestSIGTERMDrainsAndRebuildsEmbedded runs the binary on fully embedded defaults, sends SIGTERM
// while events flow and expects exit 0. It then restarts on the same DATA_DIR with the generator
// off: the embedded store starts empty, so the aggregator must rebuild the view from the persisted
// topic — and the result must equal the fold of the raw topic exactly (nothing lost by the drain,
// nothing counted twice by the rebuild).
func TestSIGTERMDrainsAndRebuildsEmbedded(t *testing.T) {
	bin := buildBinary(t)
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": t.TempDir(), "EMBEDDED_KAFKA_ADDR": freeAddr(t),
		"HTTP_ADDR": freeAddr(t), "GENERATOR_RATE": "3000", "GENERATOR_USERS": "200", "LOG_LEVEL": "warn",
		"TOPIC_PARTITIONS": "3",
	}
	d := startDaemon(t, bin, env)
	d.waitServing()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var body struct{ Count int }
		if resp, err := http.Get(d.base + "/users?limit=1"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
		}
		if body.Count > 0 {
			break // events flow end to end
		}
		if time.Now().After(deadline) {
			t.Fatalf("no aggregated events within 60s\n%s", d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.terminate()

	env["STAGES"] = "transformer,aggregator,api"
	d = startDaemon(t, bin, env)
	d.waitServing()
	want := apitest.New()
	for _, r := range kafkatest.ReadToEnd(t, env["EMBEDDED_KAFKA_ADDR"], "raw_events") {
		want.AddRaw(r.Value)
	}
	if want.Events == 0 {
		t.Fatal("the raw topic is empty after the first run")
	}
	want.WaitEqual(t, d.base, 90*time.Second)
	d.terminate()
}
