package meshsim

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// series reads istio_requests_total from the simulator's registry, as
// /metrics serves it: the value of each series matching want, by its pod label.
func series(t *testing.T, s *Simulator, want map[string]string) map[string]float64 {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			out[got["pod"]] += m.GetCounter().GetValue()
		}
	}
	return out
}

// histogramSeries counts istio_request_duration_milliseconds series.
func histogramSeries(t *testing.T, s *Simulator) int {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "istio_request_duration_milliseconds" {
			return len(mf.GetMetric())
		}
	}
	return 0
}

func greenPod(name string, uid types.UID) *corev1.Pod {
	p := pod(name, "checkout-green", map[string]string{"app": "checkout", "track": "green"}, nil)
	p.UID = uid
	return p
}

func greenWorld(pods ...*corev1.Pod) *World {
	svc := service("checkout", map[string]string{"app": "checkout"})
	return NewWorld([]*corev1.Service{svc}, pods, []*networkingv1.VirtualService{weightedVS("checkout", 0, 100)},
		[]*networkingv1.DestinationRule{subsetDR("checkout")})
}

// Destination series carry the serving pod and vanish with it; a pod
// recreated under a new name, or under the same name as another pod (UID),
// starts from zero; source series carry the synthetic client pod.
func TestSeriesFollowPods(t *testing.T) {
	s := newSimulator(Options{RPS: 100, Seed: 1})
	dest := map[string]string{"reporter": "destination", "destination_workload": "checkout-green"}
	src := map[string]string{"reporter": "source"}

	s.setWorld(greenWorld(greenPod("green-1", "u1"), greenPod("green-2", "u2")))
	s.send(time.Second)
	got := series(t, s, dest)
	if len(got) != 2 || got["green-1"] == 0 || got["green-2"] == 0 || got["green-1"]+got["green-2"] != 100 {
		t.Fatalf("destination series by pod = %v, want green-1 and green-2 summing to 100", got)
	}
	if srcGot := series(t, s, src); len(srcGot) != 1 || srcGot[ClientPod] != 100 {
		t.Fatalf("source series by pod = %v, want %s: 100", srcGot, ClientPod)
	}
	green2 := got["green-2"]

	// green-1 deleted, green-3 created; green-2 lives on.
	s.setWorld(greenWorld(greenPod("green-2", "u2"), greenPod("green-3", "u3")))
	if got := series(t, s, dest); len(got) != 1 || got["green-2"] != green2 {
		t.Fatalf("after deleting green-1: %v, want only green-2 at %v", got, green2)
	}
	s.send(time.Second)
	got = series(t, s, dest)
	if _, ok := got["green-1"]; ok {
		t.Errorf("green-1's series came back: %v", got)
	}
	if got["green-3"] == 0 || got["green-3"]+(got["green-2"]-green2) != 100 {
		t.Errorf("after a second of traffic: %v, want green-3 from zero and the new requests summing to 100", got)
	}
	if srcGot := series(t, s, src); srcGot[ClientPod] != 200 {
		t.Errorf("source series = %v, want the client's counter to carry on at 200", srcGot)
	}

	// green-3 deleted and recreated under the same name: a new UID, a new pod.
	s.setWorld(greenWorld(greenPod("green-2", "u2"), greenPod("green-3", "u3b")))
	if got := series(t, s, dest); len(got) != 1 || got["green-3"] != 0 {
		t.Errorf("after recreating green-3: %v, want its old series gone", got)
	}

	// The Service gone: no client sends in the namespace any more.
	s.setWorld(NewWorld(nil, []*corev1.Pod{greenPod("green-2", "u2")}, nil, nil))
	if srcGot := series(t, s, src); len(srcGot) != 0 {
		t.Errorf("source series after the Service went: %v, want none", srcGot)
	}
	s.setWorld(NewWorld(nil, nil, nil, nil))
	if got := series(t, s, nil); len(got) != 0 || histogramSeries(t, s) != 0 {
		t.Errorf("series with nothing left: %v and %d histograms, want none", got, histogramSeries(t, s))
	}
	if len(s.servedBy) != 0 || len(s.clientsIn) != 0 || len(s.carry) != 0 {
		t.Errorf("state left: servedBy %v, clientsIn %v, carry %v", s.servedBy, s.clientsIn, s.carry)
	}
}

// Pod churn does not grow the series: a thousand pod replacements leave
// the series of the live pods only.
func TestPodChurnKeepsSeriesBounded(t *testing.T) {
	s := newSimulator(Options{RPS: 100, Seed: 2})
	for i := range 1000 {
		a, b := fmt.Sprintf("green-%d", i), fmt.Sprintf("green-%d", i+1)
		s.setWorld(greenWorld(greenPod(a, types.UID(a)), greenPod(b, types.UID(b))))
		s.send(100 * time.Millisecond)
	}
	dest := series(t, s, map[string]string{"reporter": "destination"})
	if len(dest) > 2 || len(s.servedBy) > 2 {
		t.Errorf("%d destination pods in /metrics and %d tracked after churn, want at most the 2 live", len(dest), len(s.servedBy))
	}
	// Each label set has one histogram: source + one per live pod (all 200s).
	if n := histogramSeries(t, s); n > 3 {
		t.Errorf("%d histogram series after churn, want at most 3", n)
	}
}

// gauge reads meshsim_config_rejected for one object; -1 when it has no series.
func gauge(t *testing.T, s *Simulator, kind, name string) float64 {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshsim_config_rejected" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if got["kind"] == kind && got["namespace"] == ns && got["name"] == name {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// version is a stored version of the checkout VirtualService.
func version(uid types.UID, rv string, blue, green int32) *networkingv1.VirtualService {
	vs := weightedVS("checkout", blue, green)
	vs.UID, vs.ResourceVersion = uid, rv
	vs.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "splitter"}}
	return vs
}

// Every version an informer delivers is judged by Istio's validation; the
// routing in force is the last version admitted, as if a webhook had kept
// the refused ones out of the API server.
func TestRefusedVersionsKeepTheLastValid(t *testing.T) {
	var logged []string
	s := newSimulator(Options{Seed: 3, Log: funcr.New(func(_, args string) { logged = append(logged, args) }, funcr.Options{})})
	svc := service("checkout", map[string]string{"app": "checkout"})
	w0, _ := checkoutWorld(nil)
	var pods []*corev1.Pod
	for _, ps := range w0.pods {
		pods = append(pods, ps...)
	}
	dr := subsetDR("checkout")
	dr.UID, dr.ResourceVersion = "dr", "1"
	greenShare := func(stored ...*networkingv1.VirtualService) float64 {
		t.Helper()
		w := s.admitWorld([]*corev1.Service{svc}, pods, stored, []*networkingv1.DestinationRule{dr})
		got, _, _ := tally(w, svc, 4000, Request{}, 7)
		return float64(got["checkout-green"]) / 4000
	}

	if g := greenShare(version("u1", "1", 90, 10)); math.Abs(g-0.10) > 0.03 || gauge(t, s, "VirtualService", "checkout") != 0 {
		t.Fatalf("90/10 admitted: green share %.3f, gauge %v", g, gauge(t, s, "VirtualService", "checkout"))
	}
	// Three writes within one tick: only the last reaches a snapshot, all
	// three are judged.
	s.observe(version("u1", "2", 0, 0))
	s.observe(version("u1", "3", 50, 50))
	s.observe(version("u1", "4", 110, -10))
	if g := greenShare(version("u1", "4", 110, -10)); math.Abs(g-0.5) > 0.04 {
		t.Errorf("after refused 110/-10: green share %.3f, want the last valid 50/50", g)
	}
	if why := s.Rejection(ns, "checkout"); !strings.Contains(why, "weight -10 < 0") {
		t.Errorf("Rejection = %q, want Istio's message on the negative weight", why)
	}
	if gauge(t, s, "VirtualService", "checkout") != 1 {
		t.Errorf("meshsim_config_rejected = %v, want 1", gauge(t, s, "VirtualService", "checkout"))
	}
	rej := s.Rejected()
	if len(rej) != 2 || rej[0].ResourceVersion != "2" || !strings.Contains(rej[0].Err, "total destination weight = 0") ||
		rej[1].ResourceVersion != "4" || len(rej[1].Managers) != 1 || rej[1].Managers[0] != "splitter" {
		t.Errorf("Rejected = %v, want versions 2 and 4 written by splitter", rej)
	}
	if n := len(logged); n != 2 || !strings.Contains(logged[0], "total destination weight = 0") {
		t.Errorf("log lines %q, want one per refused version", logged)
	}
	// The same stored version seen again is not judged again.
	greenShare(version("u1", "4", 110, -10))
	var rvs []string
	for _, v := range s.Verdicts() {
		if v.Kind == "VirtualService" {
			rvs = append(rvs, v.ResourceVersion)
		}
	}
	if strings.Join(rvs, ",") != "1,2,3,4" {
		t.Errorf("VirtualService versions judged: %v, want 1 to 4, once each", rvs)
	}

	// A refused DestinationRule leaves the last valid subsets in force.
	bad := subsetDR("checkout")
	bad.UID, bad.ResourceVersion = "dr", "2"
	bad.Spec.Subsets[1].Name = "Green!"
	s.observe(bad)
	w := s.admitWorld([]*corev1.Service{svc}, pods, []*networkingv1.VirtualService{version("u1", "5", 0, 100)}, []*networkingv1.DestinationRule{bad})
	if got, _, _ := tally(w, svc, 100, Request{}, 8); got["checkout-green"] != 100 {
		t.Errorf("with the DestinationRule refused: %v, want all to green through the last valid subsets", got)
	}
	if gauge(t, s, "DestinationRule", "checkout") != 1 {
		t.Errorf("DestinationRule gauge = %v, want 1", gauge(t, s, "DestinationRule", "checkout"))
	}

	// Deleted and created again, invalid: nothing of the old object is in
	// force, so requests spread over the selector as without a VirtualService.
	if g := greenShare(version("u2", "6", 0, 0)); math.Abs(g-0.5) > 0.04 {
		t.Errorf("recreated invalid: green share %.3f, want about 0.5 (no VirtualService in force)", g)
	}
	// Deleted: its series goes.
	greenShare()
	if gauge(t, s, "VirtualService", "checkout") != -1 || len(s.objects) != 1 {
		t.Errorf("after deletion: gauge %v, %d objects tracked, want no series and the DestinationRule only",
			gauge(t, s, "VirtualService", "checkout"), len(s.objects))
	}
}
