//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

// bridge runs the real edgebridge binary, optionally inside a network
// namespace, and samples its memory (VmRSS, VmHWM) the whole time.
type bridge struct {
	t       *testing.T
	bin     string
	netns   string
	cfgPath string
	logPath string
	http    *devstack.Bridge // only its HTTP helpers: Scrape, WaitReady

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	starts  int
	peakRSS int64 // bytes, over every run
	rss     []int64
	stop    chan struct{}
}

func newBridge(t *testing.T, dir string, cfg devstack.BridgeConfig, netns string) *bridge {
	t.Helper()
	b := &bridge{t: t, bin: bridgeBin, netns: netns, cfgPath: filepath.Join(dir, "edgebridge.yaml"),
		logPath: filepath.Join(dir, "edgebridge.log"), http: &devstack.Bridge{Metrics: cfg.HTTPListen},
		stop: make(chan struct{})}
	if err := cfg.WriteFile(b.cfgPath); err != nil {
		t.Fatal(err)
	}
	go b.sample()
	t.Cleanup(func() {
		close(b.stop)
		b.kill()
		if t.Failed() {
			out, _ := os.ReadFile(b.logPath)
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("bridge log tail:\n%s", out)
		}
	})
	return b
}

// start starts the process; it does not wait for anything.
func (b *bridge) start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.t.Fatal("bridge already running")
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	argv := []string{b.bin, "run", "--config", b.cfgPath}
	if b.netns != "" {
		// ip netns exec execs the binary: the pid stays the bridge's.
		argv = append([]string{"ip", "netns", "exec", b.netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a killed test
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start edgebridge: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	b.cmd, b.done = cmd, done
	b.starts++
}

// startReady starts the bridge and waits for /readyz.
func (b *bridge) startReady(ctx context.Context) time.Duration {
	b.t.Helper()
	t0 := time.Now()
	b.start()
	if err := b.waitReady(ctx); err != nil {
		b.t.Fatal(err)
	}
	return time.Since(t0)
}

func (b *bridge) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go func() {
		select {
		case <-done:
			rcancel()
		case <-rctx.Done():
		}
	}()
	if err := b.http.WaitReady(rctx); err != nil {
		select {
		case <-done:
			return fmt.Errorf("edgebridge exited before ready: %v", b.cmd.ProcessState)
		default:
		}
		return err
	}
	return nil
}

// kill sends SIGKILL and waits for the process to go.
func (b *bridge) kill() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// stop sends SIGTERM and waits for a clean exit.
func (b *bridge) stopClean(timeout time.Duration) error {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if !cmd.ProcessState.Success() {
			return fmt.Errorf("edgebridge exited with %v after SIGTERM", cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("edgebridge did not stop within %s of SIGTERM", timeout)
	}
}

func (b *bridge) pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// metric returns the sum of every series of name, or -1 when /metrics
// cannot be read.
func (b *bridge) metric(name string) float64 {
	m, err := b.http.Scrape()
	if err != nil {
		return -1
	}
	return m[name]
}

// sample reads VmRSS and VmHWM every 250ms while the bridge runs.
func (b *bridge) sample() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		pid := b.pid()
		if pid == 0 {
			continue
		}
		rss, hwm := procMem(pid)
		b.mu.Lock()
		if rss > 0 {
			b.rss = append(b.rss, rss)
		}
		if hwm > b.peakRSS {
			b.peakRSS = hwm
		}
		if rss > b.peakRSS {
			b.peakRSS = rss
		}
		b.mu.Unlock()
	}
}

// memory returns the peak RSS over every run and the RSS samples.
func (b *bridge) memory() (peak int64, samples []int64) {
	if pid := b.pid(); pid != 0 { // the last moments before the caller asked
		if rss, hwm := procMem(pid); hwm > 0 {
			b.mu.Lock()
			b.peakRSS = max(b.peakRSS, rss, hwm)
			b.mu.Unlock()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peakRSS, append([]int64(nil), b.rss...)
}

// procMem reads VmRSS and VmHWM of pid in bytes.
func procMem(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm
}
