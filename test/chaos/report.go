//go:build chaos

package chaos

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// row is one line of the results table in docs/reliability.md.
type row struct {
	Scenario   string
	Messages   int64 // acknowledged by the broker to the devices
	Lost       int64
	Duplicates int64
	Drain      string // records/s, or "-"
	PeakRSS    int64  // bytes, the bridge's VmHWM over the run
	Duration   time.Duration
	Notes      string
}

var (
	rowsMu sync.Mutex
	rows   []row
)

func addRow(r row) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

func table() string {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	var b strings.Builder
	b.WriteString("| # | Scenario | Messages | Lost | Duplicates | Drain rate | Peak RSS | Duration | Notes |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---|\n")
	// In scenario order (1, 2, 3a, 3b, ...), whichever file ran first.
	sorted := slices.Clone(rows)
	slices.SortStableFunc(sorted, func(a, b row) int {
		return cmp.Compare(scenarioNumber(a.Scenario), scenarioNumber(b.Scenario))
	})
	for _, r := range sorted {
		num, name, _ := strings.Cut(r.Scenario, " ")
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s | %s | %s |\n", num, name, r.Messages, r.Lost,
			r.Duplicates, r.Drain, mib(r.PeakRSS), r.Duration.Round(time.Second), r.Notes)
	}
	return b.String()
}

// scenarioNumber is the number a scenario name starts with ("3b blackhole"
// is 3); a name without one sorts last.
func scenarioNumber(scenario string) int {
	num, _, _ := strings.Cut(scenario, " ")
	n, err := strconv.Atoi(strings.TrimRight(num, "abcdefghijklmnopqrstuvwxyz"))
	if err != nil {
		return math.MaxInt
	}
	return n
}

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

func rate(n float64, d time.Duration) string {
	if d <= 0 || n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f rec/s", n/d.Seconds())
}

const (
	beginMark = "<!-- results:begin (written by test/chaos; do not edit) -->"
	endMark   = "<!-- results:end -->"
)

// writeReliability replaces the results section of docs/reliability.md.
func writeReliability(mode string, passed bool) error {
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "docs", "reliability.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(doc, []byte(beginMark)), bytes.Index(doc, []byte(endMark))
	if i < 0 || j < i {
		return fmt.Errorf("%s: results markers missing", path)
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	verdict := "every scenario passed"
	if !passed {
		verdict = "**the suite FAILED** (rows marked FAILED)"
	}
	section := fmt.Sprintf("%s\nRun: %s, mode %s, %s; %d CPUs, %s/%s, kernel %s, Apache Kafka %s.\n\n%s",
		beginMark, time.Now().UTC().Format("2006-01-02 15:04 MST"), mode, verdict, runtime.NumCPU(),
		runtime.GOOS, runtime.GOARCH, strings.TrimSpace(string(kernel)), kafkaVersion(), table())
	out := append(append(append([]byte{}, doc[:i]...), section...), doc[j:]...)
	return os.WriteFile(path, out, 0o644)
}
