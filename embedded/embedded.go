// Package embedded runs the services searchflow needs when none are configured: franz-go's kfake
// as an in-process Kafka-protocol broker persisted on disk, and miniredis as an in-process
// Redis-protocol store held in memory. The pipeline only asks them for an address.
package embedded

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
)

// Kafka is an in-process single-broker Kafka.
type Kafka struct {
	cluster *kfake.Cluster
	addr    string
}

// StartKafka starts a broker listening on addr (host:port; port 0 picks one) that keeps its log
// under dataDir/kafka, reloading what an earlier run left there, in segment files of at most
// segmentBytes. It never deletes records on its own: kfake's retention would delete records no
// one has read yet, so what goes is searchflow's choice (package keeper).
func StartKafka(addr, dataDir string, segmentBytes int64, log *zap.Logger) (*Kafka, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: port %q: %w", portStr, err)
	}
	dir := filepath.Join(dataDir, "kafka")
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		// kfake always listens on 127.0.0.1; honour the configured host (e.g. 0.0.0.0 in a container).
		kfake.ListenFn(func(network, a string) (net.Listener, error) {
			_, p, _ := net.SplitHostPort(a)
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
		kfake.DataDir(dir),
		// A trim frees disk a whole segment at a time: small segments keep the budget close.
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":    "-1",
			"log.retention.bytes": "-1",
			"log.segment.bytes":   strconv.FormatInt(segmentBytes, 10),
		}),
		kfake.WithLogger(kfakeLogger{log.Named("kfake")}),
	)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: start on %s with data in %s: %w", addr, dir, err)
	}
	k := &Kafka{cluster: cluster, addr: cluster.ListenAddrs()[0]}
	log.Info("embedded kafka broker started", zap.String("addr", k.addr), zap.String("data_dir", dir))
	return k, nil
}

// Addr is the broker's listen address, for clients' seed brokers.
func (k *Kafka) Addr() string { return k.addr }

// Close stops the broker and flushes its state to disk.
func (k *Kafka) Close() { k.cluster.Close() }

type kfakeLogger struct{ log *zap.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error(fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn, kfake.LogLevelInfo, kfake.LogLevelDebug:
		// kfake's warnings are its own timing notes ("EndTxn slow") and its info level is a line
		// per request: both are debugging aids, not operator news.
		if ce := l.log.Check(zap.DebugLevel, ""); ce != nil {
			ce.Message = fmt.Sprintf(msg, args...)
			ce.Write()
		}
	}
}

// Redis is an in-process Redis-protocol store; everything it holds is lost when it stops (the
// pipeline keeps the view in a snapshot file: package keeper).
type Redis struct {
	server *miniredis.Miniredis
}

// StartRedis starts the store listening on addr (host:port; port 0 picks a free one).
func StartRedis(addr string, log *zap.Logger) (*Redis, error) {
	s := miniredis.NewMiniRedis()
	if err := s.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded redis: start on %s: %w", addr, err)
	}
	log.Info("embedded redis store started: the view lives in memory, and in DATA_DIR/view.snapshot between runs",
		zap.String("addr", s.Addr()))
	return &Redis{server: s}, nil
}

// Addr is the store's listen address.
func (r *Redis) Addr() string { return r.server.Addr() }

// Close stops the store.
func (r *Redis) Close() { r.server.Close() }
