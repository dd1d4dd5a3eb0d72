package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/metrics"
)

// tracker samples the stages' counts every second and the consumer groups' lag every few
// seconds, for /stats, /stream, the lag gauges and the stall check of /readyz.
type tracker struct {
	started time.Time
	mode    map[string]string
	running func(string) bool

	mu      sync.Mutex
	stages  []Stage
	samples []sample // oldest first, at most window+1
	lag     map[string]map[string]int64
	stalled map[string]string // "<group> <topic>/<partition>" -> why, for /readyz
}

type sample struct {
	at     time.Time
	counts map[string]map[string]int64
}

const (
	statsWindow = 60 // seconds of samples kept, the longest rate window
	lagInterval = 5 * time.Second
)

func (t *tracker) setStages(stages []Stage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stages = stages
}

func (t *tracker) currentStages() []Stage {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stages
}

func (t *tracker) sample() {
	s := sample{at: time.Now(), counts: map[string]map[string]int64{}}
	for _, st := range t.currentStages() {
		if set := countersOf(st); set != nil {
			s.counts[st.Name()] = set.Map()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, s)
	if len(t.samples) > statsWindow+1 {
		t.samples = t.samples[1:]
	}
}

// run samples every second until ctx ends and, in its own goroutine, reads the groups' lag every
// lagInterval.
func (t *tracker) run(ctx context.Context, admin *kgo.Client, groups []string, stallAfter time.Duration,
	probe func() (*lagProbe, error), m *metrics.Metrics, log *zap.Logger) {
	var wg sync.WaitGroup
	if len(groups) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &lagWatch{admin: admin, groups: groups, stallAfter: stallAfter, newProbe: probe, metrics: m, log: log,
				since: map[partitionKey]progressMark{}, empty: map[partitionKey]emptyMark{}}
			defer w.close()
			tick := time.NewTicker(lagInterval)
			defer tick.Stop()
			for {
				lag, stalled := w.poll(ctx)
				if lag != nil {
					t.mu.Lock()
					t.lag, t.stalled = lag, stalled
					t.mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t.sample()
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
	}
}

// stalls returns the partitions that have records left and have not moved for the stall
// timeout, for /readyz.
func (t *tracker) stalls() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stalled
}

// snapshot builds the /stats document.
func (t *tracker) snapshot() httpapi.Stats {
	t.mu.Lock()
	samples := t.samples
	lag := t.lag
	stages := t.stages
	t.mu.Unlock()
	out := httpapi.Stats{Mode: t.mode, UptimeSeconds: time.Since(t.started).Seconds(), Stages: map[string]httpapi.StageStats{},
		Lag: map[string]map[string]int64{}}
	for topic, parts := range lag {
		out.Lag[topic] = parts
	}
	now := sample{at: time.Now(), counts: map[string]map[string]int64{}}
	for _, st := range stages {
		if set := countersOf(st); set != nil {
			now.counts[st.Name()] = set.Map()
		}
	}
	for _, st := range stages {
		name := st.Name()
		ss := httpapi.StageStats{Running: t.running(name), Totals: now.counts[name], Rates: map[string]map[string]float64{}}
		for label, secs := range map[string]int{"1s": 1, "10s": 10, "60s": 60} {
			ss.Rates[label] = rates(samples, now, name, secs)
		}
		out.Stages[name] = ss
		if set := countersOf(st); set != nil {
			for _, n := range set.DeadLetters() {
				out.DeadLettered += n
			}
		}
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

// A group's lag (end offset minus committed offset) overstates what is left to read: a
// transactional topic ends with a commit marker, so a caught-up group still trails by one, and
// records of aborted transactions count too. lagWatch reads a partition that has not moved for a
// while from its committed offset, as a read_committed consumer would, to learn whether any record
// is really left: if none, its lag is 0; if some are and it has not moved for stallAfter, it has
// stalled.

type partitionKey struct {
	group, topic string
	partition    int32
}

func (k partitionKey) String() string {
	return fmt.Sprintf("%s %s/%d", k.group, k.topic, k.partition)
}

// progressMark is the committed offset a partition was last seen at, and since when.
type progressMark struct {
	commit int64
	since  time.Time
}

// emptyMark remembers that nothing was left to read between a committed and an end offset.
type emptyMark struct{ commit, end int64 }

type lagWatch struct {
	admin      *kgo.Client
	groups     []string
	stallAfter time.Duration
	newProbe   func() (*lagProbe, error)
	metrics    *metrics.Metrics
	log        *zap.Logger

	since   map[partitionKey]progressMark
	empty   map[partitionKey]emptyMark
	stalled map[string]string // the last reading's stalls
	probe   *lagProbe
}

func (w *lagWatch) close() {
	if w.probe != nil {
		w.probe.close()
	}
}

// poll reads the groups' lag once. It returns the lag per topic and partition (0 where nothing is
// left to read) and the stalled partitions; nil lag when the lag could not be read.
func (w *lagWatch) poll(ctx context.Context) (map[string]map[string]int64, map[string]string) {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lags, err := kadm.NewClient(w.admin).Lag(lctx, w.groups...)
	if err != nil {
		w.log.Debug("consumer lag unavailable", zap.Error(err))
		return nil, nil
	}
	now := time.Now()
	type entry struct {
		key    partitionKey
		lag    int64
		from   int64 // where a reader of the group starts: its commit, or the log start
		end    int64
		idle   time.Duration
		unread bool // nothing moved since the last poll: read it to learn what is left
	}
	var entries []entry
	var targets []probeTarget
	for _, g := range lags.Sorted() {
		for topic, parts := range g.Lag {
			for p, l := range parts {
				if l.Err != nil || l.Lag < 0 {
					continue
				}
				e := entry{key: partitionKey{g.Group, topic, p}, lag: l.Lag, from: l.Commit.At, end: l.End.Offset}
				if e.from < 0 {
					e.from = l.Start.Offset
				}
				mark, seen := w.since[e.key]
				if !seen || mark.commit != l.Commit.At {
					mark = progressMark{commit: l.Commit.At, since: now}
					w.since[e.key] = mark
				}
				e.idle = now.Sub(mark.since)
				// Only a partition that has not moved since the last poll is worth reading — one that
				// moves is not stalled, and its lag is about to change anyway — or one whose lag may
				// be no more than its commit marker (one fetch tells).
				if e.lag > 0 && (seen && e.idle >= lagInterval/2 || e.lag <= 2) {
					if m, ok := w.empty[e.key]; ok && m.commit == e.from && m.end == e.end {
						e.lag = 0
					} else {
						e.unread = true
						targets = append(targets, probeTarget{topic: topic, partition: p, from: e.from, end: e.end})
					}
				}
				entries = append(entries, e)
			}
		}
	}
	found := map[probeTarget]bool{}
	if len(targets) > 0 {
		if found, err = w.read(ctx, targets); err != nil {
			w.log.Debug("cannot tell what is left to read", zap.Error(err))
		}
	}
	byTopic := map[string]map[string]int64{}
	stalled := map[string]string{}
	for _, e := range entries {
		if e.unread {
			e.lag = w.judge(e.key, e.lag, e.from, e.end, e.idle, found, err != nil, stalled)
		}
		part := strconv.Itoa(int(e.key.partition))
		w.metrics.Lag.WithLabelValues(e.key.group, e.key.topic, part).Set(float64(e.lag))
		if byTopic[e.key.topic] == nil {
			byTopic[e.key.topic] = map[string]int64{}
		}
		byTopic[e.key.topic][part] = e.lag
	}
	w.stalled = stalled
	return byTopic, stalled
}

// judge turns what the probe found for a partition that has not moved into its lag (0 when no
// record is left) and, past stallAfter, a stall in stalled. probeFailed keeps the last reading's
// stall rather than guessing.
func (w *lagWatch) judge(key partitionKey, lag, from, end int64, idle time.Duration, found map[probeTarget]bool,
	probeFailed bool, stalled map[string]string) int64 {
	left, known := found[probeTarget{topic: key.topic, partition: key.partition, from: from, end: end}]
	switch {
	case known && !left:
		w.empty[key] = emptyMark{commit: from, end: end}
		return 0
	case idle < w.stallAfter:
	case known:
		stalled[key.String()] = fmt.Sprintf("%d records left to read from offset %d, no progress for %s",
			lag, from, idle.Round(time.Second))
	case !probeFailed:
		stalled[key.String()] = fmt.Sprintf("no progress for %s at offset %d: the records after it are held by a transaction still open",
			idle.Round(time.Second), from)
	default:
		if why, ok := w.stalled[key.String()]; ok {
			stalled[key.String()] = why
		}
	}
	return lag
}

// read asks the probe which targets hold a committed record.
func (w *lagWatch) read(ctx context.Context, targets []probeTarget) (map[probeTarget]bool, error) {
	if w.probe == nil {
		p, err := w.newProbe()
		if err != nil {
			return nil, err
		}
		w.probe = p
	}
	return w.probe.anyRecords(ctx, targets)
}

// probeTarget is a range [from, end) of one partition.
type probeTarget struct {
	topic     string
	partition int32
	from, end int64
}

// lagProbe reads partitions from given offsets as a read_committed consumer would, with plain
// Fetch requests: each answer says how far the partition was read, so "nothing left" is known,
// not guessed from a quiet while.
type lagProbe struct {
	cl *kgo.Client
}

// newLagProbe makes the probe's client.
func (p *pipeline) newLagProbe() (*lagProbe, error) {
	cl, err := kgo.NewClient(p.clientOpts("lag")...)
	if err != nil {
		return nil, fmt.Errorf("pipeline: lag probe client: %w", err)
	}
	return &lagProbe{cl: cl}, nil
}

func (lp *lagProbe) close() { lp.cl.Close() }

// anyRecords reports, for each target, whether a committed record lies in its range. A target it
// cannot decide — its rest lies beyond an open transaction, or its partition could not be read —
// is left out of the map.
func (lp *lagProbe) anyRecords(ctx context.Context, targets []probeTarget) (map[probeTarget]bool, error) {
	var topics []string
	for _, t := range targets {
		topics = append(topics, t.topic)
	}
	md, err := kadm.NewClient(lp.cl).Metadata(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	out := map[probeTarget]bool{}
	var errs []error
	for _, t := range targets {
		td, ok := md.Topics[t.topic]
		pd, pok := td.Partitions[t.partition]
		if !ok || !pok || td.Err != nil || pd.Err != nil {
			errs = append(errs, fmt.Errorf("no leader known for %s/%d", t.topic, t.partition))
			continue
		}
		left, known, err := lp.read(ctx, pd.Leader, td.ID, t)
		switch {
		case err != nil:
			errs = append(errs, err)
		case known:
			out[t] = left
		}
	}
	return out, errors.Join(errs...)
}

// read fetches t from its start until it finds a committed record in range (true), reaches the
// end (false), or cannot go on (not known).
func (lp *lagProbe) read(ctx context.Context, leader int32, topicID [16]byte, t probeTarget) (left, known bool, err error) {
	from := t.from
	for range 32 {
		if from >= t.end {
			return false, true, nil
		}
		req := kmsg.NewPtrFetchRequest()
		req.IsolationLevel = 1 // read_committed
		req.MaxBytes = 1 << 20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = t.topic, topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = t.partition, from, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, lp.cl.Broker(int(leader)))
		if err != nil {
			return false, false, fmt.Errorf("fetch %s/%d: %w", t.topic, t.partition, err)
		}
		var part *kmsg.FetchResponseTopicPartition
		for i := range resp.Topics {
			if resp.Topics[i].Topic == t.topic || resp.Topics[i].TopicID == topicID {
				for j := range resp.Topics[i].Partitions {
					if resp.Topics[i].Partitions[j].Partition == t.partition {
						part = &resp.Topics[i].Partitions[j]
					}
				}
			}
		}
		if part == nil {
			return false, false, fmt.Errorf("fetch %s/%d: the partition is not in the answer", t.topic, t.partition)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: from, IsolationLevel: kgo.ReadCommitted(),
			Topic: t.topic, Partition: t.partition}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return false, false, fmt.Errorf("fetch %s/%d: %w", t.topic, t.partition, fp.Err)
		}
		for _, r := range fp.Records {
			if r.Offset >= t.from && r.Offset < t.end {
				return true, true, nil
			}
		}
		if next <= from {
			return false, false, nil // the rest lies beyond the last stable offset: an open transaction
		}
		from = next
	}
	return false, false, nil
}
