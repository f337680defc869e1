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
	if k, ok := kafkaFailures[ke]; ok {
		return k.failure, k.reason
	}
	return retriable, "kafka"
}

// kafkaFailures are the Kafka errors that are not retriable, with their
// reason label; any other Kafka error is.
var kafkaFailures = map[*kerr.Error]struct {
	failure
	reason string
}{
	kerr.MessageTooLarge:          {permanentRecord, "message_too_large"},
	kerr.RecordListTooLarge:       {permanentRecord, "record_list_too_large"},
	kerr.InvalidRecord:            {permanentRecord, "invalid_record"},
	kerr.CorruptMessage:           {permanentRecord, "corrupt_message"},
	kerr.InvalidTimestamp:         {permanentRecord, "invalid_timestamp"},
	kerr.PolicyViolation:          {permanentRecord, "policy_violation"},
	kerr.TopicAuthorizationFailed: {parkTopic, "topic_authorization_failed"},
	// franz-go retries these (kgo.UnknownTopicRetries, against several
	// metadata refreshes) before it fails a record with them.
	kerr.UnknownTopicOrPartition: {parkTopic, "unknown_topic"},
	kerr.UnknownTopicID:          {parkTopic, "unknown_topic"},
	kerr.InvalidTopicException:   {permanentTopic, "invalid_topic"},
}
