package main

import (
	"bytes"
	"errors"
	"flag"
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

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/eventref"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// daemon is one searchflow process started by a test.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan error
	base   string
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

// startDaemon runs the binary with env and returns once it serves. HTTP_ADDR and the variables in
// listen (e.g. EMBEDDED_KAFKA_ADDR) are listen addresses the test must know: one that env leaves
// empty gets a loopback port, and when the daemon exits because a port is taken they all get new
// ones and it starts again. env holds the addresses in use afterwards, so a restart with the same
// env reuses them.
func startDaemon(t *testing.T, bin string, env map[string]string, listen ...string) *daemon {
	t.Helper()
	listen = append([]string{"HTTP_ADDR"}, listen...)
	for attempt := 1; ; attempt++ {
		for _, k := range listen {
			if env[k] == "" {
				env[k] = net.JoinHostPort("127.0.0.1", strconv.Itoa(pickPort()))
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

// pickPort picks a port for the daemon below Linux's ephemeral range (32768 and up), where the
// kernel picks ports for port-0 listeners and outgoing connections: the binary must be told its
// ports, and it cannot be handed a listener. Another process may hold the port all the same; the
// daemon then exits saying so, and startDaemon tries another.
func pickPort() int { return 20000 + rand.IntN(12000) }

func launch(t *testing.T, bin string, env map[string]string) *daemon {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	d := &daemon{t: t, cmd: cmd, logs: &syncBuffer{}, exited: make(chan error, 1), base: "http://" + env["HTTP_ADDR"]}
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
func (d *daemon) waitServing(env map[string]string, listen []string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.exited:
			d.exited <- err // for kill and terminate
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
			if resp, err := http.Get(d.base + "/healthz"); err == nil {
				resp.Body.Close()
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.kill()
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

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	err := <-d.exited
	d.exited <- err
}

// terminate sends SIGTERM and expects exit status 0.
func (d *daemon) terminate() {
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

// badRaw are invalid raw records the test slips into the raw topic between generated ones.
var badRaw = []string{`not json`, `{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{}}`,
	`{"user_id":"u","hotel_id":1,"search_timestamp":1,"hotel_advertisers":{"a":[{"eurocents":-1}]}}`}

func injectBad(t *testing.T, kafkaAddr string, round int) {
	recs := make([]*kgo.Record, 0, len(badRaw))
	for i, v := range badRaw {
		recs = append(recs, &kgo.Record{Topic: "raw_events", Key: []byte(fmt.Sprintf("bad-%d-%d", round, i)), Value: []byte(v)})
	}
	kafkatest.Produce(t, kafkaAddr, recs...)
}

// crashSeed replays a run of TestCrashRecoveryExactlyOnce, e.g.
// go test -run '^TestCrashRecoveryExactlyOnce$' -seed=N . (or SEARCHFLOW_CRASH_SEED=N).
var crashSeed = flag.Uint64("seed", 0, "TestCrashRecoveryExactlyOnce: the seed of the crash moments, as a run logged it (0: a new one; SEARCHFLOW_CRASH_SEED sets it too)")

// crashTestSeed is the -seed flag, else SEARCHFLOW_CRASH_SEED, else a new seed. The test logs it,
// and again when it fails, so that the failure can be replayed.
func crashTestSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *crashSeed
	if v := os.Getenv("SEARCHFLOW_CRASH_SEED"); seed == 0 && v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SEARCHFLOW_CRASH_SEED=%q: %v", v, err)
		}
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("random seed %d (replay with -seed=%d or SEARCHFLOW_CRASH_SEED=%d)", seed, seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay this run: go test -run '^TestCrashRecoveryExactlyOnce$' -seed=%d .", seed)
		}
	})
	return seed
}

// TestCrashRecoveryExactlyOnce SIGKILLs the daemon at random moments while it generates, then
// lets it drain with the generator off. Every valid record of the raw topic must be counted
// exactly once in the API — when it first equals the truth and again once nothing is left to read
// — and every raw record must be in the processed or the dead-letter topic, at least once (the
// embedded broker can repeat one, see below). The seed fixes the crash moments; the scheduling of
// the processes is not fixed, so a replay retries the same moments, not the same interleaving.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the daemon five times; skipped with -short")
	}
	seed := crashTestSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	bin := buildBinary(t)
	redis := redistest.Start(t)
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": redis.Addr, "DATA_DIR": t.TempDir(),
		"GENERATOR_RATE": "4000", "GENERATOR_USERS": "300", "GENERATOR_HOTELS": "40",
		"TOPIC_PARTITIONS": "3", "BATCH_MAX_RECORDS": "400", "LOG_LEVEL": "warn",
	}
	const kills = 4
	for round := 0; round < kills; round++ {
		env["GENERATOR_SEED"] = strconv.Itoa(round)
		d := startDaemon(t, bin, env, "EMBEDDED_KAFKA_ADDR")
		injectBad(t, env["EMBEDDED_KAFKA_ADDR"], round)
		wait := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		time.Sleep(wait) // the random moment of the crash, not a synchronisation
		d.kill()
		t.Logf("round %d: SIGKILL after %v", round, wait)
	}

	env["STAGES"] = "transformer,aggregator,api"
	d := startDaemon(t, bin, env, "EMBEDDED_KAFKA_ADDR")
	kafka := env["EMBEDDED_KAFKA_ADDR"]
	want := apitest.New()
	raw := kafkatest.ReadToEnd(t, kafka, "raw_events")
	for _, r := range raw {
		want.AddRaw(r.Value)
	}
	t.Logf("raw topic: %d records, %d valid, %d invalid", len(raw), want.Events, want.Invalid)
	if want.Events == 0 || want.Invalid != int64(kills*len(badRaw)) {
		t.Fatalf("raw topic holds %d valid and %d invalid records; want some valid and %d invalid",
			want.Events, want.Invalid, kills*len(badRaw))
	}
	want.WaitEqual(t, d.base, 120*time.Second)

	// Every valid raw record reaches the processed topic and every invalid one the dead-letter
	// topic, each under its raw position. A copy is possible: the embedded broker writes a commit's
	// markers partition by partition, so a crash in the middle can leave one copy committed while
	// the raw offsets roll back. The aggregator drops such copies by their source position; the
	// counts above are exact all the same. Both topics are read to their ends now that nothing is
	// left to read, so a record that does not belong there cannot go unseen.
	valid, invalid := map[string]bool{}, map[string]bool{}
	for _, r := range raw {
		pos := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
		if _, err := eventref.Transform(r.Value); err == nil {
			valid[pos] = true
		} else {
			invalid[pos] = true
		}
	}
	covered := func(topic string, want map[string]bool) {
		recs := kafkatest.ReadCommittedToEnd(t, kafka, topic)
		seen := map[string]bool{}
		for _, r := range recs {
			seen[source(r)] = true
			if !want[source(r)] {
				t.Errorf("%s holds a record from raw position %s, which does not belong there", topic, source(r))
			}
		}
		for pos := range want {
			if !seen[pos] {
				t.Errorf("%s holds no record from raw position %s", topic, pos)
			}
		}
		t.Logf("%s: %d records for %d raw records (%d copies)", topic, len(recs), len(want), len(recs)-len(seen))
	}
	covered("processed_events", valid)
	covered("dead_letter_events", invalid)

	d.terminate()
}

// source is the raw position a processed or dead-lettered record names in its headers.
func source(r *kgo.Record) string {
	var part, off string
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderSourcePartition:
			part = string(h.Value)
		case event.HeaderSourceOffset:
			off = string(h.Value)
		}
	}
	return part + "/" + off
}
