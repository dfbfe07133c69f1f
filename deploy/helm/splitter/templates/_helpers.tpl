{{/*
Names do not depend on the release's name: with the default values the chart
renders exactly what `kubectl kustomize deploy` does.
*/}}

{{/* The prefix of every object's name. */}}
{{- define "splitter.fullname" -}}
{{- .Values.fullnameOverride | default "splitter" | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The Deployment's, ClusterRole's and (default) ServiceAccount's name. */}}
{{- define "splitter.controllerName" -}}
{{- printf "%s-controller" (include "splitter.fullname" .) -}}
{{- end -}}

{{- define "splitter.leaderElectionName" -}}
{{- printf "%s-leader-election" (include "splitter.fullname" .) -}}
{{- end -}}

{{- define "splitter.metricsName" -}}
{{- printf "%s-controller-metrics" (include "splitter.fullname" .) -}}
{{- end -}}

{{/* The controller's namespace: namespace.name, else the release's. */}}
{{- define "splitter.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end -}}

{{- define "splitter.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "splitter.controllerName" .) -}}
{{- end -}}

{{/* The pods' selector. */}}
{{- define "splitter.selectorLabels" -}}
app.kubernetes.io/name: splitter
{{- end -}}

{{/*
metadata.labels of an object: commonLabels merged with the extra ones given.
Called with (dict "ctx" $ "extra" (dict ...)); renders nothing when both are
empty, so the default objects carry the labels deploy/ gives them and no more.
*/}}
{{- define "splitter.labels" -}}
{{- $labels := merge (dict) (.extra | default dict) .ctx.Values.commonLabels -}}
{{- with $labels }}
labels:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* The image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "splitter.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The controller's rules: files/role.yaml is a copy of deploy/rbac/role.yaml,
which controller-gen writes from the code's RBAC markers (a test keeps the
two identical).
*/}}
{{- define "splitter.rules" -}}
{{- (.Files.Get "files/role.yaml" | fromYaml).rules | toYaml -}}
{{- end -}}

{{/* `splitter run`'s arguments. */}}
{{- define "splitter.args" -}}
- run
- {{ printf "--prometheus-url=%s" .Values.prometheus.url | quote }}
- {{ printf "--metrics-bind-address=:%v" .Values.metrics.port | quote }}
- {{ printf "--health-probe-bind-address=:%v" .Values.probes.port | quote }}
{{- if .Values.leaderElection.enabled }}
- {{ printf "--leader-election-namespace=%s" (include "splitter.namespace" .) | quote }}
{{- with .Values.leaderElection.leaseDuration }}
- {{ printf "--leader-election-lease-duration=%s" . | quote }}
{{- end }}
{{- with .Values.leaderElection.renewDeadline }}
- {{ printf "--leader-election-renew-deadline=%s" . | quote }}
{{- end }}
{{- with .Values.leaderElection.retryPeriod }}
- {{ printf "--leader-election-retry-period=%s" . | quote }}
{{- end }}
{{- else }}
- "--leader-elect=false"
{{- end }}
{{- with .Values.watchNamespaces }}
- {{ printf "--namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.prometheus.queryTimeout }}
- {{ printf "--query-timeout=%s" . | quote }}
{{- end }}
{{- with .Values.scrapeInterval }}
- {{ printf "--scrape-interval=%s" . | quote }}
{{- end }}
{{- with .Values.watchdogInterval }}
- {{ printf "--watchdog-interval=%s" . | quote }}
{{- end }}
{{- with .Values.grossCheckInterval }}
- {{ printf "--gross-check-interval=%s" . | quote }}
{{- end }}
{{- with .Values.maxConcurrentReconciles }}
- {{ printf "--max-concurrent-reconciles=%v" . | quote }}
{{- end }}
{{- with .Values.logFormat }}
- {{ printf "--log-format=%s" . | quote }}
{{- end }}
{{- with .Values.logLevel }}
- {{ printf "--log-level=%s" . | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
