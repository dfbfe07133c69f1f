package controller

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/mesh"
)

// routeTarget is what the router routes for the Split: Service svc, the
// user's VirtualService and routes, and where pinned routes go for a Split
// in status st (only under splitter.dev/pinned-routes: follow-live).
func routeTarget(split *splitterv1.Split, svc, subsetLabel string, st splitterv1.SplitStatus) mesh.Target {
	t := mesh.Target{Namespace: split.Namespace, Service: svc, VirtualService: split.Spec.VirtualService, SubsetLabel: subsetLabel, Owner: split}
	for _, n := range strings.Split(split.Spec.Routes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			t.Routes = append(t.Routes, n)
		}
	}
	if split.Spec.PinnedRoutes == splitterv1.PinnedRoutesFollowLive {
		t.Follow, t.Keep = mesh.PinColors(st)
	}
	return t
}

// checkAnnotations refuses annotation values splitter does not know.
func checkAnnotations(split *splitterv1.Split) error {
	if v := split.Spec.PinnedRoutes; v != "" && v != splitterv1.PinnedRoutesFollowLive {
		return &stallError{reason: "AnnotationInvalid", msg: fmt.Sprintf("Deployment %s metadata.annotations[%s]: %q is not a known value: use %s or remove it",
			split.Spec.Workload, splitterv1.PinnedRoutesAnnotation, v, splitterv1.PinnedRoutesFollowLive)}
	}
	if split.Spec.Routes != "" && split.Spec.VirtualService == "" {
		return &stallError{reason: "AnnotationInvalid", msg: fmt.Sprintf("Deployment %s metadata.annotations[%s]: names routes of a VirtualService, but %s names none: splitter's own VirtualService has one route",
			split.Spec.Workload, splitterv1.RoutesAnnotation, splitterv1.VirtualServiceAnnotation)}
	}
	return nil
}

// checkNamedService refuses a Service named by splitter.dev/service whose
// endpoints are not the workload's pods: without a selector (its
// Endpoints are the user's, with no pod labels for the subsets to pick),
// or with one that does not select the pods.
func checkNamedService(svc *corev1.Service, user *appsv1.Deployment, subsetLabel string) error {
	if len(svc.Spec.Selector) == 0 {
		return &stallError{reason: "ServiceInvalid", msg: fmt.Sprintf(
			"Service %s spec.selector: empty (the Service is named by %s): its endpoints are not the pods of %s, so the color subsets select nothing; give it a selector for the pods",
			svc.Name, splitterv1.ServiceAnnotation, user.Name)}
	}
	if !selectsWorkload(svc, user, subsetLabel) {
		return &stallError{reason: "ServiceInvalid", msg: fmt.Sprintf(
			"Service %s spec.selector: %v does not select the pods of %s (labels %v)",
			svc.Name, svc.Spec.Selector, user.Name, user.Spec.Template.Labels)}
	}
	return nil
}
