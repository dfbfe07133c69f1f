package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

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
// "blue" and "green".
type Istio struct {
	Client client.Client
}

var _ Router = Istio{}

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

// getVS reads the VirtualService and checks that splitter may use it.
func (r Istio) getVS(ctx context.Context, t Target) (*networkingv1.VirtualService, error) {
	vs := &networkingv1.VirtualService{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.vsName()}, vs)
	if apierrors.IsNotFound(err) {
		if t.VirtualService != "" {
			return nil, &ConfigError{Object: "VirtualService/" + t.VirtualService, Msg: "not found (named by the " + splitterv1.VirtualServiceAnnotation + " annotation)"}
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
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
		return r.Client.Create(ctx, OwnedVirtualService(t, w))
	}
	refs, err := findWeights(vs, t.Service)
	if err != nil {
		return err
	}
	patch, err := weightPatch(vs.ResourceVersion, refs, w)
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, vs, client.RawPatch(types.JSONPatchType, patch))
	if apierrors.IsInvalid(err) && strings.Contains(err.Error(), "/metadata/resourceVersion") {
		// The precondition failed: the object changed since it was read.
		// That is a lost race, reported as the conflict it is.
		return apierrors.NewConflict(networkingv1.Resource("virtualservices"), vs.Name, err)
	}
	return err
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
	dr := &networkingv1.DestinationRule{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Service}, dr)
	if apierrors.IsNotFound(err) {
		return r.Client.Create(ctx, OwnedDestinationRule(t))
	}
	if err != nil {
		return err
	}
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
	if err := r.deleteIfOwned(ctx, key, &networkingv1.VirtualService{}, t.Owner); err != nil {
		return err
	}
	return r.deleteIfOwned(ctx, key, &networkingv1.DestinationRule{}, t.Owner)
}

// deleteIfOwned deletes the object at key only if owner owns it, with a
// UID precondition so a re-created object of the same name is left alone.
func (r Istio) deleteIfOwned(ctx context.Context, key client.ObjectKey, obj client.Object, owner metav1.Object) error {
	if err := r.Client.Get(ctx, key, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !isOwnedBy(obj, owner) {
		return nil
	}
	uid := obj.GetUID()
	return client.IgnoreNotFound(r.Client.Delete(ctx, obj, client.Preconditions{UID: &uid}))
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
