package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func counter(name string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: name})
}

// A refused collector leaves none of the others registered, and is an
// error, not a panic; unregister takes back what a success registered.
func TestRegister(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := Register(reg, counter("taken")); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(reg, counter("a"), counter("taken"), counter("b")); err == nil {
		t.Fatal("a duplicate registered")
	}
	if n := count(t, reg); n != 1 {
		t.Errorf("%d metrics registered after the failure, want 1 (taken)", n)
	}
	unregister, err := Register(reg, counter("a"), counter("b"))
	if err != nil {
		t.Fatalf("a and b are still taken after the failure: %v", err)
	}
	if n := count(t, reg); n != 3 {
		t.Errorf("%d metrics registered, want 3", n)
	}
	unregister()
	if n := count(t, reg); n != 1 {
		t.Errorf("%d metrics registered after unregister, want 1", n)
	}
	if _, err := Register(nil, counter("a")); err != nil {
		t.Errorf("a nil registerer: %v", err)
	}
}

func count(t *testing.T, g prometheus.Gatherer) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return len(mfs)
}
