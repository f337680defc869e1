package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Proc is one reading of a process's resource counters from /proc.
type Proc struct {
	RSS        int64         // VmRSS, bytes
	HWM        int64         // VmHWM (peak RSS since start), bytes
	Anon       int64         // RssAnon: heap, stacks (what the process allocated)
	File       int64         // RssFile: mapped file pages (bbolt's mmap of the buffer), reclaimable
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

func kB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}
