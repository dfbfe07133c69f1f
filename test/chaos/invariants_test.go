package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// What the observer knows of the run, besides the changes it saw: the
// names the design fixes (a workload's color Deployments are
// <workload>-blue and <workload>-green), how long a release may take, and
// when faults were injected.
type runFacts struct {
	workload string                                 // every lane's Deployment and Split are named so
	lanes    map[string]bool                        // the namespaces the releases run in
	bound    time.Duration                          // the longest a release may take without faults (from its policy)
	faulted  func(from, to time.Time) time.Duration // how much of [from, to] faults and their after-effects took
	kinds    map[string]string                      // image -> candidate kind (healthy, gross, slow)
}

// releaseSeen is one release as the observer saw it.
type releaseSeen struct {
	ns, revision, image, kind string
	color                     splitterv1.Color
	start, end                time.Time
	outcome                   splitterv1.Outcome
	reason, message           string
	last                      *splitterv1.Split // the Split as the release ended
	entries                   map[string]bool   // the distinct history entries naming it
	failed                    bool              // a Fail verdict was recorded
	failWeight                int32             // the candidate's weight when it was
}

// verdict is what the replay found.
type verdict struct {
	violations  []string
	releases    []*releaseSeen
	transitions int // weight changes and phase changes
}

func (v *verdict) violate(c change, format string, args ...any) {
	v.violations = append(v.violations, fmt.Sprintf("rv %d %s %s/%s: %s", c.rv, c.kind, c.obj.GetNamespace(), c.obj.GetName(), fmt.Sprintf(format, args...)))
}

// laneState is one namespace's objects as of the change being replayed.
type laneState struct {
	vs      *networkingv1.VirtualService
	subsets map[string]map[string]bool // DestinationRule host -> subset names
	deps    map[string]*appsv1.Deployment
	split   *splitterv1.Split
	current *releaseSeen // the release in flight, by the Split's candidate revision
}

// check replays the changes in resourceVersion order and checks, at every
// one, the invariants of issue 8:
//   - the weights of every route sum to 100 and name only subsets that a
//     DestinationRule for the host defines;
//   - after a Fail verdict was recorded for a release, its candidate's
//     weight never rises;
//   - a color's weight never rises while its Deployment has no Ready pod,
//     and no color Deployment is scaled to zero while its color has weight;
//   - every release ends, promoted or rolled back, within its bound;
//   - each release is in the history once, and no gross fault is promoted.
func check(changes []change, f runFacts, end time.Time) verdict {
	var v verdict
	lanes := map[string]*laneState{}
	byRev := map[string]*releaseSeen{} // ns/revision
	images := map[string]string{}      // ns/revision -> image
	state := func(ns string) *laneState {
		if lanes[ns] == nil {
			lanes[ns] = &laneState{subsets: map[string]map[string]bool{}, deps: map[string]*appsv1.Deployment{}}
		}
		return lanes[ns]
	}
	for _, c := range changes {
		ns := c.obj.GetNamespace()
		if !f.lanes[ns] {
			continue
		}
		l := state(ns)
		switch o := c.obj.(type) {
		case *networkingv1.DestinationRule:
			if c.deleted {
				delete(l.subsets, shortHost(o.Spec.Host, ns))
				continue
			}
			set := map[string]bool{}
			for _, s := range o.Spec.Subsets {
				set[s.GetName()] = true
			}
			l.subsets[shortHost(o.Spec.Host, ns)] = set
		case *appsv1.Deployment:
			if rev := o.Spec.Template.Annotations[splitterv1.RevisionAnnotation]; rev != "" && len(o.Spec.Template.Spec.Containers) > 0 {
				images[ns+"/"+rev] = o.Spec.Template.Spec.Containers[0].Image
			}
			for _, color := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
				if o.Name != f.workload+"-"+string(color) {
					continue
				}
				w := maxWeight(l.vs, color)
				switch {
				case w > 0 && c.deleted:
					v.violate(c, "deleted while %s has weight %d", color, w)
				case w > 0 && o.Spec.Replicas != nil && *o.Spec.Replicas == 0:
					v.violate(c, "scaled to zero while %s has weight %d", color, w)
				}
			}
			if c.deleted {
				delete(l.deps, o.Name)
				continue
			}
			l.deps[o.Name] = o
		case *networkingv1.VirtualService:
			if c.deleted {
				l.vs = nil
				continue
			}
			prev := l.vs
			l.vs = o
			v.checkRoutes(c, o, l)
			for _, color := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
				route, before, now, rose := weightRise(prev, o, color)
				if maxWeight(prev, color) != maxWeight(o, color) {
					v.transitions++
				}
				if !rose {
					continue
				}
				if d := l.deps[f.workload+"-"+string(color)]; !serving(d) {
					v.violate(c, "http[%d]: %s's weight rose %d -> %d while its Deployment has no Ready pod of its current template", route, color, before, now)
				}
				if r := l.current; r != nil && r.failed && color == r.color {
					v.violate(c, "http[%d]: candidate %s's weight rose %d -> %d after a Fail verdict for revision %s", route, color, before, now, r.revision)
				}
			}
		case *splitterv1.Split:
			if c.deleted || o.Name != f.workload {
				continue
			}
			if l.split != nil && l.split.Status.Phase != o.Status.Phase {
				v.transitions++
			}
			l.split = o
			st := o.Status
			if st.CandidateRevision != "" && st.Candidate != "" {
				key := ns + "/" + st.CandidateRevision
				r := byRev[key]
				if r == nil {
					r = &releaseSeen{ns: ns, revision: st.CandidateRevision, color: st.Candidate, start: c.at, entries: map[string]bool{}}
					byRev[key] = r
					v.releases = append(v.releases, r)
				}
				l.current = r
				r.failed = r.failed || failRecorded(o)
			}
			perRev := map[string][]splitterv1.Release{}
			for _, h := range st.History {
				perRev[h.Revision] = append(perRev[h.Revision], h)
				r := byRev[ns+"/"+h.Revision]
				if r == nil {
					continue // released before the observer started
				}
				r.entries[entryKey(h)] = true
				if r.end.IsZero() {
					r.end, r.outcome, r.reason, r.message, r.last = c.at, h.Outcome, h.Reason, h.Message, o
				}
			}
			for rev, hs := range perRev {
				if !oneRelease(hs) {
					v.violate(c, "revision %s is in the history %d times: %v", rev, len(hs), hs)
				}
			}
		}
	}
	for _, r := range v.releases {
		r.image = images[r.ns+"/"+r.revision]
		r.kind = f.kinds[r.image]
		// The time the release ran free of faults and their after-effects
		// must stay within its policy's bound.
		to := orNow(r.end, end)
		quiet := to.Sub(r.start) - f.faulted(r.start, to)
		switch {
		case r.end.IsZero():
			v.violations = append(v.violations, fmt.Sprintf("%s %s (%s): stuck, not ended after %s (%s of it free of faults; bound %s)", r.ns, r.revision, r.kind, to.Sub(r.start).Round(time.Second), quiet.Round(time.Second), f.bound))
		case quiet > f.bound:
			v.violations = append(v.violations, fmt.Sprintf("%s %s (%s): ended after %s, %s of it free of faults, over its bound %s", r.ns, r.revision, r.kind, to.Sub(r.start).Round(time.Second), quiet.Round(time.Second), f.bound))
		}
		if !oneReleaseKeys(r.entries) {
			v.violations = append(v.violations, fmt.Sprintf("%s %s: %d different history entries %v", r.ns, r.revision, len(r.entries), keys(r.entries)))
		}
		if r.kind == "" {
			v.violations = append(v.violations, fmt.Sprintf("%s %s: a release of no image this run made (%q)", r.ns, r.revision, r.image))
		}
		if r.kind == kindGross && r.outcome == splitterv1.OutcomePromoted {
			v.violations = append(v.violations, fmt.Sprintf("%s %s: a gross fault was promoted", r.ns, r.revision))
		}
	}
	return v
}

// checkRoutes checks every HTTP route of a VirtualService: weights sum to
// 100 (a lone destination without a weight takes it all) and every subset
// is defined by a DestinationRule for its host.
func (v *verdict) checkRoutes(c change, vs *networkingv1.VirtualService, l *laneState) {
	for i, r := range vs.Spec.Http {
		sum := int32(0)
		for _, d := range r.GetRoute() {
			sum += d.GetWeight()
			host, subset := d.GetDestination().GetHost(), d.GetDestination().GetSubset()
			if subset != "" && !l.subsets[shortHost(host, vs.Namespace)][subset] {
				v.violate(c, "http[%d] routes to subset %q of %s, which no DestinationRule defines", i, subset, host)
			}
		}
		if len(r.GetRoute()) == 1 && sum == 0 {
			sum = 100
		}
		if sum != 100 {
			v.violate(c, "http[%d]'s weights sum to %d", i, sum)
		}
	}
}

// failRecorded says whether the Split shows a Fail verdict for its
// release, or that it is being rolled back.
func failRecorded(s *splitterv1.Split) bool {
	if s.Status.Phase == splitterv1.PhaseRollingBack || s.Status.Phase == splitterv1.PhaseRolledBack {
		return true
	}
	for _, c := range s.Status.Checks {
		if c.Verdict == splitterv1.VerdictFail {
			return true
		}
	}
	return false
}

// weightRise finds a route of after in which color's weight is higher
// than in the same route of before.
func weightRise(before, after *networkingv1.VirtualService, color splitterv1.Color) (route int, from, to int32, rose bool) {
	if after == nil {
		return 0, 0, 0, false
	}
	for i, r := range after.Spec.Http {
		now := routeWeight(r, color)
		was := int32(0)
		if before != nil && i < len(before.Spec.Http) {
			was = routeWeight(before.Spec.Http[i], color)
		}
		if now > was {
			return i, was, now, true
		}
	}
	return 0, 0, 0, false
}

// maxWeight is color's highest weight over the routes.
func maxWeight(vs *networkingv1.VirtualService, color splitterv1.Color) int32 {
	w := int32(0)
	if vs != nil {
		for _, r := range vs.Spec.Http {
			w = max(w, routeWeight(r, color))
		}
	}
	return w
}

func routeWeight(r *networkingapi.HTTPRoute, color splitterv1.Color) int32 {
	w := int32(0)
	for _, d := range r.GetRoute() {
		if d.GetDestination().GetSubset() == string(color) {
			if len(r.GetRoute()) == 1 && d.GetWeight() == 0 {
				return 100
			}
			w += d.GetWeight()
		}
	}
	return w
}

// serving says whether a color Deployment has Ready pods of its current
// template, as its controller last reported: status for this generation,
// replicas wanted, some updated, some Ready.
func serving(d *appsv1.Deployment) bool {
	return d != nil && d.Status.ObservedGeneration >= d.Generation && d.Spec.Replicas != nil && *d.Spec.Replicas > 0 &&
		d.Status.UpdatedReplicas > 0 && d.Status.ReadyReplicas > 0
}

func entryKey(h splitterv1.Release) string {
	return fmt.Sprintf("%s %s %s", h.StartedAt.UTC().Format(time.RFC3339), h.Outcome, h.Reason)
}

// oneRelease says whether a revision's history entries are one release:
// one entry, or a promotion and the watchdog's snap-back during standby.
func oneRelease(hs []splitterv1.Release) bool {
	keys := map[string]bool{}
	for _, h := range hs {
		if keys[entryKey(h)] {
			return false // the same entry twice
		}
		keys[entryKey(h)] = true
	}
	return oneReleaseKeys(keys)
}

func oneReleaseKeys(keys map[string]bool) bool {
	switch len(keys) {
	case 1:
		return true
	case 2:
		promoted, tripped := false, false
		for k := range keys {
			promoted = promoted || strings.HasSuffix(k, " "+string(splitterv1.OutcomePromoted)+" "+string(splitterv1.OutcomePromoted))
			tripped = tripped || strings.HasSuffix(k, " "+string(splitterv1.OutcomeRolledBack)+" WatchdogTripped")
		}
		return promoted && tripped
	}
	return false
}

// shortHost turns a host in the namespace into the Service's short name.
func shortHost(host, ns string) string {
	for _, suffix := range []string{"." + ns + ".svc.cluster.local", "." + ns + ".svc", "." + ns} {
		if s, ok := strings.CutSuffix(host, suffix); ok {
			return s
		}
	}
	return host
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
