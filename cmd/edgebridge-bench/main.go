// Command edgebridge-bench is `make bench`: it measures the pipeline
// against the physical ceiling on the same machine. Simulated devices
// publish QoS 1 messages to a mosquitto it starts; first a raw paho
// subscriber that acknowledges at once and discards takes the load (the
// ceiling: what the broker delivers on one ordered subscription), then the
// real edgebridge binary on the same broker, forwarding to Kafka, where a
// consumer timestamps each record's arrival. It prints both side by side.
//
// Kafka is kfake, in this process: it can be cut and restored on the same
// port with its data for the outage scenario, and it costs no second Go
// runtime on a small machine. Everything the table says about edgebridge is
// read from the bridge's own /proc entries, so the load generator, kfake
// and the consumer are never charged to it. -brokers points at a real
// Kafka instead (the outage scenario is then skipped).
//
// It is a development tool, not part of the shipped image.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sink" {
		fs := flag.NewFlagSet("sink", flag.ExitOnError)
		url := fs.String("mqtt", "", "broker URL")
		_ = fs.Parse(os.Args[2:])
		if err := bench.RunSink(*url, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "edgebridge-bench sink:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

func run() int {
	o := bench.Options{Out: os.Stdout, Log: os.Stderr}
	quick := flag.Bool("quick", false, "short phases, one repetition, 200k buffered (about 2 minutes)")
	flag.StringVar(&o.Bin, "bin", "bin/edgebridge", "the edgebridge binary")
	flag.Func("bridge-env", "`NAME=value` added to the bridge's environment, e.g. GOGC=50 (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=value, not %q", v)
		}
		o.Env = append(o.Env, v)
		return nil
	})
	flag.IntVar(&o.Devices, "devices", 10, "simulated devices, one MQTT connection each")
	flag.IntVar(&o.Size, "size", 200, "payload bytes")
	flag.IntVar(&o.Window, "window", 64, "PUBACKs each device may await")
	flag.DurationVar(&o.Live, "live", 20*time.Second, "length of the max-rate phase")
	flag.DurationVar(&o.Latency, "latency", 10*time.Second, "length of each 25/50/75% latency phase")
	flag.IntVar(&o.Backlog, "backlog", 300_000, "messages queued in the broker for the backlog phase")
	flag.IntVar(&o.Buffered, "buffered", 1_000_000, "records buffered for the restart and memory phases (0 skips the Kafka outage)")
	flag.Float64Var(&o.Nominal, "nominal", 5000, "live msg/s during the Kafka outage; drain is compared with it")
	flag.IntVar(&o.Repeat, "repeat", 3, "repetitions of the ceiling/edgebridge comparison")
	brokers := flag.String("brokers", "", "comma-separated brokers of a real Kafka (default: kfake in process)")
	flag.StringVar(&o.Profile, "profile", "", "write CPU and heap profiles of the bridge at max rate into this directory")
	keep := flag.Bool("keep", false, "keep the working directory (configs, logs, buffers)")
	flag.Parse()
	if *quick {
		// Shorter defaults; flags given explicitly still win.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		short := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		short("live", func() { o.Live = 8 * time.Second })
		short("latency", func() { o.Latency = 4 * time.Second })
		short("backlog", func() { o.Backlog = 100_000 })
		short("buffered", func() { o.Buffered = 200_000 })
		short("repeat", func() { o.Repeat = 1 })
	}
	if *brokers != "" {
		o.Brokers = strings.Split(*brokers, ",")
	}
	if o.Size < bench.MinPayload {
		fmt.Fprintf(os.Stderr, "edgebridge-bench: -size must be at least %d (the payload header)\n", bench.MinPayload)
		return 2
	}
	if o.Devices < 1 || o.Repeat < 1 || o.Repeat > 20 || o.Nominal <= 0 {
		fmt.Fprintln(os.Stderr, "edgebridge-bench: -devices >= 1, 1 <= -repeat <= 20 and -nominal > 0")
		return 2
	}
	if _, err := os.Stat(o.Bin); err != nil {
		fmt.Fprintf(os.Stderr, "edgebridge-bench: %v (run make build)\n", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "edgebridge-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgebridge-bench:", err)
		return 1
	}
	o.Dir = dir
	if *keep {
		fmt.Fprintf(os.Stderr, "working directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "edgebridge-bench:", err)
		return 1
	}
	return 0
}
