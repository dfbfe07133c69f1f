package notify

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Reasons a notification is dropped undelivered (label reason of
// splitter_notifications_dropped_total).
const (
	DropOutboxFull      = "outbox-full"
	DropRejected        = "rejected"
	DropGaveUp          = "gave-up"
	DropReceiverRemoved = "receiver-removed"
)

var (
	attemptsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "splitter_notification_attempts_total",
		Help: "Notification requests sent, by receiver type and result: delivered (2xx), retry (5xx, 408, 429, timeout, connection error) or permanent (any other answer).",
	}, []string{"type", "result"})
	droppedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "splitter_notifications_dropped_total",
		Help: "Notifications (per receiver, or whole outbox entries for outbox-full) given up undelivered, by reason: outbox-full, rejected (a 4xx), gave-up (retries exhausted), receiver-removed (no longer in the policy).",
	}, []string{"namespace", "split", "reason"})
	deliverySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "splitter_notification_delivery_seconds",
		Help:    "Time from a transition (the notification's at, which status keeps to the second) to its receiver's 2xx.",
		Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900},
	})
	queueFullTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "splitter_notification_queue_full_total",
		Help: "Deliveries not queued because the in-memory queue was full (the periodic sweep queues them again).",
	})
)

func init() {
	metrics.Registry.MustRegister(attemptsTotal, droppedTotal, deliverySeconds, queueFullTotal)
}

// CountDropped counts n notifications of a Split dropped for reason.
func CountDropped(namespace, split, reason string, n int) {
	if n > 0 {
		droppedTotal.WithLabelValues(namespace, split, reason).Add(float64(n))
	}
}
