// Package server serves edgebridge's HTTP endpoints for Kubernetes and
// Prometheus:
//
//	/metrics       Prometheus exposition of the process registry
//	/healthz       liveness: 200 while the internal loops run
//	/readyz        readiness: 200 while the MQTT session is up and the buffer takes writes
//	/debug/pprof/  Go profiles, only when http.pprof is true, and only on
//	               http.pprof_listen (by default a loopback address)
//
// Liveness and readiness are deliberately different questions. A Kafka
// partition fails neither: the bridge is doing its job (buffering) and a
// restart would only drop the MQTT session. A pod is restarted only when a
// loop has died; it is taken out of service when it cannot accept messages.
package server

import (
	"cmp"
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

	"github.com/edgebridge/edgebridge/internal/promreg"
)

// Config configures the server.
type Config struct {
	// Listen is the host:port to serve on. yaml: http.listen. Required.
	Listen string
	// Pprof mounts /debug/pprof/. yaml: http.pprof. Default false.
	Pprof bool
	// PprofListen is the host:port of /debug/pprof/ when Pprof is on.
	// Equal to Listen (or empty), the profiles are served beside the
	// metrics; otherwise on a listener of their own, so that a metrics
	// port open to the cluster does not hand out profiles and traces
	// (each costs CPU on a small node) to whoever asks.
	// yaml: http.pprof_listen (the config package picks a loopback
	// default).
	PprofListen string
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
	pprofLn  net.Listener // nil unless pprof has a listener of its own
	pprofSrv *http.Server
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
		cfg.ShutdownTimeout = DefaultShutdownTimeout
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
		pmux := mux
		if cfg.PprofListen != "" && cfg.PprofListen != cfg.Listen {
			pln, err := net.Listen("tcp", cfg.PprofListen)
			if err != nil {
				ln.Close()
				return nil, fmt.Errorf("listen on http.pprof_listen %q: %w", cfg.PprofListen, err)
			}
			pmux = http.NewServeMux()
			s.pprofLn, s.pprofSrv = pln, s.httpServer(pmux)
		}
		pmux.HandleFunc("GET /debug/pprof/", pprof.Index)
		pmux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		pmux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.srv = s.httpServer(mux)
	return s, nil
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// No WriteTimeout: /debug/pprof/profile streams for its duration.
	}
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// PprofAddr is the bound address of /debug/pprof/: Addr when the profiles
// are served beside the metrics, nil when pprof is off.
func (s *Server) PprofAddr() net.Addr {
	switch {
	case s.pprofLn != nil:
		return s.pprofLn.Addr()
	case s.cfg.Pprof:
		return s.ln.Addr()
	}
	return nil
}

// SetStopping makes /readyz fail from now on, so Kubernetes stops sending
// work while the daemon shuts down; /metrics and /healthz keep answering.
func (s *Server) SetStopping() { s.stopping.Store(true) }

// DefaultShutdownTimeout is Config.ShutdownTimeout's default: how long
// Run waits for open requests when it stops.
const DefaultShutdownTimeout = 5 * time.Second

// Run serves until ctx is done, then waits up to Config.ShutdownTimeout for
// open requests and returns. It returns an error only if serving failed.
// When one listener fails, the other is shut down before Run returns.
func (s *Server) Run(ctx context.Context) error {
	type served struct {
		srv *http.Server
		ln  net.Listener
	}
	all := []served{{s.srv, s.ln}}
	s.log.Info("http server listening", "addr", s.ln.Addr().String(), "pprof", s.cfg.Pprof)
	if s.pprofSrv != nil {
		all = append(all, served{s.pprofSrv, s.pprofLn})
		s.log.Info("pprof listening", "addr", s.pprofLn.Addr().String())
	}
	errc := make(chan error, len(all))
	for _, x := range all {
		go func() { errc <- x.srv.Serve(x.ln) }()
	}
	running := len(all)
	var failed error
	select {
	case failed = <-errc:
		running--
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var err error
	for _, x := range all {
		if serr := x.srv.Shutdown(sctx); serr != nil {
			x.srv.Close()
			err = cmp.Or(err, serr)
		}
	}
	for ; running > 0; running-- {
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = cmp.Or(err, serr)
		}
	}
	switch {
	case failed != nil:
		return fmt.Errorf("http server: %w", failed)
	case err != nil:
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
func NewRegistry(version, revision string) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	_, err := promreg.Register(reg,
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
	if err != nil {
		return nil, fmt.Errorf("register process metrics: %w", err)
	}
	return reg, nil
}
