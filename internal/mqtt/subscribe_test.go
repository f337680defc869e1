package mqtt

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/buffer"
)

// hasRecord reports whether sink holds a record of a message with payload.
func hasRecord(t testing.TB, sink *fakeSink, payload string) bool {
	t.Helper()
	return slices.ContainsFunc(sink.records(), func(r buffer.Record) bool { return string(decode(t, r).GetPayload()) == payload })
}

// reconnected waits until the bridge made a connection after the one it
// had when connects was read, and is ready on it.
func reconnected(t testing.TB, sub *running, connects float64) {
	t.Helper()
	waitFor(t, "reconnected and ready", func() bool { return metricValue(sub.m.connects) > connects && sub.Ready() })
}

// Finding 13: a SUBSCRIBE makes the broker send every matching retained
// message again. Reconnecting to a session the broker kept must not
// subscribe again (the retained messages are stored once), and
// reconnecting to a broker that lost the session must (or nothing flows).
// Each time, a message published after the reconnect is stored: the
// subscriptions are in place, and any retained copies a SUBSCRIBE brought
// came before it.
func TestReconnectSubscribesOnlyWhenTheSessionIsGone(t *testing.T) {
	const clientID = "bridge-retained"
	// A stand is a broker the bridge reaches at url, and disrupt ends the
	// bridge's connection to it.
	type stand struct {
		url     string
		disrupt func()
	}
	tests := []struct {
		name  string
		start func(t *testing.T) stand
		// Retained records stored in all, session_lost_total after.
		retained    int
		sessionLost float64
	}{
		{
			// mochi, to see when the broker has the bridge's PUBACKs: a
			// cut before that redelivers the retained messages (rightly).
			name: "session kept: the broker drops the connection",
			start: func(t *testing.T) stand {
				published := &publishedHook{topics: make(chan string, 16)}
				url, srv := startMochi(t, nil, published)
				publishRetained(t, url)
				for range 3 {
					<-published.topics // fanned out: see TestEnvelopeAndRouting
				}
				return stand{url: url, disrupt: func() {
					cl, ok := srv.Clients.Get(clientID)
					if !ok {
						t.Fatal("bridge not connected")
					}
					waitFor(t, "broker has every PUBACK", func() bool { return cl.State.Inflight.Len() == 0 })
					cl.Stop(errors.New("dropped by the test"))
				}}
			},
			retained: 3,
		},
		{
			// SIGKILL with autosave_interval 0: the restarted broker has
			// neither the session nor the retained messages.
			name: "session lost: mosquitto killed and restarted",
			start: func(t *testing.T) stand {
				mq := startMosquitto(t)
				publishRetained(t, mq.url())
				return stand{url: mq.url(), disrupt: func() { mq.kill(); mq.start() }}
			},
			retained:    3,
			sessionLost: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.start(t)
			sink := &fakeSink{}
			cfg := testConfig(st.url)
			cfg.ClientID = clientID
			cfg.MaxReconnectInterval = 200 * time.Millisecond
			cfg.ConnectRetryInterval = 20 * time.Millisecond
			sub := startSubscriber(t, cfg, sink)
			waitFor(t, "bridge ready", sub.Ready)
			waitFor(t, "retained messages", func() bool { return sink.len() >= 3 })

			for i := range 3 {
				connects := metricValue(sub.m.connects)
				st.disrupt()
				reconnected(t, sub, connects)
				marker := fmt.Sprintf("after-reconnect-%d", i)
				publish(t, newPublisher(t, st.url, "pub-"+marker), "devices/marker/telemetry", 1, false, []byte(marker))
				waitFor(t, marker+" stored", func() bool { return hasRecord(t, sink, marker) })
			}
			n := 0
			for _, r := range sink.records() {
				if decode(t, r).GetRetained() {
					n++
				}
			}
			if n != tt.retained {
				t.Errorf("%d retained records after 3 reconnects, want %d: a SUBSCRIBE to a kept session stores the retained messages again", n, tt.retained)
			}
			if got := metricValue(sub.m.sessionLost); got != tt.sessionLost {
				t.Errorf("edgebridge_mqtt_session_lost_total = %v, want %v", got, tt.sessionLost)
			}
		})
	}
}

// publishRetained publishes one retained message on each of three routed
// topics.
func publishRetained(t *testing.T, url string) {
	pub := newPublisher(t, url, "pub-retained")
	for _, d := range []string{"d0", "d1", "d2"} {
		publish(t, pub, "devices/"+d+"/telemetry", 1, true, []byte("last-state-of-"+d))
	}
}

// A restarted bridge subscribes on its first connection although the
// broker kept its session: the routes may have changed in between (here a
// new route), and MQTT 3.1.1 cannot tell which filters the session holds.
func TestRestartSubscribesTheCurrentRoutes(t *testing.T) {
	mq := startMosquitto(t)
	cfg := testConfig(mq.url())
	cfg.ClientID = "bridge-restart"
	cfg.Routes = cfg.Routes[:1]
	first := startSubscriber(t, cfg, &fakeSink{})
	waitFor(t, "first bridge ready", first.Ready)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	cfg.Routes = testConfig("").Routes // adds site/+/+/events
	sink := &fakeSink{}
	sub := startSubscriber(t, cfg, sink)
	waitFor(t, "bridge ready", sub.Ready)
	publish(t, newPublisher(t, mq.url(), "pub"), "site/berlin/pump-7/events", 1, false, []byte("new route"))
	waitFor(t, "message of the new route stored", func() bool { return hasRecord(t, sink, "new route") })
	if got := metricValue(sub.m.sessionLost); got != 0 {
		t.Errorf("edgebridge_mqtt_session_lost_total = %v after a restart onto a kept session, want 0", got)
	}
}

// paho runs OnConnect and OnConnectionLost each in a goroutine of its own:
// after a quick reconnect the OnConnectionLost of the old connection can
// run after the OnConnect of the new one. That late call must not make a
// connected, subscribed bridge unready for good. The test makes the calls
// in that order itself (the race is rare on a quiet machine; with a
// resumed session, which is ready at once, it was seen in 1 run of 5).
func TestLateConnectionLostKeepsTheNewConnectionReady(t *testing.T) {
	broker, _ := startMochi(t, nil)
	cfg := testConfig(broker)
	cfg.ClientID = "bridge-late-lost"
	sub := startSubscriber(t, cfg, &fakeSink{})
	waitFor(t, "bridge ready", sub.Ready)

	connects := metricValue(sub.m.connects)
	sub.onConnect(nil) // the new connection (paho's real one stands in)
	reconnected(t, sub, connects)
	sub.onConnectionLost(nil, errors.New("the old connection, reported late"))
	if !sub.Ready() {
		t.Error("Ready() = false on a connected, subscribed bridge after a late OnConnectionLost")
	}
	if v := metricValue(sub.m.up); v != 1 {
		t.Errorf("edgebridge_mqtt_up = %v, want 1", v)
	}
}
