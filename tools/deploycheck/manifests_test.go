package deploycheck

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
	"github.com/edgebridge/edgebridge/internal/dev/testkit"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The kustomizations an operator applies (kubectl apply -k).
var kustomizations = []string{"deploy/k3s", "deploy/k3s/monitoring", "deploy/k3s/mosquitto"}

// rendered is the output of one kustomization, decoded strictly into the
// real API types.
type rendered struct {
	daemonSets      []*appsv1.DaemonSet
	configMaps      []*corev1.ConfigMap
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	namespaces      []*corev1.Namespace
	podMonitors     []*monitoringv1.PodMonitor
	prometheusRules []*monitoringv1.PrometheusRule
}

// build runs kustomize (the library kubectl embeds) on dir and decodes each
// object strictly into its API type (unmarshalStrict).
func build(t *testing.T, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := &rendered{}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s/%s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		obj, err := decodeStrict(r.GetApiVersion(), r.GetKind(), y)
		if err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.DaemonSet:
			out.daemonSets = append(out.daemonSets, o)
		case *corev1.ConfigMap:
			out.configMaps = append(out.configMaps, o)
		case *corev1.Service:
			out.services = append(out.services, o)
		case *corev1.ServiceAccount:
			out.serviceAccounts = append(out.serviceAccounts, o)
		case *corev1.Namespace:
			out.namespaces = append(out.namespaces, o)
		case *monitoringv1.PodMonitor:
			out.podMonitors = append(out.podMonitors, o)
		case *monitoringv1.PrometheusRule:
			out.prometheusRules = append(out.prometheusRules, o)
		}
	}
	return out
}

func decodeStrict(apiVersion, kind string, y []byte) (any, error) {
	var obj any
	switch apiVersion + " " + kind {
	case "apps/v1 DaemonSet":
		obj = new(appsv1.DaemonSet)
	case "v1 ConfigMap":
		obj = new(corev1.ConfigMap)
	case "v1 Service":
		obj = new(corev1.Service)
	case "v1 ServiceAccount":
		obj = new(corev1.ServiceAccount)
	case "v1 Namespace":
		obj = new(corev1.Namespace)
	case "monitoring.coreos.com/v1 PodMonitor":
		obj = new(monitoringv1.PodMonitor)
	case "monitoring.coreos.com/v1 PrometheusRule":
		obj = new(monitoringv1.PrometheusRule)
	default:
		return nil, fmt.Errorf("no API type known for %s %s: add it to decodeStrict", apiVersion, kind)
	}
	if err := unmarshalStrict(y, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// unmarshalStrict decodes YAML into an API type the way the API server's
// strict field validation does: a duplicate key (sigs.k8s.io/yaml), an
// unknown field, a field in the wrong case ("clusterIp") or a wrong type
// (sigs.k8s.io/json, the case-sensitive decoder of apimachinery) fails.
// sigs.k8s.io/yaml's UnmarshalStrict alone goes through encoding/json, which
// matches field names case-insensitively and lets "clusterIp" through.
func unmarshalStrict(y []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("strict decode: %w", errors.Join(strict...))
	}
	return nil
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			r := build(t, dir)
			n := len(r.daemonSets) + len(r.configMaps) + len(r.services) + len(r.serviceAccounts) +
				len(r.namespaces) + len(r.podMonitors) + len(r.prometheusRules)
			if n == 0 {
				t.Fatal("the kustomization renders nothing")
			}
			for _, ds := range r.daemonSets {
				if ds.Namespace != "edgebridge" {
					t.Errorf("DaemonSet %s is in namespace %q, want edgebridge", ds.Name, ds.Namespace)
				}
			}
		})
	}
}

// bridge returns the rendered base and its edgebridge DaemonSet and container.
func bridge(t *testing.T) (*rendered, *appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	r := build(t, "deploy/k3s")
	if len(r.daemonSets) != 1 {
		t.Fatalf("deploy/k3s renders %d DaemonSets, want 1", len(r.daemonSets))
	}
	ds := r.daemonSets[0]
	for i := range ds.Spec.Template.Spec.Containers {
		if c := &ds.Spec.Template.Spec.Containers[i]; c.Name == "edgebridge" {
			return r, ds, c
		}
	}
	t.Fatal("DaemonSet edgebridge has no container named edgebridge")
	return nil, nil, nil
}

// The DaemonSet requirements of the deployment, each as an operator would
// check it with kubectl get -o yaml.
func TestDaemonSet(t *testing.T) {
	r, ds, c := bridge(t)
	pod := ds.Spec.Template.Spec

	t.Run("buffer on a hostPath that outlives the pod", func(t *testing.T) {
		v := volume(t, pod, mountOf(t, c, "/var/lib/edgebridge"))
		if v.HostPath == nil || v.HostPath.Path != "/var/lib/edgebridge" ||
			v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("buffer volume = %+v, want hostPath /var/lib/edgebridge DirectoryOrCreate", v.VolumeSource)
		}
	})
	t.Run("NODE_NAME from the downward API", func(t *testing.T) {
		e := env(c, "NODE_NAME")
		if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
			t.Errorf("NODE_NAME = %+v, want fieldRef spec.nodeName", e)
		}
	})
	t.Run("probes", func(t *testing.T) {
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s probe: want an httpGet probe, got %+v", name, p)
			}
		}
		if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("liveness probe path %q, want /healthz (a Kafka outage must not restart the pod)", c.LivenessProbe.HTTPGet.Path)
		}
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("readiness probe path %q, want /readyz", c.ReadinessProbe.HTTPGet.Path)
		}
	})
	t.Run("container security", func(t *testing.T) {
		sc := c.SecurityContext
		psc := pod.SecurityContext
		if sc == nil || psc == nil {
			t.Fatal("want pod and container securityContext")
		}
		if !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("container must run as a non-root uid: runAsNonRoot %v runAsUser %v", sc.RunAsNonRoot, sc.RunAsUser)
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			t.Error("readOnlyRootFilesystem must be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("capabilities = %+v, want drop [ALL] and nothing added", sc.Capabilities)
		}
		if !isTrue(psc.RunAsNonRoot) {
			t.Error("pod securityContext.runAsNonRoot must be true")
		}
		for _, s := range []*corev1.SeccompProfile{sc.SeccompProfile, psc.SeccompProfile} {
			if s == nil || s.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccompProfile = %+v, want RuntimeDefault", s)
			}
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Error("the bridge calls no Kubernetes API: automountServiceAccountToken must be false")
		}
	})
	t.Run("rolling update that never runs two bridges on one buffer", func(t *testing.T) {
		u := ds.Spec.UpdateStrategy
		if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil {
			t.Fatalf("updateStrategy = %+v, want RollingUpdate with maxUnavailable", u)
		}
		if s := u.RollingUpdate.MaxSurge; s != nil && s.String() != "0" {
			t.Errorf("maxSurge = %s: a surged pod would wait on the old pod's bbolt lock", s)
		}
	})
	t.Run("tolerates edge taints", func(t *testing.T) {
		var edge bool
		for _, tol := range pod.Tolerations {
			if strings.Contains(tol.Key, "edge") && tol.Operator == corev1.TolerationOpExists {
				edge = true
			}
		}
		if !edge {
			t.Errorf("tolerations %+v: want the edge node taints tolerated", pod.Tolerations)
		}
	})
	t.Run("resources", func(t *testing.T) {
		req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
		if req.IsZero() || lim.IsZero() || lim.Cmp(*req) < 0 {
			t.Errorf("memory request %s, limit %s: want both, limit >= request", req, lim)
		}
		if c.Resources.Requests.Cpu().IsZero() {
			t.Error("want a CPU request")
		}
	})
	t.Run("config from the generated ConfigMap", func(t *testing.T) {
		v := volume(t, pod, mountOf(t, c, "/etc/edgebridge"))
		if v.ConfigMap == nil || configMap(r, v.ConfigMap.Name) == nil {
			t.Errorf("config volume %+v does not name a ConfigMap of the kustomization", v.VolumeSource)
		}
		if !strings.Contains(strings.Join(c.Args, " "), "--config /etc/edgebridge/edgebridge.yaml") {
			t.Errorf("args %q do not point at /etc/edgebridge/edgebridge.yaml", c.Args)
		}
	})
	t.Run("Kafka SASL and TLS from a Secret", func(t *testing.T) {
		var fromSecret bool
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "edgebridge-kafka" {
				fromSecret = true
			}
		}
		if !fromSecret {
			t.Error("no env var reads Secret edgebridge-kafka")
		}
		var tlsVol bool
		for _, v := range pod.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "edgebridge-kafka" {
				tlsVol = true
			}
		}
		if !tlsVol {
			t.Error("no volume mounts Secret edgebridge-kafka (kafka.tls.ca_file)")
		}
	})
	t.Run("scrape annotations and PodMonitor agree with the port", func(t *testing.T) {
		a := ds.Spec.Template.Annotations
		port := containerPort(c, "metrics")
		if port == 0 {
			t.Fatal("no container port named metrics")
		}
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != fmt.Sprint(port) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("scrape annotations %v do not match port %d /metrics", a, port)
		}
		m := build(t, "deploy/k3s/monitoring")
		if len(m.podMonitors) != 1 {
			t.Fatalf("want 1 PodMonitor, got %d", len(m.podMonitors))
		}
		pm := m.podMonitors[0]
		for k, v := range pm.Spec.Selector.MatchLabels {
			if ds.Spec.Template.Labels[k] != v {
				t.Errorf("PodMonitor selects %s=%s, the pods have %q", k, v, ds.Spec.Template.Labels[k])
			}
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			if ep.Port == nil || *ep.Port != "metrics" {
				t.Errorf("PodMonitor endpoint port %v, want metrics", ep.Port)
			}
		}
		if len(r.services) != 1 || r.services[0].Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("want one headless Service")
		}
	})
}

func isTrue(b *bool) bool { return b != nil && *b }

func env(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func mountOf(t *testing.T, c *corev1.Container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m.Name
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return ""
}

func volume(t *testing.T, pod corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

func configMap(r *rendered, name string) *corev1.ConfigMap {
	for _, cm := range r.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func containerPort(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// mosquittoListener is one `listener` line of a mosquitto.conf and the
// lines after it, up to the next listener.
type mosquittoListener struct {
	port, bind string // bind: an address, or with port 0 a unix socket path
	settings   map[string]string
}

// tls reports whether the listener speaks only TLS (certificate or PSK).
func (l mosquittoListener) tls() bool {
	return l.settings["certfile"] != "" && l.settings["keyfile"] != "" || l.settings["psk_hint"] != ""
}

// local reports whether only the node itself can reach the listener: a
// loopback address or a unix socket.
func (l mosquittoListener) local() bool {
	if l.port == "0" && strings.HasPrefix(l.bind, "/") {
		return true
	}
	ip := net.ParseIP(l.bind)
	return l.bind == "localhost" || ip != nil && ip.IsLoopback()
}

// parseMosquittoConf returns every setting (the first of a name wins) and
// the listeners, in order.
func parseMosquittoConf(conf string) (map[string]string, []mosquittoListener) {
	all := map[string]string{}
	var ls []mosquittoListener
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		value := strings.Join(f[1:], " ")
		if f[0] == "listener" {
			l := mosquittoListener{settings: map[string]string{}}
			if len(f) > 1 {
				l.port = f[1]
			}
			if len(f) > 2 {
				l.bind = f[2]
			}
			ls = append(ls, l)
			continue
		}
		if _, ok := all[f[0]]; !ok {
			all[f[0]] = value
		}
		if len(ls) > 0 {
			ls[len(ls)-1].settings[f[0]] = value
		}
	}
	return all, ls
}

// bridgeMQTT is the mqtt section of the deployed edgebridge.yaml.
type bridgeMQTT struct {
	MQTT struct {
		URL string `json:"url"`
		TLS struct {
			CAFile     string `json:"ca_file"`
			ServerName string `json:"server_name"`
		} `json:"tls"`
	} `json:"mqtt"`
}

// Finding 18 of the fault model: devices and the bridge log in to the node
// broker with passwords, so the shipped broker has no listener in clear
// that anything off the node can reach, and the bridge talks TLS to it.
// Checked on the manifests, then on a real mosquitto running the shipped
// mosquitto.conf (TestMosquittoConfig checks its other settings).
func TestNodeBrokerTakesNoPasswordInClear(t *testing.T) {
	r := build(t, "deploy/k3s/mosquitto")
	if len(r.daemonSets) != 1 || len(r.configMaps) != 1 {
		t.Fatalf("want one DaemonSet and one ConfigMap, got %d and %d", len(r.daemonSets), len(r.configMaps))
	}
	ds, cm := r.daemonSets[0], r.configMaps[0]
	pod := ds.Spec.Template.Spec
	c := &pod.Containers[0]
	conf := cm.Data["mosquitto.conf"]
	all, listeners := parseMosquittoConf(conf)
	passwords := all["password_file"] != "" || all["plugin"] != "" || all["auth_plugin"] != ""
	if !passwords {
		t.Fatal("mosquitto.conf sets no password_file: nothing below would be at stake")
	}
	if len(listeners) == 0 {
		t.Fatal("mosquitto.conf has no listener")
	}

	t.Run("no listener in clear off the node", func(t *testing.T) {
		for _, l := range listeners {
			if !l.tls() && !l.local() {
				t.Errorf("listener %s takes passwords in clear and is reachable from the node's network: give it certfile and keyfile, or bind it to 127.0.0.1 or a unix socket", strings.TrimSpace(l.port+" "+l.bind))
			}
			if l.settings["protocol"] == "websockets" && !l.tls() && !l.local() {
				t.Errorf("listener %s: websockets in clear", l.port)
			}
		}
		if pod.HostNetwork {
			t.Error("hostNetwork: the broker's loopback would be the node's, and a pod port its LAN port")
		}
	})
	t.Run("every node port is a TLS listener", func(t *testing.T) {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			i := slices.IndexFunc(listeners, func(l mosquittoListener) bool { return l.port == strconv.Itoa(int(p.ContainerPort)) })
			switch {
			case i < 0:
				t.Errorf("hostPort %d: no mosquitto listener on container port %d", p.HostPort, p.ContainerPort)
			case !listeners[i].tls():
				t.Errorf("hostPort %d reaches listener %s, which is not TLS", p.HostPort, listeners[i].port)
			}
		}
	})
	t.Run("certificate and key from a Secret", func(t *testing.T) {
		for _, l := range listeners {
			for _, k := range []string{"certfile", "keyfile"} {
				if p := l.settings[k]; p != "" {
					if v := volume(t, pod, mountOf(t, c, filepath.Dir(p))); v.Secret == nil {
						t.Errorf("listener %s: %s %s is not on a Secret volume", l.port, k, p)
					}
				}
			}
		}
	})

	data, bc, bpod := deployedConfig(t)
	var cfg bridgeMQTT
	if err := yaml.Unmarshal([]byte(data), &cfg); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range containerEnv(t, bc) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	u, err := url.Parse(os.Expand(cfg.MQTT.URL, func(k string) string { return env[k] }))
	if err != nil {
		t.Fatalf("mqtt.url %q: %v", cfg.MQTT.URL, err)
	}
	t.Run("the bridge connects with TLS", func(t *testing.T) {
		if !slices.Contains([]string{"ssl", "tls", "mqtts"}, u.Scheme) {
			t.Fatalf("mqtt.url %s: the bridge sends its password in clear; use ssl://", cfg.MQTT.URL)
		}
		i := slices.IndexFunc(listeners, func(l mosquittoListener) bool { return l.port == u.Port() })
		if i < 0 || !listeners[i].tls() {
			t.Errorf("mqtt.url port %s is no TLS listener of the shipped mosquitto.conf", u.Port())
		}
		if cfg.MQTT.TLS.CAFile == "" {
			t.Fatal("mqtt.tls.ca_file is not set: the bridge would trust the system roots for a private broker certificate")
		}
		if v := volume(t, *bpod, mountOf(t, bc, filepath.Dir(cfg.MQTT.TLS.CAFile))); v.Secret == nil {
			t.Errorf("mqtt.tls.ca_file %s is not on a Secret volume", cfg.MQTT.TLS.CAFile)
		}
		if net.ParseIP(u.Hostname()) != nil && cfg.MQTT.TLS.ServerName == "" {
			t.Errorf("mqtt.url names the broker by the node address %s: one certificate for every node needs mqtt.tls.server_name", u.Hostname())
		}
	})

	bin, err := devstack.MosquittoPath()
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install mosquitto): the config is not started")
	}
	t.Run("mosquitto with the shipped config", func(t *testing.T) {
		const user, password = "edgebridge", "test-password"
		addr, roots, _ := startShippedMosquitto(t, bin, cm.Data, cfg.MQTT.TLS.ServerName, user, password)
		tlsCfg := &tls.Config{RootCAs: roots, ServerName: cfg.MQTT.TLS.ServerName}
		tests := []struct {
			name     string
			tls      *tls.Config
			password string
			want     string // the CONNACK return code, or "no CONNACK"
		}{
			{"in clear", nil, password, "no CONNACK"},
			{"TLS, the bridge's password", tlsCfg, password, "0"},
			{"TLS, a wrong password", tlsCfg, "wrong", "5"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := mqttConnect(t, addr, tt.tls, user, tt.password); got != tt.want {
					t.Errorf("CONNECT as %s: %s, want %s", user, got, tt.want)
				}
			})
		}
	})
}

// startShippedMosquitto runs mosquitto on the shipped config, its paths
// moved into a temporary directory and its one listener to a loopback
// port, with a certificate for serverName from a new CA and a password
// file holding user. It returns the listener's address, the CA, and what
// mosquitto writes (it logs to stdout).
func startShippedMosquitto(t *testing.T, bin string, files map[string]string, serverName, user, password string) (string, *x509.CertPool, *testkit.Buffer) {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"config", "secret", "tls", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, "config", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	roots := writeServerCert(t, filepath.Join(dir, "tls"), serverName)
	if err := os.WriteFile(filepath.Join(dir, "secret", "passwd"), []byte(mosquittoPasswd(t, user, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := files["mosquitto.conf"]
	_, ls := parseMosquittoConf(conf)
	if len(ls) != 1 {
		t.Fatalf("the shipped mosquitto.conf has %d listeners; this test moves one", len(ls))
	}
	conf = regexp.MustCompile(`(?m)^listener .*$`).ReplaceAllString(conf, "listener "+strconv.Itoa(port)+" 127.0.0.1")
	conf = strings.ReplaceAll(conf, "/mosquitto/", dir+"/")
	if u, err := osuser.Current(); err == nil {
		conf += "\nuser " + u.Username + "\n" // as root mosquitto would switch to "mosquitto"
	}
	path := filepath.Join(dir, "config", "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &testkit.Buffer{} // read while mosquitto still writes to it
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once cmd has exited and waitErr is set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	if err := devstack.WaitListening(addr, 10*time.Second, exited); err != nil {
		select {
		case <-exited:
			t.Fatalf("mosquitto refused the config: %v\n%s", waitErr, out.String())
		default:
			t.Fatalf("mosquitto not listening: %v\n%s", err, out.String())
		}
	}
	return addr, roots, out
}

// writeServerCert writes tls.crt and tls.key into dir, the names of a
// kubernetes.io/tls Secret: a certificate for name signed by a new CA,
// which it returns.
func writeServerCert(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	p := testkit.NewPKI(t, name)
	for file, from := range map[string]string{"tls.crt": p.ServerCertFile, "tls.key": p.ServerKeyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p.CAPool
}

// mosquittoPasswd returns a password file line in mosquitto 2's format:
// $7$, PBKDF2-SHA512, iterations, salt and hash in base64.
func mosquittoPasswd(t *testing.T, user, password string) string {
	t.Helper()
	const iterations = 101
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	hash, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s:$7$%d$%s$%s\n", user, iterations, b64(salt), b64(hash))
}

// mqttConnect sends an MQTT 3.1.1 CONNECT with user and password to addr,
// over TLS when cfg is set, and returns the CONNACK's return code, or "no
// CONNACK" when the broker closes the connection or answers something else.
func mqttConnect(t *testing.T, addr string, cfg *tls.Config, user, password string) string {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	var err error
	if cfg != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2, 0, 30) // level 4; username, password, clean session; keepalive 30s
	body = append(body, str("deploycheck")...)
	body = append(body, str(user)...)
	body = append(body, str(password)...)
	if len(body) > 127 {
		t.Fatal("CONNECT too long for a one-byte remaining length")
	}
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		return "no CONNACK"
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil || ack[0] != 0x20 || ack[1] != 2 {
		return "no CONNACK"
	}
	return strconv.Itoa(int(ack[3]))
}
