package config

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/buffer"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
)

// The file's keys reach the components by field name (copyByName): every
// field of a component's Config has its key, or is one parse sets itself.
func TestEveryComponentFieldHasAKey(t *testing.T) {
	for _, c := range []struct {
		name      string
		component reflect.Type
		file      reflect.Type
		byParse   []string // set by parse, not from a key of this section
	}{
		{"mqtt", reflect.TypeOf(mqtt.Config{}), reflect.TypeOf(mqttFile{}), []string{"NodeID", "Routes"}},
		{"routes[]", reflect.TypeOf(mqtt.Route{}), reflect.TypeOf(routeFile{}), nil},
		{"buffer", reflect.TypeOf(buffer.Config{}), reflect.TypeOf(bufferFile{}), nil},
		{"kafka", reflect.TypeOf(forward.Config{}), reflect.TypeOf(kafkaFile{}), []string{"NodeID", "ShutdownTimeout"}},
		{"http", reflect.TypeOf(HTTP{}), reflect.TypeOf(httpFile{}), nil},
	} {
		var walk func(comp, f reflect.Type, path string)
		walk = func(comp, f reflect.Type, path string) {
			for i := range comp.NumField() {
				cf := comp.Field(i)
				if !cf.IsExported() || (path == c.name && contains(c.byParse, cf.Name)) {
					continue
				}
				ff, ok := f.FieldByName(cf.Name)
				if !ok {
					t.Errorf("%s: field %s has no key in the file", path, cf.Name)
					continue
				}
				if cf.Type.Kind() == reflect.Struct && cf.Type != durationType {
					walk(cf.Type, ff.Type, path+"."+cf.Name)
				}
			}
		}
		walk(c.component, c.file, c.name)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// What `edgebridge config` prints reads back as the same configuration,
// and holds no secret.
func TestWriteYAMLReadsBack(t *testing.T) {
	o := withSecretFile(t, map[string]string{"KAFKA_PW": "kpw-Secret", "STATE": "/data"})
	for _, tt := range []struct{ name, yaml string }{
		{"many values", valuesFile},
		// Strings that read as other types, a literal "${", a size that is
		// no round unit, a level in capitals, a file-only key.
		{"values that need quoting", base + `
kafka:
  brokers: ["kafka-0:9092"]
  client_id: "1234"
  batch_max_bytes: 1000000
  sasl: {mechanism: plain, username: "true", password: "${KAFKA_PW}", allow_plaintext: true}
mqtt: {username: "null", password_file: mqtt-pw, keepalive: 0s}
buffer: {dir: "/data/$${x}", min_free_disk: -1}
log: {level: WARN}
`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml), o)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := cfg.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{"s3cret", "kpw-Secret"} {
				if strings.Contains(out.String(), secret) {
					t.Errorf("the output holds the secret %q:\n%s", secret, out.String())
				}
			}
			if !strings.Contains(out.String(), "password: "+Redacted) || !strings.Contains(out.String(), "password_file: "+filepath.Join(o.Dir, "mqtt-pw")) {
				t.Errorf("secrets are not shown as redacted or by their file:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "  # one connection attempt (dial, TLS, CONNACK)\n  connect_timeout: 10s\n") {
				t.Errorf("a default or its comment is missing:\n%s", out.String())
			}
			again, err := Parse(out.Bytes(), opts(nil))
			if err != nil {
				t.Fatalf("the output does not parse: %v\n%s", err, out.String())
			}
			want := *cfg
			want.Forward.SASL.Password = Redacted // written inline: redacted
			want.src, again.src = file{}, file{}
			if !reflect.DeepEqual(*again, want) {
				t.Errorf("read back:\n%+v\nwant\n%+v\nfrom\n%s", *again, want, out.String())
			}
		})
	}
}

// The defaults print as a file that decodes to the defaults.
func TestWriteDefaultsReadsBack(t *testing.T) {
	var out bytes.Buffer
	if err := WriteDefaults(&out); err != nil {
		t.Fatal(err)
	}
	f, err := decodeFile(out.Bytes(), opts(nil))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := defaultFile()
	want.Routes, want.Kafka.Brokers = []routeFile{}, []string{} // printed as []
	if !reflect.DeepEqual(f, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", f, want)
	}
}

// readmeRows returns the rows of README.md's reference table.
func readmeRows(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `") {
			rows = append(rows, line)
		}
	}
	return rows
}

// readmeRow returns the row of the reference table that names key: by
// itself, or as a sibling's row followed by the key's leaf
// ("`kafka.tls.ca_file`, `cert_file`").
func readmeRow(rows []string, key string) (string, bool) {
	parent, leaf := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		parent, leaf = key[:i+1], key[i+1:]
	}
	for _, r := range rows {
		name := strings.SplitN(r, "|", 3)[1]
		if strings.Contains(name, "`"+key+"`") || (parent != "" && strings.Contains(name, "`"+parent) && strings.Contains(name, "`"+leaf+"`")) {
			return r, true
		}
	}
	return "", false
}

// canonical is a default as a value, whether written 60s or 1m, 16MiB or
// 16777216, so that the README and the code are compared by meaning.
func canonical(s string) string {
	if d, err := time.ParseDuration(s); err == nil {
		return d.String()
	}
	if b, err := ParseByteSize(s); err == nil {
		return ByteSize(b).String()
	}
	return s
}

// The README's reference table names every key of the file, with the
// default the code has: the table is what operators read, and drift
// between the two fails here. Defaults come from what `edgebridge config`
// prints (WriteDefaults); a key without one in the code (derived, none or
// required) may say so in words.
func TestReadmeReferenceNamesEveryKey(t *testing.T) {
	rows := readmeRows(t)
	defaults := map[string]string{}
	var keys []string
	toNode(reflect.ValueOf(defaultFile()), "", func(key, value string) {
		defaults[key] = value
		keys = append(keys, key)
	})
	// Lists print no leaves when empty: walk the schema for their keys.
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
			ft := typ.Field(i).Type
			switch key := prefix + name; {
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), key+"[].")
			case ft.Kind() == reflect.Struct:
				walk(ft, key+".")
			default:
				if _, ok := defaults[key]; !ok {
					keys = append(keys, key)
				}
			}
		}
	}
	walk(reflect.TypeOf(file{}), "")

	for _, key := range keys {
		row, ok := readmeRow(rows, key)
		if !ok {
			t.Errorf("README.md's reference table does not name %s", key)
			continue
		}
		code := defaults[key]
		if code == "" || code == "[]" {
			continue // none, required or derived: the README says which in words
		}
		cell := strings.TrimSpace(strings.SplitN(row, "|", 4)[2])
		lit, _, _ := strings.Cut(strings.TrimPrefix(cell, "`"), "`")
		if !strings.HasPrefix(cell, "`") || canonical(lit) != canonical(code) {
			t.Errorf("README.md gives %s the default %s; the code's is %s", key, cell, code)
		}
	}
}

// The comment of each component field that names its key and a default
// ("yaml: mqtt.keepalive. Default 30s.") gives the default the code has:
// comments are read too, and drift there fails here as in the README. A
// comment may name several keys, each followed by its own default ("Its
// Initial is yaml: kafka.backoff.initial, default 100ms; its Max is yaml:
// kafka.backoff.max, default 10s."); a default value in a comment that
// names no key cannot be checked, and is an error: say how it is derived
// instead.
func TestFieldCommentsGiveTheDefaults(t *testing.T) {
	defaults := map[string]string{}
	toNode(reflect.ValueOf(defaultFile()), "", func(key, value string) { defaults[key] = value })
	keyRE := regexp.MustCompile(`yaml: ([a-z_.\[\]]*[a-z_])`)
	defRE := regexp.MustCompile(`(?:Default|[(,;] default) ("[^"]*"|[^\s:;,()]+?)[.;,)]?(?:\s|$)`)
	checked := 0
	for _, path := range []string{"../mqtt/config.go", "../mqtt/routes.go", "../forward/config.go", "../buffer/config.go", "config.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			st, ok := n.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fd := range st.Fields.List {
				text := strings.Join(strings.Fields(fd.Doc.Text()), " ")
				keys := keyRE.FindAllStringSubmatchIndex(text, -1)
				if len(keys) == 0 {
					if def := defRE.FindStringSubmatch(text); def != nil && strings.ContainsAny(def[1][:1], `0123456789"`) {
						t.Errorf("%s: the comment of %s gives a default (%s) but names no key to check it by", path, fd.Names, def[1])
					}
					continue
				}
				for i, k := range keys {
					end := len(text)
					if i+1 < len(keys) {
						end = keys[i+1][0]
					}
					def := defRE.FindStringSubmatch(text[k[0]:end])
					if def == nil {
						continue
					}
					key, doc := text[k[2]:k[3]], strings.Trim(def[1], `"`)
					code, ok := defaults[key]
					if !ok || code == "" {
						continue // derived or none: said in words
					}
					checked++
					if canonical(doc) != canonical(code) {
						t.Errorf("%s: the comment of %s gives the default %s; DefaultConfig's is %s", path, key, doc, code)
					}
				}
			}
			return true
		})
	}
	if checked < 35 {
		t.Errorf("only %d field comments checked: the comments' form changed?", checked)
	}
}

// forward.Config.ShutdownTimeout is no key of the file: parse derives it
// from shutdown_timeout and mqtt.drain_timeout. forward's DefaultConfig,
// for a forwarder built without this package, is what the file's defaults
// give.
func TestForwardShutdownTimeoutIsDerivedFromTheDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := (cfg.ShutdownTimeout - cfg.MQTT.DrainTimeout) / 2
	if cfg.Forward.ShutdownTimeout != want {
		t.Errorf("forward's ShutdownTimeout = %s, want (shutdown_timeout - mqtt.drain_timeout) / 2 = %s", cfg.Forward.ShutdownTimeout, want)
	}
	if def := forward.DefaultConfig().ShutdownTimeout; def != want {
		t.Errorf("forward.DefaultConfig().ShutdownTimeout = %s; the file's defaults give %s", def, want)
	}
}
