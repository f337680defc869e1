package buffer

import (
	"time"

	"github.com/edgebridge/edgebridge/internal/field"
)

// The overflow policies of Config.WhenFull.
const (
	// WhenFullBlock makes appends wait for room: the intake stops
	// acknowledging and the MQTT broker keeps the messages.
	WhenFullBlock = "block"
	// WhenFullDropOldest deletes the oldest records to make room, counting
	// and logging every drop.
	WhenFullDropOldest = "drop_oldest"
)

// Config configures a Queue. The zero value of each field means its
// default: DefaultConfig holds them all.
type Config struct {
	// Dir holds the segment files. yaml: buffer.dir. Required.
	Dir string
	// MaxBytes caps what the buffer stores, counted logically (keys and
	// values of records and dead letters, not bbolt's file size).
	// yaml: buffer.max_bytes. Default 1GiB.
	MaxBytes int64
	// MaxAge, when set, expires records older than this, whatever the
	// policy; each is counted as dropped with reason "max_age".
	// yaml: buffer.max_age. Default 0: records never expire.
	MaxAge time.Duration
	// MinFreeDisk is the free space the buffer leaves on its filesystem.
	// Below it appends are refused like a full buffer. yaml:
	// buffer.min_free_disk. Default 64MiB; -1 disables the check.
	MinFreeDisk int64
	// WhenFull is the overflow policy: "block" or "drop_oldest".
	// yaml: buffer.when_full. Default "block".
	WhenFull string
	// SegmentBytes is the file size at which a new segment is started.
	// Smaller segments return disk sooner after a drain and keep less of
	// the mapped file resident while it is read; larger ones mean fewer
	// files. yaml: buffer.segment_bytes. Default 16MiB.
	SegmentBytes int64
	// DropLogInterval bounds how often drops are logged (they are always
	// counted). yaml: buffer.drop_log_interval. Default 10s.
	DropLogInterval time.Duration
	// LockTimeout is how long Open waits for another process to release
	// the files. yaml: buffer.lock_timeout. Default 5s.
	LockTimeout time.Duration
}

// DefaultConfig returns the defaults, the one place they are written. Dir
// has none: the daemon's default (/var/lib/edgebridge) is its own.
func DefaultConfig() Config {
	return Config{
		MaxBytes:        1 << 30,
		MinFreeDisk:     64 << 20,
		WhenFull:        WhenFullBlock,
		SegmentBytes:    16 << 20,
		DropLogInterval: 10 * time.Second,
		LockTimeout:     5 * time.Second,
	}
}

// minSegmentBytes keeps tests able to use tiny segments while refusing
// sizes that would make a file per handful of records.
const minSegmentBytes = 64 << 10

// WithDefaults returns c with every unset field set from DefaultConfig.
func (c Config) WithDefaults() Config {
	return field.Fill(c, DefaultConfig())
}

// Validate checks c after defaults are applied and returns every bad
// field, joined, each a *field.Error naming its key.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs field.List
	if c.Dir == "" {
		errs.Addf("buffer.dir", "%s is required")
	}
	if c.MaxBytes < 0 {
		errs.Addf("buffer.max_bytes", "%s must be > 0, got %d", c.MaxBytes)
	}
	if c.MaxAge < 0 {
		errs.Addf("buffer.max_age", "%s must be >= 0, got %s", c.MaxAge)
	}
	if c.MinFreeDisk < -1 {
		errs.Addf("buffer.min_free_disk", "%s must be >= 0 (or -1 to disable), got %d", c.MinFreeDisk)
	}
	if c.WhenFull != WhenFullBlock && c.WhenFull != WhenFullDropOldest {
		errs.Addf("buffer.when_full", "%s must be %q or %q, got %q", WhenFullBlock, WhenFullDropOldest, c.WhenFull)
	}
	if c.SegmentBytes < minSegmentBytes {
		errs.Addf("buffer.segment_bytes", "%s must be >= %d, got %d", minSegmentBytes, c.SegmentBytes)
	}
	if c.MaxBytes > 0 && c.SegmentBytes > c.MaxBytes {
		errs.Addf("buffer.segment_bytes", "%s (%d) must be <= buffer.max_bytes (%d)", c.SegmentBytes, c.MaxBytes)
	}
	if c.DropLogInterval < 0 {
		errs.Addf("buffer.drop_log_interval", "%s must be > 0, got %s", c.DropLogInterval)
	}
	if c.LockTimeout < 0 {
		errs.Addf("buffer.lock_timeout", "%s must be > 0, got %s", c.LockTimeout)
	}
	return errs.Err()
}
