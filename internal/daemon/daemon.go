// Package daemon wires edgebridge's components into the running process:
// config -> logger and metrics registry -> buffer -> forwarder -> intake ->
// HTTP server, and shuts them down in the order that keeps the delivery
// contract. cmd/edgebridge only calls Main.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/config"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
	"github.com/edgebridge/edgebridge/internal/server"
)

// Build identifies the binary in edgebridge_build_info and `edgebridge version`.
type Build struct {
	Version  string
	Revision string
}

// ErrComponent wraps the error of a component that stopped by itself.
var ErrComponent = errors.New("component failed")

// ErrBufferDamaged ends Run when a buffer file was found damaged while
// running (buffer.Queue.Damaged): the next start quarantines it.
var ErrBufferDamaged = errors.New("buffer file damaged: restart to quarantine it")

// component is a long-lived part with a Run loop.
type component struct {
	name    string
	run     func(context.Context) error
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	stopped atomic.Bool // Run returned
}

func start(name string, run func(context.Context) error, failed chan<- *component) *component {
	ctx, cancel := context.WithCancel(context.Background())
	c := &component{name: name, run: run, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = c.run(ctx)
		c.stopped.Store(true)
		if ctx.Err() == nil { // returned without being asked to
			failed <- c
		}
	}()
	return c
}

// stop asks c to return and waits until it has.
func (c *component) stop() error {
	c.cancel()
	<-c.done
	return c.err
}

// Run runs edgebridge with cfg until ctx is done or a component fails, then
// shuts down:
//
//  1. /readyz turns 503, so Kubernetes sends no more work.
//  2. The intake stops taking messages; within mqtt.drain_timeout it commits
//     and acknowledges what it already received. What it could not commit is
//     not acknowledged: the broker keeps it and redelivers it on the next
//     start.
//  3. The forwarder flushes what is in flight to Kafka within
//     shutdown_timeout and closes the Kafka client. What Kafka did not
//     acknowledge stays in the buffer.
//  4. The buffer is closed; what it still holds is logged and sent after the
//     next start.
//  5. The HTTP server stops.
//
// Every step only waits: committed records are on disk before their PUBACK,
// so a second signal may end the process at any point without loss.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, build Build) error {
	reg, err := server.NewRegistry(build.Version, build.Revision)
	if err != nil {
		return err
	}
	log.Info("starting edgebridge", "version", build.Version, "revision", build.Revision,
		"node_id", cfg.NodeID, "mqtt_url", cfg.MQTT.URL, "mqtt_client_id", cfg.MQTT.ClientID,
		"kafka_brokers", cfg.Forward.Brokers, "buffer_dir", cfg.Buffer.Dir, "routes", len(cfg.MQTT.Routes))

	if err := warnInsecure(cfg, log, reg); err != nil {
		return err
	}

	q, err := buffer.Open(cfg.Buffer, log, reg)
	if err != nil {
		return err
	}
	closeBuffer := sync.OnceValue(func() error {
		st := q.Stats()
		err := q.Close()
		if st.Records > 0 || st.DeadLetters > 0 {
			log.Info("records stay buffered for the next start", "records", st.Records, "bytes", st.Bytes,
				"dead_letters", st.DeadLetters, "oldest", st.Oldest)
		}
		return err
	})
	defer closeBuffer()

	fwd, err := forward.New(cfg.Forward, log, reg, q)
	if err != nil {
		return err
	}
	sub, err := mqtt.New(cfg.MQTT, log, reg, q)
	if err != nil {
		return err
	}

	failed := make(chan *component, 3)
	var comps []*component // set before the server answers a probe
	var compsReady atomic.Bool
	live := []server.Check{{Name: "loops", Fn: func(context.Context) error {
		if !compsReady.Load() {
			return nil
		}
		for _, c := range comps {
			if c.stopped.Load() {
				return fmt.Errorf("%s loop stopped", c.name)
			}
		}
		return nil
	}}}
	ready := []server.Check{
		{Name: "mqtt", Fn: func(context.Context) error {
			if !sub.Ready() {
				return errors.New("not connected and subscribed to the broker")
			}
			return nil
		}},
		{Name: "buffer", Fn: func(context.Context) error { return q.Writable() }},
	}
	srv, err := server.New(server.Config{Listen: cfg.HTTP.Listen, Pprof: cfg.HTTP.Pprof, PprofListen: cfg.HTTP.PprofListen}, log, reg, live, ready)
	if err != nil {
		return err
	}

	// Start downstream first: forwarder, then intake, then the endpoints.
	fwdC := start("forward", fwd.Run, failed)
	subC := start("mqtt", sub.Run, failed)
	comps = []*component{fwdC, subC}
	compsReady.Store(true)
	httpC := start("http", srv.Run, failed)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "shutdown_timeout", cfg.ShutdownTimeout)
	case <-q.Damaged():
		// Appends already stopped; the shutdown below still flushes what
		// Kafka can take and closes the healthy files.
		runErr = fmt.Errorf("%w: %v", ErrBufferDamaged, q.Writable())
		log.Error("buffer file damaged while running; shutting down so that the next start quarantines it", "err", q.Writable())
	case c := <-failed:
		runErr = fmt.Errorf("%w: %s: %v", ErrComponent, c.name, c.err)
		if c.err == nil {
			runErr = fmt.Errorf("%w: %s stopped", ErrComponent, c.name)
		}
		log.Error("component stopped; shutting down", "component", c.name, "err", c.err)
	}

	srv.SetStopping()
	if err := subC.stop(); err != nil && runErr == nil {
		runErr = fmt.Errorf("%w: mqtt: %v", ErrComponent, err)
	}
	log.Info("intake stopped")
	if err := fwdC.stop(); err != nil && runErr == nil {
		runErr = fmt.Errorf("%w: forward: %v", ErrComponent, err)
	}
	if err := closeBuffer(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close buffer: %w", err)
	}
	if err := httpC.stop(); err != nil && runErr == nil {
		runErr = fmt.Errorf("%w: http: %v", ErrComponent, err)
	}
	if runErr == nil {
		log.Info("shutdown complete")
	}
	return runErr
}

// warnInsecure makes the settings that turn a security check off visible:
// a warning at start and a gauge an alert can watch, since nothing else
// about a bridge that accepts any certificate looks wrong.
func warnInsecure(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgebridge_kafka_tls_insecure_skip_verify",
		Help: "1 while kafka.tls.insecure_skip_verify turns off the check of the brokers' certificates: anyone on the path can pose as Kafka.",
	})
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register daemon metrics: %w", err)
	}
	if cfg.Forward.TLS.InsecureSkipVerify {
		g.Set(1)
		log.Warn("kafka broker certificates are not verified: kafka.tls.insecure_skip_verify is for tests only, anyone on the path can pose as kafka",
			"component", "forward")
	}
	return nil
}
