// Package mesh holds the routers: weights in, weights out. The Istio router
// moves traffic with VirtualService weights between DestinationRule subsets;
// the service-selector router switches a Service's selector between the
// colors in one patch. Neither ever rewrites an object it does not own: on a
// user's VirtualService only the weights of the managed routes change (and,
// under splitter.dev/pinned-routes: follow-live, the subset of routes
// pinned to one color), by JSON patch with a resourceVersion precondition;
// which routes are managed is findRoutes' rule (istio.go). A router made by NewIstio or
// NewServiceSelector remembers its last write per object, so a pass that
// reads from a cache that has not seen that write yet neither reports the
// old weights nor sends the write again (lastwrite.go); a write that loses a
// race anyway is returned as a conflict (IsConflict or IsAlreadyExists).
package mesh

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/rollout"
)

// Target names what a router routes for one workload.
type Target struct {
	Namespace string
	// Service is the workload's Service; owned Istio objects take its name.
	Service string
	// VirtualService is a user-owned VirtualService; "" means splitter owns one.
	VirtualService string
	// SubsetLabel is the pod label whose value is the color.
	SubsetLabel string
	// Routes names the HTTP routes of the VirtualService whose weights
	// splitter manages (splitter.dev/routes); empty: every route that
	// carries both color subsets of the Service.
	Routes []string
	// Follow is the color that routes pinned to one color are moved to
	// when weights are written (splitter.dev/pinned-routes: follow-live,
	// see PinColors); "" leaves pinned routes alone. Routes pinned to Keep
	// stay where they are.
	Follow, Keep splitterv1.Color
	// Owner is the Split that owns the objects the router creates.
	Owner metav1.Object
}

// Router moves traffic between the colors.
type Router interface {
	// Ensure creates what routing needs and splitter owns when it is
	// missing (the Istio DestinationRule), every pass: a deleted one comes back.
	Ensure(ctx context.Context, t Target) error
	// Observe returns the weights routed now, or nil when nothing routes to
	// the colors yet.
	Observe(ctx context.Context, t Target) (*rollout.Weights, error)
	// SetWeights routes w in one write, creating splitter's own objects when
	// they are missing; in none when w is already routed.
	SetWeights(ctx context.Context, t Target, w rollout.Weights) error
	// Release hands routing back before opt-out: splitter's own objects
	// are deleted, a user's are left with the live color at 100%.
	Release(ctx context.Context, t Target) error
}

// Inspector is a Router that can also say which routes it manages.
type Inspector interface {
	// Inspect is Observe with the routes: which are managed, which are
	// pinned to one color. Routing.Weights is what Observe returns.
	Inspect(ctx context.Context, t Target) (*Routing, error)
}

var _ Inspector = Istio{}

// ConfigError is a problem with the user's objects that no retry fixes:
// the controller reports it as Stalled with the field path.
type ConfigError struct {
	Object string // kind/name
	Field  string // e.g. spec.http[0].route
	Msg    string
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Object, e.Msg)
	}
	return fmt.Sprintf("%s %s: %s", e.Object, e.Field, e.Msg)
}

// ManagedByLabel marks objects splitter created.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// ManagedBy is ManagedByLabel's value.
const ManagedBy = "splitter"

func ownerRef(owner metav1.Object) []metav1.OwnerReference {
	return []metav1.OwnerReference{*metav1.NewControllerRef(owner, splitterv1.GroupVersion.WithKind("Split"))}
}

func isOwnedBy(obj metav1.Object, owner metav1.Object) bool {
	for _, r := range obj.GetOwnerReferences() {
		if r.UID == owner.GetUID() {
			return true
		}
	}
	return false
}
