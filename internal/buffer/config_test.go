package buffer

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "buffer.dir is required"},
		{Config{Dir: "d", WhenFull: "drop_newest"}, `buffer.when_full must be "block" or "drop_oldest"`},
		{Config{Dir: "d", MaxBytes: -1}, "buffer.max_bytes must be > 0"},
		{Config{Dir: "d", SegmentBytes: 10}, "buffer.segment_bytes must be >= 65536"},
		{Config{Dir: "d", MaxBytes: 1 << 20, SegmentBytes: 2 << 20}, "buffer.segment_bytes (2097152) must be <= buffer.max_bytes (1048576)"},
		{Config{Dir: "d", MaxAge: -time.Second}, "buffer.max_age must be >= 0"},
		{Config{Dir: "d", MinFreeDisk: -2}, "buffer.min_free_disk must be >= 0"},
		{Config{Dir: "d"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
