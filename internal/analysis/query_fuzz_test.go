package analysis

// Fuzz tests of every place a value is put into PromQL: each rendered
// query goes through Prometheus' own parser (the version of the
// Prometheus the test bed runs) and its syntax tree is compared with the
// tree of the same query rendered with plain sentinel values: the same
// nodes, the same matchers and literals, and each value exactly where its
// sentinel was, as one string (through `regex`: quoted with QuoteMeta, a
// regular expression that matches the value).

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// promql parses q as the Prometheus server does by default.
var promql = parser.NewParser(parser.Options{})

// leaf is a value the syntax tree holds: a label matcher or a string literal.
type leaf struct {
	Node  string // the node's type, and the label and operator of a matcher
	Value string
	m     *labels.Matcher
}

// shape lists the tree's node types in walk order, and its leaves.
func shape(t *testing.T, q string) ([]string, []leaf) {
	t.Helper()
	expr, err := promql.ParseExpr(q)
	if err != nil {
		t.Fatalf("Prometheus' parser rejects the rendered query: %v\n%s", err, q)
	}
	var nodes []string
	var leaves []leaf
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		nodes = append(nodes, fmt.Sprintf("%T", n))
		switch n := n.(type) {
		case *parser.VectorSelector:
			for _, m := range n.LabelMatchers {
				leaves = append(leaves, leaf{Node: "matcher " + m.Name + m.Type.String(), Value: m.Value, m: m})
			}
		case *parser.MatrixSelector:
			nodes = append(nodes, "range "+n.Range.String())
		case *parser.StringLiteral:
			leaves = append(leaves, leaf{Node: "string", Value: n.Val})
		}
		return nil
	})
	return nodes, leaves
}

// ranges are the range selectors among nodes.
func ranges(nodes []string) string {
	var out []string
	for _, n := range nodes {
		if strings.HasPrefix(n, "range ") {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}

// sentinels are plain values with a regex metacharacter, so that a value
// and its `regex` form tell apart.
var sentinels = Vars{Namespace: "sentinel.ns", Workload: "sentinel.wl", Service: "sentinel.svc",
	Candidate: "sentinel.cand", Live: "sentinel.live", Window: "7m13s"}

func varList(v Vars) []string {
	return []string{v.Namespace, v.Workload, v.Service, v.Candidate, v.Live}
}

// templates are every query template splitter ships or shows: the
// builtins, the checks of config/samples, and one that uses every
// value in every place a value may go.
func templates(t testing.TB) map[string]*Query {
	out := map[string]*Query{}
	for name := range builtins {
		q, err := Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = q
	}
	files, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---") {
			var p splitterv1.SplitPolicy
			if err := yaml.Unmarshal([]byte(doc), &p); err != nil || p.Kind != "SplitPolicy" {
				continue
			}
			for _, c := range p.Spec.Checks {
				if c.Query == "" {
					continue
				}
				q, err := ParseQuery(c.Query)
				if err != nil {
					t.Fatalf("%s: check %s: %v", f, c.Name, err)
				}
				out[fmt.Sprintf("%s#%d/%s", filepath.Base(f), i, c.Name)] = q
			}
		}
	}
	every, err := ParseQuery(`sum by (pod) (rate(x{a="{{ .Namespace }}",b!="{{ .Workload }}",c=~"{{ .Service | regex }}",d!~"{{ .Candidate | regex }}-.+"}[{{ .Window }}]))
  / on (pod) group_left label_replace({__name__=~"y|z",e="{{ .Live }}"}, "dst", "{{ .Candidate }}", "src", "(.*){{ .Live | regex }}")`)
	if err != nil {
		t.Fatal(err)
	}
	out["every-place"] = every
	return out
}

// checkRender renders q with v and compares it with the sentinel rendering.
func checkRender(t *testing.T, name string, q *Query, v Vars) {
	t.Helper()
	got, err := q.Render(v)
	for _, s := range varList(v) {
		if !utf8.ValidString(s) {
			if err == nil {
				t.Fatalf("%s: a value that is not UTF-8 was rendered: %q", name, got)
			}
			return
		}
	}
	if d, perr := model.ParseDuration(v.Window); perr != nil || d <= 0 {
		if err == nil {
			t.Fatalf("%s: window %q was rendered: %q", name, v.Window, got)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: Render(%q): %v", name, v, err)
	}
	ref, err := q.Render(sentinels)
	if err != nil {
		t.Fatal(err)
	}
	wantNodes, wantLeaves := shape(t, ref)
	nodes, leaves := shape(t, got)
	// The window is the one value not a string: it may only change the range.
	win, _ := model.ParseDuration(v.Window)
	for i := range wantNodes {
		if wantNodes[i] == "range 7m13s" {
			wantNodes[i] = "range " + time.Duration(win).String()
		}
	}
	if !reflect.DeepEqual(nodes, wantNodes) || len(leaves) != len(wantLeaves) {
		t.Fatalf("%s: the values changed the query's structure\nvalues %q\n got %s\nwant %s", name, v, got, ref)
	}
	// Where a sentinel was, its value is; elsewhere nothing changed.
	var pairs []string
	for i, s := range varList(sentinels) {
		pairs = append(pairs, regexp.QuoteMeta(s), regexp.QuoteMeta(varList(v)[i]))
	}
	for i, s := range varList(sentinels) {
		pairs = append(pairs, s, varList(v)[i])
	}
	subst := strings.NewReplacer(pairs...)
	for i, w := range wantLeaves {
		g := leaves[i]
		if g.Node != w.Node || g.Value != subst.Replace(w.Value) {
			t.Fatalf("%s: leaf %d is %s %q, want %s %q\nvalues %q\nquery %s", name, i, g.Node, g.Value, w.Node, subst.Replace(w.Value), v, got)
		}
		// A value quoted by `regex` matches itself as a whole.
		if w.m != nil && (w.m.Type == labels.MatchRegexp || w.m.Type == labels.MatchNotRegexp) {
			for j, s := range varList(sentinels) {
				if w.Value == regexp.QuoteMeta(s) {
					if val := varList(v)[j]; !g.m.Matches(val) == (w.m.Type == labels.MatchRegexp) {
						t.Fatalf("%s: leaf %d, %s, does not match its value %q", name, i, g.m, val)
					}
				}
			}
		}
	}
}

// FuzzRender puts arbitrary bytes in every value of every template.
func FuzzRender(f *testing.F) {
	for _, s := range []string{
		"", "shop", `"`, `\`, `\"`, "\n", "\r\n", "\t", "}", "{", "`", "'", "\x00", "\xff", "a\xc3", "\uFFFD",
		`a",b="c`, `"} or vector(1) #`, `.*`, `a|b`, `(`, `\\uFFFD`, `\uFFFD`, "\u2028", "é", "日本",
	} {
		f.Add(s, "checkout", "checkout", s+"-green", "checkout-blue", int64(time.Minute))
		f.Add("shop", s, s, "x-green", s, int64(5*time.Second))
	}
	f.Add("ns", "w", "s", "c", "l", int64(0))
	f.Add("ns", "w", "s", "c", "l", int64(-time.Second))
	f.Add("ns", "w", "s", "c", "l", int64(math.MaxInt64))
	tmpls := templates(f)
	f.Fuzz(func(t *testing.T, ns, workload, service, candidate, live string, window int64) {
		v := Vars{Namespace: ns, Workload: workload, Service: service, Candidate: candidate, Live: live,
			Window: FormatWindow(time.Duration(window) % maxWindow)}
		for name, q := range tmpls {
			checkRender(t, name, q, v)
		}
	})
}

// maxWindow bounds the windows fuzzed: Prometheus' parser reads a range
// through a float64 of nanoseconds, exact for whole seconds up to about
// 146 years; a step of a century is not a step.
const maxWindow = 100 * 365 * 24 * time.Hour

// FuzzWindow: any step duration the controller may use is a range
// Prometheus reads back as the same number of seconds.
func FuzzWindow(f *testing.F) {
	for _, d := range []time.Duration{5 * time.Second, time.Minute, 90 * time.Second, 1500 * time.Millisecond, 499 * time.Millisecond, 365 * 24 * time.Hour, maxWindow} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, d int64) {
		dur := time.Duration(d)
		if dur < 500*time.Millisecond || dur > maxWindow {
			t.Skip("not a window: below a second after rounding, or over maxWindow")
		}
		w := FormatWindow(dur)
		nodes, _ := shape(t, "x["+w+"]")
		if got, want := ranges(nodes), "range "+dur.Round(time.Second).String(); got != want {
			t.Fatalf("FormatWindow(%s) = %s, parsed as %s, want %s", dur, w, got, want)
		}
	})
}

// FuzzLatencyQuery: the latency SLO's threshold, whatever the float,
// gives a query whose `le` matcher takes the threshold's bucket (as 250,
// 250.0 or 2.5e+02) and +Inf, and no other bucket boundary of Istio's.
func FuzzLatencyQuery(f *testing.F) {
	for _, b := range append([]float64{0, -1, 0.5, 1e-300, 1e300, math.Inf(1), math.NaN(), 2.5}, IstioBuckets...) {
		f.Add(b, int64(15*time.Second))
	}
	f.Add(250.0, int64(0))
	f.Add(250.0, int64(maxWindow/3))
	f.Fuzz(func(t *testing.T, threshold float64, scrape int64) {
		if time.Duration(scrape) > maxWindow/3 {
			t.Skip("the window is 3 scrapes: over maxWindow")
		}
		q := LatencyQuery(threshold, time.Duration(scrape))
		_, leaves := shape(t, q)
		var le *labels.Matcher
		for _, l := range leaves {
			if l.m != nil && l.m.Name == "le" {
				le = l.m
			}
		}
		if le == nil || le.Type != labels.MatchRegexp {
			t.Fatalf("no le=~ matcher in %s", q)
		}
		s := strconv.FormatFloat(threshold, 'f', -1, 64)
		// Prometheus 2 keeps the target's spelling (250, Go's %g); 3
		// stores the OpenMetrics one (250.0, 1.8e+06).
		for _, want := range []string{s, strconv.FormatFloat(threshold, 'g', -1, 64), labels.FormatOpenMetricsFloat(threshold), "+Inf"} {
			if !le.Matches(want) {
				t.Errorf("%s does not match le=%q", le, want)
			}
		}
		for _, b := range IstioBuckets {
			if o := strconv.FormatFloat(b, 'f', -1, 64); o != s && o+".0" != s && le.Matches(o) {
				t.Errorf("%s also matches bucket le=%q (threshold %v)", le, o, threshold)
			}
		}
	})
}

// FuzzAvailabilityQueries: any scrape interval gives queries Prometheus
// parses, each over a range of at least four scrapes and 5s.
func FuzzAvailabilityQueries(f *testing.F) {
	for _, d := range []time.Duration{0, -time.Second, time.Second, 15 * time.Second, 1234567 * time.Microsecond, maxWindow / 3} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, scrape int64) {
		s := time.Duration(scrape)
		if s > maxWindow/3 {
			t.Skip("the window is 3 scrapes: over maxWindow")
		}
		if s <= 0 {
			s = 15 * time.Second
		}
		want := "range " + max(4*s, 5*time.Second).Round(time.Second).String()
		for _, q := range AvailabilityQueries(time.Duration(scrape)) {
			nodes, _ := shape(t, q)
			if got := ranges(nodes); got != want {
				t.Errorf("%s: %s, want %s", q, got, want)
			}
		}
	})
}

// TestRenderEdgeValues are the cases the fuzzers found or that the
// escaping has to get right, as a table.
func TestRenderEdgeValues(t *testing.T) {
	q, err := ParseQuery(`x{ns="{{ .Namespace }}",w=~"{{ .Candidate | regex }}"}[{{ .Window }}]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		vars    Vars
		want    string
		wantErr string
	}{
		// Prometheus' lexer reads a literal U+FFFD as an invalid byte.
		{"U+FFFD", Vars{Namespace: "a\uFFFDb", Candidate: "\uFFFD", Window: "1m"}, `x{ns="a\uFFFDb",w=~"\uFFFD"}[1m]`, ""},
		{"backslash-u text", Vars{Namespace: `\uFFFD`, Candidate: `\uFFFD`, Window: "1m"}, `x{ns="\\uFFFD",w=~"\\\\uFFFD"}[1m]`, ""},
		{"NUL and controls", Vars{Namespace: "a\x00\r\t\n", Candidate: "b", Window: "1m"}, "x{ns=\"a\x00\\r\\t\\n\",w=~\"b\"}[1m]", ""},
		{"invalid UTF-8", Vars{Namespace: "a\xff", Candidate: "b", Window: "1m"}, "", `Namespace "a\xff" is not valid UTF-8`},
		{"invalid UTF-8 in regex", Vars{Namespace: "a", Candidate: "\xc3", Window: "1m"}, "", `Candidate "\xc3" is not valid UTF-8`},
		{"window injection", Vars{Namespace: "a", Candidate: "b", Window: "1m]) or vector(1"}, "", `Window "1m]) or vector(1" is not a positive Prometheus duration`},
		{"zero window", Vars{Namespace: "a", Candidate: "b", Window: "0s"}, "", `Window "0s" is not a positive`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := q.Render(tc.vars)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Render = %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Render = %q, %v; want %q", got, err, tc.want)
			}
			checkRender(t, tc.name, q, tc.vars)
		})
	}
}
