package notify

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Item is one notification for one receiver.
type Item struct {
	Split    types.NamespacedName
	UID      types.UID
	Seq      int64
	Receiver string
}

// Target is what an item resolves to when it is sent.
type Target struct {
	Type    splitterv1.ReceiverType
	URL     string
	Payload Payload
	// At is when the transition happened.
	At time.Time
}

// Store is the deliverer's view of the cluster (the controller implements
// it with the API server).
type Store interface {
	// Resolve reads what to send for item now: pending is false when it no
	// longer waits (delivered, dropped from a full outbox, the Split gone).
	// An error is a failed attempt, retried (a Secret not found); its text
	// must not hold the URL.
	Resolve(ctx context.Context, it Item) (t Target, pending bool, err error)
	// Done takes the receiver off the notification's pending list, with a
	// resourceVersion precondition, retried on conflict; it returns the
	// Split as written (nil when it is gone).
	Done(ctx context.Context, it Item) (*splitterv1.Split, error)
	// Dropped reports a notification given up on (a Warning Event naming
	// the receiver, never the URL).
	Dropped(it Item, reason, detail string)
	// List returns every Split, for the periodic sweep.
	List(ctx context.Context) ([]splitterv1.Split, error)
	// Watch calls offer with every Split added or changed, and forget with
	// the UID of every Split deleted, until ctx ends.
	Watch(ctx context.Context, offer func(*splitterv1.Split), forget func(types.UID)) error
}

// Deliverer sends the outbox. Each (Split, receiver) is a lane: its
// notifications go one at a time, oldest first, so a receiver sees a
// release's events in order and a receiver that hangs holds up only its
// own lane. Lanes share a bounded queue and a few workers. The release
// loop never waits on it: the reconciler only appends to status.
type Deliverer struct {
	Store Store
	HTTP  *http.Client
	Log   logr.Logger
	// Workers send in parallel (default 4); Queue bounds the lanes ready to
	// send (default 1024).
	Workers, Queue int
	// Retries: backoff from MinBackoff doubling to MaxBackoff (default 1s,
	// 1m), and a notification is dropped after MaxAttempts failed attempts
	// (default 10) or MaxRetryFor after its first attempt (default 15m),
	// whichever comes first.
	MinBackoff, MaxBackoff time.Duration
	MaxAttempts            int
	MaxRetryFor            time.Duration
	// Sweep is how often every Split's outbox is looked at even without a
	// change (default 30s).
	Sweep time.Duration
	Now   func() time.Time

	mu      sync.Mutex
	running bool
	lanes   map[laneKey]*lane
	queue   chan laneKey
}

type laneKey struct {
	uid      types.UID
	receiver string
}

type lane struct {
	split types.NamespacedName
	// seq is the notification in hand; busy while it is queued, being
	// sent, or waiting for a retry.
	seq  int64
	busy bool
	// sent: delivered, only its removal from pending remains (never sent
	// again by this process). drop: given up, same.
	sent     bool
	drop     bool
	attempts int
	first    time.Time
	// done is the highest seq finished on this lane: a view of status
	// older than its removal from pending is not a reason to send again.
	done int64
}

// NeedLeaderElection: only the leader sends.
func (d *Deliverer) NeedLeaderElection() bool { return true }

func (d *Deliverer) defaults() {
	if d.Workers <= 0 {
		d.Workers = 4
	}
	if d.Queue <= 0 {
		d.Queue = 1024
	}
	if d.MinBackoff <= 0 {
		d.MinBackoff = time.Second
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = time.Minute
	}
	if d.MaxAttempts <= 0 {
		d.MaxAttempts = 10
	}
	if d.MaxRetryFor <= 0 {
		d.MaxRetryFor = 15 * time.Minute
	}
	if d.Sweep <= 0 {
		d.Sweep = 30 * time.Second
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.HTTP == nil {
		d.HTTP = NewHTTPClient(DefaultTimeout)
	}
}

// Start runs the workers and the sweep until ctx ends.
func (d *Deliverer) Start(ctx context.Context) error {
	d.defaults()
	d.mu.Lock()
	d.lanes = map[laneKey]*lane{}
	d.queue = make(chan laneKey, d.Queue)
	d.running = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
	}()

	var wg sync.WaitGroup
	for range d.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case k := <-d.queue:
					d.handle(ctx, k)
				}
			}
		})
	}
	defer wg.Wait()
	if err := d.Store.Watch(ctx, d.Offer, d.forget); err != nil {
		// Never a reason to stop the controller: the sweep still delivers.
		d.Log.Error(err, "Cannot watch Splits for notifications; delivering at each sweep only", "sweep", d.Sweep.String())
	}
	tick := time.NewTicker(d.Sweep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			d.sweep(ctx)
		}
	}
}

func (d *Deliverer) sweep(ctx context.Context) {
	splits, err := d.Store.List(ctx)
	if err != nil {
		d.Log.Info("Notification sweep cannot list Splits", "error", err.Error())
		return
	}
	present := map[types.UID]bool{}
	for i := range splits {
		present[splits[i].UID] = true
		d.Offer(&splits[i])
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, l := range d.lanes {
		if !present[k.uid] && !l.busy {
			delete(d.lanes, k)
		}
	}
}

func (d *Deliverer) forget(uid types.UID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, l := range d.lanes {
		if k.uid == uid && !l.busy {
			delete(d.lanes, k)
		}
	}
}

// Offer queues the head of every lane of split that is not in hand. It
// never blocks: with the queue full, the sweep offers again later.
func (d *Deliverer) Offer(split *splitterv1.Split) {
	if len(split.Status.Outbox) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return
	}
	for name, seq := range Head(split.Status.Outbox) {
		k := laneKey{split.UID, name}
		l := d.lanes[k]
		if l == nil {
			l = &lane{}
			d.lanes[k] = l
		}
		l.split = types.NamespacedName{Namespace: split.Namespace, Name: split.Name}
		if l.busy || seq <= l.done {
			continue
		}
		if l.seq != seq {
			*l = lane{split: l.split, seq: seq, done: l.done}
		}
		l.busy = true
		d.enqueue(k, l)
	}
}

// enqueue needs d.mu.
func (d *Deliverer) enqueue(k laneKey, l *lane) {
	select {
	case d.queue <- k:
	default:
		l.busy = false
		queueFullTotal.Inc()
	}
}

// later queues the lane again after delay; it stays busy meanwhile.
func (d *Deliverer) later(k laneKey, delay time.Duration) {
	time.AfterFunc(delay, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if l := d.lanes[k]; d.running && l != nil {
			d.enqueue(k, l)
		}
	})
}

// backoff is the wait before attempt n+1 after n failed ones: doubling
// from MinBackoff, capped at MaxBackoff, with ±20% jitter so that the
// lanes of one dead receiver do not retry in step.
func (d *Deliverer) backoff(n int, retryAfter time.Duration) time.Duration {
	b := d.MinBackoff
	for i := 1; i < n && b < d.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.MaxBackoff)
	b = time.Duration(float64(b) * (0.8 + 0.4*rand.Float64()))
	if retryAfter > b {
		b = min(retryAfter, d.MaxBackoff)
	}
	return b
}

func (d *Deliverer) handle(ctx context.Context, k laneKey) {
	d.mu.Lock()
	l := d.lanes[k]
	if l == nil {
		d.mu.Unlock()
		return
	}
	it := Item{Split: l.split, UID: k.uid, Seq: l.seq, Receiver: k.receiver}
	finishing := l.sent || l.drop
	d.mu.Unlock()
	logger := d.Log.WithValues("split", it.Split.String(), "seq", it.Seq, "receiver", it.Receiver)

	if !finishing {
		t, pending, err := d.Store.Resolve(ctx, it)
		if err == nil && !pending {
			d.finish(k, it.Seq, nil)
			return
		}
		var o Outcome
		if err != nil {
			o = Outcome{Class: Retry, Detail: err.Error()}
		} else if body, rerr := Render(t.Type, t.Payload); rerr != nil {
			o = Outcome{Class: Permanent, Detail: rerr.Error()}
		} else {
			o = Send(ctx, d.HTTP, t.URL, t.Payload.ID, body)
			attemptsTotal.WithLabelValues(string(t.Type), o.Class.String()).Inc()
		}
		if ctx.Err() != nil {
			return // stopping: the next leader sends it
		}
		logger = logger.WithValues("event", t.Payload.Event)
		d.mu.Lock()
		l.attempts++
		if l.first.IsZero() {
			l.first = d.Now()
		}
		attempts, first := l.attempts, l.first
		switch {
		case o.Class == Delivered:
			l.sent = true
		case o.Class == Permanent:
			l.drop = true
		case attempts >= d.MaxAttempts || d.Now().Sub(first) >= d.MaxRetryFor:
			l.drop = true
		}
		sent, drop := l.sent, l.drop
		d.mu.Unlock()
		switch {
		case sent:
			if !t.At.IsZero() {
				deliverySeconds.Observe(d.Now().Sub(t.At).Seconds())
			}
			logger.V(1).Info("Notification delivered", "attempt", attempts)
		case drop:
			reason := DropRejected
			if o.Class == Retry {
				reason = DropGaveUp
			}
			logger.Info("Notification dropped undelivered", "reason", reason, "attempts", attempts, "error", o.Detail)
			CountDropped(it.Split.Namespace, it.Split.Name, reason, 1)
			d.Store.Dropped(it, reason, o.Detail)
		default:
			wait := d.backoff(attempts, o.RetryAfter)
			logger.Info("Notification not delivered; retrying", "attempt", attempts, "retryIn", wait.String(), "error", o.Detail)
			d.later(k, wait)
			return
		}
	}

	split, err := d.Store.Done(ctx, it)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// Delivered (or dropped) already: only the write is retried.
		logger.Info("Cannot mark the notification delivered; retrying the write", "error", err.Error())
		d.later(k, d.backoff(1, 0))
		return
	}
	d.finish(k, it.Seq, split)
}

// finish frees the lane and offers the Split as written, for the lane's
// next notification.
func (d *Deliverer) finish(k laneKey, seq int64, split *splitterv1.Split) {
	d.mu.Lock()
	if l := d.lanes[k]; l != nil {
		*l = lane{split: l.split, done: max(l.done, seq)}
	}
	d.mu.Unlock()
	if split != nil {
		d.Offer(split)
	}
}
