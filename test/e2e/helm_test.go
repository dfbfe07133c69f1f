package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/strvals"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"splitter.dev/splitter/test/helmchart"
	"splitter.dev/splitter/test/testbed"
)

// The Helm chart, rendered as `helm template` renders it, installs on the
// test bed: the namespace it creates enforces the restricted Pod Security
// Standard, the controller's pods are admitted and Running and Ready (kwok
// runs them), and the service account holds the grants the chart gives,
// cluster-wide or in the watched namespaces only. Each install has its own
// namespace and name prefix, so it runs beside TestDeployManifestsApply.
func TestHelmChartInstall(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	for _, tc := range []struct {
		name     string
		replicas int
		// values given the controller's namespace (also the name prefix)
		// and a namespace to watch.
		values      func(ns, watched string) string
		clusterWide bool
	}{
		{"cluster RBAC", 2, func(ns, _ string) string { return "" }, true},
		{"per-namespace RBAC", 1, func(ns, watched string) string {
			return "rbac.scope=namespace,watchNamespaces={" + watched + "},replicas=1"
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := "helm-" + rand.String(6)
			watched := tb.Namespace(t, "helm-watched")
			values := "namespace.name=" + ns + ",fullnameOverride=" + ns
			if v := tc.values(ns, watched); v != "" {
				values += "," + v
			}
			vals, err := strvals.Parse(values)
			if err != nil {
				t.Fatal(err)
			}
			r, err := helmchart.Render(helmchart.ChartDir(), vals, "splitter", "default")
			if err != nil {
				t.Fatal(err)
			}
			install(t, tb, r.Objects)

			var nsObj corev1.Namespace
			if err := tb.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
				t.Fatal(err)
			}
			if got := nsObj.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
				t.Errorf("namespace %s enforces %q, want restricted", ns, got)
			}
			// The admission plugin enforces it: a pod with no security
			// settings is refused there (server-side dry run).
			bare := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/c:1"}}},
			}
			if err := tb.Client.Create(ctx, bare, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
				t.Errorf("a pod without security settings in %s: err %v, want a PodSecurity refusal", ns, err)
			}

			// The controller's pods were admitted under that standard.
			name := ns + "-controller"
			readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := testbed.WaitDeploymentsReady(readyCtx, tb.Client, ns, name); err != nil {
				t.Fatal(err)
			}
			var pods corev1.PodList
			if err := tb.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "splitter"}); err != nil {
				t.Fatal(err)
			}
			running := 0
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && podReady(&p) && p.Spec.ServiceAccountName == name {
					running++
				}
			}
			if running != tc.replicas {
				t.Errorf("%d of %d pods Running and Ready with service account %s, want %d", running, len(pods.Items), name, tc.replicas)
			}

			// What the service account may do: the chart's grants, where it says.
			sa := "system:serviceaccount:" + ns + ":" + name
			other := tb.Namespace(t, "helm-other")
			for _, a := range []struct {
				ns, group, resource, verb string
				want                      bool
			}{
				{watched, "splitter.dev", "splits", "list", true},
				{watched, "networking.istio.io", "virtualservices", "patch", true},
				{watched, "", "secrets", "get", true},
				{watched, "", "secrets", "list", false},
				{other, "splitter.dev", "splits", "list", tc.clusterWide},
				{other, "apps", "deployments", "update", tc.clusterWide},
				{ns, "coordination.k8s.io", "leases", "update", true},
				{other, "coordination.k8s.io", "leases", "update", false},
			} {
				if got := allowed(t, tb, sa, a.ns, a.group, a.resource, a.verb); got != a.want {
					t.Errorf("%s may %s %s.%s in %s: %v, want %v", sa, a.verb, a.resource, a.group, a.ns, got, a.want)
				}
			}
		})
	}
}

// install creates the rendered objects in order (the CRDs are the test
// bed's, identical to the chart's) and deletes them when the test ends.
func install(t *testing.T, tb *testbed.TestBed, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	var created []*unstructured.Unstructured
	t.Cleanup(func() {
		// Cluster-scoped objects and namespaces go; namespaced ones go
		// with their namespace (or the watched namespace's own cleanup).
		for i := len(created) - 1; i >= 0; i-- {
			if o := created[i]; o.GetNamespace() == "" {
				if err := tb.Client.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
					t.Errorf("deleting %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		}
	})
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if err := testbed.Apply(ctx, tb.Client, o); err != nil {
			t.Fatalf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		created = append(created, o)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// allowed asks the API server's authorizer whether user may verb resource in ns.
func allowed(t *testing.T, tb *testbed.TestBed, user, ns, group, resource, verb string) bool {
	t.Helper()
	parts := strings.Split(user, ":")
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + parts[2], "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Group: group, Resource: resource, Verb: verb,
		},
	}}
	if err := tb.Client.Create(context.Background(), sar); err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return sar.Status.Allowed
}
