package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// ByteSize is a size in bytes, written in the file as a plain integer or with
// a unit: "4GiB", "512MiB", "64KiB" (powers of 1024) or "1GB", "500MB", "10kB"
// (powers of 1000). Units are case-insensitive; fractions are allowed
// ("1.5GiB").
type ByteSize int64

var sizeUnits = map[string]float64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseByteSize parses a size as the config file writes it (see ByteSize).
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	sign := int64(1)
	if rest, ok := strings.CutPrefix(t, "-"); ok {
		sign, t = -1, rest // only meaningful where a key documents it (min_free_disk: -1)
	}
	i := strings.IndexFunc(t, func(r rune) bool { return !(unicode.IsDigit(r) || r == '.') })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: use bytes or a unit, e.g. 512MiB, 4GiB, 1GB", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err == nil && n <= math.MaxInt64/int64(mult) {
			return ByteSize(sign * n * int64(mult)), nil
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: use bytes or a unit, e.g. 512MiB, 4GiB, 1GB", s)
	}
	return ByteSize(float64(sign) * f * mult), nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.n, u.name)
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}
