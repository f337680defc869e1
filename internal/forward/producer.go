package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/retry"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// Header keys of every record.
const (
	HeaderContentType = "content-type"
	HeaderNode        = "edgebridge-node"
	HeaderSeq         = "edgebridge-seq"
)

var compressionCodecs = map[string]kgo.CompressionCodec{
	"zstd":   kgo.ZstdCompression().WithLevel(1), // SpeedFastest: edge CPUs are small
	"lz4":    kgo.Lz4Compression(),
	"snappy": kgo.SnappyCompression(),
	"none":   kgo.NoCompression(),
}

// errNoTopic fails a record that names no topic; it cannot be produced.
var errNoTopic = errors.New("record has no topic")

// Producer forwards the records of a Source to Kafka. Create it with New,
// then call Run once; Up may be called from any goroutine.
//
// It holds the client, the Source, the metrics and the I/O: Run's goroutine
// (the reader) reads and produces, the ack loop makes results durable. What
// to produce, skip or wait for is the scheduler's. Producer has no mutex of
// its own; the scheduler's, kafkaState's and the partitioner's are leaves,
// never held together (scheduler.go).
type Producer struct {
	cfg   Config
	log   *slog.Logger
	src   Source
	cl    *kgo.Client
	m     *metrics
	bo    retry.Policy // of client requests, reads, Source operations, partition look-ups
	renew retry.Policy // of new clients after a refused producer ID (renewClient)

	ackRetry, deadLetterRetry retry.Op // of Source.Ack and Source.DeadLetter (makeDurable)
	sched                     *scheduler
	kst                       *kafkaState
	part                      *partitioner
	results                   chan *flight // promises -> ack loop; room for the whole window
	ran                       atomic.Bool
	opts                      []kgo.Opt // of every client, but its hooks (newClient)
	reg                       prometheus.Registerer
	live                      atomic.Pointer[kgo.Client] // cl, for the hooks
	queued                    queueWatch
	// refusedPID: settle saw a record refused a producer ID. franz-go keeps
	// that error for the client's life; only a new client asks again.
	refusedPID atomic.Bool

	ctypeHdr, nodeHdr []byte

	// Owned by the reader (Run's goroutine).
	clientTries int
	nextClient  time.Time
	cursor      uint64
	highWater   uint64 // highest sequence read
	keyParts    map[string]kgo.TopicPartitioner
	absent      map[string]time.Time // topics Kafka said do not exist, until when
	scratch     kgo.Record

	// Owned by the ack loop.
	dlLogged map[string]time.Time
}

// flight is one record between Read and settling.
type flight struct {
	rec      kgo.Record
	hdrs     [3]kgo.RecordHeader
	seq      uint64
	appended time.Time
	size     int
	lane     *lane
	round    *round
	topic    *topicState
	isolated bool
	err      error
}

// New validates cfg, loads the TLS material, registers the metrics on reg
// and creates the Kafka client (which connects lazily). Run must be called
// to forward and, when it returns, to close the client. A nil log discards
// the log; a nil reg keeps the metrics (the client's too) unregistered; a
// nil src is an error, and so is a reg that refuses the metrics (another
// forwarder's). A New that fails leaves none of them registered.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, src Source) (_ *Producer, err error) {
	if src == nil {
		return nil, errors.New("new forwarder: nil source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.TLS.load()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.unregister()
		}
	}()
	log = log.With("component", "forward")
	bo := cfg.Backoff
	// A parked topic and a client refused a producer ID wait for an
	// operator: long, capped waits.
	operatorBo := retry.Policy{Initial: topicRetryInitial, Max: topicRetryMax}
	p := &Producer{
		cfg:      cfg,
		log:      log,
		src:      src,
		m:        m,
		bo:       bo,
		renew:    operatorBo,
		sched:    newScheduler(cfg, bo, operatorBo, log, m),
		part:     newPartitioner(),
		results:  make(chan *flight, cfg.MaxBufferedRecords+1),
		ctypeHdr: []byte(edgebridgev1.ContentType),
		nodeHdr:  []byte(cfg.NodeID),
		keyParts: make(map[string]kgo.TopicPartitioner),
		absent:   make(map[string]time.Time),
		dlLogged: make(map[string]time.Time),
	}
	p.ackRetry, p.deadLetterRetry = p.bufferRetry("ack"), p.bufferRetry("dead_letter")
	p.kst = &kafkaState{log: log, m: m, buffered: func() int64 { return p.live.Load().BufferedProduceRecords() + p.sched.waiting.Load() }, resumed: p.sched.poke}

	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithLogger(&kgoLogger{inner: kslog.New(log.With("lib", "franz-go")), hint: p.sched.partitionFailing}),
		kgo.DialTimeout(cfg.DialTimeout),
		kgo.RequestTimeoutOverhead(cfg.RequestTimeoutOverhead),
		kgo.MetadataMinAge(cfg.MetadataMinAge),
		kgo.MetadataMaxAge(cfg.MetadataMaxAge),
		kgo.RetryBackoffFn(p.bo.Delay),
		// acks=all and idempotence (franz-go's defaults, spelled out so
		// that no default change can weaken them). Record retries stay
		// unlimited and no delivery timeout is set: a record is only ever
		// failed by Kafka's answer, never by our impatience.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(compressionCodecs[cfg.Compression]),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(int32(cfg.BatchMaxBytes)),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
		kgo.MaxBufferedBytes(cfg.MaxBufferedBytes),
		kgo.ProduceRequestTimeout(cfg.ProduceRequestTimeout),
		kgo.RecordPartitioner(p.part),
		kgo.ProducerOnDataLossDetected(p.onDataLoss),
	}
	if !cfg.ClientMetrics {
		opts = append(opts, kgo.DisableClientMetrics())
	}
	if cfg.Compression == "zstd" {
		zc, err := newZstdCompressor()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.WithCompressor(zc))
	}
	if tlsCfg != nil {
		opts = append(opts, kgo.DialTLSConfig(tlsCfg))
	}
	if mech := cfg.SASL.mechanism(); mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	p.opts, p.reg = opts, reg
	cl, err := p.newClient()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	p.cl = cl
	p.live.Store(cl)
	m.up.Set(0)
	return p, nil
}

// Up reports whether Kafka currently takes records (see edgebridge_kafka_up).
// It is false until the first successful request.
func (p *Producer) Up() bool { return p.kst.isUp() }

func (p *Producer) onDataLoss(topic string, partition int32) {
	p.m.dataLoss.Inc()
	p.log.Error("kafka lost records it had acknowledged", "topic", topic, "partition", partition)
}

// Run forwards until ctx is done, then flushes what is in flight for at most
// shutdown_timeout, closes the Kafka client and returns. Records not
// acknowledged by then stay in the Source. It returns nil after a shutdown
// by ctx; Run may be called once.
func (p *Producer) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	// Ack and DeadLetter outlive ctx: the records flushed during shutdown
	// must still leave the buffer.
	settleCtx, stopSettle := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSettle()
	closed := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { p.ackLoop(settleCtx, closed) })

	p.log.Info("forwarder started", "brokers", p.cfg.Brokers, "client_id", p.cfg.ClientID,
		"compression", p.cfg.Compression, "window_records", p.cfg.MaxBufferedRecords,
		"window_bytes", p.cfg.MaxBufferedBytes)
	p.readLoop(ctx)

	inFlight := p.inFlight()
	flushCtx, cancelFlush := context.WithTimeout(settleCtx, p.cfg.ShutdownTimeout)
	flushErr := p.cl.Flush(flushCtx)
	cancelFlush()
	p.cl.Close() // fails what did not flush; those records stay in the buffer
	close(closed)
	// The last acks get their own deadline: a flush that used all of its
	// time must not turn every flushed record into a duplicate.
	t := time.AfterFunc(p.cfg.ShutdownTimeout, stopSettle)
	wg.Wait()
	t.Stop()

	left := p.sched.leftover()
	if flushErr != nil || left > 0 {
		p.log.Warn("forwarder stopped before kafka acknowledged everything; the rest stays buffered for the next start",
			"in_flight_at_stop", inFlight, "left_in_buffer", left, "err", flushErr)
	} else {
		p.log.Info("forwarder stopped", "flushed", inFlight)
	}
	return nil
}

func (p *Producer) inFlight() int { return p.sched.inFlight() }

// readLoop reads and produces until ctx is done.
func (p *Producer) readLoop(ctx context.Context) {
	readFailures := 0
	for ctx.Err() == nil {
		p.renewClient(time.Now())
		from, next := p.sched.unpark(time.Now())
		if from > 0 && from-1 < p.cursor {
			p.cursor = from - 1 // read again what the resumed lanes and topics skipped
		}
		if at := p.nextClient; p.refusedPID.Load() && (next.IsZero() || at.Before(next)) {
			next = at
			if soon := time.Now().Add(time.Millisecond); next.Before(soon) {
				next = soon
			}
		}
		window, windowBytes := p.cfg.MaxBufferedRecords, p.cfg.MaxBufferedBytes
		if !p.kst.isProducing() {
			// No produce answered yet, or the last one failed: hold one
			// read's worth in flight, enough for a produce to show that
			// Kafka takes records, and leave the rest in the buffer
			// rather than in memory (a node can start without its uplink
			// and stay so for hours). The first acks open the window.
			window, windowBytes = min(window, p.cfg.ReadBatch), min(windowBytes, p.cfg.BatchMaxBytes)
		}
		room, roomBytes, at := p.sched.room(window, windowBytes, p.cfg.ReadBatch, time.Now())
		if room <= 0 {
			// Full: lanes without progress that held it were taken back;
			// wait for room, or for the time to look again.
			if !at.IsZero() {
				next = earliest(next, at)
			}
			if !p.waitWake(ctx, next) {
				return
			}
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		if !next.IsZero() {
			rctx, cancel = context.WithDeadline(ctx, next)
		}
		if !p.sched.startRead(p.cursor < p.highWater, cancel) {
			cancel()
			continue // a wake is pending: look again before blocking in Read
		}

		recs, err := p.src.Read(rctx, p.cursor, room, roomBytes)

		p.sched.endRead()
		interrupted := rctx.Err() != nil
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if interrupted {
				continue
			}
			readFailures++
			if readFailures == 1 {
				p.log.Error("reading the buffer failed, retrying", "err", err)
			}
			if !retry.Sleep(ctx, p.bo.Delay(readFailures)) {
				return
			}
			continue
		}
		if readFailures > 0 {
			p.log.Info("reading the buffer recovered", "failures", readFailures)
			readFailures = 0
		}
		if !p.handle(ctx, recs) {
			return
		}
	}
}

// handle produces recs in order, skipping those of parked lanes. It returns
// false when ctx ended while it waited for room.
func (p *Producer) handle(ctx context.Context, recs []buffer.Record) bool {
	for i := range recs {
		rec := &recs[i]
		f := &flight{seq: rec.Seq, appended: rec.Time}
		if rec.Topic != "" {
			f.rec = kgo.Record{
				Topic:     rec.Topic,
				Key:       rec.Key,
				Value:     edgebridgev1.AppendSequence(rec.Value, rec.Seq),
				Partition: -1,
			}
			f.hdrs = [3]kgo.RecordHeader{
				{Key: HeaderContentType, Value: p.ctypeHdr},
				{Key: HeaderNode, Value: p.nodeHdr},
				{Key: HeaderSeq, Value: strconv.AppendUint(nil, rec.Seq, 10)},
			}
			f.rec.Headers = f.hdrs[:]
			f.size = len(f.rec.Key) + len(f.rec.Value)
			for _, h := range f.hdrs {
				f.size += len(h.Key) + len(h.Value)
			}
		} else {
			f.err = errNoTopic
			f.size = len(rec.Key) + len(rec.Value)
		}
		held := false
		if f.err == nil && len(f.rec.Key) > 0 {
			held = p.sched.topicParked(f.rec.Topic, f.seq)
			if !held {
				var ok bool
				if held, ok = p.knowPartitions(ctx, f); !ok {
					return false
				}
			}
		}
		for !held {
			act, until := p.sched.admit(f, p.laneKey(f.rec.Topic, f.rec.Key), time.Now())
			if act == actWait {
				if !p.waitWake(ctx, until) {
					return false
				}
				continue
			}
			if act == actProduce {
				if f.err != nil {
					p.results <- f // room is reserved by the window
				} else {
					p.queued.watch(&f.rec)
					p.cl.Produce(context.Background(), &f.rec, func(_ *kgo.Record, err error) {
						if err != nil {
							// franz-go failed every record it
							// held for the partition, whichever
							// path it failed them on; see
							// lane.round.
							f.lane.failing.Store(true)
							f.round.cancel()
						}
						f.err = err
						p.results <- f
					})
					if !p.queued.done(&f.rec) && !p.promisesRun(ctx) {
						return false
					}
				}
			}
			break
		}
		p.cursor = rec.Seq
		p.highWater = max(p.highWater, rec.Seq)
	}
	return true
}

// queueWatch tells the reader whether franz-go queued the record it
// produces to a partition before Produce returned: franz-go calls
// kgo.HookProduceRecordPartitioned from inside Produce for a topic whose
// partitions it knows. A record Produce returns without queuing was failed
// inside Produce (a load error on its whole topic in doPartition, a record
// larger than a batch, a closing client) or waits for its topic's first
// metadata. When it failed, franz-go logs nothing and the promise comes
// after every promise queued before it: tens of milliseconds when a load
// error fails every record of a topic, time enough for the reader to
// produce more records of the same partition, and for one produced once
// the error has cleared to be written ahead of the failed one sent again
// (the round's context does not help: that record is sent at once). So
// the reader waits for the promises queued so far (promisesRun) before it
// produces the next record: a failed promise has then marked its lane.
type queueWatch struct {
	rec atomic.Pointer[kgo.Record] // the record in Produce; nil once franz-go queued it
}

var _ kgo.HookProduceRecordPartitioned = (*queueWatch)(nil)

// watch is called by the reader before it produces r.
func (w *queueWatch) watch(r *kgo.Record) { w.rec.Store(r) }

// done is called by the reader once Produce returned: whether franz-go
// queued r to its partition. A record that waited for its topic's metadata
// may be queued from another goroutine meanwhile; whichever of that and
// done comes first decides.
func (w *queueWatch) done(r *kgo.Record) bool { return !w.rec.CompareAndSwap(r, nil) }

// OnProduceRecordPartitioned runs under a franz-go partition lock, from
// Produce or, for records that waited for their topic's metadata, from a
// metadata update.
func (w *queueWatch) OnProduceRecordPartitioned(r *kgo.Record, _ int32) { w.rec.CompareAndSwap(r, nil) }

// promisesRun waits until franz-go has run every promise it queued so far,
// so that a record it failed inside Produce has marked its lane failing
// before the reader decides on the next record. franz-go runs promises in
// the order it queues them, and fails a record without a topic at once,
// in the same queue. It returns false when ctx ended first. A record that
// only waits for its topic's metadata costs one empty promise: franz-go
// keeps those in order, ahead of the topic's later records.
func (p *Producer) promisesRun(ctx context.Context) bool {
	ran := make(chan struct{})
	p.cl.Produce(context.Background(), &kgo.Record{}, func(*kgo.Record, error) { close(ran) })
	select {
	case <-ran:
		return true
	case <-ctx.Done():
		return false
	}
}

// renewClient replaces the Kafka client when Kafka refused this client a
// producer ID (no IDEMPOTENT_WRITE or WRITE ACL yet): franz-go keeps that
// error and fails every record with it until the client is closed. It waits
// for our records to leave the client and for a capped backoff between
// tries, so that the node resumes by itself within minutes of the grant.
func (p *Producer) renewClient(now time.Time) {
	if p.kst.isProducing() {
		p.clientTries = 0
	}
	if !p.refusedPID.Load() || now.Before(p.nextClient) || p.inFlight() > 0 {
		return
	}
	p.clientTries++
	p.nextClient = now.Add(p.renew.Delay(p.clientTries))
	if p.clientTries == 1 {
		p.log.Warn("kafka refuses this client a producer ID, records wait in the buffer; asking again with a new client",
			"retry_in", p.nextClient.Sub(now).Round(time.Millisecond))
	}
	// Close first: the new client registers the kprom metrics again. The
	// options were accepted once; should NewClient fail anyway, the closed
	// client fails our records (ErrClientClosed) and the next try comes.
	p.cl.Close()
	cl, err := p.newClient()
	if err != nil {
		p.log.Error("cannot create a new kafka client, trying again later", "err", err)
		return
	}
	p.cl = cl
	p.live.Store(cl)
	p.refusedPID.Store(false)
}

// newClient creates a Kafka client with p.opts and hooks of its own: kprom
// keeps per-client state that a closed client's last hooks may still read.
func (p *Producer) newClient() (*kgo.Client, error) {
	hooks := kgo.WithHooks(p.kst, &p.queued, kprom.NewMetrics("edgebridge", kprom.Registerer(p.reg), kprom.Subsystem("kafka_client")))
	return kgo.NewClient(append(slices.Clip(p.opts), hooks)...)
}

// knowPartitions makes sure the partition count of f's topic is known
// before its first keyed record is produced, so that every keyed record is
// tracked on the lane of its real partition: a failure must stop exactly
// the records that franz-go failed with it. It waits (with backoff) while
// Kafka cannot be asked at all, and returns ok false only when ctx ends.
// An error for this one topic never holds the others: a topic Kafka says
// does not exist, or whose name it cannot take, is let through (franz-go
// fails its records and classify decides); any other error parks the topic
// (held true) and the record is skipped.
func (p *Producer) knowPartitions(ctx context.Context, f *flight) (held, ok bool) {
	topic := f.rec.Topic
	if p.part.count(topic) > 0 {
		return false, true
	}
	if until, ok := p.absent[topic]; ok && time.Now().Before(until) {
		return false, true
	}
	for n := 1; ; n++ {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		resp, err := p.cl.RequestCachedMetadata(ctx, req, 0)
		if err == nil {
			for _, t := range resp.Topics {
				if t.Topic == nil || *t.Topic != topic {
					continue
				}
				terr := kerr.ErrorForCode(t.ErrorCode)
				cls, reason := classify(terr)
				switch {
				case terr == nil && len(t.Partitions) > 0:
					p.part.learn(topic, len(t.Partitions))
					return false, true
				case t.ErrorCode == kerr.UnknownTopicOrPartition.Code, cls == permanentTopic:
					p.absent[topic] = time.Now().Add(p.cfg.MetadataMinAge)
					return false, true
				case terr == nil:
					terr = errors.New("topic without partitions in the metadata response")
				}
				if cls != parkTopic {
					reason = "metadata"
				}
				p.sched.parkTopicMetadata(topic, f.seq, reason, fmt.Errorf("metadata: %w", terr), time.Now())
				return true, true
			}
			err = errors.New("topic missing from the metadata response")
		}
		if ctx.Err() != nil {
			return false, false
		}
		if n == 1 {
			p.log.Warn("cannot learn the partitions of a topic, waiting", "topic", topic, "err", err)
		}
		if !retry.Sleep(ctx, p.bo.Delay(n)) {
			return false, false
		}
	}
}

// laneKey is the lane of a record: its topic and, for a keyed record of a
// topic whose partition count is known, its partition by Kafka's key hash.
func (p *Producer) laneKey(topic string, key []byte) laneKey {
	k := laneKey{topic: topic, partition: -1}
	if len(key) > 0 {
		if n := p.part.count(topic); n > 0 {
			tp := p.keyParts[topic]
			if tp == nil {
				tp = kgo.StickyKeyPartitioner(nil).ForTopic(topic)
				p.keyParts[topic] = tp
			}
			p.scratch.Key = key
			k.partition = int32(tp.Partition(&p.scratch, n))
			p.scratch.Key = nil
		}
	}
	return k
}

// waitWake waits for the ack loop to free room or settle something, until
// the time given (zero: no limit) or ctx's end, which it reports as false.
func (p *Producer) waitWake(ctx context.Context, until time.Time) bool {
	var tc <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-p.sched.wake:
	case <-tc:
	}
	return true
}
