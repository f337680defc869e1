package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is an MQTT broker on loopback.
type Broker interface {
	// URL is the broker's address as edgebridge's mqtt.url spells it.
	URL() string
	Close() error
}

// Mochi is an embedded mochi-mqtt broker: no install needed, but it does not
// keep redelivery order and drops messages for a subscriber that falls more
// than its write queue behind, so use it only where the subscriber keeps up
// and never reconnects (the demo).
type Mochi struct {
	srv  *mochi.Server
	addr string
}

// StartMochi starts an embedded broker on a free loopback port.
func StartMochi(log *slog.Logger) (*Mochi, error) {
	caps := mochi.NewDefaultServerCapabilities()
	// The default (8192) silently drops what a busy subscriber has not read.
	caps.MaximumClientWritesPending = 1 << 16
	srv := mochi.New(&mochi.Options{Capabilities: caps, Logger: log})
	if err := srv.AddHook(new(AllowAll), nil); err != nil {
		return nil, fmt.Errorf("mochi auth hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("mochi listener: %w", err)
	}
	go srv.Serve() // returns at once; listeners run in their own goroutines until Close
	return &Mochi{srv: srv, addr: tcp.Address()}, nil
}

// AllowAll is a mochi hook that lets every client connect, publish and
// subscribe (loopback only); the mqtt package's tests add it to their own
// embedded brokers. mochi's own auth.AllowHook would pull in a second YAML
// module.
type AllowAll struct{ mochi.HookBase }

func (h *AllowAll) ID() string { return "allow-all" }
func (h *AllowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *AllowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *AllowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

func (m *Mochi) URL() string  { return "tcp://" + m.addr }
func (m *Mochi) Close() error { return m.srv.Close() }

// Mosquitto is a mosquitto process with persistence on and queue limits
// raised, as an edge node runs it (docs/mqtt-broker.md). It can be
// restarted on the same ports with its persistence file.
type Mosquitto struct {
	bin, dir, conf string
	addrs          []string      // listeners: [0] on loopback, then MosquittoOptions.Hosts
	cmd            *exec.Cmd     // the running process
	done           chan struct{} // closed once cmd has exited
}

// MosquittoOptions adjust StartMosquittoWith.
type MosquittoOptions struct {
	// Hosts are addresses mosquitto also listens on, each on a free port of
	// its own (the host end of a network namespace's veth, say).
	Hosts []string
	// AutosaveInterval is how often mosquitto writes its persistence file
	// besides at shutdown, in whole seconds. Default 1s.
	AutosaveInterval time.Duration
}

// ErrNoMosquitto means mosquitto is not installed.
var ErrNoMosquitto = errors.New("mosquitto not installed (apt-get install mosquitto)")

// MosquittoPath finds the mosquitto binary.
func MosquittoPath() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoMosquitto
}

// StartMosquitto starts mosquitto on a free loopback port with its
// configuration, persistence and log (mosquitto.log) in dir, and waits until
// it accepts connections.
func StartMosquitto(dir string) (*Mosquitto, error) {
	return StartMosquittoWith(dir, MosquittoOptions{})
}

// StartMosquittoWith is StartMosquitto with options.
func StartMosquittoWith(dir string, o MosquittoOptions) (*Mosquitto, error) {
	bin, err := MosquittoPath()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	m := &Mosquitto{bin: bin, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}}
	for _, h := range o.Hosts {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port on %s: %w", h, err)
		}
		m.addrs = append(m.addrs, ln.Addr().String())
		ln.Close()
	}
	autosave := max(1, int(o.AutosaveInterval/time.Second))
	var conf strings.Builder
	for _, a := range m.addrs {
		h, p, _ := net.SplitHostPort(a)
		fmt.Fprintf(&conf, "listener %s %s\n", p, h)
	}
	fmt.Fprintf(&conf, `allow_anonymous true
# When started as root mosquitto switches to the user "mosquitto"; stay
# the current user so the persistence directory stays writable.
user %s
persistence true
persistence_location %s/
autosave_interval %d
# The bridge acks after a group commit: a larger window means larger commits.
max_inflight_messages 1000
# Hold whatever the bridge cannot take yet (0 = no limit).
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
`, u.Username, dir, autosave)
	if err := os.WriteFile(m.conf, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	if err := m.start(); err != nil {
		return nil, err
	}
	return m, nil
}

// start starts the process and waits until every listener accepts
// connections.
func (m *Mosquitto) start() error {
	logPath := filepath.Join(m.dir, "mosquitto.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start mosquitto: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	m.cmd, m.done = cmd, done
	for _, a := range m.addrs {
		if err := WaitListening(a, 20*time.Second, done); err != nil {
			m.Close()
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("mosquitto did not start: %w\n%s", err, log)
		}
	}
	return nil
}

// URL is the loopback listener's.
func (m *Mosquitto) URL() string { return "tcp://" + m.addrs[0] }

// URLs are every listener's: loopback first, then MosquittoOptions.Hosts in
// order.
func (m *Mosquitto) URLs() []string {
	urls := make([]string, len(m.addrs))
	for i, a := range m.addrs {
		urls[i] = "tcp://" + a
	}
	return urls
}

// Restart stops mosquitto with SIGTERM, so it writes its persistence file,
// and starts it again on the same ports.
func (m *Mosquitto) Restart() error {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		return errors.New("mosquitto did not stop within 30s of SIGTERM")
	}
	return m.start()
}

// Close stops mosquitto (SIGTERM, then SIGKILL after 5s).
func (m *Mosquitto) Close() error {
	if m.cmd == nil || m.cmd.Process == nil {
		return nil
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	return nil
}

// WaitListening waits until addr accepts a TCP connection, the process
// behind it exits (exited is closed), or timeout passes.
func WaitListening(addr string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("%s not listening after %s", addr, timeout)
		case <-tick.C:
		}
	}
}
