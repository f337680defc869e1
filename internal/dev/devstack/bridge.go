package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BridgeConfig is what the dev stack puts into edgebridge's config file.
// The buffer's sizes and policy are config strings ("2GiB", "drop_oldest");
// empty keeps the dev stack's: 256MiB, 8MiB segments, 16MiB free disk, block.
type BridgeConfig struct {
	NodeID       string
	MQTTURL      string
	Brokers      []string
	Topic        string
	BufferDir    string
	MaxBytes     string
	SegmentBytes string
	MinFreeDisk  string
	WhenFull     string
	HTTPListen   string
	LogFormat    string // json or text
}

// YAML renders the config file. Kafka timeouts and retries are paced for
// tests that cut or blackhole Kafka for seconds, and drops are logged each
// second (production keeps the defaults).
func (c BridgeConfig) YAML() string {
	q := strconv.Quote
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	brokers := make([]string, len(c.Brokers))
	for i, b := range c.Brokers {
		brokers[i] = q(b)
	}
	return fmt.Sprintf(`# written by the edgebridge dev stack
node_id: %s
shutdown_timeout: 10s
mqtt:
  url: %s
  client_id: %s
routes:
  - filter: devices/+/telemetry
    kafka_topic: %s
buffer:
  dir: %s
  max_bytes: %s
  segment_bytes: %s
  min_free_disk: %s
  when_full: %s
  drop_log_interval: 1s
kafka:
  brokers: [%s]
  linger: 5ms
  dial_timeout: 2s
  produce_request_timeout: 3s
  request_timeout_overhead: 2s
  metadata_min_age: 500ms
  metadata_max_age: 5s
  backoff:
    initial: 100ms
    max: 1s
http:
  listen: %s
log:
  level: info
  format: %s
`, q(c.NodeID), q(c.MQTTURL), q("edgebridge-"+c.NodeID), q(c.Topic), q(c.BufferDir),
		or(c.MaxBytes, "256MiB"), or(c.SegmentBytes, "8MiB"), or(c.MinFreeDisk, "16MiB"), or(c.WhenFull, "block"),
		strings.Join(brokers, ", "), q(c.HTTPListen), or(c.LogFormat, "text"))
}

// BuildBridge compiles cmd/edgebridge into dir and returns the binary's path.
func BuildBridge(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "edgebridge")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/edgebridge/edgebridge/cmd/edgebridge").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build edgebridge: %w\n%s", err, out)
	}
	return bin, nil
}

// Bridge runs the real edgebridge binary as a child process.
type Bridge struct {
	Bin     string
	Config  string    // path of the config file
	Output  io.Writer // its stdout and stderr
	Metrics string    // host:port of its http.listen
	Env     []string  // added to the environment it inherits (GOGC=50, say)

	cmd  *exec.Cmd
	done chan error
}

// Start starts the binary and waits until /healthz answers 200.
func (b *Bridge) Start(ctx context.Context) error {
	b.cmd = exec.Command(b.Bin, "run", "--config", b.Config)
	b.cmd.Stdout, b.cmd.Stderr = b.Output, b.Output
	if len(b.Env) > 0 {
		b.cmd.Env = append(os.Environ(), b.Env...)
	}
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.Bin, err)
	}
	b.done = make(chan error, 1)
	go func() { b.done <- b.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := b.get("/healthz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case err := <-b.done:
			b.done <- err
			return fmt.Errorf("edgebridge exited at start: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edgebridge not healthy after 30s")
		}
	}
}

// WaitReady waits until /readyz answers 200 (MQTT session up).
func (b *Bridge) WaitReady(ctx context.Context) error {
	for {
		if code, _, err := b.get("/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			_, body, _ := b.get("/readyz")
			return fmt.Errorf("edgebridge not ready: %v: %s", ctx.Err(), body)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (b *Bridge) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.done
	b.cmd = nil
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, returning its
// exit error (nil for status 0); after timeout it kills it.
func (b *Bridge) Stop(timeout time.Duration) error {
	// An error means it is not running or has already exited: wait sees to
	// both.
	_ = b.Signal(syscall.SIGTERM)
	exited, err := b.wait(timeout)
	if !exited {
		return fmt.Errorf("edgebridge did not stop within %s after SIGTERM", timeout)
	}
	return err
}

// PID is the running process's id.
func (b *Bridge) PID() int { return b.cmd.Process.Pid }

// Signal sends sig to the running bridge.
func (b *Bridge) Signal(sig os.Signal) error {
	if b.cmd == nil || b.cmd.Process == nil {
		return errors.New("edgebridge is not running")
	}
	return b.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the bridge to exit and returns its exit
// error (nil for status 0); after timeout it kills it.
func (b *Bridge) Wait(timeout time.Duration) error {
	exited, err := b.wait(timeout)
	if !exited {
		return fmt.Errorf("edgebridge did not exit within %s", timeout)
	}
	return err
}

// wait waits up to timeout for the process to exit and returns its exit
// error; after timeout it kills it and reports exited false.
func (b *Bridge) wait(timeout time.Duration) (exited bool, err error) {
	if b.cmd == nil || b.cmd.Process == nil {
		return true, nil
	}
	select {
	case err := <-b.done:
		b.cmd = nil
		return true, err
	case <-time.After(timeout):
		b.Kill()
		return false, nil
	}
}

// Scrape reads /metrics and sums every series by metric name.
func (b *Bridge) Scrape() (map[string]float64, error) {
	code, body, err := b.get("/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: status %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			rest = strings.TrimSpace(line[j+1:])
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += f
		}
	}
	return out, sc.Err()
}

func (b *Bridge) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + b.Metrics + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// WriteFile writes the config file at path.
func (c BridgeConfig) WriteFile(path string) error {
	return os.WriteFile(path, []byte(c.YAML()), 0o644)
}
