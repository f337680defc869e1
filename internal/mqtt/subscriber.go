package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/retry"
	edgebridgev1 "github.com/edgebridge/edgebridge/proto/edgebridge/v1"
)

// Sink stores the records of received messages. *buffer.Queue satisfies it.
//
// Rules for implementations:
//   - The Subscriber calls Append from one goroutine at a time, never
//     concurrently, with the records in the order the broker delivered the
//     messages; the next call starts only after the previous returned.
//   - Append returns nil only once every record of recs is durable: right
//     after, the Subscriber acknowledges the messages and the broker
//     forgets them. On error the Subscriber acknowledges none of them.
//   - Records with Reason != "" are messages the intake rejected; the sink
//     keeps them as dead letters with that reason.
//   - recs and the Key and Value slices of its records belong to the
//     Subscriber and are reused once Append returns: the sink copies what
//     it keeps. The sink may write recs[i].Seq and recs[i].Time.
//   - Append returns soon after ctx is done (the Subscriber is stopping).
type Sink interface {
	Append(ctx context.Context, recs []buffer.Record) error
}

// Subscriber takes messages from the broker and appends them to a Sink,
// acknowledging each only after its record was committed.
type Subscriber struct {
	cfg     Config
	log     *slog.Logger
	sink    Sink
	routes  *routeTable
	filters map[string]byte
	tls     *tls.Config
	m       *metrics
	rejects *rateLog

	// in carries messages from paho's handler to the collector.
	in chan inbound

	// stop is closed when Run begins to stop. stopMu orders the handler's
	// sends on in before the collector's final drain: the handler holds
	// the read lock from its check of stopped to the end of its send, and
	// stopIntake sets stopped under the write lock, so once it returns no
	// handler can put anything on in.
	stopMu   sync.RWMutex
	stopped  bool
	stop     chan struct{}
	stopOnce sync.Once

	// stateMu guards gen, opened, lost and the ready flag. gen changes
	// with each connection and each loss, so a subscription that completes
	// after its connection was lost does not mark the Subscriber ready.
	//
	// opened and lost count paho's OnConnect and OnConnectionLost calls.
	// paho runs each in a goroutine of its own, so they can come out of
	// order: connection 1 is lost, paho reconnects at once and calls
	// OnConnect for connection 2, and only then does the OnConnectionLost
	// of connection 1 run. Every connection gets one OnConnect and at most
	// one OnConnectionLost, so a connection is up only while opened > lost:
	// a loss that leaves opened > lost is an older connection's, and must
	// not take readiness from the newer one (which, on a resumed session,
	// is ready as soon as its OnConnect runs).
	stateMu   sync.Mutex
	gen       uint64
	opened    uint64
	lost      uint64
	ready     bool
	connected chan connEvent // OnConnect -> subscribe loop, newest connection

	// conn is the newest connection paho opened (see openConnection).
	conn atomic.Pointer[bufferedConn]

	started atomic.Bool

	// Owned by the collector goroutine.
	env   edgebridgev1.Envelope
	ts    timestamppb.Timestamp
	attrs map[string]string
}

// connEvent is a connection paho opened, for the subscribe loop.
type connEvent struct {
	gen            uint64
	sessionPresent bool // the CONNACK's: the broker kept the session
}

type inbound struct {
	msg paho.Message
	at  time.Time
}

// batch is the unit of commit and acknowledgement. recs[i] is the record
// of msgs[i]; their Key and Value slices point into arena.
type batch struct {
	msgs  []paho.Message
	recs  []buffer.Record
	arena []byte
}

func (b *batch) reset() {
	clear(b.msgs) // let the payloads go
	b.msgs = b.msgs[:0]
	clear(b.recs)
	b.recs = b.recs[:0]
	b.arena = b.arena[:0]
}

// pipelineBatches is the number of batches in circulation: one filling,
// one committing, one being acknowledged.
const pipelineBatches = 3

// New checks cfg, loads its TLS files and registers the metrics. It does
// not connect: Run does. A nil log discards the log; a nil reg keeps the
// metrics unregistered; a nil sink is an error, and so is a reg that
// refuses the metrics (another intake's), which then leaves none of them
// registered.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, sink Sink) (*Subscriber, error) {
	if sink == nil {
		return nil, errors.New("new intake: nil sink")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	routes, err := newRouteTable(cfg.Routes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	s := &Subscriber{
		cfg:       cfg,
		log:       log.With("component", "mqtt"),
		sink:      sink,
		routes:    routes,
		filters:   map[string]byte{},
		in:        make(chan inbound, cfg.QueueSize),
		stop:      make(chan struct{}),
		connected: make(chan connEvent, 1),
		attrs:     map[string]string{},
	}
	for _, r := range routes.routes {
		s.filters[r.filter] = r.qos
	}
	u, _ := url.Parse(cfg.URL) // Validate parsed it
	if isTLSScheme(u.Scheme) {
		if s.tls, err = cfg.TLS.load(); err != nil {
			return nil, err
		}
	}
	if s.m, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("register mqtt metrics: %w", err)
	}
	s.rejects = newRateLog(s.log, cfg.RejectLogInterval)
	pahoLogger.Store(s.log.With("lib", "paho"))
	return s, nil
}

// Ready reports whether the Subscriber is connected to the broker and
// subscribed to every route at the route's QoS: messages flow, at least
// once. For the daemon's /readyz.
func (s *Subscriber) Ready() bool {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.ready
}

func (s *Subscriber) clientOptions() *paho.ClientOptions {
	c := s.cfg
	o := paho.NewClientOptions().
		AddBroker(c.URL).
		SetClientID(c.ClientID).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(false).
		SetOrderMatters(true). // one handler call at a time, in receipt order
		SetAutoAckDisabled(true).
		SetStore(paho.NewMemoryStore()). // FileStore panics on I/O errors
		SetKeepAlive(c.KeepAlive).
		SetConnectTimeout(c.ConnectTimeout).
		SetWriteTimeout(c.WriteTimeout).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(c.MaxReconnectInterval).
		// Run retries the first connection itself, with a wait it can cut
		// short when asked to stop; paho's ConnectRetry sleeps in a
		// goroutine that outlives Disconnect.
		SetConnectRetry(false).
		// Messages of the persistent session can arrive before SUBSCRIBE
		// is even sent: the default handler must exist before Connect.
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(s.onConnectionLost).
		SetCustomOpenConnectionFn(s.openConnection)
	if s.tls != nil {
		o.SetTLSConfig(s.tls)
	}
	return o
}

// Run connects, subscribes and moves messages to the sink until ctx is
// done. Then it stops taking messages, spends up to mqtt.drain_timeout
// committing and acknowledging those it already has, disconnects and
// returns nil. It returns an error wrapping ErrSink when the sink fails
// for good. Run may be called once.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("mqtt: Run called twice")
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	// Commits outlive ctx by up to drain_timeout: what was received when
	// the stop came is committed and acknowledged if the sink allows.
	commitCtx, cancelCommit := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCommit()

	var fatalErr error
	var fatalOnce sync.Once
	fatal := func(err error) {
		fatalOnce.Do(func() {
			fatalErr = err
			cancelRun()
		})
	}

	free := make(chan *batch, pipelineBatches)
	for range pipelineBatches {
		free <- &batch{}
	}
	handoff := make(chan *batch)
	acks := make(chan *batch, pipelineBatches)

	var pipeline sync.WaitGroup
	pipeline.Go(func() { s.collect(free, handoff) })
	pipeline.Go(func() { s.commit(commitCtx, handoff, acks, free, fatal) })
	pipeline.Go(func() { s.ack(acks, free) })

	client := paho.NewClient(s.clientOptions())
	var loops sync.WaitGroup
	loops.Go(func() { s.subscribeLoop(runCtx, client) })

	s.log.Info("connecting", "broker", s.cfg.URL, "client_id", s.cfg.ClientID, "routes", len(s.filters))
	s.connect(runCtx, client)
	<-runCtx.Done()

	s.log.Info("stopping intake")
	s.stopIntake()
	pipelineDone := make(chan struct{})
	loops.Go(func() {
		t := time.NewTimer(s.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelCommit()
		case <-pipelineDone:
		}
	})
	pipeline.Wait()
	close(pipelineDone)
	// The acknowledgements were handed to paho in order before DISCONNECT
	// is queued, and paho writes them first.
	quiesce := min(s.cfg.WriteTimeout, time.Second)
	client.Disconnect(uint(quiesce / time.Millisecond))
	s.setState(func() { s.ready = false })
	loops.Wait()
	s.log.Info("intake stopped")
	return fatalErr
}

// connect makes the first connection, retrying with capped, jittered
// exponential backoff until it succeeds or ctx is done. Later losses are
// paho's auto-reconnect's business.
func (s *Subscriber) connect(ctx context.Context, client paho.Client) {
	op := retry.Op{Policy: s.retryPolicy(), Log: s.log, What: "connect", Attrs: []any{"broker", s.cfg.URL}}
	_ = op.Do(ctx, func(context.Context) error {
		tok := client.Connect()
		// Bounded by mqtt.connect_timeout; waiting it out even when ctx
		// is done leaves no connection attempt running after Run.
		<-tok.Done()
		return tok.Error()
	})
}

// retryPolicy paces the first connection and subscribe retries.
func (s *Subscriber) retryPolicy() retry.Policy {
	return retry.Policy{Initial: s.cfg.ConnectRetryInterval, Max: s.cfg.MaxReconnectInterval}
}

func (s *Subscriber) onConnect(paho.Client) {
	s.m.connects.Inc()
	// paho calls OnConnect after it read the CONNACK of the connection it
	// just opened, the newest one. Should that connection be gone already
	// and the next one not be past its CONNACK, the flag reads false: the
	// loop subscribes, which is safe, only costly.
	present := false
	if c := s.conn.Load(); c != nil {
		present = c.sessionPresent()
	}
	var gen uint64
	s.setState(func() { s.gen++; s.opened++; gen = s.gen })
	s.log.Info("connected", "broker", s.cfg.URL, "session_present", present)
	// Keep only the newest connection: an older one is stale.
	select {
	case <-s.connected:
	default:
	}
	s.connected <- connEvent{gen: gen, sessionPresent: present}
}

func (s *Subscriber) onConnectionLost(_ paho.Client, err error) {
	s.m.connLost.Inc()
	s.setState(func() {
		s.lost++
		if s.opened <= s.lost { // else see stateMu
			s.gen++
			s.ready = false
		}
	})
	s.log.Warn("connection lost", "broker", s.cfg.URL, "err", err)
}

func (s *Subscriber) setState(f func()) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	f()
	if s.ready {
		s.m.up.Set(1)
	} else {
		s.m.up.Set(0)
	}
}

// subscribeLoop subscribes after each connection, as far as the session
// needs it.
//
// A SUBSCRIBE, even of a filter the session already has, makes the broker
// send every matching retained message again (MQTT 3.1.1 §3.8.4), and the
// intake stores each again. The broker keeps the subscriptions of the
// persistent session, so the loop sends SUBSCRIBE only:
//   - on the first connection of the process, whatever the broker kept:
//     the routes may have changed since the session was made (a new
//     filter, another QoS), and MQTT 3.1.1 has no way to list a session's
//     subscriptions. The retained messages are stored once more per start.
//   - when the CONNACK says the broker has no session (it expired it, or
//     lost its store): a new session has no subscriptions.
//   - for the filters not yet granted at their route's QoS.
//
// So a reconnect that finds the session (session present) with every
// filter granted sends no SUBSCRIBE: the subscriptions, and what the broker
// queued meanwhile, are there. A filter the broker refused is tried again
// on the same connection, with backoff (an ACL can be reloaded); one granted
// below its route's QoS only on the next connection: the broker granted by
// policy, and each try makes it send the filter's retained messages again.
func (s *Subscriber) subscribeLoop(ctx context.Context, client paho.Client) {
	// pending holds the filters the current session does not have at
	// their route's QoS. Owned by this goroutine.
	pending := maps.Clone(s.filters)
	for {
		var ev connEvent
		select {
		case <-ctx.Done():
			return
		case ev = <-s.connected:
		}
		if !ev.sessionPresent {
			if len(pending) < len(s.filters) {
				// The session this process subscribed in is gone.
				s.m.sessionLost.Inc()
				s.log.Warn("broker has no session for the bridge, subscribing again: messages it held for the bridge are lost", "broker", s.cfg.URL, "client_id", s.cfg.ClientID)
			}
			pending = maps.Clone(s.filters)
		}
		sent := len(pending) > 0
		try := maps.Clone(pending)
		for n := 1; len(try) > 0; n++ {
			failed, err := s.subscribe(ctx, client, try)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.log.Error("subscribe failed", "err", err)
			} else {
				for f := range try {
					switch failed[f] {
					case "":
						delete(pending, f)
						delete(try, f)
					case subscribeQoSDowngraded:
						delete(try, f)
					}
				}
			}
			if len(try) == 0 || !client.IsConnectionOpen() {
				break // the next connection subscribes what is pending
			}
			if !retry.Sleep(ctx, s.retryPolicy().Delay(n)) {
				return
			}
		}
		if len(pending) > 0 {
			continue // not ready: subscribe logged and counted why
		}
		ok := false
		s.setState(func() {
			if s.gen == ev.gen && s.opened > s.lost {
				s.ready, ok = true, true
			}
		})
		switch {
		case !ok:
		case sent:
			s.log.Info("subscribed", "filters", len(s.filters))
		default:
			s.log.Info("session resumed, subscriptions kept", "filters", len(s.filters))
		}
	}
}

// Reasons of edgebridge_mqtt_subscribe_errors_total.
const (
	subscribeRefused       = "refused"        // SUBACK failure (0x80): an ACL, most often
	subscribeQoSDowngraded = "qos_downgraded" // granted below the route's QoS
	subscribeTimeout       = "timeout"        // no SUBACK within mqtt.connect_timeout
	subscribeError         = "error"          // not sent, or the connection was lost first
)

var subscribeReasons = []string{subscribeRefused, subscribeQoSDowngraded, subscribeTimeout, subscribeError}

// subscribe sends one SUBSCRIBE for filters (filter -> route QoS) and
// returns, for each filter the broker did not grant at its route's QoS,
// the reason. A grant below the route's QoS is a failure: the broker would
// deliver at that QoS, and a QoS 0 message is neither kept nor redelivered
// by the broker, so the intake would quietly become at-most-once.
func (s *Subscriber) subscribe(ctx context.Context, client paho.Client, filters map[string]byte) (map[string]string, error) {
	tok := client.SubscribeMultiple(filters, nil) // nil: the default handler
	t := time.NewTimer(s.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		s.m.subscribeErrors.WithLabelValues(subscribeTimeout).Inc()
		return nil, fmt.Errorf("no SUBACK within mqtt.connect_timeout (%s)", s.cfg.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		s.m.subscribeErrors.WithLabelValues(subscribeError).Inc()
		return nil, err
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		s.m.subscribeErrors.WithLabelValues(subscribeError).Inc()
		return nil, fmt.Errorf("paho returned a %T for SUBSCRIBE, not its SUBACK", tok)
	}
	granted := st.Result()
	failed := map[string]string{}
	for f, want := range filters {
		code, ok := granted[f]
		switch {
		case !ok || code > 2: // 0x80, or a code MQTT 3.1.1 does not have
			failed[f] = subscribeRefused
			s.log.Error("broker refused the subscription (check its ACL)", "filter", f, "qos", want, "return_code", code)
		case code < want:
			failed[f] = subscribeQoSDowngraded
			s.log.Error("broker granted a lower qos than the route's: the filter's messages are not delivered at least once",
				"filter", f, "qos", want, "granted_qos", code)
		default:
			continue
		}
		s.m.subscribeErrors.WithLabelValues(failed[f]).Inc()
	}
	return failed, nil
}

// onMessage is paho's handler. It only queues the message.
func (s *Subscriber) onMessage(_ paho.Client, m paho.Message) {
	in := inbound{msg: m, at: time.Now()}
	s.stopMu.RLock()
	defer s.stopMu.RUnlock()
	if !s.stopped {
		select {
		case s.in <- in:
			return
		case <-s.stop:
		}
	}
	// Stopping. A QoS 1/2 message is not acknowledged, so the broker keeps
	// it and sends it again on the next connection; QoS 0 is gone.
	if m.Qos() == 0 {
		s.m.dropped.WithLabelValues("stopping").Inc()
	}
}

func (s *Subscriber) stopIntake() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.stopMu.Lock()
		s.stopped = true
		s.stopMu.Unlock()
	})
}

// collect fills batches from s.in and hands them to the committer, in
// receipt order. While the committer is busy the current batch keeps
// growing, so batches are as large as the commit latency makes them.
func (s *Subscriber) collect(free <-chan *batch, handoff chan<- *batch) {
	defer close(handoff)
	b := <-free
	for {
		s.fill(b)
		in := s.in
		if s.full(b) {
			in = nil
		}
		var out chan<- *batch
		if len(b.msgs) > 0 {
			out = handoff
		}
		select {
		case m := <-in:
			s.add(b, m)
		case out <- b:
			b = <-free
		case <-s.stop:
			// stop is closed before stopIntake waits out the handlers;
			// calling it here returns only once they are gone, so nothing
			// arrives on s.in after the drain below.
			s.stopIntake()
			for {
				s.fill(b)
				if len(b.msgs) == 0 {
					return
				}
				handoff <- b
				b = <-free
			}
		}
	}
}

// fill takes what is available on s.in without waiting.
func (s *Subscriber) fill(b *batch) {
	for !s.full(b) {
		select {
		case m := <-s.in:
			s.add(b, m)
		default:
			return
		}
	}
}

func (s *Subscriber) full(b *batch) bool {
	return len(b.msgs) >= s.cfg.MaxBatch || len(b.arena) >= s.cfg.MaxBatchBytes
}

// add encodes the envelope of in into b.
func (s *Subscriber) add(b *batch, in inbound) {
	m := in.msg
	topic, payload := m.Topic(), m.Payload()
	s.m.received.Inc()

	var reason, device, kafkaTopic string
	clear(s.attrs)
	r := s.routes.match(topic)
	switch {
	case !utf8.ValidString(topic):
		// A broker must refuse it (MQTT 3.1.1 §1.5.3); protobuf strings
		// must be UTF-8. Keep the bytes in an attribute.
		reason = ReasonInvalidTopic
		s.attrs["mqtt_topic_raw"] = strconv.Quote(topic)
		topic = strings.ToValidUTF8(topic, "\uFFFD")
	case r == nil:
		reason = ReasonNoRoute
	default:
		kafkaTopic = r.kafkaTopic
		device = r.deviceID(topic)
		if device == "" {
			reason = ReasonNoDeviceID
		}
	}
	if len(payload) > s.cfg.MaxPayloadBytes {
		if reason == "" {
			reason = ReasonPayloadTooLarge
		}
		// Kept whole: once the limits are raised, the dead letter can be
		// requeued and sent as it arrived.
		s.attrs["payload_bytes"] = strconv.Itoa(len(payload))
	}

	s.ts.Seconds, s.ts.Nanos = in.at.Unix(), int32(in.at.Nanosecond())
	s.env = edgebridgev1.Envelope{
		NodeId:     s.cfg.NodeID,
		DeviceId:   device,
		MqttTopic:  topic,
		Payload:    payload,
		Qos:        uint32(m.Qos()),
		Retained:   m.Retained(),
		ReceivedAt: &s.ts,
	}
	if len(s.attrs) > 0 {
		s.env.Attributes = s.attrs
	}
	start := len(b.arena)
	var err error
	b.arena, err = proto.MarshalOptions{}.MarshalAppend(b.arena, &s.env)
	if err != nil {
		// Every string was made valid UTF-8 above, so this is a bug; the
		// message is still kept, as a dead letter holding its payload.
		s.log.Error("encode envelope", "err", err, "topic", topic)
		b.arena = append(b.arena[:start], payload...)
		reason = ReasonEncodeFailed
	}
	value := b.arena[start:len(b.arena):len(b.arena)]
	ks := len(b.arena)
	b.arena = append(b.arena, device...)
	key := b.arena[ks:len(b.arena):len(b.arena)]

	b.msgs = append(b.msgs, m)
	b.recs = append(b.recs, buffer.Record{Topic: kafkaTopic, Key: key, Value: value, Reason: reason})
	if reason != "" {
		s.m.rejected.WithLabelValues(reason).Inc()
		if ok, skipped := s.rejects.allow(reason, in.at); ok {
			s.log.Warn("message rejected", "reason", reason, "topic", topic, "payload_bytes", len(m.Payload()), "suppressed", skipped)
		}
	}
}

// commit appends each batch to the sink, retrying what may succeed later,
// and passes committed batches on to be acknowledged. After a batch fails
// for good no later batch is committed: acknowledging a later message
// while an earlier one stays unacknowledged would let the broker deliver
// the earlier one again after the later ones, out of order.
func (s *Subscriber) commit(ctx context.Context, handoff <-chan *batch, acks chan<- *batch, free chan<- *batch, fatal func(error)) {
	defer close(acks)
	var abandoned int
	failed := false
	for b := range handoff {
		if !failed {
			err := s.appendRetry(ctx, b)
			if err == nil {
				acks <- b
				continue
			}
			failed = true
			if errors.Is(err, ErrSink) {
				s.log.Error("sink failed, stopping intake", "err", err)
				fatal(err)
			}
		}
		abandoned += len(b.msgs)
		b.reset()
		free <- b
	}
	if abandoned > 0 {
		s.log.Warn("messages not committed, left to the broker to redeliver", "messages", abandoned)
	}
}

// appendRetry appends b until it succeeds, fails for good (ErrSink) or
// ctx is done.
func (s *Subscriber) appendRetry(ctx context.Context, b *batch) error {
	s.m.batchSize.Observe(float64(len(b.recs)))
	// A shutdown or an error no retry fixes ends the retries, and is no
	// failed commit to count.
	stop := func(err error) bool { return ctx.Err() != nil || permanent(err) }
	op := retry.Op{
		Policy:    appendPolicy,
		Log:       s.log,
		What:      "sink append",
		Permanent: stop,
		Failed: func(err error) {
			if !stop(err) {
				s.m.commitErrors.Inc()
			}
		},
	}
	err := op.Do(ctx, func(ctx context.Context) error {
		start := time.Now()
		err := s.sink.Append(ctx, b.recs)
		if err == nil {
			s.m.commitSeconds.Observe(time.Since(start).Seconds())
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() == nil && permanent(err):
		return fmt.Errorf("%w: append %d records: %w", ErrSink, len(b.recs), err)
	default:
		return fmt.Errorf("append %d records: %w", len(b.recs), err)
	}
}

// appendPolicy paces retries of a failed sink append: a disk that failed
// may be back in milliseconds, and intake waits for it.
var appendPolicy = retry.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

// permanent decides which sink errors no retry can fix.
func permanent(err error) bool {
	return errors.Is(err, buffer.ErrClosed) || errors.Is(err, buffer.ErrCorrupt) || errors.Is(err, buffer.ErrTooLarge)
}

// ack acknowledges the messages of each committed batch in receipt order.
func (s *Subscriber) ack(acks <-chan *batch, free chan<- *batch) {
	for b := range acks {
		n := 0
		// paho writes each PUBACK on its own: hold them in the
		// connection's buffer and send the batch's together. Acks of a
		// lost connection are dropped by paho, whichever conn this is.
		conn := s.conn.Load()
		if conn != nil {
			conn.hold()
		}
		for _, m := range b.msgs {
			m.Ack() // a no-op for QoS 0
			if m.Qos() > 0 {
				n++
			}
		}
		if conn != nil {
			conn.release()
		}
		s.m.acked.Add(float64(n))
		b.reset()
		free <- b
	}
}
