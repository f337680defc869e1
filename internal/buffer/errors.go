package buffer

import "errors"

var (
	// ErrFull is returned by Append when the buffer has no room (max_bytes,
	// the min_free_disk floor, or a full disk) under the block policy and
	// the caller's context ended before room was made. Nothing of the
	// failed call was stored.
	ErrFull = errors.New("buffer full")

	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("buffer closed")

	// ErrCorrupt marks a stored record or file that failed its checks.
	ErrCorrupt = errors.New("buffer data corrupt")

	// ErrTooLarge is returned by Append for a call whose records alone are
	// larger than max_bytes: no amount of waiting or dropping makes room.
	ErrTooLarge = errors.New("records larger than the buffer")

	// ErrNotFound is returned by DeadLetter and Requeue for a sequence the
	// buffer does not hold.
	ErrNotFound = errors.New("record not found")
)
