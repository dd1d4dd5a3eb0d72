package pipeline

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/searchflow/searchflow/metrics"
)

// newAdminServer serves /metrics and the pprof profiles on ADMIN_ADDR, apart from the public API.
func newAdminServer(m *metrics.Metrics) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
}
