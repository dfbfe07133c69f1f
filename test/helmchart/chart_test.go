package helmchart

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/strvals"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// deployDir is the kustomize install the chart must match.
var deployDir = filepath.Join(ChartDir(), "..", "..")

// set parses helm --set syntax ("a.b=1,c={x,y}"): the same types helm infers.
func set(t *testing.T, s string) map[string]any {
	t.Helper()
	if s == "" {
		return nil
	}
	v, err := strvals.Parse(s)
	if err != nil {
		t.Fatalf("--set %q: %v", s, err)
	}
	return v
}

func render(t *testing.T, values, namespace string) *Rendered {
	t.Helper()
	r, err := Render(ChartDir(), set(t, values), "splitter", namespace)
	if err != nil {
		t.Fatalf("render --set %q: %v", values, err)
	}
	return r
}

// kustomize renders deploy/ as `kubectl kustomize deploy` does (kubectl
// embeds the same library).
func kustomize(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), deployDir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func key(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s %s/%s", u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
}

// normal is an object as JSON sees it: map order and number types do not matter.
func normal(t *testing.T, u *unstructured.Unstructured) any {
	t.Helper()
	b, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func byKey(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if _, dup := out[key(o)]; dup {
			t.Errorf("%s rendered twice", key(o))
		}
		out[key(o)] = o
	}
	return out
}

func toYAML(t *testing.T, u *unstructured.Unstructured) string {
	t.Helper()
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// With the default values, the chart (its CRDs included, as helm install
// creates them) is exactly `kubectl apply -k deploy`: the same objects, field
// for field, whatever the release's name and namespace.
func TestDefaultValuesRenderTheKustomizeInstall(t *testing.T) {
	want := byKey(t, kustomize(t))
	if len(want) < 9 {
		t.Fatalf("kustomize rendered %d objects: is deploy/ there?", len(want))
	}
	for _, rel := range []struct{ name, namespace string }{{"splitter", "default"}, {"other", "splitter-system"}} {
		t.Run(rel.name+"@"+rel.namespace, func(t *testing.T) {
			r, err := Render(ChartDir(), nil, rel.name, rel.namespace)
			if err != nil {
				t.Fatal(err)
			}
			got := byKey(t, r.Objects)
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Errorf("the chart lacks %s", k)
					continue
				}
				if !reflect.DeepEqual(normal(t, g), normal(t, w)) {
					t.Errorf("%s differs:\n--- chart\n%s--- kustomize\n%s", k, toYAML(t, g), toYAML(t, w))
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("the chart renders %s, which deploy/ lacks", k)
				}
			}
		})
	}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// The chart keeps copies of generated files (Helm cannot read outside the
// chart): they are the originals byte for byte. After `make manifests`:
// cp deploy/crds/*.yaml deploy/helm/splitter/crds/ and
// cp deploy/rbac/role.yaml deploy/helm/splitter/files/role.yaml.
func TestChartCopiesAreTheOriginals(t *testing.T) {
	crds, copies := readDir(t, filepath.Join(deployDir, "crds")), readDir(t, filepath.Join(ChartDir(), "crds"))
	if len(crds) == 0 {
		t.Fatal("no CRDs in deploy/crds")
	}
	for name, b := range crds {
		if c, ok := copies[name]; !ok {
			t.Errorf("crds/%s is missing: cp deploy/crds/%s deploy/helm/splitter/crds/", name, name)
		} else if !bytes.Equal(b, c) {
			t.Errorf("crds/%s differs from deploy/crds/%s: cp deploy/crds/*.yaml deploy/helm/splitter/crds/", name, name)
		}
	}
	for name := range copies {
		if _, ok := crds[name]; !ok {
			t.Errorf("crds/%s is not in deploy/crds any more: remove it", name)
		}
	}
	for _, f := range []struct{ orig, copy string }{
		{"rbac/role.yaml", "files/role.yaml"},
		{"prometheus/alerts.yaml", "files/alerts.yaml"},
	} {
		orig, errO := os.ReadFile(filepath.Join(deployDir, f.orig))
		cp, errC := os.ReadFile(filepath.Join(ChartDir(), f.copy))
		switch {
		case os.IsNotExist(errO) && os.IsNotExist(errC):
			t.Logf("deploy/%s does not exist (nor its copy)", f.orig)
		case errO != nil:
			t.Errorf("deploy/%s: %v (the chart has %s)", f.orig, errO, f.copy)
		case errC != nil:
			t.Errorf("%s: %v: cp deploy/%s deploy/helm/splitter/%s", f.copy, errC, f.orig, f.copy)
		case !bytes.Equal(orig, cp):
			t.Errorf("%s differs from deploy/%s: cp deploy/%s deploy/helm/splitter/%s", f.copy, f.orig, f.orig, f.copy)
		}
	}
}

// An --set value in every option, rendered into testdata/all-options.yaml.
const allOptions = "namespace.name=splitter,fullnameOverride=team-a,commonLabels.team=platform," +
	"image.repository=registry.example:5000/splitter,image.tag=v1.2.3,image.pullPolicy=IfNotPresent," +
	"imagePullSecrets[0].name=pull,replicas=3," +
	"leaderElection.leaseDuration=30s,leaderElection.renewDeadline=20s,leaderElection.retryPeriod=4s," +
	"watchNamespaces={shop,payments},rbac.scope=namespace,serviceAccount.annotations.owner=platform," +
	"prometheus.url=https://prom.example:9090,prometheus.queryTimeout=5s,scrapeInterval=30s,watchdogInterval=10s,grossCheckInterval=2s," +
	"maxConcurrentReconciles=8,logFormat=console,logLevel=debug,extraArgs={--kubeconfig=},metrics.port=9090,probes.port=9091," +
	"resources.limits.memory=512Mi,resources.requests.cpu=100m,podLabels.tier=control,podAnnotations.note=hi," +
	"nodeSelector.pool=system,tolerations[0].key=dedicated,tolerations[0].operator=Exists,priorityClassName=system-cluster-critical," +
	"serviceMonitor.enabled=true,serviceMonitor.interval=30s,serviceMonitor.scrapeTimeout=10s,serviceMonitor.labels.release=kps," +
	"prometheusRule.enabled=true,prometheusRule.labels.release=kps," +
	"prometheusRule.groups[0].name=splitter,prometheusRule.groups[0].rules[0].alert=SplitterDown," +
	"prometheusRule.groups[0].rules[0].expr=absent(up{job=\"splitter\"}),prometheusRule.groups[0].rules[0].for=5m"

func TestAllOptionsGolden(t *testing.T) {
	r := render(t, allOptions, "default")
	var b strings.Builder
	for _, o := range r.Objects {
		if o.GetKind() == "CustomResourceDefinition" {
			continue // the copies of deploy/crds
		}
		fmt.Fprintf(&b, "---\n%s", toYAML(t, o))
	}
	fmt.Fprintf(&b, "--- # NOTES.txt\n%s", r.Notes)
	golden := filepath.Join("testdata", "all-options.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./test/helmchart -run Golden -update writes it)", err)
	}
	if b.String() != string(want) {
		t.Errorf("the rendering differs from %s (go test ./test/helmchart -run Golden -update rewrites it):\n%s", golden, b.String())
	}
}

func find(r *Rendered, kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

func kinds(r *Rendered) []string {
	var out []string
	for _, o := range r.Objects {
		if o.GetKind() != "CustomResourceDefinition" {
			out = append(out, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
		}
	}
	sort.Strings(out)
	return out
}

func container(t *testing.T, r *Rendered, namespace, name string) map[string]any {
	t.Helper()
	d := find(r, "Deployment", namespace, name)
	if d == nil {
		t.Fatalf("no Deployment %s/%s in %v", namespace, name, kinds(r))
	}
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers", len(cs))
	}
	return cs[0].(map[string]any)
}

func args(t *testing.T, r *Rendered, namespace, name string) []string {
	t.Helper()
	a, _, _ := unstructured.NestedStringSlice(container(t, r, namespace, name), "args")
	return a
}

func rules(t *testing.T, o *unstructured.Unstructured) any {
	t.Helper()
	if o == nil {
		t.Fatal("no role")
	}
	return normal(t, &unstructured.Unstructured{Object: map[string]any{"rules": o.Object["rules"]}})
}

// Each option renders what it says.
func TestValuesRender(t *testing.T) {
	defaults := render(t, "", "default")
	clusterRules := rules(t, find(defaults, "ClusterRole", "", "splitter-controller"))
	for _, tc := range []struct {
		name, values, namespace string
		check                   func(t *testing.T, r *Rendered)
	}{
		{"per-namespace RBAC", "rbac.scope=namespace,watchNamespaces={shop,payments}", "default", func(t *testing.T, r *Rendered) {
			if find(r, "ClusterRole", "", "splitter-controller") != nil || find(r, "ClusterRoleBinding", "", "splitter-controller") != nil {
				t.Errorf("a cluster-wide grant with rbac.scope=namespace: %v", kinds(r))
			}
			for _, ns := range []string{"shop", "payments"} {
				if got := rules(t, find(r, "Role", ns, "splitter-controller")); !reflect.DeepEqual(got, clusterRules) {
					t.Errorf("Role in %s has rules %v, want the ClusterRole's %v", ns, got, clusterRules)
				}
				rb := find(r, "RoleBinding", ns, "splitter-controller")
				if rb == nil {
					t.Fatalf("no RoleBinding in %s: %v", ns, kinds(r))
				}
				subj, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
				if want := []any{map[string]any{"kind": "ServiceAccount", "name": "splitter-controller", "namespace": "splitter-system"}}; !reflect.DeepEqual(subj, want) {
					t.Errorf("RoleBinding in %s binds %v", ns, subj)
				}
			}
			if !slices.Contains(args(t, r, "splitter-system", "splitter-controller"), "--namespaces=shop,payments") {
				t.Errorf("args %v lack --namespaces", args(t, r, "splitter-system", "splitter-controller"))
			}
		}},
		{"watched namespaces, cluster RBAC", "watchNamespaces={shop}", "default", func(t *testing.T, r *Rendered) {
			if find(r, "ClusterRoleBinding", "", "splitter-controller") == nil || find(r, "Role", "shop", "splitter-controller") != nil {
				t.Errorf("rbac.scope=cluster renders %v", kinds(r))
			}
			if !slices.Contains(args(t, r, "splitter-system", "splitter-controller"), "--namespaces=shop") {
				t.Errorf("args %v", args(t, r, "splitter-system", "splitter-controller"))
			}
		}},
		{"no leader election", "leaderElection.enabled=false,replicas=1", "default", func(t *testing.T, r *Rendered) {
			if find(r, "Role", "splitter-system", "splitter-leader-election") != nil {
				t.Error("a leader-election Role without leader election")
			}
			a := args(t, r, "splitter-system", "splitter-controller")
			if !slices.Contains(a, "--leader-elect=false") || slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, "--leader-election-") }) {
				t.Errorf("args %v", a)
			}
		}},
		{"leader election timings", "leaderElection.leaseDuration=30s,leaderElection.renewDeadline=20s,leaderElection.retryPeriod=5s", "default", func(t *testing.T, r *Rendered) {
			a := args(t, r, "splitter-system", "splitter-controller")
			for _, want := range []string{"--leader-election-lease-duration=30s", "--leader-election-renew-deadline=20s", "--leader-election-retry-period=5s"} {
				if !slices.Contains(a, want) {
					t.Errorf("args %v lack %s", a, want)
				}
			}
		}},
		{"Prometheus, scrape interval, log", "prometheus.url=http://prom.monitoring:9090,scrapeInterval=30s,prometheus.queryTimeout=5s,watchdogInterval=10s,logLevel=debug,maxConcurrentReconciles=8", "default", func(t *testing.T, r *Rendered) {
			a := args(t, r, "splitter-system", "splitter-controller")
			for _, want := range []string{"--prometheus-url=http://prom.monitoring:9090", "--scrape-interval=30s", "--query-timeout=5s",
				"--watchdog-interval=10s", "--log-level=debug", "--max-concurrent-reconciles=8"} {
				if !slices.Contains(a, want) {
					t.Errorf("args %v lack %s", a, want)
				}
			}
		}},
		{"image by tag", "image.tag=v1.2.3,image.pullPolicy=Always", "default", func(t *testing.T, r *Rendered) {
			c := container(t, r, "splitter-system", "splitter-controller")
			if c["image"] != "ghcr.io/splitter-dev/splitter:v1.2.3" || c["imagePullPolicy"] != "Always" {
				t.Errorf("image %v, pull policy %v", c["image"], c["imagePullPolicy"])
			}
		}},
		{"image by digest", "image.tag=v1,image.digest=sha256:" + strings.Repeat("ab", 32), "default", func(t *testing.T, r *Rendered) {
			if c := container(t, r, "splitter-system", "splitter-controller"); c["image"] != "ghcr.io/splitter-dev/splitter@sha256:"+strings.Repeat("ab", 32) {
				t.Errorf("image %v", c["image"])
			}
		}},
		{"replicas and resources", "replicas=3,resources.limits.memory=1Gi,resources.requests.cpu=1", "default", func(t *testing.T, r *Rendered) {
			d := find(r, "Deployment", "splitter-system", "splitter-controller")
			n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
			res, _, _ := unstructured.NestedMap(container(t, r, "splitter-system", "splitter-controller"), "resources")
			want := map[string]any{"limits": map[string]any{"memory": "1Gi"}, "requests": map[string]any{"cpu": int64(1), "memory": "64Mi"}}
			if n != 3 || !reflect.DeepEqual(res, want) {
				t.Errorf("replicas %d, resources %v", n, res)
			}
		}},
		{"the release's namespace", "namespace.name=,namespace.create=false", "ops", func(t *testing.T, r *Rendered) {
			for _, o := range r.Objects {
				switch o.GetKind() {
				case "Namespace":
					t.Errorf("a Namespace with namespace.create=false")
				case "CustomResourceDefinition", "ClusterRole":
				case "ClusterRoleBinding":
					subj, _, _ := unstructured.NestedSlice(o.Object, "subjects")
					if len(subj) != 1 || subj[0].(map[string]any)["namespace"] != "ops" {
						t.Errorf("ClusterRoleBinding binds %v, want the ServiceAccount in ops", subj)
					}
				default:
					if o.GetNamespace() != "ops" {
						t.Errorf("%s in %q, want ops", key(o), o.GetNamespace())
					}
				}
			}
			if !slices.Contains(args(t, r, "ops", "splitter-controller"), "--leader-election-namespace=ops") {
				t.Errorf("args %v", args(t, r, "ops", "splitter-controller"))
			}
		}},
		{"another prefix", "fullnameOverride=team-a", "default", func(t *testing.T, r *Rendered) {
			for _, want := range []struct{ kind, ns, name string }{
				{"ServiceAccount", "splitter-system", "team-a-controller"}, {"ClusterRole", "", "team-a-controller"},
				{"ClusterRoleBinding", "", "team-a-controller"}, {"Role", "splitter-system", "team-a-leader-election"},
				{"RoleBinding", "splitter-system", "team-a-leader-election"}, {"Deployment", "splitter-system", "team-a-controller"},
			} {
				if find(r, want.kind, want.ns, want.name) == nil {
					t.Errorf("no %s %s/%s in %v", want.kind, want.ns, want.name, kinds(r))
				}
			}
		}},
		{"bring your own ServiceAccount and RBAC", "rbac.create=false,serviceAccount.create=false,serviceAccount.name=ops-sa", "default", func(t *testing.T, r *Rendered) {
			want := []string{"Deployment splitter-system/splitter-controller", "Namespace /splitter-system"}
			if got := kinds(r); !reflect.DeepEqual(got, want) {
				t.Errorf("rendered %v, want %v", got, want)
			}
			d := find(r, "Deployment", "splitter-system", "splitter-controller")
			if sa, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "serviceAccountName"); sa != "ops-sa" {
				t.Errorf("serviceAccountName %q", sa)
			}
		}},
		{"ServiceMonitor", "serviceMonitor.enabled=true,serviceMonitor.labels.release=kps,serviceMonitor.interval=30s", "default", func(t *testing.T, r *Rendered) {
			svc := find(r, "Service", "splitter-system", "splitter-controller-metrics")
			sm := find(r, "ServiceMonitor", "splitter-system", "splitter-controller")
			if svc == nil || sm == nil {
				t.Fatalf("rendered %v", kinds(r))
			}
			sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
			pod, _, _ := unstructured.NestedStringMap(find(r, "Deployment", "splitter-system", "splitter-controller").Object, "spec", "template", "metadata", "labels")
			for k, v := range sel {
				if pod[k] != v {
					t.Errorf("the Service selects %v, the pods have %v", sel, pod)
				}
			}
			smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			if !reflect.DeepEqual(smSel, svc.GetLabels()) || sm.GetLabels()["release"] != "kps" {
				t.Errorf("ServiceMonitor selects %v (labels %v), Service labels %v", smSel, sm.GetLabels(), svc.GetLabels())
			}
			ep, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if want := []any{map[string]any{"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": true}}; !reflect.DeepEqual(ep, want) {
				t.Errorf("endpoints %v", ep)
			}
		}},
		{"metrics Service alone", "metrics.service=true", "default", func(t *testing.T, r *Rendered) {
			if find(r, "Service", "splitter-system", "splitter-controller-metrics") == nil || find(r, "ServiceMonitor", "splitter-system", "splitter-controller") != nil {
				t.Errorf("rendered %v", kinds(r))
			}
		}},
		{"PrometheusRule from values", "prometheusRule.enabled=true,prometheusRule.groups[0].name=g,prometheusRule.groups[0].rules[0].alert=A,prometheusRule.groups[0].rules[0].expr=vector(1)", "default", func(t *testing.T, r *Rendered) {
			pr := find(r, "PrometheusRule", "splitter-system", "splitter-controller")
			if pr == nil {
				t.Fatalf("rendered %v", kinds(r))
			}
			g, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
			want := []any{map[string]any{"name": "g", "rules": []any{map[string]any{"alert": "A", "expr": "vector(1)"}}}}
			if !reflect.DeepEqual(g, want) {
				t.Errorf("groups %v", g)
			}
		}},
		{"PrometheusRule from deploy/prometheus/alerts.yaml", "prometheusRule.enabled=true,prometheusRule.labels.release=kps", "default", func(t *testing.T, r *Rendered) {
			data, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yaml"))
			if os.IsNotExist(err) {
				t.Skip("no deploy/prometheus/alerts.yaml")
			}
			var file struct {
				Groups []any `json:"groups"`
			}
			if err := yaml.Unmarshal(data, &file); err != nil || len(file.Groups) == 0 {
				t.Fatalf("deploy/prometheus/alerts.yaml: %v, %d groups", err, len(file.Groups))
			}
			pr := find(r, "PrometheusRule", "splitter-system", "splitter-controller")
			if pr == nil {
				t.Fatalf("rendered %v", kinds(r))
			}
			want := normal(t, &unstructured.Unstructured{Object: map[string]any{"groups": file.Groups}})
			got := normal(t, &unstructured.Unstructured{Object: map[string]any{"groups": pr.Object["spec"].(map[string]any)["groups"]}})
			if !reflect.DeepEqual(got, want) || pr.GetLabels()["release"] != "kps" {
				t.Errorf("PrometheusRule %s, want the groups of deploy/prometheus/alerts.yaml", toYAML(t, pr))
			}
		}},
		{"common labels", "commonLabels.team=platform,commonLabels.app\\.kubernetes\\.io/name=other", "default", func(t *testing.T, r *Rendered) {
			for _, o := range r.Objects {
				if o.GetKind() != "CustomResourceDefinition" && o.GetLabels()["team"] != "platform" {
					t.Errorf("%s labels %v", key(o), o.GetLabels())
				}
			}
			// The selector's label is the chart's: commonLabels cannot break it.
			d := find(r, "Deployment", "splitter-system", "splitter-controller")
			if d.GetLabels()["app.kubernetes.io/name"] != "splitter" {
				t.Errorf("Deployment labels %v", d.GetLabels())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.values, tc.namespace)
			tc.check(t, r)
			restricted(t, r)
			decodeStrict(t, r)
		})
	}
}

// restricted checks what the restricted Pod Security Standard needs of the
// controller's pods (the e2e test has the API server enforce it).
func restricted(t *testing.T, r *Rendered) {
	t.Helper()
	for _, d := range r.Objects {
		if d.GetKind() != "Deployment" {
			continue
		}
		pod, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec", "securityContext")
		c := container(t, r, d.GetNamespace(), d.GetName())
		sc, _ := c["securityContext"].(map[string]any)
		drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop")
		if pod["runAsNonRoot"] != true || sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false ||
			!reflect.DeepEqual(drop, []string{"ALL"}) || !reflect.DeepEqual(pod["seccompProfile"], map[string]any{"type": "RuntimeDefault"}) {
			t.Errorf("the pods are not restricted: pod %v, container %v", pod, sc)
		}
	}
}

var strictDecoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeStrict decodes every Kubernetes object into its Go type, refusing
// unknown or duplicate fields (a misindented template shows up here).
func decodeStrict(t *testing.T, r *Rendered) {
	t.Helper()
	for _, o := range r.Objects {
		if o.GroupVersionKind().Group == "monitoring.coreos.com" {
			continue // prometheus-operator's types are not a dependency
		}
		b, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := strictDecoder.Decode(b, nil, nil); err != nil {
			t.Errorf("%s: %v", key(o), err)
		}
	}
}

// The defaults decode strictly and run restricted too.
func TestDefaultRenderIsValid(t *testing.T) {
	r := render(t, "", "default")
	restricted(t, r)
	decodeStrict(t, r)
	for _, want := range []string{"splitter-system", "every namespace", "rollout status deployment/splitter-controller"} {
		if !strings.Contains(r.Notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, r.Notes)
		}
	}
}

// `helm lint`'s rules pass (no warning, no error) with the defaults and the
// other shapes of the chart; the last case shows the linter does see errors.
func TestHelmLint(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		wantErr      bool
	}{
		{"defaults", "", false},
		{"per-namespace RBAC", "rbac.scope=namespace,watchNamespaces={shop}", false},
		{"all options", allOptions, false},
		{"release namespace, no leader election", "leaderElection.enabled=false,replicas=1,namespace.name=,namespace.create=false", false},
		{"bad values", "replicas=-1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lint.All(ChartDir(), set(t, tc.values), "splitter-system", false)
			if tc.wantErr {
				if l.HighestSeverity < support.ErrorSev {
					t.Errorf("lint passed --set %s: %v", tc.values, l.Messages)
				}
				return
			}
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
}

// values.schema.json refuses bad values before anything renders.
func TestValuesSchemaRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         []string // all in the error
	}{
		{"negative replicas", "replicas=-1", []string{"/replicas", "minimum"}},
		{"replicas not a number", "replicas=two", []string{"/replicas", "integer"}},
		{"fractional replicas", "replicas=1.5", []string{"/replicas", "integer"}},
		{"unknown RBAC scope", "rbac.scope=everywhere", []string{"/rbac/scope", "cluster"}},
		{"per-namespace RBAC without namespaces", "rbac.scope=namespace", []string{"watchNamespaces"}},
		{"two replicas without leader election", "leaderElection.enabled=false", []string{"/replicas", "maximum"}},
		{"leader election not a boolean", "leaderElection.enabled=yes", []string{"/leaderElection/enabled", "boolean"}},
		{"lease duration without unit", "leaderElection.leaseDuration=15", []string{"/leaderElection/leaseDuration"}},
		{"empty image repository", "image.repository=", []string{"/image/repository"}},
		{"unknown pull policy", "image.pullPolicy=Sometimes", []string{"/image/pullPolicy"}},
		{"short digest", "image.digest=sha256:abc", []string{"/image/digest"}},
		{"Prometheus URL without scheme", "prometheus.url=prometheus:9090", []string{"/prometheus/url"}},
		{"scrape interval not a duration", "scrapeInterval=fast", []string{"/scrapeInterval"}},
		{"watched namespace not a DNS label", "watchNamespaces={Shop}", []string{"/watchNamespaces/0"}},
		{"watched namespaces not a list", "watchNamespaces=shop", []string{"/watchNamespaces", "array"}},
		{"duplicate watched namespace", "watchNamespaces={shop,shop}", []string{"/watchNamespaces"}},
		{"port 0", "metrics.port=0", []string{"/metrics/port", "minimum"}},
		{"port too high", "probes.port=70000", []string{"/probes/port", "maximum"}},
		{"unknown Pod Security level", "namespace.podSecurity=strict", []string{"/namespace/podSecurity"}},
		{"created namespace without a name", "namespace.name=", []string{"/namespace/name"}},
		{"a misspelt key", "replica=3", []string{"replica"}},
		{"a misspelt nested key", "rbac.scopes=cluster", []string{"scopes"}},
		{"resources not an object", "resources=lots", []string{"/resources", "object"}},
		{"unknown log level", "logLevel=warn", []string{"/logLevel"}},
		{"ServiceMonitor switch not a boolean", "serviceMonitor.enabled=yes", []string{"/serviceMonitor/enabled", "boolean"}},
		{"rule group without rules", "prometheusRule.groups[0].name=g", []string{"/prometheusRule/groups/0", "rules"}},
		{"rule without alert or record", "prometheusRule.groups[0].name=g,prometheusRule.groups[0].rules[0].expr=up", []string{"/prometheusRule/groups/0/rules/0"}},
		{"extra argument not a flag", "extraArgs={verbose}", []string{"/extraArgs/0"}},
		{"negative concurrency", "maxConcurrentReconciles=-2", []string{"/maxConcurrentReconciles", "minimum"}},
		{"label value not a string", "commonLabels.n=1", []string{"/commonLabels/n", "string"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir(), set(t, tc.values), "splitter", "default")
			if err == nil {
				t.Fatalf("--set %s accepted", tc.values)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("--set %s: error %q lacks %q", tc.values, err, w)
				}
			}
		})
	}
}

// Values the schema cannot judge alone are refused by the templates.
func TestTemplatesRefuse(t *testing.T) {
	cases := []struct{ name, values, want string }{
		{"one port for /metrics and the probes", "metrics.port=8081", "metrics.port and probes.port must differ"},
	}
	if _, err := os.Stat(filepath.Join(ChartDir(), "files", "alerts.yaml")); os.IsNotExist(err) {
		cases = append(cases, struct{ name, values, want string }{"PrometheusRule without rules", "prometheusRule.enabled=true", "needs prometheusRule.groups"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(ChartDir(), set(t, tc.values), "splitter", "default")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--set %s: err %v, want %q", tc.values, err, tc.want)
			}
		})
	}
}
