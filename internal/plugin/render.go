package plugin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/policy"
)

// View is how a renderer draws: the terminal's width, whether to use
// colour, and the instant "now" (renderers never look at the clock or the
// terminal themselves, so golden tests are exact).
type View struct {
	Now   time.Time
	Width int
	Color bool
}

func (v View) width() int {
	if v.Width < 30 {
		return 30
	}
	return v.Width
}

// ANSI colours, used only when View.Color.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiBlue   = "\x1b[34m"
	ansiDim    = "\x1b[2m"
)

func (v View) paint(code, s string) string {
	if !v.Color || s == "" {
		return s
	}
	return code + s + ansiReset
}

// colorName paints a colour's name in that colour.
func (v View) colorName(c splitterv1.Color) string {
	switch c {
	case splitterv1.Blue:
		return v.paint(ansiBlue, string(c))
	case splitterv1.Green:
		return v.paint(ansiGreen, string(c))
	}
	return "-"
}

func (v View) verdict(vd splitterv1.Verdict) string {
	switch vd {
	case splitterv1.VerdictPass:
		return v.paint(ansiGreen, string(vd))
	case splitterv1.VerdictFail, splitterv1.VerdictError:
		return v.paint(ansiRed, string(vd))
	case splitterv1.VerdictInconclusive:
		return v.paint(ansiYellow, string(vd))
	}
	return string(vd)
}

func (v View) phase(p splitterv1.Phase) string {
	switch p {
	case splitterv1.PhaseRollingBack, splitterv1.PhaseRolledBack:
		return v.paint(ansiRed, string(p))
	case splitterv1.PhaseAwaitingApproval:
		return v.paint(ansiYellow, string(p))
	case splitterv1.PhaseShifting, splitterv1.PhasePreparing:
		return v.paint(ansiBold, string(p))
	case "":
		return "-"
	}
	return string(p)
}

func (v View) outcome(o splitterv1.Outcome) string {
	if o == splitterv1.OutcomePromoted {
		return v.paint(ansiGreen, string(o))
	}
	return v.paint(ansiRed, string(o))
}

// planOf is what the renderers need of the policy in status, with the
// controller's defaults (a policy that no longer compiles still shows).
type planOf struct {
	steps         []int32
	stepDuration  time.Duration
	standby       time.Duration
	standbyWeight int32
	maxExtensions int32
}

func planFor(spec *splitterv1.SplitPolicySpec) planOf {
	p := planOf{steps: policy.DefaultSteps, stepDuration: policy.DefaultStepDuration, standby: policy.DefaultStandby, maxExtensions: policy.DefaultMaxExtensions}
	if spec == nil {
		return p
	}
	if len(spec.Steps) > 0 {
		p.steps = spec.Steps
	}
	if spec.StepDuration != nil {
		p.stepDuration = spec.StepDuration.Duration
	}
	if spec.Standby != nil {
		p.standby = spec.Standby.Duration
	}
	p.standbyWeight = spec.StandbyWeight
	p.steps = policy.CapSteps(p.steps, p.standbyWeight)
	if spec.MaxExtensions != nil {
		p.maxExtensions = *spec.MaxExtensions
	}
	return p
}

// InProgress says a release is under way: traffic may be on the candidate
// or is about to be.
func InProgress(p splitterv1.Phase) bool {
	switch p {
	case splitterv1.PhasePreparing, splitterv1.PhaseShifting, splitterv1.PhaseAwaitingApproval:
		return true
	}
	return false
}

// short prints a duration as people read it: 34s, 4m12s, 1h3m.
func short(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		m, s := int(d.Minutes()), int(d.Seconds())%60
		if s == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s)
	case d < 48*time.Hour:
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	return fmt.Sprintf("%dd", int(d.Hours())/24)
}

// ago says how long before now t was.
func ago(now time.Time, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return short(now.Sub(t))
}

// thousands prints 30511 as 30,511.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func rev(r string) string {
	if r == "" {
		return "-"
	}
	return r
}

// wrap breaks text into lines of at most width runes (words longer than
// that are cut), the first prefixed by first and the rest by indent.
func wrap(text string, width int, first, indent string) []string {
	var out []string
	line := first
	empty := true
	limit := func() int { return width }
	for _, w := range strings.Fields(text) {
		for len([]rune(w)) > limit()-len([]rune(indent)) && limit()-len([]rune(indent)) > 0 {
			// A word longer than a line: cut it.
			room := limit() - len([]rune(line))
			if !empty {
				room--
			}
			if room <= 0 {
				out = append(out, line)
				line, empty = indent, true
				continue
			}
			rw := []rune(w)
			if !empty {
				line += " "
			}
			line += string(rw[:room])
			out = append(out, line)
			line, empty = indent, true
			w = string(rw[room:])
		}
		switch {
		case empty:
			line += w
			empty = false
		case len([]rune(line))+1+len([]rune(w)) <= limit():
			line += " " + w
		default:
			out = append(out, line)
			line = indent + w
		}
	}
	if !empty || len(out) == 0 {
		out = append(out, line)
	}
	return out
}

// table pads cells into columns two spaces apart (widths in runes,
// ignoring ANSI codes).
func table(rows [][]string) []string {
	widths := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			if n := visible(c); n > widths[i] {
				widths[i] = n
			}
		}
	}
	var out []string
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-visible(c)+2))
			}
		}
		out = append(out, b.String())
	}
	return out
}

// visible counts the runes a terminal shows (ANSI codes excluded).
func visible(s string) int {
	n, esc := 0, false
	for _, r := range s {
		switch {
		case esc:
			if r == 'm' {
				esc = false
			}
		case r == '\x1b':
			esc = true
		default:
			n++
		}
	}
	return n
}

// bar draws the candidate's share of traffic as a bar of n cells: filled
// (#) for the candidate, dots for the live colour.
func (v View) bar(weight int32, n int) string {
	if n < 4 {
		n = 4
	}
	w := int(weight)
	if w < 0 {
		w = 0
	}
	if w > 100 {
		w = 100
	}
	filled := (w*n + 50) / 100
	if w > 0 && filled == 0 {
		filled = 1
	}
	if w < 100 && filled == n {
		filled = n - 1
	}
	return "[" + v.paint(ansiGreen, strings.Repeat("#", filled)) + v.paint(ansiBlue, strings.Repeat(".", n-filled)) + "]"
}

// counts finds the step's evidence for one SLO and colour.
func counts(s *splitterv1.Split, slo string, c splitterv1.Color) (splitterv1.CountTotal, bool) {
	if s.Status.Analysis == nil {
		return splitterv1.CountTotal{}, false
	}
	for _, ct := range s.Status.Analysis.Step {
		if ct.SLO == slo && ct.Color == c {
			return ct, true
		}
	}
	return splitterv1.CountTotal{}, false
}

// countText says "3,412 requests, 72 bad (2.11%)".
func countText(ct splitterv1.CountTotal) string {
	if ct.Requests <= 0 {
		return "no requests"
	}
	return fmt.Sprintf("%s requests, %s bad (%s%%)", thousands(ct.Requests), thousands(ct.Bad), pct(ct.Bad, ct.Requests))
}

func pct(bad, n int64) string {
	if n <= 0 {
		return "0"
	}
	p := 100 * float64(bad) / float64(n)
	switch {
	case p == 0:
		return "0"
	case p < 0.01:
		return fmt.Sprintf("%.3g", p)
	case p < 10:
		return fmt.Sprintf("%.2f", p)
	}
	return fmt.Sprintf("%.1f", p)
}

// stepText says "step 2/5 (10%)".
func stepText(s *splitterv1.Split, p planOf) string {
	st := s.Status
	if st.Step <= 0 {
		return fmt.Sprintf("step 0/%d", len(p.steps))
	}
	return fmt.Sprintf("step %d/%d (%d%%)", st.Step, len(p.steps), st.Weight)
}

// timeLeft is the step's remaining hold: stepStartedAt + stepDuration ×
// (1 + extensions) − now. Evidence only counts once the weights settled,
// so it is "about".
func timeLeft(s *splitterv1.Split, p planOf, now time.Time) (time.Duration, bool) {
	st := s.Status
	if st.Phase != splitterv1.PhaseShifting || st.StepStartedAt == nil {
		return 0, false
	}
	end := st.StepStartedAt.Add(p.stepDuration * time.Duration(1+st.Extensions))
	return end.Sub(now), true
}

// RenderSplit draws one Split for `kubectl splitter get`.
func RenderSplit(s *splitterv1.Split, v View) string {
	st := s.Status
	p := planFor(st.Policy)
	w := v.width()
	var lines []string
	add := func(l ...string) { lines = append(lines, l...) }
	field := func(name, text string) {
		add(wrap(text, w, fmt.Sprintf("%-10s", name), strings.Repeat(" ", 10))...)
	}

	add(wrap(fmt.Sprintf("%s/%s (policy %s, workload %s)", s.Namespace, s.Name, s.Spec.Policy, s.Spec.Workload), w, v.paint(ansiBold, "Split")+" ", "      ")...)
	phase := v.phase(st.Phase)
	if InProgress(st.Phase) || st.Phase == splitterv1.PhaseRollingBack {
		phase += ", " + stepText(s, p)
	}
	if st.PausedAt != nil {
		phase += ", " + v.paint(ansiYellow, "PAUSED") + " for " + ago(v.Now, st.PausedAt.Time)
	}
	if st.Attempt > 1 {
		phase += fmt.Sprintf(", attempt %d", st.Attempt)
	}
	field("Phase", phase)

	liveWeight := int32(100)
	if st.Candidate != "" && (InProgress(st.Phase)) {
		liveWeight = 100 - st.Weight
	}
	field("Live", fmt.Sprintf("%s  revision %s  %d%%", v.colorName(st.Live), rev(st.LiveRevision), liveWeight))
	if st.Candidate != "" {
		cw := st.Weight
		if !InProgress(st.Phase) {
			cw = 0
		}
		field("Candidate", fmt.Sprintf("%s  revision %s  %d%%  (%s)", v.colorName(st.Candidate), rev(st.CandidateRevision), cw, candidateState(st.Phase)))
	}
	if st.Standby != "" {
		kept := "kept running for instant rollback"
		if p.standbyWeight > 0 {
			kept = fmt.Sprintf("keeps %d%% as the watchdog's control, for instant rollback", p.standbyWeight)
		}
		field("Standby", fmt.Sprintf("%s  revision %s  (%s, %s standby)", v.colorName(st.Standby), rev(st.StandbyRevision), kept, short(p.standby)))
	}
	if st.Candidate != "" && InProgress(st.Phase) {
		label := fmt.Sprintf(" %s %d%%", st.Candidate, st.Weight)
		n := w - 10 - 2 - len(label)
		if n > 50 {
			n = 50
		}
		field("Weight", v.bar(st.Weight, n)+v.paint(ansiDim, label))
	}
	if st.Phase == splitterv1.PhaseShifting {
		if left, ok := timeLeft(s, p, v.Now); ok {
			hold := short(p.stepDuration)
			if st.Extensions > 0 {
				hold = fmt.Sprintf("%s, extended %d of %d times", short(p.stepDuration*time.Duration(1+st.Extensions)), st.Extensions, p.maxExtensions)
			}
			switch {
			case st.PausedAt != nil:
				field("Time", fmt.Sprintf("held by the pause (the step's hold is %s)", hold))
			case left > 0:
				field("Time", fmt.Sprintf("about %s left in the step (hold %s; evidence counts once the weights settle)", short(left), hold))
			default:
				field("Time", fmt.Sprintf("the step's hold ended %s ago: verdict due (hold %s)", short(left), hold))
			}
		} else {
			field("Time", "the step's weights are being applied")
		}
	}
	if st.Gate != "" {
		field("Gate", fmt.Sprintf("waits at %s: kubectl splitter approve %s", v.paint(ansiYellow, st.Gate), s.Name))
	}

	if len(st.Checks) > 0 {
		add("Checks")
		for _, c := range st.Checks {
			add(renderCheck(s, c, v)...)
		}
	}
	if len(st.Hooks) > 0 {
		add("Hooks")
		for _, h := range st.Hooks {
			add(wrap(fmt.Sprintf("%s %s %s", v.verdict(h.Verdict), h.Name, h.Message), w, "  ", "      ")...)
		}
	}
	if len(st.History) > 0 {
		h := st.History[0]
		add(wrap(fmt.Sprintf("%s %s at step %d, %s ago: %s", rev(h.Revision), v.outcome(h.Outcome), h.Step, ago(v.Now, h.FinishedAt.Time), h.Message), w, "Last      ", "          ")...)
	}
	if len(st.Actions) > 0 {
		a := st.Actions[0]
		field("Action", fmt.Sprintf("%s of %s by %s, %s ago%s", a.Verb, rev(a.Revision), a.By, ago(v.Now, a.At.Time), detail(a.Detail)))
	}
	for _, c := range st.Conditions {
		if c.Type == "Stalled" && c.Status == "True" {
			field("Stalled", v.paint(ansiRed, c.Reason)+": "+c.Message)
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

func detail(d string) string {
	if d == "" {
		return ""
	}
	return " (" + d + ")"
}

func candidateState(p splitterv1.Phase) string {
	switch p {
	case splitterv1.PhasePreparing:
		return "starting"
	case splitterv1.PhaseRollingBack:
		return "rolling back"
	case splitterv1.PhaseRolledBack:
		return "rolled back"
	case splitterv1.PhasePromoting:
		return "promoted"
	}
	return "in release"
}

// renderCheck draws one check: verdict, name and value on a line; bound,
// counts and message wrapped under it.
func renderCheck(s *splitterv1.Split, c splitterv1.CheckResult, v View) []string {
	w := v.width()
	value := c.Value
	if value == "" {
		value = "no data"
	}
	head := fmt.Sprintf("%s %s = %s", v.verdict(c.Verdict), c.Name, value)
	if c.Step > 0 {
		head += fmt.Sprintf(" (step %d, %s ago)", c.Step, ago(v.Now, c.EvaluatedAt.Time))
	}
	out := wrap(head, w, "  ", "      ")
	if c.Bound != "" {
		out = append(out, wrap(c.Bound, w, "    bound  ", "           ")...)
	}
	live, lok := counts(s, c.Name, s.Status.Live)
	cand, cok := counts(s, c.Name, s.Status.Candidate)
	if lok || cok {
		text := ""
		if cok {
			text = fmt.Sprintf("%s %s", s.Status.Candidate, countText(cand))
		}
		if lok {
			if text != "" {
				text += "; "
			}
			text += fmt.Sprintf("%s %s", s.Status.Live, countText(live))
		}
		out = append(out, wrap(text, w, "    counts ", "           ")...)
	}
	if c.Message != "" {
		out = append(out, wrap(c.Message, w, "    why    ", "           ")...)
	}
	return out
}

// RenderList draws the table of `kubectl splitter list`.
func RenderList(splits []splitterv1.Split, allNamespaces bool, v View) string {
	if len(splits) == 0 {
		return "No Splits found.\n"
	}
	head := []string{"NAME", "PHASE", "LIVE", "CANDIDATE", "WEIGHT", "STEP", "GATE", "PAUSED", "LAST", "AGE"}
	if allNamespaces {
		head = append([]string{"NAMESPACE"}, head...)
	}
	rows := [][]string{head}
	for i := range splits {
		s := &splits[i]
		st := s.Status
		p := planFor(st.Policy)
		cand, weight, step := "-", "-", "-"
		if st.Candidate != "" {
			cand = fmt.Sprintf("%s/%s", v.colorName(st.Candidate), rev(st.CandidateRevision))
		}
		if InProgress(st.Phase) {
			weight = fmt.Sprintf("%d%%", st.Weight)
			step = fmt.Sprintf("%d/%d", st.Step, len(p.steps))
		}
		live := "-"
		if st.Live != "" {
			live = fmt.Sprintf("%s/%s", v.colorName(st.Live), rev(st.LiveRevision))
		}
		gate, paused, last := "-", "-", "-"
		if st.Gate != "" {
			gate = st.Gate
		}
		if st.PausedAt != nil {
			paused = ago(v.Now, st.PausedAt.Time)
		}
		if len(st.History) > 0 {
			last = v.outcome(st.History[0].Outcome)
		}
		row := []string{s.Name, v.phase(st.Phase), live, cand, weight, step, gate, paused, last, ago(v.Now, s.CreationTimestamp.Time)}
		if allNamespaces {
			row = append([]string{s.Namespace}, row...)
		}
		rows = append(rows, row)
	}
	return strings.Join(table(rows), "\n") + "\n"
}

// RenderHistory draws `kubectl splitter history`: a table of the releases,
// newest first, each with its message (the failing check's value and
// bound) wrapped under it.
func RenderHistory(s *splitterv1.Split, v View) string {
	if len(s.Status.History) == 0 {
		return fmt.Sprintf("Split %s/%s has no finished release yet.\n", s.Namespace, s.Name)
	}
	rows := [][]string{{"REVISION", "COLOR", "OUTCOME", "REASON", "STEP", "DURATION", "FINISHED"}}
	for _, h := range s.Status.History {
		dur := "-"
		if !h.StartedAt.IsZero() && !h.FinishedAt.IsZero() {
			dur = short(h.FinishedAt.Sub(h.StartedAt.Time))
		}
		rows = append(rows, []string{rev(h.Revision), v.colorName(h.Color), v.outcome(h.Outcome), h.Reason, strconv.Itoa(int(h.Step)), dur, ago(v.Now, h.FinishedAt.Time) + " ago"})
	}
	t := table(rows)
	out := []string{t[0]}
	for i, h := range s.Status.History {
		out = append(out, t[i+1])
		if h.Message != "" {
			out = append(out, wrap(h.Message, v.width(), "  ", "  ")...)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// WatchLine is one line per change for `get --watch` when stdout is not a
// terminal (CI logs).
func WatchLine(s *splitterv1.Split, now time.Time) string {
	st := s.Status
	p := planFor(st.Policy)
	parts := []string{now.UTC().Format("15:04:05"), s.Name, string(st.Phase)}
	if InProgress(st.Phase) || st.Phase == splitterv1.PhaseRollingBack {
		parts = append(parts, stepText(s, p), fmt.Sprintf("%s=%s", st.Candidate, rev(st.CandidateRevision)))
	} else if st.Live != "" {
		parts = append(parts, fmt.Sprintf("live %s=%s", st.Live, rev(st.LiveRevision)))
	}
	if st.PausedAt != nil {
		parts = append(parts, "paused")
	}
	if st.Gate != "" {
		parts = append(parts, "gate="+st.Gate)
	}
	var checks []string
	for _, c := range st.Checks {
		t := c.Name + "=" + string(c.Verdict)
		if c.Value != "" {
			t += "(" + c.Value + ")"
		}
		checks = append(checks, t)
	}
	if len(checks) > 0 {
		parts = append(parts, "checks: "+strings.Join(checks, " "))
	}
	return strings.Join(parts, " ")
}
