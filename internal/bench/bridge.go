package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BridgeConfig renders the bridge's config file for a run: production
// defaults everywhere (zstd, linger 5ms, acks=all, an fsync per group
// commit), a buffer large enough for the backlog scenarios, and pprof on.
func BridgeConfig(nodeID, mqttURL string, brokers []string, topic, bufferDir, listen string) string {
	q := strconv.Quote
	bs := make([]string, len(brokers))
	for i, b := range brokers {
		bs[i] = q(b)
	}
	return fmt.Sprintf(`# written by edgebridge-bench
node_id: %s
shutdown_timeout: 10s
mqtt:
  url: %s
routes:
  - filter: %s
    kafka_topic: %s
buffer:
  dir: %s
  max_bytes: 4GiB
kafka:
  brokers: [%s]
http:
  listen: %s
  pprof: true
log:
  level: info
  format: text
`, q(nodeID), q(mqttURL), q(TopicFilter), q(topic), q(bufferDir), strings.Join(bs, ", "), q(listen))
}

// Bridge is the real edgebridge binary running as a child process.
type Bridge struct {
	Bin, Config, Listen string
	Output              io.Writer

	cmd  *exec.Cmd
	done chan error
}

// Start starts the binary; it returns once the process runs.
func (b *Bridge) Start() error {
	b.cmd = exec.Command(b.Bin, "run", "--config", b.Config)
	b.cmd.Stdout, b.cmd.Stderr = b.Output, b.Output
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.Bin, err)
	}
	b.done = make(chan error, 1)
	go func() { b.done <- b.cmd.Wait() }()
	return nil
}

// PID is the running process's id.
func (b *Bridge) PID() int { return b.cmd.Process.Pid }

// WaitReady waits until /readyz answers 200: the buffer is open and the
// MQTT session is up.
func (b *Bridge) WaitReady(ctx context.Context) error {
	for {
		if code, _, err := b.get("/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case err := <-b.done:
			b.done <- err
			return fmt.Errorf("edgebridge exited: %v", err)
		case <-ctx.Done():
			_, body, _ := b.get("/readyz")
			return fmt.Errorf("edgebridge not ready: %v: %s", ctx.Err(), body)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for the process, killing it after timeout.
func (b *Bridge) Stop(timeout time.Duration) error {
	if b.cmd == nil {
		return nil
	}
	defer func() { b.cmd = nil }()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		return err
	case <-time.After(timeout):
		_ = b.cmd.Process.Kill()
		<-b.done
		return fmt.Errorf("edgebridge did not stop within %s", timeout)
	}
}

// Metric reads one metric from /metrics, summed over its series.
func (b *Bridge) Metric(name string) (float64, error) {
	code, body, err := b.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: status %d", code)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err == nil {
			sum += f
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s not exported", name)
	}
	return sum, nil
}

// Profile fetches a CPU profile of d (whole seconds, at least one) into path.
func (b *Bridge) Profile(d time.Duration, path string) error {
	return b.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))), d+10*time.Second, path)
}

// Heap fetches a heap profile into path.
func (b *Bridge) Heap(path string) error { return b.fetch("/debug/pprof/heap", 10*time.Second, path) }

func (b *Bridge) fetch(url string, timeout time.Duration, path string) error {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + b.Listen + url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func (b *Bridge) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + b.Listen + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
