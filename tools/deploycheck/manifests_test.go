package deploycheck

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

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
