package mesh

import (
	"context"
	"encoding/json"
	"fmt"

	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Istio routes with a VirtualService between the DestinationRule subsets
// "blue" and "green". Make it with NewIstio and keep it: it remembers its
// last write per object, so a pass that reads from a cache that has not seen
// that write yet neither reports the old weights nor sends the write again
// (lastwrite.go). The zero value with a Client works, without that memory.
type Istio struct {
	Client client.Client
	// OnWrite, when set, is told of every write the router sends (kind is
	// KindVirtualService or KindDestinationRule) and its outcome: nil, a
	// conflict (IsConflict or IsAlreadyExists: a lost race), or an error.
	// Writes the router skips are not reported.
	OnWrite func(kind string, err error)

	last *lastWrites
}

// NewIstio returns an Istio router that remembers its writes.
func NewIstio(c client.Client) *Istio {
	return &Istio{Client: c, last: newLastWrites()}
}

var (
	_ Router = Istio{}
	_ Router = (*Istio)(nil)
)

func (r Istio) wrote(kind string, err error) {
	if r.OnWrite != nil {
		r.OnWrite(kind, err)
	}
}

// HostMatches says whether a VirtualService destination host (relative to
// namespace) names the Service.
func HostMatches(host, service, namespace string) bool {
	switch host {
	case service, service + "." + namespace, service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local":
		return true
	}
	return false
}

// weightRef locates one destination weight splitter manages.
type weightRef struct {
	route, dest int
	color       splitterv1.Color
}

// findWeights finds, in every HTTP route that sends traffic to the
// Service, its blue and green destinations. A route to the Service must
// have exactly those two and nothing else: splitter changes weights, never
// the shape of a user's route.
func findWeights(vs *networkingv1.VirtualService, service string) ([]weightRef, error) {
	var refs []weightRef
	for i, r := range vs.Spec.Http {
		if r == nil {
			continue
		}
		var mine []weightRef
		others := 0
		for j, d := range r.Route {
			if d == nil || d.Destination == nil || !HostMatches(d.Destination.Host, service, vs.Namespace) {
				others++
				continue
			}
			switch c := splitterv1.Color(d.Destination.Subset); c {
			case splitterv1.Blue, splitterv1.Green:
				mine = append(mine, weightRef{route: i, dest: j, color: c})
			default:
				return nil, &ConfigError{Object: "VirtualService/" + vs.Name, Field: fmt.Sprintf("spec.http[%d].route[%d].destination.subset", i, j),
					Msg: fmt.Sprintf("routes to %s with subset %q: splitter needs the subsets blue and green", service, d.Destination.Subset)}
			}
		}
		if len(mine) == 0 {
			continue
		}
		if len(mine) != 2 || mine[0].color == mine[1].color || others > 0 {
			return nil, &ConfigError{Object: "VirtualService/" + vs.Name, Field: fmt.Sprintf("spec.http[%d].route", i),
				Msg: fmt.Sprintf("a route to %s must have exactly two destinations, subsets blue and green", service)}
		}
		refs = append(refs, mine...)
	}
	if len(refs) == 0 {
		return nil, &ConfigError{Object: "VirtualService/" + vs.Name, Field: "spec.http",
			Msg: fmt.Sprintf("no HTTP route sends traffic to %s with subsets blue and green", service)}
	}
	return refs, nil
}

// readWeights returns the weights of the first managed route, and whether
// every managed route agrees with it.
func readWeights(vs *networkingv1.VirtualService, refs []weightRef) (rollout.Weights, bool) {
	per := map[int]*rollout.Weights{}
	for _, r := range refs {
		w := per[r.route]
		if w == nil {
			w = &rollout.Weights{}
			per[r.route] = w
		}
		weight := vs.Spec.Http[r.route].Route[r.dest].Weight
		if r.color == splitterv1.Blue {
			w.Blue = weight
		} else {
			w.Green = weight
		}
	}
	first := *per[refs[0].route]
	for _, w := range per {
		if *w != first {
			return first, false
		}
	}
	return first, true
}

// weightPatch is a JSON patch that changes only the managed weights, and
// only if the object is still at resourceVersion.
func weightPatch(resourceVersion string, refs []weightRef, w rollout.Weights) ([]byte, error) {
	ops := []map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": resourceVersion}}
	for _, r := range refs {
		ops = append(ops, map[string]any{
			// "add" sets a member whether or not it is present: Istio's JSON
			// omits a weight of 0, and "replace" refuses a missing member.
			"op": "add", "path": fmt.Sprintf("/spec/http/%d/route/%d/weight", r.route, r.dest), "value": w.Of(r.color),
		})
	}
	return json.Marshal(ops)
}

func (t Target) vsName() string {
	if t.VirtualService != "" {
		return t.VirtualService
	}
	return t.Service
}

// getVS reads the VirtualService (our last write's result when the cache
// has not caught up with it) and checks that splitter may use it.
func (r Istio) getVS(ctx context.Context, t Target) (*networkingv1.VirtualService, error) {
	key := client.ObjectKey{Namespace: t.Namespace, Name: t.vsName()}
	cur, err := r.read(ctx, KindVirtualService, key, &networkingv1.VirtualService{})
	if err != nil {
		return nil, err
	}
	if cur == nil {
		if t.VirtualService != "" {
			return nil, &ConfigError{Object: "VirtualService/" + t.VirtualService, Msg: "not found (named by the " + splitterv1.VirtualServiceAnnotation + " annotation)"}
		}
		return nil, nil
	}
	vs := cur.(*networkingv1.VirtualService)
	if t.VirtualService == "" && !isOwnedBy(vs, t.Owner) {
		return nil, &ConfigError{Object: "VirtualService/" + vs.Name, Msg: fmt.Sprintf(
			"exists and is not splitter's: annotate the Deployment with %s: %s to let splitter change only its weights",
			splitterv1.VirtualServiceAnnotation, vs.Name)}
	}
	return vs, nil
}

// Ensure recreates the subsets' DestinationRule when it is missing.
func (r Istio) Ensure(ctx context.Context, t Target) error { return r.ensureDestinationRule(ctx, t) }

// Observe reads the weights routed now.
func (r Istio) Observe(ctx context.Context, t Target) (*rollout.Weights, error) {
	vs, err := r.getVS(ctx, t)
	if err != nil || vs == nil {
		return nil, err
	}
	refs, err := findWeights(vs, t.Service)
	if err != nil {
		return nil, err
	}
	w, consistent := readWeights(vs, refs)
	if !consistent || w.Blue+w.Green != 100 {
		// Routes disagree or do not sum to 100: report something no plan
		// asks for, so the next SetWeights rewrites them all.
		return &rollout.Weights{Blue: -1, Green: -1}, nil
	}
	return &w, nil
}

// SetWeights writes the weights in one request: a create of splitter's own
// VirtualService the first time, a weights-only JSON patch after.
func (r Istio) SetWeights(ctx context.Context, t Target, w rollout.Weights) error {
	if err := r.ensureDestinationRule(ctx, t); err != nil {
		return err
	}
	vs, err := r.getVS(ctx, t)
	if err != nil {
		return err
	}
	if vs == nil {
		return r.create(ctx, KindVirtualService, OwnedVirtualService(t, w))
	}
	refs, err := findWeights(vs, t.Service)
	if err != nil {
		return err
	}
	if routed, consistent := readWeights(vs, refs); consistent && routed == w {
		// Already routed, typically by our own last write that the cache
		// has not shown yet: writing it again could only be refused.
		return nil
	}
	from := vs.ResourceVersion
	patch, err := weightPatch(from, refs, w)
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, vs, client.RawPatch(types.JSONPatchType, patch))
	if patchNotApplied(err) {
		// The resourceVersion precondition failed: the object changed
		// since it was read. That is a lost race, reported as the
		// conflict it is (the reconciler retries quietly).
		err = apierrors.NewConflict(networkingv1.Resource("virtualservices"), vs.Name,
			fmt.Errorf("the VirtualService is no longer at resourceVersion %s: %w", from, err))
	}
	r.wrote(KindVirtualService, err)
	if err != nil {
		return err
	}
	r.last.remember(KindVirtualService, client.ObjectKeyFromObject(vs), from, vs)
	return nil
}

// read gets the object at key into obj and returns the object to act on:
// obj, our last write's result when the cache shows a version that write
// replaced, or nil when neither exists.
func (r Istio) read(ctx context.Context, kind string, key client.ObjectKey, obj client.Object) (client.Object, error) {
	return readThrough(ctx, r.Client, r.last, kind, key, obj)
}

func readThrough(ctx context.Context, c client.Reader, last *lastWrites, kind string, key client.ObjectKey, obj client.Object) (client.Object, error) {
	var cached client.Object
	switch err := c.Get(ctx, key, obj); {
	case err == nil:
		cached = obj
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	return last.current(kind, key, cached), nil
}

// create creates one of splitter's own objects and remembers it. An
// AlreadyExists is returned as it is: the cache had not seen the object yet,
// a lost race the reconciler retries quietly.
func (r Istio) create(ctx context.Context, kind string, obj client.Object) error {
	err := r.Client.Create(ctx, obj)
	r.wrote(kind, err)
	if err != nil {
		return err
	}
	r.last.remember(kind, client.ObjectKeyFromObject(obj), "", obj)
	return nil
}

// OwnedVirtualService is the VirtualService splitter creates for a Service
// without one: one HTTP route, two weighted subsets.
func OwnedVirtualService(t Target, w rollout.Weights) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Service, Namespace: t.Namespace, OwnerReferences: ownerRef(t.Owner),
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: networkingapi.VirtualService{
			Hosts: []string{t.Service},
			Http: []*networkingapi.HTTPRoute{{
				Name: "splitter",
				Route: []*networkingapi.HTTPRouteDestination{
					{Destination: &networkingapi.Destination{Host: t.Service, Subset: string(splitterv1.Blue)}, Weight: w.Blue},
					{Destination: &networkingapi.Destination{Host: t.Service, Subset: string(splitterv1.Green)}, Weight: w.Green},
				},
			}},
		},
	}
}

// OwnedDestinationRule defines the color subsets for the Service.
func OwnedDestinationRule(t Target) *networkingv1.DestinationRule {
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Service, Namespace: t.Namespace, OwnerReferences: ownerRef(t.Owner),
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: networkingapi.DestinationRule{
			Host: t.Service,
			Subsets: []*networkingapi.Subset{
				{Name: string(splitterv1.Blue), Labels: map[string]string{t.SubsetLabel: string(splitterv1.Blue)}},
				{Name: string(splitterv1.Green), Labels: map[string]string{t.SubsetLabel: string(splitterv1.Green)}},
			},
		},
	}
}

// ensureDestinationRule creates the subsets' DestinationRule when missing.
// A user's DestinationRule of the same name is used as it is if it defines
// both subsets by the subset label, and never changed.
func (r Istio) ensureDestinationRule(ctx context.Context, t Target) error {
	cur, err := r.read(ctx, KindDestinationRule, client.ObjectKey{Namespace: t.Namespace, Name: t.Service}, &networkingv1.DestinationRule{})
	if err != nil {
		return err
	}
	if cur == nil {
		return r.create(ctx, KindDestinationRule, OwnedDestinationRule(t))
	}
	dr := cur.(*networkingv1.DestinationRule)
	for _, c := range []splitterv1.Color{splitterv1.Blue, splitterv1.Green} {
		ok := false
		for _, s := range dr.Spec.Subsets {
			ok = ok || (s != nil && s.Name == string(c) && s.Labels[t.SubsetLabel] == string(c))
		}
		if !ok {
			return &ConfigError{Object: "DestinationRule/" + dr.Name, Field: "spec.subsets",
				Msg: fmt.Sprintf("needs a subset %q with labels {%s: %s}; splitter does not change a DestinationRule it did not create", c, t.SubsetLabel, c)}
		}
	}
	return nil
}

// Release deletes splitter's own VirtualService and DestinationRule so the
// Service routes as it did before opt-in. A user's VirtualService keeps its
// weights (the live color at 100%) and the DestinationRule its subsets stay
// with it: splitter never leaves a user's route pointing at nothing.
func (r Istio) Release(ctx context.Context, t Target) error {
	if t.VirtualService != "" {
		return nil
	}
	key := client.ObjectKey{Namespace: t.Namespace, Name: t.Service}
	if err := r.deleteIfOwned(ctx, KindVirtualService, key, &networkingv1.VirtualService{}, t.Owner); err != nil {
		return err
	}
	return r.deleteIfOwned(ctx, KindDestinationRule, key, &networkingv1.DestinationRule{}, t.Owner)
}

// deleteIfOwned deletes the object at key only if owner owns it, with a
// UID precondition so a re-created object of the same name is left alone.
// An object we created that the cache does not show yet is deleted too, and
// one we deleted that the cache still shows is not deleted again.
func (r Istio) deleteIfOwned(ctx context.Context, kind string, key client.ObjectKey, obj client.Object, owner metav1.Object) error {
	cur, err := r.read(ctx, kind, key, obj)
	if err != nil || cur == nil {
		return err
	}
	if !isOwnedBy(cur, owner) {
		return nil
	}
	uid := cur.GetUID()
	err = client.IgnoreNotFound(r.Client.Delete(ctx, cur, client.Preconditions{UID: &uid}))
	r.wrote(kind, err)
	if err == nil {
		r.last.remember(kind, key, cur.GetResourceVersion(), nil)
	}
	return err
}

// ColorSubsetRouted returns a color subset that the VirtualService still
// routes to, or "" when none: while one is, opting out would leave that
// route pointing at pods that are about to go.
func ColorSubsetRouted(vs *networkingv1.VirtualService) string {
	for _, route := range vs.Spec.Http {
		for _, d := range route.GetRoute() {
			if sub := d.GetDestination().GetSubset(); sub == string(splitterv1.Blue) || sub == string(splitterv1.Green) {
				return sub
			}
		}
	}
	return ""
}
