package buffer

import (
	"context"
	"testing"
)

// A registry that already holds the buffer's metrics makes Open fail with
// an error, not a panic, and the failed Open leaves nothing behind: the
// first queue's metrics stay registered and the directory opens again. A
// nil logger and a nil registerer are accepted: the queue works, silent
// and unexported.
func TestOpenRegistry(t *testing.T) {
	_, reg := openTest(t, Config{})

	dir := t.TempDir()
	if q, err := Open(Config{Dir: dir, MinFreeDisk: -1}, nil, reg); err == nil {
		q.Close()
		t.Fatal("a second queue registered its metrics on the same registry")
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fams {
		found = found || f.GetName() == "edgebridge_buffer_records"
	}
	if !found {
		t.Fatal("the failed Open unregistered the first queue's metrics")
	}

	q, err := Open(Config{Dir: dir, MinFreeDisk: -1}, nil, nil)
	if err != nil {
		t.Fatalf("open after a refused registration: %v", err)
	}
	defer q.Close()
	if err := q.Append(context.Background(), []Record{{Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Records != 1 {
		t.Fatalf("%d records after one append without a registry", st.Records)
	}
}
