package forward

import (
	"bytes"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Pitfall "unregistered logger hooks so errors vanish": franz-go's own
// errors reach the injected logger.
func TestFranzGoErrorsReachTheLogger(t *testing.T) {
	dead := newCluster(t)
	addrs := dead.ListenAddrs()
	dead.Close()
	src := newMemSource()
	src.fill(10, 1, 10)
	log, sink := testkit.CaptureLogs(t)
	startWith(t, testConfig(addrs), src, log)
	testkit.WaitWithin(t, 10*time.Second, "a franz-go error in the log", func() bool {
		s := sink.String()
		return bytes.Contains([]byte(s), []byte(`"lib":"franz-go"`)) && bytes.Contains([]byte(s), []byte(`"err":`))
	})
	testkit.WaitWithin(t, 10*time.Second, "our own state change", func() bool {
		return bytes.Contains([]byte(sink.String()), []byte("kafka unreachable"))
	})
}
