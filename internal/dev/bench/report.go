package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// span formats the range of vals over repetitions: "a" or "a-b".
func span(vals []float64, f func(float64) string) string {
	if len(vals) == 0 {
		return "-"
	}
	lo, hi := vals[0], vals[0]
	for _, v := range vals {
		lo, hi = min(lo, v), max(hi, v)
	}
	a, b := f(lo), f(hi)
	if a == b {
		return a
	}
	return a + "-" + b
}

func col(rs []Result, get func(Result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = get(r)
	}
	return out
}

func ratios(a, b []Result, get func(Result) float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if c := get(a[i]); c > 0 {
			out = append(out, get(b[i])/c)
		}
	}
	return out
}

func kps(v float64) string  { return fmt.Sprintf("%.1fk", v/1000) }
func msf(v float64) string  { return fmt.Sprintf("%.1f", v) }
func two(v float64) string  { return fmt.Sprintf("%.2f", v) }
func zero(v float64) string { return fmt.Sprintf("%.0f", v) }

func printTable(w io.Writer, o Options, kafkaDesc, before, after string, took time.Duration, ceil, edge []Result, out *Outage) {
	fmt.Fprintf(w, "\nedgebridge-bench: %d devices, %d-byte QoS 1 payloads, mosquitto (max_inflight_messages 1000, persistence on), %s\n", o.Devices, o.Size, kafkaDesc)
	fmt.Fprintf(w, "machine: %d CPUs, %s; load average before %s, after %s; %d repetitions in %s\n\n",
		runtime.NumCPU(), cpuModel(), before, after, len(edge), took.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	row("", "ceiling (raw paho)", "edgebridge", "edgebridge/ceiling")
	rate := func(r Result) float64 { return r.MaxRate }
	backlog := func(r Result) float64 { return r.Backlog }
	row("max sustained live, msg/s", span(col(ceil, rate), kps), span(col(edge, rate), kps), span(ratios(ceil, edge, rate), two))
	row("from a broker backlog, msg/s", span(col(ceil, backlog), kps), span(col(edge, backlog), kps), span(ratios(ceil, edge, backlog), two))
	for i, pct := range []string{"25%", "50%", "75%"} {
		for j, q := range []string{"p50", "p99", "p99.9"} {
			lat := func(r Result) float64 { return float64(r.Lat[i][j]) / float64(time.Millisecond) }
			label := fmt.Sprintf("latency %s at %s, ms", q, pct)
			if j == 0 {
				load := func(r Result) float64 { return r.Loads[i] }
				label = fmt.Sprintf("latency %s at %s (%s | %s msg/s), ms", q, pct, span(col(ceil, load), kps), span(col(edge, load), kps))
			}
			row(label, span(col(ceil, lat), msf), span(col(edge, lat), msf), "")
		}
	}
	hwm := func(r Result) float64 { return mib(r.HWM) }
	cpu := func(r Result) float64 { return r.CPU100k.Seconds() }
	wr := func(r Result) float64 { return r.WritePer }
	anon := func(r Result) float64 { return mib(r.Anon) }
	row("peak RSS at max rate (VmHWM), MiB", span(col(ceil, hwm), msf), span(col(edge, hwm), msf), "")
	row("  of it anonymous after the phase, MiB", span(col(ceil, anon), msf), span(col(edge, anon), msf), "")
	row("CPU seconds per 100k msgs", span(col(ceil, cpu), two), span(col(edge, cpu), two), span(ratios(ceil, edge, cpu), two))
	buf := func(r Result) float64 { return r.BufferPer }
	dev := func(r Result) float64 { return r.DevicePer }
	row("disk bytes written per msg (/proc/PID/io write_bytes)", span(col(ceil, wr), zero), span(col(edge, wr), zero), "")
	row("  bytes the buffer wrote per msg (its metric)", "-", span(col(edge, buf), zero), "")
	if len(edge) > 0 && edge[0].DevicePer >= 0 {
		row("  bytes that reached the disk per msg (whole machine)", span(col(ceil, dev), zero), span(col(edge, dev), zero), "")
	}
	tw.Flush()

	if out != nil {
		fmt.Fprintf(w, "\nKafka outage (edgebridge only, %.0f msg/s live throughout, achieved %.0f):\n", o.Nominal, out.NominalAchieved)
		rss := func(p Proc) string {
			return fmt.Sprintf("%.1f MiB (anonymous %.1f, binary %.1f, buffer maps %.1f)", mib(p.RSS), mib(p.Anon), mib(p.File-p.Mapped), mib(p.Mapped))
		}
		fmt.Fprintf(w, "  RSS with %7d buffered: %s\n", out.Records10k, rss(out.RSS10k))
		fmt.Fprintf(w, "  RSS with %7d buffered: %s\n", out.Full, rss(out.RSSFull))
		fmt.Fprintf(w, "  restart with %d buffered: ready in %s, then RSS %s\n", out.Full, out.Restart.Round(time.Millisecond), rss(out.RSSRestarted))
		fmt.Fprintf(w, "  Kafka restored: forwarding after %s; backlog drained at %.1fk records/s = %.1fx nominal ingest; empty after %s\n",
			out.Resume.Round(time.Millisecond), out.Drain/1000, out.Drain/o.Nominal, out.Empty.Round(time.Millisecond))
		fmt.Fprintf(w, "  %d messages acknowledged by the broker, %d records in Kafka (duplicates allowed, none missing)\n", out.Published, out.Delivered)
	}

	fmt.Fprintf(w, "\ntargets:\n")
	check := func(name string, ok bool, got string) {
		mark := "ok  "
		if !ok {
			mark = "MISS"
		}
		fmt.Fprintf(w, "  %s %-42s %s\n", mark, name, got)
	}
	worst := func(v []float64, least bool) float64 {
		if len(v) == 0 {
			return 0
		}
		x := v[0]
		for _, y := range v {
			if least {
				x = min(x, y)
			} else {
				x = max(x, y)
			}
		}
		return x
	}
	r := worst(ratios(ceil, edge, rate), true)
	check("live >= 0.9x ceiling", r >= 0.9, fmt.Sprintf("%.2fx (worst repetition)", r))
	r = worst(ratios(ceil, edge, backlog), true)
	check("broker backlog >= 0.9x ceiling", r >= 0.9, fmt.Sprintf("%.2fx", r))
	p99 := worst(col(edge, func(r Result) float64 { return float64(r.Lat[1][1]) / float64(time.Millisecond) }), false)
	check("p99 <= 20 ms at 50% load", p99 <= 20, fmt.Sprintf("%.1f ms", p99))
	h := worst(col(edge, hwm), false)
	check("RSS <= 40 MiB at max rate", h <= 40, fmt.Sprintf("%.1f MiB", h))
	// Write amplification is what the bridge writes per payload byte: the
	// buffer's own count, which strace's pwrite64 sizes match exactly.
	// write_bytes is printed too; on some kernels it counts more than the
	// process wrote (docs/performance.md).
	wa := worst(col(edge, buf), false) / float64(o.Size)
	wio := worst(col(edge, wr), false) / float64(o.Size)
	check("write amplification <= 3x", wa <= 3, fmt.Sprintf("%.2fx (bytes the buffer wrote / payload bytes; write_bytes: %.2fx)", wa, wio))
	if out != nil {
		check("drain >= 5x nominal ingest", out.Drain >= 5*o.Nominal, fmt.Sprintf("%.1fx", out.Drain/o.Nominal))
		g := float64(out.RSSFull.RSS) / float64(out.RSS10k.RSS)
		check("RSS flat with backlog (full vs 10k <= 1.2x)", g <= 1.2, fmt.Sprintf("x%.2f", g))
		fmt.Fprintf(w, "       of it anonymous: %.1f -> %.1f MiB (%+.1f MiB for %d more records)\n",
			mib(out.RSS10k.Anon), mib(out.RSSFull.Anon), mib(out.RSSFull.Anon-out.RSS10k.Anon), out.Full-out.Records10k)
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
