package e2e

import (
	"bytes"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A second SIGTERM during a shutdown that waits on an unreachable Kafka
// ends the process at once with exit code 3, and loses nothing: every
// message the broker acknowledged was committed before its PUBACK, so the
// next start sends it (contract 1 and 2).
func TestSecondSignalExitsAtOnceWithoutLoss(t *testing.T) {
	const (
		devices  = 5
		messages = 400
		topic    = "iot.telemetry"
	)
	ctx, st, v := startVerified(t, 2*time.Minute, "signal-node", topic)
	kafka, bridge := st.kafka, st.bridge

	// Kafka goes away mid-stream, so that the forwarder holds records in
	// flight and the shutdown has to wait for their flush.
	_, simDone := st.startDevices(ctx, devices, messages, 2000)
	for v.Counts().Unique < 200 {
		select {
		case <-ctx.Done():
			t.Fatal("no records reached Kafka")
		case <-time.After(5 * time.Millisecond):
		}
	}
	kafka.Stop()
	if err := <-simDone; err != nil {
		t.Fatalf("devices: %v", err)
	}

	if err := bridge.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The second signal must reach a process that handled the first (two
	// pending SIGTERMs would merge into one).
	for !bytes.Contains(st.out.Bytes(), []byte("signal received")) {
		select {
		case <-ctx.Done():
			t.Fatal("the bridge never logged the first signal")
		case <-time.After(5 * time.Millisecond):
		}
	}
	sent := time.Now()
	if err := bridge.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := bridge.Wait(30 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("after a second SIGTERM: %v, want exit code 3", err)
	}
	t.Logf("exited with code 3 %s after the second signal", time.Since(sent).Round(time.Millisecond))

	// Nothing was lost: Kafka back, bridge restarted, everything arrives.
	if err := kafka.Start(); err != nil {
		t.Fatal(err)
	}
	if err := bridge.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for v.Counts().Unique < devices*messages {
		select {
		case <-ctx.Done():
			t.Fatalf("after the restart only %+v of %d in Kafka", v.Counts(), devices*messages)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := bridge.Stop(30 * time.Second); err != nil {
		t.Errorf("bridge exit after SIGTERM: %v", err)
	}
	if err := v.Check(devices, messages); err != nil {
		t.Error(err)
	}
}
