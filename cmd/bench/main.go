// Command bench measures searchflow end to end against the broker's own ceiling, in one run:
// a two-hop passthrough through the same in-process kfake broker with records of the same size
// (the baseline), the transformer alone, the aggregator alone, both together (end to end), and the
// latency from generation to visibility in Redis at a fixed rate. It prints a table and writes
// bench-results.json. Run it with `make bench`; see README "Performance".
//
// With -cpu it measures the CPU time per event of the real binary draining a filled raw topic
// into a real redis-server, median of BENCH_CPU_RUNS runs (`make bench-cpu`).
//
// With -api it measures the HTTP API instead (`make bench-api`): it fills a real redis-server
// with BENCH_API_USERS users (default 1,000,000), serves the API in process and drives
// /advertisers and /users?limit=100 with BENCH_API_CONNECTIONS connections (default 64) — with wrk when it is installed, else with
// a Go load generator — and writes bench-api-results.json.
//
// With -soak it runs the real binary for SOAK_SECONDS (default 600) with the generator at
// SOAK_RATE events/s (default 20,000) and samples, every SOAK_INTERVAL seconds (default 30), the
// process's RSS, the size of the embedded broker's DATA_DIR and the lag (`make soak`);
// SOAK_MODE=external runs the broker and Redis outside the measured process. It writes
// soak-results.json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/internal/counters"
	"github.com/searchflow/searchflow/internal/redistest"
	"github.com/searchflow/searchflow/pipeline"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/stages/generator"
	"github.com/searchflow/searchflow/stages/transformer"
	"github.com/searchflow/searchflow/view"
)

// Results is what bench-results.json holds.
type Results struct {
	Events                  int64   `json:"events"`
	Users                   int     `json:"users"`
	Skew                    float64 `json:"skew"`
	Partitions              int     `json:"partitions"`
	RecordBytes             int     `json:"record_bytes"`
	E2EEventsPerSec         float64 `json:"e2e_events_per_sec"`
	PassthroughEventsPerSec float64 `json:"passthrough_events_per_sec"`
	Ratio                   float64 `json:"ratio"`
	TransformerEventsPerSec float64 `json:"transformer_events_per_sec"`
	AggregatorEventsPerSec  float64 `json:"aggregator_events_per_sec"`
	GeneratorEventsPerSec   float64 `json:"generator_events_per_sec"`
	LatencyRate             int     `json:"latency_rate_events_per_sec"`
	LatencyEvents           int     `json:"latency_events"`
	LatencyP50Ms            float64 `json:"latency_p50_ms"`
	LatencyP99Ms            float64 `json:"latency_p99_ms"`
	LatencyMaxMs            float64 `json:"latency_max_ms"`
	PeakRSSMB               float64 `json:"peak_rss_mb"`
	// The sharded view: the cost per event of each phase, and the aggregators alone on a local
	// 3-master Redis Cluster (the same processed topics folded again).
	TransformerCost PartCost `json:"transformer_cost"`
	AggregatorCost  PartCost `json:"aggregator_cost"`
	E2ECost         PartCost `json:"e2e_cost"`
	// The same end to end without trend windows, and what the default windows (1h, 24h) cost:
	// the drop in events/s, and the extra CPU per event.
	E2ENoTrendsEventsPerSec float64  `json:"e2e_no_trends_events_per_sec"`
	E2ENoTrendsCost         PartCost `json:"e2e_no_trends_cost"`
	TrendsSlowdownPct       float64  `json:"trends_slowdown_pct"`
	// The latency run again without trend windows, right after the one with them.
	LatencyNoTrendsP50Ms float64 `json:"latency_no_trends_p50_ms"`
	LatencyNoTrendsP99Ms float64 `json:"latency_no_trends_p99_ms"`
	// The user aggregator's apply of one batch during each latency run (the script and its round
	// trip): what an event waits for about twice.
	ApplyP50Ms                    float64  `json:"apply_p50_ms"`
	ApplyNoTrendsP50Ms            float64  `json:"apply_no_trends_p50_ms"`
	Shards                        int      `json:"shards"`
	ClusterAggregatorEventsPerSec float64  `json:"cluster_aggregator_events_per_sec"`
	ClusterAggregatorCost         PartCost `json:"cluster_aggregator_cost"`
	GoVersion                     string   `json:"go_version"`
	CPUs                          int      `json:"cpus"`
	Date                          string   `json:"date"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", name, v)
	}
	return n, nil
}

type bench struct {
	ctx        context.Context
	log        *zap.Logger
	addr       string
	redis      rueidis.Client
	partitions int
	batch      int
	noTrends   bool    // the phase's stages keep no trend windows (TREND_WINDOWS left out)
	skew       float64 // the generator's popularity skew (BENCH_SKEW)
}

func run() error {
	out := flag.String("out", "bench-results.json", "where to write the results")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the profiled phase (or of the whole -api run) here")
	profilePhase := flag.String("profile-phase", "e2e", "phase the CPU profile covers: transformer, aggregator or e2e")
	api := flag.Bool("api", false, "benchmark the HTTP API instead (make bench-api)")
	cpu := flag.Bool("cpu", false, "measure the real binary's CPU per event instead (make bench-cpu)")
	soak := flag.Bool("soak", false, "run the real binary for SOAK_SECONDS and sample its memory and DATA_DIR instead (make soak)")
	flag.Parse()
	switch {
	case *soak:
		return runSoak(*out)
	case *cpu:
		return runCPU(*out)
	case *api:
		stop, err := startProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
		return runAPI(*out)
	}
	set, err := readSettings()
	if err != nil {
		return err
	}
	b, cleanup, err := setUp(set.partitions)
	if err != nil {
		return err
	}
	defer cleanup()
	profile := func(phase string) (func(), error) {
		if *profilePhase != phase {
			return func() {}, nil
		}
		return startProfile(*cpuProfile)
	}
	res, err := b.measure(set, profile)
	if err != nil {
		return err
	}
	printTable(res)
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(*out, append(js, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", *out)
	return nil
}

// startProfile starts a CPU profile written to path ("" for none) and returns its stop.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// settings are the BENCH_* variables of the end-to-end benchmark.
type settings struct {
	events, users, latRate, latSecs, partitions int
	skew                                        float64 // BENCH_SKEW: the generator's GENERATOR_SKEW (0: uniform users and hotels)
}

func readSettings() (settings, error) {
	var s settings
	var errs []error
	for _, v := range []struct {
		name string
		def  int
		dst  *int
	}{
		{"BENCH_EVENTS", 1_000_000, &s.events}, {"BENCH_USERS", 1_000_000, &s.users},
		{"BENCH_LATENCY_RATE", 50_000, &s.latRate}, {"BENCH_LATENCY_SECONDS", 10, &s.latSecs},
		{"BENCH_PARTITIONS", 6, &s.partitions},
	} {
		n, err := envInt(v.name, v.def)
		*v.dst = n
		errs = append(errs, err)
	}
	if v := os.Getenv("BENCH_SKEW"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 3 {
			errs = append(errs, fmt.Errorf("BENCH_SKEW=%q: want a number 0..3", v))
		}
		s.skew = f
	}
	return s, errors.Join(errs...)
}

// setUp starts the persisted in-process broker and reaches Redis (REDIS_ADDR, or a redis-server of
// its own); cleanup stops them.
func setUp(partitions int) (*bench, func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	dir, err := os.MkdirTemp("", "searchflow-bench-")
	if err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(filepath.Join(dir, "kafka")))
	if err != nil {
		return nil, cleanup, fmt.Errorf("start kfake: %w", err)
	}
	undo = append(undo, cluster.Close)
	redisAddr := os.Getenv("REDIS_ADDR")
	if redisAddr == "" {
		srv, err := redistest.Run()
		if err != nil {
			return nil, cleanup, err
		}
		undo = append(undo, srv.Stop)
		redisAddr = srv.Addr
	}
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}})
	if err != nil {
		return nil, cleanup, fmt.Errorf("connect redis %s: %w", redisAddr, err)
	}
	undo = append(undo, rc.Close)
	b := &bench{ctx: context.Background(), log: zap.NewNop(), addr: cluster.ListenAddrs()[0], redis: rc,
		partitions: partitions, batch: 10_000}
	return b, cleanup, b.flush()
}

// measure runs the phases in order: generate, passthrough, transformer alone, aggregator alone,
// end to end, latency. profile starts the CPU profile of a phase when it is the profiled one.
func (b *bench) measure(set settings, profile func(phase string) (func(), error)) (Results, error) {
	n := int64(set.events)
	res := Results{Events: n, Users: set.users, Skew: set.skew, Partitions: set.partitions, GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), Date: time.Now().UTC().Format(time.RFC3339), LatencyRate: set.latRate}
	step := func(name string) { fmt.Fprintf(os.Stderr, "bench: %s...\n", name) }
	var err error
	step(fmt.Sprintf("generating %d raw events (%d users)", n, set.users))
	b.skew = set.skew
	if res.GeneratorEventsPerSec, res.RecordBytes, err = b.generate("raw", n, set.users, 0); err != nil {
		return res, err
	}
	step("passthrough baseline (produce, copy topic to topic, consume)")
	if res.PassthroughEventsPerSec, err = b.passthrough(n, res.RecordBytes); err != nil {
		return res, err
	}
	phase := func(name, label, raw, processed string, withT, withA bool, cost *PartCost) (float64, error) {
		step(label)
		stop, err := profile(name)
		if err != nil {
			return 0, err
		}
		defer stop()
		meter, err := startCost(b.ctx, b.redis)
		if err != nil {
			return 0, err
		}
		rate, err := b.stages(name, raw, processed, n, withT, withA, b.redis, nil)
		if err == nil {
			*cost, err = meter.per(n)
		}
		return rate, err
	}
	res.Shards = 2 * set.partitions
	if res.TransformerEventsPerSec, err = phase("transformer", "transformer alone", "raw", "processed_solo", true, false, &res.TransformerCost); err != nil {
		return res, err
	}
	if res.AggregatorEventsPerSec, err = phase("aggregator", "aggregators alone (sharded view, one Redis)", "", "processed_solo", false, true, &res.AggregatorCost); err != nil {
		return res, err
	}
	step("aggregators alone on a local 3-master Redis Cluster")
	if res.ClusterAggregatorEventsPerSec, res.ClusterAggregatorCost, err = b.clusterPhase(n); err != nil {
		return res, err
	}
	if err := b.flush(); err != nil {
		return res, err
	}
	runtime.GC()
	resetPeakRSS()
	if res.E2EEventsPerSec, err = phase("e2e", "end to end (transformer + aggregator)", "raw", "processed_e2e", true, true, &res.E2ECost); err != nil {
		return res, err
	}
	res.PeakRSSMB = peakRSSMB()
	res.Ratio = res.E2EEventsPerSec / res.PassthroughEventsPerSec
	if err := b.flush(); err != nil {
		return res, err
	}
	b.noTrends = true
	res.E2ENoTrendsEventsPerSec, err = phase("e2e_no_trends", "end to end without trend windows", "raw", "processed_plain", true, true, &res.E2ENoTrendsCost)
	b.noTrends = false
	if err != nil {
		return res, err
	}
	res.TrendsSlowdownPct = 100 * (1 - res.E2EEventsPerSec/res.E2ENoTrendsEventsPerSec)
	step(fmt.Sprintf("latency at %d events/s for %d s, with and without trend windows", set.latRate, set.latSecs))
	return res, b.measureLatency(set, &res)
}

// measureLatency runs the latency phase twice on an emptied Redis, with the trend windows and
// without, and records both in res.
func (b *bench) measureLatency(set settings, res *Results) error {
	for _, plain := range []bool{false, true} {
		if err := b.flush(); err != nil {
			return err
		}
		name := "lat"
		if plain {
			name = "lat_plain"
		}
		b.noTrends = plain
		lat, applies, err := b.latency(name, set.latRate, set.latSecs, set.users)
		b.noTrends = false
		if err != nil {
			return err
		}
		if plain {
			res.LatencyNoTrendsP50Ms, res.LatencyNoTrendsP99Ms = percentile(lat, 0.50), percentile(lat, 0.99)
			res.ApplyNoTrendsP50Ms = percentile(applies, 0.50)
			continue
		}
		res.LatencyEvents = len(lat)
		res.LatencyP50Ms, res.LatencyP99Ms, res.LatencyMaxMs = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1)
		res.ApplyP50Ms = percentile(applies, 0.50)
	}
	return nil
}

func (b *bench) flush() error {
	return b.redis.Do(b.ctx, b.redis.B().Flushall().Build()).Error()
}

func (b *bench) createTopics(topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(b.ctx, int32(b.partitions), -1, nil, topics...)
	if err != nil {
		return err
	}
	for _, t := range resp {
		if t.Err != nil && !strings.Contains(t.Err.Error(), "TOPIC_ALREADY_EXISTS") {
			return fmt.Errorf("create %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// generate produces n synthetic raw events with the generator stage and returns its rate and
// the average record size.
func (b *bench) generate(topic string, n int64, users, rate int) (float64, int, error) {
	if err := b.createTopics(topic); err != nil {
		return 0, 0, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	g := generator.New(generator.Config{Topic: topic, Rate: rate, MaxEvents: n, Seed: 1, Users: users, Hotels: 1000, Skew: b.skew}, cl, b.log)
	start := time.Now()
	if err := g.Run(b.ctx); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	s := generator.NewSynth(1, users, 1000)
	total := 0
	for i := int64(0); i < 1000; i++ {
		v, _ := generator.Encode(s.Event(i, time.Now()))
		total += len(v)
	}
	return float64(n) / elapsed.Seconds(), total / 1000, nil
}

// passthrough is the baseline: n records of size bytes are produced to a topic, then timed: a
// group consumer copies them to a second topic through a producer, and a consumer reads that.
func (b *bench) passthrough(n int64, size int) (float64, error) {
	if err := b.createTopics("pt_in", "pt_out"); err != nil {
		return 0, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return 0, err
	}
	value := []byte(strings.Repeat("x", size))
	var failed atomic.Value
	for i := int64(0); i < n; i++ {
		prod.Produce(b.ctx, &kgo.Record{Topic: "pt_in", Key: []byte(strconv.FormatInt(i%100_000, 10)), Value: value},
			func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Store(err)
				}
			})
	}
	if err := prod.Flush(b.ctx); err != nil {
		return 0, err
	}
	prod.Close()
	if err, _ := failed.Load().(error); err != nil {
		return 0, err
	}

	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	start := time.Now()
	copyErr := make(chan error, 1)
	go func() { copyErr <- copyTopic(ctx, b.addr, "pt_in", "pt_out", b.batch) }()
	cons, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ConsumeTopics("pt_out"), kgo.ConsumerGroup("pt-reader"))
	if err != nil {
		return 0, err
	}
	defer cons.Close()
	var got int64
	for got < n {
		fs := cons.PollRecords(ctx, b.batch)
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return 0, fmt.Errorf("passthrough read: %w", err)
		}
		got += int64(fs.NumRecords())
		select {
		case err := <-copyErr:
			if err != nil {
				return 0, fmt.Errorf("passthrough copy: %w", err)
			}
		default:
		}
	}
	elapsed := time.Since(start)
	cancel()
	return float64(n) / elapsed.Seconds(), nil
}

// copyTopic is the passthrough's middle hop: consume in a group, produce as is, commit.
func copyTopic(ctx context.Context, addr, from, to string, batch int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(from), kgo.ConsumerGroup("pt-copier"),
		kgo.DisableAutoCommit(), kgo.ProducerLinger(2*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollRecords(ctx, batch)
		if ctx.Err() != nil {
			return nil
		}
		var failed atomic.Value
		fs.EachRecord(func(r *kgo.Record) {
			cl.Produce(ctx, &kgo.Record{Topic: to, Key: r.Key, Value: r.Value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Store(err)
				}
			})
		})
		if err := cl.Flush(ctx); err != nil {
			return nil
		}
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// stages runs the transformer and/or the aggregator until n events went through and returns the
// rate. Each run uses its own consumer groups.
// The view goes to rc.
func (b *bench) stages(name, raw, processed string, n int64, withT, withA bool, rc rueidis.Client, onApplied func([]*kgo.Record, time.Time, time.Duration)) (float64, error) {
	if err := b.createTopics(processed, processed+"_by_hotel", "dlq_"+name); err != nil {
		return 0, err
	}
	cfg, err := b.config(name, raw, processed)
	if err != nil {
		return 0, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(b.addr)}
	ctx, cancel := context.WithCancel(b.ctx)
	errs := make(chan error, 2)
	running := 0
	// Every stage of the phase has returned before the next phase starts (and before latency
	// reads what onApplied collected).
	defer func() {
		cancel()
		for ; running > 0; running-- {
			<-errs
		}
	}()
	var t *transformer.Transformer
	var aggs []*aggregator.Aggregator
	start := time.Now()
	if withT {
		t = transformer.New(pipeline.TransformerConfig(cfg), opts, b.log)
		running++
		go func() { errs <- t.Run(ctx) }()
	}
	if withA {
		v := view.New(rc)
		layout := view.Layout{UsersTopic: cfg.ProcessedTopic, Users: b.partitions, HotelsTopic: cfg.HotelTopic, Hotels: b.partitions,
			Trends: pipeline.TrendSpec(cfg).String()}
		if err := v.Claim(ctx, layout); err != nil {
			return 0, err
		}
		for _, role := range []view.Role{view.UserShards, view.HotelShards} {
			ac := pipeline.AggregatorConfig(cfg, role)
			if role == view.UserShards {
				ac.OnApplied = onApplied
			}
			a := aggregator.New(ac, opts, v, b.log)
			aggs = append(aggs, a)
			running++
			go func() { errs <- a.Run(ctx) }()
		}
	}
	done := func() bool {
		if withA {
			for _, a := range aggs {
				if a.Counters().Map()[counters.Applied] < n {
					return false
				}
			}
			return true
		}
		return t.Counters().Map()[counters.Produced] >= n
	}
	for !done() {
		select {
		case err := <-errs:
			running--
			return 0, fmt.Errorf("%s: stage stopped: %v", name, err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			return 0, fmt.Errorf("%s: not done after 10 minutes", name)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// config is the daemon's configuration for one phase: its topics and consumer groups, every
// other setting at its default, so the stages run as the daemon runs them.
func (b *bench) config(name, raw, processed string) (config.Config, error) {
	if raw == "" {
		raw = "unused_raw"
	}
	env := map[string]string{"KAFKA_BROKERS": b.addr, "REDIS_ADDR": "127.0.0.1:1", "RAW_TOPIC": raw,
		"PROCESSED_TOPIC": processed, "HOTEL_TOPIC": processed + "_by_hotel", "DEAD_LETTER_TOPIC": "dlq_" + name, "CONSUMER_GROUP": "bench-" + name,
		"BATCH_MAX_RECORDS": strconv.Itoa(b.batch)}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		return cfg, fmt.Errorf("bench: configuration of %s: %w", name, err)
	}
	if b.noTrends {
		cfg.TrendWindows = nil
	}
	return cfg, nil
}

// latency runs generator, transformer and aggregator together at a fixed rate and returns, for
// every event after the first second, the time from its production to its apply in Redis, and
// the user aggregator's apply time of each batch; its topics are named after name.
func (b *bench) latency(name string, rate, secs, users int) (lat, applies []time.Duration, err error) {
	n := int64(rate * secs)
	raw := "raw_" + name
	if err := b.createTopics(raw); err != nil {
		return nil, nil, err
	}
	warmup := time.Now().Add(time.Second)
	onApplied := func(recs []*kgo.Record, at time.Time, took time.Duration) {
		applies = append(applies, took)
		for _, r := range recs {
			if r.Timestamp.After(warmup) {
				lat = append(lat, at.Sub(r.Timestamp))
			}
		}
	}
	genErr := make(chan error, 1)
	go func() {
		_, _, err := b.generate(raw, n, users, rate)
		genErr <- err
	}()
	if _, err := b.stages(name, raw, "processed_"+name, n, true, true, b.redis, onApplied); err != nil {
		return nil, nil, err
	}
	if err := <-genErr; err != nil {
		return nil, nil, err
	}
	return lat, applies, nil
}

func percentile(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}

// resetPeakRSS clears the kernel's high-water mark of this process's RSS (Linux).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0o200) }

// peakRSSMB reads the high-water mark of this process's RSS (VmHWM, Linux).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func printTable(r Results) {
	fmt.Printf("searchflow benchmark  %s  %s  %d CPUs\n", r.Date, r.GoVersion, r.CPUs)
	fmt.Printf("%d events, %d users (skew %.2g), %d partitions, raw record %d B\n\n", r.Events, r.Users, r.Skew, r.Partitions, r.RecordBytes)
	fmt.Printf("%-44s %14s\n", "measure", "value")
	row := func(name, v string) { fmt.Printf("%-44s %14s\n", name, v) }
	row("passthrough baseline (events/s)", fmt.Sprintf("%.0f", r.PassthroughEventsPerSec))
	row("end to end: transformer+aggregator (ev/s)", fmt.Sprintf("%.0f", r.E2EEventsPerSec))
	row("ratio e2e / passthrough", fmt.Sprintf("%.2f", r.Ratio))
	row("transformer alone (events/s)", fmt.Sprintf("%.0f", r.TransformerEventsPerSec))
	row("aggregator alone (events/s)", fmt.Sprintf("%.0f", r.AggregatorEventsPerSec))
	row("generator (events/s)", fmt.Sprintf("%.0f", r.GeneratorEventsPerSec))
	row(fmt.Sprintf("latency p50 at %d ev/s (ms)", r.LatencyRate), fmt.Sprintf("%.1f", r.LatencyP50Ms))
	row(fmt.Sprintf("latency p99 at %d ev/s (ms)", r.LatencyRate), fmt.Sprintf("%.1f", r.LatencyP99Ms))
	row("latency without trend windows p50 / p99 (ms)", fmt.Sprintf("%.1f / %.1f", r.LatencyNoTrendsP50Ms, r.LatencyNoTrendsP99Ms))
	row("apply of a batch p50, with / without windows (ms)", fmt.Sprintf("%.1f / %.1f", r.ApplyP50Ms, r.ApplyNoTrendsP50Ms))
	row("peak RSS during end to end (MB)", fmt.Sprintf("%.0f", r.PeakRSSMB))
	row("end to end without trend windows (ev/s)", fmt.Sprintf("%.0f", r.E2ENoTrendsEventsPerSec))
	row("slowdown of the default trend windows (%)", fmt.Sprintf("%.1f", r.TrendsSlowdownPct))
	fmt.Printf("\nsharded view: %d shards; cost per event (µs)         go CPU  redis CPU  in scripts  scripts/event\n", r.Shards)
	cost := func(name string, c PartCost) {
		fmt.Printf("%-44s %7.2f %10.2f %11.2f %14.4f\n", name, c.GoCPUMicros, c.RedisCPUMicros, c.ScriptMicros, c.ScriptsPerEvent)
	}
	cost("transformer alone", r.TransformerCost)
	cost("aggregators alone, one Redis", r.AggregatorCost)
	cost("end to end, one Redis", r.E2ECost)
	cost("end to end without trend windows", r.E2ENoTrendsCost)
	cost("aggregators alone, 3-master cluster", r.ClusterAggregatorCost)
	row("aggregators alone, 3-master cluster (ev/s)", fmt.Sprintf("%.0f", r.ClusterAggregatorEventsPerSec))
	fmt.Printf("%-44s %v\n", "redis CPU µs/event by master (cluster)", r.ClusterAggregatorCost.PerMaster)
}
