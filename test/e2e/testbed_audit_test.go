package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"splitter.dev/splitter/test/meshsim"
	"splitter.dev/splitter/test/testbed"
)

// The audit log counts what the API server received, by user, verb,
// resource and response code: accepted, conflicting (409) and invalid (422)
// writes, the admin's apart from the controller identity's.
func TestAuditLogNamesTheWriter(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	if tb.AuditLog() == "" {
		t.Skip("the test bed runs without the audit log (TESTBED_AUDIT=0)")
	}
	ns := tb.Namespace(t, "audit")
	ctx := context.Background()
	cfg, err := clientcmd.BuildConfigFromFlags("", tb.ControllerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := client.New(cfg, client.Options{Scheme: testbed.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now()

	tb.Create(t, service(ns, "by-admin", map[string]string{"app": "a"}))
	if err := ctrl.Create(ctx, service(ns, "by-controller", map[string]string{"app": "b"})); err != nil {
		t.Fatal(err)
	}
	vs := virtualService(ns, 100, 0)
	if err := ctrl.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	stale := vs.DeepCopy()
	ok := client.RawPatch(types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/http/0/route/0/weight","value":90},{"op":"replace","path":"/spec/http/0/route/1/weight","value":10}]`))
	if err := ctrl.Patch(ctx, vs, ok); err != nil {
		t.Fatal(err)
	}
	invalid := client.RawPatch(types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/http/0/route/0/weight","value":"ninety"}]`))
	if err := ctrl.Patch(ctx, vs, invalid); !apierrors.IsInvalid(err) {
		t.Fatalf("patching a weight to a string: %v, want 422 Invalid", err)
	}
	stale.Spec.Http[0].Route[0].Weight = 50
	stale.Spec.Http[0].Route[1].Weight = 50
	if err := ctrl.Update(ctx, stale); !apierrors.IsConflict(err) {
		t.Fatalf("updating from a stale resourceVersion: %v, want 409 Conflict", err)
	}

	want := map[string]map[string]int{
		testbed.AdminUser: {"create services 201": 1},
		testbed.ControllerUser: {
			"create services 201": 1, "create virtualservices 201": 1,
			"patch virtualservices 200": 1, "patch virtualservices 422": 1, "update virtualservices 409": 1,
		},
	}
	// Each event is written once its request's handler returns: poll briefly.
	testbed.Eventually(t, 10*time.Second, 100*time.Millisecond, "audit events", func(context.Context) error {
		events, err := tb.AuditEvents(since)
		if err != nil {
			return err
		}
		got := map[string]map[string]int{}
		for _, e := range events {
			if e.Namespace != ns {
				continue
			}
			if got[e.User] == nil {
				got[e.User] = map[string]int{}
			}
			got[e.User][e.Key()]++
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
	// AuditWrites is the same count for one user, over all namespaces.
	all, err := tb.AuditWrites(since, testbed.ControllerUser)
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range want[testbed.ControllerUser] {
		if all[k] < n {
			t.Errorf("AuditWrites[%q] = %d, want at least %d", k, all[k], n)
		}
	}
}

// meshsimBody fetches the simulator's /metrics as Prometheus scrapes it.
func meshsimBody(ctx context.Context, tb *testbed.TestBed) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tb.MeshSimURL+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Destination series carry the serving pod's name (pod), source series the
// simulator's client pod; a deleted pod's series leave /metrics and so
// Prometheus (marked stale), and its replacement starts its own.
func TestMeshSimSeriesPerPod(t *testing.T) {
	t.Parallel()
	tb := testbed.Shared(t)
	ns := tb.Namespace(t, "perpod")
	tb.Create(t, service(ns, "app", map[string]string{"app": "app"}))
	tb.Create(t, deployment(ns, "app", 2, map[string]string{"app": "app"}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testbed.WaitDeploymentsReady(ctx, tb.Client, ns, "app"); err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	if err := tb.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("%d pods, want 2", len(pods.Items))
	}
	byPod := func(ctx context.Context, reporter string) (map[string]float64, error) {
		return tb.QueryByLabel(ctx, fmt.Sprintf(`sum by (pod) (istio_requests_total{reporter=%q,destination_workload_namespace=%q})`, reporter, ns), "pod")
	}
	timeout := time.Minute + 5*tb.ScrapeInterval()
	testbed.Eventually(t, timeout, time.Second, "a series per pod in Prometheus", func(ctx context.Context) error {
		dest, err := byPod(ctx, "destination")
		if err != nil {
			return err
		}
		src, err := byPod(ctx, "source")
		if err != nil {
			return err
		}
		if len(dest) != 2 || dest[pods.Items[0].Name] == 0 || dest[pods.Items[1].Name] == 0 {
			return fmt.Errorf("destination by pod %v, want both of %s and %s", dest, pods.Items[0].Name, pods.Items[1].Name)
		}
		if len(src) != 1 || src[meshsim.ClientPod] == 0 {
			return fmt.Errorf("source by pod %v, want only %s", src, meshsim.ClientPod)
		}
		return nil
	})

	gone, kept := pods.Items[0].Name, pods.Items[1].Name
	if err := tb.Client.Delete(ctx, &pods.Items[0]); err != nil {
		t.Fatal(err)
	}
	testbed.Eventually(t, timeout, time.Second, "the deleted pod's series gone, its replacement's there", func(ctx context.Context) error {
		body, err := meshsimBody(ctx, tb)
		if err != nil {
			return err
		}
		if strings.Contains(body, `pod="`+gone+`"`) {
			return fmt.Errorf("%s still in the simulator's /metrics", gone)
		}
		dest, err := byPod(ctx, "destination")
		if err != nil {
			return err
		}
		if _, ok := dest[gone]; ok || dest[kept] == 0 || len(dest) != 2 {
			return fmt.Errorf("destination by pod %v, want %s and a replacement, not %s", dest, kept, gone)
		}
		t.Logf("requests by pod after deleting %s: %v", gone, dest)
		return nil
	})
}
