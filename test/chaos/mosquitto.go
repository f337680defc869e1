//go:build chaos

package chaos

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/devstack"
)

// mosquitto is a mosquitto process configured as docs/mqtt-broker.md tells
// an edge node to run it (persistence on, max_inflight_messages raised, the
// queue unbounded so nothing is dropped at the broker), restartable on the
// same ports with its persistence file.
type mosquitto struct {
	t         *testing.T
	dir, conf string
	addrs     []string // listeners: [0] on loopback for devices, [1] for a bridge in a namespace
	cmd       *exec.Cmd
	done      chan struct{}
	log       *os.File
}

// startMosquitto starts mosquitto with a loopback listener and, if extraHost
// is set, a second listener on that address.
func startMosquitto(t *testing.T, dir, extraHost string) *mosquitto {
	t.Helper()
	bin, err := devstack.MosquittoPath()
	if err != nil {
		t.Skip("needs mosquitto: apt-get install mosquitto (.ci/run installs it)")
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, dir: dir, addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}}
	if extraHost != "" {
		ln, err := net.Listen("tcp", net.JoinHostPort(extraHost, "0"))
		if err != nil {
			t.Fatal(err)
		}
		m.addrs = append(m.addrs, ln.Addr().String())
		ln.Close()
	}
	conf := ""
	for _, a := range m.addrs {
		h, p, _ := net.SplitHostPort(a)
		conf += fmt.Sprintf("listener %s %s\n", p, h)
	}
	conf += fmt.Sprintf(`allow_anonymous true
user %s
persistence true
persistence_location %s/
autosave_interval 60
max_inflight_messages 1000
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
`, u.Username, dir)
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.cmdPath(bin)
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) cmdPath(bin string) {
	m.t.Helper()
	logf, err := os.OpenFile(filepath.Join(m.dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a killed test
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); logf.Close(); close(done) }(m.cmd, m.done)
	for _, a := range m.addrs {
		if err := waitListening(a, 20*time.Second, m.done); err != nil {
			b, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			m.t.Fatalf("mosquitto: %v\n%s", err, b)
		}
	}
}

func (m *mosquitto) url() string { return "tcp://" + m.addrs[0] }

// bridgeURL is the listener the bridge uses.
func (m *mosquitto) bridgeURL() string { return "tcp://" + m.addrs[len(m.addrs)-1] }

// restart stops mosquitto with SIGTERM (it saves its persistence file) and
// starts it again on the same ports.
func (m *mosquitto) restart() {
	m.t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.t.Fatal("mosquitto did not stop within 30s of SIGTERM")
	}
	bin, _ := devstack.MosquittoPath()
	m.cmdPath(bin)
}

func (m *mosquitto) kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func waitListening(addr string, timeout time.Duration, done <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s", addr, timeout)
		}
	}
}
