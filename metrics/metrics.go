// Package metrics owns searchflow's Prometheus registry: the stages' running totals (read at
// scrape time, so the stages stay free of Prometheus), batch and latency histograms, consumer lag,
// the Kafka clients' own metrics (franz-go's kprom) and the HTTP server's requests. Nothing here is
// global: the pipeline builds one Metrics and hands its pieces to whoever observes.
package metrics

import (
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/searchflow/searchflow/internal/counters"
)

// Metrics is the registry and the instruments searchflow records into.
type Metrics struct {
	Registry *prometheus.Registry

	BatchRecords *prometheus.HistogramVec // stage
	BatchSeconds *prometheus.HistogramVec // stage: time to process one batch
	EndToEnd     prometheus.Histogram     // event produced -> applied to Redis
	Lag          *prometheus.GaugeVec     // group, topic, partition
	HTTPRequests *prometheus.CounterVec   // route, status
	HTTPSeconds  *prometheus.HistogramVec // route
	// Embedded mode's keeper (package keeper).
	SnapshotTime   prometheus.Gauge       // unix time of the last view snapshot written
	DeletedRecords *prometheus.CounterVec // topic: records the keeper deleted

	mu     sync.Mutex
	stages map[string]*counters.Set
}

// New returns a registry with Go and process collectors and every searchflow instrument.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		BatchRecords: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "searchflow_batch_records", Help: "Records in one batch a stage processed.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}, []string{"stage"}),
		BatchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "searchflow_batch_duration_seconds", Help: "Time a stage took to process one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"stage"}),
		EndToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "searchflow_end_to_end_latency_seconds", Help: "Time from an event's production to its apply in Redis.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "searchflow_consumer_lag", Help: "Records not yet committed by a consumer group, per partition.",
		}, []string{"group", "topic", "partition"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "searchflow_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		HTTPSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "searchflow_http_request_duration_seconds", Help: "HTTP request duration by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"route"}),
		SnapshotTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "searchflow_view_snapshot_timestamp_seconds", Help: "Unix time of the last snapshot of the embedded store's view written to DATA_DIR (0: none yet).",
		}),
		DeletedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "searchflow_embedded_deleted_records_total", Help: "Records of the embedded broker's topics deleted once nothing needed them.",
		}, []string{"topic"}),
		stages: map[string]*counters.Set{},
	}
	reg.MustRegister(collectors.NewGoCollector(
		// The live heap after the last GC: with GOGC=400 under GOMEMLIMIT the resident set stays
		// near the limit whatever is live, so long runs are judged by this one.
		collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.BatchRecords, m.BatchSeconds, m.EndToEnd, m.Lag, m.HTTPRequests, m.HTTPSeconds, m.SnapshotTime, m.DeletedRecords, stageCollector{m})
	return m
}

// KafkaHooks returns franz-go's client metrics (searchflow_kafka_*) for one client, labelled
// client=name. Give each concurrently open client its own; a client re-created after the previous
// one closed may reuse them.
func (m *Metrics) KafkaHooks(name string) *kprom.Metrics {
	return kprom.NewMetrics("searchflow_kafka", kprom.Registry(m.Registry),
		kprom.WithStaticLabel(prometheus.Labels{"client": name}))
}

// AddStage exports a stage's running totals: each counter becomes
// searchflow_stage_events_total{stage, event}, and its dead letters by reason count toward
// searchflow_dead_letters_total{reason}.
func (m *Metrics) AddStage(name string, set *counters.Set) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stages[name] = set
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Readiness exports searchflow_ready: 1 while ready reports the process ready (what /readyz
// answers), 0 otherwise. ready runs at each scrape. Call it once.
func (m *Metrics) Readiness(ready func() bool) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "searchflow_ready", Help: "1 while the process is ready (GET /readyz answers 200), 0 otherwise.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

// ObserveBatch records one processed batch.
func (m *Metrics) ObserveBatch(stage string, records int, took time.Duration) {
	m.BatchRecords.WithLabelValues(stage).Observe(float64(records))
	m.BatchSeconds.WithLabelValues(stage).Observe(took.Seconds())
}

var (
	stageEventsDesc = prometheus.NewDesc("searchflow_stage_events_total",
		"Running totals of each stage (records consumed, produced, dead-lettered, applied, errors, ...).",
		[]string{"stage", "event"}, nil)
	deadLettersDesc = prometheus.NewDesc("searchflow_dead_letters_total",
		"Records sent to the dead-letter topic, by reason.", []string{"reason"}, nil)
)

// stageCollector reads the stages' counts at scrape time.
type stageCollector struct{ m *Metrics }

func (c stageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stageEventsDesc
	ch <- deadLettersDesc
}

func (c stageCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	names := make([]string, 0, len(c.m.stages))
	for name := range c.m.stages {
		names = append(names, name)
	}
	sort.Strings(names)
	sets := make([]*counters.Set, len(names))
	for i, name := range names {
		sets[i] = c.m.stages[name]
	}
	c.m.mu.Unlock()
	reasons := map[string]int64{} // two stages may dead-letter for the same reason: one series
	for i, name := range names {
		for _, cnt := range sets[i].Counts() {
			ch <- prometheus.MustNewConstMetric(stageEventsDesc, prometheus.CounterValue, float64(cnt.Value), name, cnt.Name)
		}
		for r, n := range sets[i].DeadLetters() {
			reasons[r] += n
		}
	}
	for r, n := range reasons {
		ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.CounterValue, float64(n), r)
	}
}
