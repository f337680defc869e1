package forward

import (
	"cmp"
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
// Lock order: mu, then partitioner.mu. kafkaState.mu is never held with
// either.
type Producer struct {
	cfg     Config
	log     *slog.Logger
	src     Source
	cl      *kgo.Client
	m       *metrics
	bo      backoff
	topicBo backoff // waits of a parked topic
	kst     *kafkaState
	part    *partitioner
	results chan *flight // promises -> ack loop; room for the whole window
	wake    chan struct{}
	ran     atomic.Bool
	waiting atomic.Int64 // nRecs + parked, for kafkaState, which cannot take mu
	opts    []kgo.Opt    // of every client, but its hooks (newClient)
	reg     prometheus.Registerer
	live    atomic.Pointer[kgo.Client] // cl, for the hooks
	queued  queueWatch
	// refusedPID: settle saw a record refused a producer ID. franz-go keeps
	// that error for the client's life; only a new client asks again.
	refusedPID atomic.Bool

	ctypeHdr, nodeHdr []byte

	laneMaxRecs, laneMaxBytes int
	stallAfter                time.Duration

	// Owned by the reader (Run's goroutine).
	clientTries int
	nextClient  time.Time
	cursor      uint64
	highWater   uint64 // highest sequence read
	keyParts    map[string]kgo.TopicPartitioner
	absent      map[string]time.Time // topics Kafka said do not exist, until when
	scratch     kgo.Record

	mu           sync.Mutex
	inflight     map[uint64]*flight
	nRecs        int
	nBytes       int
	lanes        map[laneKey]*lane
	laneIdx      sync.Map         // laneKey -> *lane, for partitionFailing, which cannot take mu
	suspects     map[uint64]*lane // records whose batch Kafka rejected; sent again alone
	parked       int
	topics       map[string]*topicState
	parkedTopics int                // topics parked or probing
	readCancel   context.CancelFunc // interrupts the reader's Read; nil when not reading
	// While the reader reads again below highWater, settle notes here what
	// it acked or dead-lettered since that Read began: the Read may have
	// returned it while it was still in flight.
	rereading bool
	gone      map[uint64]struct{}
	leftover  int // records failed by the shutdown, left in the buffer
	dlLogged  map[string]time.Time
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

type laneKey struct {
	topic     string
	partition int32 // -1: partition not known yet, or no key
}

type laneState int

const (
	laneOpen      laneState = iota
	laneStalled             // half the window, no progress: skip its records
	laneFailed              // a record failed: settle, back off, rewind
	laneIsolating           // one suspect record alone in flight
)

type lane struct {
	key          laneKey
	state        laneState
	inflight     int
	bytes        int
	lastProgress time.Time
	skippedFrom  uint64 // lowest sequence skipped while parked; 0 for none
	retryAt      time.Time
	tries        int  // failed rounds in a row, for the backoff
	roundFailed  bool // settle saw a failure since the lane last resumed
	probation    bool // taken back by reclaimIdle, no ack since

	// failing is set by the promise of a failed record, before the result
	// reaches the ack loop, or earlier by partitionFailing. franz-go has just failed every record buffered
	// for the partition, on whichever path (a batch Kafka rejected, a
	// fatal producer-ID error, repeated load errors, a broker too old, a
	// cancelled head-of-line record, a load error failing records inside
	// Produce); a record produced for it from now on could be written
	// ahead of the ones that will be sent again. The promise is the
	// earliest place franz-go tells us, whatever the path, so the reader
	// checks this flag before each produce (and, after a record Produce
	// did not queue, waits for the promises first: queueWatch).
	failing atomic.Bool

	// round is the context of the records produced since the lane last
	// resumed from a failure. partitionFailing, or else the promise of the
	// first failed record, cancels it. A record of ours that franz-go buffered between failing
	// the partition and that promise carries the cancelled context, so
	// franz-go fails it before sending it (its batch0 check, sink.go)
	// instead of writing it ahead of the records we will send again. On a
	// path franz-go gives no hint for, it can lose that race if franz-go
	// sent it before the promise ran; settle counts such a record in
	// edgebridge_forward_reordered_total. Only
	// records never sent, or whose last answer was an error, fail this way:
	// franz-go does not cancel what may be on the broker, so this costs no
	// duplicate.
	round atomic.Pointer[round]
}

type round struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newRound() *round {
	ctx, cancel := context.WithCancel(context.Background())
	return &round{ctx: ctx, cancel: cancel}
}

func (l *lane) skip(seq uint64) {
	if l.skippedFrom == 0 || seq < l.skippedFrom {
		l.skippedFrom = seq
	}
}

// New validates cfg, loads the TLS material, registers the metrics on reg
// and creates the Kafka client (which connects lazily). Run must be called
// to forward and, when it returns, to close the client. A nil log discards
// the log; with a nil reg the metrics are kept but registered nowhere
// anyone gathers (a registry of the Producer's own); a nil src is an error.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, src Source) (*Producer, error) {
	if src == nil {
		return nil, errors.New("new forwarder: nil source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // the metrics are kept, and gathered by no one
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
	log = log.With("component", "forward")
	p := &Producer{
		cfg:          cfg,
		log:          log,
		src:          src,
		m:            m,
		bo:           backoff{initial: cfg.Backoff.Initial, max: cfg.Backoff.Max},
		topicBo:      backoff{initial: topicRetryInitial, max: topicRetryMax},
		part:         newPartitioner(),
		results:      make(chan *flight, cfg.MaxBufferedRecords+1),
		wake:         make(chan struct{}, 1),
		ctypeHdr:     []byte(edgebridgev1.ContentType),
		nodeHdr:      []byte(cfg.NodeID),
		laneMaxRecs:  max(1, cfg.MaxBufferedRecords/2),
		laneMaxBytes: max(1, cfg.MaxBufferedBytes/2),
		stallAfter:   cfg.MetadataMinAge,
		keyParts:     make(map[string]kgo.TopicPartitioner),
		absent:       make(map[string]time.Time),
		inflight:     make(map[uint64]*flight, cfg.MaxBufferedRecords),
		lanes:        make(map[laneKey]*lane),
		topics:       make(map[string]*topicState),
		suspects:     make(map[uint64]*lane),
		gone:         make(map[uint64]struct{}),
		dlLogged:     make(map[string]time.Time),
	}
	p.kst = &kafkaState{log: log, m: m, buffered: func() int64 { return p.live.Load().BufferedProduceRecords() + p.waiting.Load() }, resumed: p.poke}

	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithLogger(&kgoLogger{inner: kslog.New(log.With("lib", "franz-go")), hint: p.partitionFailing}),
		kgo.DialTimeout(cfg.DialTimeout),
		kgo.RequestTimeoutOverhead(cfg.RequestTimeoutOverhead),
		kgo.MetadataMinAge(cfg.MetadataMinAge),
		kgo.MetadataMaxAge(cfg.MetadataMaxAge),
		kgo.RetryBackoffFn(p.bo.delay),
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

	p.mu.Lock()
	left := p.leftover
	p.mu.Unlock()
	if flushErr != nil || left > 0 {
		p.log.Warn("forwarder stopped before kafka acknowledged everything; the rest stays buffered for the next start",
			"in_flight_at_stop", inFlight, "left_in_buffer", left, "err", flushErr)
	} else {
		p.log.Info("forwarder stopped", "flushed", inFlight)
	}
	return nil
}

func (p *Producer) inFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nRecs
}

// readLoop reads and produces until ctx is done.
func (p *Producer) readLoop(ctx context.Context) {
	readFailures := 0
	for ctx.Err() == nil {
		p.renewClient(time.Now())
		next := p.unparkDue(time.Now())
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
		p.mu.Lock()
		room := min(p.cfg.ReadBatch, window-p.nRecs)
		// A read returns at least one record, whatever its size.
		roomBytes := windowBytes - p.nBytes
		if room <= 0 || roomBytes <= 0 {
			// Full: if lanes without progress hold it, take some back.
			if at := p.reclaimIdle(time.Now()); !at.IsZero() && (next.IsZero() || at.Before(next)) {
				next = at
			}
			p.mu.Unlock()
			if !p.waitWake(ctx, next) {
				return
			}
			continue
		}
		// A wake pending means a lane may be ready to resume: look again
		// before blocking in Read.
		select {
		case <-p.wake:
			p.mu.Unlock()
			continue
		default:
		}
		rctx, cancel := context.WithCancel(ctx)
		if !next.IsZero() {
			rctx, cancel = context.WithDeadline(ctx, next)
		}
		p.readCancel = cancel
		p.rereading = p.cursor < p.highWater
		clear(p.gone)
		p.mu.Unlock()

		recs, err := p.src.Read(rctx, p.cursor, room, roomBytes)

		p.mu.Lock()
		p.readCancel = nil
		p.mu.Unlock()
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
			if !sleepCtx(ctx, p.bo.delay(readFailures)) {
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

type action int

const (
	actProduce action = iota
	actSkip
	actWait
)

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
			held = p.topicHeld(f)
			if !held {
				var ok bool
				if held, ok = p.knowPartitions(ctx, f); !ok {
					return false
				}
			}
		}
		for !held {
			act, until := p.decide(f, time.Now())
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

// topicHeld skips f if its topic is parked, as decide would, before
// knowPartitions asks Kafka about the topic for each of its records.
func (p *Producer) topicHeld(f *flight) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inflight[f.seq]; ok {
		return false
	}
	if _, ok := p.gone[f.seq]; ok {
		return false
	}
	t := p.topic(f.rec.Topic)
	if t.phase != topicParked {
		return false
	}
	t.skip(f.seq)
	return true
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
	p.nextClient = now.Add(p.topicBo.delay(p.clientTries))
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
				p.mu.Lock()
				tp := p.topic(topic)
				tp.skip(f.seq)
				p.parkTopic(tp, reason, fmt.Errorf("metadata: %w", terr), time.Now())
				p.mu.Unlock()
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
		if !sleepCtx(ctx, p.bo.delay(n)) {
			return false, false
		}
	}
}

// decide tells what to do with f now, and takes its place in the window when
// the answer is actProduce. With actWait, until is when to look again
// without a wake (zero: only on a wake).
func (p *Producer) decide(f *flight, now time.Time) (act action, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inflight[f.seq]; ok {
		return actSkip, time.Time{} // read again after a rewind, still in flight
	}
	if _, ok := p.gone[f.seq]; ok {
		return actSkip, time.Time{} // read again after a rewind, settled since
	}
	t := p.topic(f.rec.Topic)
	if p.holdTopic(t, f.seq) {
		return actSkip, time.Time{}
	}
	l := p.laneFor(f.rec.Topic, f.rec.Key)
	if l.state == laneOpen && l.failing.Load() {
		p.setState(l, laneFailed) // settle sets the retry time
		l.retryAt = now
	}
	if l.state != laneOpen {
		l.skip(f.seq)
		return actSkip, time.Time{}
	}
	fits := p.nRecs < p.cfg.MaxBufferedRecords && (p.nRecs == 0 || p.nBytes+f.size <= p.cfg.MaxBufferedBytes)
	if _, suspect := p.suspects[f.seq]; suspect {
		if l.inflight > 0 {
			// Wait for the lane to empty, then send this record alone.
			p.setState(l, laneFailed)
			l.retryAt = now
			l.skip(f.seq)
			return actSkip, time.Time{}
		}
		if !fits {
			return actWait, p.reclaimIdle(now)
		}
		p.setState(l, laneIsolating)
		f.isolated = true
	} else {
		// The lane's own limit first: a record of a stalled lane is
		// skipped even when the window is full, or the reader would wait
		// for room that only the stalled lanes hold.
		maxRecs, maxBytes := p.laneLimit(l)
		if l.inflight >= maxRecs || (l.inflight > 0 && l.bytes+f.size > maxBytes) {
			stallAt := l.lastProgress.Add(p.stallAfter)
			if now.Before(stallAt) {
				return actWait, stallAt
			}
			p.setState(l, laneStalled)
			l.skip(f.seq)
			p.log.Warn("partition stalled, forwarding the others around it",
				"topic", l.key.topic, "partition", l.key.partition, "in_flight", l.inflight,
				"no_progress_for", now.Sub(l.lastProgress).Round(time.Millisecond))
			return actSkip, time.Time{}
		}
		if !fits {
			return actWait, p.reclaimIdle(now)
		}
	}
	if l.inflight == 0 {
		l.lastProgress = now
	}
	l.inflight++
	l.bytes += f.size
	f.lane = l
	t.inflight++
	f.topic = t
	f.round = l.round.Load()
	f.rec.Context = f.round.ctx
	p.inflight[f.seq] = f
	p.nRecs++
	p.nBytes += f.size
	p.m.inFlight.Set(float64(p.nRecs))
	p.waiting.Store(int64(p.nRecs + p.parked))
	p.m.inFlightB.Set(float64(p.nBytes))
	return actProduce, time.Time{}
}

// probationShare: a lane whose records were taken back by reclaimIdle may
// hold 1/probationShare of its usual limit until Kafka acknowledges one of
// its records, so that partitions which stay dead hold little of the window
// each.
const probationShare = 8

// laneLimit is what l may hold before it waits for progress or stalls.
func (p *Producer) laneLimit(l *lane) (recs, bytes int) {
	if l.probation {
		return max(1, p.laneMaxRecs/probationShare), max(1, p.laneMaxBytes/probationShare)
	}
	return p.laneMaxRecs, p.laneMaxBytes
}

// reclaimIdle keeps what the lanes without progress hold together to half
// of the window: when they hold more, the largest are failed (their round's
// context is cancelled, so franz-go fails the records it has not sent, or
// whose last answer was a retriable error), backed off and put on
// probation. It returns when to look again: the earliest time a lane will
// have made no progress for stall_after (zero: on a wake only). p.mu is held.
func (p *Producer) reclaimIdle(now time.Time) (next time.Time) {
	var idle []*lane
	recs, bytes := 0, 0
	for _, l := range p.lanes {
		if l.inflight == 0 || l.roundFailed || (l.state != laneOpen && l.state != laneStalled) {
			continue
		}
		if at := l.lastProgress.Add(p.stallAfter); now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		idle = append(idle, l)
		recs += l.inflight
		bytes += l.bytes
	}
	slices.SortFunc(idle, func(a, b *lane) int { return cmp.Compare(b.inflight, a.inflight) })
	for _, l := range idle {
		if recs <= p.cfg.MaxBufferedRecords/2 && bytes <= p.cfg.MaxBufferedBytes/2 {
			break
		}
		recs -= l.inflight
		bytes -= l.bytes
		if !l.probation {
			p.log.Warn("partitions without progress hold half the window, taking back the records of one",
				"topic", l.key.topic, "partition", l.key.partition, "in_flight", l.inflight,
				"no_progress_for", now.Sub(l.lastProgress).Round(time.Millisecond))
		}
		l.round.Load().cancel()
		l.roundFailed = true // its records come back cancelled; fail keeps this retry time
		l.tries++
		l.retryAt = now.Add(p.bo.delay(l.tries))
		l.probation = true
		p.setState(l, laneFailed)
	}
	return next
}

// laneFor returns the lane of a record; p.mu is held.
func (p *Producer) laneFor(topic string, key []byte) *lane {
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
	return p.lane(k)
}

func (p *Producer) lane(k laneKey) *lane {
	l := p.lanes[k]
	if l == nil {
		l = &lane{key: k}
		l.round.Store(newRound())
		p.lanes[k] = l
		p.laneIdx.Store(k, l)
	}
	return l
}

// partitionFailing is kgoLogger's hint that franz-go may be failing the
// records it holds for a partition (all partitions when partition is -1
// and topic ""), given from inside franz-go before it fails them: the lane
// is marked failing and its round cancelled, as the first failed promise
// would, but before the reader can produce more for it. A wrong hint costs
// a resend, never a record. It runs with franz-go's partition lock held, so
// it must not take p.mu (the reader holds p.mu in decide and franz-go calls
// our partitioner under its own locks).
func (p *Producer) partitionFailing(topic string, partition int32) {
	mark := func(l *lane) {
		l.failing.Store(true)
		l.round.Load().cancel()
	}
	if topic == "" {
		p.laneIdx.Range(func(_, v any) bool { mark(v.(*lane)); return true })
		return
	}
	for _, k := range []laneKey{{topic, partition}, {topic, -1}} {
		if v, ok := p.laneIdx.Load(k); ok {
			mark(v.(*lane))
		}
	}
}

// setState moves l to s and keeps the parked gauge; p.mu is held.
func (p *Producer) setState(l *lane, s laneState) {
	if (l.state == laneOpen) != (s == laneOpen) {
		if s == laneOpen {
			p.parked--
		} else {
			p.parked++
		}
		p.m.parked.Set(float64(p.parked))
		p.waiting.Store(int64(p.nRecs + p.parked))
	}
	l.state = s
}

// unparkDue reopens the lanes that may resume and rewinds the cursor to the
// first record they skipped. It returns the earliest time a failed lane's
// backoff ends (zero if none).
func (p *Producer) unparkDue(now time.Time) (next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parkedTopics > 0 {
		next = p.unparkTopics(now)
	}
	if p.parked == 0 {
		return next
	}
	for _, l := range p.lanes {
		if !p.resumable(l, now) {
			if l.state == laneFailed && l.inflight == 0 && (next.IsZero() || l.retryAt.Before(next)) {
				next = l.retryAt
			}
			continue
		}
		if l.state == laneStalled {
			p.log.Info("partition resumed", "topic", l.key.topic, "partition", l.key.partition)
		}
		if l.skippedFrom > 0 && l.skippedFrom-1 < p.cursor {
			p.cursor = l.skippedFrom - 1
		}
		l.skippedFrom = 0
		l.roundFailed = false
		l.failing.Store(false)
		if l.state != laneStalled {
			// Nothing of the old round is in flight. A stalled lane
			// keeps its round: cancelling it would have franz-go fail
			// the partition's records, those produced from now on too.
			l.round.Swap(newRound()).cancel()
		}
		p.setState(l, laneOpen)
	}
	return next
}

// resumable reports whether a parked lane may produce again; p.mu is held.
func (p *Producer) resumable(l *lane, now time.Time) bool {
	switch l.state {
	case laneStalled:
		// Not while a failure is on its way to settle: that makes the
		// lane failed, and its round is cancelled already.
		maxRecs, maxBytes := p.laneLimit(l)
		return l.inflight <= maxRecs/2 && l.bytes <= maxBytes/2 && !l.failing.Load()
	case laneFailed:
		return l.inflight == 0 && !now.Before(l.retryAt)
	case laneIsolating:
		return l.inflight == 0
	}
	return false
}

// poke wakes the read loop if it waits (waitWake).
func (p *Producer) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
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
	case <-p.wake:
	case <-tc:
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
