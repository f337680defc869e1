package deploycheck

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/server"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Values the kubelet would put into the container's environment.
var downward = map[string]string{"spec.nodeName": "edge-node-17", "status.hostIP": "192.0.2.17"}

// containerEnv is the environment the DaemonSet gives the container, with
// made-up values for Secret keys and downward API fields, and nothing else:
// a ${VAR} in the config that the DaemonSet does not set fails validation.
func containerEnv(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	var out []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out = append(out, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			v, ok := downward[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no test value for fieldRef %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			out = append(out, e.Name+"="+v)
		case e.ValueFrom.SecretKeyRef != nil:
			out = append(out, e.Name+"=test-"+e.ValueFrom.SecretKeyRef.Key)
		default:
			t.Fatalf("env %s: no test value for %+v", e.Name, e.ValueFrom)
		}
	}
	return out
}

// deployedConfig returns the edgebridge.yaml of the ConfigMap the DaemonSet
// mounts, as kustomize renders it.
func deployedConfig(t *testing.T) (string, *corev1.Container, *corev1.PodSpec) {
	t.Helper()
	r, ds, c := bridge(t)
	v := volume(t, ds.Spec.Template.Spec, mountOf(t, c, "/etc/edgebridge"))
	cm := configMap(r, v.ConfigMap.Name)
	if cm == nil {
		t.Fatalf("ConfigMap %s not rendered", v.ConfigMap.Name)
	}
	data, ok := cm.Data["edgebridge.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no edgebridge.yaml", cm.Name)
	}
	return data, c, &ds.Spec.Template.Spec
}

// validate runs `edgebridge validate --config` on data with env.
func validate(t *testing.T, data string, env []string) (string, error) {
	t.Helper()
	return runOnConfig(t, "validate", data, env)
}

// runOnConfig runs `edgebridge <command> --config` on data with env and
// returns what it printed (stdout and stderr).
func runOnConfig(t *testing.T, command, data string, env []string) (string, error) {
	t.Helper()
	if binErr != nil {
		t.Fatal(binErr)
	}
	path := filepath.Join(t.TempDir(), "edgebridge.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bridgeBin, command, "--config", path)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDeployedConfigValidates(t *testing.T) {
	data, c, _ := deployedConfig(t)
	env := containerEnv(t, c)
	out, err := validate(t, data, env)
	if err != nil {
		t.Fatalf("edgebridge validate refuses the deployed config: %v\n%s", err, out)
	}
	if !strings.Contains(out, "node_id edge-node-17") || !strings.Contains(out, "mqtt ssl://192.0.2.17:8883") {
		t.Errorf("node_id and mqtt.url do not come from the downward API:\n%s", out)
	}
	t.Logf("%s", out)

	// The environment matters: without the Secret the config is refused.
	var noSecret []string
	for _, e := range env {
		if !strings.HasPrefix(e, "KAFKA_SASL_PASSWORD=") {
			noSecret = append(noSecret, e)
		}
	}
	if out, err := validate(t, data, noSecret); err == nil || !strings.Contains(out, "KAFKA_SASL_PASSWORD") {
		t.Errorf("validate without KAFKA_SASL_PASSWORD: err %v, output:\n%s\nwant a refusal naming the variable", err, out)
	}
}

// fileConfig is the part of the configuration the DaemonSet must agree with.
type fileConfig struct {
	ShutdownTimeout string `json:"shutdown_timeout"`
	Buffer          struct {
		Dir string `json:"dir"`
	} `json:"buffer"`
	Kafka struct {
		TLS struct {
			CAFile string `json:"ca_file"`
		} `json:"tls"`
	} `json:"kafka"`
	HTTP struct {
		Listen string `json:"listen"`
	} `json:"http"`
}

// The DaemonSet agrees with the configuration in effect, as the binary
// itself prints it (`edgebridge config`): the defaults of keys the file
// leaves out are the binary's, not copies of them here.
func TestDaemonSetMatchesConfig(t *testing.T) {
	data, c, pod := deployedConfig(t)
	env := containerEnv(t, c)
	out, err := runOnConfig(t, "config", data, env)
	if err != nil {
		t.Fatalf("edgebridge config: %v\n%s", err, out)
	}
	for _, e := range env { // the passwords from the Secrets are never printed
		if name, v, _ := strings.Cut(e, "="); strings.Contains(name, "PASSWORD") && strings.Contains(out, v) {
			t.Errorf("edgebridge config prints the secret %s:\n%s", e, out)
		}
	}
	var f fileConfig
	if err := yaml.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dur := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return d
	}
	// shutdown_timeout bounds the whole shutdown, mqtt.drain_timeout
	// included; after it the bridge only closes the buffer and the HTTP
	// server, which waits for open requests (server.DefaultShutdownTimeout,
	// not in the file).
	const afterShutdown = server.DefaultShutdownTimeout
	shutdown := dur(f.ShutdownTimeout)
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= shutdown+afterShutdown {
		t.Errorf("terminationGracePeriodSeconds %s must exceed shutdown_timeout %s + %s to close the buffer and the HTTP server, or SIGKILL cuts the shutdown short",
			grace, shutdown, afterShutdown)
	}
	if got := mountOf(t, c, f.Buffer.Dir); volume(t, *pod, got).HostPath == nil {
		t.Errorf("buffer.dir %s is not on the hostPath volume", f.Buffer.Dir)
	}
	if f.Kafka.TLS.CAFile != "" {
		dir := filepath.Dir(f.Kafka.TLS.CAFile)
		v := volume(t, *pod, mountOf(t, c, dir))
		if v.Secret == nil {
			t.Errorf("kafka.tls.ca_file %s is not on a Secret volume", f.Kafka.TLS.CAFile)
		}
	}
	_, port, err := net.SplitHostPort(f.HTTP.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if p := containerPort(c, "metrics"); strconv.Itoa(int(p)) != port {
		t.Errorf("http.listen port %s, container port metrics %d", port, p)
	}
}

// The probe paths of the DaemonSet answer 200 on the real binary while it
// runs with Kafka and MQTT up.
func TestProbesAnswerOnTheBinary(t *testing.T) {
	l := requireLive(t)
	_, _, c := bridge(t)
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		code, body, err := l.br.Get(p.HTTPGet.Path)
		if err != nil || code != http.StatusOK {
			t.Errorf("%s probe GET %s: %d %v %s", name, p.HTTPGet.Path, code, err, body)
		}
	}
}

// The example broker's mosquitto.conf starts a real mosquitto, with the
// DaemonSet's mount paths moved into a temporary directory and the listener
// moved to a free loopback port (startShippedMosquitto); and it has the
// settings edgebridge needs (docs/mqtt-broker.md).
func TestMosquittoConfig(t *testing.T) {
	r := build(t, "deploy/k3s/mosquitto")
	if len(r.daemonSets) != 1 || len(r.configMaps) != 1 {
		t.Fatalf("want one DaemonSet and one ConfigMap, got %d and %d", len(r.daemonSets), len(r.configMaps))
	}
	ds, cm := r.daemonSets[0], r.configMaps[0]
	c := &ds.Spec.Template.Spec.Containers[0]
	conf := cm.Data["mosquitto.conf"]

	settings := map[string]string{}
	for _, line := range strings.Split(conf, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			settings[f[0]] = f[1]
		}
	}
	if n, _ := strconv.Atoi(settings["max_inflight_messages"]); n < 1000 {
		t.Errorf("max_inflight_messages %q: edgebridge acks after an fsync and needs >= 1000", settings["max_inflight_messages"])
	}
	if settings["persistence"] != "true" {
		t.Error("persistence must be true: the bridge's session and queue must survive a broker restart")
	}
	if v := volume(t, ds.Spec.Template.Spec, mountOf(t, c, strings.TrimSuffix(settings["persistence_location"], "/"))); v.HostPath == nil {
		t.Errorf("persistence_location %s is not on a hostPath volume", settings["persistence_location"])
	}
	if n, _ := strconv.Atoi(settings["max_queued_messages"]); n < 100000 {
		t.Errorf("max_queued_messages %q is too small to ride out a bridge restart", settings["max_queued_messages"])
	}

	bin, err := devstack.MosquittoPath()
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install mosquitto): the config is not started")
	}
	_, _, out := startShippedMosquitto(t, bin, cm.Data, "mqtt.test", "edgebridge", "test-password")
	if s := out.String(); strings.Contains(strings.ToLower(s), "error") || strings.Contains(strings.ToLower(s), "deprecated") {
		t.Errorf("mosquitto complains about the config:\n%s", s)
	}
}
