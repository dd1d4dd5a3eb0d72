package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"

	"github.com/searchflow/searchflow/internal/redistest"
)

// The sharded view's costs: what each part of the pipeline spends in this process per event, and
// what Redis spends — in total, per shard and, on a local 3-master Redis Cluster, per master.

// PartCost is what one phase cost per event.
type PartCost struct {
	GoCPUMicros     float64   `json:"go_cpu_us_per_event"`       // this process's CPU (all goroutines)
	RedisCPUMicros  float64   `json:"redis_cpu_us_per_event"`    // every Redis node's CPU (INFO cpu)
	ScriptMicros    float64   `json:"redis_script_us_per_event"` // inside the apply scripts (INFO commandstats)
	ScriptsPerEvent float64   `json:"redis_scripts_per_event"`   // script calls (one per partition per batch)
	PerMaster       []float64 `json:"redis_cpu_us_per_event_by_master,omitempty"`
}

// processCPU returns this process's CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisUsage is what the Redis nodes of a client have spent so far, per node.
type redisUsage struct {
	cpu     []float64 // seconds, per node
	script  float64   // seconds inside EVAL/EVALSHA, all nodes
	scripts int64     // EVAL/EVALSHA calls, all nodes
}

// readRedisUsage reads INFO cpu and INFO commandstats of every master the client knows.
func readRedisUsage(ctx context.Context, c rueidis.Client) (redisUsage, error) {
	var u redisUsage
	for addr, node := range c.Nodes() {
		text, err := node.Do(ctx, node.B().Info().Section("cpu", "commandstats").Build()).ToString()
		if err != nil {
			return u, fmt.Errorf("INFO of %s: %w", addr, err)
		}
		info := map[string]string{}
		for _, line := range strings.Split(text, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				info[k] = v
			}
		}
		sys, _ := strconv.ParseFloat(info["used_cpu_sys"], 64)
		user, _ := strconv.ParseFloat(info["used_cpu_user"], 64)
		u.cpu = append(u.cpu, sys+user)
		for _, cmd := range []string{"cmdstat_evalsha", "cmdstat_eval"} {
			for _, field := range strings.Split(info[cmd], ",") {
				k, v, _ := strings.Cut(field, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					u.scripts += n
				case "usec":
					u.script += float64(n) / 1e6
				}
			}
		}
	}
	return u, nil
}

// costMeter measures one phase.
type costMeter struct {
	ctx   context.Context
	redis rueidis.Client
	cpu0  time.Duration
	use0  redisUsage
}

func startCost(ctx context.Context, rc rueidis.Client) (*costMeter, error) {
	use, err := readRedisUsage(ctx, rc)
	if err != nil {
		return nil, err
	}
	return &costMeter{ctx: ctx, redis: rc, cpu0: processCPU(), use0: use}, nil
}

// per returns the phase's cost per event of n events. Nodes are matched by position: the client's
// node list does not change during a phase.
func (m *costMeter) per(n int64) (PartCost, error) {
	goCPU := processCPU() - m.cpu0
	use, err := readRedisUsage(m.ctx, m.redis)
	if err != nil {
		return PartCost{}, err
	}
	ev := float64(n)
	c := PartCost{GoCPUMicros: goCPU.Seconds() * 1e6 / ev, ScriptMicros: (use.script - m.use0.script) * 1e6 / ev,
		ScriptsPerEvent: float64(use.scripts-m.use0.scripts) / ev}
	for i := range use.cpu {
		if i < len(m.use0.cpu) {
			d := (use.cpu[i] - m.use0.cpu[i]) * 1e6 / ev
			c.RedisCPUMicros += d
			c.PerMaster = append(c.PerMaster, d)
		}
	}
	if len(c.PerMaster) < 2 {
		c.PerMaster = nil
	}
	return c, nil
}

// clusterPhase folds the processed topics of the aggregator phase again into a view on a local
// 3-master Redis Cluster, with its own consumer groups, and returns the rate and the costs.
func (b *bench) clusterPhase(n int64) (float64, PartCost, error) {
	dir, err := os.MkdirTemp("", "searchflow-bench-cluster-")
	if err != nil {
		return 0, PartCost{}, err
	}
	defer os.RemoveAll(dir)
	cl, err := redistest.RunCluster(3, dir)
	if err != nil {
		return 0, PartCost{}, err
	}
	defer cl.Stop()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: cl.Addrs()})
	if err != nil {
		return 0, PartCost{}, err
	}
	defer rc.Close()
	meter, err := startCost(b.ctx, rc)
	if err != nil {
		return 0, PartCost{}, err
	}
	rate, err := b.stages("aggregator_cluster", "", "processed_solo", n, false, true, rc, nil)
	if err != nil {
		return 0, PartCost{}, err
	}
	cost, err := meter.per(n)
	return rate, cost, err
}
