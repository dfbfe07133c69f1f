// Package v1alpha1 holds the splitter.dev/v1alpha1 API: SplitPolicy, the
// release policy SREs write, and Split, the per-workload record whose status
// is the live state of a release.
//
// +kubebuilder:object:generate=true
// +groupName=splitter.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "splitter.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
