// Package config reads edgebridge's one YAML configuration file and maps it
// onto the Config of each component (buffer, mqtt, forward, the HTTP server).
//
// Rules of the file, in the order they are applied:
//
//   - Every key must be known. An unknown key is an error naming it and its
//     line, never ignored: a key spelt as another tool spells it
//     (`bootstrap.servers` for `kafka.brokers`) would otherwise leave the
//     default in place and the daemon would talk to the wrong place.
//   - ${NAME} in any value is replaced by the environment variable NAME;
//     ${NAME:-default} gives a default for an unset or empty NAME; $${ is a
//     literal "${". An unset NAME without a default is an error naming it.
//     Expansion happens inside values only, never in keys or comments.
//   - Durations carry a unit ("500ms", "5s", "2m"); sizes are bytes or carry
//     a unit ("512MiB", "4GiB", "1GB"). A bare number is never a duration.
//   - Secrets come inline (usually as ${ENV}) or from a file: `password` or
//     `password_file`, not both. A file's trailing newline is dropped.
//     Relative file paths are relative to the directory of the config file.
//   - "key:" with no value, or no key at all, means the default.
//   - Anchors, aliases and merge keys (<<) work. An alias inside the node it
//     names is an error, and aliases expand to at most 10000 values, so a
//     file cannot recurse or multiply itself ("billion laughs"). The file is
//     at most 1 MiB, a secret file a regular file of at most 64 KiB.
//   - Defaults are applied, then every component's Validate checks its fields
//     together and names the bad field by its key. Every size and count has
//     an upper bound a 4 GB node can honour, named in the error.
//
// Parse goes in steps, one function each: decode (the file over the
// defaults, defaultFile) -> resolve (secret files, relative paths, node_id,
// http.pprof_listen) -> one builder per component, which copies the
// component's keys into its Config and runs its Validate -> the checks
// across components. WriteYAML prints the result back as a file.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
)

// Config is the validated configuration, ready to hand to the components.
type Config struct {
	// NodeID names this edge node in every envelope. yaml: node_id.
	// Default: $NODE_NAME (the Kubernetes downward API), else the hostname.
	NodeID string
	// ShutdownTimeout bounds the whole shutdown on SIGTERM: the intake's
	// drain (mqtt.drain_timeout), then the Kafka flush and the final acks,
	// which share the rest equally. Keep it below the pod's
	// terminationGracePeriodSeconds. yaml: shutdown_timeout.
	ShutdownTimeout time.Duration
	MQTT            mqtt.Config    // mqtt.* and routes[]
	Buffer          buffer.Config  // buffer.*
	Forward         forward.Config // kafka.*
	HTTP            HTTP
	Log             Log

	// src is the file as resolved: what WriteYAML needs beyond the
	// components' Configs (where each secret came from).
	src file
}

// HTTP configures the metrics and health endpoint.
type HTTP struct {
	// Listen is the host:port of /metrics, /healthz and /readyz.
	// yaml: http.listen. Default 0.0.0.0:9464.
	Listen string
	// Pprof serves /debug/pprof/ as well. yaml: http.pprof. Default false.
	Pprof bool
	// PprofListen is the host:port of /debug/pprof/. yaml:
	// http.pprof_listen. Default: http.listen when that is a loopback
	// address, else 127.0.0.1:6060, so the profiles never answer on a port
	// open to the cluster unless the file names one.
	PprofListen string
}

// Log configures the process logger.
type Log struct {
	// Level: debug, info, warn or error. yaml: log.level. Default info.
	Level slog.Level
	// Format: json or text. yaml: log.format. Default json.
	Format string
}

// Defaults of the keys this package owns; the components own theirs, in
// their DefaultConfig. defaultFile puts them all together.
const (
	DefaultShutdownTimeout = 25 * time.Second
	DefaultBufferDir       = "/var/lib/edgebridge"
	DefaultHTTPListen      = "0.0.0.0:9464"
	DefaultPprofListen     = "127.0.0.1:6060"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
)

// Upper bounds of buffer.* (the buffer package bounds them from below), so
// that a unit too many is refused at validate rather than tried on disk.
const (
	// maxBufferBytes bounds buffer.max_bytes and buffer.min_free_disk:
	// more disk than an edge node has; a larger value is a unit slip.
	maxBufferBytes = 1 << 40
	// maxSegmentBytes: the head segment is mapped at twice its size up
	// front, and a damaged segment is rescanned whole.
	maxSegmentBytes = 1 << 30
	// maxSegments bounds buffer.max_bytes / buffer.segment_bytes: every
	// segment is an open bbolt file (a descriptor, a mapping, a freelist
	// rebuilt by scanning it at Open), kept for the life of the process.
	maxSegments = 4096
)

// Options are the process facts Parse needs; Load fills them from the OS.
type Options struct {
	// File names the file in error messages.
	File string
	// Dir resolves relative *_file paths. Default: the working directory.
	Dir string
	// LookupEnv resolves ${NAME}. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Hostname is the last fallback of node_id. Default os.Hostname.
	Hostname func() (string, error)
}

// Bounds on what Parse reads. A complete config is a few KiB and a
// password a few dozen bytes: past these the file is not a config (a path
// mistaken for another, /dev/zero), and reading on would only fill memory.
const (
	maxFileBytes   = 1 << 20
	maxSecretBytes = 64 << 10
)

// Load reads, expands, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := readBounded(path, maxFileBytes)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, Options{File: path, Dir: filepath.Dir(path)})
}

// readBounded reads a regular file of at most limit bytes. Devices and
// FIFOs are refused before they are opened: a FIFO blocks the open itself,
// and a device may never end.
func readBounded(path string, limit int64) ([]byte, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than the maximum %s", path, ByteSize(limit))
	}
	return data, nil
}

// Parse is Load on bytes already read.
func Parse(data []byte, opts Options) (*Config, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	return parse(data, opts)
}

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be host:port, e.g. 0.0.0.0:9464: %v", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port %q", addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has an invalid host %q", addr, host)
	}
	return nil
}

// isLoopback reports whether addr's host is a loopback address or
// "localhost": reachable from this node only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func dirOr(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}
