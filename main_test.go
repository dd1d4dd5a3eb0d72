package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/daemontest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/porttest"
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
		"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": t.TempDir(), "GENERATOR_RATE": "3000",
		"GENERATOR_USERS": "200", "LOG_LEVEL": "warn", "TOPIC_PARTITIONS": "3",
	}
	d := daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var body struct{ Count int }
		if resp, err := http.Get(d.Base + "/users?limit=1"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
		}
		if body.Count > 0 {
			break // events flow end to end
		}
		if time.Now().After(deadline) {
			t.Fatalf("no aggregated events within 60s\n%s", d.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.Terminate()

	env["STAGES"] = "transformer,aggregator,api"
	d = daemontest.Start(t, bin, env, "EMBEDDED_KAFKA_ADDR")
	want := apitest.New()
	for _, r := range kafkatest.ReadToEnd(t, env["EMBEDDED_KAFKA_ADDR"], "raw_events") {
		want.AddRaw(r.Value)
	}
	if want.Events == 0 {
		t.Fatal("the raw topic is empty after the first run")
	}
	want.WaitEqual(t, d.Base, 90*time.Second)
	d.Terminate()
}

// runHealthcheck runs `searchflow healthcheck args...` with env over the test's environment and
// returns its exit status, its stderr and how long it took.
func runHealthcheck(t *testing.T, bin string, env map[string]string, args ...string) (int, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"healthcheck"}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String(), took
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), stderr.String(), took
	default:
		t.Fatalf("searchflow healthcheck %v: %v\n%s", args, err, stderr.String())
		return 0, "", 0
	}
}

// expectHealthcheckFails runs the healthcheck and wants exit 1 with one line on stderr that
// mentions every string in want.
func expectHealthcheckFails(t *testing.T, bin string, env map[string]string, args []string, want ...string) time.Duration {
	t.Helper()
	code, stderr, took := runHealthcheck(t, bin, env, args...)
	if code != 1 {
		t.Errorf("healthcheck %v: exit %d, want 1 (stderr %q)", args, code, stderr)
	}
	if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
		t.Errorf("healthcheck %v: stderr is %d lines, want one line saying why:\n%s", args, len(lines), stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("healthcheck %v: stderr does not mention %q: %q", args, w, stderr)
		}
	}
	return took
}

// TestHealthcheck runs `searchflow healthcheck` against a real daemon on embedded defaults, then
// against addresses where nothing healthy answers. The daemon requires API tokens: the probe
// sends none, and /healthz and /readyz must not ask for one.
func TestHealthcheck(t *testing.T) {
	bin := buildBinary(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("healthcheck-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": t.TempDir(), "EMBEDDED_KAFKA_ADDR": "127.0.0.1:0",
		"API_TOKENS_FILE": tokens, "GENERATOR_RATE": "100", "LOG_LEVEL": "warn",
	}
	d := daemontest.Start(t, bin, env)
	addr := env["HTTP_ADDR"]
	_, httpPort, _ := net.SplitHostPort(addr)
	resp, err := http.Get(d.Base + "/users")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		// Not a failure of the healthcheck; the pipeline may not hand the tokens to the API yet.
		t.Logf("GET /users without a token answers %s, not 401: API_TOKENS_FILE is not enforced, so this run does not show the probe needs no token", resp.Status)
	}

	t.Run("healthy daemon", func(t *testing.T) {
		// The daemon listens on 127.0.0.1; wildcard listen addresses must be probed there too.
		for _, httpAddr := range []string{addr, ":" + httpPort, "0.0.0.0:" + httpPort} {
			env := maps.Clone(env)
			env["HTTP_ADDR"] = httpAddr
			if code, stderr, _ := runHealthcheck(t, bin, env); code != 0 {
				t.Errorf("HTTP_ADDR=%s: healthcheck exit %d, want 0\n%s", httpAddr, code, stderr)
			}
		}
	})

	t.Run("ready daemon", func(t *testing.T) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, stderr, _ := runHealthcheck(t, bin, env, "-ready")
			if code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("healthcheck -ready still exits %d after 60s: %s\n%s", code, stderr, d.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		env := maps.Clone(env)
		env["HTTP_ADDR"] = porttest.Refusing(t)
		took := expectHealthcheckFails(t, bin, env, nil, "http://"+env["HTTP_ADDR"]+"/healthz")
		if took >= healthcheckTimeout {
			t.Errorf("a refused connection took %s to report; want well under the %s timeout", took, healthcheckTimeout)
		}
	})

	d.Terminate()
}

// TestHealthcheckFailures covers the answers a daemon can give short of 200, and settings the
// healthcheck cannot probe: each exits 1 (Docker reserves 2) with the reason on one line.
func TestHealthcheckFailures(t *testing.T) {
	bin := buildBinary(t)
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "{\"status\":\"not ready\",\n\"problems\":{\"redis\":\"down\"}}\n")
	}))
	t.Cleanup(notReady.Close)
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers nothing until the client gives up
	}))
	t.Cleanup(hung.Close)
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	t.Run("-ready checks /readyz", func(t *testing.T) {
		env := map[string]string{"HTTP_ADDR": host(notReady)}
		if code, stderr, _ := runHealthcheck(t, bin, env); code != 0 {
			t.Errorf("healthcheck against a live /healthz: exit %d, want 0\n%s", code, stderr)
		}
		expectHealthcheckFails(t, bin, env, []string{"-ready"}, "/readyz", "503", "redis")
	})

	t.Run("a worker without the api stage is probed on ADMIN_ADDR", func(t *testing.T) {
		env := map[string]string{"STAGES": "transformer,aggregator", "HTTP_ADDR": "127.0.0.1:1", "ADMIN_ADDR": host(notReady)}
		if code, stderr, _ := runHealthcheck(t, bin, env); code != 0 {
			t.Errorf("healthcheck of a worker: exit %d, want 0\n%s", code, stderr)
		}
	})

	t.Run("a hung API times out", func(t *testing.T) {
		took := expectHealthcheckFails(t, bin, map[string]string{"HTTP_ADDR": host(hung)}, nil, "/healthz")
		if took < healthcheckTimeout || took > healthcheckTimeout+5*time.Second {
			t.Errorf("took %s; want about the %s timeout", took, healthcheckTimeout)
		}
	})

	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"invalid configuration", map[string]string{"HTTP_ADDR": "nowhere", "LOG_FORMAT": "xml"}, nil, "HTTP_ADDR"},
		{"port 0", map[string]string{"HTTP_ADDR": "127.0.0.1:0"}, nil, "port 0"},
		{"no api stage and no admin server", map[string]string{"STAGES": "transformer", "HTTP_ADDR": host(notReady)}, nil, "ADMIN_ADDR"},
		{"unknown flag", map[string]string{"HTTP_ADDR": host(notReady)}, []string{"-live"}, "-live"},
		{"extra argument", map[string]string{"HTTP_ADDR": host(notReady)}, []string{"now"}, "now"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			expectHealthcheckFails(t, bin, tt.env, tt.args, tt.want)
		})
	}
}

func TestHealthcheckProbeAddr(t *testing.T) {
	for _, tt := range []struct{ listen, want string }{
		{":5000", "127.0.0.1:5000"},
		{"0.0.0.0:5000", "127.0.0.1:5000"},
		{"[::]:5000", "[::1]:5000"},
		{"127.0.0.1:5000", "127.0.0.1:5000"},
		{"[::1]:5000", "[::1]:5000"},
		{"10.1.2.3:5000", "10.1.2.3:5000"},
		{"searchflow:5000", "searchflow:5000"},
		{"localhost:5000", "localhost:5000"},
	} {
		got, err := probeAddr("HTTP_ADDR", tt.listen)
		if err != nil || got != tt.want {
			t.Errorf("probeAddr(%q) = %q, %v; want %q", tt.listen, got, err, tt.want)
		}
	}
}

// TestUnknownCommandExitsTwo: a mistyped subcommand (here in a container's healthcheck) must not
// start a second daemon.
func TestUnknownCommandExitsTwo(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "healtcheck")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "healtcheck") || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("stderr does not name the argument and the usage:\n%s", stderr.String())
	}
}

// TestStartDaemonSkipsATakenPort: another process holds the daemon's HTTP port and answers
// /healthz. startDaemon must not take it for the daemon: the daemon exits saying the address is
// in use, and it starts again on another port.
func TestStartDaemonSkipsATakenPort(t *testing.T) {
	bin := buildBinary(t)
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	t.Cleanup(impostor.Close)
	taken := strings.TrimPrefix(impostor.URL, "http://")
	env := map[string]string{"KAFKA_BROKERS": "", "REDIS_ADDR": "", "DATA_DIR": t.TempDir(), "HTTP_ADDR": taken,
		"EMBEDDED_KAFKA_ADDR": "127.0.0.1:0", "STAGES": "api", "LOG_LEVEL": "warn"}
	d := daemontest.Start(t, bin, env)
	if env["HTTP_ADDR"] == taken {
		t.Fatalf("the daemon is taken to serve on %s, which another process holds", taken)
	}
	d.Terminate()
}

// TestDefaultGC: the daemon's GC defaults apply only where GOGC and GOMEMLIMIT leave them to it.
func TestDefaultGC(t *testing.T) {
	percent, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(percent); debug.SetMemoryLimit(limit) })
	defaultGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, defaultGCPercent)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != defaultMemoryLimit {
		t.Errorf("GOMEMLIMIT unset: memory limit %d, want %d", got, defaultMemoryLimit)
	}
	set := map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}
	defaultGC(func(k string) string { return set[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent changed to %d", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT set: memory limit changed to %d", got)
	}
}
