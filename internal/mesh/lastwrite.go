package mesh

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The kinds of object the routers write, as they report them to OnWrite.
const (
	KindVirtualService  = "VirtualService"
	KindDestinationRule = "DestinationRule"
	KindService         = "Service"
)

// Writes from a stale cache.
//
// The controller reads through controller-runtime's cache, which lags the
// API server by a few milliseconds. A reconcile that runs right after one
// that wrote sees the object as it was before that write: the old weights,
// the old resourceVersion. Left alone it sends the same write again, which
// the resourceVersion precondition refuses (a conflict, and a retry). The
// routers therefore remember, per object, what their last successful write
// returned and which resourceVersions it replaced. A cached object whose
// resourceVersion is one of those is stale: the router reads our last
// write's result instead, so Observe reports the weights we wrote and
// SetWeights, seeing they are already there, writes nothing.
//
// resourceVersions are opaque: they are only ever compared for equality.
// A resourceVersion is known to be older than our write only because our
// write's precondition named it (or named one that our previous write
// returned, and so on). Once the cache shows anything else (our write, or a
// later change by anyone), it will never show an older version again
// (informers only move forward), and the memory of that object is dropped.

// absentGrace is how long after we created an object a cache that does not
// have it yet is taken to be stale rather than showing a deletion. Absence
// has no resourceVersion, so it is the one case where a time bound is
// needed: an object we created and someone deleted before our cache ever
// showed it would otherwise look stale forever. Cache lag is milliseconds.
const absentGrace = 5 * time.Second

// keepFor bounds how long a write is remembered: a cache that has not caught
// up after this long is not lagging but broken, and the resourceVersion
// precondition still guards every write.
const keepFor = 2 * time.Minute

// maxReplaced bounds the chain of replaced resourceVersions kept per object.
const maxReplaced = 8

type writeKey struct {
	kind string
	types.NamespacedName
}

type lastWrite struct {
	// obj is the object as the API server returned it from our last
	// successful write; nil when that write deleted it.
	obj client.Object
	// replaced are resourceVersions older than obj's, each named by the
	// precondition of one of our writes in an unbroken chain ending at obj;
	// "" is the object's absence before we created it.
	replaced []string
	at       time.Time
}

// lastWrites is a router's memory of its last successful write per object.
// A nil *lastWrites remembers nothing: every read is taken as it is.
type lastWrites struct {
	mu   sync.Mutex
	objs map[writeKey]*lastWrite
	now  func() time.Time
}

func newLastWrites() *lastWrites {
	return &lastWrites{objs: map[writeKey]*lastWrite{}, now: time.Now}
}

// current returns the object to act on: cached (nil when the cache does not
// have it), or a copy of our last write's result when cached is a version
// our writes replaced.
func (l *lastWrites) current(kind string, key types.NamespacedName, cached client.Object) client.Object {
	if l == nil {
		return cached
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := writeKey{kind, key}
	w := l.objs[k]
	if w == nil {
		return cached
	}
	rv := "" // absent
	if cached != nil {
		rv = cached.GetResourceVersion()
	}
	age := l.now().Sub(w.at)
	if slices.Contains(w.replaced, rv) && age < keepFor && (cached != nil || age < absentGrace) {
		if w.obj == nil {
			return nil // we deleted it
		}
		return w.obj.DeepCopyObject().(client.Object)
	}
	// The cache has caught up with our write, or moved past it: it will not
	// show an older version again. (Or the memory is too old to matter.)
	delete(l.objs, k)
	return cached
}

// remember records a successful write: from is the resourceVersion it
// started from ("" for a create), obj what the API server returned (nil for
// a delete).
func (l *lastWrites) remember(kind string, key types.NamespacedName, from string, obj client.Object) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, w := range l.objs {
		if now.Sub(w.at) > keepFor {
			delete(l.objs, k)
		}
	}
	k := writeKey{kind, key}
	var replaced []string
	if w := l.objs[k]; w != nil && w.obj != nil && w.obj.GetResourceVersion() == from {
		// This write started from our last one's result: every version
		// that one replaced is older still.
		replaced = append(replaced, w.replaced...)
	}
	replaced = append(replaced, from)
	if len(replaced) > maxReplaced {
		replaced = replaced[len(replaced)-maxReplaced:]
	}
	w := &lastWrite{replaced: replaced, at: now}
	if obj != nil {
		w.obj = obj.DeepCopyObject().(client.Object)
		// A write that changed nothing returns the version it started
		// from, which is then current, not stale.
		w.replaced = slices.DeleteFunc(w.replaced, func(rv string) bool { return rv == obj.GetResourceVersion() })
	}
	l.objs[k] = w
}

// PatchNotApplied says whether err is the API server's refusal of a JSON
// patch that could not be applied to the stored object. k8s.io/apiserver's
// patch handler answers a failed JSON patch operation (here: our "test" of
// /metadata/resourceVersion) with
//
//	errors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
//
// which is 422 with reason Invalid and the generic message "the server
// rejected our request due to an error in our request": the JSON patch
// library's message (which names the path) is dropped, and the details name
// no kind, no object and no causes. A patched object that fails validation
// is also 422 Invalid, but from errors.NewInvalid, whose details name the
// kind and the object and carry one cause per invalid field; so does a
// response client-go could not decode (a cause of type
// UnexpectedServerResponse, and the resource). Our weight patches are built
// from the object at the resourceVersion they test, so once the test passes
// every other operation applies: a patch that could not be applied is a
// failed precondition, a lost race.
func PatchNotApplied(err error) bool {
	var st apierrors.APIStatus
	if err == nil || !errors.As(err, &st) {
		return false
	}
	s := st.Status()
	if s.Code != http.StatusUnprocessableEntity || s.Reason != metav1.StatusReasonInvalid {
		return false
	}
	d := s.Details
	return d == nil || (d.Kind == "" && d.Group == "" && d.Name == "" && len(d.Causes) == 0)
}
