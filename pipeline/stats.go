package pipeline

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/metrics"
)

// tracker samples the stages' counts every second and the consumer groups' lag every few
// seconds, for /stats, /stream and the lag gauges.
type tracker struct {
	started time.Time
	mode    map[string]string
	stages  []Stage
	running func(string) bool

	mu      sync.Mutex
	samples []sample // oldest first, at most window+1
	lag     map[string]map[string]int64
}

type sample struct {
	at     time.Time
	counts map[string]map[string]int64
}

const (
	statsWindow = 60 // seconds of samples kept, the longest rate window
	lagInterval = 5 * time.Second
)

// Stats is the /stats document.
type Stats struct {
	Mode          map[string]string           `json:"mode"`
	UptimeSeconds float64                     `json:"uptime_seconds"`
	Stages        map[string]StageStats       `json:"stages"`
	Lag           map[string]map[string]int64 `json:"lag"`
	DeadLettered  int64                       `json:"dead_lettered"`
}

// StageStats is one stage's totals and rates (per second) over the last 1, 10 and 60 seconds.
type StageStats struct {
	Running bool                          `json:"running"`
	Totals  map[string]int64              `json:"totals"`
	Rates   map[string]map[string]float64 `json:"rates"`
}

func (t *tracker) sample() {
	s := sample{at: time.Now(), counts: map[string]map[string]int64{}}
	for _, st := range t.stages {
		s.counts[st.Name()] = st.Counts()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, s)
	if len(t.samples) > statsWindow+1 {
		t.samples = t.samples[1:]
	}
}

// run samples until ctx ends; lag comes from admin every lagInterval.
func (t *tracker) run(ctx context.Context, admin *kgo.Client, groups []string, m *metrics.Metrics, log *zap.Logger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastLag time.Time
	for {
		t.sample()
		if len(groups) > 0 && time.Since(lastLag) >= lagInterval {
			lastLag = time.Now()
			t.pollLag(ctx, admin, groups, m, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *tracker) pollLag(ctx context.Context, admin *kgo.Client, groups []string, m *metrics.Metrics, log *zap.Logger) {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lags, err := kadm.NewClient(admin).Lag(lctx, groups...)
	if err != nil {
		log.Debug("consumer lag unavailable", zap.Error(err))
		return
	}
	byTopic := map[string]map[string]int64{}
	for _, g := range lags.Sorted() {
		for topic, parts := range g.Lag {
			for p, l := range parts {
				if l.Lag < 0 {
					continue
				}
				part := strconv.Itoa(int(p))
				m.Lag.WithLabelValues(g.Group, topic, part).Set(float64(l.Lag))
				if byTopic[topic] == nil {
					byTopic[topic] = map[string]int64{}
				}
				byTopic[topic][part] = l.Lag
			}
		}
	}
	t.mu.Lock()
	t.lag = byTopic
	t.mu.Unlock()
}

// snapshot builds the /stats document.
func (t *tracker) snapshot() Stats {
	t.mu.Lock()
	samples := t.samples
	lag := t.lag
	t.mu.Unlock()
	out := Stats{Mode: t.mode, UptimeSeconds: time.Since(t.started).Seconds(), Stages: map[string]StageStats{},
		Lag: map[string]map[string]int64{}}
	for topic, parts := range lag {
		out.Lag[topic] = parts
	}
	now := sample{at: time.Now(), counts: map[string]map[string]int64{}}
	for _, st := range t.stages {
		now.counts[st.Name()] = st.Counts()
	}
	for _, st := range t.stages {
		name := st.Name()
		ss := StageStats{Running: t.running(name), Totals: now.counts[name], Rates: map[string]map[string]float64{}}
		for label, secs := range map[string]int{"1s": 1, "10s": 10, "60s": 60} {
			ss.Rates[label] = rates(samples, now, name, secs)
		}
		out.Stages[name] = ss
	}
	if tr, ok := out.Stages["transformer"]; ok {
		out.DeadLettered = tr.Totals["dead_lettered"]
	}
	return out
}

// rates is each count's change per second between now and the sample about secs before it.
func rates(samples []sample, now sample, stage string, secs int) map[string]float64 {
	out := map[string]float64{}
	var base *sample
	for i := len(samples) - 1; i >= 0; i-- {
		base = &samples[i]
		if now.at.Sub(samples[i].at) >= time.Duration(secs)*time.Second-100*time.Millisecond {
			break
		}
	}
	if base == nil {
		return out
	}
	dt := now.at.Sub(base.at).Seconds()
	if dt <= 0 {
		return out
	}
	for k, v := range now.counts[stage] {
		out[k] = float64(v-base.counts[stage][k]) / dt
	}
	return out
}
