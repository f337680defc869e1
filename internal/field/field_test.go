package field

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var errSentinel = errors.New("invalid thing config")

// A List's errors each name their key, match the sentinel, and come apart
// again one problem at a time, however they were joined.
func TestListWalkKey(t *testing.T) {
	l := NewList(errSentinel)
	l.Addf("thing.size", "%s: %d is above the maximum %d", 9, 8)
	l.Add(nil)
	l.AddAll(errors.Join(Errorf("routes[0].filter", "%s %q: empty", ""), Wrap("thing.ca_file", errors.New("no such file"))))
	err := l.Err()
	if !errors.Is(err, errSentinel) {
		t.Errorf("%v does not match the sentinel", err)
	}
	var keys, texts []string
	Walk(err, func(e error) {
		if !errors.Is(e, errSentinel) {
			t.Errorf("%v does not match the sentinel", e)
		}
		var fe *Error
		if errors.As(e, &fe) {
			keys = append(keys, fe.Key)
		}
		texts = append(texts, e.Error())
	})
	if got := strings.Join(keys, " "); got != "thing.size routes[0].filter thing.ca_file" {
		t.Errorf("keys %s", got)
	}
	want := []string{
		"invalid thing config: thing.size: 9 is above the maximum 8",
		`invalid thing config: routes[0].filter "": empty`,
		"invalid thing config: thing.ca_file: no such file",
	}
	if strings.Join(texts, "\n") != strings.Join(want, "\n") {
		t.Errorf("texts\n%s\nwant\n%s", strings.Join(texts, "\n"), strings.Join(want, "\n"))
	}
	if (&List{}).Err() != nil {
		t.Error("an empty List has an error")
	}
}

func TestNodeID(t *testing.T) {
	for _, tt := range []struct {
		id, want string
	}{
		{"edge-01", ""},
		{strings.Repeat("n", 253), ""},
		{"", "node_id must be set"},
		{strings.Repeat("n", 254), "at most 253"},
		{"edge 01", "without spaces"},
		{"edge/+", `node_id: "edge/+" must be at most 253 printable ASCII characters`},
		{"edge#", "'#'"},
		{"\xff", "printable ASCII"},
	} {
		err := NodeID(tt.id)
		if (err == nil) != (tt.want == "") || (err != nil && (!strings.Contains(err.Error(), tt.want) || err.Key != "node_id")) {
			t.Errorf("NodeID(%q) = %v, want %q", tt.id, err, tt.want)
		}
	}
}

// Fill sets the zero fields, nested ones too, and keeps the rest.
func TestFill(t *testing.T) {
	type inner struct{ A, B time.Duration }
	type cfg struct {
		S    string
		N    int
		On   bool
		List []string
		In   inner
		priv int
	}
	def := cfg{S: "s", N: 1, On: true, List: []string{"x"}, In: inner{A: 1, B: 2}, priv: 7}
	got := Fill(cfg{N: -1, In: inner{B: 5}}, def)
	want := cfg{S: "s", N: -1, On: true, List: []string{"x"}, In: inner{A: 1, B: 5}}
	if got.S != want.S || got.N != want.N || got.On != want.On || len(got.List) != 1 || got.In != want.In || got.priv != 0 {
		t.Errorf("Fill = %+v, want %+v", got, want)
	}
}
