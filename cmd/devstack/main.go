// Command devstack is `make demo`: it starts an embedded MQTT broker and an
// in-process Kafka on loopback, runs the real edgebridge binary against them,
// lets simulated devices publish QoS 1 messages, cuts Kafka midway and brings
// it back, and shows live counters until every message is in Kafka. It is a
// development tool, not part of the shipped binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

func main() {
	os.Exit(run())
}

func run() int {
	bin := flag.String("bin", "bin/edgebridge", "the edgebridge binary to run")
	devices := flag.Int("devices", 10, "simulated devices")
	messages := flag.Int("messages", 1500, "messages per device")
	rate := flag.Float64("rate", 1000, "messages per second, all devices together")
	cutAfter := flag.Duration("cut-after", 4*time.Second, "how long after the start Kafka is cut")
	outage := flag.Duration("outage", 6*time.Second, "how long Kafka stays down")
	keep := flag.Bool("keep", false, "keep the working directory (config, buffer, logs)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "edgebridge-demo-")
	if err != nil {
		return fail(err)
	}
	if *keep {
		fmt.Printf("working directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	total := *devices * *messages
	const topic = "iot.telemetry"

	kafka, err := devstack.StartKafka(filepath.Join(dir, "kafka"), topic, 4)
	if err != nil {
		return fail(err)
	}
	defer kafka.Stop()
	broker, err := devstack.StartMochi(slog.New(slog.DiscardHandler))
	if err != nil {
		return fail(err)
	}
	defer broker.Close()
	port, err := devstack.FreePort()
	if err != nil {
		return fail(err)
	}
	cfgPath := filepath.Join(dir, "edgebridge.yaml")
	bc := devstack.BridgeConfig{
		NodeID: "demo-node", MQTTURL: broker.URL(), Brokers: []string{kafka.Addr()}, Topic: topic,
		BufferDir: filepath.Join(dir, "buffer"), HTTPListen: fmt.Sprintf("127.0.0.1:%d", port),
	}
	if err := bc.WriteFile(cfgPath); err != nil {
		return fail(err)
	}
	logf, err := os.Create(filepath.Join(dir, "edgebridge.log"))
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	bridge := &devstack.Bridge{Bin: *bin, Config: cfgPath, Output: logf, Metrics: bc.HTTPListen}

	fmt.Printf("edgebridge demo: MQTT broker %s (embedded), Kafka %s (in-process), metrics http://%s/metrics\n",
		broker.URL(), kafka.Addr(), bc.HTTPListen)
	fmt.Printf("%d devices x %d QoS 1 messages at %.0f msg/s; Kafka is cut %s after the start for %s\n\n",
		*devices, *messages, *rate, *cutAfter, *outage)

	startCtx, cancelStart := context.WithTimeout(ctx, 30*time.Second)
	err = bridge.Start(startCtx)
	if err == nil {
		err = bridge.WaitReady(startCtx)
	}
	cancelStart()
	if err != nil {
		bridge.Kill()
		return fail(fmt.Errorf("%v (log: %s)", err, tail(logf.Name())))
	}
	defer bridge.Kill()

	v := devstack.NewVerifier()
	vctx, cancelV := context.WithCancel(ctx)
	vdone := make(chan error, 1)
	go func() { vdone <- v.Consume(vctx, []string{kafka.Addr()}, topic) }()
	defer func() { cancelV(); <-vdone }()

	sim := &devstack.Devices{BrokerURL: broker.URL(), N: *devices, Messages: *messages, Rate: *rate}
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(ctx) }()

	tty := isTTY()
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var (
		cutAt, backAt time.Time
		simErr        error
		simFinished   bool
		drainDeadline time.Time
		lastPrint     time.Time
	)
	show := func(final bool) {
		m, _ := bridge.Scrape()
		c := v.Counts()
		state := "up"
		if !kafka.Up() {
			state = "DOWN"
		}
		// Every message the bridge acknowledged to the broker must be in
		// its buffer or in Kafka; the metrics are read before the
		// verifier so a record moving from one to the other is counted.
		buffered := int64(m["edgebridge_buffer_records"])
		lost := max(0, int64(m["edgebridge_mqtt_acked_total"])-buffered-c.Unique)
		if final {
			lost = max(0, sim.Published.Load()-c.Unique)
		}
		line := fmt.Sprintf("%5.1fs  kafka %-4s  published %6d  buffered %6d  in kafka %6d  duplicates %d  lost %d",
			time.Since(start).Seconds(), state, sim.Published.Load(), buffered, c.Unique, c.Duplicates, lost)
		switch {
		case tty && !final:
			fmt.Printf("\r%s ", line)
		case tty:
			fmt.Printf("\r%s \n", line)
		case final || time.Since(lastPrint) >= 2*time.Second:
			fmt.Println(line)
			lastPrint = time.Now()
		}
	}
	event := func(msg string) {
		if tty {
			fmt.Print("\r" + strings.Repeat(" ", 110) + "\r")
		}
		fmt.Printf("%5.1fs  %s\n", time.Since(start).Seconds(), msg)
	}

loop:
	for {
		select {
		case <-ctx.Done():
			event("interrupted")
			break loop
		case simErr = <-simDone:
			simFinished = true
			simDone = nil
			if simErr != nil {
				event("devices failed: " + simErr.Error())
				break loop
			}
			event(fmt.Sprintf("devices done: %d messages acknowledged by the broker", sim.Published.Load()))
			drainDeadline = time.Now().Add(60 * time.Second)
		case <-tick.C:
		}
		now := time.Now()
		if cutAt.IsZero() && now.Sub(start) >= *cutAfter {
			kafka.Stop()
			cutAt = now
			event(fmt.Sprintf("Kafka cut: connections refused for %s; the bridge keeps acking into its disk buffer", *outage))
		}
		if !cutAt.IsZero() && backAt.IsZero() && now.Sub(cutAt) >= *outage {
			if err := kafka.Start(); err != nil {
				event("Kafka restart failed: " + err.Error())
				break loop
			}
			backAt = now
			event("Kafka back on the same port with its data; the bridge drains its buffer")
		}
		show(false)
		if simFinished && !backAt.IsZero() && v.Counts().Unique >= int64(total) {
			break
		}
		if simFinished && now.After(drainDeadline) {
			event("gave up waiting for Kafka to receive everything (60s)")
			break
		}
	}
	show(true)

	stopErr := bridge.Stop(20 * time.Second)
	if stopErr != nil {
		event(fmt.Sprintf("edgebridge did not exit cleanly after SIGTERM: %v", stopErr))
	} else {
		event("edgebridge stopped cleanly on SIGTERM")
	}

	c := v.Counts()
	published := sim.Published.Load()
	checkErr := v.Check(*devices, *messages)
	fmt.Println()
	if simErr == nil && checkErr == nil && stopErr == nil && published == int64(total) && !backAt.IsZero() {
		fmt.Printf("PASS: %d published, %d in Kafka, 0 lost, %d duplicates, order kept for all %d devices, through a %s Kafka outage\n",
			published, c.Unique, c.Duplicates, *devices, backAt.Sub(cutAt).Round(100*time.Millisecond))
		return 0
	}
	reason := "incomplete run"
	switch {
	case simErr != nil:
		reason = simErr.Error()
	case checkErr != nil:
		reason = checkErr.Error()
	case stopErr != nil:
		reason = stopErr.Error()
	}
	fmt.Printf("FAIL: %d published, %d in Kafka, %d lost, %d duplicates: %s (bridge log: %s)\n",
		published, c.Unique, max(0, published-c.Unique), c.Duplicates, reason, logf.Name())
	if !*keep {
		fmt.Println(tail(logf.Name()))
	}
	return 1
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "demo:", err)
	return 1
}

func isTTY() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tail returns the last lines of the bridge's log for a failure report.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
