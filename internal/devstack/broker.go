package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
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
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		return nil, fmt.Errorf("mochi auth hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("mochi listener: %w", err)
	}
	go srv.Serve() // returns at once; listeners run in their own goroutines until Close
	return &Mochi{srv: srv, addr: tcp.Address()}, nil
}

// allowAll lets every client connect, publish and subscribe (loopback only).
// mochi's own auth.AllowHook would pull in a second YAML module.
type allowAll struct{ mochi.HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

func (m *Mochi) URL() string  { return "tcp://" + m.addr }
func (m *Mochi) Close() error { return m.srv.Close() }

// Mosquitto is a mosquitto process with persistence on and queue limits
// raised, as an edge node runs it (docs/mqtt-broker.md).
type Mosquitto struct {
	cmd  *exec.Cmd
	addr string
	done chan error
	log  *bytes.Buffer
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
// configuration and persistence in dir, and waits until it accepts
// connections.
func StartMosquitto(dir string) (*Mosquitto, error) {
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
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
# When started as root mosquitto switches to the user "mosquitto"; stay
# the current user so the persistence directory stays writable.
user %s
persistence true
persistence_location %s/
autosave_interval 1
# The bridge acks after a group commit: a larger window means larger commits.
max_inflight_messages 1000
# Hold whatever the bridge cannot take yet (0 = no limit).
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
`, port, u.Username, dir)
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	m := &Mosquitto{addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan error, 1), log: &bytes.Buffer{}}
	m.cmd = exec.Command(bin, "-c", path)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	if err := waitListening(m.addr, 10*time.Second, m.done); err != nil {
		m.Close()
		return nil, fmt.Errorf("mosquitto did not start: %w\n%s", err, m.log.String())
	}
	return m, nil
}

func (m *Mosquitto) URL() string { return "tcp://" + m.addr }

// Close stops mosquitto (SIGTERM, then SIGKILL after 5s).
func (m *Mosquitto) Close() error {
	if m.cmd.Process == nil {
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

// waitListening waits until addr accepts a TCP connection, the process
// behind it exits (exited receives), or timeout passes.
func waitListening(addr string, timeout time.Duration, exited <-chan error) error {
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
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%s not listening after %s", addr, timeout)
		case <-tick.C:
		}
	}
}
