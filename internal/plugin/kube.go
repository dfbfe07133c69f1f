package plugin

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/controller"
)

// kube is the plugin's view of the cluster: the user's kubeconfig (and
// its flags) and RBAC, nothing else.
type kube struct {
	flags *genericclioptions.ConfigFlags
	c     client.WithWatch
	ns    string
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s) // static registrations never fail
	_ = splitterv1.AddToScheme(s)     // static registrations never fail
	return s
}

func connect(flags *genericclioptions.ConfigFlags) (*kube, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-splitter"
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	return &kube{flags: flags, c: c, ns: ns}, nil
}

func (k *kube) key(name string) client.ObjectKey {
	return client.ObjectKey{Namespace: k.ns, Name: name}
}

func (k *kube) split(ctx context.Context, name string) (*splitterv1.Split, error) {
	s := &splitterv1.Split{}
	if err := k.c.Get(ctx, k.key(name), s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no Split %s in namespace %s (is the Deployment opted in? kubectl splitter opt-in %s --policy P)", name, k.ns, name)
		}
		return nil, fmt.Errorf("reading Split %s/%s: %w", k.ns, name, err)
	}
	return s, nil
}

// templateRevision is the revision of the user's Deployment's template
// now, as the controller computes it ("" if it cannot be read).
func (k *kube) templateRevision(ctx context.Context, s *splitterv1.Split) (string, error) {
	d := &appsv1.Deployment{}
	if err := k.c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Spec.Workload}, d); err != nil {
		return "", fmt.Errorf("reading Deployment %s/%s: %w", s.Namespace, s.Spec.Workload, err)
	}
	return controller.TemplateRevision(&d.Spec.Template), nil
}

// whoami is the user the API server authenticates (SelfSubjectReview),
// or the kubeconfig's user name when the API refuses to say.
func (k *kube) whoami(ctx context.Context) string {
	r := &authenticationv1.SelfSubjectReview{}
	if err := k.c.Create(ctx, r); err == nil && r.Status.UserInfo.Username != "" {
		return r.Status.UserInfo.Username
	}
	raw, err := k.flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return ""
	}
	ctxName := raw.CurrentContext
	if k.flags.Context != nil && *k.flags.Context != "" {
		ctxName = *k.flags.Context
	}
	if k.flags.AuthInfoName != nil && *k.flags.AuthInfoName != "" {
		return *k.flags.AuthInfoName
	}
	if c := raw.Contexts[ctxName]; c != nil {
		return c.AuthInfo
	}
	return ""
}

// patchFresh writes obj's Change (PatchFresh).
func (k *kube) patchFresh(ctx context.Context, obj client.Object, decide func() (Change, error)) (Change, error) {
	return PatchFresh(ctx, k.c, obj, decide)
}

// PatchFresh writes one Change to obj as a merge patch carrying the
// resourceVersion read; decide reads obj, which is refreshed in place. On
// a conflict it reads obj again and decides again: the same target is
// written again; a different one (a gate or revision that moved on) or a
// refusal is returned.
func PatchFresh(ctx context.Context, cl client.Client, obj client.Object, decide func() (Change, error)) (Change, error) {
	c, err := decide()
	if err != nil {
		return c, err
	}
	target := c.Target
	for attempt := 0; ; attempt++ {
		if c.Noop {
			return c, nil
		}
		err := cl.Patch(ctx, obj, client.RawPatch(types.MergePatchType, MergePatch(obj.GetResourceVersion(), c.Set)))
		if err == nil {
			return c, nil
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return c, fmt.Errorf("writing %s: %w", obj.GetName(), err)
		}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return c, fmt.Errorf("reading %s again after a conflict: %w", obj.GetName(), err)
		}
		if c, err = decide(); err != nil {
			return c, err
		}
		if c.Target != target {
			return c, &Refusal{Reason: fmt.Sprintf("%s moved on since it was read (%s, now %s): refusing to %s a stale target; look again with kubectl splitter get %s",
				obj.GetName(), target, c.Target, c.Verb, obj.GetName())}
		}
	}
}

// watchOptions watches one Split from a resourceVersion.
func (k *kube) watchOptions(name, rv string) *client.ListOptions {
	return &client.ListOptions{
		Namespace: k.ns,
		Raw:       &metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv, AllowWatchBookmarks: true},
	}
}
