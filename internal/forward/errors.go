package forward

import "errors"

var (
	// ErrInvalidConfig is matched by every error of Config.Validate: each
	// is a *field.Error, which names the field by its YAML key.
	ErrInvalidConfig = errors.New("invalid kafka config")

	// ErrTLSMaterial is matched by errors of New that come from reading or
	// parsing the CA, certificate or key files; each is a *field.Error
	// naming the file's key (kafka.tls.ca_file) and the file.
	ErrTLSMaterial = errors.New("bad kafka tls material")
)

// ErrRunTwice is returned by a second call of Producer.Run.
var ErrRunTwice = errors.New("forwarder already ran")
