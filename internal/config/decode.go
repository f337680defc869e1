package config

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder fills a Go value from a YAML node tree. It exists instead of
// yaml.Decoder.KnownFields because edgebridge expands ${ENV} inside scalar
// values before they are typed, and every error must name the key path and
// the line: "edgebridge.yaml:7: kafka.bootstrap.servers: unknown key".
type decoder struct {
	file      string
	lookupEnv func(string) (string, bool)
	root      reflect.Type // for suggesting a key that exists elsewhere

	// The node tree is a graph once aliases are followed: an alias may
	// point at a node that contains it (`a: &a {<<: *a}`), and aliases of
	// aliases may multiply a small file into billions of values ("billion
	// laughs"). open holds the mappings and lists being decoded, so that an
	// alias to one of them is refused instead of recursing until the stack
	// overflows; viaAlias counts the nodes decoded through an alias, so the
	// expansion stops at maxAliasNodes instead of taking the CPU and memory.
	open     map[*yaml.Node]bool
	aliases  int // aliases being followed
	viaAlias int
}

// maxAliasNodes bounds the nodes decoded through aliases. An anchor shared
// by every route of a large file expands to a few thousand nodes; past this
// the file is expanding itself.
const maxAliasNodes = 10000

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
)

// misspellings maps keys people bring from other tools to ours.
var misspellings = map[string]string{
	"bootstrap.servers": "brokers",
	"bootstrap_servers": "brokers",
	"bootstrap-servers": "brokers",
	"servers":           "brokers",
	"broker":            "brokers",
	"addr":              "listen",
	"address":           "listen",
	"topic":             "kafka_topic",
	"level_name":        "level",
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		return d.decodeAlias(n, v, path)
	}
	if d.aliases > 0 {
		if d.viaAlias++; d.viaAlias > maxAliasNodes {
			return d.errf(n, path, "aliases expand to more than %d values: the file multiplies itself through its anchors", maxAliasNodes)
		}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "key:" with no value keeps the default
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		if d.open == nil {
			d.open = map[*yaml.Node]bool{}
		}
		d.open[n] = true
		defer delete(d.open, n)
	}
	t := v.Type()
	switch {
	case t.Kind() == reflect.Struct:
		return d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errf(n, path, "expected a list, got %s", describe(n))
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, el := range n.Content {
			if err := d.decode(el, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errf(n, path, "expected a single value, got %s", describe(n))
	}
	s, err := expand(n.Value, d.lookupEnv)
	if err != nil {
		return &Error{File: d.file, Line: n.Line, Key: path, Msg: err.Error(), Err: errOr(err, ErrInvalid)}
	}
	switch {
	case t == durationType:
		dur, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return d.errf(n, path, "invalid duration %q: use a number with a unit, e.g. 500ms, 5s, 2m", s)
		}
		v.SetInt(int64(dur))
	case t == byteSizeType:
		size, err := ParseByteSize(s)
		if err != nil {
			return d.errf(n, path, "%v", err)
		}
		v.SetInt(int64(size))
	case t.Kind() == reflect.String:
		v.SetString(s)
	case t.Kind() == reflect.Bool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return d.errf(n, path, "expected true or false, got %q", s)
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return d.errf(n, path, "expected an integer, got %q", s)
		}
		v.SetInt(i)
	default:
		return fmt.Errorf("config: field %s has unsupported type %s", path, t) // a bug in this package
	}
	return nil
}

// decodeAlias decodes the node an alias points at, unless that node is
// being decoded already: then the alias is inside its own anchor.
func (d *decoder) decodeAlias(n *yaml.Node, v reflect.Value, path string) error {
	if n.Alias == nil {
		return d.errf(n, path, "alias *%s has no anchor", n.Value)
	}
	if d.open[n.Alias] {
		return d.errf(n, path, "alias *%s refers to a node that contains it (its anchor &%s is at line %d)", n.Value, n.Value, n.Alias.Line)
	}
	d.aliases++
	defer func() { d.aliases-- }()
	return d.decode(n.Alias, v, path)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errf(n, path, "expected a mapping of keys, got %s", describe(n))
	}
	t := v.Type()
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if first, dup := seen[k.Value]; dup {
			return d.errf(k, join(path, k.Value), "key already defined at line %d", first)
		}
		seen[k.Value] = k.Line
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			if err := d.decode(val, v, path); err != nil {
				return err
			}
			continue
		}
		field, ok := fieldByKey(t, k.Value)
		if !ok {
			return &Error{File: d.file, Line: k.Line, Key: join(path, k.Value), Msg: d.unknownKeyMsg(t, path, k.Value), Err: ErrUnknownKey}
		}
		if err := d.decode(val, v.FieldByIndex(field.Index), join(path, k.Value)); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) unknownKeyMsg(t reflect.Type, path, key string) string {
	keys := keysOf(t)
	msg := "unknown key"
	if alt, ok := misspellings[strings.ToLower(key)]; ok && slices.Contains(keys, alt) {
		msg += fmt.Sprintf(" (did you mean %q?)", alt)
	} else if best := closest(key, keys); best != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	} else if elsewhere := findKey(d.root, "", key); elsewhere != "" && elsewhere != join(path, key) {
		msg += fmt.Sprintf(" here (%s is a key)", elsewhere)
	}
	where := "at the top level"
	if path != "" {
		where = "under " + path
	}
	return fmt.Sprintf("%s; keys %s: %s", msg, where, strings.Join(keys, ", "))
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...), Err: ErrInvalid}
}

func errOr(err, def error) error {
	if e, ok := err.(interface{ Unwrap() error }); ok && e.Unwrap() != nil {
		return e.Unwrap()
	}
	return def
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key && name != "" && name != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func keysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	sort.Strings(keys)
	return keys
}

// findKey returns the path of the first key named key anywhere in t.
func findKey(t reflect.Type, path, key string) string {
	for t.Kind() == reflect.Slice {
		t = t.Elem()
		path += "[]"
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return ""
	}
	if _, ok := fieldByKey(t, key); ok {
		return join(path, key)
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if p := findKey(f.Type, join(path, name), key); p != "" {
			return p
		}
	}
	return ""
}

// closest returns the key within edit distance 2 of key, if exactly one is.
func closest(key string, keys []string) string {
	best, bestDist, ties := "", 3, 0
	for _, k := range keys {
		switch d := editDistance(strings.ToLower(key), k); {
		case d < bestDist:
			best, bestDist, ties = k, d, 0
		case d == bestDist:
			ties++
		}
	}
	if ties > 0 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}
