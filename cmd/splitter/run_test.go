package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := portFree(l.Addr().String()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a taken port: got %v, want address already in use", err)
	}
	for _, free := range []string{"0", "", "127.0.0.1:0"} {
		if err := portFree(free); err != nil {
			t.Errorf("portFree(%q) = %v", free, err)
		}
	}
}

// A laptop's kubeconfig: the context's namespace is where the Lease goes,
// and --context picks another context.
func TestRestConfigTakesTheContextNamespace(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	path := filepath.Join(t.TempDir(), "config")
	kubeconfig := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: shop
  context: {cluster: c, user: u, namespace: shop}
- name: bare
  context: {cluster: c, user: u}
current-context: shop
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ context, want string }{{"", "shop"}, {"bare", "default"}} {
		cfg, ns, err := restConfig(path, tc.context)
		if err != nil {
			t.Fatal(err)
		}
		if ns != tc.want || cfg.Host != "https://127.0.0.1:6443" {
			t.Errorf("context %q: namespace %q host %q, want %q", tc.context, ns, cfg.Host, tc.want)
		}
	}
	if _, _, err := restConfig(path, "nope"); err == nil {
		t.Error("an unknown context: no error")
	}
}
