// Package field holds what every component's Config shares: the error of a
// bad field, named by its YAML key, and the filling of unset fields from the
// component's DefaultConfig.
//
// Every Validate returns its problems joined (errors.Join), each an *Error;
// the config package lifts the key of each with errors.As, so no caller
// reads a key out of an error's text.
package field

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Error is a bad value of one configuration field.
type Error struct {
	// Key is the field's YAML key as the file spells it:
	// "kafka.backoff.max", "routes[1].filter", "node_id".
	Key string
	// Msg says what is wrong, in a sentence that names Key.
	Msg string
	// Err is the cause, when there is one (a file that cannot be read);
	// its text follows Msg.
	Err error
}

// Errorf returns the Error of key. The format's first verb is the key:
// Errorf("kafka.linger", "%s must be >= 0"), Errorf("mqtt.max_batch",
// "%s: %d is above the maximum %d", v, max).
func Errorf(key, format string, args ...any) *Error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, append([]any{key}, args...)...)}
}

// Wrap returns the Error of key caused by err: "<key>: <err>".
func Wrap(key string, err error) *Error {
	return &Error{Key: key, Msg: key, Err: err}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// List collects the problems of one Validate. The zero value is ready.
type List struct {
	errs []error
	wrap error
}

// NewList returns a List whose errors each match sentinel (errors.Is) and
// carry its text in front: "invalid kafka config: kafka.linger ...".
func NewList(sentinel error) *List { return &List{wrap: sentinel} }

// Add records e; a nil e is ignored.
func (l *List) Add(e *Error) {
	if e == nil {
		return
	}
	l.add(e)
}

func (l *List) add(e error) {
	if l.wrap != nil {
		e = &marked{sentinel: l.wrap, err: e}
	}
	l.errs = append(l.errs, e)
}

// AddAll records every error err is made of (see Walk).
func (l *List) AddAll(err error) {
	Walk(err, l.add)
}

// Addf records Errorf(key, format, args...).
func (l *List) Addf(key, format string, args ...any) { l.Add(Errorf(key, format, args...)) }

// Err returns the problems joined, nil when there are none.
func (l *List) Err() error { return errors.Join(l.errs...) }

// marked is err, matching sentinel as well, with its text in front. It
// unwraps to err alone (not to a list, as fmt.Errorf with two %w would),
// so that Walk sees one problem in it.
type marked struct{ sentinel, err error }

func (m *marked) Error() string        { return m.sentinel.Error() + ": " + m.err.Error() }
func (m *marked) Unwrap() error        { return m.err }
func (m *marked) Is(target error) bool { return target == m.sentinel }

// Walk calls fn for every error err is made of: each error of a join (and of
// a join inside a join), and err itself when it is not a join.
func Walk(err error, fn func(error)) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			Walk(e, fn)
		}
		return
	}
	fn(err)
}

// NodeID checks node_id, the name of the edge node that mqtt puts in every
// envelope and in its client id, and forward in every record's headers: at
// most 253 printable ASCII characters (a Kubernetes node name fits), without
// spaces or the MQTT topic characters '/', '+' and '#'.
func NodeID(id string) *Error {
	switch {
	case id == "":
		return Errorf("node_id", "%[1]s must be set (%[1]s is required: it names this node in every envelope and record)")
	case len(id) > 253 || strings.ContainsFunc(id, func(r rune) bool {
		return r <= ' ' || r > '~' || r == '/' || r == '+' || r == '#'
	}):
		return Errorf("node_id", "%s: %q must be at most 253 printable ASCII characters without spaces, '/', '+' or '#'", id)
	}
	return nil
}

// Fill returns c with every zero field (recursively into nested structs)
// set to the same field of defaults. A component whose zero values mean "the
// default" fills its Config this way from its DefaultConfig, which stays the
// one place its defaults are written.
func Fill[T any](c, defaults T) T {
	fill(reflect.ValueOf(&c).Elem(), reflect.ValueOf(defaults))
	return c
}

func fill(dst, def reflect.Value) {
	if dst.Kind() == reflect.Struct {
		for i := range dst.NumField() {
			if dst.Type().Field(i).IsExported() {
				fill(dst.Field(i), def.Field(i))
			}
		}
		return
	}
	if dst.IsZero() {
		dst.Set(def)
	}
}
