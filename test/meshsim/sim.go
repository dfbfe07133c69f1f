package meshsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Options configure a Simulator.
type Options struct {
	// RPS is the request rate sent to each Service without the rps
	// annotation. Default 100.
	RPS float64
	// Tick is how often a batch of requests is sent. Default 50ms.
	Tick time.Duration
	// Seed seeds the random source; 0 picks one from the clock.
	Seed uint64
	// Log receives a line for each rejected object.
	Log logr.Logger
}

// DefaultBuckets are Istio's default duration buckets in milliseconds.
var DefaultBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Labels of istio_requests_total and istio_request_duration_milliseconds.
var metricLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
	// Added by Prometheus' scrape of each sidecar (kubernetes_sd relabelling),
	// not by Istio: the pod whose proxy reported the request.
	"pod",
}

// ClientWorkload is the source workload of every synthetic request.
const ClientWorkload = "meshsim-client"

// ClientPod is the pod label of reporter="source" series. The simulator's
// clients are not pods, so one fixed name stands for the client in every
// namespace (series are told apart by source_workload_namespace).
const ClientPod = ClientWorkload + "-0"

// Simulator sends synthetic traffic through the routing stored in the API
// server and exports Istio's metrics.
type Simulator struct {
	opts   Options
	kube   informers.SharedInformerFactory
	istio  istioinformers.SharedInformerFactory
	synced []cache.InformerSynced

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	rejected *prometheus.GaugeVec
	sent     prometheus.Counter

	mu       sync.Mutex
	dirty    bool
	world    *World
	objects  map[string]*objectState // kind/ns/name -> Istio's verdict and what is in force
	verdicts []Verdict               // every version judged, oldest first (at most maxVerdicts)
	carry    map[string]float64      // fractional requests per Service
	rng      *rand.Rand
	listener net.Listener

	// What has series, so they can go when their reporter goes: a dead
	// sidecar's series vanish from its /metrics (Prometheus marks them
	// stale), and memory does not grow with pod churn.
	servedBy  map[string]podRef // pod key (see podKey) -> pod with reporter="destination" series
	clientsIn map[string]bool   // namespaces with reporter="source" series
}

// podRef names a pod whose proxy reported requests.
type podRef struct{ namespace, name string }

// New prepares a simulator for the cluster behind cfg.
func New(cfg *rest.Config, opts Options) (*Simulator, error) {
	if opts.RPS == 0 {
		opts.RPS = 100
	}
	if opts.Tick == 0 {
		opts.Tick = 50 * time.Millisecond
	}
	if opts.Seed == 0 {
		opts.Seed = uint64(time.Now().UnixNano())
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := newSimulator(opts)
	s.kube = informers.NewSharedInformerFactory(kc, 0)
	s.istio = istioinformers.NewSharedInformerFactory(ic, 0)
	s.dirty = true

	markDirty := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.markDirty() },
		UpdateFunc: func(any, any) { s.markDirty() },
		DeleteFunc: func(any) { s.markDirty() },
	}
	// Routing objects are judged as each version arrives, not only when a
	// world is built: two writes within one tick must both meet Istio's
	// validation, as both would meet its webhook.
	judged := cache.ResourceEventHandlerFuncs{
		AddFunc:    s.observe,
		UpdateFunc: func(_, obj any) { s.observe(obj) },
		DeleteFunc: func(any) { s.markDirty() },
	}
	for _, h := range []struct {
		inf     cache.SharedIndexInformer
		handler cache.ResourceEventHandler
	}{
		{s.kube.Core().V1().Services().Informer(), markDirty},
		{s.kube.Core().V1().Pods().Informer(), markDirty},
		{s.istio.Networking().V1().VirtualServices().Informer(), judged},
		{s.istio.Networking().V1().DestinationRules().Informer(), judged},
	} {
		if _, err := h.inf.AddEventHandler(h.handler); err != nil {
			return nil, err
		}
		s.synced = append(s.synced, h.inf.HasSynced)
	}
	return s, nil
}

// newSimulator has the metrics and the state but no informers: New adds
// them, tests feed worlds through setWorld.
func newSimulator(opts Options) *Simulator {
	s := &Simulator{
		opts:      opts,
		registry:  prometheus.NewRegistry(),
		objects:   map[string]*objectState{},
		carry:     map[string]float64{},
		rng:       rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		servedBy:  map[string]podRef{},
		clientsIn: map[string]bool{},
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total", Help: "Requests, as Istio's proxies count them (simulated).",
	}, metricLabels)
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "istio_request_duration_milliseconds", Help: "Request duration in ms, as Istio's proxies measure it (simulated).",
		Buckets: DefaultBuckets,
	}, metricLabels)
	s.rejected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshsim_config_rejected", Help: "1 while the stored version of an object is refused by validation.",
	}, []string{"kind", "namespace", "name"})
	s.sent = prometheus.NewCounter(prometheus.CounterOpts{Name: "meshsim_requests_sent_total", Help: "Synthetic requests sent."})
	s.registry.MustRegister(s.requests, s.duration, s.rejected, s.sent)
	return s
}

func (s *Simulator) markDirty() {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
}

// Listen serves /metrics on addr and returns the address bound.
func (s *Simulator) Listen(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.listener = l
	return l.Addr().String(), nil
}

// Synced reports whether the caches have their first full list.
func (s *Simulator) Synced() bool {
	for _, f := range s.synced {
		if !f() {
			return false
		}
	}
	return true
}

// Run watches and sends traffic until ctx ends.
func (s *Simulator) Run(ctx context.Context) error {
	s.kube.Start(ctx.Done())
	s.istio.Start(ctx.Done())
	defer s.kube.Shutdown()
	defer s.istio.Shutdown()
	if s.listener != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(s.listener) }()
		defer srv.Close()
	}
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return ctx.Err()
	}
	tick := time.NewTicker(s.opts.Tick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			s.Step(now.Sub(last))
			last = now
		}
	}
}

// Step sends the requests due over dt to every Service.
func (s *Simulator) Step(dt time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		s.setWorld(s.snapshot())
		s.dirty = false
	}
	s.send(dt)
}

// send sends the requests due over dt to every Service of the current world.
func (s *Simulator) send(dt time.Duration) {
	if s.world == nil {
		return
	}
	for _, svc := range s.world.Services() {
		key := svc.Namespace + "/" + svc.Name
		rps := s.opts.RPS
		if v, err := strconv.ParseFloat(svc.Annotations[RPSAnnotation], 64); err == nil && v >= 0 {
			rps = v
		}
		due := s.carry[key] + rps*dt.Seconds()
		n := int(due)
		s.carry[key] = due - float64(n)
		classes := trafficClasses(svc)
		for range n {
			req := classes.pick(s.rng)
			s.record(svc, s.world.Route(svc, req, s.rng))
		}
		s.sent.Add(float64(n))
	}
}

// snapshot builds a World from the caches.
func (s *Simulator) snapshot() *World {
	svcs, _ := s.kube.Core().V1().Services().Lister().List(labels.Everything())
	pods, _ := s.kube.Core().V1().Pods().Lister().List(labels.Everything())
	vss, _ := s.istio.Networking().V1().VirtualServices().Lister().List(labels.Everything())
	drs, _ := s.istio.Networking().V1().DestinationRules().Lister().List(labels.Everything())
	return s.admitWorld(svcs, pods, vss, drs)
}

// admitWorld builds a World from stored objects, routing by the version of
// each VirtualService and DestinationRule Istio's validation admits: the
// stored one, else the last valid one (what a webhook would have left in
// the API server), else none. Call with s.mu held.
func (s *Simulator) admitWorld(svcs []*corev1.Service, pods []*corev1.Pod, vss []*networkingv1.VirtualService, drs []*networkingv1.DestinationRule) *World {
	present := map[string]bool{}
	admittedVSs := admitted(s, vss, present)
	admittedDRs := admitted(s, drs, present)
	for key := range s.objects {
		if !present[key] {
			delete(s.objects, key)
			kind, rest, _ := strings.Cut(key, "/")
			ns, name, _ := strings.Cut(rest, "/")
			s.rejected.DeleteLabelValues(kind, ns, name)
		}
	}
	return NewWorld(svcs, pods, admittedVSs, admittedDRs)
}

// routingObject is what Istio's validation is run on here.
type routingObject interface {
	*networkingv1.VirtualService | *networkingv1.DestinationRule
	metav1.Object
}

// admitted returns the version in force of each stored object, and marks
// their keys present.
func admitted[T routingObject](s *Simulator, stored []T, present map[string]bool) []T {
	var out []T
	for _, obj := range stored {
		key, st := s.judge(obj)
		present[key] = true
		if st.reason == "" {
			out = append(out, obj)
		} else if prev, ok := st.lastValid.(T); ok {
			out = append(out, prev)
		}
	}
	return out
}

// maxVerdicts bounds the verdict history: the demo can run for days and the
// controller writes a VirtualService at every step.
const maxVerdicts = 10000

// objectState is what the simulator knows of one VirtualService or
// DestinationRule.
type objectState struct {
	uid, resourceVersion string // the version judged last
	reason               string // why Istio refuses that version; "" when it admits it
	// lastValid is the last version admitted since the object was created
	// (nil when none was): the one in force while the stored one is refused.
	lastValid metav1.Object
}

// observe judges a version delivered by an informer.
func (s *Simulator) observe(obj any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		s.judge(o)
	case *networkingv1.DestinationRule:
		s.judge(o)
	}
	s.dirty = true
}

// judge runs Istio's validation on obj unless this version was judged
// already, records the verdict, and returns the object's key and state.
// Call with s.mu held.
func (s *Simulator) judge(obj metav1.Object) (string, *objectState) {
	var kind string
	var validate func() ([]string, error)
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		kind, validate = "VirtualService", func() ([]string, error) { return ValidateVirtualService(o) }
	case *networkingv1.DestinationRule:
		kind, validate = "DestinationRule", func() ([]string, error) { return ValidateDestinationRule(o) }
	default:
		panic(fmt.Sprintf("meshsim: cannot validate %T", obj))
	}
	ns, name, uid, rv := obj.GetNamespace(), obj.GetName(), string(obj.GetUID()), obj.GetResourceVersion()
	key := kind + "/" + ns + "/" + name
	st := s.objects[key]
	if st != nil && st.uid == uid && st.resourceVersion == rv && rv != "" {
		return key, st
	}
	if st == nil || st.uid != uid {
		// A new object, or one deleted and created again under the same
		// name: no version of the old one is in force.
		st = &objectState{uid: uid}
		s.objects[key] = st
	}
	st.resourceVersion = rv
	warnings, err := validate()
	v := Verdict{Kind: kind, Namespace: ns, Name: name, ResourceVersion: rv, Generation: obj.GetGeneration(),
		Managers: managers(obj), Warnings: warnings}
	if err != nil {
		v.Err = err.Error()
		st.reason = v.Err
		s.rejected.WithLabelValues(kind, ns, name).Set(1)
		s.opts.Log.Info("Istio's validation refuses "+kind+", keeping the last valid version",
			"object", ns+"/"+name, "resourceVersion", rv, "managers", v.Managers, "reason", v.Err)
	} else {
		st.reason, st.lastValid = "", obj
		s.rejected.WithLabelValues(kind, ns, name).Set(0)
	}
	if len(warnings) > 0 {
		s.opts.Log.Info("Istio's validation warns about "+kind,
			"object", ns+"/"+name, "resourceVersion", rv, "managers", v.Managers, "warnings", warnings)
	}
	if len(s.verdicts) == maxVerdicts {
		s.verdicts = append(s.verdicts[:0], s.verdicts[1:]...)
	}
	s.verdicts = append(s.verdicts, v)
	return key, st
}

// setWorld makes w the world requests go through, and deletes the series
// whose reporter is gone: a deleted pod's (its sidecar died with it; a pod
// recreated under a new name starts new series from zero), and the
// synthetic client's in a namespace where no Service receives traffic any
// more.
func (s *Simulator) setWorld(w *World) {
	s.world = w
	live := map[string]bool{}
	for _, ps := range w.pods {
		for _, p := range ps {
			live[podKey(p)] = true
		}
	}
	for key, ref := range s.servedBy {
		if live[key] {
			continue
		}
		match := prometheus.Labels{"reporter": "destination", "destination_workload_namespace": ref.namespace, "pod": ref.name}
		s.requests.DeletePartialMatch(match)
		s.duration.DeletePartialMatch(match)
		delete(s.servedBy, key)
	}
	sending := map[string]bool{}
	for _, svc := range w.Services() {
		sending[svc.Namespace] = true
	}
	for ns := range s.clientsIn {
		if sending[ns] {
			continue
		}
		match := prometheus.Labels{"reporter": "source", "source_workload_namespace": ns}
		s.requests.DeletePartialMatch(match)
		s.duration.DeletePartialMatch(match)
		delete(s.clientsIn, ns)
	}
	for key := range s.carry {
		ns, name, _ := strings.Cut(key, "/")
		if _, ok := w.services[ns+"/"+name]; !ok {
			delete(s.carry, key)
		}
	}
}

// podKey identifies one pod incarnation: a pod deleted and recreated under
// the same name is another pod (another UID).
func podKey(p *corev1.Pod) string {
	return p.Namespace + "/" + p.Name + "/" + string(p.UID)
}

// Rejection returns why Istio's validation refuses the stored version of a
// VirtualService, or "" when it is in force.
func (s *Simulator) Rejection(namespace, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.objects["VirtualService/"+namespace+"/"+name]; st != nil {
		return st.reason
	}
	return ""
}

// Verdicts lists Istio's verdict on every version of a VirtualService or
// DestinationRule the simulator has seen, oldest first (the latest
// maxVerdicts).
func (s *Simulator) Verdicts() []Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Verdict(nil), s.verdicts...)
}

// Rejected lists the verdicts that refused a version: what istiod's
// webhook would have refused to store.
func (s *Simulator) Rejected() []Verdict {
	var out []Verdict
	for _, v := range s.Verdicts() {
		if v.Err != "" {
			out = append(out, v)
		}
	}
	return out
}

// record counts one request as both proxies would: the client's sidecar
// (reporter=source) always, the server's (reporter=destination) only when
// the request reached a pod.
func (s *Simulator) record(client *corev1.Service, o Outcome) {
	lv := labelValues(client, o, "source")
	s.requests.WithLabelValues(lv...).Inc()
	s.duration.WithLabelValues(lv...).Observe(o.LatencyMs)
	s.clientsIn[client.Namespace] = true
	if o.Endpoint != nil {
		p := o.Endpoint.Pod
		s.servedBy[podKey(p)] = podRef{namespace: p.Namespace, name: p.Name}
		lv = labelValues(client, o, "destination")
		s.requests.WithLabelValues(lv...).Inc()
		s.duration.WithLabelValues(lv...).Observe(o.LatencyMs)
	}
}

// labelValues returns the values of metricLabels for one request.
func labelValues(client *corev1.Service, o Outcome, reporter string) []string {
	const unknown = "unknown"
	ns := client.Namespace
	dw, dwns, dprin, dapp, dver, dcs, dcr := unknown, unknown, unknown, unknown, unknown, unknown, unknown
	if ep := o.Endpoint; ep != nil {
		p := ep.Pod
		dw, dwns = ep.Workload, p.Namespace
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		dprin = "spiffe://cluster.local/ns/" + p.Namespace + "/sa/" + sa
		dapp = firstLabel(p, unknown, "app", "app.kubernetes.io/name")
		dver = firstLabel(p, unknown, "version", "app.kubernetes.io/version")
		dcs = firstLabel(p, ep.Workload, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
		dcr = firstLabel(p, "latest", "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
	}
	dsvc, dsvcName, dsvcNS := o.Host, unknown, unknown
	if o.Service != nil {
		dsvcName, dsvcNS = o.Service.Name, o.Service.Namespace
	}
	security, pod := "unknown", ClientPod
	if reporter == "destination" {
		security, pod = "mutual_tls", o.Endpoint.Pod.Name
	}
	return []string{
		reporter,
		ClientWorkload, ns, "spiffe://cluster.local/ns/" + ns + "/sa/" + ClientWorkload, ClientWorkload, unknown,
		ClientWorkload, "latest", "Kubernetes",
		dw, dwns, dprin, dapp,
		dver, dsvc, dsvcName, dsvcNS,
		dcs, dcr, "Kubernetes",
		"http", strconv.Itoa(o.Code), "", o.Flags, security,
		pod,
	}
}

func firstLabel(p *corev1.Pod, def string, keys ...string) string {
	for _, k := range keys {
		if v := p.Labels[k]; v != "" {
			return v
		}
	}
	return def
}

// requestClass is one kind of synthetic request and its share of traffic.
type requestClass struct {
	Weight  float64           `json:"weight"`
	Method  string            `json:"method,omitempty"`
	Path    string            `json:"path,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

type classes []requestClass

var defaultClasses = classes{{Weight: 1}}

// trafficClasses reads the Service's traffic annotation; without it (or
// when it does not parse) every request is a plain GET /.
func trafficClasses(svc *corev1.Service) classes {
	raw, ok := svc.Annotations[TrafficAnnotation]
	if !ok {
		return defaultClasses
	}
	cs, err := ParseTraffic(raw)
	if err != nil {
		return defaultClasses
	}
	return cs
}

// ParseTraffic parses the traffic annotation's JSON.
func ParseTraffic(raw string) (classes, error) {
	var cs classes
	if err := json.Unmarshal([]byte(raw), &cs); err != nil {
		return nil, fmt.Errorf("%s: %w", TrafficAnnotation, err)
	}
	total := 0.0
	for i := range cs {
		if cs[i].Weight < 0 {
			return nil, fmt.Errorf("%s: negative weight", TrafficAnnotation)
		}
		total += cs[i].Weight
		lower := map[string]string{}
		for k, v := range cs[i].Headers {
			lower[strings.ToLower(k)] = v
		}
		cs[i].Headers = lower
	}
	if total <= 0 {
		return nil, errors.New(TrafficAnnotation + ": weights sum to zero")
	}
	return cs, nil
}

func (cs classes) pick(rng *rand.Rand) Request {
	c := cs[0]
	if len(cs) > 1 {
		total := 0.0
		for _, x := range cs {
			total += x.Weight
		}
		r := rng.Float64() * total
		for _, x := range cs {
			if r < x.Weight {
				c = x
				break
			}
			r -= x.Weight
		}
	}
	req := Request{Method: c.Method, Path: c.Path, Headers: c.Headers}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if req.Path == "" {
		req.Path = "/"
	}
	return req
}
