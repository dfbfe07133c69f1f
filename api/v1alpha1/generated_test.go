package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedFilesUpToDate regenerates the CRDs, RBAC and deepcopy code into a
// temporary directory and fails when the committed files differ: run
// `make manifests` after changing a type or a marker.
func TestGeneratedFilesUpToDate(t *testing.T) {
	cg := os.Getenv("CONTROLLER_GEN")
	if cg == "" {
		if os.Getenv("SPLITTER_REQUIRE_TOOLS") == "1" {
			t.Fatal("CONTROLLER_GEN unset: run through `make test`")
		}
		t.Skip("CONTROLLER_GEN unset: run through `make test`")
	}
	tmp := t.TempDir()
	crds, objects := filepath.Join(tmp, "crds"), filepath.Join(tmp, "object")
	cmd := exec.Command(cg, "object", "paths=.", "output:object:dir="+objects)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen object: %v\n%s", err, out)
	}
	cmd = exec.Command(cg, "crd", "paths=.", "output:crd:artifacts:config="+crds)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen crd: %v\n%s", err, out)
	}
	rbac := filepath.Join(tmp, "rbac")
	cmd = exec.Command(cg, "rbac:roleName=splitter-controller", "paths=../../internal/controller/...", "output:rbac:artifacts:config="+rbac)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen rbac: %v\n%s", err, out)
	}
	compareDirs(t, rbac, "../../deploy/rbac", "role.yaml")
	compareDirs(t, objects, ".", "zz_generated.deepcopy.go")
	generated, err := filepath.Glob(filepath.Join(crds, "*.yaml"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("controller-gen wrote no CRDs: %v", err)
	}
	committed, _ := filepath.Glob("../../deploy/crds/*.yaml")
	if len(committed) != len(generated) {
		t.Errorf("deploy/crds has %d files, controller-gen writes %d: run `make manifests`", len(committed), len(generated))
	}
	for _, g := range generated {
		compareDirs(t, crds, "../../deploy/crds", filepath.Base(g))
	}
}

func compareDirs(t *testing.T, fresh, committed, name string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(fresh, name))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(committed, name))
	if err != nil {
		t.Errorf("%s: %v: run `make manifests`", name, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run `make manifests`", filepath.Join(committed, name))
	}
}
