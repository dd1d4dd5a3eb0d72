package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/internal/apitest"
	"github.com/searchflow/searchflow/internal/kafkatest"
	"github.com/searchflow/searchflow/internal/redistest"
)

// daemon is one searchflow process started by a test.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	exited chan error
	base   string
}

func startDaemon(t *testing.T, bin string, env map[string]string) *daemon {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	d := &daemon{t: t, cmd: cmd, logs: &bytes.Buffer{}, exited: make(chan error, 1), base: "http://" + env["HTTP_ADDR"]}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return d
}

// waitServing waits until the API answers.
func (d *daemon) waitServing() {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.exited:
			d.t.Fatalf("searchflow exited early: %v\n%s", err, d.logs.String())
		default:
		}
		if resp, err := http.Get(d.base + "/healthz"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("searchflow did not serve within 60s\n%s", d.logs.String())
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
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

// TestCrashRecoveryExactlyOnce SIGKILLs the daemon at random moments while it generates, then
// lets it drain with the generator off. Every valid record of the raw topic must be counted
// exactly once in the API, and every invalid one must be in the dead-letter topic exactly once.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the daemon five times; skipped with -short")
	}
	bin := buildBinary(t)
	redis := redistest.Start(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	env := map[string]string{
		"KAFKA_BROKERS": "", "REDIS_ADDR": redis.Addr, "DATA_DIR": t.TempDir(),
		"EMBEDDED_KAFKA_ADDR": freeAddr(t), "HTTP_ADDR": freeAddr(t),
		"GENERATOR_RATE": "4000", "GENERATOR_USERS": "300", "GENERATOR_HOTELS": "40",
		"TOPIC_PARTITIONS": "3", "BATCH_MAX_RECORDS": "400", "LOG_LEVEL": "warn",
	}
	const kills = 4
	for round := 0; round < kills; round++ {
		env["GENERATOR_SEED"] = strconv.Itoa(round)
		d := startDaemon(t, bin, env)
		d.waitServing()
		injectBad(t, env["EMBEDDED_KAFKA_ADDR"], round)
		wait := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		time.Sleep(wait) // the random moment of the crash, not a synchronisation
		d.kill()
		t.Logf("round %d: SIGKILL after %v", round, wait)
	}

	env["STAGES"] = "transformer,aggregator,api"
	d := startDaemon(t, bin, env)
	d.waitServing()
	want := apitest.New()
	raw := kafkatest.ReadToEnd(t, env["EMBEDDED_KAFKA_ADDR"], "raw_events")
	for _, r := range raw {
		want.AddRaw(r.Value)
	}
	t.Logf("raw topic: %d records, %d valid, %d invalid", len(raw), want.Events, want.Invalid)
	if want.Events == 0 || want.Invalid != int64(kills*len(badRaw)) {
		t.Fatalf("raw topic holds %d valid and %d invalid records; want some valid and %d invalid",
			want.Events, want.Invalid, kills*len(badRaw))
	}
	// Every valid raw record reaches the processed topic and every invalid one the dead-letter
	// topic, each under its raw position. A copy is possible: the embedded broker writes a commit's
	// markers partition by partition, so a crash in the middle can leave one copy committed while
	// the raw offsets roll back. The aggregator drops such copies by their source position; the
	// counts below must still be exact.
	valid, invalid := map[string]bool{}, map[string]bool{}
	for _, r := range raw {
		pos := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
		if _, err := event.Transform(r.Value); err == nil {
			valid[pos] = true
		} else {
			invalid[pos] = true
		}
	}
	covered := func(topic string, want map[string]bool) {
		seen := map[string]bool{}
		recs := kafkatest.ReadUntil(t, env["EMBEDDED_KAFKA_ADDR"], topic, func(recs []*kgo.Record) bool {
			clear(seen)
			for _, r := range recs {
				seen[source(r)] = true
			}
			for pos := range want {
				if !seen[pos] {
					return false
				}
			}
			return true
		})
		for pos := range seen {
			if !want[pos] {
				t.Errorf("%s holds a record from raw position %s, which does not belong there", topic, pos)
			}
		}
		t.Logf("%s: %d records for %d raw records (%d copies)", topic, len(recs), len(want), len(recs)-len(want))
	}
	covered("processed_events", valid)
	covered("dead_letter_events", invalid)
	want.WaitEqual(t, d.base, 120*time.Second)

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
