package forward

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// failure is what to do with a record Kafka failed.
type failure int

const (
	// retriable: the record stays in the buffer and is sent again, in
	// order, after a backoff. Nothing is lost by waiting.
	retriable failure = iota
	// permanentRecord: the broker rejected the record's batch. franz-go
	// fails every record buffered for the partition with the same error, so
	// the culprit is not known yet: the record is sent again alone and goes
	// to dead letters only if it fails alone.
	permanentRecord
	// permanentTopic: every record for the topic fails the same way and
	// always will (no topic, a name Kafka cannot take); the record goes to
	// dead letters at once.
	permanentTopic
	// parkTopic: every record for the topic fails the same way until an
	// operator acts (an ACL, a topic to create). The topic is parked: its
	// records stay in the buffer, in order, and are tried again after a
	// long capped backoff; the other topics keep flowing.
	parkTopic
)

// classify is the one place that decides whether a produce error is worth
// waiting out or is final for the record, and gives the reason label for
// edgebridge_forward_failed_total. Anything it does not know is retriable:
// an unknown error waits (with backoff, counted, logged) rather than
// dead-lettering the backlog.
func classify(err error) (failure, string) {
	if errors.Is(err, errNoTopic) {
		return permanentTopic, "no_topic"
	}
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return retriable, "client"
	}
	switch ke {
	case kerr.MessageTooLarge:
		return permanentRecord, "message_too_large"
	case kerr.RecordListTooLarge:
		return permanentRecord, "record_list_too_large"
	case kerr.InvalidRecord:
		return permanentRecord, "invalid_record"
	case kerr.CorruptMessage:
		return permanentRecord, "corrupt_message"
	case kerr.InvalidTimestamp:
		return permanentRecord, "invalid_timestamp"
	case kerr.PolicyViolation:
		return permanentRecord, "policy_violation"
	case kerr.TopicAuthorizationFailed:
		return parkTopic, "topic_authorization_failed"
	case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID:
		// franz-go retries these (kgo.UnknownTopicRetries, against several
		// metadata refreshes) before it fails a record with them.
		return parkTopic, "unknown_topic"
	case kerr.InvalidTopicException:
		return permanentTopic, "invalid_topic"
	}
	return retriable, "kafka"
}
