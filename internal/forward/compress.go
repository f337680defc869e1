package forward

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// zstdCompressor compresses produce batches with one long-lived zstd
// encoder sized for a small node.
//
// Why not franz-go's own: it keeps zstd encoders in a sync.Pool, and each
// one allocates a history buffer of at least 1 MiB whatever the window.
// Every garbage collection empties the pool, so at full rate the bridge
// kept building encoders anew: about a quarter of its live heap, and with
// GOGC twice that in resident memory (make bench, docs/performance.md).
// This one keeps up to zstdEncoders block encoders for the life of the
// client, each with the lower-memory history; the settings are otherwise
// franz-go's (64 KiB window, no empty frames, fastest level).
type zstdCompressor struct {
	enc *zstd.Encoder
}

// zstdEncoders bounds concurrent compressions: one per broker connection
// compressing at the same moment, at most one per CPU.
var zstdEncoders = min(runtime.GOMAXPROCS(0), 4)

func newZstdCompressor() (*zstdCompressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(64<<10),
		zstd.WithEncoderConcurrency(zstdEncoders),
		zstd.WithZeroFrames(true),
		zstd.WithLowerEncoderMem(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &zstdCompressor{enc: enc}, nil
}

// Compress implements kgo.Compressor. A broker too old for zstd (produce
// version < 7) gets the batch uncompressed, as franz-go does when no other
// codec is configured.
func (c *zstdCompressor) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	if slices.Contains(flags, kgo.CompressDisableZstd) {
		return src, kgo.CodecNone
	}
	// As franz-go does: compress into dst's own memory, which it pools.
	if n := c.enc.MaxEncodedSize(len(src)); n > dst.Cap() {
		dst.Grow(n)
	}
	return c.enc.EncodeAll(src, dst.Bytes()), kgo.CodecZstd
}
