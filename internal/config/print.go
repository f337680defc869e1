package config

import (
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Redacted stands for an inline secret in what WriteYAML writes.
const Redacted = "<redacted>"

// WriteYAML writes c as a config file (`edgebridge config`): every key with
// the value in effect, defaults included, each under a comment that says
// what it does. Parse reads it back to the same Config, but for secrets,
// which are never written: one read from a file is written as its
// *_file path, one written inline as Redacted.
func (c *Config) WriteYAML(w io.Writer) error {
	return writeFile(w, c.file(), "the configuration in effect: every key, with its default where the file has none")
}

// WriteDefaults writes the defaults as a config file. node_id, the
// client ids and http.pprof_listen are empty: their defaults are derived
// when a file is read.
func WriteDefaults(w io.Writer) error {
	return writeFile(w, defaultFile(), "the defaults of every key; kafka.brokers and routes have none and must be set")
}

// file is c as the file that gives it.
func (c *Config) file() file {
	f := file{NodeID: c.NodeID, ShutdownTimeout: c.ShutdownTimeout}
	copyByName(reflect.ValueOf(&f.MQTT).Elem(), reflect.ValueOf(c.MQTT), "mqtt", nil)
	copyByName(reflect.ValueOf(&f.Routes).Elem(), reflect.ValueOf(c.MQTT.Routes), "routes", nil)
	copyByName(reflect.ValueOf(&f.Buffer).Elem(), reflect.ValueOf(c.Buffer), "buffer", nil)
	copyByName(reflect.ValueOf(&f.Kafka).Elem(), reflect.ValueOf(c.Forward), "kafka", nil)
	copyByName(reflect.ValueOf(&f.HTTP).Elem(), reflect.ValueOf(c.HTTP), "http", nil)
	f.Log = logFile{Level: strings.ToLower(c.Log.Level.String()), Format: c.Log.Format}
	f.MQTT.Password, f.MQTT.PasswordFile = redact(c.src.MQTT.Password, c.src.MQTT.PasswordFile)
	f.Kafka.SASL.Password, f.Kafka.SASL.PasswordFile = redact(c.src.Kafka.SASL.Password, c.src.Kafka.SASL.PasswordFile)
	f.Kafka.SASL.AllowPlaintext = c.src.Kafka.SASL.AllowPlaintext
	return f
}

func redact(password, file string) (string, string) {
	switch {
	case file != "":
		return "", file
	case password != "":
		return Redacted, ""
	}
	return "", ""
}

func writeFile(w io.Writer, f file, title string) error {
	doc := &yaml.Node{Kind: yaml.DocumentNode, HeadComment: "edgebridge: " + title + ".", Content: []*yaml.Node{toNode(reflect.ValueOf(f), "", nil)}}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// toNode is v as YAML, each key under its doc comment. leaf, when set, is
// given the text of every scalar by its key.
func toNode(v reflect.Value, key string, leaf func(key, value string)) *yaml.Node {
	scalar := func(tag, s string) *yaml.Node {
		if leaf != nil {
			leaf(key, s)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s}
	}
	switch t := v.Type(); {
	case t == durationType:
		return scalar("!!str", formatDuration(time.Duration(v.Int())))
	case t == byteSizeType:
		if b := ByteSize(v.Int()); b > 0 && b%1024 == 0 {
			return scalar("!!str", b.String())
		}
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case t.Kind() == reflect.String:
		// A "${" in a value is a literal one: the file spells it "$${".
		return scalar("!!str", strings.ReplaceAll(v.String(), "${", "$${"))
	case t.Kind() == reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case t.Kind() == reflect.Int:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case t.Kind() == reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if t.Elem().Kind() != reflect.Struct || v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		for i := range v.Len() {
			n.Content = append(n.Content, toNode(v.Index(i), key+"[]", leaf))
		}
		return n
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: name, HeadComment: sf.Tag.Get("doc")}
		n.Content = append(n.Content, k, toNode(v.Field(i), join(key, name), leaf))
	}
	return n
}

// formatDuration is d as a file would write it: 1m, not 1m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
