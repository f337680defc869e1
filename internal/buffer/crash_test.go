package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/testkit"
)

// The crash test re-executes the test binary as a child that appends and
// acks under concurrent load and reports, on stdout, every append and ack
// that returned success. The parent SIGKILLs it at a random moment, reopens
// the buffer and checks the guarantee against what the child reported.
const crashChildEnv = "EDGEBRIDGE_BUFFER_CRASH_CHILD"

func crashConfig(dir string) Config {
	return Config{Dir: dir, SegmentBytes: minSegmentBytes, MaxBytes: 256 << 20, MinFreeDisk: -1}
}

// TestCrashChild is the child's body; it runs only when re-executed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashRecovery")
	}
	q, err := Open(crashConfig(dir), testkit.Logger(t), nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "child open: %v\n", err)
		os.Exit(3)
	}
	var out sync.Mutex
	report := func(kind byte, seqs []uint64) {
		var b strings.Builder
		for _, s := range seqs {
			fmt.Fprintf(&b, "%c %d\n", kind, s)
		}
		out.Lock()
		// One write per call: a line is reported whole or not at all.
		os.Stdout.WriteString(b.String())
		out.Unlock()
	}
	ctx := context.Background()
	for g := range 4 {
		go func() {
			for i := 0; ; i++ {
				n := 1 + rand.IntN(20)
				recs := make([]Record, n)
				for j := range recs {
					recs[j] = rec(fmt.Sprint("g", g), i*20+j)
				}
				if err := q.Append(ctx, recs); err != nil {
					fmt.Fprintf(os.Stderr, "child append: %v\n", err)
					os.Exit(4)
				}
				report('A', seqsOf(recs))
			}
		}()
	}
	// Ack every other record read, in batches, out of order.
	var after uint64
	for {
		recs, err := q.Read(ctx, after, 200, 1<<20)
		if err != nil {
			fmt.Fprintf(os.Stderr, "child read: %v\n", err)
			os.Exit(5)
		}
		after = recs[len(recs)-1].Seq
		var acks []uint64
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Seq%2 == 0 {
				acks = append(acks, recs[i].Seq)
			}
		}
		if err := q.Ack(ctx, acks); err != nil {
			fmt.Fprintf(os.Stderr, "child ack: %v\n", err)
			os.Exit(6)
		}
		report('K', acks)
	}
}

// TestCrashRecovery SIGKILLs an appending, acking child at random moments
// (50 times; EDGEBRIDGE_CRASH_ITERATIONS for a soak) and proves contract 1,
// 2 and 5 each time: every append that returned success is present unless
// acked, nothing acked comes back, sequences are increasing and never
// reused, and the files pass bbolt's consistency check.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("child")
	}
	iterations := 50
	if s := os.Getenv("EDGEBRIDGE_CRASH_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("EDGEBRIDGE_CRASH_ITERATIONS: %v", err)
		}
		iterations = n
	}
	dir := t.TempDir()
	appended := map[uint64]bool{} // reported appended, not known acked
	acked := map[uint64]bool{}    // reported or made acked: must never return
	var maxSeen uint64
	totalAppends := 0
	for it := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := testkit.Lines(stdout)
		// Let it run until it has done some work, then a random while more.
		deadline := time.After(time.Duration(rand.IntN(60)) * time.Millisecond)
		killed := false
		for line := range lines {
			kind, seq := parseReport(t, line)
			if seq <= maxSeen && kind == 'A' {
				t.Fatalf("iteration %d: sequence %d reused (highest seen before %d)", it, seq, maxSeen)
			}
			switch kind {
			case 'A':
				appended[seq] = true
				totalAppends++
			case 'K':
				delete(appended, seq)
				acked[seq] = true
			}
			if !killed {
				select {
				case <-deadline:
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				default:
				}
			}
		}
		err = cmd.Wait()
		if !killed || err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("iteration %d: child ended by itself (%v): %s", it, err, stderr.String())
		}
		for s := range appended {
			maxSeen = max(maxSeen, s)
		}
		for s := range acked {
			maxSeen = max(maxSeen, s)
		}

		q, err := Open(crashConfig(dir), testkit.Logger(t), nil)
		if err != nil {
			t.Fatalf("iteration %d: reopen: %v", it, err)
		}
		present := map[uint64]bool{}
		var prev uint64
		for _, r := range readAll(t, q, 0) {
			if r.Seq <= prev {
				t.Fatalf("iteration %d: read order %d after %d", it, r.Seq, prev)
			}
			prev = r.Seq
			present[r.Seq] = true
			maxSeen = max(maxSeen, r.Seq)
		}
		for s := range appended {
			// The child acks even sequences and may die between an ack
			// and its report: only odd ones are known to be unacked.
			if s%2 == 1 && !present[s] {
				t.Fatalf("iteration %d: record %d was appended (Append returned nil) but is missing after SIGKILL", it, s)
			}
		}
		for s := range acked {
			if present[s] {
				t.Fatalf("iteration %d: record %d was acked but came back after SIGKILL", it, s)
			}
		}
		if st := q.Stats(); st.NextSeq <= maxSeen {
			t.Fatalf("iteration %d: next sequence %d would reuse %d", it, st.NextSeq, maxSeen)
		}
		// Drain what is left so the next child starts small; these acks
		// must hold too.
		var all []uint64
		for s := range present {
			all = append(all, s)
			acked[s] = true
		}
		clear(appended)
		if err := q.Ack(context.Background(), all); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir)
		if _, err := os.Stat(filepath.Join(dir, quarantineDir)); err == nil {
			t.Fatalf("iteration %d: a crash led to a quarantined file", it)
		}
	}
	t.Logf("%d SIGKILLs survived, %d appends reported, %d acks verified", iterations, totalAppends, len(acked))
}

func parseReport(t *testing.T, line string) (byte, uint64) {
	kind, num, ok := strings.Cut(line, " ")
	seq, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || len(kind) != 1 {
		t.Fatalf("bad child line %q", line)
	}
	return kind[0], seq
}
