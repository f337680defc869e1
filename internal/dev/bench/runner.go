package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/retry"
)

// Options shape a bench run.
type Options struct {
	Bin      string        // the edgebridge binary
	Env      []string      // added to the bridge's environment
	Devices  int           // simulated devices
	Size     int           // payload bytes
	Window   int           // PUBACKs each device may await
	Live     time.Duration // the max-rate phase
	Latency  time.Duration // each of the 25/50/75% phases
	Backlog  int           // messages queued in the broker for the backlog phase
	Buffered int           // records buffered for the restart and memory phases (0 skips the outage scenario)
	Nominal  float64       // live msg/s during the Kafka outage; drain is compared with it
	Repeat   int
	Brokers  []string // an external Kafka; empty runs kfake in this process
	Profile  string   // if set, CPU and heap profiles of the bridge at max rate are written here
	Dir      string   // working directory
	Out      io.Writer
	Log      io.Writer // progress
}

// Result is what one repetition measured of one subject.
type Result struct {
	MaxRate  float64 // received msg/s while the devices published as fast as acks allowed
	Offered  float64 // msg/s the broker acknowledged to the devices in that phase
	Loads    [3]float64
	Lat      [3][3]time.Duration // [25/50/75%][p50/p99/p99.9]
	Backlog  float64             // msg/s draining the broker's queue after a stop
	HWM      int64               // VmHWM after the max-rate phase
	Anon     int64               // RssAnon at the end of the max-rate phase
	CPU100k  time.Duration       // CPU per 100k messages over the max-rate phase
	WritePer float64             // bytes written to storage per message, same phase (/proc/PID/io write_bytes)
	// BufferPer is what the bridge's buffer wrote per message, same phase
	// (edgebridge_buffer_written_bytes_total); 0 for the ceiling.
	BufferPer float64
	// DevicePer is what reached the disk per message, same phase, from
	// every process on the machine (the broker's persistence, the
	// journal); -1 when the bench directory is not on a block device.
	DevicePer float64
}

// Outage is what the Kafka outage scenario measured.
type Outage struct {
	RSS10k, RSSFull      Proc  // readings with ~10k and ~Buffered records buffered
	Records10k, Full     int64 // records buffered at those readings
	Restart              time.Duration
	RSSRestarted         Proc
	Resume               time.Duration // restore -> first record forwarded
	Drain                float64       // records forwarded per second until the buffer emptied
	Empty                time.Duration // restore -> buffer empty
	NominalAchieved      float64
	Published, Delivered int64
}

// subject is what the same load is measured against.
type subject interface {
	start(ctx context.Context) error // start and wait until it receives
	stop() error                     // stop; its broker session stays and queues
	stats(phase uint8) (PhaseStats, error)
	pid() int
	// written returns the bytes the subject's durable store wrote so far.
	written() (float64, error)
}

type sinkSubject struct {
	url string
	s   *Sink
}

func (x *sinkSubject) start(ctx context.Context) (err error) {
	x.s, err = StartSink(ctx, x.url)
	return err
}
func (x *sinkSubject) stop() error                         { return x.s.Stop() }
func (x *sinkSubject) stats(p uint8) (PhaseStats, error)   { return x.s.Stats(p) }
func (x *sinkSubject) pid() int                            { return x.s.PID() }
func (x *sinkSubject) written() (float64, error)           { return 0, nil } // it stores nothing
func (x *bridgeSubject) stats(p uint8) (PhaseStats, error) { return x.cons.Stats(p), nil }
func (x *bridgeSubject) pid() int                          { return x.b.PID() }
func (x *bridgeSubject) written() (float64, error) {
	return metric(x.b, "edgebridge_buffer_written_bytes_total")
}
func (x *bridgeSubject) stop() error { return x.b.Stop(30 * time.Second) }

type bridgeSubject struct {
	b    *devstack.Bridge
	cons *Consumer
}

func (x *bridgeSubject) start(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := x.b.Start(rctx); err != nil {
		return err
	}
	return x.b.WaitReady(rctx)
}

// Run runs every phase and prints the table to o.Out.
func Run(ctx context.Context, o Options) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	before := loadavg()
	started := time.Now()
	mq, err := devstack.StartMosquitto(mkdir(o.Dir, "mosquitto"))
	if err != nil {
		return err
	}
	defer mq.Close()
	const topic = "bench.telemetry"
	var kafka *devstack.Kafka
	brokers := o.Brokers
	kafkaDesc := "external Kafka " + fmt.Sprint(brokers)
	if len(brokers) == 0 {
		kafka, err = devstack.StartKafka(mkdir(o.Dir, "kafka"), topic, 4)
		if err != nil {
			return err
		}
		defer kafka.Stop()
		brokers = []string{kafka.Addr()}
		kafkaDesc = "kfake (franz-go) in the bench process, 4 partitions"
	}
	cons, err := NewConsumer(brokers, topic)
	if err != nil {
		return err
	}
	cctx, cancelCons := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() { defer cwg.Done(); cons.Run(cctx) }()
	defer func() { cancelCons(); cwg.Wait() }()

	load := &Load{BrokerURL: mq.URL(), Devices: o.Devices, Size: o.Size, Window: o.Window}
	if err := load.Connect(); err != nil {
		return err
	}
	defer load.Close()
	logf("mosquitto %s, %s, %d devices, %d B payloads, load average %s", mq.URL(), kafkaDesc, o.Devices, o.Size, before)

	var ceil, edge []Result
	for r := 1; r <= o.Repeat; r++ {
		base := uint8(r * 10)
		logf("repetition %d/%d: ceiling (raw paho subscriber, own process)", r, o.Repeat)
		sink := &sinkSubject{url: mq.URL()}
		res, err := measure(ctx, o, load, sink, base, logf)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		_ = sink.stop()
		if err := ForgetSession(mq.URL(), SinkClientID); err != nil {
			return err
		}
		ceil = append(ceil, res)

		logf("repetition %d/%d: edgebridge", r, o.Repeat)
		node := fmt.Sprintf("bench-%d", r)
		br, err := newBridge(o, node, mq.URL(), brokers, topic)
		if err != nil {
			return err
		}
		bs := &bridgeSubject{b: br, cons: cons}
		res, err = measure(ctx, o, load, bs, base+5, logf)
		_ = bs.stop()
		if err != nil {
			return fmt.Errorf("edgebridge: %w (log: %s)", err, br.Config+".log")
		}
		if err := ForgetSession(mq.URL(), "edgebridge-"+node); err != nil {
			return err
		}
		edge = append(edge, res)
	}

	var out *Outage
	if o.Buffered > 0 && kafka != nil {
		logf("kafka outage: %d records buffered, %.0f msg/s live throughout", o.Buffered, o.Nominal)
		br, err := newBridge(o, "bench-outage", mq.URL(), brokers, topic)
		if err != nil {
			return err
		}
		out, err = outage(ctx, o, kafka, br, cons, mq.URL(), logf)
		_ = br.Stop(30 * time.Second)
		if err != nil {
			return fmt.Errorf("kafka outage: %w (log: %s)", err, br.Config+".log")
		}
	} else if o.Buffered > 0 {
		logf("kafka outage skipped: it cuts the in-process kfake, not an external Kafka")
	}
	printTable(o.Out, o, kafkaDesc, before, loadavg(), time.Since(started), ceil, edge, out)
	return nil
}

func newBridge(o Options, node, mqttURL string, brokers []string, topic string) (*devstack.Bridge, error) {
	dir := mkdir(o.Dir, node)
	port, err := devstack.FreePort()
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "edgebridge.yaml")
	if err := bridgeConfig(node, mqttURL, brokers, topic, filepath.Join(dir, "buffer"), listen).WriteFile(cfg); err != nil {
		return nil, err
	}
	logFile, err := os.Create(cfg + ".log")
	if err != nil {
		return nil, err
	}
	return &devstack.Bridge{Bin: o.Bin, Config: cfg, Metrics: listen, Output: logFile, Env: o.Env}, nil
}

// measure runs the max-rate, latency and broker-backlog phases against s,
// with phases base+0..base+4.
func measure(ctx context.Context, o Options, load *Load, s subject, base uint8, logf func(string, ...any)) (Result, error) {
	var res Result
	if err := s.start(ctx); err != nil {
		return res, err
	}
	// Max rate: the devices publish as fast as PUBACKs return; the rate is
	// read at the receiver after a warm-up, over the rest of the phase.
	p0, err := ReadProc(s.pid())
	if err != nil {
		return res, err
	}
	w0, err := s.written()
	if err != nil {
		return res, err
	}
	d0, onDevice := deviceWritten(o.Dir)
	lctx, cancel := context.WithTimeout(ctx, o.Live)
	var sent int64
	var lerr error
	done := make(chan struct{})
	go func() { sent, lerr = load.Run(lctx, base, 0, 0); close(done) }()
	if !retry.Sleep(ctx, o.Live/4) {
		cancel()
		return res, ctx.Err()
	}
	var pwg sync.WaitGroup
	if b, ok := s.(*bridgeSubject); ok && o.Profile != "" {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			cpu := filepath.Join(o.Profile, fmt.Sprintf("cpu-%d.pb.gz", base))
			if err := profile(b.b.Metrics, o.Live/2, cpu); err != nil {
				logf("  cpu profile: %v", err)
				return
			}
			heap := filepath.Join(o.Profile, fmt.Sprintf("heap-%d.pb.gz", base))
			if err := heapProfile(b.b.Metrics, heap); err != nil {
				logf("  heap profile: %v", err)
			}
			logf("  profiles: %s %s", cpu, heap)
		}()
	}
	s1, err := s.stats(base)
	t1 := time.Now()
	<-done
	cancel()
	pwg.Wait()
	if err != nil || lerr != nil {
		return res, errors.Join(err, lerr)
	}
	s2, err := s.stats(base)
	if err != nil {
		return res, err
	}
	t2 := time.Now()
	res.MaxRate = float64(s2.Count-s1.Count) / t2.Sub(t1).Seconds()
	res.Offered = float64(sent) / o.Live.Seconds()
	if _, err := waitCount(ctx, s, base, sent, 3*time.Minute); err != nil {
		return res, err
	}
	retry.Sleep(ctx, 500*time.Millisecond) // the last acks' commits
	p1, err := ReadProc(s.pid())
	if err != nil {
		return res, err
	}
	res.HWM, res.Anon = p1.HWM, p1.Anon
	res.CPU100k = time.Duration(float64(p1.CPU-p0.CPU) / float64(sent) * 1e5)
	res.WritePer = float64(p1.WriteBytes-p0.WriteBytes) / float64(sent)
	w1, err := s.written()
	if err != nil {
		return res, err
	}
	res.BufferPer = (w1 - w0) / float64(sent)
	res.DevicePer = -1
	if d1, ok := deviceWritten(o.Dir); ok && onDevice {
		res.DevicePer = float64(d1-d0) / float64(sent)
	}
	logf("  max rate %.0f msg/s received (devices offered %.0f), peak RSS %.1f MiB (anon %.1f, binary %.1f, buffer maps %.1f), CPU %.2fs/100k, written/msg: %.0f B write_bytes, %.0f B by the buffer, %.0f B to the device",
		res.MaxRate, res.Offered, mib(res.HWM), mib(p1.Anon), mib(p1.File-p1.Mapped), mib(p1.Mapped), res.CPU100k.Seconds(), res.WritePer, res.BufferPer, res.DevicePer)

	for i, frac := range []float64{0.25, 0.5, 0.75} {
		phase := base + 1 + uint8(i)
		rate := frac * res.MaxRate
		lctx, cancel := context.WithTimeout(ctx, o.Latency)
		n, err := load.Run(lctx, phase, rate, 0)
		cancel()
		if err != nil {
			return res, err
		}
		st, err := waitCount(ctx, s, phase, n, 2*time.Minute)
		if err != nil {
			return res, err
		}
		res.Loads[i] = float64(n) / o.Latency.Seconds()
		res.Lat[i] = [3]time.Duration{st.Hist.Quantile(0.5), st.Hist.Quantile(0.99), st.Hist.Quantile(0.999)}
		logf("  %.0f%% load, %.0f msg/s: p50 %s p99 %s p99.9 %s", frac*100, res.Loads[i], ms(res.Lat[i][0]), ms(res.Lat[i][1]), ms(res.Lat[i][2]))
	}

	// Broker backlog: the receiver goes away (its session stays and the
	// broker queues for it), the devices publish o.Backlog messages, the
	// receiver comes back and empties the queue.
	phase := base + 4
	if err := s.stop(); err != nil {
		return res, fmt.Errorf("stop: %w", err)
	}
	n, err := load.Run(ctx, phase, 0, o.Backlog)
	if err != nil {
		return res, err
	}
	if err := s.start(ctx); err != nil {
		return res, err
	}
	st, err := waitCount(ctx, s, phase, n, 3*time.Minute)
	if err != nil {
		return res, err
	}
	res.Backlog = float64(st.Count-1) / st.Last.Sub(st.First).Seconds()
	logf("  broker backlog of %d drained at %.0f msg/s", n, res.Backlog)
	return res, nil
}

// waitCount waits until the receiver has n messages of phase.
func waitCount(ctx context.Context, s subject, phase uint8, n int64, timeout time.Duration) (PhaseStats, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.stats(phase)
		if err != nil {
			return st, err
		}
		if int64(st.Count) >= n {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("phase %d: %d of %d messages arrived within %s", phase, st.Count, n, timeout)
		}
		if !retry.Sleep(ctx, 50*time.Millisecond) {
			return st, ctx.Err()
		}
	}
}

// outage: live traffic at o.Nominal throughout; Kafka cut; a second set of
// devices publishing as fast as they can fills the buffer to 10k (RSS
// read) and to o.Buffered (RSS read); the bridge restarts (time to ready);
// Kafka comes back and the backlog drains under the live traffic.
func outage(ctx context.Context, o Options, kafka *devstack.Kafka, br *devstack.Bridge, cons *Consumer, url string, logf func(string, ...any)) (*Outage, error) {
	const live, burst, warm = 250, 251, 252
	out := &Outage{}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := br.Start(rctx)
	if err == nil {
		err = br.WaitReady(rctx)
	}
	cancel()
	if err != nil {
		return nil, err
	}
	nominal := &Load{BrokerURL: url, Prefix: "nominal", Devices: o.Devices, Size: o.Size, Window: o.Window}
	if err := nominal.Connect(); err != nil {
		return nil, err
	}
	defer nominal.Close()
	nctx, stopNominal := context.WithCancel(ctx)
	defer stopNominal()
	nstart := time.Now()
	var nwg sync.WaitGroup
	var nerr error
	nwg.Add(1)
	go func() { defer nwg.Done(); _, nerr = nominal.Run(nctx, live, o.Nominal, 0) }()
	retry.Sleep(ctx, 2*time.Second)
	kafka.Stop()
	logf("  kafka cut")

	// 0 while a scrape fails (the bridge restarting): the waits go on.
	buffered := func() int64 { v, _ := metric(br, "edgebridge_buffer_records"); return int64(v) }
	waitBuffered := func(n int64, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		for buffered() < n {
			if time.Now().After(deadline) {
				return fmt.Errorf("buffer holds %d records, waited for %d", buffered(), n)
			}
			if !retry.Sleep(ctx, 20*time.Millisecond) {
				return ctx.Err()
			}
		}
		return nil
	}
	// peakRSS is the largest reading over d, by RSS.
	peakRSS := func(d time.Duration) Proc {
		var peak Proc
		for end := time.Now().Add(d); time.Now().Before(end); retry.Sleep(ctx, 100*time.Millisecond) {
			if p, err := ReadProc(br.PID()); err == nil && p.RSS > peak.RSS {
				peak = p
			}
		}
		return peak
	}
	// fillTo has a second set of devices publish as fast as they can until
	// the buffer holds n records. Both RSS readings follow such a burst and
	// 2 s of live traffic only, so they differ in what is buffered, not in
	// what the process has just been through (the Go runtime returns the
	// heap a burst grew only slowly).
	fillTo := func(prefix string, phase uint8, n int64) (int64, error) {
		fill := &Load{BrokerURL: url, Prefix: prefix, Devices: o.Devices, Size: o.Size, Window: o.Window}
		if err := fill.Connect(); err != nil {
			return 0, err
		}
		defer fill.Close()
		fctx, stopFill := context.WithCancel(ctx)
		var fwg sync.WaitGroup
		var ferr error
		var filled int64
		fwg.Add(1)
		go func() { defer fwg.Done(); filled, ferr = fill.Run(fctx, phase, 0, 0) }()
		err := waitBuffered(n, 10*time.Minute)
		stopFill()
		fwg.Wait()
		if err != nil || ferr != nil {
			return filled, errors.Join(err, ferr)
		}
		retry.Sleep(ctx, 2*time.Second) // let the burst's tail settle; only live traffic now
		return filled, nil
	}
	warmed, err := fillTo("warm", warm, 10_000)
	if err != nil {
		return nil, err
	}
	out.Records10k = buffered()
	out.RSS10k = peakRSS(2 * time.Second)
	logf("  %d buffered: RSS %.1f MiB (anon %.1f, file %.1f)", out.Records10k, mib(out.RSS10k.RSS), mib(out.RSS10k.Anon), mib(out.RSS10k.File))

	filled, err := fillTo("fill", burst, int64(o.Buffered))
	if err != nil {
		return nil, err
	}
	out.Full = buffered()
	out.RSSFull = peakRSS(2 * time.Second)
	logf("  %d buffered: RSS %.1f MiB (anon %.1f, file %.1f)", out.Full, mib(out.RSSFull.RSS), mib(out.RSSFull.Anon), mib(out.RSSFull.File))

	if err := br.Stop(30 * time.Second); err != nil {
		logf("  stop: %v", err)
	}
	t0 := time.Now()
	rctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
	err = br.Start(rctx)
	if err == nil {
		err = br.WaitReady(rctx)
	}
	cancel()
	if err != nil {
		return nil, err
	}
	out.Restart = time.Since(t0)
	out.RSSRestarted = peakRSS(time.Second)
	logf("  restarted with %d buffered: ready in %s, RSS %.1f MiB (anon %.1f, file %.1f)", buffered(), out.Restart.Round(time.Millisecond),
		mib(out.RSSRestarted.RSS), mib(out.RSSRestarted.Anon), mib(out.RSSRestarted.File))

	forwarded := func() float64 { v, _ := metric(br, "edgebridge_forward_records_total"); return v }
	f0 := forwarded()
	if err := kafka.Start(); err != nil {
		return nil, err
	}
	tr := time.Now()
	var tResume time.Time
	var fResume float64
	for {
		f := forwarded()
		if tResume.IsZero() && f > f0 {
			tResume, fResume = time.Now(), f0
		}
		if !tResume.IsZero() && buffered() < int64(o.Nominal) { // under a second of live traffic left
			out.Empty = time.Since(tr)
			out.Drain = (f - fResume) / time.Since(tResume).Seconds()
			out.Resume = tResume.Sub(tr)
			break
		}
		if time.Since(tr) > 10*time.Minute {
			return nil, fmt.Errorf("backlog not drained in 10 minutes: %d left", buffered())
		}
		if !retry.Sleep(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	logf("  kafka back: forwarding after %s, drained at %.0f records/s, empty after %s", out.Resume.Round(time.Millisecond), out.Drain, out.Empty.Round(time.Millisecond))
	stopNominal()
	nwg.Wait()
	if nerr != nil {
		return nil, nerr
	}
	out.NominalAchieved = float64(nominal.Published.Load()) / time.Since(nstart).Seconds()
	// Everything the broker acknowledged must reach Kafka.
	out.Published = nominal.Published.Load() + warmed + filled
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out.Delivered = int64(cons.Stats(live).Count + cons.Stats(warm).Count + cons.Stats(burst).Count)
		if out.Delivered >= out.Published || time.Now().After(deadline) {
			break
		}
		retry.Sleep(ctx, 100*time.Millisecond)
	}
	if out.Delivered < out.Published {
		return out, fmt.Errorf("only %d of %d acknowledged messages reached Kafka", out.Delivered, out.Published)
	}
	return out, nil
}

func mkdir(parent, name string) string {
	d := filepath.Join(parent, name)
	_ = os.MkdirAll(d, 0o755)
	return d
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil || len(b) < 14 {
		return "unknown"
	}
	var a, c, d float64
	fmt.Sscanf(string(b), "%f %f %f", &a, &c, &d)
	return fmt.Sprintf("%.2f %.2f %.2f", a, c, d)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
