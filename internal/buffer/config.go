package buffer

import (
	"errors"
	"fmt"
	"time"
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

// Config configures a Queue. The zero value of each field means its default.
type Config struct {
	// Dir holds the segment files. yaml: buffer.dir. Required.
	Dir string
	// MaxBytes caps what the buffer stores, counted logically (keys and
	// values of records and dead letters, not bbolt's file size).
	// yaml: buffer.max_bytes. Default 1 GiB.
	MaxBytes int64
	// MaxAge, when set, expires records older than this, whatever the
	// policy; each is counted as dropped with reason "max_age".
	// yaml: buffer.max_age. Default 0: records never expire.
	MaxAge time.Duration
	// MinFreeDisk is the free space the buffer leaves on its filesystem.
	// Below it appends are refused like a full buffer. yaml:
	// buffer.min_free_disk. Default 64 MiB; -1 disables the check.
	MinFreeDisk int64
	// WhenFull is the overflow policy: "block" or "drop_oldest".
	// yaml: buffer.when_full. Default "block".
	WhenFull string
	// SegmentBytes is the file size at which a new segment is started.
	// Smaller segments return disk sooner after a drain and keep less of
	// the mapped file resident while it is read; larger ones mean fewer
	// files. yaml: buffer.segment_bytes. Default 16 MiB.
	SegmentBytes int64
	// DropLogInterval bounds how often drops are logged (they are always
	// counted). yaml: buffer.drop_log_interval. Default 10s.
	DropLogInterval time.Duration
	// LockTimeout is how long Open waits for another process to release
	// the files. yaml: buffer.lock_timeout. Default 5s.
	LockTimeout time.Duration
}

// Defaults of Config.
const (
	DefaultMaxBytes        = 1 << 30
	DefaultMinFreeDisk     = 64 << 20
	DefaultSegmentBytes    = 16 << 20
	DefaultDropLogInterval = 10 * time.Second
	DefaultLockTimeout     = 5 * time.Second
)

// minSegmentBytes keeps tests able to use tiny segments while refusing
// sizes that would make a file per handful of records.
const minSegmentBytes = 64 << 10

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MinFreeDisk == 0 {
		c.MinFreeDisk = DefaultMinFreeDisk
	}
	if c.WhenFull == "" {
		c.WhenFull = WhenFullBlock
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.DropLogInterval == 0 {
		c.DropLogInterval = DefaultDropLogInterval
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = DefaultLockTimeout
	}
	return c
}

// Validate checks c after defaults are applied and names the first bad
// field by its configuration key.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("buffer.dir is required"))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("buffer.max_bytes must be > 0, got %d", c.MaxBytes))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("buffer.max_age must be >= 0, got %s", c.MaxAge))
	}
	if c.MinFreeDisk < -1 {
		errs = append(errs, fmt.Errorf("buffer.min_free_disk must be >= 0 (or -1 to disable), got %d", c.MinFreeDisk))
	}
	if c.WhenFull != WhenFullBlock && c.WhenFull != WhenFullDropOldest {
		errs = append(errs, fmt.Errorf("buffer.when_full must be %q or %q, got %q", WhenFullBlock, WhenFullDropOldest, c.WhenFull))
	}
	if c.SegmentBytes < minSegmentBytes {
		errs = append(errs, fmt.Errorf("buffer.segment_bytes must be >= %d, got %d", minSegmentBytes, c.SegmentBytes))
	}
	if c.MaxBytes > 0 && c.SegmentBytes > c.MaxBytes {
		errs = append(errs, fmt.Errorf("buffer.segment_bytes (%d) must be <= buffer.max_bytes (%d)", c.SegmentBytes, c.MaxBytes))
	}
	if c.DropLogInterval < 0 {
		errs = append(errs, fmt.Errorf("buffer.drop_log_interval must be > 0, got %s", c.DropLogInterval))
	}
	if c.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("buffer.lock_timeout must be > 0, got %s", c.LockTimeout))
	}
	return errors.Join(errs...)
}
