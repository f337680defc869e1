// Package server serves edgebridge's HTTP endpoints for Kubernetes and
// Prometheus:
//
//	/metrics       Prometheus exposition of the process registry
//	/healthz       liveness: 200 while the internal loops run
//	/readyz        readiness: 200 while the MQTT session is up and the buffer takes writes
//	/debug/pprof/  Go profiles, only when http.pprof is true
//
// Liveness and readiness are deliberately different questions. A Kafka
// partition fails neither: the bridge is doing its job (buffering) and a
// restart would only drop the MQTT session. A pod is restarted only when a
// loop has died; it is taken out of service when it cannot accept messages.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the server.
type Config struct {
	// Listen is the host:port to serve on. yaml: http.listen. Required.
	Listen string
	// Pprof mounts /debug/pprof/. yaml: http.pprof. Default false.
	Pprof bool
	// CheckTimeout bounds one health check. Not in the file. Default 2s.
	CheckTimeout time.Duration
	// ShutdownTimeout bounds the wait for open requests when Run stops. Not in
	// the file. Default 5s.
	ShutdownTimeout time.Duration
}

// Check is one named probe. Fn returns nil when healthy; its error text is
// shown to whoever asked, so it must not contain secrets. Fn is called
// concurrently from request goroutines and must not block past ctx.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Server serves the endpoints. Create it with New, then Run it.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	srv      *http.Server
	live     []Check
	ready    []Check
	stopping atomic.Bool
}

// New binds cfg.Listen (so a taken port fails at start, not later) and
// prepares the handlers. g is what /metrics exposes.
func New(cfg Config, log *slog.Logger, g prometheus.Gatherer, live, ready []Check) (*Server, error) {
	if cfg.Listen == "" {
		return nil, errors.New("http.listen is required")
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on http.listen %q: %w", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, log: log.With("component", "http"), ln: ln, live: live, ready: ready}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		EnableOpenMetrics: true,
		// Served as is: the page is ~25 KB and scraped inside the
		// cluster, and gzip would allocate ~1.5 MB (a flate compressor)
		// per scrape on a node with little memory.
		DisableCompression: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.serveChecks(w, r, s.live, false) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.serveChecks(w, r, s.ready, true) })
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// No WriteTimeout: /debug/pprof/profile streams for its duration.
	}
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// SetStopping makes /readyz fail from now on, so Kubernetes stops sending
// work while the daemon shuts down; /metrics and /healthz keep answering.
func (s *Server) SetStopping() { s.stopping.Store(true) }

// Run serves until ctx is done, then waits up to Config.ShutdownTimeout for
// open requests and returns. It returns an error only if serving failed.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("http server listening", "addr", s.ln.Addr().String(), "pprof", s.cfg.Pprof)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("http server shutdown: %w", err)
	}
	return nil
}

// serveChecks runs every check (sequentially: they are cheap reads of state)
// and answers 200 with "ok" lines, or 503 listing every failing check.
// ?verbose lists passing checks too.
func (s *Server) serveChecks(w http.ResponseWriter, r *http.Request, checks []Check, readiness bool) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
	defer cancel()
	var b strings.Builder
	failed := false
	if readiness && s.stopping.Load() {
		failed = true
		b.WriteString("[-] shutdown: shutting down\n")
	}
	for _, c := range checks {
		if err := c.Fn(ctx); err != nil {
			failed = true
			fmt.Fprintf(&b, "[-] %s: %v\n", c.Name, err)
		} else {
			fmt.Fprintf(&b, "[+] %s ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if failed {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%sfailed\n", b.String())
		return
	}
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		b.WriteString("ok\n")
		fmt.Fprint(w, b.String())
		return
	}
	fmt.Fprint(w, "ok\n")
}

// NewRegistry returns a registry with the Go runtime and process collectors
// and edgebridge_build_info{version,revision,goversion} = 1; every component
// registers its own metrics on it.
func NewRegistry(version, revision string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgebridge_build_info",
			Help: "A metric with a constant '1' value labeled by the version and revision edgebridge was built from, and the Go version.",
			ConstLabels: prometheus.Labels{
				"version":   version,
				"revision":  revision,
				"goversion": runtime.Version(),
			},
		}, func() float64 { return 1 }),
	)
	return reg
}
