package meshsim

import (
	"errors"
	"fmt"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/config/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The test bed has no istiod, so no validating webhook: the API server
// stores any VirtualService or DestinationRule its CRD schema accepts. The
// simulator runs Istio's own validation (istio.io/istio/pkg/config/validation)
// on every version it sees, the functions istiod's webhook reaches through
// its schema (collections.PilotGatewayAPI: schema.ValidateConfig is the
// registered ValidateVirtualService / ValidateDestinationRule, wrapped with
// the metadata checks). We call them directly rather than through
// crd.ConvertObject and the collections: the informer has already decoded
// the typed object, and the collections pull in the Gateway API modules
// (about twice the packages) for nothing the two kinds need.
//
// Not covered, on purpose: the webhook's unknown top-level field check (the
// typed informer drops unknown fields before we see them), and anything a
// real cluster accepts. In particular Istio does not ask weights to sum to
// 100 (they are relative, as Envoy's weighted clusters are; only a total of
// 0 over several destinations is refused), and a subset that no
// DestinationRule defines is accepted and answered 503 NR by Envoy, which
// Route simulates.

// istioDomain is the cluster domain istiod's webhook is given.
const istioDomain = "cluster.local"

// ValidateVirtualService runs Istio's validation of a VirtualService. err
// non-nil: istiod's webhook would refuse the object. warnings: it would
// admit it and return these to the client.
func ValidateVirtualService(vs *networkingv1.VirtualService) (warnings []string, err error) {
	return istioValidate(validation.ValidateVirtualService, istioConfig(gvk.VirtualService, &vs.ObjectMeta, &vs.Spec))
}

// ValidateDestinationRule runs Istio's validation of a DestinationRule, as
// ValidateVirtualService does.
func ValidateDestinationRule(dr *networkingv1.DestinationRule) (warnings []string, err error) {
	return istioValidate(validation.ValidateDestinationRule, istioConfig(gvk.DestinationRule, &dr.ObjectMeta, &dr.Spec))
}

// istioConfig builds the config.Config the webhook builds from an admission
// request (crd.ConvertObject): the same metadata fields, the proto spec.
func istioConfig(kind config.GroupVersionKind, m *metav1.ObjectMeta, spec config.Spec) config.Config {
	return config.Config{
		Meta: config.Meta{
			GroupVersionKind:  kind,
			Name:              m.Name,
			Namespace:         m.Namespace,
			Domain:            istioDomain,
			Labels:            m.Labels,
			Annotations:       m.Annotations,
			ResourceVersion:   m.ResourceVersion,
			CreationTimestamp: m.CreationTimestamp.Time,
		},
		Spec: spec,
	}
}

// ValidationError is Istio's refusal of an object: one message per problem,
// as the webhook lists them.
type ValidationError struct {
	Messages []string
	err      error
}

func (e *ValidationError) Error() string {
	return "configuration is invalid: " + strings.Join(e.Messages, "; ")
}

func (e *ValidationError) Unwrap() error { return e.err }

func istioValidate(f validation.ValidateFunc, cfg config.Config) ([]string, error) {
	warning, err := f(cfg)
	warnings := flatten(warning)
	if err != nil {
		return warnings, &ValidationError{Messages: flatten(err), err: err}
	}
	return warnings, nil
}

// flatten lists the messages of a (possibly multi-) error, one line each:
// Istio joins its findings with hashicorp/go-multierror, whose message is
// several lines long.
func flatten(err error) []string {
	if err == nil {
		return nil
	}
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		var out []string
		for _, e := range multi.WrappedErrors() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []string{strings.Join(strings.Fields(err.Error()), " ")}
}

// Verdict is Istio's validation of one stored version of an object.
type Verdict struct {
	Kind, Namespace, Name string
	ResourceVersion       string
	Generation            int64
	// Managers are the field managers that wrote the object
	// (metadata.managedFields), so a test can tell its own writes from the
	// controller's.
	Managers []string
	// Err is why Istio refuses this version; "" when it is admitted.
	Err string
	// Warnings are what Istio would return with an admitted version.
	Warnings []string
}

func (v Verdict) String() string {
	s := fmt.Sprintf("%s %s/%s@%s by %v", v.Kind, v.Namespace, v.Name, v.ResourceVersion, v.Managers)
	if v.Err != "" {
		s += ": " + v.Err
	}
	if len(v.Warnings) > 0 {
		s += " (warnings: " + strings.Join(v.Warnings, "; ") + ")"
	}
	return s
}

func managers(m metav1.Object) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range m.GetManagedFields() {
		if !seen[f.Manager] {
			seen[f.Manager] = true
			out = append(out, f.Manager)
		}
	}
	return out
}
