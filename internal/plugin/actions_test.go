package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func TestActions(t *testing.T) {
	type decide func(*splitterv1.Split) (Change, error)
	approve := func(gate string) decide {
		return func(s *splitterv1.Split) (Change, error) { return Approve(s, gate, "alice") }
	}
	abort := func(s *splitterv1.Split) (Change, error) { return Abort(s, "alice") }
	pause := func(s *splitterv1.Split) (Change, error) { return Pause(s, "alice") }
	resume := func(s *splitterv1.Split) (Change, error) { return Resume(s, "alice") }
	retry := func(template string) decide {
		return func(s *splitterv1.Split) (Change, error) { return Retry(s, template, "alice") }
	}
	promote := func(s *splitterv1.Split) (Change, error) { return Promote(s, "alice") }
	withRetry := func() *splitterv1.Split {
		s := rolledBack()
		s.Annotations = map[string]string{splitterv1.RetryAnnotation: "7c6b5a4d/4"}
		return s
	}
	// withAnnotations adds an annotation left by an earlier action.
	withAnnotations := func(split func() *splitterv1.Split, key, value string) func() *splitterv1.Split {
		return func() *splitterv1.Split {
			s := split()
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[key] = value
			return s
		}
	}
	pausedInStatusOnly := func() *splitterv1.Split {
		s := paused()
		s.Annotations = nil
		return s
	}
	for _, tc := range []struct {
		name    string
		split   func() *splitterv1.Split
		do      decide
		key     string // annotation set ("" for a refusal)
		value   string // its value ("-" for removed)
		refusal string // part of the refusal
		noop    bool
	}{
		{"approve the gate waited at", awaiting, approve(""), splitterv1.ApproveAnnotation, "7c6b5a4d/4/promotion", "", false},
		{"approve the gate expected", awaiting, approve("7c6b5a4d/4/promotion"), splitterv1.ApproveAnnotation, "7c6b5a4d/4/promotion", "", false},
		{"approve a stale gate", awaiting, approve("7c6b5a4d/3/promotion"), "", "", "not 7c6b5a4d/3/promotion", false},
		{"approve while shifting", midRelease, approve(""), "", "", "nothing to approve", false},
		{"approve while idle", base, approve(""), "", "", "Idle", false},
		{"abort mid-release", midRelease, abort, splitterv1.AbortAnnotation, "7c6b5a4d/4", "", false},
		{"abort at a gate", awaiting, abort, splitterv1.AbortAnnotation, "7c6b5a4d/4", "", false},
		{"abort when rolled back", rolledBack, abort, "", "", "no release in progress", false},
		{"abort when idle", base, abort, "", "", "no release in progress", false},
		{"pause mid-release", midRelease, pause, splitterv1.PauseAnnotation, "7c6b5a4d/4", "", false},
		{"pause twice", paused, pause, "", "", "already paused", false},
		{"pause when idle", base, pause, "", "", "no release in progress", false},
		{"resume", paused, resume, splitterv1.PauseAnnotation, "-", "", false},
		{"resume when not paused", midRelease, resume, "", "", "not paused", false},
		{"resume with the annotation gone", pausedInStatusOnly, resume, splitterv1.PauseAnnotation, "-", "", true},
		{"retry a rollback", rolledBack, retry("7c6b5a4d"), splitterv1.RetryAnnotation, "7c6b5a4d/4", "", false},
		{"retry asked already", withRetry, retry("7c6b5a4d"), splitterv1.RetryAnnotation, "7c6b5a4d/4", "", true},
		{"retry after an abort clears it", withAnnotations(rolledBack, splitterv1.AbortAnnotation, "7c6b5a4d/4"), retry("7c6b5a4d"), splitterv1.AbortAnnotation, "-", "", false},
		{"retry clears a pause of the attempt that ended", withAnnotations(withRetry, splitterv1.PauseAnnotation, "7c6b5a4d/4"), retry("7c6b5a4d"), splitterv1.PauseAnnotation, "-", "", false},
		{"retry after the template moved", rolledBack, retry("99aa88bb"), "", "", "template is revision 99aa88bb", false},
		{"retry mid-release", midRelease, retry("7c6b5a4d"), "", "", "nothing to retry", false},
		{"promote mid-release", midRelease, promote, splitterv1.PromoteAnnotation, "7c6b5a4d/4", "", false},
		{"promote when idle", base, promote, "", "", "no release in progress", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.do(tc.split())
			if tc.refusal != "" {
				var r *Refusal
				if !errors.As(err, &r) || !strings.Contains(r.Reason, tc.refusal) {
					t.Fatalf("got %+v, %v; want a refusal saying %q", c, err, tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, ok := c.Set[tc.key]
			switch {
			case !ok:
				t.Errorf("%s not in %v", tc.key, c.Set)
			case tc.value == "-" && v != nil:
				t.Errorf("%s = %q, want it removed", tc.key, *v)
			case tc.value != "-" && (v == nil || *v != tc.value):
				t.Errorf("%s = %v, want %q", tc.key, v, tc.value)
			}
			if by := c.Set[splitterv1.RequestedByAnnotation]; by == nil || *by != "alice" {
				t.Errorf("requested-by %v, want alice", by)
			}
			if c.Noop != tc.noop {
				t.Errorf("noop %v, want %v", c.Noop, tc.noop)
			}
		})
	}
}

// One merge patch: the annotations and the resourceVersion precondition.
func TestMergePatch(t *testing.T) {
	b := MergePatch("42", map[string]*string{splitterv1.AbortAnnotation: str("7c6b5a4d"), splitterv1.PauseAnnotation: nil})
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	meta := got["metadata"].(map[string]any)
	ann := meta["annotations"].(map[string]any)
	if meta["resourceVersion"] != "42" || ann[splitterv1.AbortAnnotation] != "7c6b5a4d" || ann[splitterv1.PauseAnnotation] != nil || len(got) != 1 {
		t.Errorf("patch %s", b)
	}
	if _, ok := ann[splitterv1.PauseAnnotation]; !ok {
		t.Errorf("patch %s: the removed annotation must be null, not absent", b)
	}
}

func TestWaiter(t *testing.T) {
	promotedEntry := splitterv1.Release{Revision: "7c6b5a4d", Color: splitterv1.Green, StartedAt: at(6 * time.Minute), FinishedAt: at(time.Minute), Outcome: splitterv1.OutcomePromoted, Reason: "Promoted"}
	for _, tc := range []struct {
		name     string
		start    *splitterv1.Split
		template string
		then     *splitterv1.Split
		done     bool
		code     int
	}{
		{"set image, controller not there yet", base(), "7c6b5a4d", base(), false, 0},
		{"nothing changed in the template", base(), "5d8f9c7b", base(), true, 0},
		{"release under way", base(), "7c6b5a4d", midRelease(), false, 0},
		{"promoted", midRelease(), "7c6b5a4d", promoting(), true, 0},
		{"rolled back", midRelease(), "7c6b5a4d", rolledBack(), true, 1},
		{"rolled back before the watch", rolledBack(), "7c6b5a4d", rolledBack(), true, 1},
		{"retry asked: wait for it", withAnn(rolledBack(), splitterv1.RetryAnnotation, "7c6b5a4d/4"), "7c6b5a4d", withAnn(rolledBack(), splitterv1.RetryAnnotation, "7c6b5a4d/4"), false, 0},
		{"retry promoted", withAnn(rolledBack(), splitterv1.RetryAnnotation, "7c6b5a4d/4"), "7c6b5a4d", withHistory(promoting(), promotedEntry), true, 0},
		{"superseded by a newer template", midRelease(), "7c6b5a4d", withHistory(base(), splitterv1.Release{Revision: "7c6b5a4d", Outcome: splitterv1.OutcomeSuperseded, FinishedAt: at(0)}), true, 1},
		{"another revision's outcome is not ours", base(), "7c6b5a4d", withHistory(base(), splitterv1.Release{Revision: "0000aaaa", Outcome: splitterv1.OutcomeRolledBack, FinishedAt: at(0)}), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWaiter(tc.start, tc.template)
			done, code, summary := w.Outcome(tc.then)
			if done != tc.done || code != tc.code {
				t.Errorf("done %v code %d (%s), want done %v code %d", done, code, summary, tc.done, tc.code)
			}
		})
	}
}

func withAnn(s *splitterv1.Split, k, v string) *splitterv1.Split {
	s.Annotations = map[string]string{k: v}
	return s
}

func withHistory(s *splitterv1.Split, h splitterv1.Release) *splitterv1.Split {
	s.Status.History = append([]splitterv1.Release{h}, s.Status.History...)
	return s
}

// kubectl's exit codes: 2 for a command line that cannot run (no cluster
// is needed to say so).
func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, 0},
		{[]string{"version"}, 0},
		{[]string{"completion", "bash"}, 0},
		{[]string{"completion", "zsh"}, 0},
		{[]string{"completion", "fish"}, 0},
		{[]string{"bogus"}, 2},
		{[]string{"get", "a", "b"}, 2},
		{[]string{"get", "--watch"}, 2},
		{[]string{"get", "a", "-o", "xml"}, 2},
		{[]string{"approve"}, 2},
		{[]string{"history", "a", "b"}, 2},
		{[]string{"list", "extra"}, 2},
		{[]string{"get", "--no-such-flag"}, 2},
		{[]string{"promote", "a"}, 2},
		{[]string{"opt-in", "a"}, 2},
	} {
		var out, errOut bytes.Buffer
		env := Env{IOStreams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, Width: 80, Now: func() time.Time { return now }}
		if got := Main(tc.args, env); got != tc.want {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, got, tc.want, errOut.String())
		}
	}
}
