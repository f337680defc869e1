package buffer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// Contract 4, block: appends wait for room and the caller can give up with
// ErrFull; acks make room and waiting appends then commit.
func TestBlockWhenFull(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 100 << 10, SegmentBytes: minSegmentBytes})
	stored, full := appendUntilStuck(t, q, func(i int) []Record { return recs("dev", i*10, 10) },
		func() bool { return q.Stats().Blocked })
	// Full: this append waits. Giving up returns ErrFull, stores nothing.
	if err := q.Writable(); !errors.Is(err, ErrFull) {
		t.Fatalf("Writable while full: %v", err)
	}
	full.cancel()
	if err := <-full.errc; !errors.Is(err, ErrFull) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled blocked append: %v, want ErrFull and context.Canceled", err)
	}
	if st := q.Stats(); st.Records != len(stored) {
		t.Fatalf("%d records stored, want %d: the refused append must store nothing", st.Records, len(stored))
	}
	// A waiting append commits once acks make room.
	errc := make(chan error, 1)
	late := make([]Record, 10)
	for i := range late {
		late[i] = rec("dev", 99990+i)
	}
	go func() { errc <- q.Append(context.Background(), late) }()
	testkit.WaitFor(t, "append to block", func() bool { return q.Stats().Blocked })
	if err := q.Ack(context.Background(), seqsOf(stored[:20])); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("append after ack made room: %v", err)
	}
	if q.Stats().Blocked {
		t.Fatal("still blocked after room was made")
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow); got != 0 {
		t.Fatalf("block policy dropped %v records", got)
	}
	// A batch larger than the whole buffer can never fit.
	huge := Record{Topic: "t", Value: make([]byte, 200<<10)}
	if err := q.Append(context.Background(), []Record{huge}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("append larger than max_bytes: %v, want ErrTooLarge", err)
	}
}

// recs returns n records of key numbered from i.
func recs(key string, i, n int) []Record {
	out := make([]Record, n)
	for j := range out {
		out[j] = rec(key, i+j)
	}
	return out
}

// stuckAppend is an append the buffer has not admitted: it still waits.
type stuckAppend struct {
	recs   []Record
	cancel context.CancelFunc
	errc   chan error
}

// appendUntilStuck appends batch(0), batch(1), ... until an append does
// not return while stuck() holds. It returns the records stored before it
// and that append, still waiting.
func appendUntilStuck(t *testing.T, q *Queue, batch func(i int) []Record, stuck func() bool) ([]Record, stuckAppend) {
	t.Helper()
	var stored []Record
	for i := 0; ; i++ {
		b := batch(i)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- q.Append(ctx, b) }()
		select {
		case err := <-errc:
			cancel()
			if err != nil {
				t.Fatalf("append %d before the buffer stopped admitting: %v", i, err)
			}
			stored = append(stored, b...)
		case <-waitChan(stuck):
			return stored, stuckAppend{b, cancel, errc}
		}
	}
}

func waitChan(cond func() bool) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		for !cond() {
			time.Sleep(time.Millisecond)
		}
		close(c)
	}()
	return c
}

// Contract 4, drop_oldest: the oldest records make room, each drop counted;
// everything newer is still there.
func TestDropOldest(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 200 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest})
	var all []Record
	for i := 0; i < 3000; i += 50 {
		all = append(all, appendN(t, q, "dev", i, 50)...)
	}
	st := q.Stats()
	if st.Bytes > 200<<10 {
		t.Fatalf("buffer holds %d bytes, over max_bytes", st.Bytes)
	}
	dropped := int(testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow))
	if dropped == 0 || dropped+st.Records != len(all) {
		t.Fatalf("dropped %d + held %d != appended %d: something vanished uncounted", dropped, st.Records, len(all))
	}
	got := readAll(t, q, 0)
	want := all[dropped:]
	if len(got) != len(want) || got[0].Seq != want[0].Seq || got[len(got)-1].Seq != want[len(want)-1].Seq {
		t.Fatalf("held %d records from %d, want the newest %d from %d", len(got), got[0].Seq, len(want), want[0].Seq)
	}
}

// min_free_disk: below the floor appends wait like a full buffer.
func TestMinFreeDisk(t *testing.T) {
	dir := t.TempDir()
	free, err := freeDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := openTest(t, Config{Dir: dir, MinFreeDisk: free + 1<<40})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- q.Append(ctx, []Record{rec("d", 0)}) }()
	testkit.WaitFor(t, "append to block below min_free_disk", func() bool { return q.Stats().Blocked })
	cancel()
	if err := <-errc; !errors.Is(err, ErrFull) {
		t.Fatalf("append below min_free_disk: %v, want ErrFull", err)
	}
	if _, err := os.Stat(filepath.Join(dir, deadFileName)); err != nil {
		t.Fatal(err)
	}
}

// Contract 4, drop_oldest with records in flight: what the forwarder has
// read but Kafka not yet acked is spared, so every counted drop is a
// record that will never be delivered, and drops + delivered = appended.
func TestDropOldestSparesRecordsInFlight(t *testing.T) {
	q, reg := openTest(t, Config{MaxBytes: 200 << 10, SegmentBytes: minSegmentBytes, WhenFull: WhenFullDropOldest})
	ctx := context.Background()
	first := appendN(t, q, "dev", 0, 100)
	inFlight, err := q.Read(ctx, 0, 100, 1<<20)
	if err != nil || len(inFlight) != 100 {
		t.Fatalf("read %d, %v", len(inFlight), err)
	}
	var all []Record
	for i := 100; i < 3000; i += 50 {
		all = append(all, appendN(t, q, "dev", i, 50)...)
	}
	dropped := int(testkit.MetricValue(t, reg, "edgebridge_buffer_dropped_records_total", "reason", DropOverflow))
	if dropped == 0 {
		t.Fatal("nothing dropped: test too small")
	}
	// Kafka acks what was in flight: all of it is still there to delete.
	before := q.Stats().Records
	if err := q.Ack(ctx, seqsOf(inFlight)); err != nil {
		t.Fatal(err)
	}
	if got := before - q.Stats().Records; got != len(first) {
		t.Fatalf("acked %d of the %d records in flight: drop_oldest dropped records being sent", got, len(first))
	}
	// What is left is exactly the newest records: dropped ones are the
	// oldest unread, and each is counted once.
	held := readAll(t, q, 0)
	if dropped+len(held) != len(all) {
		t.Fatalf("dropped %d + held %d != %d appended after the in-flight ones", dropped, len(held), len(all))
	}
	if held[0].Seq != all[dropped].Seq {
		t.Fatalf("oldest held %d, want %d", held[0].Seq, all[dropped].Seq)
	}
}

// Disk full (ENOSPC on commit) behaves like block: no crash, committed
// data intact, appends wait and resume once space frees. Runs on a tiny
// tmpfs the test mounts, so it needs root.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root)")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	dir := filepath.Join(mnt, "buffer")
	// Take most of the space with a file an operator could delete.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, MinFreeDisk: -1, MaxBytes: 64 << 20, SegmentBytes: 1 << 20}
	q := mustOpen(t, cfg)
	defer q.Close()

	stored, full := appendUntilStuck(t, q, func(i int) []Record { return recs("dev", i*50, 50) },
		func() bool { return q.Writable() != nil })
	if werr := q.Writable(); !strings.Contains(werr.Error(), "no space") {
		t.Fatalf("Writable on a full disk: %v", werr)
	}
	// The append waits. Free space and it completes by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := <-full.errc; err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	full.cancel()
	stored = append(stored, full.recs...)
	if len(stored) < 100 {
		t.Fatalf("only %d records fit before the disk filled: test setup wrong", len(stored))
	}
	got := readAll(t, q, 0)
	if len(got) != len(stored) {
		t.Fatalf("after disk full: %d records, want %d", len(got), len(stored))
	}
	for i := range got {
		if got[i].Seq != stored[i].Seq || !bytes.Equal(got[i].Value, stored[i].Value) {
			t.Fatalf("record %d differs after disk full", i)
		}
	}
	if err := q.Writable(); err != nil {
		t.Fatalf("still not writable: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir)
	if _, err := Open(cfg, testkit.Logger(t), nil); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("reopen after disk full: %v", err)
	}
}
