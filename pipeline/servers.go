package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"

	"github.com/searchflow/searchflow/config"
	"github.com/searchflow/searchflow/httpapi"
	"github.com/searchflow/searchflow/metrics"
)

// The HTTP servers start before Kafka and Redis are reached, so that /healthz and /readyz can
// report a service that does not answer (wrong credentials, an unknown CA, a service away)
// instead of the process saying nothing. They stop last, after the stages have drained.

// server is one listening HTTP server.
type server struct {
	name     string
	ln       net.Listener
	serve    func(net.Listener) error
	shutdown func(context.Context) error
	done     chan struct{} // closed when serve returned
	err      error         // what serve returned; read after done
}

// listen binds HTTP_ADDR (when the api stage runs) and ADMIN_ADDR (when set) and builds their
// servers; start serves them.
func (p *pipeline) listen() error {
	if p.cfg.Enabled(config.StageAPI) {
		ln, err := net.Listen("tcp", p.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("pipeline: listen on HTTP_ADDR %s: %w", p.cfg.HTTPAddr, err)
		}
		p.api = httpapi.New(nil, p.readiness, p.log.With(zap.String("stage", "api")),
			httpapi.WithStats(func() any { return p.track.snapshot() }),
			httpapi.WithMetrics(p.metrics, p.cfg.AdminAddr == ""),
			httpapi.WithCORS(p.cfg.CORSOrigins),
			httpapi.WithTokens(p.cfg.APITokens),
			httpapi.WithStreamMaxClients(p.cfg.StreamMaxClients))
		p.servers = append(p.servers, &server{name: "api", ln: ln, serve: p.api.Serve, shutdown: p.api.Shutdown})
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
		p.servers = append(p.servers, &server{name: "admin", ln: ln, serve: func(ln net.Listener) error {
			if err := admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, shutdown: admin.Shutdown})
	}
	return nil
}

// startServers serves every server in the background.
func (p *pipeline) startServers(opts Options) {
	for _, s := range p.servers {
		s.done = make(chan struct{})
		go func() {
			s.err = s.serve(s.ln)
			close(s.done)
		}()
		p.log.Info(s.name+" server listening", zap.String("addr", s.ln.Addr().String()))
	}
	if opts.OnListening != nil {
		opts.OnListening(p.addr("api"), p.addr("admin"))
	}
}

// addr is the listen address of the named server, "" when it does not run.
func (p *pipeline) addr(name string) string {
	for _, s := range p.servers {
		if s.name == name {
			return s.ln.Addr().String()
		}
	}
	return ""
}

// serveFailed returns the first server that stopped on its own, for the errgroup.
func (p *pipeline) serveFailed(ctx context.Context) error {
	cases := make(chan error, len(p.servers))
	for _, s := range p.servers {
		go func() {
			select {
			case <-s.done:
				err := s.err
				if err == nil {
					err = errors.New("stopped unexpectedly")
				}
				cases <- fmt.Errorf("%s server: %w", s.name, err)
			case <-ctx.Done():
			}
		}()
	}
	select {
	case err := <-cases:
		return err
	case <-ctx.Done():
		return nil
	}
}

// stopServers shuts the servers down, letting requests in flight finish for up to 5 s.
func (p *pipeline) stopServers() {
	for _, s := range p.servers {
		if s.done == nil {
			_ = s.ln.Close()
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.shutdown(ctx); err != nil {
			p.log.Warn("server shutdown", zap.String("server", s.name), zap.Error(err))
		}
		cancel()
		<-s.done
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
