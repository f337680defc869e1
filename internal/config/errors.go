package config

import (
	"errors"
	"fmt"
)

var (
	// ErrUnknownKey: the file has a key edgebridge does not know. Unknown keys
	// are never ignored: a misspelt key (`bootstrap.servers` for
	// `kafka.brokers`) would otherwise silently fall back to a default.
	ErrUnknownKey = errors.New("unknown key")
	// ErrEnvNotSet: a ${NAME} reference names an environment variable that is
	// not set and has no ${NAME:-default}.
	ErrEnvNotSet = errors.New("environment variable not set")
	// ErrInvalid: a value has the wrong type or format, or fails validation.
	ErrInvalid = errors.New("invalid config")
)

// Error is a problem at one place of the file. Key is the dotted path as the
// file spells it (`kafka.backoff.max`, `routes[1].filter`); Line is 0 when the
// problem is not tied to one line (a missing required key, a cross-field rule).
//
// A problem a component's Validate found has its *field.Error as Cause,
// whose text names the key itself: the Error says it after the file's name
// and the component's sentinel, as the component does ("f.yaml: invalid
// kafka config: kafka.linger must be ..."; buffer has no sentinel). node_id,
// a key of the file's top level, is the file's: "f.yaml: node_id: ...".
type Error struct {
	File  string
	Line  int
	Key   string
	Msg   string
	Err   error // one of the sentinels above
	Cause error // the *field.Error of the problem, or nil
	in    error // the sentinel of the component that found it (mqtt.ErrInvalidConfig), or nil
}

func (e *Error) Error() string {
	prefix := e.File
	if e.Line > 0 {
		prefix = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	msg := e.Msg
	switch {
	case e.Cause != nil && e.in != nil:
		msg = e.in.Error() + ": " + e.Cause.Error()
	case e.Cause != nil:
		msg = e.Cause.Error()
	case e.Key != "":
		msg = e.Key + ": " + e.Msg
	}
	if prefix == "" {
		return msg
	}
	return prefix + ": " + msg
}

func (e *Error) Unwrap() []error {
	errs := []error{e.Err}
	for _, err := range []error{e.in, e.Cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
