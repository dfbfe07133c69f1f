package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/analysis"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// The driver calls the engine as the controller does; a Source stands for
// the traffic and Prometheus: simulated pods (Run), or a recording
// replayed by `splitter policy backtest`. Both share this loop, so the
// simulated and the replayed releases are driven alike.

// Source is the traffic a driven release sees. Times are offsets from
// Drive.Start.
type Source interface {
	// Next is when the source's next own event (a scrape, a pod restart)
	// is due; math.MaxInt64 when it has none.
	Next() time.Duration
	// Fire handles the one event due at t.
	Fire(t time.Duration)
	// Route says that the router sends w from t on (the engine's write;
	// the data plane may follow later).
	Route(t time.Duration, w rollout.Weights)
	// Read reads the release's counters as the controller would at t, or
	// says why the reading failed.
	Read(t time.Duration) (rollout.Counters, string)
}

// Drive is how a release is driven, whatever its traffic.
type Drive struct {
	Plan *policy.Plan
	// Scrape is Prometheus' scrape interval (and the watchdog's sweep).
	Scrape time.Duration
	// Start is the driven clock's origin (zero: 2026-01-01).
	Start time.Time
	// ReleaseAt is when the candidate revision appears; Until is when the
	// drive ends.
	ReleaseAt, Until time.Duration
	// ReadyDelay is how long a color Deployment takes to be Ready after
	// its spec changes.
	ReadyDelay time.Duration
	// StopAtEnd ends the drive once the outcome is final.
	StopAtEnd bool
	// WakeOnReady calls the engine when a color Deployment it changed
	// becomes Ready, as the controller's watch does. Simulate's figures
	// predate it: there the engine wakes on its own requeue.
	WakeOnReady bool
	// WatchDelay is how long after a write (or a Deployment turning
	// Ready) the engine is called again, as the write's watch event
	// would call the controller (default 1s).
	WatchDelay time.Duration
	// Checks, when set, judges the policy's PromQL checks at an instant;
	// otherwise they pass.
	Checks func(now time.Time) []analysis.Result
}

// Result is how one driven release went.
type Result struct {
	Phase   splitterv1.Phase
	History []splitterv1.Release
	// Step and Weight are the step and candidate weight the release was
	// at when it ended (rollback or promotion decided).
	Step   int32
	Weight int32
	// FirstGreen is when the candidate first had traffic (offset).
	FirstGreen time.Duration
	// Ended is when the release's outcome was decided, offset: the
	// rollback (in standby too), else the promotion.
	Ended time.Duration
	// Promoted is when the candidate was promoted (it has all the traffic
	// and standby begins), offset; -1 if never.
	Promoted time.Duration
	Lines    []string
	// Decisions are the engine's transitions, in order.
	Decisions []Decision
	// Status is the engine's status when the drive ended.
	Status splitterv1.SplitStatus
	// StatusWrites and RouteWrites are the writes the controller would
	// have sent from the release's start (Drive.ReleaseAt; adopting the
	// live revision before it is not counted): status writes
	// (rollout.StatusWriteDue) and weight changes.
	StatusWrites, RouteWrites int
}

// Decision is one transition of a driven release.
type Decision struct {
	At      time.Time
	Phase   splitterv1.Phase
	Step    int32
	Weight  int32
	Reason  string
	Message string
	Warning bool
	// Checks are the step's verdicts at the transition.
	Checks []splitterv1.CheckResult
}

// Outcome names how the release ended: promoted, rolledback, paused or
// unfinished.
func (r Result) Outcome() string {
	if len(r.History) > 0 {
		switch r.History[0].Outcome {
		case splitterv1.OutcomePromoted:
			return "promoted"
		case splitterv1.OutcomeRolledBack:
			return "rolledback"
		}
		return string(r.History[0].Outcome)
	}
	if r.Phase == splitterv1.PhaseAwaitingApproval {
		return "paused"
	}
	return "unfinished"
}

type driver struct {
	d      Drive
	rng    *rand.Rand
	w      *world
	src    Source
	status splitterv1.SplitStatus
	res    Result
	// firstGreenSet: the source reports FirstGreen itself.
	firstGreenSet bool
	// written is the status as the controller would have written it.
	written splitterv1.SplitStatus
}

func newDriver(d Drive, rng *rand.Rand) *driver {
	if d.Start.IsZero() {
		d.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	w := newWorld(LiveRevision, d.Start, d.ReadyDelay)
	dr := &driver{d: d, rng: rng, w: w}
	dr.res.FirstGreen, dr.res.Ended, dr.res.Promoted = -1, -1, -1
	return dr
}

// DriveRelease drives one release of the candidate through the engine,
// with src's traffic, drawing the sweep's phase from rng.
func DriveRelease(d Drive, src Source, rng *rand.Rand) Result {
	dr := newDriver(d, rng)
	dr.src = src
	return dr.run(nil)
}

func (s *driver) elapsed() time.Duration { return s.w.now.Sub(s.w.start) }

// reconcile calls the engine the way the controller does and applies
// its decision; it returns when to call it again.
func (s *driver) reconcile() time.Duration {
	for range 3 {
		o := s.w.observe()
		o.Counters, o.CountersErr = nil, ""
		if _, _, ok := rollout.Watched(s.status); ok {
			o.Counters, o.CountersErr = s.src.Read(s.elapsed())
		}
		if len(s.d.Plan.Checks) > 0 && rollout.ChecksDue(s.d.Plan, s.status, o.Now) {
			if s.d.Checks != nil {
				o.Verdicts = s.d.Checks(o.Now)
			} else {
				o.Verdicts = passChecks(s.d.Plan.Checks)
			}
		}
		prev := s.status
		d := rollout.Next(s.d.Plan, s.status, o)
		s.status = d.Status
		if rollout.StatusWriteDue(s.d.Plan.Timing, s.written, d.Status, o.Now) {
			s.written = d.Status
			s.res.StatusWrites++
		}
		before := s.w.routed
		s.w.apply(d.Desired)
		if s.w.routed != nil && (before == nil || *before != *s.w.routed) {
			s.res.RouteWrites++
			s.src.Route(s.elapsed(), *s.w.routed)
			if !s.firstGreenSet && s.res.FirstGreen < 0 && isRelease(s.status.Phase) && s.w.routed.Of(s.status.Candidate) > 0 {
				s.res.FirstGreen = s.elapsed()
			}
		}
		if t := d.Transition; t != nil {
			s.res.Lines = append(s.res.Lines, fmt.Sprintf("%8s %-16s step=%d weight=%d %s: %s", s.elapsed().Round(time.Second), d.Status.Phase, d.Status.Step, d.Status.Weight, t.Reason, t.Message))
			s.res.Decisions = append(s.res.Decisions, Decision{At: s.w.now, Phase: d.Status.Phase, Step: prev.Step, Weight: prev.Weight,
				Reason: t.Reason, Message: t.Message, Warning: t.Warning, Checks: d.Status.Checks})
			switch {
			case d.Status.Phase == splitterv1.PhaseRollingBack && (s.res.Ended < 0 || s.res.Promoted >= 0):
				// A rollback in standby ends the release then, not at
				// its promotion.
				s.res.Ended = s.elapsed()
				s.res.Step, s.res.Weight = prev.Step, prev.Weight
			case d.Status.Phase == splitterv1.PhasePromoting && s.res.Ended < 0:
				s.res.Ended, s.res.Promoted = s.elapsed(), s.elapsed()
				s.res.Step, s.res.Weight = prev.Step, prev.Weight
			}
		}
		req := d.Requeue
		if req > time.Millisecond {
			return req
		}
		if req == 0 {
			return time.Hour
		}
	}
	return time.Second
}

func isRelease(p splitterv1.Phase) bool {
	return p == splitterv1.PhaseShifting || p == splitterv1.PhaseAwaitingApproval || p == splitterv1.PhasePromoting
}

// run drives the release; start, when set, runs once the sweep's phase is
// drawn (the pod source draws its restarts there).
func (s *driver) run(start func()) Result {
	d := s.d
	sweepPhase := time.Duration(s.rng.Int64N(int64(d.Scrape)))
	if start != nil {
		start()
	}
	nextSweep := sweepPhase
	nextWake := time.Duration(0)
	// The controller's sweep also takes the gross check's look when a
	// scrape is due to have landed, and at least every
	// analysis.GrossLookEvery; samples change only when a scrape lands,
	// so here it looks half that after each of the source's events.
	nextGross := never
	watch := d.WatchDelay
	if watch <= 0 {
		watch = time.Second
	}
	released := false
loop:
	for {
		nextSrc := s.src.Next()
		next := min(nextSrc, nextSweep, nextWake, nextGross)
		if !released {
			next = min(next, d.ReleaseAt)
		}
		if next > d.Until {
			break
		}
		s.w.now = s.w.start.Add(next)
		switch {
		case !released && next == d.ReleaseAt:
			s.w.revision = CandidateRevision
			released = true
			s.res.StatusWrites, s.res.RouteWrites = 0, 0
			nextWake = next
		case next == nextSrc:
			s.src.Fire(next)
			if nextGross == never && d.Scrape > analysis.GrossLookEvery {
				nextGross = next + analysis.GrossLookEvery/2
			}
		case next == nextGross:
			nextGross = never
			if s.status.Analysis != nil {
				if counters, errMsg := s.src.Read(next); errMsg == "" {
					if _, tripped := rollout.GrossLook(d.Plan, s.status, counters, s.w.now); tripped {
						nextWake = next
					}
				}
			}
		case next == nextSweep:
			nextSweep += d.Scrape
			if _, _, ok := rollout.Watched(s.status); ok {
				if counters, errMsg := s.src.Read(next); errMsg == "" {
					if _, tripped := rollout.SweepLook(d.Plan, s.status, counters, s.w.now); tripped {
						nextWake = next
					}
				}
			}
		case next == nextWake:
			before := s.w.routed
			ready := s.w.readyTimes()
			wait := s.reconcile()
			nextWake = next + wait
			if d.WakeOnReady {
				for c, at := range s.w.readyTimes() {
					if at != ready[c] {
						nextWake = min(nextWake, max(at.Sub(s.w.start), next+watch))
					}
				}
			}
			if d.StopAtEnd && (s.status.Phase == splitterv1.PhaseRolledBack || s.status.Phase == splitterv1.PhaseIdle && len(s.status.History) > 0) {
				break loop
			}
			if s.w.routed != before {
				nextWake = min(nextWake, next+watch) // the write's watch event
			}
		}
	}
	s.res.Phase, s.res.History, s.res.Status = s.status.Phase, s.status.History, s.status
	return s.res
}

// never is a source's "no event".
const never = time.Duration(math.MaxInt64)
