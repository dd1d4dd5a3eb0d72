package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/stages/generator"
)

// CPU per event of the real binary (`make bench-cpu`): the generator fills the raw topic of a
// persisted embedded broker in a first process; a second process, with the transformer, the
// aggregator and the API against a real redis-server, drains it into Redis while its CPU time
// (and redis-server's) is read from /proc — from the moment its embedded broker has loaded the
// log to the moment the aggregator applied the last event. CPU time is far steadier than throughput on a shared
// machine; the median of BENCH_CPU_RUNS runs is reported.

// CPUResults is what bench-cpu-results.json holds.
type CPUResults struct {
	Events            int       `json:"events"`
	Runs              []CPURun  `json:"runs"`
	MedianProcessUS   float64   `json:"median_process_us_per_event"`
	MedianRedisUS     float64   `json:"median_redis_us_per_event"`
	MedianEventsPerS  float64   `json:"median_events_per_sec"`
	MedianRatio       float64   `json:"median_ratio_to_passthrough"`
	MedianPeakRSSMB   float64   `json:"median_peak_rss_mb"`
	GoVersion         string    `json:"go_version"`
	Date              time.Time `json:"date"`
	GeneratorUsers    int       `json:"generator_users"`
	GeneratorHotels   int       `json:"generator_hotels"`
	SearchflowVersion string    `json:"searchflow_commit,omitempty"`
}

// CPURun is one drain of the raw topic.
type CPURun struct {
	ProcessUS   float64 `json:"process_us_per_event"`
	RedisUS     float64 `json:"redis_us_per_event"`
	EventsPerS  float64 `json:"events_per_sec"`
	WallSeconds float64 `json:"wall_seconds"`
	// The two-hop passthrough on the same broker in the same run, and the drain's share of it.
	PassthroughPerS float64 `json:"passthrough_events_per_sec"`
	Ratio           float64 `json:"ratio_to_passthrough"`
	// The draining process's peak resident set (VmHWM), broker included.
	PeakRSSMB float64 `json:"peak_rss_mb"`
}

func runCPU(out string) error {
	events, err := envInt("BENCH_EVENTS", 300_000)
	if err != nil {
		return err
	}
	runs, err := envInt("BENCH_CPU_RUNS", 3)
	if err != nil {
		return err
	}
	users, err := envInt("BENCH_CPU_USERS", 10_000)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "searchflow-bench-cpu")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "searchflow")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build searchflow: %w", err)
	}
	res := CPUResults{Events: events, GoVersion: runtime.Version(), Date: time.Now().UTC(), GeneratorUsers: users, GeneratorHotels: 1000}
	if commit, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		res.SearchflowVersion = strings.TrimSpace(string(commit))
	}
	for i := 0; i < runs; i++ {
		r, err := cpuRun(bin, filepath.Join(tmp, fmt.Sprintf("run%d", i)), events, users, "")
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		fmt.Fprintf(os.Stderr, "bench: run %d: searchflow %.2f µs/event, redis-server %.2f µs/event, %.0f events/s (passthrough %.0f, ratio %.2f), peak RSS %.0f MB\n",
			i+1, r.ProcessUS, r.RedisUS, r.EventsPerS, r.PassthroughPerS, r.Ratio, r.PeakRSSMB)
		res.Runs = append(res.Runs, r)
	}
	median := func(get func(CPURun) float64) float64 {
		v := make([]float64, len(res.Runs))
		for i, r := range res.Runs {
			v[i] = get(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	res.MedianProcessUS = median(func(r CPURun) float64 { return r.ProcessUS })
	res.MedianRedisUS = median(func(r CPURun) float64 { return r.RedisUS })
	res.MedianEventsPerS = median(func(r CPURun) float64 { return r.EventsPerS })
	res.MedianRatio = median(func(r CPURun) float64 { return r.Ratio })
	res.MedianPeakRSSMB = median(func(r CPURun) float64 { return r.PeakRSSMB })
	fmt.Printf("searchflow CPU per event (real binary, %d events, %d users, median of %d runs)\n", events, users, runs)
	fmt.Printf("  searchflow process (transformer + aggregator + embedded broker + API): %.2f µs\n", res.MedianProcessUS)
	fmt.Printf("  redis-server:                                                          %.2f µs\n", res.MedianRedisUS)
	fmt.Printf("  throughput:                                                            %.0f events/s\n", res.MedianEventsPerS)
	fmt.Printf("  ratio to the two-hop passthrough of the same broker, same run:         %.2f\n", res.MedianRatio)
	fmt.Printf("  peak RSS of the searchflow process (embedded broker included):         %.0f MB\n", res.MedianPeakRSSMB)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if prof := os.Getenv("BENCH_CPU_PROFILE"); prof != "" {
		return profileRun(bin, filepath.Join(tmp, "profile"), events, users, prof)
	}
	return nil
}

// profileRun is one more drain, not counted in the figures (profiling costs CPU itself), with a
// CPU profile of the whole drain written to path and its top 15 functions printed.
func profileRun(bin, dataDir string, events, users int, path string) error {
	fmt.Fprintf(os.Stderr, "bench: profile run (not counted) -> %s\n", path)
	if _, err := cpuRun(bin, dataDir, events, users, path); err != nil {
		return fmt.Errorf("profile run: %w", err)
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", bin, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %v\n%s", err, top)
	}
	fmt.Printf("\nCPU profile of the drain (%s), top 15 by own time:\n%s", path, top)
	return nil
}

// fetchProfile asks the daemon's admin server for a CPU profile of the next secs seconds and
// writes it to path. The drain's tail, if it ends first, adds few samples: the daemon idles.
func fetchProfile(admin string, secs int, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuRun fills a fresh raw topic with events, then drains it and measures.
// With a non-empty profile path, the drain is also profiled into it.
func cpuRun(bin, dataDir string, events, users int, profile string) (CPURun, error) {
	env := []string{"GENERATOR_USERS=" + strconv.Itoa(users), "DATA_DIR=" + dataDir, "EMBEDDED_KAFKA_ADDR=127.0.0.1:0", "HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info",
		"GENERATOR_RATE=0", "GENERATOR_MAX_EVENTS=" + strconv.Itoa(events)}
	passthrough, err := fillRaw(bin, env, events)
	if err != nil {
		return CPURun{}, fmt.Errorf("fill the raw topic: %w", err)
	}
	r, err := drain(bin, env, events, profile)
	if err != nil {
		return CPURun{}, err
	}
	r.PassthroughPerS, r.Ratio = passthrough, r.EventsPerS/passthrough
	return r, nil
}

// fillRaw runs the generator alone until the raw topic holds events, then measures the two-hop
// passthrough on the same broker.
func fillRaw(bin string, env []string, events int) (passthrough float64, err error) {
	gen, err := startDaemon(bin, append(env, "STAGES=generator"))
	if err != nil {
		return 0, err
	}
	// "generator stopped" comes after its flush: every event is in the topic (a signal before
	// would cancel the records still buffered). Then the same broker carries the passthrough.
	brokerLine, err := gen.waitLog("embedded kafka broker started", time.Minute)
	if err == nil {
		_, err = gen.waitLog("generator stopped", 10*time.Minute)
	}
	if err == nil {
		passthrough, err = passthroughOn(brokerLine, events)
	}
	if stopErr := gen.stop(); err == nil {
		err = stopErr
	}
	return passthrough, err
}

// drain runs the transformer, both aggregators and the API on the filled topic against a real
// redis-server, and measures the CPU of both processes from the moment the broker has loaded its
// log to the last apply (profiling the drain into profile when it is set).
func drain(bin string, env []string, events int, profile string) (CPURun, error) {
	redis, err := redistest.Run()
	if err != nil {
		return CPURun{}, err
	}
	defer redis.Stop()
	drainEnv := append(env, "STAGES=transformer,aggregator,api", "REDIS_ADDR="+redis.Addr)
	admin := ""
	if profile != "" {
		if admin, err = freeAddr(); err != nil {
			return CPURun{}, err
		}
		drainEnv = append(drainEnv, "ADMIN_ADDR="+admin)
	}
	d, err := startDaemon(bin, drainEnv)
	if err != nil {
		return CPURun{}, err
	}
	defer func() { _ = d.stop() }()
	api, err := apiBase(d)
	if err != nil {
		return CPURun{}, err
	}
	// From here on the process works on the events: the embedded broker has loaded its log.
	if _, err := d.waitLog("embedded kafka broker started", time.Minute); err != nil {
		return CPURun{}, err
	}
	redisPid, err := serverPid(redis.Addr)
	if err != nil {
		return CPURun{}, err
	}
	pids := []int{d.cmd.Process.Pid, redisPid}
	cpu0, err := cpuOf(pids)
	if err != nil {
		return CPURun{}, err
	}
	start := time.Now()
	profiled := make(chan error, 1)
	if profile != "" {
		// The drain runs at 150,000–200,000 events/s here: cover it whole.
		go func() { profiled <- fetchProfile(admin, events/100_000+2, profile) }()
	}
	if err := waitApplied(api, int64(events), 10*time.Minute); err != nil {
		return CPURun{}, err
	}
	wall := time.Since(start)
	if profile != "" {
		if err := <-profiled; err != nil {
			return CPURun{}, fmt.Errorf("profile the drain: %w", err)
		}
	}
	cpu, err := cpuOf(pids)
	if err != nil {
		return CPURun{}, err
	}
	peak, err := peakRSS(d.cmd.Process.Pid)
	if err != nil {
		return CPURun{}, err
	}
	perEvent := func(i int) float64 { return (cpu[i] - cpu0[i]) / float64(events) * 1e6 }
	return CPURun{ProcessUS: perEvent(0), RedisUS: perEvent(1), EventsPerS: float64(events) / wall.Seconds(),
		WallSeconds: wall.Seconds(), PeakRSSMB: peak}, nil
}

// cpuOf reads the CPU seconds of each process.
func cpuOf(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		var err error
		if out[i], err = cpuSeconds(pid); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// passthroughOn measures the two-hop passthrough (produce, copy topic to topic, consume) on the
// embedded broker whose start brokerLine logged, with records of the generator's average size.
func passthroughOn(brokerLine string, events int) (float64, error) {
	var started struct{ Addr string }
	if err := json.Unmarshal([]byte(brokerLine), &started); err != nil || started.Addr == "" {
		return 0, fmt.Errorf("read the broker's address from %q: %v", brokerLine, err)
	}
	synth, size := generator.NewSynth(1, 10_000, 1000), 0
	for i := range int64(1000) {
		v, err := generator.Encode(synth.Event(i, time.Now()))
		if err != nil {
			return 0, err
		}
		size += len(v)
	}
	pb := &bench{ctx: context.Background(), log: zap.NewNop(), addr: started.Addr, partitions: 6, batch: 10_000}
	return pb.passthrough(int64(events), size/1000)
}

// daemon is one searchflow process whose log lines can be waited for.
type daemon struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func startDaemon(bin string, env []string) (*daemon, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	d := &daemon{cmd: cmd, lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case d.lines <- sc.Text():
			default: // nobody waits for this line
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		d.done <- cmd.Wait()
	}()
	return d, nil
}

// waitLog returns the first log line holding msg.
func (d *daemon) waitLog(msg string, within time.Duration) (string, error) {
	timeout := time.After(within)
	for {
		select {
		case line := <-d.lines:
			if strings.Contains(line, msg) {
				return line, nil
			}
		case err := <-d.done:
			d.done <- err
			return "", fmt.Errorf("searchflow exited (%v) before logging %q", err, msg)
		case <-timeout:
			return "", fmt.Errorf("searchflow did not log %q within %s", msg, within)
		}
	}
}

// stop sends SIGTERM and waits for the drain.
func (d *daemon) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(time.Minute):
		_ = d.cmd.Process.Kill()
		return errors.New("searchflow did not stop within a minute")
	}
}

// waitApplied polls /stats until the aggregator applied n events.
func waitApplied(base string, n int64, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		var st struct {
			Stages map[string]struct {
				Totals map[string]int64 `json:"totals"`
			} `json:"stages"`
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stats", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		// Both aggregators: every event is applied to a user shard and to a hotel shard.
		if err == nil && st.Stages["aggregator"].Totals[counters.Applied] >= n && st.Stages["aggregator-hotels"].Totals[counters.Applied] >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the aggregators did not apply %d events within %s", n, within)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// serverPid asks a redis-server for its process id.
func serverPid(addr string) (int, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		return 0, fmt.Errorf("connect redis %s: %w", addr, err)
	}
	defer c.Close()
	info, err := c.Do(context.Background(), c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return 0, fmt.Errorf("redis INFO: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("redis INFO has no process_id")
}

// peakRSS is a process's peak resident set in MB.
func peakRSS(pid int) (float64, error) { return procStatusMB(pid, "VmHWM") }

// procStatusMB reads one memory field of /proc/<pid>/status (given in kB there), in MB.
func procStatusMB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the memory of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %s %q: %w", pid, field, rest, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// cpuSeconds is a process's user and system CPU time so far, from /proc.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; the fields after it follow its closing ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	const ticksPerSecond = 100 // USER_HZ, 100 on Linux
	return (utime + stime) / ticksPerSecond, nil
}
