package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is one reading of a process's resource counters from /proc.
type Proc struct {
	RSS        int64         // VmRSS, bytes
	HWM        int64         // VmHWM (peak RSS since start), bytes
	Anon       int64         // RssAnon: heap, stacks (what the process allocated)
	File       int64         // RssFile: file pages, the binary's own and the buffer's maps; reclaimable
	Mapped     int64         // the part of File that maps the buffer's files (*.db), from smaps
	CPU        time.Duration // utime + stime
	WriteBytes int64         // bytes this process caused to be written to storage
}

// clockTick is USER_HZ, the unit of utime and stime.
var clockTick = func() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if hz, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && hz > 0 {
			return time.Second / time.Duration(hz)
		}
	}
	return 10 * time.Millisecond // 100 Hz, Linux's USER_HZ everywhere we run
}()

// ReadProc reads pid's counters.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	base := fmt.Sprintf("/proc/%d/", pid)
	f, err := os.Open(base + "status")
	if err != nil {
		return p, fmt.Errorf("read proc status: %w", err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "VmRSS":
			p.RSS = kB(v)
		case "VmHWM":
			p.HWM = kB(v)
		case "RssAnon":
			p.Anon = kB(v)
		case "RssFile":
			p.File = kB(v)
		}
	}
	f.Close()
	stat, err := os.ReadFile(base + "stat")
	if err != nil {
		return p, fmt.Errorf("read proc stat: %w", err)
	}
	// The command name may hold spaces and parentheses: fields count from
	// after the last ')'. utime and stime are fields 14 and 15, i.e. the
	// 12th and 13th after the name.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return p, fmt.Errorf("proc stat of %d: %d fields", pid, len(fields))
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	p.CPU = time.Duration(ut+st) * clockTick
	p.Mapped = mappedRSS(base+"smaps", ".db")
	io, err := os.ReadFile(base + "io")
	if err != nil {
		return p, fmt.Errorf("read proc io: %w", err)
	}
	for _, line := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			p.WriteBytes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return p, nil
}

// mappedRSS sums the resident size of the mappings in an smaps file whose
// path ends with suffix.
func mappedRSS(smaps, suffix string) int64 {
	f, err := os.Open(smaps)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	match := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			if match {
				n += kB(v)
			}
			continue
		}
		// A mapping's header: "start-end perms offset dev inode [path]".
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			match = len(fields) >= 6 && strings.HasSuffix(fields[len(fields)-1], suffix)
		}
	}
	return n
}

// deviceWritten returns the bytes written so far to the block device that
// holds dir, from /sys/dev/block/MAJ:MIN/stat: what reached the disk from
// every process, the filesystem's journal included.
func deviceWritten(dir string) (int64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return 0, false // not a block device: tmpfs, overlay
	}
	fields := strings.Fields(string(b))
	if len(fields) < 7 {
		return 0, false
	}
	sectors, err := strconv.ParseInt(fields[6], 10, 64)
	return sectors * 512, err == nil
}

func kB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}
