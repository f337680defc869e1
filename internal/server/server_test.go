package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestServer(t *testing.T, cfg Config, live, ready []Check) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	reg, err := NewRegistry("v1.2.3", "abc123")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler), reg, live, ready)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.ln.Close()
		if s.pprofLn != nil {
			s.pprofLn.Close()
		}
	})
	return s
}

// answers fails the test unless path answers code with a body holding
// every one of want.
func answers(t *testing.T, s *Server, path string, code int, want ...string) {
	t.Helper()
	got, body := get(t, s, path)
	ok := got == code
	for _, w := range want {
		ok = ok && strings.Contains(body, w)
	}
	if !ok {
		t.Errorf("%s = %d %q, want %d with %q", path, got, body, code, want)
	}
}

// answersOK fails the test unless path answers 200 "ok".
func answersOK(t *testing.T, s *Server, path string) {
	t.Helper()
	if code, body := get(t, s, path); code != http.StatusOK || body != "ok\n" {
		t.Errorf("%s = %d %q, want 200 ok", path, code, body)
	}
}

func get(t *testing.T, s *Server, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.srv.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetrics(t *testing.T) {
	s := newTestServer(t, Config{}, nil, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip") // as Prometheus asks
	s.srv.Handler.ServeHTTP(rec, req)
	code, body := rec.Code, rec.Body.String()
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if enc := rec.Header().Get("Content-Encoding"); enc != "" {
		t.Errorf("/metrics served with Content-Encoding %q: each scrape would build a compressor", enc)
	}
	for _, want := range []string{
		`edgebridge_build_info{goversion="go`,
		`revision="abc123",version="v1.2.3"} 1`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// A pod whose Kafka is unreachable is doing its job (buffering): /healthz
// must stay 200, or Kubernetes would restart it and drop its MQTT session.
// Only the checks the daemon registers for liveness count.
func TestHealthzIgnoresReadiness(t *testing.T) {
	var loopDead atomic.Bool
	live := []Check{{Name: "loops", Fn: func(context.Context) error {
		if loopDead.Load() {
			return errors.New("forward loop exited")
		}
		return nil
	}}}
	ready := []Check{{Name: "mqtt", Fn: func(context.Context) error { return errors.New("session down") }}}
	s := newTestServer(t, Config{}, live, ready)

	answersOK(t, s, "/healthz") // with mqtt down
	answers(t, s, "/readyz", http.StatusServiceUnavailable, "[-] mqtt: session down")
	loopDead.Store(true)
	answers(t, s, "/healthz", http.StatusServiceUnavailable, "forward loop exited")
}

func TestReadyz(t *testing.T) {
	var bufferFull atomic.Bool
	ready := []Check{
		{Name: "mqtt", Fn: func(context.Context) error { return nil }},
		{Name: "buffer", Fn: func(context.Context) error {
			if bufferFull.Load() {
				return errors.New("full")
			}
			return nil
		}},
	}
	s := newTestServer(t, Config{}, nil, ready)
	answersOK(t, s, "/readyz")
	answers(t, s, "/readyz?verbose", http.StatusOK, "[+] buffer ok")
	bufferFull.Store(true)
	answers(t, s, "/readyz", http.StatusServiceUnavailable, "[-] buffer: full", "[+] mqtt ok")
	bufferFull.Store(false)
	s.SetStopping()
	answers(t, s, "/readyz", http.StatusServiceUnavailable, "shutting down")
	answers(t, s, "/healthz", http.StatusOK) // while stopping
}

// A check that hangs is cut off by CheckTimeout instead of hanging the probe.
func TestCheckTimeout(t *testing.T) {
	ready := []Check{{Name: "slow", Fn: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}}
	s := newTestServer(t, Config{CheckTimeout: 10 * time.Millisecond}, nil, ready)
	if code, body := get(t, s, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "deadline exceeded") {
		t.Errorf("/readyz = %d %q", code, body)
	}
}

// /debug/pprof/ is served only when enabled, and on http.pprof_listen: a
// metrics port open to the cluster does not hand out profiles.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		onMetrics    bool // /debug/pprof/ answers on Listen
		ownListener  bool // and on a listener of its own
		pprofAddrNil bool
	}{
		{name: "off", cfg: Config{PprofListen: "127.0.0.1:0"}, pprofAddrNil: true},
		{name: "beside the metrics", cfg: Config{Pprof: true}, onMetrics: true},
		{name: "beside the metrics, named", cfg: Config{Listen: "127.0.0.1:0", Pprof: true, PprofListen: "127.0.0.1:0"}, onMetrics: true},
		{name: "on its own listener", cfg: Config{Listen: "0.0.0.0:0", Pprof: true, PprofListen: "localhost:0"}, ownListener: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.cfg, nil, nil)
			want := http.StatusNotFound
			if tt.onMetrics {
				want = http.StatusOK
			}
			if code, _ := get(t, s, "/debug/pprof/"); code != want {
				t.Errorf("/debug/pprof/ on http.listen: status %d, want %d", code, want)
			}
			if (s.PprofAddr() == nil) != tt.pprofAddrNil {
				t.Errorf("PprofAddr() = %v", s.PprofAddr())
			}
			if !tt.ownListener {
				if s.pprofLn != nil {
					t.Errorf("a pprof listener on %s, want none", s.pprofLn.Addr())
				}
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			addr := s.PprofAddr().String()
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("pprof listens on %s, want loopback", addr)
			}
			resp, err := http.Get("http://" + addr + "/debug/pprof/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
				t.Errorf("GET /debug/pprof/ on http.pprof_listen = %d", resp.StatusCode)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			if _, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
				t.Error("pprof still answers after Run returned")
			}
		})
	}
}

// A pprof port that is taken fails New, naming its key, and leaves the
// metrics port free.
func TestPprofListenError(t *testing.T) {
	taken := newTestServer(t, Config{}, nil, nil)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := free.Addr().String()
	free.Close()
	_, err = New(Config{Listen: listen, Pprof: true, PprofListen: taken.Addr().String()}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "http.pprof_listen") {
		t.Fatalf("pprof on a taken port: %v", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("http.listen %s not released after the failed New: %v", listen, err)
	}
	ln.Close()
}

func TestListenError(t *testing.T) {
	s := newTestServer(t, Config{}, nil, nil)
	_, err := New(Config{Listen: s.Addr().String()}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("second listen on the same port: %v", err)
	}
}

func TestRunServesAndStops(t *testing.T) {
	s := newTestServer(t, Config{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	resp, err := http.Get("http://" + s.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("GET /healthz = %d %q", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/healthz"); err == nil {
		t.Error("server still answers after Run returned")
	}
}
