// Package notify tells people what a release did: which transitions are
// worth a message, the outbox in status that holds them until delivered,
// the message formats (Slack, Microsoft Teams, splitter's versioned JSON)
// and the deliverer that sends them with retries, off the release loop.
//
// The outbox is the commit point: a notification is appended to
// status.outbox in the same status write as the transition it reports, and
// a receiver's name leaves its pending list only after that receiver
// answered 2xx (or the notification was given up on). A controller killed
// at any instant therefore loses nothing status committed, and re-sends at
// most the one notification per receiver it was sending when it died.
package notify

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// MaxOutbox bounds status.outbox (the CRD says so too): a receiver that is
// down for long costs a bounded status, not an unbounded one.
const MaxOutbox = 32

// Events: what a notification reports. Receivers should ignore events they
// do not know; new ones may be added within schema v1.
const (
	EventReleaseStarted   = "ReleaseStarted"
	EventStepPassed       = "StepPassed"
	EventAwaitingApproval = "AwaitingApproval"
	EventApproved         = "Approved"
	EventPaused           = "Paused"
	EventResumed          = "Resumed"
	EventRolledBack       = "RolledBack"
	EventPromoted         = "Promoted"
	EventStalled          = "Stalled"
)

// EventFor says which event a transition is, from its reason and the phase
// and step it leads to; "" means it is not worth a message. Noise is left
// out: StepExtended (a step held longer: the outcome follows, and a Fail
// awaiting confirmation is often an incident both colors share), the first
// step's entry (ReleaseStarted said it), the snap-back's completion
// (RolledBack was sent with the reason when it was decided), adoption,
// StandbyEnded and Reverted.
func EventFor(reason string, stalled, warning bool, phase splitterv1.Phase, step int32) string {
	switch {
	case stalled:
		return EventStalled
	case reason == rollout.ReasonStepExtended:
		return ""
	case reason == rollout.ReasonPaused, reason == rollout.ReasonPausedByOperator:
		return EventPaused
	case reason == rollout.ReasonResumed:
		return EventResumed
	case reason == rollout.ReasonLiveLost:
		return EventPromoted // without its checks: the message says so
	case reason == rollout.ReasonStandbyLost:
		return rollout.ReasonStandbyLost // no snap-back left: reported under its own name
	}
	switch phase {
	case splitterv1.PhasePreparing:
		return EventReleaseStarted // a new release, or a retry
	case splitterv1.PhaseRollingBack:
		return EventRolledBack
	case splitterv1.PhasePromoting:
		return EventPromoted
	case splitterv1.PhaseAwaitingApproval:
		if warning {
			return EventPaused // a hold for a human after bad news
		}
		return EventAwaitingApproval
	case splitterv1.PhaseShifting:
		switch reason {
		case rollout.ReasonApproved:
			return EventApproved
		case rollout.ReasonStepAdvanced:
			if step > 1 {
				return EventStepPassed
			}
			return ""
		case "":
			return ""
		}
		// A transition of a newer engine: reported under its own name.
		return reason
	}
	return ""
}

// Queue appends n to status.outbox with the next Seq, pending for every
// receiver, and keeps the outbox within MaxOutbox by dropping the oldest
// entries: it returns those dropped (still pending for someone).
func Queue(status *splitterv1.SplitStatus, n splitterv1.Notification, receivers []string) []splitterv1.Notification {
	if len(receivers) == 0 {
		return nil
	}
	status.NotificationSeq++
	n.Seq = status.NotificationSeq
	n.Pending = append([]string(nil), receivers...)
	out := append(append([]splitterv1.Notification(nil), status.Outbox...), n)
	var dropped []splitterv1.Notification
	if over := len(out) - MaxOutbox; over > 0 {
		dropped = append(dropped, out[:over]...)
		out = out[over:]
	}
	status.Outbox = out
	return dropped
}

// Remove takes receiver off notification seq's pending list, dropping the
// entry when no receiver is left. It reports whether anything changed.
func Remove(status *splitterv1.SplitStatus, seq int64, receiver string) bool {
	for i := range status.Outbox {
		n := &status.Outbox[i]
		if n.Seq != seq {
			continue
		}
		for j, name := range n.Pending {
			if name != receiver {
				continue
			}
			pending := append(append([]string(nil), n.Pending[:j]...), n.Pending[j+1:]...)
			if len(pending) == 0 {
				status.Outbox = append(append([]splitterv1.Notification(nil), status.Outbox[:i]...), status.Outbox[i+1:]...)
				if len(status.Outbox) == 0 {
					status.Outbox = nil
				}
			} else {
				n.Pending = pending
			}
			return true
		}
		return false
	}
	return false
}

// Head is, for each receiver, the oldest notification still pending for
// it: each receiver gets a Split's notifications one at a time, in order.
func Head(outbox []splitterv1.Notification) map[string]int64 {
	heads := map[string]int64{}
	for _, n := range outbox {
		for _, name := range n.Pending {
			if s, ok := heads[name]; !ok || n.Seq < s {
				heads[name] = n.Seq
			}
		}
	}
	return heads
}

// Revision is the revision a notification is about: the candidate while a
// release runs or was just rolled back, else the live one (just promoted).
func Revision(s *splitterv1.SplitStatus) string {
	if s.CandidateRevision != "" {
		return s.CandidateRevision
	}
	return s.LiveRevision
}

// New builds the notification of a transition into status, or reports
// false when the transition is not worth one.
func New(t *rollout.Transition, status *splitterv1.SplitStatus, at metav1.Time) (splitterv1.Notification, bool) {
	if t == nil {
		return splitterv1.Notification{}, false
	}
	ev := EventFor(t.Reason, t.Stalled, t.Warning, status.Phase, status.Step)
	if ev == "" {
		return splitterv1.Notification{}, false
	}
	return splitterv1.Notification{
		Event: ev, Reason: t.Reason, Message: t.Message, Warning: t.Warning || t.Stalled,
		Phase: status.Phase, Revision: Revision(status), Step: status.Step, Weight: status.Weight, At: at,
	}, true
}
