package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/metrics"
)

// The HTTP servers start before Kafka and Redis are reached, so that /healthz and /readyz can
// report a service that does not answer (wrong credentials, an unknown CA, a service away)
// instead of the process saying nothing. They stop last, after the stages have drained.

// httpStage is one listening HTTP server, run as a stage that drains last. It serves from the
// moment the process starts (start), before Kafka and Redis are reached; Run only waits for the
// drain or for the server to fail; stop shuts it down once the other stages have drained.
type httpStage struct {
	name     string
	ln       net.Listener
	serve    func(net.Listener) error
	shutdown func(context.Context) error
	log      *zap.Logger

	startOnce, stopOnce sync.Once
	done                chan struct{} // closed when serve returned
	err                 error         // what serve returned; read after done
}

func (s *httpStage) Name() string { return s.name }

// start serves in the background.
func (s *httpStage) start() {
	s.startOnce.Do(func() {
		s.done = make(chan struct{})
		go func() {
			s.err = s.serve(s.ln)
			close(s.done)
		}()
	})
}

// Run waits for ctx to end (nil: the pipeline stops the server after the other stages drained)
// or for the server to fail.
func (s *httpStage) Run(ctx context.Context) error {
	s.start()
	select {
	case <-s.done:
		if s.err == nil {
			return errors.New("stopped unexpectedly")
		}
		return s.err
	case <-ctx.Done():
		return nil
	}
}

// stop shuts the server down, letting requests in flight finish for up to 5 s.
func (s *httpStage) stop() {
	s.stopOnce.Do(func() {
		s.start() // a server never started has nothing in flight: it closes at once
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.shutdown(ctx); err != nil {
			s.log.Warn("server shutdown", zap.String("server", s.name), zap.Error(err))
		}
		<-s.done
	})
}

// listen binds HTTP_ADDR (when the api stage runs) and ADMIN_ADDR (when set) and builds their
// servers; startServers serves them.
func (p *pipeline) listen() error {
	if p.cfg.Enabled(config.StageAPI) {
		ln, err := net.Listen("tcp", p.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("pipeline: listen on HTTP_ADDR %s: %w", p.cfg.HTTPAddr, err)
		}
		p.api = httpapi.New(nil, p.readiness, p.log.With(zap.String("stage", "api")),
			httpapi.WithStats(p.track.snapshot),
			httpapi.WithMetrics(p.metrics, p.cfg.AdminAddr == ""),
			httpapi.WithCORS(p.cfg.CORSOrigins),
			httpapi.WithTokens(p.cfg.APITokens),
			httpapi.WithStreamMaxClients(p.cfg.StreamMaxClients),
			httpapi.WithTrendWindows(p.cfg.TrendWindows))
		p.servers = append(p.servers, &httpStage{name: config.StageAPI, ln: ln, serve: p.api.Serve, shutdown: p.api.Shutdown, log: p.log})
		p.apiAddr = ln.Addr().String()
	}
	if p.cfg.AdminAddr != "" {
		ln, err := net.Listen("tcp", p.cfg.AdminAddr)
		if err != nil {
			for _, s := range p.servers {
				_ = s.ln.Close()
			}
			return fmt.Errorf("pipeline: listen on ADMIN_ADDR %s: %w", p.cfg.AdminAddr, err)
		}
		admin := newAdminServer(p.metrics, p.readiness, p.cfg.APITokens)
		p.servers = append(p.servers, &httpStage{name: "admin", ln: ln, serve: func(ln net.Listener) error {
			if err := admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, shutdown: admin.Shutdown, log: p.log})
		p.adminAddr = ln.Addr().String()
	}
	return nil
}

// startServers serves every server in the background.
func (p *pipeline) startServers(opts Options) {
	for _, s := range p.servers {
		s.start()
		p.log.Info(s.name+" server listening", zap.String("addr", s.ln.Addr().String()))
	}
	if opts.OnListening != nil {
		opts.OnListening(p.apiAddr, p.adminAddr)
	}
}

// stopServers stops every server (after a failed start; a drained run has stopped them).
func (p *pipeline) stopServers() {
	for _, s := range p.servers {
		s.stop()
	}
}

// newAdminServer serves /metrics, the pprof profiles and the probes on ADMIN_ADDR, apart from the
// public API: a process without the api stage is probed here. With tokens, everything but the
// probes needs one.
func newAdminServer(m *metrics.Metrics, ready func(context.Context) map[string]string, tokens []string) *http.Server {
	guarded := http.NewServeMux()
	guarded.Handle("/metrics", m.Handler())
	guarded.HandleFunc("/debug/pprof/", pprof.Index)
	guarded.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	guarded.HandleFunc("/debug/pprof/profile", pprof.Profile)
	guarded.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	guarded.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux := http.NewServeMux()
	mux.Handle("/", httpapi.RequireToken(tokens)(guarded))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if problems := ready(ctx); len(problems) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
