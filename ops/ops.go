// Package ops holds the operator commands that work on a running pipeline's Redis view from the
// outside: `searchflow verify`, which folds the processed topics again from Kafka, on its own, and
// compares the result with each shard of the view, and `searchflow rebuild`, which resets shards
// so that the aggregators rebuild them from Kafka.
package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/transport"
)

// UsageError says that the command cannot run as asked: a setting or an argument must change.
// Anything else an operator command returns is a failure of the services or of the work itself.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// requestTimeout bounds each metadata request, so that an unreachable service is reported in
// seconds rather than when the whole command's deadline passes.
const requestTimeout = 15 * time.Second

// redisConn is the operator's client of the pipeline's Redis, and how to explain its errors.
type redisConn struct {
	client  rueidis.Client
	explain func(error) error
}

// connectRedis reaches the Redis of REDIS_ADDR as the daemon does (ACL user, TLS, database,
// REDIS_CLUSTER), without the client-side cache.
func connectRedis(cfg config.Config) (*redisConn, error) {
	if cfg.EmbeddedRedis() {
		return connectEmbedded(cfg)
	}
	rt, err := transport.NewRedis(cfg.RedisAddrs, cfg.RedisUsername, cfg.RedisPassword, cfg.RedisDB, cfg.RedisTLS)
	if err != nil {
		return nil, usageError("%v", err)
	}
	opt := rt.Option()
	opt.ForceSingleClient = cfg.RedisCluster == "off"
	opt.DisableCache = true // one pass over the view: nothing to cache
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, rt.Explain(fmt.Errorf("connect to redis %v: %w", opt.InitAddress, err))
	}
	cluster := client.Mode() == rueidis.ClientModeCluster
	switch {
	case cfg.RedisCluster == "on" && !cluster:
		client.Close()
		return nil, usageError("REDIS_CLUSTER is on but %v is not a Redis Cluster (set REDIS_CLUSTER=auto or off)", cfg.RedisAddrs)
	case cluster && cfg.RedisDB != 0:
		client.Close()
		return nil, usageError("REDIS_DB is %d but %v is a Redis Cluster, which has only database 0", cfg.RedisDB, cfg.RedisAddrs)
	}
	return &redisConn{client: client, explain: rt.Explain}, nil
}

// connectEmbedded reaches the running daemon's embedded store, which listens on
// EMBEDDED_REDIS_ADDR when the daemon was given a fixed port there.
func connectEmbedded(cfg config.Config) (*redisConn, error) {
	if _, port, _ := net.SplitHostPort(cfg.EmbeddedRedisAddr); port == "0" {
		return nil, usageError("REDIS_ADDR is empty and EMBEDDED_REDIS_ADDR is %s: the embedded store lives inside the daemon's "+
			"process on a port it picked; run the daemon and this command with the same fixed EMBEDDED_REDIS_ADDR "+
			"(e.g. 127.0.0.1:6380), or with the daemon's external Redis in REDIS_ADDR", cfg.EmbeddedRedisAddr)
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.EmbeddedRedisAddr},
		ForceSingleClient: true, DisableCache: true})
	if err != nil {
		return nil, fmt.Errorf("connect to the daemon's embedded store at EMBEDDED_REDIS_ADDR %s (is the daemon running?): %w",
			cfg.EmbeddedRedisAddr, err)
	}
	return &redisConn{client: client, explain: func(err error) error { return err }}, nil
}

// kafkaConn is the options of the operator's Kafka clients, an admin client made with them,
// and how to explain their errors.
type kafkaConn struct {
	opts    []kgo.Opt
	admin   *kgo.Client
	explain func(error) error
}

// connectKafka makes clients for KAFKA_BROKERS with the daemon's SASL and TLS settings, or for
// the running daemon's embedded broker (EMBEDDED_KAFKA_ADDR) when KAFKA_BROKERS is empty. No
// connection is made until the first request.
func connectKafka(cfg config.Config) (*kafkaConn, error) {
	brokers := cfg.KafkaBrokers
	if cfg.EmbeddedKafka() {
		brokers = []string{cfg.EmbeddedKafkaAddr}
	}
	kt, err := transport.NewKafka(cfg.KafkaSASL, cfg.KafkaTLS)
	if err != nil {
		return nil, usageError("%v", err)
	}
	opts := append(kt.Opts(), kgo.SeedBrokers(brokers...), kgo.ClientID("searchflow-ops"))
	admin, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, usageError("kafka client for %v: %v", brokers, err)
	}
	return &kafkaConn{opts: opts, admin: admin, explain: kt.Explain}, nil
}

// withTimeout runs fn with a context bounded by requestTimeout.
func withTimeout(ctx context.Context, fn func(context.Context) error) error {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return fn(rctx)
}

// IsUsage reports whether err says the command cannot run as asked (a *UsageError).
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}
