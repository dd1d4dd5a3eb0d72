// Package pipeline is searchflow's supervisor: it brings up the services the configuration asks
// for (embedded or external), runs the enabled stages under one errgroup with a shared context,
// and owns the drain order: stop the stages, then the HTTP server, then the embedded services.
package pipeline

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/event"
	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/metrics"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/stages/generator"
	"github.com/searchflow/searchflow/stages/transformer"
	"github.com/searchflow/searchflow/transport"
	"github.com/searchflow/searchflow/view"
)

// Options are hooks for tests; the zero value is what main uses.
type Options struct {
	// OnListening, if set, is called with the API's and the admin server's listen addresses (""
	// for one that does not run) as soon as they listen, before Kafka and Redis are reached.
	OnListening func(httpAddr, adminAddr string)
	// OnKafka, if set, is called with the seed brokers once they are known: for a test, the
	// embedded broker's address when it listens on port 0.
	OnKafka func(brokers []string)
	// OnReady, if set, is called with the API's listen address once Kafka and Redis answer and
	// the API serves the view.
	OnReady func(httpAddr string)
}

// Run runs the configured pipeline until ctx is canceled and the drain completes, or a stage
// fails. It returns nil after a clean drain.
func Run(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	return RunWith(ctx, cfg, log, Options{})
}

// RunWith is Run with test hooks.
func RunWith(ctx context.Context, cfg config.Config, log *zap.Logger, opts Options) error {
	if cfg.InstanceID == "" {
		// The host name: stable in a StatefulSet, so a restarted pod fences its predecessor.
		if host, err := os.Hostname(); err == nil {
			cfg.InstanceID = sanitizeInstance(host)
		}
	}
	log.Info("searchflow starting", zap.Any("config", cfg.Masked()))
	p := &pipeline{cfg: cfg, log: log, running: map[string]bool{}, connecting: map[string]string{}, metrics: metrics.New()}
	p.track = &tracker{started: time.Now(), mode: p.mode(), running: p.isRunning}
	p.metrics.Readiness(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return len(p.readiness(ctx)) == 0
	})
	defer p.closeAll()
	// The servers first: /healthz and /readyz answer while Kafka and Redis are being reached.
	if err := p.listen(); err != nil {
		return err
	}
	p.startServers(opts)
	defer p.stopServers()
	if err := p.connect(ctx, opts.OnKafka); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the services
		}
		return err
	}
	if p.api != nil {
		p.api.SetView(p.view)
	}
	if opts.OnReady != nil {
		opts.OnReady(p.apiAddr)
	}
	return p.run(ctx)
}

type pipeline struct {
	cfg config.Config
	log *zap.Logger

	closers   []func()
	metrics   *metrics.Metrics
	track     *tracker
	servers   []*httpStage
	api       *httpapi.Server
	apiAddr   string // where the API listens, "" when it does not run
	adminAddr string
	kafkaOpts []kgo.Opt

	mu         sync.Mutex
	kafkaLink  *transport.Kafka // explains a failed broker connection while admin is unset
	admin      *kgo.Client      // set once Kafka answers
	redis      rueidis.Client
	view       *view.View // set once Redis answers
	live       []Stage    // the stages and servers, once they run
	running    map[string]bool
	finished   map[string]bool
	draining   bool
	connecting map[string]string // service -> why it cannot be reached yet
}

func (p *pipeline) closeAll() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// mode says which services are embedded, for /stats.
func (p *pipeline) mode() map[string]string {
	mode := map[string]string{"kafka": "external", "redis": "external"}
	if p.cfg.EmbeddedKafka() {
		mode["kafka"] = "embedded"
	}
	if p.cfg.EmbeddedRedis() {
		mode["redis"] = "embedded"
	}
	return mode
}

func (p *pipeline) stages() ([]Stage, error) {
	cfg := p.cfg
	var out []Stage
	if cfg.Enabled(config.StageGenerator) {
		cl, err := kgo.NewClient(append([]kgo.Opt{
			kgo.ProducerLinger(5 * time.Millisecond),
			kgo.MaxBufferedRecords(100_000),
		}, p.clientOpts("generator")...)...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: generator client: %w", err)
		}
		p.closers = append(p.closers, cl.Close)
		out = append(out, generator.New(generator.Config{
			Topic: cfg.RawTopic, Rate: cfg.GeneratorRate, MaxEvents: cfg.GeneratorMaxEvents, Seed: cfg.GeneratorSeed,
			Users: cfg.GeneratorUsers, Hotels: cfg.GeneratorHotels, ReplayFile: cfg.GeneratorReplayFile,
			Disorder: cfg.GeneratorDisorder, LateFraction: cfg.GeneratorLateFraction, Lateness: cfg.AllowedLateness,
			Skew: cfg.GeneratorSkew,
		}, cl, p.log.With(zap.String("stage", "generator"))))
	}
	if cfg.Enabled(config.StageTransformer) {
		tc := TransformerConfig(cfg)
		tc.OnBatch = func(n int, took time.Duration) { p.metrics.ObserveBatch("transformer", n, took) }
		t := transformer.New(tc, p.groupOpts("transformer"), p.log.With(zap.String("stage", "transformer")))
		out = append(out, t)
	}
	if cfg.Enabled(config.StageAggregator) {
		for _, role := range []view.Role{view.UserShards, view.HotelShards} {
			out = append(out, p.aggregator(role))
		}
	}
	return out, nil
}

// aggregator returns the aggregator of role: one folds the processed topic into the user shards,
// the other the hotel topic into the hotel shards.
func (p *pipeline) aggregator(role view.Role) *aggregator.Aggregator {
	ac := AggregatorConfig(p.cfg, role)
	name := aggregator.StageName(role)
	ac.OnApplied = func(recs []*kgo.Record, landed time.Time, took time.Duration) {
		p.metrics.ObserveBatch(name, len(recs), took)
		if role != view.UserShards {
			return // every event lands in both: its latency is the users' side's
		}
		for _, r := range recs {
			p.metrics.EndToEnd.Observe(landed.Sub(r.Timestamp).Seconds())
		}
	}
	return aggregator.New(ac, p.groupOpts(name), p.view, p.log.With(zap.String("stage", name)))
}

// sanitizeInstance keeps the characters a transactional ID takes (letters, digits, '.', '_',
// '-'), replacing others with '-'.
func sanitizeInstance(host string) string {
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b[:min(len(b), 200)])
}

// TransformerConfig is the transformer's slice of cfg, as the daemon runs it (the benchmark
// builds its stages with it too).
func TransformerConfig(cfg config.Config) transformer.Config {
	tc := transformer.Config{RawTopic: cfg.RawTopic, ProcessedTopic: cfg.ProcessedTopic, HotelTopic: cfg.HotelTopic, DeadLetterTopic: cfg.DeadLetterTopic,
		Group: cfg.ConsumerGroup + "-transformer", BatchMaxRecords: cfg.BatchMaxRecords, Limits: limits(cfg.Limits),
		TransactionTimeout: cfg.TransactionTimeout, MaxFutureSkew: cfg.MaxFutureSkew}
	if !cfg.EmbeddedKafka() && cfg.InstanceID != "" {
		// A stable ID on real Kafka: a restart aborts its predecessor's open transaction at once.
		tc.TransactionalID = tc.Group + "-" + cfg.InstanceID
	}
	return tc
}

// AggregatorConfig is the slice of cfg of the aggregator of role, as the daemon runs it.
func AggregatorConfig(cfg config.Config, role view.Role) aggregator.Config {
	ac := aggregator.Config{Role: role, Topic: cfg.ProcessedTopic, Group: cfg.ConsumerGroup + "-aggregator",
		DeadLetterTopic: cfg.DeadLetterTopic, BatchMaxRecords: cfg.BatchMaxRecords, Trends: TrendSpec(cfg)}
	if role == view.HotelShards {
		ac.Topic, ac.Group = cfg.HotelTopic, cfg.ConsumerGroup+"-aggregator-hotels"
	}
	return ac
}

// TrendSpec is the trends TREND_WINDOWS and ALLOWED_LATENESS ask the view to keep.
func TrendSpec(cfg config.Config) view.TrendSpec {
	return view.TrendSpec{Windows: cfg.TrendWindows, Lateness: cfg.AllowedLateness}
}

// limits are the event limits the MAX_* variables set.
func limits(l config.Limits) event.Limits {
	return event.Limits{AdvertisersPerEvent: l.AdvertisersPerEvent, OffersPerAdvertiser: l.OffersPerAdvertiser,
		AdvertiserNameBytes: l.AdvertiserNameBytes, IDBytes: l.IDBytes}
}

// groupOpts are the Kafka options of a consumer group member's client.
func (p *pipeline) groupOpts(name string) []kgo.Opt {
	return append(p.clientOpts(name), kgo.SessionTimeout(p.cfg.GroupSessionTimeout))
}

// clientOpts are the Kafka options of one client, named for the franz-go metrics' client label.
func (p *pipeline) clientOpts(name string) []kgo.Opt {
	return append([]kgo.Opt{kgo.ClientID("searchflow-" + name), kgo.WithHooks(p.metrics.KafkaHooks(name)),
		// One option per client: franz-go's DefaultCompressor rewrites the option's codec slice
		// in place, a data race when clients made concurrently share one (franz-go v1.22.3).
		kgo.ProducerBatchCompression(compression(p.cfg.KafkaCompression))}, p.kafkaOpts...)
}

// run runs the stages and the HTTP servers under one errgroup until ctx ends (then drains them,
// the servers last, watched by the SHUTDOWN_TIMEOUT watchdog) or one of them fails.
func (p *pipeline) run(ctx context.Context) error {
	stages, err := p.stages()
	if err != nil {
		return err
	}
	for _, s := range stages {
		if set := countersOf(s); set != nil {
			p.metrics.AddStage(s.Name(), set)
		}
	}
	p.track.setStages(stages)
	all := append(append([]Stage(nil), stages...), servers(p.servers)...)
	p.mu.Lock()
	p.live = all
	p.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	var workers sync.WaitGroup
	for _, s := range all {
		if _, last := s.(drainsLast); !last {
			workers.Add(1)
		}
	}
	for _, s := range all {
		p.launch(g, gctx, s, &workers)
	}
	g.Go(func() error { p.logStats(gctx, stages); return nil })
	keep := p.newKeeper()
	if keep != nil {
		g.Go(func() error { return keep.Run(gctx) })
	}
	g.Go(func() error {
		p.track.run(gctx, p.admin, p.groups(), p.cfg.StallTimeout, p.newLagProbe, p.metrics, p.log)
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		p.mu.Lock()
		p.draining = true
		p.mu.Unlock()
		p.log.Info("draining", zap.Duration("timeout", p.cfg.ShutdownTimeout))
		return nil
	})
	err = p.wait(g, gctx, stages)
	if err == nil && keep != nil && keep.Snapshots() {
		// The stages have stopped: a snapshot now is the whole view, and the next start replays
		// nothing.
		sctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
		defer cancel()
		if err := keep.Snapshot(sctx); err != nil {
			p.log.Warn("no final snapshot of the view: the next start replays from the last one", zap.Error(err))
		}
	}
	return err
}

// servers are the HTTP servers as stages.
func servers(list []*httpStage) []Stage {
	out := make([]Stage, len(list))
	for i, s := range list {
		out[i] = s
	}
	return out
}

// groups are the consumer groups of this process's stages, for the lag readings.
func (p *pipeline) groups() []string {
	var out []string
	if p.cfg.Enabled(config.StageTransformer) {
		out = append(out, TransformerConfig(p.cfg).Group)
	}
	if p.cfg.Enabled(config.StageAggregator) {
		out = append(out, AggregatorConfig(p.cfg, view.UserShards).Group, AggregatorConfig(p.cfg, view.HotelShards).Group)
	}
	return out
}

// wait waits for the group; once gctx ends, for at most SHUTDOWN_TIMEOUT.
func (p *pipeline) wait(g *errgroup.Group, gctx context.Context, stages []Stage) error {
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return p.finish(err, stages)
	case <-gctx.Done():
	}
	watchdog := time.NewTimer(p.cfg.ShutdownTimeout)
	defer watchdog.Stop()
	select {
	case err := <-done:
		return p.finish(err, stages)
	case <-watchdog.C:
		still := p.stillRunning()
		p.log.Error("shutdown timed out", zap.Duration("timeout", p.cfg.ShutdownTimeout), zap.Strings("still_running", still))
		return fmt.Errorf("pipeline: shutdown timed out after %s; still running: %v", p.cfg.ShutdownTimeout, still)
	}
}

func (p *pipeline) finish(err error, stages []Stage) error {
	for _, s := range stages {
		if set := countersOf(s); set != nil {
			p.log.Info("final counts", zap.String("stage", s.Name()), zap.Any("counts", set.Map()))
		}
	}
	if err != nil {
		return err
	}
	p.log.Info("searchflow stopped cleanly")
	return nil
}

func (p *pipeline) logStats(ctx context.Context, stages []Stage) {
	t := time.NewTicker(p.cfg.StatsInterval)
	defer t.Stop()
	prev := map[string]map[string]int64{}
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			secs := now.Sub(last).Seconds()
			last = now
			for _, s := range stages {
				set := countersOf(s)
				if set == nil {
					continue
				}
				counts := set.Map()
				fields := []zap.Field{zap.String("stage", s.Name()), zap.Any("counts", counts)}
				rates := map[string]float64{}
				for k, v := range counts {
					if d := v - prev[s.Name()][k]; d > 0 {
						rates[k] = float64(d) / secs
					}
				}
				prev[s.Name()] = counts
				p.log.Info("stage stats", append(fields, zap.Any("per_sec", rates))...)
			}
		}
	}
}

func (p *pipeline) setRunning(name string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[name] = on
}

func (p *pipeline) isRunning(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running[name]
}

func (p *pipeline) setFinished(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished == nil {
		p.finished = map[string]bool{}
	}
	p.finished[name] = true
}

func (p *pipeline) stillRunning() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for name, on := range p.running {
		if on {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// readiness backs /readyz: draining, an enabled stage not running, Kafka or Redis not reached
// yet or not answering, a stage that cannot make progress, or a partition that has stalled each
// make the process not ready.
func (p *pipeline) readiness(ctx context.Context) map[string]string {
	problems := map[string]string{}
	p.mu.Lock()
	if p.draining {
		problems["process"] = "draining"
	}
	for _, name := range p.cfg.Stages {
		if !p.running[name] && !p.finished[name] {
			problems[name] = "not running"
		}
	}
	for service, why := range p.connecting {
		problems[service] = why
	}
	if p.admin == nil && problems["kafka"] == "" {
		// The first attempt is still under way: say what the last broker connection met.
		problems["kafka"] = "connecting"
		if p.kafkaLink != nil {
			if err := p.kafkaLink.LastConnectError(); err != nil {
				problems["kafka"] = "connecting: " + err.Error()
			}
		}
	}
	live := p.live
	admin, v := p.admin, p.view
	p.mu.Unlock()
	if admin != nil {
		if err := admin.Ping(ctx); err != nil {
			problems["kafka"] = err.Error()
		}
	}
	if v != nil {
		if err := v.Ping(ctx); err != nil {
			problems["redis"] = err.Error()
		}
	}
	for _, s := range live {
		if r, ok := s.(reporter); ok {
			if msg := r.Problem(); msg != "" {
				problems[s.Name()] = msg
			}
		}
	}
	for where, why := range p.track.stalls() {
		problems[where] = why
	}
	return problems
}
