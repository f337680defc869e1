//go:build chaos

package chaos

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memSampler samples the bridge's memory (VmRSS, VmHWM) every 250ms, over
// every run of it, until stopped.
type memSampler struct {
	pid  func() int // 0 when the bridge is not running
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	peakRSS int64 // bytes, over every run
	rss     []int64
}

func sampleMemory(pid func() int) *memSampler {
	m := &memSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go m.sample()
	return m
}

// close stops the sampling and waits for it.
func (m *memSampler) close() {
	close(m.stop)
	<-m.done
}

func (m *memSampler) sample() {
	defer close(m.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		pid := m.pid()
		if pid == 0 {
			continue
		}
		rss, hwm := procMem(pid)
		m.mu.Lock()
		if rss > 0 {
			m.rss = append(m.rss, rss)
		}
		m.peakRSS = max(m.peakRSS, rss, hwm)
		m.mu.Unlock()
	}
}

// memory returns the peak RSS over every run and the RSS samples.
func (m *memSampler) memory() (peak int64, samples []int64) {
	if pid := m.pid(); pid != 0 { // the last moments before the caller asked
		if rss, hwm := procMem(pid); hwm > 0 {
			m.mu.Lock()
			m.peakRSS = max(m.peakRSS, rss, hwm)
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakRSS, append([]int64(nil), m.rss...)
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
