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
	"sync"
	"syscall"
	"text/template"
	"time"
)

// BridgeConfig is what the dev stack, the chaos suite and the bench put
// into edgebridge's config file: the one template all three render.
//
// The dev stack paces Kafka for tests that cut or blackhole it for seconds
// (short timeouts and retries), logs drops each second and keeps a small
// buffer; empty buffer settings keep its sizes and policy: 256MiB, 8MiB
// segments, 16MiB free disk, block. Production drops all of that for
// edgebridge's own defaults (zstd, linger 5ms, acks=all, an fsync per group
// commit), which is what `make bench` measures.
type BridgeConfig struct {
	NodeID       string
	MQTTURL      string
	Filter       string // the route's MQTT filter; default devices/+/telemetry
	Brokers      []string
	Topic        string
	BufferDir    string
	MaxBytes     string // config strings: "2GiB"
	SegmentBytes string
	MinFreeDisk  string
	WhenFull     string // "block", "drop_oldest"
	HTTPListen   string
	Pprof        bool
	LogFormat    string // json or text (the default)

	// Production keeps edgebridge's defaults for everything the dev stack
	// paces, and for the buffer settings left empty.
	Production bool
}

var bridgeTemplate = template.Must(template.New("edgebridge.yaml").Funcs(template.FuncMap{
	"q": strconv.Quote,
	"or": func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	},
}).Parse(`# written by the edgebridge dev stack (internal/dev/devstack)
node_id: {{q .NodeID}}
shutdown_timeout: 10s
mqtt:
  url: {{q .MQTTURL}}
{{- if not .Production}}
  client_id: {{q (print "edgebridge-" .NodeID)}}
{{- end}}
routes:
  - filter: {{q (or .Filter "devices/+/telemetry")}}
    kafka_topic: {{q .Topic}}
buffer:
  dir: {{q .BufferDir}}
{{- range .Buffer}}
  {{index . 0}}: {{index . 1}}
{{- end}}
kafka:
  brokers: [{{range $i, $b := .Brokers}}{{if $i}}, {{end}}{{q $b}}{{end}}]
{{- if not .Production}}
  linger: 5ms
  dial_timeout: 2s
  produce_request_timeout: 3s
  request_timeout_overhead: 2s
  metadata_min_age: 500ms
  metadata_max_age: 5s
  backoff:
    initial: 100ms
    max: 1s
{{- end}}
http:
  listen: {{q .HTTPListen}}
{{- if .Pprof}}
  pprof: true
{{- end}}
log:
  level: info
  format: {{or .LogFormat "text"}}
`))

// bufferKeys are the buffer settings the file sets besides dir: the dev
// stack's, or with Production only those given.
func (c BridgeConfig) bufferKeys() [][2]string {
	var keys [][2]string
	set := func(key, v, dev string) {
		switch {
		case v != "":
			keys = append(keys, [2]string{key, v})
		case !c.Production:
			keys = append(keys, [2]string{key, dev})
		}
	}
	set("max_bytes", c.MaxBytes, "256MiB")
	set("segment_bytes", c.SegmentBytes, "8MiB")
	set("min_free_disk", c.MinFreeDisk, "16MiB")
	set("when_full", c.WhenFull, "block")
	if !c.Production {
		keys = append(keys, [2]string{"drop_log_interval", "1s"})
	}
	return keys
}

// YAML renders the config file.
func (c BridgeConfig) YAML() string {
	var b strings.Builder
	data := struct {
		BridgeConfig
		Buffer [][2]string
	}{c, c.bufferKeys()}
	if err := bridgeTemplate.Execute(&b, data); err != nil {
		panic(err) // the template is fixed and every field renders
	}
	return b.String()
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

// Bridge runs the real edgebridge binary as a child process: for the demo,
// the e2e tests, the bench and the chaos suite (which runs it in a network
// namespace through Prefix and kills and starts it in a loop). Its methods
// may be called from several goroutines: a sampler may read PID while a
// test kills and starts the bridge.
type Bridge struct {
	Bin     string
	Config  string    // path of the config file
	Output  io.Writer // its stdout and stderr, unless LogFile is set
	LogFile string    // when set, every run appends its stdout and stderr here
	Metrics string    // host:port of its http.listen
	Env     []string  // added to the environment it inherits (GOGC=50, say)
	// Prefix runs the binary under a wrapper: ip netns exec <ns> puts it in
	// a network namespace. The wrapper must exec the binary, so that PID
	// and the signals sent to it are the bridge's.
	Prefix []string

	mu  sync.Mutex // guards cur
	cur *bridgeRun // nil when not running
}

// bridgeRun is one run of the process.
type bridgeRun struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited and err is set
	err    error         // what Wait returned
}

// Launch starts the binary and returns at once, healthy or not: a kill
// loop kills it again at any moment of its start. Start waits for
// /healthz.
func (b *Bridge) Launch() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		return errors.New("edgebridge is already running")
	}
	argv := append(append([]string(nil), b.Prefix...), b.Bin, "run", "--config", b.Config)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = b.Output, b.Output
	var logf *os.File
	if b.LogFile != "" {
		f, err := os.OpenFile(b.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open bridge log: %w", err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if len(b.Env) > 0 {
		cmd.Env = append(os.Environ(), b.Env...)
	}
	cmd.SysProcAttr = childAttr() // never outlive a killed test
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	r := &bridgeRun{cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		close(r.exited)
	}()
	b.cur = r
	return nil
}

// running is the current run, nil when the bridge is not running.
func (b *Bridge) running() *bridgeRun {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur
}

// forget clears r as the current run, if it still is.
func (b *Bridge) forget(r *bridgeRun) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == r {
		b.cur = nil
	}
}

// Start starts the binary and waits until /healthz answers 200.
func (b *Bridge) Start(ctx context.Context) error {
	if err := b.Launch(); err != nil {
		return err
	}
	r := b.running()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := b.Get("/healthz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("edgebridge exited at start: %v", r.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edgebridge not healthy after 30s")
		}
	}
}

// WaitReady waits until /readyz answers 200 (MQTT session up), or the
// process exits.
func (b *Bridge) WaitReady(ctx context.Context) error {
	var exited <-chan struct{} // nil, never ready, when not running
	r := b.running()
	if r != nil {
		exited = r.exited
	}
	for {
		if code, _, err := b.Get("/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("edgebridge exited before ready: %v", r.err)
		case <-ctx.Done():
			_, body, _ := b.Get("/readyz")
			return fmt.Errorf("edgebridge not ready: %v: %s", ctx.Err(), body)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (b *Bridge) Kill() {
	r := b.running()
	if r == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	b.forget(r)
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

// PID is the running process's id, 0 when it is not running.
func (b *Bridge) PID() int {
	r := b.running()
	if r == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Signal sends sig to the running bridge.
func (b *Bridge) Signal(sig os.Signal) error {
	r := b.running()
	if r == nil {
		return errors.New("edgebridge is not running")
	}
	return r.cmd.Process.Signal(sig)
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
	r := b.running()
	if r == nil {
		return true, nil
	}
	select {
	case <-r.exited:
		b.forget(r)
		return true, r.err
	case <-time.After(timeout):
		b.Kill()
		return false, nil
	}
}

// Scrape reads /metrics and sums every series by metric name.
func (b *Bridge) Scrape() (map[string]float64, error) {
	code, body, err := b.Get("/metrics")
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

// Get sends GET path to its http.listen and returns the status and the
// body: a probe, /metrics for a test that parses it itself.
func (b *Bridge) Get(path string) (int, string, error) {
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
