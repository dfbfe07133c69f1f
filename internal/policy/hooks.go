package policy

import (
	"fmt"
	"net/url"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Hook defaults and limits.
const (
	DefaultHookTimeout = 30 * time.Second
	// MaxHookTimeout bounds how long a release can wait on one call.
	MaxHookTimeout = 10 * time.Minute
	// MinHookTimeout: a shorter timeout fails on a cold connection.
	MinHookTimeout = time.Second
	// DefaultSecretKey is the Secret key a URL is read from by default.
	DefaultSecretKey = "url"
)

// Hook is a compiled webhook the release waits on.
type Hook struct {
	Name string
	At   splitterv1.HookPoint
	// URL is set when the policy gives it in clear; otherwise URLFrom
	// names the Secret key to read it from at call time.
	URL       string
	URLFrom   *splitterv1.SecretKeyRef
	Timeout   time.Duration
	OnFailure string // pause or rollback
	Metadata  map[string]string
}

// Receiver is a compiled notification receiver.
type Receiver struct {
	Name    string
	Type    splitterv1.ReceiverType
	URLFrom splitterv1.SecretKeyRef
}

// HooksAt returns the plan's hooks that run at point.
func (p *Plan) HooksAt(point splitterv1.HookPoint) []Hook {
	var out []Hook
	for _, h := range p.Hooks {
		if h.At == point {
			out = append(out, h)
		}
	}
	return out
}

func compileHooks(root *field.Path, spec splitterv1.SplitPolicySpec, p *Plan) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, h := range spec.Hooks {
		path := root.Child("hooks").Index(i)
		errs = append(errs, uniqueName(seen, path.Child("name"), h.Name)...)
		c := Hook{Name: h.Name, At: h.At, URL: h.URL, Timeout: DefaultHookTimeout, OnFailure: "rollback", Metadata: h.Metadata}
		switch h.At {
		case "":
			errs = append(errs, field.Required(path.Child("at"), "where in the release the hook runs"))
		case splitterv1.HookPreRollout, splitterv1.HookStep, splitterv1.HookPrePromotion, splitterv1.HookPostPromotion:
		default:
			errs = append(errs, field.NotSupported(path.Child("at"), h.At, []string{string(splitterv1.HookPreRollout),
				string(splitterv1.HookStep), string(splitterv1.HookPrePromotion), string(splitterv1.HookPostPromotion)}))
		}
		switch {
		case h.URL == "" && h.URLFrom == nil:
			errs = append(errs, field.Required(path.Child("url"), "exactly one of url and urlFrom must be set"))
		case h.URL != "" && h.URLFrom != nil:
			errs = append(errs, field.Forbidden(path.Child("urlFrom"), "exactly one of url and urlFrom must be set"))
		case h.URL != "":
			if msg := httpURL(h.URL); msg != "" {
				// The value is not echoed: a URL may carry a token.
				errs = append(errs, field.Invalid(path.Child("url"), "(not shown)", msg))
			}
		default:
			ref := *h.URLFrom
			errs = append(errs, validateSecretRef(path.Child("urlFrom"), &ref)...)
			c.URLFrom = &ref
		}
		if h.Timeout != nil {
			c.Timeout = h.Timeout.Duration
			if c.Timeout < MinHookTimeout || c.Timeout > MaxHookTimeout {
				errs = append(errs, field.Invalid(path.Child("timeout"), c.Timeout.String(),
					fmt.Sprintf("must be between %s and %s", MinHookTimeout, MaxHookTimeout)))
			}
		}
		switch h.OnFailure {
		case "":
		case "pause", "rollback":
			c.OnFailure = h.OnFailure
		default:
			errs = append(errs, field.NotSupported(path.Child("onFailure"), h.OnFailure, []string{"pause", "rollback"}))
		}
		if h.At == splitterv1.HookPostPromotion && c.OnFailure == "pause" {
			errs = append(errs, field.Invalid(path.Child("onFailure"), h.OnFailure,
				"a post-promotion hook runs when the candidate already has all traffic: only rollback (to the standby color) is possible"))
		}
		p.Hooks = append(p.Hooks, c)
	}
	return errs
}

func compileReceivers(root *field.Path, spec splitterv1.SplitPolicySpec, p *Plan) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, r := range spec.Notifications {
		path := root.Child("notifications").Index(i)
		errs = append(errs, uniqueName(seen, path.Child("name"), r.Name)...)
		switch r.Type {
		case splitterv1.ReceiverSlack, splitterv1.ReceiverTeams, splitterv1.ReceiverWebhook:
		default:
			errs = append(errs, field.NotSupported(path.Child("type"), r.Type, []string{string(splitterv1.ReceiverSlack),
				string(splitterv1.ReceiverTeams), string(splitterv1.ReceiverWebhook)}))
		}
		ref := r.URLFrom
		errs = append(errs, validateSecretRef(path.Child("urlFrom"), &ref)...)
		p.Receivers = append(p.Receivers, Receiver{Name: r.Name, Type: r.Type, URLFrom: ref})
	}
	return errs
}

// httpURL says what is wrong with an http(s) URL, or "".
func httpURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an absolute http(s) URL such as http://smoke-tests.shop/run"
	}
	return ""
}

// uniqueName checks a list entry's name: valid, and not seen before.
func uniqueName(seen map[string]bool, path *field.Path, name string) field.ErrorList {
	errs := validateName(path, name)
	if seen[name] {
		errs = append(errs, field.Duplicate(path, name))
	}
	seen[name] = true
	return errs
}

func validateName(path *field.Path, name string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(path, "")}
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(path, name, msgs[0])}
	}
	return nil
}

// validateSecretRef checks ref and fills in the default key.
func validateSecretRef(path *field.Path, ref *splitterv1.SecretKeyRef) field.ErrorList {
	var errs field.ErrorList
	if ref.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), "the Secret holding the URL"))
	} else if msgs := validation.IsDNS1123Subdomain(ref.Name); len(msgs) > 0 {
		// Caught here, not as a "not found" at the first call.
		errs = append(errs, field.Invalid(path.Child("name"), ref.Name, msgs[0]))
	}
	if ref.Key == "" {
		ref.Key = DefaultSecretKey
	} else if msgs := validation.IsConfigMapKey(ref.Key); len(msgs) > 0 {
		errs = append(errs, field.Invalid(path.Child("key"), ref.Key, msgs[0]))
	}
	return errs
}
