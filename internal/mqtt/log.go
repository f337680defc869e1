package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// paho logs through four package variables. They are set once, in init,
// before any client exists, so no goroutine reads them while they change;
// the adapters forward to the logger of the most recently created
// Subscriber (one per process in the daemon), or nowhere before that.
var pahoLogger atomic.Pointer[slog.Logger]

func init() {
	paho.CRITICAL = newPahoAdapter(slog.LevelError, "critical")
	paho.ERROR = newPahoAdapter(slog.LevelError, "error")
	paho.WARN = newPahoAdapter(slog.LevelWarn, "warn")
	// paho.DEBUG stays the no-op logger: it logs per packet.
}

// pahoAdapter is a paho.Logger that writes to slog. paho can log once per
// packet when a connection breaks (every acknowledgement written to a dead
// socket fails), so at most pahoLogBurst lines go out per second per
// level; the rest are counted and the count is logged with the next line.
type pahoAdapter struct {
	level slog.Level
	name  string

	mu         sync.Mutex
	window     time.Time
	lines      int
	suppressed int
}

const pahoLogBurst = 10

func newPahoAdapter(level slog.Level, name string) *pahoAdapter {
	return &pahoAdapter{level: level, name: name}
}

func (a *pahoAdapter) Println(v ...any) { a.log(strings.TrimSpace(fmt.Sprintln(v...))) }

func (a *pahoAdapter) Printf(format string, v ...any) {
	a.log(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (a *pahoAdapter) log(msg string) {
	l := pahoLogger.Load()
	if l == nil {
		return
	}
	a.mu.Lock()
	now := time.Now()
	if now.Sub(a.window) >= time.Second {
		a.window, a.lines = now, 0
	}
	if a.lines >= pahoLogBurst {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	a.lines++
	suppressed := a.suppressed
	a.suppressed = 0
	a.mu.Unlock()
	l.Log(context.Background(), a.level, "paho", "paho_level", a.name, "detail", msg, "suppressed", suppressed)
}

// rateLog logs each key at most once per interval and counts the rest.
// Only the collector goroutine uses it.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	last     map[string]time.Time
	skipped  map[string]int
}

func newRateLog(log *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{log: log, interval: interval, last: map[string]time.Time{}, skipped: map[string]int{}}
}

// allow reports whether key may be logged now, and how many were skipped
// since it was last logged.
func (r *rateLog) allow(key string, now time.Time) (bool, int) {
	if last, ok := r.last[key]; ok && now.Sub(last) < r.interval {
		r.skipped[key]++
		return false, 0
	}
	r.last[key] = now
	n := r.skipped[key]
	r.skipped[key] = 0
	return true, n
}
