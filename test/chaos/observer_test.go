// Package chaos runs releases while the controller, the API server, etcd
// and Prometheus fail, and checks with an independent observer that no
// fault loses a release or sends traffic where it must not go.
//
// The observer shares no code with the controller: it watches the
// VirtualServices, DestinationRules, Deployments, Splits and Leases
// through the API server, keeps every change it is told of, and checks
// the invariants afterwards over all of them in resourceVersion order.
// etcd's revision is one counter for every kind it stores, so that order
// is the order in which the changes were written; a check made in it sees
// each object as it was when another was written, which watches of
// separate kinds, delivered in their own time, could not show.
package chaos

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/testbed"
)

// change is one object as a watch (or a list after a gap) delivered it.
type change struct {
	kind    string
	typ     watch.EventType
	rv      uint64
	at      time.Time // when the observer received it
	obj     client.Object
	deleted bool
}

// Observer records every change of the kinds it watches.
type Observer struct {
	c client.WithWatch

	mu      sync.Mutex
	changes []change
	gaps    int // watches that had to list again (410 Gone): changes may be missing there
	errs    int // watch and list errors (an API server restart shows as a few)
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// watched are the kinds the observer follows, cluster-wide.
var watched = []struct {
	kind string
	list func() client.ObjectList
}{
	{"VirtualService", func() client.ObjectList { return &networkingv1.VirtualServiceList{} }},
	{"DestinationRule", func() client.ObjectList { return &networkingv1.DestinationRuleList{} }},
	{"Deployment", func() client.ObjectList { return &appsv1.DeploymentList{} }},
	{"Split", func() client.ObjectList { return &splitterv1.SplitList{} }},
	{"Lease", func() client.ObjectList { return &coordinationv1.LeaseList{} }},
}

// Observe starts watching; Stop ends it.
func Observe(cfg *rest.Config) (*Observer, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 0 // watches are long
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testbed.Scheme()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &Observer{c: c, cancel: cancel}
	synced := make(chan struct{}, len(watched))
	for _, w := range watched {
		o.done.Add(1)
		go func() {
			defer o.done.Done()
			o.follow(ctx, w.kind, w.list, synced)
		}()
	}
	for range watched {
		select {
		case <-synced:
		case <-time.After(30 * time.Second):
			o.Stop()
			return nil, fmt.Errorf("the observer's first lists did not finish in 30s")
		}
	}
	return o, nil
}

// Stop ends the watches.
func (o *Observer) Stop() {
	o.cancel()
	o.done.Wait()
}

// follow lists kind, then watches it from the list's resourceVersion,
// resuming from the last one seen after every break (an API server
// restart, a timeout). Only a 410 Gone makes it list again: a gap.
func (o *Observer) follow(ctx context.Context, kind string, newList func() client.ObjectList, synced chan<- struct{}) {
	rv := ""
	first := true
	for ctx.Err() == nil {
		if rv == "" {
			list := newList()
			if err := o.c.List(ctx, list); err != nil {
				o.failed(ctx)
				continue
			}
			items, err := metaItems(list)
			if err != nil {
				panic(err) // a programming error: every watched list has items
			}
			for _, obj := range items {
				o.record(kind, watch.Added, obj)
			}
			rv = list.GetResourceVersion()
			if first {
				first = false
				synced <- struct{}{}
			}
		}
		w, err := o.c.Watch(ctx, newList(), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		if err != nil {
			if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				o.gap(&rv)
			}
			o.failed(ctx)
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				if st, ok := ev.Object.(*metav1.Status); ok && st.Code == 410 {
					o.gap(&rv)
				}
				break
			}
			obj, ok := ev.Object.(client.Object)
			if !ok {
				continue
			}
			rv = obj.GetResourceVersion()
			if ev.Type != watch.Bookmark {
				o.record(kind, ev.Type, obj)
			}
		}
		w.Stop()
	}
}

func (o *Observer) failed(ctx context.Context) {
	o.mu.Lock()
	o.errs++
	o.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond):
	}
}

func (o *Observer) gap(rv *string) {
	o.mu.Lock()
	o.gaps++
	o.mu.Unlock()
	*rv = ""
}

func (o *Observer) record(kind string, typ watch.EventType, obj client.Object) {
	rv, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		return
	}
	o.mu.Lock()
	o.changes = append(o.changes, change{kind: kind, typ: typ, rv: rv, at: time.Now(), obj: obj.DeepCopyObject().(client.Object), deleted: typ == watch.Deleted})
	o.mu.Unlock()
}

// Changes returns what was seen, each change once, in resourceVersion
// order (the order of the writes).
func (o *Observer) Changes() (cs []change, gaps, errs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range o.changes {
		key := fmt.Sprintf("%s/%s/%s/%d/%v", c.kind, c.obj.GetNamespace(), c.obj.GetName(), c.rv, c.deleted)
		if !seen[key] {
			seen[key] = true
			cs = append(cs, c)
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].rv < cs[j].rv })
	return cs, o.gaps, o.errs
}

func metaItems(list client.ObjectList) ([]client.Object, error) {
	var out []client.Object
	switch l := list.(type) {
	case *networkingv1.VirtualServiceList:
		for _, x := range l.Items {
			out = append(out, x)
		}
	case *networkingv1.DestinationRuleList:
		for _, x := range l.Items {
			out = append(out, x)
		}
	case *appsv1.DeploymentList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *splitterv1.SplitList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *coordinationv1.LeaseList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("unknown list %T", list)
	}
	return out, nil
}
