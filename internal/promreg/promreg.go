// Package promreg holds the one rule by which mqtt, buffer and forward
// register their collectors.
package promreg

import "github.com/prometheus/client_golang/prometheus"

// Register registers every collector with reg, and returns the function
// that unregisters them again. A nil reg registers nothing: the metrics are
// kept, and gathered by no one. When reg refuses one (a duplicate: another
// component registered its metrics already), Register unregisters those it
// registered before it and returns reg's error, so that nothing of the
// failed caller stays registered.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) (unregister func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	unregister = func() {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return func() {}, err
		}
	}
	return unregister, nil
}
