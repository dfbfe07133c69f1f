package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/notify"
	"splitter.dev/splitter/internal/policy"
	"splitter.dev/splitter/internal/rollout"
)

// Receivers' URLs are read from Secrets at send time, uncached: the
// controller neither lists nor watches Secrets.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// queueNotification adds a transition that matters to the outbox in
// status, for each of the policy's receivers: it is committed in the same
// status write as the transition itself. plan may be nil (a stall): the
// last plan kept in status names the receivers then.
func (r *SplitReconciler) queueNotification(split *splitterv1.Split, plan *policy.Plan, status *splitterv1.SplitStatus, t *rollout.Transition, now time.Time) {
	if t == nil {
		return
	}
	if plan == nil {
		plan = r.lastPlan(split)
	}
	if plan == nil || len(plan.Receivers) == 0 {
		return
	}
	n, ok := notify.New(t, status, metav1.NewTime(now))
	if !ok {
		return
	}
	names := make([]string, 0, len(plan.Receivers))
	for _, rc := range plan.Receivers {
		names = append(names, rc.Name)
	}
	if dropped := notify.Queue(status, n, names); len(dropped) > 0 {
		notify.CountDropped(split.Namespace, split.Name, notify.DropOutboxFull, len(dropped))
		ctrl.Log.WithName("notify").Info("Outbox full: oldest notifications dropped undelivered",
			"split", split.Namespace+"/"+split.Name, "dropped", len(dropped), "oldestSeq", dropped[0].Seq, "max", notify.MaxOutbox)
	}
}

// setupNotifier adds the deliverer (leader only) to the manager.
func (r *SplitReconciler) setupNotifier(mgr ctrl.Manager) error {
	store := &outboxStore{r: r, reader: mgr.GetAPIReader(), informer: func(ctx context.Context) (crcache.Informer, error) {
		return mgr.GetCache().GetInformer(ctx, &splitterv1.Split{})
	}}
	return mgr.Add(&notify.Deliverer{Store: store, Log: ctrl.Log.WithName("notify")})
}

// outboxStore is the deliverer's access to Splits (watched through the
// manager's cache; read before a send and written with resourceVersion
// preconditions through the API server) and Secrets (read uncached).
type outboxStore struct {
	r        *SplitReconciler
	reader   client.Reader
	informer func(context.Context) (crcache.Informer, error)
}

func (s *outboxStore) Watch(ctx context.Context, offer func(*splitterv1.Split), forget func(types.UID)) error {
	inf, err := s.informer(ctx)
	if err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if sp, ok := obj.(*splitterv1.Split); ok {
				offer(sp)
			}
		},
		UpdateFunc: func(_, obj any) {
			if sp, ok := obj.(*splitterv1.Split); ok {
				offer(sp)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if sp, ok := obj.(*splitterv1.Split); ok {
				forget(sp.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		_ = inf.RemoveEventHandler(reg)
	}()
	return nil
}

func (s *outboxStore) List(ctx context.Context) ([]splitterv1.Split, error) {
	var list splitterv1.SplitList
	if err := s.r.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

func (s *outboxStore) Resolve(ctx context.Context, it notify.Item) (notify.Target, bool, error) {
	// Uncached: a cache behind the write that queued the notification
	// would say it is not pending, and the lane would skip it.
	split := &splitterv1.Split{}
	if err := s.reader.Get(ctx, it.Split, split); err != nil {
		if apierrors.IsNotFound(err) {
			return notify.Target{}, false, nil
		}
		return notify.Target{}, false, fmt.Errorf("reading the Split: %w", err)
	}
	n := pendingFor(split, it)
	if n == nil {
		return notify.Target{}, false, nil
	}
	rc := s.receiver(ctx, split, it.Receiver)
	if rc == nil {
		// Taken out of the policy: nobody to send it to.
		notify.CountDropped(split.Namespace, split.Name, notify.DropReceiverRemoved, 1)
		_, err := s.Done(ctx, it)
		return notify.Target{}, false, err
	}
	url, err := s.url(ctx, split.Namespace, rc.URLFrom)
	if err != nil {
		return notify.Target{}, false, err
	}
	return notify.Target{Type: rc.Type, URL: url, Payload: notify.NewPayload(split, n, it.Receiver), At: n.At.Time}, true, nil
}

// receiver finds a receiver in the Split's policy, or in the last policy
// that compiled when the current one does not.
func (s *outboxStore) receiver(ctx context.Context, split *splitterv1.Split, name string) *policy.Receiver {
	plan, _, err := s.r.plan(ctx, split)
	if err != nil {
		plan = s.r.lastPlan(split)
	}
	if plan == nil {
		return nil
	}
	for i := range plan.Receivers {
		if plan.Receivers[i].Name == name {
			return &plan.Receivers[i]
		}
	}
	return nil
}

// url reads a receiver's URL; errors name the Secret and key, never the value.
func (s *outboxStore) url(ctx context.Context, namespace string, ref splitterv1.SecretKeyRef) (string, error) {
	key := ref.Key
	if key == "" {
		key = policy.DefaultSecretKey
	}
	sec := &corev1.Secret{}
	if err := s.reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("secret %s/%s not found", namespace, ref.Name)
		}
		return "", fmt.Errorf("reading secret %s/%s: %s", namespace, ref.Name, apierrors.ReasonForError(err))
	}
	v, ok := sec.Data[key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("secret %s/%s has no key %q", namespace, ref.Name, key)
	}
	return string(v), nil
}

func pendingFor(split *splitterv1.Split, it notify.Item) *splitterv1.Notification {
	if split.UID != it.UID {
		return nil
	}
	for i := range split.Status.Outbox {
		n := &split.Status.Outbox[i]
		if n.Seq == it.Seq {
			for _, p := range n.Pending {
				if p == it.Receiver {
					return n
				}
			}
			return nil
		}
	}
	return nil
}

// Done takes the receiver off the pending list with a resourceVersion
// precondition: on a conflict it reads the Split again and retries the
// write, never the send.
func (s *outboxStore) Done(ctx context.Context, it notify.Item) (*splitterv1.Split, error) {
	var err error
	for attempt := range 10 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
			}
		}
		split := &splitterv1.Split{}
		if err = s.reader.Get(ctx, it.Split, split); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			continue
		}
		if split.UID != it.UID {
			return nil, nil
		}
		base := split.DeepCopy()
		if !notify.Remove(&split.Status, it.Seq, it.Receiver) {
			return split, nil
		}
		err = s.r.Client.Status().Patch(ctx, split, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		s.r.Metrics.wroteResult("SplitStatus", err)
		if err == nil {
			return split, nil
		}
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("removing %s from notification %d's pending list: %w", it.Receiver, it.Seq, err)
}

func (s *outboxStore) Dropped(it notify.Item, reason, detail string) {
	split := &splitterv1.Split{ObjectMeta: metav1.ObjectMeta{Namespace: it.Split.Namespace, Name: it.Split.Name, UID: it.UID}}
	what := "rejected by the receiver"
	if reason == notify.DropGaveUp {
		what = "given up after retries"
	}
	s.r.event(split, corev1.EventTypeWarning, "NotificationFailed", "Notification %d to receiver %s %s: %s", it.Seq, it.Receiver, what, detail)
}
