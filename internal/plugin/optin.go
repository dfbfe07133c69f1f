package plugin

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// OptInPlan says what opting d in with policy will do. policyErr is why
// the SplitPolicy could not be found (nil when it exists).
func OptInPlan(d *appsv1.Deployment, policy string, policyErr error) []string {
	var out []string
	if old := d.Annotations[splitterv1.PolicyAnnotation]; old != "" && old != policy {
		out = append(out, fmt.Sprintf("Deployment %s switches from SplitPolicy %s to %s: from the controller's next look, releases (one in progress included) follow %s.", d.Name, old, policy, policy))
		return out
	}
	if policyErr != nil {
		out = append(out, fmt.Sprintf("Until SplitPolicy %s exists the controller creates nothing and changes no traffic (%v).", policy, policyErr))
	}
	n := replicas(d)
	out = append(out,
		fmt.Sprintf("The controller creates Deployments %s-blue (the live colour, %d replicas, your pod template) and %s-green (0 replicas until a release).", d.Name, n, d.Name),
		fmt.Sprintf("Once %s-blue is Ready, %s is scaled to 0 (its %d replicas are remembered and restored on opt-out); keep editing its template: every change is a release.", d.Name, d.Name, n),
	)
	if vs := d.Annotations[splitterv1.VirtualServiceAnnotation]; vs != "" {
		routes := "every route that carries both subsets"
		if r := d.Annotations[splitterv1.RoutesAnnotation]; r != "" {
			routes = "the routes " + r
		}
		out = append(out, fmt.Sprintf("Your VirtualService %s is used: only the weights of %s change; every other field (retries, timeouts, other routes, matches) is left alone. No VirtualService is created.", vs, routes))
	} else {
		svc := "the Service that selects its pods"
		if s := d.Annotations[splitterv1.ServiceAnnotation]; s != "" {
			svc = "Service " + s
		}
		out = append(out, fmt.Sprintf("For %s the controller creates a DestinationRule (subsets blue, green) and a VirtualService sending 100%% to blue, and owns them.", svc))
	}
	out = append(out, fmt.Sprintf("Follow it with: kubectl splitter get %s --watch", d.Name))
	return out
}

// OptOutPlan says what removing the annotation from d will do; split is
// its Split (nil when there is none).
func OptOutPlan(d *appsv1.Deployment, split *splitterv1.Split) []string {
	var out []string
	n := replicas(d)
	if split != nil && split.Status.Replicas != nil {
		n = *split.Status.Replicas
	}
	if split != nil && InProgress(split.Status.Phase) {
		out = append(out, fmt.Sprintf("The release in progress (%s at step %d, %s at %d%%) ends unpromoted: the traffic moves from the colours straight to %s's own pods once they are Ready.",
			split.Status.Phase, split.Status.Step, split.Status.Candidate, split.Status.Weight, d.Name))
	}
	out = append(out, fmt.Sprintf("%s gets its %d replicas back; once they are Ready, 100%% of the traffic is handed back to its pods.", d.Name, n))
	if vs := d.Annotations[splitterv1.VirtualServiceAnnotation]; vs != "" {
		out = append(out, fmt.Sprintf("Your VirtualService %s is yours: opt-out waits until it no longer routes to the blue/green subsets (point it at the workload's pods without them); the colour Deployments stay until then.", vs))
	} else {
		out = append(out, "The VirtualService and DestinationRule splitter created are removed.")
	}
	out = append(out, fmt.Sprintf("Then %s-blue and %s-green and the Split are removed.", d.Name, d.Name))
	return out
}
