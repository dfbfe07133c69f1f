package meshsim

import (
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const ns = "shop"

func service(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: selector},
	}
}

// pod is a Ready pod owned by Deployment deploy through a ReplicaSet.
func pod(name, deploy string, lbls map[string]string, ann map[string]string) *corev1.Pod {
	l := map[string]string{"pod-template-hash": "abc12"}
	for k, v := range lbls {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, Labels: l, Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: deploy + "-abc12", Controller: ptr.To(true)}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

func subsetDR(host string) *networkingv1.DestinationRule {
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: host, Namespace: ns},
		Spec: networkingapi.DestinationRule{Host: host, Subsets: []*networkingapi.Subset{
			{Name: "blue", Labels: map[string]string{"track": "blue"}},
			{Name: "green", Labels: map[string]string{"track": "green"}},
		}},
	}
}

func weightedVS(host string, blue, green int32) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: host, Namespace: ns},
		Spec: networkingapi.VirtualService{Hosts: []string{host}, Http: []*networkingapi.HTTPRoute{{
			Route: []*networkingapi.HTTPRouteDestination{
				{Destination: &networkingapi.Destination{Host: host, Subset: "blue"}, Weight: blue},
				{Destination: &networkingapi.Destination{Host: host, Subset: "green"}, Weight: green},
			},
		}}},
	}
}

// checkoutWorld has a Service selecting app=checkout and two pods of each color.
func checkoutWorld(greenAnn map[string]string, vss ...*networkingv1.VirtualService) (*World, *corev1.Service) {
	svc := service("checkout", map[string]string{"app": "checkout"})
	pods := []*corev1.Pod{
		pod("checkout-blue-1", "checkout-blue", map[string]string{"app": "checkout", "track": "blue"}, nil),
		pod("checkout-blue-2", "checkout-blue", map[string]string{"app": "checkout", "track": "blue"}, nil),
		pod("checkout-green-1", "checkout-green", map[string]string{"app": "checkout", "track": "green"}, greenAnn),
		pod("checkout-green-2", "checkout-green", map[string]string{"app": "checkout", "track": "green"}, greenAnn),
	}
	return NewWorld([]*corev1.Service{svc}, pods, vss, []*networkingv1.DestinationRule{subsetDR("checkout")}), svc
}

// tally routes n plain requests and counts outcomes by workload and code.
func tally(w *World, svc *corev1.Service, n int, req Request, seed uint64) (byWorkload map[string]int, byCode map[int]int, latencies []float64) {
	rng := rand.New(rand.NewPCG(seed, seed))
	byWorkload, byCode = map[string]int{}, map[int]int{}
	for range n {
		o := w.Route(svc, req, rng)
		wl := "none"
		if o.Endpoint != nil {
			wl = o.Endpoint.Workload
			latencies = append(latencies, o.LatencyMs)
		}
		byWorkload[wl]++
		byCode[o.Code]++
	}
	return byWorkload, byCode, latencies
}

// binomialTolerance is 4 standard deviations of a binomial count: a correct
// router falls outside it about once in 16,000 runs, and the seeds are fixed.
func binomialTolerance(n int, p float64) float64 {
	return 4 * math.Sqrt(float64(n)*p*(1-p))
}

func TestRouteFollowsWeights(t *testing.T) {
	for _, tc := range []struct {
		blue, green int32
	}{{100, 0}, {90, 10}, {50, 50}, {5, 95}, {0, 100}, {50, 60}, {1, 3}} {
		w, svc := checkoutWorld(nil, weightedVS("checkout", tc.blue, tc.green))
		const n = 20000
		got, _, _ := tally(w, svc, n, Request{Method: "GET", Path: "/"}, 1)
		// Weights are relative, as in Envoy's weighted clusters: Istio
		// admits 50/60 and sends green 60/110 of requests.
		p := float64(tc.green) / float64(tc.blue+tc.green)
		want := float64(n) * p
		if d := math.Abs(float64(got["checkout-green"]) - want); d > binomialTolerance(n, p)+0.5 {
			t.Errorf("weights %d/%d: green got %d of %d, want %.0f ± %.0f", tc.blue, tc.green, got["checkout-green"], n, want, binomialTolerance(n, p))
		}
		if got["checkout-blue"]+got["checkout-green"] != n {
			t.Errorf("weights %d/%d: %d requests went elsewhere: %v", tc.blue, tc.green, n-got["checkout-blue"]-got["checkout-green"], got)
		}
	}
}

func TestRouteWithoutVirtualServiceSpreadsOverSelector(t *testing.T) {
	w, svc := checkoutWorld(nil)
	got, _, _ := tally(w, svc, 10000, Request{}, 2)
	// Four Ready pods, two per Deployment: each Deployment gets about half.
	if d := math.Abs(float64(got["checkout-blue"]) - 5000); d > binomialTolerance(10000, 0.5) {
		t.Errorf("blue got %d of 10000, want about 5000", got["checkout-blue"])
	}
}

func TestRouteHeaderMatch(t *testing.T) {
	vs := weightedVS("checkout", 100, 0)
	vs.Spec.Http = append([]*networkingapi.HTTPRoute{{
		Match: []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
			"x-beta": {MatchType: &networkingapi.StringMatch_Exact{Exact: "1"}},
		}}},
		Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "checkout", Subset: "green"}}},
	}}, vs.Spec.Http...)
	w, svc := checkoutWorld(nil, vs)
	for _, tc := range []struct {
		headers map[string]string
		want    string
	}{
		{map[string]string{"x-beta": "1"}, "checkout-green"},
		{map[string]string{"x-beta": "2"}, "checkout-blue"},
		{nil, "checkout-blue"},
	} {
		got, _, _ := tally(w, svc, 200, Request{Headers: tc.headers}, 3)
		if got[tc.want] != 200 {
			t.Errorf("headers %v: got %v, want all to %s", tc.headers, got, tc.want)
		}
	}
}

func TestRouteStringMatchKinds(t *testing.T) {
	for _, tc := range []struct {
		sm    *networkingapi.StringMatch
		value string
		want  bool
	}{
		{&networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/api"}}, "/api/v1", true},
		{&networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/api"}}, "/web", false},
		{&networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: "v[0-9]+"}}, "v12", true},
		{&networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: "v[0-9]+"}}, "xv12", false}, // full match, as Envoy
		{&networkingapi.StringMatch{}, "anything", true},
	} {
		if got := stringMatches(tc.sm, tc.value, false); got != tc.want {
			t.Errorf("%v on %q = %v, want %v", tc.sm, tc.value, got, tc.want)
		}
	}
}

func TestRouteFailureModes(t *testing.T) {
	t.Run("no route matches", func(t *testing.T) {
		vs := weightedVS("checkout", 100, 0)
		vs.Spec.Http[0].Match = []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
			"x-never": {MatchType: &networkingapi.StringMatch_Exact{Exact: "1"}},
		}}}
		w, svc := checkoutWorld(nil, vs)
		o := w.Route(svc, Request{}, rand.New(rand.NewPCG(1, 1)))
		if o.Code != 404 || o.Flags != "NR" || o.Endpoint != nil {
			t.Errorf("got %d %s, want 404 NR", o.Code, o.Flags)
		}
	})
	t.Run("subset has no Ready pod", func(t *testing.T) {
		w, svc := checkoutWorld(nil, weightedVS("checkout", 0, 100))
		for _, p := range w.pods[ns] {
			if p.Labels["track"] == "green" {
				p.Status.Conditions[0].Status = corev1.ConditionFalse
			}
		}
		o := w.Route(svc, Request{}, rand.New(rand.NewPCG(1, 1)))
		if o.Code != 503 || o.Flags != "UH" {
			t.Errorf("got %d %s, want 503 UH", o.Code, o.Flags)
		}
	})
	t.Run("unknown subset", func(t *testing.T) {
		vs := weightedVS("checkout", 100, 0)
		vs.Spec.Http[0].Route = vs.Spec.Http[0].Route[:1]
		vs.Spec.Http[0].Route[0].Destination.Subset = "purple"
		w, svc := checkoutWorld(nil, vs)
		o := w.Route(svc, Request{}, rand.New(rand.NewPCG(1, 1)))
		if o.Code != 503 || o.Flags != "NR" {
			t.Errorf("got %d %s, want 503 NR", o.Code, o.Flags)
		}
	})
}

func TestPodBehaviourFromAnnotations(t *testing.T) {
	w, svc := checkoutWorld(map[string]string{ErrorRateAnnotation: "0.3", LatencyAnnotation: "300"}, weightedVS("checkout", 0, 100))
	const n = 20000
	_, codes, lat := tally(w, svc, n, Request{}, 4)
	if d := math.Abs(float64(codes[500]) - 0.3*n); d > binomialTolerance(n, 0.3) {
		t.Errorf("500s: %d of %d, want about 30%%", codes[500], n)
	}
	sort.Float64s(lat)
	median, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	if median < 280 || median > 320 {
		t.Errorf("median latency %.1f ms, want about 300", median)
	}
	// Log-normal with sigma 0.3: p99 = 300 * exp(2.326*0.3) ≈ 601 ms, above the 500 ms bucket.
	if p99 < 500 || p99 > 700 {
		t.Errorf("p99 latency %.1f ms, want about 600", p99)
	}
}

func TestWorkloadName(t *testing.T) {
	p := pod("checkout-green-abc12-xyz", "checkout-green", nil, nil)
	if got := WorkloadName(p); got != "checkout-green" {
		t.Errorf("WorkloadName = %q, want checkout-green", got)
	}
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "solo"}}
	if got := WorkloadName(bare); got != "solo" {
		t.Errorf("WorkloadName = %q, want solo", got)
	}
}

// Istio's own validation, as istiod's webhook runs it: refusals and
// warnings carry Istio's messages. What Istio admits is admitted here too
// (weights are relative; no sum to 100 is asked).
func TestIstioValidation(t *testing.T) {
	regex := func(re string) map[string]*networkingapi.StringMatch {
		return map[string]*networkingapi.StringMatch{"x-beta": {MatchType: &networkingapi.StringMatch_Regex{Regex: re}}}
	}
	for _, tc := range []struct {
		name        string
		vs          func(*networkingv1.VirtualService)
		dr          func(*networkingv1.DestinationRule)
		wantErr     []string // each a substring of one of Istio's messages
		wantWarning string
	}{
		{name: "90/10"},
		{name: "100/0"},
		{name: "weights 50/60 are relative", vs: func(vs *networkingv1.VirtualService) { setWeights(vs, 50, 60) }},
		{name: "lone destination with weight 0", vs: func(vs *networkingv1.VirtualService) {
			vs.Spec.Http[0].Route = vs.Spec.Http[0].Route[:1]
			vs.Spec.Http[0].Route[0].Weight = 0
		}},
		{name: "delegate without hosts", vs: func(vs *networkingv1.VirtualService) { vs.Spec.Hosts = nil }},
		{name: "subset no DestinationRule defines", vs: func(vs *networkingv1.VirtualService) {
			vs.Spec.Http[0].Route[1].Destination.Subset = "purple"
		}},
		{name: "weights 0/0", vs: func(vs *networkingv1.VirtualService) { setWeights(vs, 0, 0) },
			wantErr: []string{"total destination weight = 0"}},
		{name: "negative weight", vs: func(vs *networkingv1.VirtualService) { setWeights(vs, 110, -10) },
			wantErr: []string{"weight -10 < 0"}},
		{name: "no destination", vs: func(vs *networkingv1.VirtualService) { vs.Spec.Http[0].Route = nil },
			wantErr: []string{"HTTP route, redirect or direct_response is required"}},
		{name: "no http, tcp or tls", vs: func(vs *networkingv1.VirtualService) { vs.Spec.Http = nil },
			wantErr: []string{"http, tcp or tls must be provided in virtual service"}},
		{name: "wildcard host bound to the mesh", vs: func(vs *networkingv1.VirtualService) { vs.Spec.Hosts = []string{"*"} },
			wantErr: []string{"wildcard host * is not allowed"}},
		{name: "bad regex and bad subset name, both named", vs: func(vs *networkingv1.VirtualService) {
			vs.Spec.Http[0].Match = []*networkingapi.HTTPMatchRequest{{Headers: regex("(")}}
			vs.Spec.Http[0].Route[0].Destination.Subset = "Blue_1"
		}, wantErr: []string{"error parsing regexp: missing closing ): `(`", "subset name is invalid: Blue_1"}},
		{name: "dry-run annotation (metadata checks)", vs: func(vs *networkingv1.VirtualService) {
			vs.Annotations = map[string]string{"istio.io/dry-run": "true"}
		}, wantErr: []string{"has unsupported annotation istio.io/dry-run"}},
		{name: "unreachable route warns", vs: func(vs *networkingv1.VirtualService) {
			vs.Spec.Http = append(vs.Spec.Http, vs.Spec.Http[0])
		}, wantWarning: "virtualService rule #1 not used (only the last rule can have no matches)"},
		{name: "duplicate subset", dr: func(dr *networkingv1.DestinationRule) {
			dr.Spec.Subsets = append(dr.Spec.Subsets, dr.Spec.Subsets[0])
		}, wantErr: []string{"duplicate subset names: blue"}},
		{name: "DestinationRule without host", dr: func(dr *networkingv1.DestinationRule) { dr.Spec.Host = "" },
			wantErr: []string{"empty domain name not allowed"}},
		{name: "subset label", dr: func(dr *networkingv1.DestinationRule) {
			dr.Spec.Subsets[0].Labels = map[string]string{"track": "blue/1"}
		}, wantErr: []string{"invalid tag value: \"blue/1\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var warnings []string
			var err error
			if tc.dr != nil {
				dr := subsetDR("checkout")
				tc.dr(dr)
				warnings, err = ValidateDestinationRule(dr)
			} else {
				vs := weightedVS("checkout", 90, 10)
				if tc.vs != nil {
					tc.vs(vs)
				}
				warnings, err = ValidateVirtualService(vs)
			}
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if len(tc.wantErr) > 0 {
				var verr *ValidationError
				if !errors.As(err, &verr) {
					t.Fatalf("err = %v, want Istio's refusal", err)
				}
				if len(verr.Messages) != len(tc.wantErr) {
					t.Errorf("messages %q, want %d", verr.Messages, len(tc.wantErr))
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("err = %q, want it to contain %q", err, want)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("err = %q spans lines, want one line for logs and conditions", err)
				}
			}
			if got := strings.Join(warnings, "; "); (tc.wantWarning == "") != (got == "") || !strings.Contains(got, tc.wantWarning) {
				t.Errorf("warnings %q, want %q", got, tc.wantWarning)
			}
		})
	}
}

func setWeights(vs *networkingv1.VirtualService, blue, green int32) {
	vs.Spec.Http[0].Route[0].Weight, vs.Spec.Http[0].Route[1].Weight = blue, green
}

func TestOldestVirtualServiceWinsHost(t *testing.T) {
	old := weightedVS("checkout", 100, 0)
	old.Name, old.CreationTimestamp = "old", metav1.NewTime(time.Unix(100, 0))
	young := weightedVS("checkout", 0, 100)
	young.Name, young.CreationTimestamp = "young", metav1.NewTime(time.Unix(200, 0))
	w, svc := checkoutWorld(nil, young, old)
	got, _, _ := tally(w, svc, 100, Request{}, 5)
	if got["checkout-blue"] != 100 {
		t.Errorf("got %v, want the oldest VirtualService (all blue) to win", got)
	}
}

func TestLabelValuesBothReporters(t *testing.T) {
	w, svc := checkoutWorld(nil, weightedVS("checkout", 0, 100))
	o := w.Route(svc, Request{}, rand.New(rand.NewPCG(1, 1)))
	for _, reporter := range []string{"source", "destination"} {
		lv := labelValues(svc, o, reporter)
		if len(lv) != len(metricLabels) {
			t.Fatalf("%d values for %d labels", len(lv), len(metricLabels))
		}
		got := map[string]string{}
		for i, l := range metricLabels {
			got[l] = lv[i]
		}
		want := map[string]string{
			"reporter": reporter, "destination_workload": "checkout-green", "destination_workload_namespace": ns,
			"destination_service": "checkout.shop.svc.cluster.local", "destination_service_name": "checkout",
			"destination_app": "checkout", "response_code": "200", "response_flags": "-", "request_protocol": "http",
			"destination_canonical_revision": "latest",
			"pod":                            ClientPod,
		}
		if reporter == "destination" {
			want["pod"] = o.Endpoint.Pod.Name
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", reporter, k, got[k], v)
			}
		}
	}
}

func TestParseTraffic(t *testing.T) {
	cs, err := ParseTraffic(`[{"weight":90},{"weight":10,"headers":{"X-Beta":"1"}}]`)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	beta := 0
	for range 10000 {
		if cs.pick(rng).Headers["x-beta"] == "1" {
			beta++
		}
	}
	if d := math.Abs(float64(beta) - 1000); d > binomialTolerance(10000, 0.1) {
		t.Errorf("beta class drawn %d of 10000, want about 1000", beta)
	}
	for _, bad := range []string{`nope`, `[{"weight":0}]`, `[{"weight":-1},{"weight":2}]`} {
		if _, err := ParseTraffic(bad); err == nil {
			t.Errorf("ParseTraffic(%s) succeeded, want an error", bad)
		}
	}
}
