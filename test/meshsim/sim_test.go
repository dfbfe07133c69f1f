package meshsim

import (
	"fmt"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
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
