// Package generator is the first stage: it produces raw search events to the raw topic, either
// synthetic ones (deterministic for a seed) or a replay of a file in the original project's format.
package generator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/searchflow/searchflow/internal/counters"
)

// Config is the generator's slice of the configuration.
type Config struct {
	Topic      string
	Rate       int   // events per second; 0 = as fast as the broker takes them
	MaxEvents  int64 // 0 = unbounded
	Seed       int64
	Users      int
	Hotels     int
	ReplayFile string
	// Disorder moves each synthetic search_timestamp back by up to this much (GENERATOR_DISORDER).
	Disorder time.Duration
	// LateFraction is the share of synthetic events stamped far enough back to be late
	// (GENERATOR_LATE_FRACTION); Lateness is the aggregators' ALLOWED_LATENESS they must exceed.
	LateFraction float64
	Lateness     time.Duration
	// Skew is the Zipf exponent of user and hotel popularity (GENERATOR_SKEW); 0 is uniform.
	Skew float64
}

// Generator produces raw events.
type Generator struct {
	cfg    Config
	client *kgo.Client
	log    *zap.Logger

	counts                               counters.Set
	produced, failed, canceled, badLines *counters.Counter
	errMu                                sync.Mutex
	err                                  error
}

// New returns a generator producing through client (an idempotent producer; the caller closes it).
func New(cfg Config, client *kgo.Client, log *zap.Logger) *Generator {
	g := &Generator{cfg: cfg, client: client, log: log}
	g.produced, g.failed = g.counts.New(counters.Produced), g.counts.New("failed")
	g.canceled, g.badLines = g.counts.New("canceled"), g.counts.New("bad_lines")
	return g
}

// Name implements the pipeline's stage.
func (g *Generator) Name() string { return "generator" }

// Counters returns the stage's running totals.
func (g *Generator) Counters() *counters.Set { return &g.counts }

// FinishesByDesign says that the generator returning while the pipeline runs is expected: it ran
// out of GENERATOR_MAX_EVENTS or of its replay file.
func (g *Generator) FinishesByDesign() bool { return true }

// Run produces until ctx ends, or until MaxEvents or the replay file is exhausted; then it flushes
// what it buffered and returns nil. A record the broker refuses for good fails the stage.
func (g *Generator) Run(ctx context.Context) error {
	var err error
	if g.cfg.ReplayFile != "" {
		err = g.replay(ctx)
	} else {
		err = g.synthesize(ctx)
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = nil // a drain, not a failure; a real produce error below still counts
	}
	// Flush even when draining: records already handed to the client should reach the broker.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := g.client.Flush(flushCtx); ferr != nil && err == nil {
		err = fmt.Errorf("generator: flush: %w", ferr)
	}
	if perr := g.produceErr(); perr != nil && err == nil {
		err = perr
	}
	g.log.Info("generator stopped", zap.Int64("produced", g.produced.Load()), zap.Int64("failed", g.failed.Load()),
		zap.Int64("bad_lines", g.badLines.Load()))
	return err
}

func (g *Generator) synthesize(ctx context.Context) error {
	s, err := NewSynthWith(g.cfg.Seed, g.cfg.Users, g.cfg.Hotels, SynthOptions{
		Skew: g.cfg.Skew, Disorder: g.cfg.Disorder, LateFraction: g.cfg.LateFraction, Lateness: g.cfg.Lateness,
	})
	if err != nil {
		return err
	}
	p := newPacer(g.cfg.Rate)
	for i := int64(0); g.cfg.MaxEvents == 0 || i < g.cfg.MaxEvents; i++ {
		if err := p.wait(ctx, i); err != nil {
			return err
		}
		ev := s.Event(i, time.Now())
		value, err := Encode(ev)
		if err != nil {
			return err
		}
		if err := g.produce(ctx, []byte(ev.UserID), value); err != nil {
			return err
		}
	}
	g.log.Info("generator reached GENERATOR_MAX_EVENTS", zap.Int64("events", g.cfg.MaxEvents))
	return nil
}

func (g *Generator) replay(ctx context.Context) error {
	f, err := os.Open(g.cfg.ReplayFile)
	if err != nil {
		return fmt.Errorf("generator: open replay file: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	p := newPacer(g.cfg.Rate)
	var n int64
	lines := 0
	for lineNo := 1; ; lineNo++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, rerr := r.ReadString('\n')
		if line != "" {
			lines = lineNo
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("generator: read %s line %d: %w", g.cfg.ReplayFile, lineNo, rerr)
		}
		if strings.TrimSpace(line) != "" {
			events, perr := ParseReplayLine(line)
			if perr != nil {
				g.badLine(lineNo, perr)
			}
			for _, ev := range events {
				if g.cfg.MaxEvents > 0 && n >= g.cfg.MaxEvents {
					g.log.Info("generator reached GENERATOR_MAX_EVENTS", zap.Int64("events", n))
					return nil
				}
				if err := p.wait(ctx, n); err != nil {
					return err
				}
				if err := g.produce(ctx, ev.Key, ev.Value); err != nil {
					return err
				}
				n++
			}
		}
		if rerr != nil { // io.EOF
			g.log.Info("replay finished", zap.String("file", g.cfg.ReplayFile), zap.Int("lines", lines),
				zap.Int64("events", n), zap.Int64("bad_lines", g.badLines.Load()))
			return nil
		}
	}
}

// maxLoggedBadLines caps per-line reports so a wholly broken file cannot flood the log; the
// final summary still counts them all.
const maxLoggedBadLines = 100

func (g *Generator) badLine(lineNo int, err error) {
	if g.badLines.Add(1) <= maxLoggedBadLines {
		g.log.Warn("replay: skipping unreadable line", zap.String("file", g.cfg.ReplayFile), zap.Int("line", lineNo), zap.Error(err))
	}
}

func (g *Generator) produce(ctx context.Context, key, value []byte) error {
	if err := g.produceErr(); err != nil {
		return err
	}
	g.client.Produce(ctx, &kgo.Record{Topic: g.cfg.Topic, Key: key, Value: value}, g.promise)
	return ctx.Err()
}

func (g *Generator) promise(_ *kgo.Record, err error) {
	if err == nil {
		g.produced.Add(1)
		return
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		g.canceled.Add(1) // draining: the record was never produced, nothing was lost
		return
	}
	g.failed.Add(1)
	g.errMu.Lock()
	defer g.errMu.Unlock()
	if g.err == nil {
		g.err = fmt.Errorf("generator: produce to %s: %w", g.cfg.Topic, err)
	}
}

func (g *Generator) produceErr() error {
	g.errMu.Lock()
	defer g.errMu.Unlock()
	return g.err
}

// pacer spaces events to a fixed rate; it sleeps only when more than a millisecond ahead, so high
// rates cost no per-event timer.
type pacer struct {
	rate  int
	start time.Time
}

func newPacer(rate int) *pacer { return &pacer{rate: rate, start: time.Now()} }

func (p *pacer) wait(ctx context.Context, i int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.rate <= 0 {
		return nil
	}
	due := p.start.Add(time.Duration(float64(i) / float64(p.rate) * float64(time.Second)))
	if ahead := time.Until(due); ahead > time.Millisecond {
		t := time.NewTimer(ahead)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
