package forward

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// kgoLogger hands franz-go's log to slog through kslog, and reads in it the
// earliest sign that franz-go is failing the records it holds for a
// partition: franz-go logs, under the partition's lock and before it fails
// them, an entry with the partition's topic and number and the error (a
// batch Kafka rejected, a load error), or at error level one with an error
// and no partition when it fails every partition (a fatal producer-ID
// error, a broker too old). It goes by the shape of the entry, not by its
// message, so that a reworded message does not lose the hint; entries of
// that shape that fail nothing cost a resend. The first failed promise
// stays the guard when no entry comes (see lane.round).
type kgoLogger struct {
	inner *kslog.Logger
	hint  func(topic string, partition int32)
}

// Level is at least info so that the entries above always reach Log; Log
// forwards only what the injected handler wants.
func (l *kgoLogger) Level() kgo.LogLevel { return max(l.inner.Level(), kgo.LogLevelInfo) }

func (l *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var (
		topic     string
		partition = int32(-1)
		failed    bool
	)
	for i := 0; i+1 < len(keyvals); i += 2 {
		switch keyvals[i] {
		case "topic":
			topic, _ = keyvals[i+1].(string)
		case "partition":
			partition, _ = keyvals[i+1].(int32)
		case "err":
			err, _ := keyvals[i+1].(error)
			failed = err != nil
		}
	}
	switch {
	case failed && topic != "" && partition >= 0:
		l.hint(topic, partition)
	case failed && topic == "" && level == kgo.LogLevelError:
		l.hint("", -1)
	}
	if level <= l.inner.Level() {
		l.inner.Log(level, msg, keyvals...)
	}
}
