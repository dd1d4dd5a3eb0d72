package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/embedded"
	"github.com/searchflow/searchflow/internal/backoff"
	"github.com/searchflow/searchflow/transport"
	"github.com/searchflow/searchflow/view"
)

// connect starts or reaches Kafka and Redis and creates missing topics. While a service does not
// answer it retries with backoff, and /readyz says why (wrong credentials, an unknown CA, a
// service away), naming the service.
func (p *pipeline) connect(ctx context.Context, onKafka func([]string)) error {
	cfg := p.cfg
	brokers := cfg.KafkaBrokers
	if cfg.EmbeddedKafka() {
		k, err := embedded.StartKafka(cfg.EmbeddedKafkaAddr, cfg.DataDir, segmentBytes(cfg), p.log)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		p.closers = append(p.closers, k.Close)
		brokers = []string{k.Addr()}
	}
	if onKafka != nil {
		onKafka(brokers)
	}
	kt, err := transport.NewKafka(cfg.KafkaSASL, cfg.KafkaTLS)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	p.mu.Lock()
	p.kafkaLink = kt
	p.mu.Unlock()
	p.kafkaOpts = append(kt.Opts(),
		kgo.SeedBrokers(brokers...),
		kgo.WithLogger(kzap.New(p.log.Named("kafka"), kzap.Level(kgo.LogLevelWarn))),
	)
	admin, err := kgo.NewClient(p.clientOpts("admin")...)
	if err != nil {
		return fmt.Errorf("pipeline: kafka client: %w", err)
	}
	p.closers = append(p.closers, admin.Close)
	err = p.retry(ctx, "kafka", "create topics", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return kt.Explain(p.createTopics(cctx, admin))
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.admin = admin
	p.mu.Unlock()

	if !cfg.Enabled(config.StageAggregator) && !cfg.Enabled(config.StageAPI) {
		return nil
	}
	if err := p.connectRedis(ctx); err != nil {
		return err
	}
	if cfg.EmbeddedRedis() {
		if err := p.restoreView(ctx, admin); err != nil {
			return err
		}
	}
	if !cfg.Enabled(config.StageAggregator) {
		return nil // readers find the layout in the view
	}
	return p.claimLayout(ctx, admin)
}

// compression is the codec KAFKA_COMPRESSION names (config accepts only these).
func compression(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.SnappyCompression()
}

// connectRedis starts or reaches Redis and makes the view.
func (p *pipeline) connectRedis(ctx context.Context) error {
	cfg := p.cfg
	var opt rueidis.ClientOption
	explain := func(err error) error { return err }
	if cfg.EmbeddedRedis() {
		r, err := embedded.StartRedis(cfg.EmbeddedRedisAddr, p.log)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		p.closers = append(p.closers, r.Close)
		// miniredis answers CLUSTER SLOTS (one node, every slot): it is one server all the same.
		opt = rueidis.ClientOption{InitAddress: []string{r.Addr()}, SelectDB: cfg.RedisDB, ForceSingleClient: true,
			DisableCache: true} // miniredis has no CLIENT TRACKING
	} else {
		rt, err := transport.NewRedis(cfg.RedisAddrs, cfg.RedisUsername, cfg.RedisPassword, cfg.RedisDB, cfg.RedisTLS)
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		opt, explain = rt.Option(), rt.Explain
		opt.ForceSingleClient = cfg.RedisCluster == "off"
	}
	var client rueidis.Client
	err := p.retry(ctx, "redis", "connect to redis", func() error {
		c, err := rueidis.NewClient(opt)
		if err != nil {
			err = explain(fmt.Errorf("connect to redis %v: %w", opt.InitAddress, err))
			if strings.Contains(err.Error(), "SELECT is not allowed in cluster mode") {
				// REDIS_DB is not 0 on a cluster: no retry will change that.
				return backoff.Permanent(fmt.Errorf("REDIS_DB is %d: %w", cfg.RedisDB, err))
			}
			return err
		}
		if ctx.Err() != nil {
			c.Close() // retry already returned: nobody would close it
			return ctx.Err()
		}
		client = c
		return nil
	})
	if err != nil {
		return err
	}
	p.closers = append(p.closers, client.Close)
	if err := checkClusterMode(cfg, client.Mode()); err != nil {
		return err
	}
	p.log.Info("connected to redis", zap.Strings("addrs", opt.InitAddress), zap.String("mode", string(client.Mode())))
	p.mu.Lock()
	p.redis, p.view = client, view.New(client)
	p.mu.Unlock()
	return nil
}

// checkClusterMode refuses a server that is not what REDIS_CLUSTER and REDIS_DB ask for.
func checkClusterMode(cfg config.Config, mode rueidis.ClientMode) error {
	cluster := mode == rueidis.ClientModeCluster
	switch {
	case cfg.RedisCluster == "on" && !cluster:
		return fmt.Errorf("pipeline: REDIS_CLUSTER is on but %v is not a Redis Cluster (set REDIS_CLUSTER=auto or off)", cfg.RedisAddrs)
	case cluster && cfg.RedisDB != 0:
		return fmt.Errorf("pipeline: REDIS_DB is %d but %v is a Redis Cluster, which has only database 0", cfg.RedisDB, cfg.RedisAddrs)
	}
	return nil
}

// claimLayout makes the view's layout the topics' partition counts before any aggregator writes:
// a view built from other topics or another partition count stops the process with the way to
// rebuild it.
func (p *pipeline) claimLayout(ctx context.Context, admin *kgo.Client) error {
	return p.retry(ctx, "redis", "claim the view's layout", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		layout, err := p.layout(cctx, admin)
		if err != nil {
			return err
		}
		err = p.view.Claim(cctx, layout)
		var wrong *view.LayoutError
		if errors.As(err, &wrong) {
			return backoff.Permanent(err)
		}
		return err
	})
}

// layout reads the partition counts of the processed and hotel topics.
func (p *pipeline) layout(ctx context.Context, admin *kgo.Client) (view.Layout, error) {
	topics, err := kadm.NewClient(admin).ListTopics(ctx, p.cfg.ProcessedTopic, p.cfg.HotelTopic)
	if err != nil {
		return view.Layout{}, fmt.Errorf("read the partitions of %s and %s: %w", p.cfg.ProcessedTopic, p.cfg.HotelTopic, err)
	}
	l := view.Layout{UsersTopic: p.cfg.ProcessedTopic, HotelsTopic: p.cfg.HotelTopic, Trends: TrendSpec(p.cfg).String()}
	for name, n := range map[string]*int{p.cfg.ProcessedTopic: &l.Users, p.cfg.HotelTopic: &l.Hotels} {
		d, ok := topics[name]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return view.Layout{}, fmt.Errorf("topic %s has no partitions yet (err %v)", name, d.Err)
		}
		*n = len(d.Partitions)
	}
	return l, nil
}

func (p *pipeline) createTopics(ctx context.Context, admin *kgo.Client) error {
	adm := kadm.NewClient(admin)
	// The processed and hotel topics are what the view is rebuilt from: they keep everything.
	keepAll := "-1"
	var results []kadm.CreateTopicResponse
	for _, t := range []struct {
		name    string
		configs map[string]*string
	}{
		{p.cfg.RawTopic, nil},
		{p.cfg.ProcessedTopic, map[string]*string{"retention.ms": &keepAll}},
		{p.cfg.HotelTopic, map[string]*string{"retention.ms": &keepAll}},
		{p.cfg.DeadLetterTopic, nil},
	} {
		resp, err := adm.CreateTopics(ctx, int32(p.cfg.TopicPartitions), -1, t.configs, t.name)
		if err != nil {
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
		results = append(results, resp.Sorted()...)
	}
	var denied []string
	for _, t := range results {
		switch {
		case t.Err == nil:
			p.log.Info("created topic", zap.String("topic", t.Topic), zap.Int32("partitions", t.NumPartitions))
		case errors.Is(t.Err, kerr.TopicAlreadyExists):
		case errors.Is(t.Err, kerr.TopicAuthorizationFailed), errors.Is(t.Err, kerr.ClusterAuthorizationFailed):
			// Kafka checks CREATE before existence, and managed services seldom grant it: a topic
			// an operator created is fine.
			denied = append(denied, t.Topic)
		default:
			return fmt.Errorf("create topic %s: %w", t.Topic, t.Err)
		}
	}
	if len(denied) == 0 {
		return nil
	}
	topics, err := adm.ListTopics(ctx, denied...)
	if err != nil {
		return fmt.Errorf("not allowed to create topics %v, and cannot list them: %w", denied, err)
	}
	for _, name := range denied {
		if d, ok := topics[name]; !ok || d.Err != nil {
			return fmt.Errorf("topic %s does not exist and this user may not create it: create it, or grant CREATE: %w",
				name, kerr.TopicAuthorizationFailed)
		}
	}
	p.log.Info("not allowed to create topics; they exist already", zap.Strings("topics", denied))
	return nil
}

// retry calls fn until it succeeds or ctx ends, backing off up to 5 s between attempts: a service
// that is still starting, or whose credentials an operator is fixing, is not a reason to exit.
// Each failure is logged once per attempt and shown on /readyz under service.
func (p *pipeline) retry(ctx context.Context, service, what string, fn func() error) error {
	err := backoff.Policy{First: 200 * time.Millisecond, Max: 5 * time.Second}.Retry(ctx, func() error {
		// A client can sit on a refused login until its request's deadline even when ctx ends:
		// wait for the attempt or for ctx, whichever comes first (closing the client ends it).
		errc := make(chan error, 1)
		go func() { errc <- fn() }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}, func(attempt int, err error, wait time.Duration) {
		if ctx.Err() != nil {
			return
		}
		p.setConnectProblem(service, fmt.Sprintf("%s: %v", what, err))
		p.log.Warn("retrying: "+what, zap.String("service", service), zap.Int("attempt", attempt),
			zap.Duration("backoff", wait), zap.Error(err))
	})
	if err != nil {
		return fmt.Errorf("pipeline: %s: %w", what, err)
	}
	p.setConnectProblem(service, "")
	return nil
}

func (p *pipeline) setConnectProblem(service, problem string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if problem == "" {
		delete(p.connecting, service)
		return
	}
	p.connecting[service] = problem
}
