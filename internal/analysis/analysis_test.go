package analysis

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"k8s.io/utils/ptr"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestRenderEscapesValues(t *testing.T) {
	q, err := ParseQuery(`x{ns="{{ .Namespace }}",w=~"{{ .Candidate | regex }}"}[{{ .Window }}]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vars Vars
		want string
	}{
		{Vars{Namespace: "shop", Candidate: "checkout-green", Window: "1m"}, `x{ns="shop",w=~"checkout-green"}[1m]`},
		// A quote or backslash cannot close the string and add matchers.
		{Vars{Namespace: `shop",evil="1`, Candidate: `a\b`, Window: "30s"}, `x{ns="shop\",evil=\"1",w=~"a\\\\b"}[30s]`},
		// Regex metacharacters are quoted inside =~.
		{Vars{Namespace: "ns", Candidate: "a.b*", Window: "1m"}, `x{ns="ns",w=~"a\\.b\\*"}[1m]`},
	} {
		got, err := q.Render(tc.vars)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("Render(%+v)\n got %s\nwant %s", tc.vars, got, tc.want)
		}
	}
}

func TestBuiltinsRender(t *testing.T) {
	for _, name := range []string{"istio-success-rate", "istio-latency-p99"} {
		q, err := Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := q.Render(Vars{Namespace: "shop", Candidate: "checkout-green", Window: "1m"})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`destination_workload_namespace="shop"`, `destination_workload="checkout-green"`, `[1m]`, `reporter="destination"`} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: %s lacks %s", name, got, want)
			}
		}
	}
	if _, err := Builtin("nope"); err == nil {
		t.Error("unknown builtin accepted")
	}
}

func TestJudge(t *testing.T) {
	atLeast := Check{Name: "sr", Min: ptr.To(0.99)}
	atMost := Check{Name: "p99", Max: ptr.To(500.0)}
	vec := func(vs ...float64) model.Vector {
		out := model.Vector{}
		for _, v := range vs {
			out = append(out, &model.Sample{Value: model.SampleValue(v)})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		check Check
		in    model.Vector
		want  splitterv1.Verdict
	}{
		{"above min", atLeast, vec(0.995), splitterv1.VerdictPass},
		{"at min", atLeast, vec(0.99), splitterv1.VerdictPass},
		{"below min", atLeast, vec(0.7), splitterv1.VerdictFail},
		{"below max", atMost, vec(120), splitterv1.VerdictPass},
		{"above max", atMost, vec(600), splitterv1.VerdictFail},
		{"no series is no data, never a pass", atLeast, vec(), splitterv1.VerdictInconclusive},
		{"0/0 is no data", atLeast, vec(math.NaN()), splitterv1.VerdictInconclusive},
		{"infinite is no data", atMost, vec(math.Inf(1)), splitterv1.VerdictInconclusive},
		{"several series is an error", atLeast, vec(1, 1), splitterv1.VerdictError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Judge(tc.check, tc.in)
			if r.Verdict != tc.want {
				t.Errorf("verdict %s (%s), want %s", r.Verdict, r.Message, tc.want)
			}
			if r.Verdict == splitterv1.VerdictFail && !strings.Contains(r.Message, tc.check.Name) {
				t.Errorf("failure message %q does not name the check", r.Message)
			}
		})
	}
}
