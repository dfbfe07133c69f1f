package policy

import (
	"fmt"
	"reflect"
	"sort"

	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// decode unmarshals one YAML document into v with unmarshal and, when
// that fails, says where: the error then starts with the field path of
// the smallest value that fails on its own. The JSON decoder names no
// path for an unknown field or for an UnmarshalJSON method's error (a
// Duration such as "1x"), and names a type error's field by its Go
// struct, without list indexes (FuzzDecodePolicy asserts every error
// has a path). A document that is not YAML keeps its error (with a line
// when the YAML parser gives one); one that is not a mapping fails as a
// whole (no path). Finding the path, only after a failure, decodes one
// pruned document per sibling of each value along it.
func decode(raw []byte, v any, unmarshal func([]byte, any) error) error {
	err := unmarshal(raw, v)
	if err == nil {
		return nil
	}
	var tree any
	if yaml.Unmarshal(raw, &tree) != nil {
		return err
	}
	if _, ok := tree.(map[string]any); !ok {
		return err
	}
	fails := func(path []any, empty bool) error {
		doc, err := yaml.Marshal(only(tree, path, empty))
		if err != nil {
			return nil
		}
		return unmarshal(doc, reflect.New(reflect.TypeOf(v).Elem()).Interface())
	}
	var path []any
	for {
		next, found := failingChild(at(tree, path), path, err.Error(), fails)
		if !found {
			break
		}
		path = next
	}
	if len(path) == 0 {
		return err
	}
	return fmt.Errorf("%s: %w", render(path), err)
}

// failingChild is the child of node (a mapping's keys in order, a list's
// items) that fails alone with the message msg, else the first that fails
// alone; none when node fails even when emptied: its own shape is wrong.
func failingChild(node any, path []any, msg string, fails func([]any, bool) error) ([]any, bool) {
	var children []any
	switch n := node.(type) {
	case map[string]any:
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			children = append(children, k)
		}
	case []any:
		for i := range n {
			children = append(children, i)
		}
	default:
		return nil, false
	}
	if len(path) > 0 && fails(path, true) != nil {
		return nil, false
	}
	var first []any
	for _, c := range children {
		p := append(append([]any(nil), path...), c)
		if err := fails(p, false); err != nil {
			if err.Error() == msg {
				return p, true
			}
			if first == nil {
				first = p
			}
		}
	}
	return first, first != nil
}

// only is tree with nothing but the values along path (the last one
// emptied when empty is set).
func only(node any, path []any, empty bool) any {
	if len(path) == 0 {
		if empty {
			switch node.(type) {
			case map[string]any:
				return map[string]any{}
			case []any:
				return []any{}
			}
		}
		return node
	}
	switch n := node.(type) {
	case map[string]any:
		k := path[0].(string)
		return map[string]any{k: only(n[k], path[1:], empty)}
	case []any:
		return []any{only(n[path[0].(int)], path[1:], empty)}
	}
	return node
}

func at(node any, path []any) any {
	for _, s := range path {
		switch n := node.(type) {
		case map[string]any:
			node = n[s.(string)]
		case []any:
			node = n[s.(int)]
		}
	}
	return node
}

// render writes path as Kubernetes does: spec.checks[0].min.
func render(path []any) string {
	p := field.NewPath(path[0].(string))
	for _, s := range path[1:] {
		switch s := s.(type) {
		case string:
			p = p.Child(s)
		case int:
			p = p.Index(s)
		}
	}
	return p.String()
}

// lenient is how `policy lint` reads a document's kind.
func lenient(y []byte, v any) error { return yaml.Unmarshal(y, v) }

// strict is how `policy lint` reads a SplitPolicy: unknown fields are
// errors, and so is a field whose case differs from the API's ("speC",
// "ApiVersion"): encoding/json, under sigs.k8s.io/yaml, would take it,
// but the API server drops it, so the controller would never see it
// (found by FuzzDecodePolicy). The second decode, case-sensitive as the
// API server's, only looks for such fields: its numbers are not
// converted to the strings the API expects, as the first decode's are.
func strict(y []byte, v any) error {
	if err := yaml.UnmarshalStrict(y, v); err != nil {
		return err
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return err
	}
	strictErrs, _ := kjson.UnmarshalStrict(j, reflect.New(reflect.TypeOf(v).Elem()).Interface(), kjson.DisallowUnknownFields)
	if len(strictErrs) > 0 {
		return fmt.Errorf("%w (field names are case-sensitive)", strictErrs[0])
	}
	return nil
}
