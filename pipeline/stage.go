package pipeline

import (
	"context"
	"fmt"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/searchflow/searchflow/internal/counters"
)

// Stage is one long-running part of the process: the generator, the transformer, the
// aggregator, and the HTTP servers.
type Stage interface {
	Name() string
	// Run works until ctx ends, then drains and returns nil; an error stops the whole process.
	Run(ctx context.Context) error
}

// What a stage may also do, found with a type assertion.
type (
	// reporter says why the stage cannot make progress right now ("" when it can), for /readyz.
	reporter interface{ Problem() string }
	// finite is a stage that may return nil while the pipeline runs: it finished by design.
	finite interface{ FinishesByDesign() bool }
	// counted keeps running totals, read for /stats, /metrics and the periodic log line.
	counted interface{ Counters() *counters.Set }
	// drainsLast keeps serving while the other stages drain, and is stopped after them: the
	// HTTP servers, so that /readyz and the API answer through the drain.
	drainsLast interface {
		// stop ends it, letting what is in flight finish.
		stop()
	}
)

// countersOf returns the stage's running totals, nil when it keeps none.
func countersOf(s Stage) *counters.Set {
	if c, ok := s.(counted); ok {
		return c.Counters()
	}
	return nil
}

// launch runs s in g. A stage that returns nil while gctx lives has stopped by surprise unless it
// is finite; a stage that drains last is stopped once every other stage (workers, counted by the
// caller before any stage is launched) returned.
func (p *pipeline) launch(g *errgroup.Group, gctx context.Context, s Stage, workers *sync.WaitGroup) {
	last, isLast := s.(drainsLast)
	p.setRunning(s.Name(), true)
	g.Go(func() error {
		defer p.setRunning(s.Name(), false)
		if !isLast {
			defer workers.Done()
		}
		log := p.log.With(zap.String("stage", s.Name()))
		log.Info("stage started")
		err := s.Run(gctx)
		if isLast && err == nil {
			workers.Wait()
			last.stop()
		}
		f, isFinite := s.(finite)
		switch {
		case err != nil:
			log.Error("stage failed", zap.Error(err))
			return fmt.Errorf("%s: %w", s.Name(), err)
		case gctx.Err() == nil && !(isFinite && f.FinishesByDesign()):
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
