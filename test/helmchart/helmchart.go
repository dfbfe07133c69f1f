// Package helmchart renders deploy/helm/splitter with the Helm Go library,
// as `helm template --include-crds` would, without a helm binary or a
// network. The tests here compare it with `kubectl kustomize deploy`, lint
// it and check its values schema; the e2e tests install what it renders.
package helmchart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// ChartDir is deploy/helm/splitter, found from this file so tests in any
// package can use it.
func ChartDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "helm", "splitter")
}

// Rendered is one rendering of the chart.
type Rendered struct {
	// Objects in Helm's install order (Namespace, CRDs, ServiceAccount,
	// RBAC, ..., Deployment), CRDs from crds/ included.
	Objects []*unstructured.Unstructured
	// Notes is NOTES.txt as rendered.
	Notes string
}

// Load reads the chart.
func Load(dir string) (*chart.Chart, error) {
	c, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return c, nil
}

// Values merges the chart's values with vals, checks them against
// values.schema.json and returns what templates see, as `helm template` does.
func Values(c *chart.Chart, vals map[string]any, release, namespace string) (chartutil.Values, error) {
	opts := chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	// Values are coalesced in place: give Helm a copy so callers can reuse theirs.
	v, err := chartutil.ToRenderValues(c, copyValues(vals), opts, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return v, nil
}

// Render renders the chart at dir with vals overriding values.yaml, for
// release in namespace (helm --namespace; the chart's namespace.name wins).
func Render(dir string, vals map[string]any, release, namespace string) (*Rendered, error) {
	c, err := Load(dir)
	if err != nil {
		return nil, err
	}
	v, err := Values(c, vals, release, namespace)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(c, v)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	out := &Rendered{}
	manifests := map[string]string{}
	for name, content := range files {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			out.Notes = content
		case strings.HasPrefix(path.Base(name), "_"), strings.TrimSpace(content) == "":
		default:
			manifests[name] = content
		}
	}
	for _, crd := range c.CRDObjects() {
		objs, err := Decode(crd.File.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", crd.Filename, err)
		}
		out.Objects = append(out.Objects, objs...)
	}
	caps := chartutil.DefaultCapabilities
	_, sorted, err := releaseutil.SortManifests(manifests, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("sort manifests: %w", err)
	}
	for _, m := range sorted {
		objs, err := Decode([]byte(m.Content))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		out.Objects = append(out.Objects, objs...)
	}
	// The CRDs go after the Namespace, as `helm install` creates them first
	// and kubectl orders Namespaces before everything.
	sortNamespacesFirst(out.Objects)
	return out, nil
}

// Decode reads every object of a multi-document YAML stream, in order.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			continue // an empty document
		}
		// Unstructured's own JSON reading: integers are int64, as client-go has them.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
}

func sortNamespacesFirst(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool {
		return objs[i].GetKind() == "Namespace" && objs[j].GetKind() != "Namespace"
	})
}

func copyValues(vals map[string]any) map[string]any {
	if vals == nil {
		return map[string]any{}
	}
	out := make(map[string]any, len(vals))
	for k, v := range vals {
		if m, ok := v.(map[string]any); ok {
			v = copyValues(m)
		}
		out[k] = v
	}
	return out
}
