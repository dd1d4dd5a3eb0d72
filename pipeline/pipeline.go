// Package pipeline is searchflow's supervisor: it brings up the services the configuration asks
// for (embedded or external), runs the enabled stages under one errgroup with a shared context,
// and owns the drain order: stop the stages, then the HTTP server, then the embedded services.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/embedded"
	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/metrics"
	"github.com/searchflow/searchflow/stages/aggregator"
	"github.com/searchflow/searchflow/stages/generator"
	"github.com/searchflow/searchflow/stages/transformer"
	"github.com/searchflow/searchflow/view"
)

// Stage is one long-running part of the pipeline.
type Stage interface {
	Name() string
	// Run works until ctx ends, then drains and returns nil; an error stops the whole process.
	Run(ctx context.Context) error
	// Counts returns running totals for the periodic log line.
	Counts() map[string]int64
}

// Options are hooks for tests; the zero value is what main uses.
type Options struct {
	// OnReady, if set, is called with the API's listen address once the HTTP server listens.
	OnReady func(httpAddr string)
}

// Run runs the configured pipeline until ctx is canceled and the drain completes, or a stage
// fails. It returns nil after a clean drain.
func Run(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	return RunWith(ctx, cfg, log, Options{})
}

// RunWith is Run with test hooks.
func RunWith(ctx context.Context, cfg config.Config, log *zap.Logger, opts Options) error {
	log.Info("searchflow starting", zap.Any("config", cfg.Masked()))
	p := &pipeline{cfg: cfg, log: log, running: map[string]bool{}, problems: map[string]func() string{},
		metrics: metrics.New()}
	defer p.closeAll()
	if err := p.connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the services
		}
		return err
	}
	return p.run(ctx, opts)
}

type pipeline struct {
	cfg config.Config
	log *zap.Logger

	closers   []func()
	metrics   *metrics.Metrics
	kafkaOpts []kgo.Opt
	admin     *kgo.Client
	redis     rueidis.Client
	view      *view.View

	mu       sync.Mutex
	running  map[string]bool
	finished map[string]bool
	draining bool
	problems map[string]func() string // stage name -> why it cannot make progress
}

func (p *pipeline) closeAll() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// connect starts or reaches Kafka and Redis and creates missing topics.
func (p *pipeline) connect(ctx context.Context) error {
	cfg := p.cfg
	brokers := cfg.KafkaBrokers
	if cfg.EmbeddedKafka() {
		k, err := embedded.StartKafka(cfg.EmbeddedKafkaAddr, cfg.DataDir, p.log)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		p.closers = append(p.closers, k.Close)
		brokers = []string{k.Addr()}
	}
	p.kafkaOpts = []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.WithLogger(kzap.New(p.log.Named("kafka"), kzap.Level(kgo.LogLevelWarn))),
	}
	admin, err := kgo.NewClient(p.clientOpts("admin")...)
	if err != nil {
		return fmt.Errorf("pipeline: kafka client: %w", err)
	}
	p.admin = admin
	p.closers = append(p.closers, admin.Close)
	if err := retry(ctx, p.log, "create topics", func() error { return p.createTopics(ctx) }); err != nil {
		return err
	}

	if !cfg.Enabled(config.StageAggregator) && !cfg.Enabled(config.StageAPI) {
		return nil
	}
	opt := rueidis.ClientOption{Password: cfg.RedisPassword, SelectDB: cfg.RedisDB}
	if cfg.EmbeddedRedis() {
		r, err := embedded.StartRedis(p.log)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		p.closers = append(p.closers, r.Close)
		opt.InitAddress = []string{r.Addr()}
		opt.DisableCache = true // miniredis has no CLIENT TRACKING
	} else {
		opt.InitAddress = []string{cfg.RedisAddr}
	}
	err = retry(ctx, p.log, "connect to redis", func() error {
		c, err := rueidis.NewClient(opt)
		if err != nil {
			return fmt.Errorf("pipeline: connect to redis %v: %w", opt.InitAddress, err)
		}
		p.redis = c
		return nil
	})
	if err != nil {
		return err
	}
	p.closers = append(p.closers, p.redis.Close)
	p.view = view.New(p.redis)
	return nil
}

func (p *pipeline) createTopics(ctx context.Context) error {
	adm := kadm.NewClient(p.admin)
	// The processed topic is what the view is rebuilt from: it keeps everything.
	keepAll := "-1"
	var results []kadm.CreateTopicResponse
	for _, t := range []struct {
		name    string
		configs map[string]*string
	}{
		{p.cfg.RawTopic, nil},
		{p.cfg.ProcessedTopic, map[string]*string{"retention.ms": &keepAll}},
		{p.cfg.DeadLetterTopic, nil},
	} {
		resp, err := adm.CreateTopics(ctx, int32(p.cfg.TopicPartitions), -1, t.configs, t.name)
		if err != nil {
			return fmt.Errorf("pipeline: create topic %s: %w", t.name, err)
		}
		results = append(results, resp.Sorted()...)
	}
	for _, t := range results {
		switch {
		case t.Err == nil:
			p.log.Info("created topic", zap.String("topic", t.Topic), zap.Int32("partitions", t.NumPartitions))
		case errors.Is(t.Err, kerr.TopicAlreadyExists):
		default:
			return fmt.Errorf("pipeline: create topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// retry calls fn until it succeeds or ctx ends, backing off up to 5 s between attempts: a service
// that is still starting is not a reason to exit.
func retry(ctx context.Context, log *zap.Logger, what string, fn func() error) error {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		log.Warn("retrying: "+what, zap.Int("attempt", attempt), zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
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
		}, cl, p.log.With(zap.String("stage", "generator"))))
	}
	if cfg.Enabled(config.StageTransformer) {
		t := transformer.New(transformer.Config{
			RawTopic: cfg.RawTopic, ProcessedTopic: cfg.ProcessedTopic, DeadLetterTopic: cfg.DeadLetterTopic,
			Group: cfg.ConsumerGroup + "-transformer", BatchMaxRecords: cfg.BatchMaxRecords,
			OnBatch: func(n int, took time.Duration) { p.metrics.ObserveBatch("transformer", n, took) },
		}, p.clientOpts("transformer"), p.log.With(zap.String("stage", "transformer")))
		p.problems[t.Name()] = t.Problem
		out = append(out, t)
	}
	if cfg.Enabled(config.StageAggregator) {
		a := aggregator.New(aggregator.Config{
			Topic: cfg.ProcessedTopic, Group: cfg.ConsumerGroup + "-aggregator", BatchMaxRecords: cfg.BatchMaxRecords,
			OnApplied: func(recs []*kgo.Record, landed time.Time, took time.Duration) {
				p.metrics.ObserveBatch("aggregator", len(recs), took)
				for _, r := range recs {
					p.metrics.EndToEnd.Observe(landed.Sub(r.Timestamp).Seconds())
				}
			},
		}, p.clientOpts("aggregator"), p.view, p.log.With(zap.String("stage", "aggregator")))
		p.problems[a.Name()] = a.Problem
		out = append(out, a)
	}
	return out, nil
}

// clientOpts are the Kafka options of one client, named for the franz-go metrics' client label.
func (p *pipeline) clientOpts(name string) []kgo.Opt {
	return append([]kgo.Opt{kgo.ClientID("searchflow-" + name), kgo.WithHooks(p.metrics.KafkaHooks(name))}, p.kafkaOpts...)
}

// finishesByDesign reports whether a stage returning nil before shutdown is expected.
func finishesByDesign(s Stage) bool { return s.Name() == "generator" }

func (p *pipeline) run(ctx context.Context, opts Options) error {
	stages, err := p.stages()
	if err != nil {
		return err
	}
	for _, s := range stages {
		p.metrics.AddStage(s.Name(), s.Counts)
	}
	mode := map[string]string{"kafka": "external", "redis": "external"}
	if p.cfg.EmbeddedKafka() {
		mode["kafka"] = "embedded"
	}
	if p.cfg.EmbeddedRedis() {
		mode["redis"] = "embedded"
	}
	track := &tracker{started: time.Now(), mode: mode, stages: stages, running: p.isRunning}
	var groups []string
	if p.cfg.Enabled(config.StageTransformer) {
		groups = append(groups, p.cfg.ConsumerGroup+"-transformer")
	}
	if p.cfg.Enabled(config.StageAggregator) {
		groups = append(groups, p.cfg.ConsumerGroup+"-aggregator")
	}
	var api *httpapi.Server
	var ln, adminLn net.Listener
	if p.cfg.Enabled(config.StageAPI) {
		if ln, err = net.Listen("tcp", p.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("pipeline: listen on HTTP_ADDR %s: %w", p.cfg.HTTPAddr, err)
		}
		api = httpapi.New(p.view, p.readiness, p.log.With(zap.String("stage", "api")),
			httpapi.WithStats(func() any { return track.snapshot() }),
			httpapi.WithMetrics(p.metrics, p.cfg.AdminAddr == ""),
			httpapi.WithCORS(p.cfg.CORSOrigins),
			httpapi.WithTokens(p.cfg.APITokens),
			httpapi.WithStreamMaxClients(p.cfg.StreamMaxClients))
	}
	var admin *http.Server
	if p.cfg.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", p.cfg.AdminAddr); err != nil {
			return fmt.Errorf("pipeline: listen on ADMIN_ADDR %s: %w", p.cfg.AdminAddr, err)
		}
		admin = newAdminServer(p.metrics)
	}

	g, gctx := errgroup.WithContext(ctx)
	var workers sync.WaitGroup
	for _, s := range stages {
		workers.Add(1)
		p.setRunning(s.Name(), true)
		g.Go(func() error {
			defer workers.Done()
			defer p.setRunning(s.Name(), false)
			log := p.log.With(zap.String("stage", s.Name()))
			log.Info("stage started")
			err := s.Run(gctx)
			switch {
			case err != nil:
				log.Error("stage failed", zap.Error(err))
				return fmt.Errorf("%s: %w", s.Name(), err)
			case gctx.Err() == nil && !finishesByDesign(s):
				log.Error("stage stopped unexpectedly")
				return fmt.Errorf("%s stopped unexpectedly", s.Name())
			case gctx.Err() == nil:
				p.setFinished(s.Name())
				log.Info("stage finished; the other stages keep running")
			default:
				log.Info("stage stopped")
			}
			return nil
		})
	}
	if api != nil {
		p.setRunning("api", true)
		serveErr := make(chan error, 1)
		g.Go(func() error {
			go func() { serveErr <- api.Serve(ln) }()
			p.log.Info("api listening", zap.String("addr", ln.Addr().String()))
			if opts.OnReady != nil {
				opts.OnReady(ln.Addr().String())
			}
			select {
			case err := <-serveErr:
				p.setRunning("api", false)
				if err == nil {
					err = errors.New("http server stopped unexpectedly")
				}
				return fmt.Errorf("api: %w", err)
			case <-gctx.Done():
			}
			// The API goes last: it keeps answering while the other stages drain.
			workers.Wait()
			shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			err := api.Shutdown(shutCtx)
			<-serveErr
			p.setRunning("api", false)
			return err
		})
	}
	g.Go(func() error { p.logStats(gctx, stages); return nil })
	g.Go(func() error { track.run(gctx, p.admin, groups, p.metrics, p.log); return nil })
	if admin != nil {
		g.Go(func() error {
			serveErr := make(chan error, 1)
			go func() { serveErr <- admin.Serve(adminLn) }()
			p.log.Info("admin server listening (/metrics, /debug/pprof)", zap.String("addr", adminLn.Addr().String()))
			select {
			case err := <-serveErr:
				return fmt.Errorf("admin server: %w", err)
			case <-gctx.Done():
			}
			workers.Wait()
			shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = admin.Shutdown(shutCtx)
			<-serveErr
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		p.mu.Lock()
		p.draining = true
		p.mu.Unlock()
		p.log.Info("draining", zap.Duration("timeout", p.cfg.ShutdownTimeout))
		return nil
	})

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
		p.log.Info("final counts", zap.String("stage", s.Name()), zap.Any("counts", s.Counts()))
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
				counts := s.Counts()
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

// readiness backs /readyz: draining, an enabled stage not running, Kafka or Redis not answering,
// or a stage that cannot make progress each make the process not ready.
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
	checks := p.problems
	p.mu.Unlock()
	if err := p.admin.Ping(ctx); err != nil {
		problems["kafka"] = err.Error()
	}
	if p.view != nil {
		if err := p.view.Ping(ctx); err != nil {
			problems["redis"] = err.Error()
		}
	}
	for name, check := range checks {
		if msg := check(); msg != "" {
			problems[name] = msg
		}
	}
	return problems
}
