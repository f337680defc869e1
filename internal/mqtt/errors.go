package mqtt

import "errors"

var (
	// ErrInvalidConfig is matched by every error of Config.Validate and New
	// about the configuration: each is a *field.Error, which names the
	// field by its YAML key.
	ErrInvalidConfig = errors.New("invalid mqtt config")

	// ErrTLSMaterial wraps errors loading the TLS material named in
	// mqtt.tls: missing or unreadable files, bad PEM, a key that does not
	// match its certificate. The message names the file's key.
	ErrTLSMaterial = errors.New("bad mqtt tls material")

	// ErrSink wraps the error of a sink that cannot take records any more
	// (closed, corrupt, or a batch it can never hold). Run returns it; the
	// messages it was given were not acknowledged and the broker keeps them.
	ErrSink = errors.New("mqtt sink failed")
)
