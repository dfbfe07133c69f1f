package backtest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Table is a release-mode report as text: what the policy would have
// decided and when, each step's verdicts with their counts, the outcome.
func Table(r *Report) string {
	var b strings.Builder
	pf := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	clock := func(t time.Time) string { return t.UTC().Format(time.TimeOnly) }
	pf("Backtest of SplitPolicy %s on %s/%s, %s to %s UTC (scrape every %s, seed %d)", r.Policy, r.Namespace, r.Workload,
		r.From.UTC().Format(time.DateTime), clock(r.To), r.ScrapeInterval, r.Seed)
	pf("Recorded release: %s beside %s (live); the candidate had traffic from %s to %s.", r.Candidate, r.Live, clock(r.CandidateFirst), clock(r.CandidateLast))
	if r.Live != r.Workload+"-blue" {
		pf("In the decisions below, blue is %s and green is %s.", r.Live, r.Candidate)
	}
	pf("Recorded weights: %s.", r.RecordedWeights)
	pf("Counts: %s.", r.Assumption)
	pf("")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tAFTER\tSTEP\tWEIGHT\tPHASE\tDECISION")
	for _, d := range r.Decisions {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d%%\t%s\t%s: %s\n", clock(d.At), d.After, d.Step, d.Weight, d.Phase, d.Reason, d.Message)
		if d.Reason == "StepStarted" || d.Reason == "ReleaseStarted" || d.Phase == splitterv1.PhasePreparing {
			continue
		}
		if len(d.Counts) > 0 {
			var parts []string
			for _, c := range d.Counts {
				rate := 0.0
				if c.Requests > 0 {
					rate = 100 * float64(c.Bad) / float64(c.Requests)
				}
				parts = append(parts, fmt.Sprintf("%s %s %d/%d (%.2f%%)", c.SLO, c.Deployment, c.Bad, c.Requests, rate))
			}
			fmt.Fprintf(tw, "\t\t\t\t\t  step's counts: %s\n", strings.Join(parts, ", "))
		}
		for _, c := range d.Checks {
			if c.Step != d.Step || strings.Contains(d.Message, c.Name+" "+string(c.Verdict)) {
				continue
			}
			line := fmt.Sprintf("%s %s", c.Name, c.Verdict)
			if c.Value != "" || c.Bound != "" {
				line += fmt.Sprintf(" (value %s, bound %s)", orDash(c.Value), orDash(c.Bound))
			}
			if c.Message != "" {
				line += ": " + c.Message
			}
			fmt.Fprintf(tw, "\t\t\t\t\t  %s\n", line)
		}
	}
	tw.Flush()
	pf("")
	switch d := r.Decided; {
	case d != nil && r.Outcome == "rolledback":
		pf("Outcome: rolled back at %s, %s after the candidate's first traffic, on step %d (%d%%).", clock(d.At), d.After, d.Step, d.Weight)
	case d != nil:
		pf("Outcome: %s at %s, %s after the candidate's first traffic, from step %d (%d%%).", r.Outcome, clock(d.At), d.After, d.Step, d.Weight)
	default:
		pf("Outcome: %s.", r.Outcome)
	}
	if len(r.Evidence) > 0 {
		var parts []string
		for _, e := range r.Evidence {
			parts = append(parts, fmt.Sprintf("%d%%: %.0f%%", e.Weight, 100*e.Kept))
		}
		pf("Recorded requests the replay kept, by the policy's weight: %s.", strings.Join(parts, ", "))
	}
	for _, n := range r.Notes {
		pf("Note: %s.", n)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// BaselineTable is a baseline-mode report as text.
func BaselineTable(r *BaselineReport) string {
	var b strings.Builder
	pf := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	pf("Baseline of SplitPolicy %s on %s/%s, %s to %s UTC (scrape every %s, seed %d)", r.Policy, r.Namespace, r.Workload,
		r.From.UTC().Format(time.DateTime), r.To.UTC().Format(time.TimeOnly), r.ScrapeInterval, r.Seed)
	pf("Counts: %s.", r.Assumption)
	pf("Traffic over the window: %.1f req/s; bad: %s.", r.Traffic.RPS, badRates(r.Traffic.BadRate))
	pf("")
	pf("%d releases, started every %s, each taking %s on average (%d fit in the window without overlapping):", r.Releases, r.Every, r.Length, r.Disjoint)
	pf("  promoted %d, paused %d, rolled back %d, unfinished %d", r.Promoted, r.Paused, r.RolledBack, r.Unfinished)
	pf("  false rollbacks:             %s", fmtShare(r.FalseRollbacks))
	if r.Incidents > 0 {
		pf("    of which on the SLO itself: %d (the service breached it, both colors alike: an incident in the window)", r.Incidents)
	}
	pf("  paused for lack of evidence: %s", fmtShare(r.PausedShare))
	if q := r.PromotionSeconds; q != nil {
		pf("  time to promotion:           p50 %s, p90 %s, p99 %s", secs(q.P50), secs(q.P90), secs(q.P99))
	}
	if len(r.Reasons) > 0 {
		pf("  rollbacks by reason:")
		for _, k := range slices.Sorted(maps.Keys(r.Reasons)) {
			pf("    %4d  %s", r.Reasons[k], k)
		}
	}
	pf("The intervals count %d releases (the disjoint ones): overlapping releases share traffic, so their outcomes are not independent.", min(r.Releases, r.Disjoint))
	if r.Simulate != "" {
		pf("The same traffic in the model: %s", r.Simulate)
	}
	for _, n := range r.Notes {
		pf("Note: %s.", n)
	}
	return b.String()
}

func badRates(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.3f%%", k, 100*m[k]))
	}
	return strings.Join(parts, ", ")
}

func fmtShare(s Share) string {
	return fmt.Sprintf("%.2f%% (95%% interval %.2f%% to %.2f%%)", 100*s.Share, 100*s.Low, 100*s.High)
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}
