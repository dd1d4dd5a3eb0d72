// Package daemontest runs the searchflow binary as a test's child process: built once per test,
// started on loopback ports it is told, probed until it serves, killed or drained.
package daemontest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the searchflow binary (the module's main package) into a temp dir, without the
// race detector: tests that run several daemons need the CPU.
func Build(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "searchflow")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/searchflow/searchflow").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Daemon is one searchflow process started by a test.
type Daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan error
	// Base is the URL of the address the daemon was probed on: its API, or ADMIN_ADDR without one.
	Base string
}

// syncBuffer is the daemon's output, read by the test while the process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// errPortTaken is a daemon's exit because another process held one of its ports.
var errPortTaken = errors.New("a port was taken")

// Start runs the binary with env and returns once it serves. HTTP_ADDR (ADMIN_ADDR when STAGES
// has no api) and the variables in listen (e.g. EMBEDDED_KAFKA_ADDR) are listen addresses the
// test must know: one that env leaves empty gets a loopback port, and when the daemon exits
// because a port is taken they all get new ones and it starts again. env holds the addresses in
// use afterwards, so a restart with the same env reuses them.
func Start(t testing.TB, bin string, env map[string]string, listen ...string) *Daemon {
	t.Helper()
	listen = append([]string{probeVar(env)}, listen...)
	for attempt := 1; ; attempt++ {
		for _, k := range listen {
			if env[k] == "" {
				env[k] = net.JoinHostPort("127.0.0.1", strconv.Itoa(PickPort()))
			}
		}
		d := launch(t, bin, env)
		err := d.waitServing(env, listen)
		if err == nil {
			return d
		}
		if !errors.Is(err, errPortTaken) || attempt == 10 {
			t.Fatalf("%v\n%s", err, d.logs.String())
		}
		t.Logf("attempt %d: %v; trying other ports", attempt, err)
		for _, k := range listen {
			env[k] = ""
		}
	}
}

// Logs returns what the daemon wrote so far.
func (d *Daemon) Logs() string { return d.logs.String() }

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// probeVar is the variable of the address a daemon with env serves /healthz on.
func probeVar(env map[string]string) string {
	if stages := env["STAGES"]; stages != "" && !strings.Contains(stages, "api") {
		return "ADMIN_ADDR"
	}
	return "HTTP_ADDR"
}

// PickPort picks a port for the daemon below Linux's ephemeral range (32768 and up), where the
// kernel picks ports for port-0 listeners and outgoing connections: the binary must be told its
// ports, and it cannot be handed a listener. Another process may hold the port all the same; the
// daemon then exits saying so, and Start tries another.
func PickPort() int { return 20000 + rand.IntN(12000) }

func launch(t testing.TB, bin string, env map[string]string) *Daemon {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	d := &Daemon{t: t, cmd: cmd, logs: &syncBuffer{}, exited: make(chan error, 1), Base: "http://" + env[probeVar(env)]}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return d
}

// waitServing waits until the daemon holds the listen addresses of env named in listen and its API
// answers. It checks that the process listening is this daemon, so a test never talks to another
// process that held a port first.
func (d *Daemon) waitServing(env map[string]string, listen []string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.exited:
			d.exited <- err // for Kill and Terminate
			if strings.Contains(d.logs.String(), "address already in use") {
				return fmt.Errorf("searchflow exited: %w", errPortTaken)
			}
			return fmt.Errorf("searchflow exited early: %v", err)
		default:
		}
		owned := true
		for _, k := range listen {
			owned = owned && listensOn(d.cmd.Process.Pid, env[k])
		}
		if owned {
			if resp, err := http.Get(d.Base + "/healthz"); err == nil {
				resp.Body.Close()
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.Kill()
	return errors.New("searchflow did not serve within 60s")
}

// listensOn reports whether process pid holds a listening TCP socket on addr's port: its open
// files include the socket that /proc/net/tcp lists in state LISTEN (0A) on that port. Only Linux
// tells; elsewhere it reports true.
func listensOn(pid int, addr string) bool {
	if runtime.GOOS != "linux" {
		return true
	}
	_, port, _ := net.SplitHostPort(addr)
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		link, _ := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, _ := os.ReadFile(table)
		for _, line := range strings.Split(string(data), "\n") {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !sockets[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && strconv.FormatUint(p, 10) == port {
				return true
			}
		}
	}
	return false
}

// Kill sends SIGKILL and waits for the process to be gone.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	err := <-d.exited
	d.exited <- err
}

// Terminate sends SIGTERM and expects exit status 0.
func (d *Daemon) Terminate() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Fatalf("exit after SIGTERM: %v, want 0\n%s", err, d.logs.String())
		}
	case <-time.After(40 * time.Second):
		d.t.Fatalf("still running 40s after SIGTERM\n%s", d.logs.String())
	}
}
