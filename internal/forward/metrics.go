package forward

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgebridge/edgebridge/internal/promreg"
)

// failureReasons are the reason labels classify and the Producer can give;
// they are created at zero so that dashboards see them before the first
// failure.
var failureReasons = []string{
	"message_too_large", "record_list_too_large", "invalid_record",
	"corrupt_message", "invalid_timestamp", "policy_violation",
	"topic_authorization_failed", "unknown_topic", "invalid_topic", "no_topic",
}

// parkReasons are the reason labels of edgebridge_forward_parked_topics:
// classify's parkTopic reasons, and "metadata" for a topic whose metadata
// Kafka answers with any other error.
var parkReasons = []string{"topic_authorization_failed", "unknown_topic", "metadata"}

type metrics struct {
	records     prometheus.Counter
	failed      *prometheus.CounterVec
	retries     prometheus.Counter
	reordered   prometheus.Counter
	latency     prometheus.Histogram
	up          prometheus.Gauge
	lastSuccess prometheus.Gauge
	dataLoss    prometheus.Counter
	inFlight    prometheus.Gauge
	inFlightB   prometheus.Gauge
	parked      prometheus.Gauge
	topics      *prometheus.GaugeVec

	unregister func() // takes the metrics above back from the registerer
}

// newMetrics builds the forwarder's metrics and registers them with reg
// (see promreg.Register: a nil reg registers nothing; a refused one leaves
// none registered). m.unregister takes them back, for a New that fails
// later.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_forward_records_total",
			Help: "Records Kafka acknowledged (acks=all) and the buffer deleted.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgebridge_forward_failed_total",
			Help: "Records Kafka rejected for good, moved to dead letters, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_forward_retries_total",
			Help: "Records Kafka failed that were sent again from the buffer.",
		}),
		reordered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_forward_reordered_total",
			Help: "Records that reached Kafka while an earlier record of their partition had failed and waited to be sent again.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgebridge_forward_delivery_latency_seconds",
			Help:    "Time from a record's append to the buffer to its acknowledgement by Kafka.",
			Buckets: prometheus.ExponentialBucketsRange(0.001, 7*24*3600, 24),
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_kafka_up",
			Help: "1 when the last produce (or, with nothing to produce, the last request) to Kafka succeeded.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_forward_last_success_timestamp_seconds",
			Help: "Unix time of the last record Kafka acknowledged.",
		}),
		dataLoss: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgebridge_forward_data_loss_detected_total",
			Help: "Times the producer saw the broker lose records it had acknowledged (franz-go ProducerOnDataLossDetected).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_forward_in_flight_records",
			Help: "Records read from the buffer and not yet acknowledged by Kafka.",
		}),
		inFlightB: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_forward_in_flight_bytes",
			Help: "Bytes of the records read from the buffer and not yet acknowledged by Kafka.",
		}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgebridge_forward_parked_partitions",
			Help: "Partitions set aside because they stalled or failed; the others keep flowing.",
		}),
		topics: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgebridge_forward_parked_topics",
			Help: "Topics whose records wait in the buffer because Kafka refuses the whole topic (no write ACL, no such topic), by reason; the other topics keep flowing.",
		}, []string{"reason"}),
	}
	for _, r := range parkReasons {
		m.topics.WithLabelValues(r)
	}
	for _, r := range failureReasons {
		m.failed.WithLabelValues(r)
	}
	var err error
	m.unregister, err = promreg.Register(reg,
		m.records, m.failed, m.retries, m.reordered, m.latency, m.up, m.lastSuccess,
		m.dataLoss, m.inFlight, m.inFlightB, m.parked, m.topics)
	if err != nil {
		return nil, fmt.Errorf("register forward metrics: %w", err)
	}
	return m, nil
}
