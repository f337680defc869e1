package buffer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// fillAndClose appends n records to a fresh buffer in dir and closes it.
func fillAndClose(t *testing.T, cfg Config, n int) []Record {
	t.Helper()
	q := mustOpen(t, cfg)
	var all []Record
	for i := 0; i < n; i += 100 {
		all = append(all, appendN(t, q, "dev", i, min(100, n-i))...)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return all
}

func quarantined(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, quarantineDir, "*"))
	return files
}

// A record whose bytes were flipped on disk is caught by its checksum on
// open: the file is quarantined (kept, not deleted), counted, and every
// other record is salvaged. New appends continue above every old sequence.
func TestCorruptRecordIsQuarantinedAndSalvaged(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MinFreeDisk: -1}
	all := fillAndClose(t, cfg, 300)
	victim := all[150]

	// Flip one byte of the victim's value inside the bbolt file.
	seg := filepath.Join(dir, segmentName(1))
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, victim.Value)
	if i < 0 {
		t.Fatal("victim record not found in the file")
	}
	data[i+10] ^= 0xff
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}

	q, reg := openTest(t, cfg)
	if got := quarantined(t, dir); len(got) != 1 || !strings.HasPrefix(filepath.Base(got[0]), segmentName(1)) {
		t.Fatalf("quarantine holds %v, want the damaged segment", got)
	}
	if got := testkit.MetricValue(t, reg, "edgebridge_buffer_quarantined_files_total"); got != 1 {
		t.Fatalf("quarantined files metric %v, want 1", got)
	}
	got := readAll(t, q, 0)
	if len(got) != len(all)-1 {
		t.Fatalf("salvaged %d records, want %d", len(got), len(all)-1)
	}
	for _, r := range got {
		if r.Seq == victim.Seq {
			t.Fatal("the damaged record came back")
		}
	}
	next := appendN(t, q, "dev", 0, 1)
	if next[0].Seq <= all[len(all)-1].Seq {
		t.Fatalf("after quarantine sequence %d reuses one up to %d", next[0].Seq, all[len(all)-1].Seq)
	}
}

// A file that is not a bbolt database at all, or whose pages are
// destroyed, is quarantined and the bridge starts with a fresh buffer that
// never reuses a sequence.
func TestUnreadableFileIsQuarantined(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 4096), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"zeroed meta pages", func(t *testing.T, path string) { damageMeta(t, path, nil) }},
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{Dir: dir, MinFreeDisk: -1}
			all := fillAndClose(t, cfg, 200)
			tc.damage(t, filepath.Join(dir, segmentName(1)))

			q, reg := openTest(t, cfg)
			if len(quarantined(t, dir)) != 1 {
				t.Fatalf("quarantine holds %v, want the damaged file", quarantined(t, dir))
			}
			if got := testkit.MetricValue(t, reg, "edgebridge_buffer_quarantined_files_total"); got != 1 {
				t.Fatalf("quarantined metric %v", got)
			}
			next := appendN(t, q, "dev", 0, 1)
			if next[0].Seq <= all[len(all)-1].Seq {
				t.Fatalf("sequence %d reuses one up to %d", next[0].Seq, all[len(all)-1].Seq)
			}
			if err := q.Writable(); err != nil {
				t.Fatalf("fresh buffer not writable: %v", err)
			}
		})
	}
}

// A damaged page header inside the B+tree (not a record's bytes) is caught
// by bbolt's consistency check on open, without a crash.
func TestDamagedPageFailsCheck(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MinFreeDisk: -1}
	all := fillAndClose(t, cfg, 2000)
	path := filepath.Join(dir, segmentName(1))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, all[1000].Value)
	if i < 0 {
		t.Fatal("record not found in the file")
	}
	ps := os.Getpagesize()
	page := i / ps * ps
	copy(data[page:page+16], bytes.Repeat([]byte{0xa5}, 16))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	q, _ := openTest(t, cfg)
	if len(quarantined(t, dir)) != 1 {
		t.Fatal("a damaged page was not detected on open")
	}
	// The records on pages before the damaged one are salvaged.
	if n := q.Stats().Records; n < 500 || n >= len(all) {
		t.Fatalf("salvaged %d of %d records", n, len(all))
	}
	appendN(t, q, "dev", 0, 1)
}
