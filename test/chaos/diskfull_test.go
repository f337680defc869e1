//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

// mountTmpfs mounts a tmpfs of size at a new directory; unmounted in
// cleanup (registered before the bridge's, so it runs after the bridge is
// gone).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	needRoot(t, "a tmpfs mount")
	dir := filepath.Join(t.TempDir(), "small-disk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := run("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = run("umount", "-l", dir) })
	return filepath.Join(dir, "buffer")
}

// fillWithKafkaDown runs a bridge whose buffer sits on a tmpfs of size
// (max_bytes maxBytes, 4MiB segments, 2MiB min_free_disk, when_full
// whenFull), stops Kafka, and has 20 devices publish messages each as fast
// as they are taken.
func fillWithKafkaDown(t *testing.T, size, maxBytes, whenFull string, messages int) (*env, *devstack.Devices) {
	t.Helper()
	dir := mountTmpfs(t, size)
	e := newEnv(t, envOpts{bufferDir: dir, bridge: func(c *devstack.BridgeConfig) {
		c.MaxBytes, c.SegmentBytes, c.MinFreeDisk, c.WhenFull = maxBytes, "4MiB", "2MiB", whenFull
	}})
	e.startBridge()
	e.kafka.Broker(0).Stop(30 * time.Second)
	d := newDevices(e.mq.URL(), 20, messages, 0)
	if err := <-e.runDevices(e.ctx, d); err != nil {
		t.Fatalf("devices: %v", err)
	}
	return e, d
}

// Contract 1, 4: the buffer's filesystem fills during a partition. With
// when_full block the bridge stops acknowledging and mosquitto keeps the
// rest: nothing is lost. With drop_oldest exactly the counted drops are
// missing.
func TestS7DiskFull(t *testing.T) {
	t.Run("block", func(t *testing.T) {
		e, d := fillWithKafkaDown(t, "48m", "1GiB", "block", pick(20000, 50000))
		// The bridge stops taking messages once the disk is full.
		var last float64 = -1
		e.waitFor("the bridge to stop acknowledging", 5*time.Minute, func() bool {
			a := e.gauge(mAcked)
			stable := a == last
			last = a
			time.Sleep(time.Second)
			return stable
		})
		acked := e.gauge(mAcked)
		if acked >= float64(d.Total()) {
			t.Fatalf("the bridge acknowledged all %d messages: the disk never filled (make the test write more)", d.Total())
		}
		buffered := e.gauge(mBuffered)
		t.Logf("disk full: bridge acknowledged %.0f of %d, %.0f buffered; mosquitto holds the rest", acked, d.Total(), buffered)
		if err := e.kafka.Restart(e.ctx, e.kafka.Broker(0)); err != nil {
			t.Fatal(err)
		}
		healed := time.Now()
		e.waitFor("every message in Kafka", 10*time.Minute, func() bool { return e.v.Counts().Unique >= d.Total() })
		e.verify("7a disk full: block", d, 5*time.Minute, row{
			Drain: rate(float64(d.Total())-acked+buffered, time.Since(healed)),
			Notes: fmt.Sprintf("buffer on a 48 MiB tmpfs, Kafka down: the bridge stopped acknowledging at %.0f of %d messages (%.0f buffered), mosquitto held the rest", acked, d.Total(), buffered),
		}, 0)
	})
	t.Run("drop_oldest", func(t *testing.T) {
		e, d := fillWithKafkaDown(t, "96m", "16MiB", "drop_oldest", pick(15000, 50000))
		e.waitFor("the bridge to take every message", 5*time.Minute, func() bool { return e.gauge(mAcked) >= float64(d.Total()) })
		dropped := e.gauge(mDropped)
		buffered := e.gauge(mBuffered)
		if dropped == 0 {
			t.Fatalf("no drops with %d messages into max_bytes 16MiB: the test proves nothing", d.Total())
		}
		if err := e.kafka.Restart(e.ctx, e.kafka.Broker(0)); err != nil {
			t.Fatal(err)
		}
		healed := time.Now()
		e.waitFor("the buffer to drain", 10*time.Minute, func() bool { return e.gauge(mBuffered) == 0 })
		e.verify("7b disk full: drop_oldest", d, 5*time.Minute, row{
			Drain: rate(buffered, time.Since(healed)),
			Notes: fmt.Sprintf("max_bytes 16MiB on a 96 MiB tmpfs, Kafka down: %.0f dropped and counted in %s; %.0f kept and delivered", dropped, mDropped, buffered),
		}, int64(dropped))
		if got := e.gauge(mDropped); got != dropped {
			t.Errorf("drops went on after the partition: %v then %v", dropped, got)
		}
	})
}
