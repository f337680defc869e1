package buffer

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/promreg"
)

// Drop reasons, the values of the reason label of
// edgebridge_buffer_dropped_records_total.
const (
	// DropOverflow: deleted by drop_oldest to make room.
	DropOverflow = "overflow"
	// DropMaxAge: older than max_age.
	DropMaxAge = "max_age"
	// DropCorrupt: failed its checksum when read; it cannot be sent.
	DropCorrupt = "corrupt"
)

type metrics struct {
	appended    prometheus.Counter
	acked       prometheus.Counter
	dropped     *prometheus.CounterVec
	deadLetters prometheus.Counter
	requeued    prometheus.Counter
	commits     prometheus.Histogram
	fsyncs      prometheus.Counter
	written     prometheus.Counter
	commitErrs  prometheus.Counter
	quarantined prometheus.Counter
	// damagedFiles counts files found damaged while running.
	damagedFiles prometheus.Counter
	gauges       *statsGauges
}

// newMetrics builds the queue's metrics, once per Open and before the files
// are read: what Open itself does (quarantines, salvage losses, commits) is
// counted like the rest. They are registered only once Open succeeded
// (register).
func newMetrics(q *Queue) *metrics {
	m := &metrics{
		damagedFiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_damaged_files_total",
			Help: "Buffer files found damaged while running (a fault reading or committing a page); the bridge stops appending and exits for a restart that quarantines them.",
		}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_appended_records_total",
			Help: "Records committed to the buffer, dead letters included.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_acked_records_total",
			Help: "Records deleted from the buffer after Kafka acknowledged them.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgebridge_buffer_dropped_records_total",
			Help: "Records deleted without being delivered, by reason (overflow, max_age, corrupt).",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_dead_lettered_records_total",
			Help: "Records stored as or moved to dead letters.",
		}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_requeued_records_total",
			Help: "Dead letters moved back into the queue.",
		}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgebridge_buffer_commit_duration_seconds",
			Help:    "Duration of committed (fsynced) buffer transactions.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		fsyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_fsyncs_total",
			Help: "Committed write transactions; each fsyncs its file.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_written_bytes_total",
			Help: "Bytes the buffer wrote to its files in committed transactions (bbolt pages and meta pages), before the filesystem's own journal: what the bridge costs the flash it runs on.",
		}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_commit_errors_total",
			Help: "Write transactions that failed (full disk, I/O error) and were rolled back to be retried.",
		}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_buffer_quarantined_files_total",
			Help: "Damaged buffer files moved aside to the quarantine directory.",
		}),
	}
	for _, r := range []string{DropOverflow, DropMaxAge, DropCorrupt} {
		m.dropped.WithLabelValues(r)
	}
	m.gauges = &statsGauges{q: q}
	gauge := func(name, help string, f func(Stats) float64) {
		m.gauges.descs = append(m.gauges.descs, prometheus.NewDesc(name, help, nil, nil))
		m.gauges.values = append(m.gauges.values, f)
	}
	gauge("edgebridge_buffer_records", "Records waiting in the buffer (dead letters excluded).",
		func(s Stats) float64 { return float64(s.Records) })
	gauge("edgebridge_buffer_bytes", "Logical size of what the buffer holds, dead letters included; compared with max_bytes.",
		func(s Stats) float64 { return float64(s.Bytes + s.DeadLetterBytes) })
	gauge("edgebridge_buffer_max_bytes", "The configured buffer.max_bytes.",
		func(s Stats) float64 { return float64(q.cfg.MaxBytes) })
	gauge("edgebridge_buffer_dead_letter_records", "Dead letters held in the buffer.",
		func(s Stats) float64 { return float64(s.DeadLetters) })
	gauge("edgebridge_buffer_oldest_record_age_seconds", "Age of the oldest record waiting in the buffer, 0 when empty.",
		func(s Stats) float64 {
			if s.Oldest.IsZero() {
				return 0
			}
			return time.Since(s.Oldest).Seconds()
		})
	gauge("edgebridge_buffer_segments", "Segment files in the buffer directory.",
		func(s Stats) float64 { return float64(s.Segments) })
	gauge("edgebridge_buffer_disk_bytes", "Size of the buffer's files on disk.",
		func(s Stats) float64 { return float64(s.DiskBytes) })
	gauge("edgebridge_buffer_blocked", "1 while appends wait for room (full, below min_free_disk, or failing writes).",
		func(s Stats) float64 {
			if s.Blocked {
				return 1
			}
			return 0
		})
	gauge("edgebridge_buffer_damaged", "1 once a buffer file was found damaged while running: appends stopped until a restart quarantines it.",
		func(s Stats) float64 {
			if s.Damaged {
				return 1
			}
			return 0
		})
	return m
}

// register registers every metric with reg (see promreg.Register: a nil
// reg registers nothing; one that refuses a metric, another queue's on the
// same registry, leaves none of them registered).
func (m *metrics) register(reg prometheus.Registerer) error {
	_, err := promreg.Register(reg,
		m.appended, m.acked, m.dropped, m.deadLetters, m.requeued, m.commits, m.fsyncs, m.written, m.commitErrs, m.quarantined, m.damagedFiles,
		m.gauges)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

// statsGauges exports the gauges read from Stats with one snapshot per
// scrape: Stats takes the queue's lock and stats every file for DiskBytes,
// which one GaugeFunc per gauge did eight times over.
type statsGauges struct {
	q      *Queue
	descs  []*prometheus.Desc
	values []func(Stats) float64
}

func (g *statsGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range g.descs {
		ch <- d
	}
}

func (g *statsGauges) Collect(ch chan<- prometheus.Metric) {
	st := g.q.Stats()
	for i, d := range g.descs {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, g.values[i](st))
	}
}
