package policy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func TestCompileHooks(t *testing.T) {
	spec := splitterv1.SplitPolicySpec{
		Hooks: []splitterv1.Hook{
			{Name: "smoke", At: splitterv1.HookPreRollout, URL: "http://smoke-tests.shop/run", Metadata: map[string]string{"suite": "smoke"}},
			{Name: "load", At: splitterv1.HookStep, URLFrom: &splitterv1.SecretKeyRef{Name: "load-url"}, Timeout: dur(5 * time.Minute), OnFailure: "pause"},
			{Name: "verify", At: splitterv1.HookPostPromotion, URLFrom: &splitterv1.SecretKeyRef{Name: "verify", Key: "endpoint"}, Timeout: dur(time.Second)},
		},
		Notifications: []splitterv1.Receiver{
			{Name: "slack", Type: splitterv1.ReceiverSlack, URLFrom: splitterv1.SecretKeyRef{Name: "slack-webhook"}},
			{Name: "ops", Type: splitterv1.ReceiverWebhook, URLFrom: splitterv1.SecretKeyRef{Name: "ops", Key: "hook.url"}},
		},
	}
	p, errs := Compile(spec)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := []Hook{
		{Name: "smoke", At: splitterv1.HookPreRollout, URL: "http://smoke-tests.shop/run", Timeout: DefaultHookTimeout, OnFailure: "rollback", Metadata: map[string]string{"suite": "smoke"}},
		{Name: "load", At: splitterv1.HookStep, URLFrom: &splitterv1.SecretKeyRef{Name: "load-url", Key: DefaultSecretKey}, Timeout: 5 * time.Minute, OnFailure: "pause"},
		{Name: "verify", At: splitterv1.HookPostPromotion, URLFrom: &splitterv1.SecretKeyRef{Name: "verify", Key: "endpoint"}, Timeout: time.Second, OnFailure: "rollback"},
	}
	if len(p.Hooks) != len(want) {
		t.Fatalf("hooks %+v", p.Hooks)
	}
	for i, h := range p.Hooks {
		w := want[i]
		if h.Name != w.Name || h.At != w.At || h.URL != w.URL || h.Timeout != w.Timeout || h.OnFailure != w.OnFailure ||
			(h.URLFrom == nil) != (w.URLFrom == nil) || (h.URLFrom != nil && *h.URLFrom != *w.URLFrom) || len(h.Metadata) != len(w.Metadata) {
			t.Errorf("hook %d: %+v, want %+v", i, h, w)
		}
	}
	// The default key is filled in the plan, not in the spec.
	if spec.Hooks[1].URLFrom.Key != "" {
		t.Errorf("compiling changed the spec's urlFrom: %+v", spec.Hooks[1].URLFrom)
	}
	if got := p.HooksAt(splitterv1.HookStep); len(got) != 1 || got[0].Name != "load" {
		t.Errorf("HooksAt(step) = %+v", got)
	}
	if got := p.HooksAt(splitterv1.HookPrePromotion); got != nil {
		t.Errorf("HooksAt(pre-promotion) = %+v, want none", got)
	}
	if len(p.Receivers) != 2 || p.Receivers[0].URLFrom.Key != DefaultSecretKey || p.Receivers[1].URLFrom.Key != "hook.url" || p.Receivers[1].Type != splitterv1.ReceiverWebhook {
		t.Errorf("receivers %+v", p.Receivers)
	}
}

// Every error names its field; a URL's value is never echoed (it may
// carry a token).
func TestCompileHooksInvalid(t *testing.T) {
	ok := splitterv1.Hook{Name: "smoke", At: splitterv1.HookPreRollout, URL: "https://smoke.shop/run"}
	okRecv := splitterv1.Receiver{Name: "slack", Type: splitterv1.ReceiverSlack, URLFrom: splitterv1.SecretKeyRef{Name: "slack"}}
	hook := func(f func(*splitterv1.Hook)) []splitterv1.Hook {
		h := ok
		f(&h)
		return []splitterv1.Hook{h}
	}
	recv := func(f func(*splitterv1.Receiver)) []splitterv1.Receiver {
		r := okRecv
		f(&r)
		return []splitterv1.Receiver{r}
	}
	for _, tc := range []struct {
		name  string
		spec  splitterv1.SplitPolicySpec
		field string // the error's field path
		msg   string // in its message
	}{
		{"no URL", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL = "" })},
			"spec.hooks[0].url", "exactly one of url and urlFrom"},
		{"both URLs", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URLFrom = &splitterv1.SecretKeyRef{Name: "x"} })},
			"spec.hooks[0].urlFrom", "exactly one of url and urlFrom"},
		{"relative URL", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL = "/run?token=s3cr3t" })},
			"spec.hooks[0].url", "absolute http(s) URL"},
		{"not http", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL = "ftp://smoke.shop/s3cr3t" })},
			"spec.hooks[0].url", "absolute http(s) URL"},
		{"unparsable URL", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL = "http://[::1/s3cr3t" })},
			"spec.hooks[0].url", "absolute http(s) URL"},
		{"no host", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL = "https:///s3cr3t" })},
			"spec.hooks[0].url", "absolute http(s) URL"},
		{"no Secret name", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL, h.URLFrom = "", &splitterv1.SecretKeyRef{} })},
			"spec.hooks[0].urlFrom.name", "Required"},
		{"bad Secret name", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL, h.URLFrom = "", &splitterv1.SecretKeyRef{Name: "Smoke_URL"} })},
			"spec.hooks[0].urlFrom.name", "RFC 1123"},
		{"bad Secret key", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.URL, h.URLFrom = "", &splitterv1.SecretKeyRef{Name: "smoke", Key: "a/b"} })},
			"spec.hooks[0].urlFrom.key", "valid config key"},
		{"timeout too short", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.Timeout = dur(100 * time.Millisecond) })},
			"spec.hooks[0].timeout", "between 1s and 10m0s"},
		{"zero timeout", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.Timeout = dur(0) })},
			"spec.hooks[0].timeout", "between 1s and 10m0s"},
		{"timeout too long", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.Timeout = dur(11 * time.Minute) })},
			"spec.hooks[0].timeout", "between 1s and 10m0s"},
		{"no point", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.At = "" })},
			"spec.hooks[0].at", "Required"},
		{"unknown point", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.At = "post-rollout" })},
			"spec.hooks[0].at", "Unsupported value"},
		{"unknown onFailure", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.OnFailure = "ignore" })},
			"spec.hooks[0].onFailure", "Unsupported value"},
		{"post-promotion pause", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.At, h.OnFailure = splitterv1.HookPostPromotion, "pause" })},
			"spec.hooks[0].onFailure", "only rollback"},
		{"no name", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.Name = "" })},
			"spec.hooks[0].name", "Required"},
		{"bad name", splitterv1.SplitPolicySpec{Hooks: hook(func(h *splitterv1.Hook) { h.Name = "Smoke Test" })},
			"spec.hooks[0].name", "RFC 1123"},
		{"duplicate name", splitterv1.SplitPolicySpec{Hooks: []splitterv1.Hook{ok, ok}},
			"spec.hooks[1].name", "Duplicate value"},
		{"receiver without Secret", splitterv1.SplitPolicySpec{Notifications: recv(func(r *splitterv1.Receiver) { r.URLFrom = splitterv1.SecretKeyRef{} })},
			"spec.notifications[0].urlFrom.name", "Required"},
		{"receiver bad key", splitterv1.SplitPolicySpec{Notifications: recv(func(r *splitterv1.Receiver) { r.URLFrom.Key = "../url" })},
			"spec.notifications[0].urlFrom.key", "valid config key"},
		{"receiver type", splitterv1.SplitPolicySpec{Notifications: recv(func(r *splitterv1.Receiver) { r.Type = "email" })},
			"spec.notifications[0].type", "Unsupported value"},
		{"receiver name", splitterv1.SplitPolicySpec{Notifications: recv(func(r *splitterv1.Receiver) { r.Name = "" })},
			"spec.notifications[0].name", "Required"},
		{"duplicate receiver", splitterv1.SplitPolicySpec{Notifications: []splitterv1.Receiver{okRecv, okRecv}},
			"spec.notifications[1].name", "Duplicate value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, errs := Compile(tc.spec)
			if p != nil || len(errs) != 1 {
				t.Fatalf("got %d error(s) %v, want exactly one", len(errs), errs)
			}
			e := errs[0]
			if e.Field != tc.field || !strings.Contains(e.Error(), tc.msg) {
				t.Errorf("error %q at %s, want %q at %s", e.Error(), e.Field, tc.msg, tc.field)
			}
			if strings.Contains(e.Error(), "s3cr3t") {
				t.Errorf("error %q shows the URL", e.Error())
			}
		})
	}
}

// The defaults compile: every point, each onFailure it allows, the
// timeout's bounds.
func TestCompileHooksBounds(t *testing.T) {
	var hs []splitterv1.Hook
	for _, at := range []splitterv1.HookPoint{splitterv1.HookPreRollout, splitterv1.HookStep, splitterv1.HookPrePromotion, splitterv1.HookPostPromotion} {
		for _, of := range []string{"", "rollback", "pause"} {
			if at == splitterv1.HookPostPromotion && of == "pause" {
				continue
			}
			hs = append(hs, splitterv1.Hook{Name: string(at) + "-" + map[string]string{"": "default", "rollback": "rb", "pause": "p"}[of], At: at, URL: "http://h/", OnFailure: of})
		}
	}
	hs[0].Timeout, hs[1].Timeout = dur(MinHookTimeout), dur(MaxHookTimeout)
	p, errs := Compile(splitterv1.SplitPolicySpec{Hooks: hs})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(p.Hooks) != len(hs) || p.Hooks[0].Timeout != MinHookTimeout || p.Hooks[1].Timeout != MaxHookTimeout || p.Hooks[2].Timeout != DefaultHookTimeout {
		t.Errorf("hooks %+v", p.Hooks)
	}
}
