package kafka

import (
	"encoding/base64"
	"testing"
)

// A cluster ID starting with '-' made kafka-storage format fail in CI: its
// argument parser read the ID as an option. Among 10,000 random IDs about 156
// would start with one.
func TestNewClusterIDIsAnArgument(t *testing.T) {
	for range 10_000 {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if id[0] == '-' {
			t.Fatalf("cluster ID %q starts with '-': kafka-storage reads it as an option", id)
		}
		raw, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(raw) != 16 {
			t.Fatalf("cluster ID %q is not 16 bytes of unpadded base64url (%d bytes, %v)", id, len(raw), err)
		}
	}
}
