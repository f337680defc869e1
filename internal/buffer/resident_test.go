package buffer

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// rssFile returns this process's resident file-backed memory, in bytes.
func rssFile(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// Reading a backlog maps its pages into the process; they must not stay
// counted in its memory (an edge node's container limit sees them) once
// the reader has moved on. Opening a large buffer, which walks every page,
// must not leave them resident either.
func TestMappedPagesReleased(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MinFreeDisk: -1, MaxBytes: 1 << 30}
	q, _ := openTest(t, cfg)
	const n = 100_000 // ~27 MiB of records
	const size = n * 250
	// Commits read the tree through the map too: a backlog building up
	// while Kafka is away, with nothing reading, must not stay resident.
	base := rssFile(t)
	for i := 0; i < n; i += 1000 {
		appendN(t, q, "dev", i, 1000)
	}
	testkit.WaitFor(t, "the pages appends touched to leave the resident set", func() bool { return rssFile(t) < base+size/8 })
	recs := readAll(t, q, 0)
	if len(recs) != n {
		t.Fatalf("read %d records", len(recs))
	}
	testkit.WaitFor(t, "the pages read to leave the resident set", func() bool { return rssFile(t) < base+size/8 })

	// Reopen: the checks and bbolt's freelist rebuild touch every page.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	before := rssFile(t)
	q2, err := Open(cfg, testkit.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if after := rssFile(t); after > before+size/4 {
		t.Fatalf("opening a %d MiB buffer left %d MiB of it resident", size>>20, (after-before)>>20)
	}
}
