package main

// The soak (-soak, `make soak`) runs the real binary for SOAK_SECONDS at SOAK_RATE events/s and
// samples, every SOAK_INTERVAL seconds, what a long run could let grow: the searchflow process's
// resident set, the embedded broker's DATA_DIR and the consumer lag. It answers one question:
// does a daemon left running on embedded defaults stay flat? With SOAK_MODE=external the broker
// (a second searchflow that only hosts the embedded broker) and Redis (a real redis-server) run
// outside the measured process, so what the measured process holds is searchflow's own.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/view"
)

// soakWarmup is when the process is taken to have warmed up: the RSS of the first sample at or
// after it is what the end of the run is compared with.
const soakWarmup = 60 * time.Second

// SoakResults is what soak-results.json holds.
type SoakResults struct {
	Date              time.Time         `json:"date"`
	GoVersion         string            `json:"go_version"`
	SearchflowVersion string            `json:"searchflow_commit,omitempty"`
	Mode              string            `json:"mode"`
	Rate              int               `json:"rate_events_per_sec"`
	Seconds           int               `json:"seconds"`
	IntervalSeconds   int               `json:"interval_seconds"`
	EmbeddedSettings  map[string]string `json:"embedded_settings"` // the EMBEDDED_* the broker ran with
	Samples           []SoakSample      `json:"samples"`
	Summary           *SoakSummary      `json:"summary,omitempty"`
	Error             string            `json:"error,omitempty"` // why the run ended early or did not stop cleanly
}

// SoakSample is one look at the running daemon.
type SoakSample struct {
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	RSSMB          float64 `json:"rss_mb"` // VmRSS of the measured searchflow process
	// LiveHeapMB is the measured process's live heap after its last GC (go_gc_heap_live_bytes):
	// with GOGC=400 under GOMEMLIMIT the resident set sits near the limit whatever is live.
	LiveHeapMB float64 `json:"live_heap_mb"`
	// External mode only: the searchflow process hosting the broker, and redis-server.
	BrokerRSSMB   float64          `json:"broker_rss_mb,omitempty"`
	RedisRSSMB    float64          `json:"redis_rss_mb,omitempty"`
	DataDirBytes  int64            `json:"data_dir_bytes"` // the broker's DATA_DIR, file sizes summed
	Generated     int64            `json:"generated"`
	AppliedUsers  int64            `json:"applied_users"`
	AppliedHotels int64            `json:"applied_hotels"`
	Lag           int64            `json:"lag"`
	LagByTopic    map[string]int64 `json:"lag_by_topic"`
}

// SoakSummary compares the end of the run with its warm-up.
type SoakSummary struct {
	RSSMB                Trend   `json:"rss_mb"`
	RSSChange            float64 `json:"rss_last_vs_warmup"` // (last - warm-up) / warm-up
	RSSFlat              bool    `json:"rss_within_20_percent_of_warmup"`
	LiveHeapMB           Trend   `json:"live_heap_mb"`
	BrokerRSSMB          *Trend  `json:"broker_rss_mb,omitempty"`
	RedisRSSMB           *Trend  `json:"redis_rss_mb,omitempty"`
	DataDirMB            Trend   `json:"data_dir_mb"`
	EventsGenerated      int64   `json:"events_generated"`
	DataDirBytesPerEvent float64 `json:"data_dir_bytes_per_event"`
}

// Trend is one figure over the run. Its warm-up value is the first sample's at or after
// soakWarmup, or the first sample's when the run is shorter (WarmupAtSeconds says which).
type Trend struct {
	First           float64 `json:"first"`
	Warmup          float64 `json:"warmup"`
	WarmupAtSeconds float64 `json:"warmup_at_seconds"`
	Last            float64 `json:"last"`
	Max             float64 `json:"max"`
}

type soakSettings struct {
	seconds, rate, interval int
	mode                    string
}

func readSoakSettings() (soakSettings, error) {
	var s soakSettings
	var errs []error
	for _, v := range []struct {
		name string
		def  int
		dst  *int
	}{
		{"SOAK_SECONDS", 600, &s.seconds}, {"SOAK_RATE", 20_000, &s.rate}, {"SOAK_INTERVAL", 30, &s.interval},
	} {
		n, err := envInt(v.name, v.def)
		*v.dst = n
		errs = append(errs, err)
	}
	s.mode = cmp.Or(os.Getenv("SOAK_MODE"), "embedded")
	if s.mode != "embedded" && s.mode != "external" {
		errs = append(errs, fmt.Errorf("SOAK_MODE: %q is neither embedded nor external", s.mode))
	}
	return s, errors.Join(errs...)
}

func runSoak(out string) error {
	set, err := readSoakSettings()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "searchflow-soak")
	if err != nil {
		return fmt.Errorf("soak: temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "searchflow")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build searchflow: %w", err)
	}
	res := SoakResults{Date: time.Now().UTC(), GoVersion: runtime.Version(), Mode: set.mode, Rate: set.rate,
		Seconds: set.seconds, IntervalSeconds: set.interval}
	if commit, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		res.SearchflowVersion = strings.TrimSpace(string(commit))
	}
	start := startEmbedded
	if set.mode == "external" {
		start = startExternal
	}
	fmt.Fprintf(os.Stderr, "bench: soak (%s) for %d s at %d events/s, a sample every %d s\n", set.mode, set.seconds, set.rate, set.interval)
	t, err := start(bin, tmp, set.rate)
	if err != nil {
		return errors.Join(err, t.stop())
	}
	res.EmbeddedSettings = embeddedSettings(t.kafkaAddr)
	samples, soakErr := t.soak(set)
	// The samples are taken before the stop: a drain is not what the soak measures.
	if err := errors.Join(soakErr, t.stop()); err != nil {
		res.Error = err.Error()
	}
	res.Samples = samples
	if len(samples) > 0 {
		sum := summarize(samples, set.mode == "external")
		res.Summary = &sum
		printSoakSummary(res)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", out)
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

// embeddedSettings are the EMBEDDED_* variables the broker's process runs with: config's
// defaults, those of the bench's own environment, which it inherits, and the broker's address,
// which the soak sets.
func embeddedSettings(kafkaAddr string) map[string]string {
	out := map[string]string{}
	for _, v := range config.Vars() {
		if strings.HasPrefix(v.Name, "EMBEDDED_") {
			out[v.Name] = v.Default
		}
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "EMBEDDED_") && v != "" {
			out[k] = v
		}
	}
	out["EMBEDDED_KAFKA_ADDR"] = kafkaAddr
	return out
}

// soakTarget is what the soak watches: the measured searchflow process and its API, the DATA_DIR
// holding the broker's log and, in external mode, the processes serving it Kafka and Redis.
type soakTarget struct {
	daemon    *daemon
	started   time.Time
	api       string // base URL of the measured process's API
	dataDir   string
	kafkaAddr string  // EMBEDDED_KAFKA_ADDR of the process hosting the broker
	broker    *daemon // external mode only
	redisPid  int     // external mode only
	undo      []func() error
}

// stop stops what was started, the last started first: the measured process drains while the
// broker and Redis still answer. It is safe to call twice.
func (t *soakTarget) stop() error {
	var errs []error
	for i := len(t.undo) - 1; i >= 0; i-- {
		errs = append(errs, t.undo[i]())
	}
	t.undo = nil
	return errors.Join(errs...)
}

func stopping(name string, d *daemon) func() error {
	return func() error {
		if err := d.stop(); err != nil {
			return fmt.Errorf("stop %s: %w", name, err)
		}
		return nil
	}
}

// startEmbedded starts one searchflow with every stage, the embedded broker and the embedded
// Redis-protocol store.
func startEmbedded(bin, tmp string, rate int) (*soakTarget, error) {
	t := &soakTarget{dataDir: filepath.Join(tmp, "data"), kafkaAddr: "127.0.0.1:0"}
	// Blank STAGES, KAFKA_BROKERS and REDIS_ADDR mean the defaults whatever the bench's own
	// environment holds: every stage, the embedded broker, the embedded store.
	d, err := startDaemon(bin, []string{"STAGES=", "KAFKA_BROKERS=", "REDIS_ADDR=", "DATA_DIR=" + t.dataDir,
		"EMBEDDED_KAFKA_ADDR=" + t.kafkaAddr, "HTTP_ADDR=127.0.0.1:0", "GENERATOR_RATE=" + strconv.Itoa(rate), "LOG_LEVEL=info"})
	if err != nil {
		return t, fmt.Errorf("start searchflow: %w", err)
	}
	t.daemon, t.started = d, time.Now()
	t.undo = append(t.undo, stopping("searchflow", d))
	t.api, err = apiBase(d)
	return t, err
}

// startExternal starts a redis-server, a searchflow that only hosts the embedded broker (and an
// API, the one stage that needs nothing but Redis), and the measured searchflow with every stage
// using both.
func startExternal(bin, tmp string, rate int) (*soakTarget, error) {
	t := &soakTarget{dataDir: filepath.Join(tmp, "broker-data")}
	redis, err := redistest.Run()
	if err != nil {
		return t, fmt.Errorf("start redis-server: %w", err)
	}
	t.undo = append(t.undo, func() error { redis.Stop(); return nil })
	if t.redisPid, err = serverPid(redis.Addr); err != nil {
		return t, err
	}
	if t.kafkaAddr, err = freeAddr(); err != nil {
		return t, fmt.Errorf("pick the broker's address: %w", err)
	}
	broker, err := startDaemon(bin, []string{"STAGES=" + config.StageAPI, "KAFKA_BROKERS=", "REDIS_ADDR=" + redis.Addr,
		"DATA_DIR=" + t.dataDir, "EMBEDDED_KAFKA_ADDR=" + t.kafkaAddr, "HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info"})
	if err != nil {
		return t, fmt.Errorf("start the broker's searchflow: %w", err)
	}
	t.broker = broker
	t.undo = append(t.undo, stopping("the broker's searchflow", broker))
	if _, err := broker.waitLog("embedded kafka broker started", time.Minute); err != nil {
		return t, fmt.Errorf("the broker's searchflow: %w", err)
	}
	d, err := startDaemon(bin, []string{"STAGES=", "KAFKA_BROKERS=" + t.kafkaAddr, "REDIS_ADDR=" + redis.Addr,
		"DATA_DIR=" + filepath.Join(tmp, "data"), "HTTP_ADDR=127.0.0.1:0", "GENERATOR_RATE=" + strconv.Itoa(rate), "LOG_LEVEL=info"})
	if err != nil {
		return t, fmt.Errorf("start the measured searchflow: %w", err)
	}
	t.daemon, t.started = d, time.Now()
	t.undo = append(t.undo, stopping("the measured searchflow", d))
	t.api, err = apiBase(d)
	return t, err
}

// apiBase reads the API's address from the daemon's "api server listening" line.
func apiBase(d *daemon) (string, error) {
	line, err := d.waitLog("api server listening", time.Minute)
	if err != nil {
		return "", err
	}
	var listening struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &listening); err != nil || listening.Addr == "" {
		return "", fmt.Errorf("read the API's address from %q: %v", line, err)
	}
	return "http://" + listening.Addr, nil
}

// soak samples every interval and once at the end, and stops early if a searchflow exits.
func (t *soakTarget) soak(set soakSettings) ([]SoakSample, error) {
	var samples []SoakSample
	total := time.Duration(set.seconds) * time.Second
	every := time.Duration(set.interval) * time.Second
	// A schedule from the start rather than a ticker: no drift, and no second sample when the
	// run's end falls on a tick.
	for at := every; ; at += every {
		at = min(at, total)
		if err := t.wait(t.started.Add(at)); err != nil {
			return samples, err
		}
		s, err := t.sample()
		if err != nil {
			return samples, fmt.Errorf("sample at %s: %w", at, err)
		}
		samples = append(samples, s)
		printSoakSample(s, t.broker != nil)
		if at == total {
			return samples, nil
		}
	}
}

// wait waits until at, or until a searchflow process of the target exits.
func (t *soakTarget) wait(at time.Time) error {
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	exited := func(name string, d *daemon, err error) error {
		d.done <- err // for stop
		return fmt.Errorf("%s exited during the soak: %w", name, cmp.Or(err, errors.New("exit status 0")))
	}
	var brokerDone chan error // nil, never ready, in embedded mode
	if t.broker != nil {
		brokerDone = t.broker.done
	}
	select {
	case <-timer.C:
		return nil
	case err := <-t.daemon.done:
		return exited("the measured searchflow", t.daemon, err)
	case err := <-brokerDone:
		return exited("the broker's searchflow", t.broker, err)
	}
}

// sample reads the processes' memory, the DATA_DIR's size and the daemon's /stats.
func (t *soakTarget) sample() (SoakSample, error) {
	s := SoakSample{ElapsedSeconds: math.Round(time.Since(t.started).Seconds()*1000) / 1000, LagByTopic: map[string]int64{}}
	var err error
	if s.RSSMB, err = currentRSS(t.daemon.cmd.Process.Pid); err != nil {
		return s, err
	}
	if t.broker != nil {
		if s.BrokerRSSMB, err = currentRSS(t.broker.cmd.Process.Pid); err != nil {
			return s, err
		}
		if s.RedisRSSMB, err = currentRSS(t.redisPid); err != nil {
			return s, err
		}
	}
	if s.DataDirBytes, err = dirSize(t.dataDir); err != nil {
		return s, err
	}
	if s.LiveHeapMB, err = liveHeap(t.api); err != nil {
		return s, err
	}
	st, err := fetchStats(t.api)
	if err != nil {
		return s, err
	}
	s.Generated = st.Stages[config.StageGenerator].Totals[counters.Produced]
	s.AppliedUsers = st.Stages[aggregator.StageName(view.UserShards)].Totals[counters.Applied]
	s.AppliedHotels = st.Stages[aggregator.StageName(view.HotelShards)].Totals[counters.Applied]
	for topic, parts := range st.Lag {
		for _, n := range parts {
			s.LagByTopic[topic] += n
			s.Lag += n
		}
	}
	return s, nil
}

// liveHeap reads go_gc_heap_live_bytes from the daemon's /metrics, in MB.
func liveHeap(base string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_heap_live_bytes "); ok {
			b, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("/metrics: go_gc_heap_live_bytes %q: %w", v, err)
			}
			return b / (1 << 20), nil
		}
	}
	return 0, fmt.Errorf("/metrics: no go_gc_heap_live_bytes (%v)", sc.Err())
}

// fetchStats reads the daemon's /stats document.
func fetchStats(base string) (httpapi.Stats, error) {
	var st httpapi.Stats
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stats", nil)
	if err != nil {
		return st, fmt.Errorf("GET /stats: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("GET /stats: decode: %w", err)
	}
	return st, nil
}

// currentRSS is a process's resident set now, in MB.
func currentRSS(pid int) (float64, error) { return procStatusMB(pid, "VmRSS") }

// dirSize sums the sizes of the files under dir; a file the broker removes meanwhile, or a dir
// not made yet, counts as nothing.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return total, nil
}

func summarize(samples []SoakSample, external bool) SoakSummary {
	const mb = 1 << 20
	last := samples[len(samples)-1]
	sum := SoakSummary{
		RSSMB:           trendOf(samples, func(s SoakSample) float64 { return s.RSSMB }),
		LiveHeapMB:      trendOf(samples, func(s SoakSample) float64 { return s.LiveHeapMB }),
		DataDirMB:       trendOf(samples, func(s SoakSample) float64 { return float64(s.DataDirBytes) / mb }),
		EventsGenerated: last.Generated,
	}
	if w := sum.RSSMB.Warmup; w > 0 {
		sum.RSSChange = (sum.RSSMB.Last - w) / w
		sum.RSSFlat = math.Abs(sum.RSSChange) <= 0.20
	}
	if last.Generated > 0 {
		sum.DataDirBytesPerEvent = float64(last.DataDirBytes) / float64(last.Generated)
	}
	if external {
		broker := trendOf(samples, func(s SoakSample) float64 { return s.BrokerRSSMB })
		redis := trendOf(samples, func(s SoakSample) float64 { return s.RedisRSSMB })
		sum.BrokerRSSMB, sum.RedisRSSMB = &broker, &redis
	}
	return sum
}

func trendOf(samples []SoakSample, get func(SoakSample) float64) Trend {
	t := Trend{First: get(samples[0]), Last: get(samples[len(samples)-1])}
	t.Warmup, t.WarmupAtSeconds = t.First, samples[0].ElapsedSeconds
	for _, s := range samples {
		if s.ElapsedSeconds >= soakWarmup.Seconds() {
			t.Warmup, t.WarmupAtSeconds = get(s), s.ElapsedSeconds
			break
		}
	}
	for _, s := range samples {
		t.Max = max(t.Max, get(s))
	}
	return t
}

func printSoakSample(s SoakSample, external bool) {
	line := fmt.Sprintf("soak %6.0f s  rss %7.1f MB  live heap %6.1f MB  data_dir %8.1f MB  generated %10d  applied %10d users %10d hotels  lag %8d",
		s.ElapsedSeconds, s.RSSMB, s.LiveHeapMB, float64(s.DataDirBytes)/(1<<20), s.Generated, s.AppliedUsers, s.AppliedHotels, s.Lag)
	if external {
		line += fmt.Sprintf("  broker rss %7.1f MB  redis rss %7.1f MB", s.BrokerRSSMB, s.RedisRSSMB)
	}
	fmt.Println(line)
}

func printSoakSummary(res SoakResults) {
	sum := res.Summary
	last := res.Samples[len(res.Samples)-1]
	fmt.Printf("searchflow soak (%s mode, %d events/s, %d s, a sample every %d s)\n", res.Mode, res.Rate, res.Seconds, res.IntervalSeconds)
	warm := fmt.Sprintf("at %.0f s", sum.RSSMB.WarmupAtSeconds)
	if sum.RSSMB.WarmupAtSeconds < soakWarmup.Seconds() {
		warm = fmt.Sprintf("no sample at or after %.0f s: the first, at %.0f s", soakWarmup.Seconds(), sum.RSSMB.WarmupAtSeconds)
	}
	verdict := "no"
	if sum.RSSFlat {
		verdict = "yes"
	}
	fmt.Printf("  searchflow RSS:   warm-up %.1f MB (%s), last %.1f MB, max %.1f MB; last %+.1f %% from warm-up, within ±20 %%: %s\n",
		sum.RSSMB.Warmup, warm, sum.RSSMB.Last, sum.RSSMB.Max, 100*sum.RSSChange, verdict)
	fmt.Printf("  live heap:        warm-up %.1f MB, last %.1f MB, max %.1f MB\n", sum.LiveHeapMB.Warmup, sum.LiveHeapMB.Last, sum.LiveHeapMB.Max)
	if sum.BrokerRSSMB != nil {
		fmt.Printf("  broker's RSS:     warm-up %.1f MB, last %.1f MB, max %.1f MB\n", sum.BrokerRSSMB.Warmup, sum.BrokerRSSMB.Last, sum.BrokerRSSMB.Max)
		fmt.Printf("  redis-server RSS: warm-up %.1f MB, last %.1f MB, max %.1f MB\n", sum.RedisRSSMB.Warmup, sum.RedisRSSMB.Last, sum.RedisRSSMB.Max)
	}
	fmt.Printf("  DATA_DIR:         first %.1f MB, last %.1f MB, max %.1f MB\n", sum.DataDirMB.First, sum.DataDirMB.Last, sum.DataDirMB.Max)
	fmt.Printf("  events generated: %d (applied %d users, %d hotels; lag %d at the end)\n",
		sum.EventsGenerated, last.AppliedUsers, last.AppliedHotels, last.Lag)
	fmt.Printf("  DATA_DIR bytes per generated event at the end: %.1f\n", sum.DataDirBytesPerEvent)
	settings := make([]string, 0, len(res.EmbeddedSettings))
	for k, v := range res.EmbeddedSettings {
		settings = append(settings, k+"="+v)
	}
	slices.Sort(settings)
	fmt.Printf("  the broker's settings: %s\n", strings.Join(settings, " "))
}
