package forward

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Batches compressed by the bridge's encoder decode to what was produced,
// from several broker connections at once; a broker too old for zstd gets
// them uncompressed rather than in a codec it cannot read.
func TestZstdCompressor(t *testing.T) {
	c, err := newZstdCompressor()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				var src []byte
				for j := range 200 + 37*i {
					src = fmt.Appendf(src, `{"device":"dev-%d","reading":%d}`, g, j)
				}
				out, codec := c.Compress(new(bytes.Buffer), src)
				if codec != kgo.CodecZstd {
					t.Errorf("codec %v, want zstd", codec)
					return
				}
				if len(out) >= len(src) {
					t.Errorf("%d bytes of JSON compressed to %d", len(src), len(out))
				}
				got, err := dec.DecodeAll(out, nil)
				if err != nil || !bytes.Equal(got, src) {
					t.Errorf("round trip of %d bytes: %v, equal %v", len(src), err, bytes.Equal(got, src))
					return
				}
			}
		})
	}
	wg.Wait()

	src := []byte("old broker")
	if out, codec := c.Compress(new(bytes.Buffer), src, kgo.CompressDisableZstd); codec != kgo.CodecNone || !bytes.Equal(out, src) {
		t.Errorf("without zstd: codec %v, %q; want the batch uncompressed", codec, out)
	}
}
