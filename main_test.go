package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestSIGTERMDrainsAndExitsZero runs the binary on embedded defaults, waits until it is ready and
// generating, then sends SIGTERM and expects exit status 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	bin := buildBinary(t)
	httpAddr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS=", "REDIS_ADDR=", "DATA_DIR="+t.TempDir(),
		"EMBEDDED_KAFKA_ADDR="+freeAddr(t), "HTTP_ADDR="+httpAddr, "GENERATOR_RATE=2000", "LOG_LEVEL=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/users?limit=1")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && !strings.Contains(body.String(), `"count":0`) {
				break // events are flowing end to end
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("searchflow exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no aggregated events within 60s\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0\n%s", err, logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("still running 40s after SIGTERM\n%s", logs.String())
	}
}
