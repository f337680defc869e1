package forward

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The one function that decides retriable against permanent.
func TestClassify(t *testing.T) {
	tests := []struct {
		err    error
		want   failure
		reason string
	}{
		{kerr.MessageTooLarge, permanentRecord, "message_too_large"},
		// franz-go's own check of a record larger than a batch wraps it.
		{fmt.Errorf("%w (uncompressed_bytes=2000000)", kerr.MessageTooLarge), permanentRecord, "message_too_large"},
		{kerr.RecordListTooLarge, permanentRecord, "record_list_too_large"},
		{kerr.InvalidRecord, permanentRecord, "invalid_record"},
		{kerr.CorruptMessage, permanentRecord, "corrupt_message"},
		{kerr.InvalidTimestamp, permanentRecord, "invalid_timestamp"},
		{kerr.PolicyViolation, permanentRecord, "policy_violation"},
		{kerr.TopicAuthorizationFailed, parkTopic, "topic_authorization_failed"},
		{kerr.UnknownTopicOrPartition, parkTopic, "unknown_topic"},
		{kerr.UnknownTopicID, parkTopic, "unknown_topic"},
		{kerr.InvalidTopicException, permanentTopic, "invalid_topic"},
		{errNoTopic, permanentTopic, "no_topic"},
		// Waiting loses nothing: these retry.
		{kerr.NotEnoughReplicas, retriable, "kafka"},
		{kerr.NotEnoughReplicasAfterAppend, retriable, "kafka"},
		{kerr.RequestTimedOut, retriable, "kafka"},
		{kerr.NotLeaderForPartition, retriable, "kafka"},
		{kerr.LeaderNotAvailable, retriable, "kafka"},
		{kerr.ClusterAuthorizationFailed, retriable, "kafka"},
		{kerr.UnsupportedCompressionType, retriable, "kafka"},
		{kgo.ErrClientClosed, retriable, "client"},
		{kgo.ErrRecordTimeout, retriable, "client"},
		{context.Canceled, retriable, "client"},
		{errors.New("something new"), retriable, "client"},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			got, reason := classify(tt.err)
			if got != tt.want || reason != tt.reason {
				t.Errorf("classify(%v) = %v, %q; want %v, %q", tt.err, got, reason, tt.want, tt.reason)
			}
		})
	}
}
