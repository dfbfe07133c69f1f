// Package policy turns a SplitPolicy into a validated Plan. Every default
// lives here and nowhere else, so that `splitter policy lint` and the
// controller agree on what an omitted field means. Errors carry field paths.
package policy

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
)

// Defaults for omitted fields.
var (
	DefaultSteps = []int32{5, 10, 25, 50, 100}
)

const (
	DefaultStepDuration     = time.Minute
	DefaultStandby          = 10 * time.Minute
	DefaultProgressDeadline = 10 * time.Minute
	DefaultRouter           = splitterv1.RouterIstio
	DefaultSubsetLabel      = "track"
	// DefaultMaxExtensions is how many times a step whose checks are
	// Inconclusive or Error is held for another stepDuration before the
	// release is rolled back: lack of evidence is never a pass.
	DefaultMaxExtensions = 2

	// MinStepDuration keeps a check's window at least 4 scrape intervals at
	// a 1 s scrape; production Prometheus (15-30 s scrapes) wants 1m or more.
	MinStepDuration = 5 * time.Second
	// MaxWarmup bounds warmup: a candidate that needs longer to be itself
	// needs a longer first step, not a longer blind spot.
	MaxWarmup = 30 * time.Minute
	// MinProgressDeadline leaves room for pods to start.
	MinProgressDeadline = 10 * time.Second
	// MaxLooksPerStep bounds maxStepDuration / stepDuration: each look is
	// a share of the gates' Bonferroni budget and a status write.
	MaxLooksPerStep = 40
)

// Plan is a validated policy with every default applied.
type Plan struct {
	Steps        []int32
	StepDuration time.Duration
	Standby      time.Duration
	// StandbyWeight is the standby color's share (percent) during standby:
	// the watchdog's concurrent control.
	StandbyWeight int32
	// Warmup is how long after the candidate's first traffic its evidence
	// is held only to analysis.WarmupMaxRatio.
	Warmup                  time.Duration
	ProgressDeadline        time.Duration
	Router                  splitterv1.Router
	SubsetLabel             string
	ApproveBeforeFirstStep  bool
	ApproveBeforePromotion  bool
	KeepCandidateOnRollback bool
	MaxExtensions           int
	// MaxStepDuration, when set, makes steps end on evidence: judged every
	// StepDuration, MaxExtensions is the looks that fit in it less one.
	MaxStepDuration time.Duration
	// PrometheusAddress overrides the controller's default; empty uses it.
	PrometheusAddress string
	Checks            []analysis.Check

	// The count-based checks: SLOs, the false-rollback budget and its
	// split, the comparison with the live color (internal/analysis).
	analysis.Policy
	// Timing is the controller's, not the policy's: the controller sets it
	// from its --scrape-interval.
	Timing         analysis.Timing
	OnInconclusive string // pause or rollback
	OnError        string // pause or rollback
	// Hooks are the webhooks the release waits on, in policy order.
	Hooks []Hook
	// Receivers are where notifications go.
	Receivers []Receiver
}

// SLO is a compiled objective.
type SLO = analysis.SLO

// DefaultGRPCErrorCodes are the grpc-status codes counted as errors: the
// server's failures, not the client's (InvalidArgument, NotFound... are 4xx-like).
var DefaultGRPCErrorCodes = []int32{2, 4, 8, 13, 14, 15}

// Defaults of the count-based checks.
const (
	// DefaultAlpha is the release's false-rollback budget.
	DefaultAlpha          = 0.01
	DefaultMaxRatio       = 1.5
	DefaultFailRatio      = 2.0
	DefaultMargin         = 0.5
	DefaultOnInconclusive = "pause"
	DefaultOnError        = "rollback"
)

// Window is the range each check's query covers: one step.
func (p *Plan) Window() string { return analysis.FormatWindow(p.StepDuration) }

// Compile validates spec and returns its Plan, or every error found.
func Compile(spec splitterv1.SplitPolicySpec) (*Plan, field.ErrorList) {
	root := field.NewPath("spec")
	var errs field.ErrorList
	p := &Plan{
		Steps:                   DefaultSteps,
		StepDuration:            DefaultStepDuration,
		Standby:                 DefaultStandby,
		ProgressDeadline:        DefaultProgressDeadline,
		Router:                  DefaultRouter,
		SubsetLabel:             DefaultSubsetLabel,
		MaxExtensions:           DefaultMaxExtensions,
		KeepCandidateOnRollback: spec.KeepCandidateOnRollback,
		Policy:                  analysis.Policy{Alpha: DefaultAlpha, MaxRatio: DefaultMaxRatio, FailRatio: DefaultFailRatio, Margin: DefaultMargin},
		OnInconclusive:          DefaultOnInconclusive,
		OnError:                 DefaultOnError,
	}
	errs = append(errs, compileSLOs(root, spec, p)...)

	if len(spec.Steps) > 0 {
		p.Steps = append([]int32(nil), spec.Steps...)
		errs = append(errs, validateSteps(root.Child("steps"), spec.Steps)...)
	}
	if d := spec.StepDuration; d != nil {
		p.StepDuration = d.Duration
		if d.Duration < MinStepDuration {
			errs = append(errs, field.Invalid(root.Child("stepDuration"), d.Duration.String(),
				fmt.Sprintf("must be at least %s so each check's window holds enough scrapes", MinStepDuration)))
		}
	}
	if d := spec.Standby; d != nil {
		p.Standby = d.Duration
		if d.Duration < 0 {
			errs = append(errs, field.Invalid(root.Child("standby"), d.Duration.String(), "must not be negative"))
		}
	}
	if w := spec.StandbyWeight; w != 0 {
		p.StandbyWeight = w
		path := root.Child("standbyWeight")
		switch {
		case w < 0 || w > 50:
			errs = append(errs, field.Invalid(path, w, "must be between 0 and 50 (percent of traffic the standby color keeps)"))
		case len(spec.SLOs) == 0:
			errs = append(errs, field.Invalid(path, w, "is a control for the SLO watchdog: set slos, or leave it 0"))
		case spec.Router == splitterv1.RouterServiceSelector:
			errs = append(errs, field.Invalid(path, w, "the service-selector router sends all traffic to one color: leave it 0"))
		}
	}
	if d := spec.Warmup; d != nil {
		p.Warmup = d.Duration
		path := root.Child("warmup")
		switch {
		case d.Duration < 0 || d.Duration > MaxWarmup:
			errs = append(errs, field.Invalid(path, d.Duration.String(), fmt.Sprintf("must be between 0 and %s", MaxWarmup)))
		case d.Duration > 0 && len(spec.SLOs) == 0:
			errs = append(errs, field.Invalid(path, d.Duration.String(), "applies to the SLO evidence: set slos, or leave it out"))
		}
	}
	if d := spec.ProgressDeadline; d != nil {
		p.ProgressDeadline = d.Duration
		if d.Duration < MinProgressDeadline {
			errs = append(errs, field.Invalid(root.Child("progressDeadline"), d.Duration.String(),
				fmt.Sprintf("must be at least %s", MinProgressDeadline)))
		}
	}
	if spec.Router != "" {
		p.Router = spec.Router
		if spec.Router != splitterv1.RouterIstio && spec.Router != splitterv1.RouterServiceSelector {
			errs = append(errs, field.NotSupported(root.Child("router"), spec.Router,
				[]string{string(splitterv1.RouterIstio), string(splitterv1.RouterServiceSelector)}))
		}
	}
	if spec.SubsetLabel != "" {
		p.SubsetLabel = spec.SubsetLabel
		for _, msg := range validation.IsQualifiedName(spec.SubsetLabel) {
			errs = append(errs, field.Invalid(root.Child("subsetLabel"), spec.SubsetLabel, msg))
		}
	}
	if p.Router == splitterv1.RouterServiceSelector {
		// A selector picks one color: the cutover is a single step.
		if len(spec.Steps) == 0 {
			p.Steps = []int32{100}
		} else if len(spec.Steps) != 1 || spec.Steps[0] != 100 {
			errs = append(errs, field.Invalid(root.Child("steps"), spec.Steps,
				"the service-selector router switches all traffic at once: steps must be [100] (or omitted)"))
		}
	}
	if a := spec.Approval; a != nil {
		p.ApproveBeforeFirstStep, p.ApproveBeforePromotion = a.BeforeFirstStep, a.BeforePromotion
	}
	if pr := spec.Prometheus; pr != nil {
		p.PrometheusAddress = pr.Address
		if u, err := url.Parse(pr.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, field.Invalid(root.Child("prometheus", "address"), pr.Address, "must be an http(s) URL such as http://prometheus.monitoring:9090"))
		}
	}

	seen := map[string]bool{}
	for i, c := range spec.Checks {
		path := root.Child("checks").Index(i)
		check, cerrs := compileCheck(path, c)
		errs = append(errs, cerrs...)
		if seen[c.Name] {
			errs = append(errs, field.Duplicate(path.Child("name"), c.Name))
		}
		seen[c.Name] = true
		if len(cerrs) == 0 {
			p.Checks = append(p.Checks, check)
		}
	}
	errs = append(errs, compileHooks(root, spec, p)...)
	errs = append(errs, compileReceivers(root, spec, p)...)
	errs = append(errs, compileMaxStepDuration(root, spec, p)...)
	p.Steps = CapSteps(p.Steps, p.StandbyWeight)
	p.Looks = len(p.Steps) * (1 + p.MaxExtensions)
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// compileMaxStepDuration turns maxStepDuration into the looks a step gets:
// one every stepDuration, the last at or before maxStepDuration. The
// extension machinery is the same (and so is the gates' budget, Bonferroni
// over every look); what changes is that a user who sets objectives need
// not size steps: a step ends as soon as its gate's bound is met.
func compileMaxStepDuration(root *field.Path, spec splitterv1.SplitPolicySpec, p *Plan) field.ErrorList {
	d := spec.MaxStepDuration
	if d == nil {
		return nil
	}
	path := root.Child("maxStepDuration")
	switch {
	case spec.MaxExtensions != nil:
		return field.ErrorList{field.Invalid(path, d.Duration.String(),
			"set maxExtensions or maxStepDuration, not both: with maxStepDuration a step is judged every stepDuration until it passes or maxStepDuration is reached")}
	case d.Duration < p.StepDuration:
		return field.ErrorList{field.Invalid(path, d.Duration.String(), fmt.Sprintf("must be at least stepDuration (%s)", p.StepDuration))}
	case d.Duration > MaxLooksPerStep*p.StepDuration:
		return field.ErrorList{field.Invalid(path, d.Duration.String(), fmt.Sprintf(
			"allows at most %d looks a step, one every stepDuration: at most %s with stepDuration %s (or lengthen stepDuration)", MaxLooksPerStep, MaxLooksPerStep*p.StepDuration, p.StepDuration))}
	}
	p.MaxStepDuration = d.Duration
	p.MaxExtensions = int(d.Duration/p.StepDuration) - 1
	return nil
}

// CapSteps keeps the candidate at most 100 - standbyWeight until standby
// ends: with a control, the live color always carries that share, so the
// watchdog judges the candidate against traffic of the same minute and
// never against the live color's rate of earlier on (which a rate both
// colors share can drift past, and any incident both share looks like a
// regression against). Steps above the cap merge into it.
func CapSteps(steps []int32, standbyWeight int32) []int32 {
	if standbyWeight <= 0 {
		return steps
	}
	out := make([]int32, 0, len(steps))
	for _, w := range steps {
		w = min(w, 100-standbyWeight)
		if len(out) == 0 || w > out[len(out)-1] {
			out = append(out, w)
		}
	}
	return out
}

func validateSteps(path *field.Path, steps []int32) field.ErrorList {
	var errs field.ErrorList
	for i, w := range steps {
		if w < 1 || w > 100 {
			errs = append(errs, field.Invalid(path.Index(i), w, "must be between 1 and 100"))
		}
		if i > 0 && w <= steps[i-1] {
			errs = append(errs, field.Invalid(path.Index(i), w, fmt.Sprintf("must be greater than the step before it (%d): steps are strictly increasing", steps[i-1])))
		}
	}
	if last := steps[len(steps)-1]; last != 100 {
		errs = append(errs, field.Invalid(path.Index(len(steps)-1), last, "the last step must be 100: a release ends with the candidate taking all traffic"))
	}
	return errs
}

func compileCheck(path *field.Path, c splitterv1.Check) (analysis.Check, field.ErrorList) {
	var errs field.ErrorList
	out := analysis.Check{Name: c.Name}
	if c.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), "each check needs a name"))
	} else if msgs := validation.IsDNS1123Label(c.Name); len(msgs) > 0 {
		errs = append(errs, field.Invalid(path.Child("name"), c.Name, msgs[0]))
	}
	switch {
	case c.Builtin != "" && c.Query != "":
		errs = append(errs, field.Invalid(path, c.Name, "set exactly one of builtin and query, not both"))
	case c.Builtin != "":
		q, err := analysis.Builtin(string(c.Builtin))
		if err != nil {
			errs = append(errs, field.NotSupported(path.Child("builtin"), c.Builtin,
				[]string{string(splitterv1.BuiltinSuccessRate), string(splitterv1.BuiltinLatencyP99)}))
		}
		out.Query = q
	case c.Query != "":
		q, err := analysis.ParseQuery(c.Query)
		if err != nil {
			errs = append(errs, field.Invalid(path.Child("query"), c.Query,
				"not a valid template (fields: .Namespace .Workload .Service .Candidate .Live .Window): "+err.Error()))
		}
		out.Query = q
	default:
		errs = append(errs, field.Required(path, "set one of builtin and query"))
	}
	parse := func(name string, s *string) *float64 {
		if s == nil {
			return nil
		}
		f, err := strconv.ParseFloat(*s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, field.Invalid(path.Child(name), *s, "must be a decimal number such as \"0.99\""))
			return nil
		}
		return &f
	}
	out.Min, out.Max = parse("min", c.Min), parse("max", c.Max)
	if c.Min == nil && c.Max == nil {
		errs = append(errs, field.Required(path.Child("min"), "set min, max or both: a check without a bound cannot fail"))
	}
	if out.Min != nil && out.Max != nil && *out.Min > *out.Max {
		errs = append(errs, field.Invalid(path.Child("max"), *c.Max, fmt.Sprintf("must not be below min (%s)", *c.Min)))
	}
	return out, errs
}

// probability parses a level such as "0.01" that must lie in (0, 0.5].
func probability(path *field.Path, s string, errs *field.ErrorList) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0 && f <= 0.5) {
		*errs = append(*errs, field.Invalid(path, s, "must be a probability in (0, 0.5], such as \"0.01\""))
		return 0
	}
	return f
}

// compileSLOs fills the count-based part of the plan.
func compileSLOs(root *field.Path, spec splitterv1.SplitPolicySpec, p *Plan) field.ErrorList {
	var errs field.ErrorList
	if spec.Alpha != "" {
		p.Alpha = probability(root.Child("alpha"), spec.Alpha, &errs)
	}
	if c := spec.Compare; c != nil {
		for _, r := range []struct {
			name string
			raw  string
			dst  *float64
		}{{"maxRatio", c.MaxRatio, &p.MaxRatio}, {"failRatio", c.FailRatio, &p.FailRatio}} {
			if r.raw == "" {
				continue
			}
			f, err := strconv.ParseFloat(r.raw, 64)
			if err != nil || f < 1 {
				errs = append(errs, field.Invalid(root.Child("compare", r.name), r.raw, "must be a ratio of at least 1, such as \"1.5\""))
				continue
			}
			*r.dst = f
		}
		if p.FailRatio < p.MaxRatio {
			errs = append(errs, field.Invalid(root.Child("compare", "failRatio"), c.FailRatio, fmt.Sprintf("must not be below maxRatio (%g)", p.MaxRatio)))
		}
		if c.Margin != "" {
			f, err := strconv.ParseFloat(c.Margin, 64)
			if err != nil || f <= 0 || f > 1 {
				errs = append(errs, field.Invalid(root.Child("compare", "margin"), c.Margin, "must be a share of the error budget in (0, 1], such as \"0.5\""))
			} else {
				p.Margin = f
			}
		}
	}
	if w := spec.Watchdog; w != nil && w.Alpha != "" {
		errs = append(errs, field.Invalid(root.Child("watchdog", "alpha"), w.Alpha,
			"no longer used: spec.alpha is the whole release's false-rollback budget (default 0.01) and the watchdog takes a fixed share of it; remove this field"))
	}
	if spec.OnInconclusive != "" {
		p.OnInconclusive = spec.OnInconclusive
	}
	if spec.OnError != "" {
		p.OnError = spec.OnError
	}
	for _, v := range []struct{ name, val string }{{"onInconclusive", p.OnInconclusive}, {"onError", p.OnError}} {
		if v.val != "pause" && v.val != "rollback" {
			errs = append(errs, field.NotSupported(root.Child(v.name), v.val, []string{"pause", "rollback"}))
		}
	}
	if spec.MaxExtensions != nil {
		p.MaxExtensions = int(*spec.MaxExtensions)
		if p.MaxExtensions < 0 {
			errs = append(errs, field.Invalid(root.Child("maxExtensions"), *spec.MaxExtensions, "must not be negative"))
		}
	}
	seen := map[string]bool{}
	for i, s := range spec.SLOs {
		path := root.Child("slos").Index(i)
		slo := SLO{Name: s.Name}
		if seen[s.Name] {
			errs = append(errs, field.Duplicate(path.Child("name"), s.Name))
		}
		seen[s.Name] = true
		obj, err := strconv.ParseFloat(s.Objective, 64)
		if err != nil || obj <= 0 || obj >= 100 {
			errs = append(errs, field.Invalid(path.Child("objective"), s.Objective, "must be a percentage between 0 and 100 (exclusive), such as \"99.9\""))
		}
		slo.Objective = obj / 100
		switch s.Name {
		case "availability":
			if s.Threshold != nil {
				errs = append(errs, field.Forbidden(path.Child("threshold"), "only a latency SLO has a threshold"))
			}
			slo.GRPCErrorCodes = DefaultGRPCErrorCodes
			if s.GRPCErrorCodes != nil {
				slo.GRPCErrorCodes = s.GRPCErrorCodes
			}
		case "latency":
			if s.Threshold == nil {
				errs = append(errs, field.Required(path.Child("threshold"), "a latency SLO needs a threshold, such as 250ms"))
				break
			}
			ms := float64(s.Threshold.Duration) / float64(time.Millisecond)
			if !isBucket(ms) {
				errs = append(errs, field.Invalid(path.Child("threshold"), s.Threshold.Duration.String(),
					fmt.Sprintf("must be one of Istio's histogram bucket boundaries (ms: %s): slow requests are counted at a boundary", bucketList())))
			}
			slo.ThresholdMs = ms
		default:
			errs = append(errs, field.NotSupported(path.Child("name"), s.Name, []string{"availability", "latency"}))
		}
		p.SLOs = append(p.SLOs, slo)
	}
	p.WatchdogOn = len(p.SLOs) > 0 && (spec.Watchdog == nil || !spec.Watchdog.Disabled)
	return errs
}

func isBucket(ms float64) bool {
	for _, b := range analysis.IstioBuckets {
		if math.Abs(b-ms) < 1e-9 {
			return true
		}
	}
	return false
}

func bucketList() string {
	parts := make([]string, len(analysis.IstioBuckets))
	for i, b := range analysis.IstioBuckets {
		parts[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return strings.Join(parts, ", ")
}
