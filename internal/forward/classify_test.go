package forward

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgebridge/edgebridge/internal/retry"
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

func TestBackoff(t *testing.T) {
	b := retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	tests := []struct {
		try    int
		lo, hi time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{6, time.Second, 2 * time.Second}, // capped
		{1000, time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		seen := make(map[time.Duration]bool)
		for range 200 {
			d := b.Delay(tt.try)
			if d < tt.lo || d > tt.hi {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", tt.try, d, tt.lo, tt.hi)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("delay(%d) took only %d values in 200 draws: not jittered", tt.try, len(seen))
		}
	}
}
