package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/promreg"
)

type metrics struct {
	received      prometheus.Counter
	acked         prometheus.Counter
	rejected      *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	batchSize     prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
	up            prometheus.Gauge
	connects      prometheus.Counter
	connLost      prometheus.Counter
	// subscribeErrors counts failed SUBSCRIBEs (timeout, error) and, per
	// filter, SUBACK failures (refused, qos_downgraded).
	subscribeErrors *prometheus.CounterVec
	sessionLost     prometheus.Counter
}

// newMetrics builds the intake's metrics and registers them with reg (see
// promreg.Register: a nil reg registers nothing; a refused one leaves none
// registered).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_received_total",
			Help: "Messages received from the broker (redeliveries included).",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_acked_total",
			Help: "QoS 1/2 messages acknowledged to the broker after their record was committed.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_rejected_total",
			Help: "Messages stored as dead letters instead of being forwarded, by reason.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_dropped_total",
			Help: "QoS 0 messages received while stopping and not stored (the broker does not redeliver QoS 0), by reason.",
		}, []string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgebridge_mqtt_batch_size_messages",
			Help:    "Messages per buffer commit.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgebridge_mqtt_commit_duration_seconds",
			Help:    "Time from handing a batch to the buffer to its commit (fsync) returning.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_commit_errors_total",
			Help: "Failed buffer commits; the batch is retried and not acknowledged meanwhile.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_mqtt_up",
			Help: "1 when connected to the broker and subscribed, else 0.",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_connects_total",
			Help: "Successful connections to the broker.",
		}),
		connLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_connection_lost_total",
			Help: "Connections to the broker lost.",
		}),
		subscribeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_subscribe_errors_total",
			Help: "Subscriptions not granted at the route's QoS, by reason: refused and qos_downgraded count filters of a SUBACK, timeout and error count SUBSCRIBEs. The intake is not ready meanwhile.",
		}, []string{"reason"}),
		sessionLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_mqtt_session_lost_total",
			Help: "Connections on which the broker no longer had the session the bridge subscribed in: what it held for the bridge is lost; the bridge subscribes again.",
		}),
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	m.dropped.WithLabelValues("stopping")
	for _, r := range subscribeReasons {
		m.subscribeErrors.WithLabelValues(r)
	}
	if _, err := promreg.Register(reg, m.received, m.acked, m.rejected, m.dropped, m.batchSize, m.commitSeconds, m.commitErrors, m.up, m.connects, m.connLost, m.subscribeErrors, m.sessionLost); err != nil {
		return nil, err
	}
	return m, nil
}
