{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "sensorpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name; the release name alone when it already contains the chart name. */}}
{{- define "sensorpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's Deployment, Service and ServiceAccount name. */}}
{{- define "sensorpipe.operatorName" -}}
{{- printf "%s-operator" (include "sensorpipe.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sensorpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sensorpipe.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sensorpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: sensorpipe
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selects the operator's pods; never changes across upgrades (Deployment selectors are immutable). */}}
{{- define "sensorpipe.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sensorpipe.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sensorpipe.operatorLabels" -}}
{{ include "sensorpipe.labels" . }}
{{ include "sensorpipe.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* image reference: repository, then @digest or :tag (default: the chart's appVersion). */}}
{{- define "sensorpipe.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}
{{- end }}

{{- define "sensorpipe.operatorImage" -}}
{{- include "sensorpipe.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.image) }}
{{- end }}

{{- define "sensorpipe.workerImage" -}}
{{- include "sensorpipe.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.workers.image) }}
{{- end }}

{{/* Chart-level consistency checks that values.schema.json cannot express. */}}
{{- define "sensorpipe.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without it every replica would reconcile the same pipelines" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled both scrape the operator: enable one" }}
{{- end }}
{{- if and .Values.monitoring.workers.podMonitor.enabled .Values.monitoring.workers.serviceMonitors }}
{{- fail "monitoring.workers.podMonitor.enabled and monitoring.workers.serviceMonitors both scrape the workers: set monitoring.workers.serviceMonitors=false to use the PodMonitor" }}
{{- end }}
{{- end }}

{{/*
What the operator calls on pipelines' namespaces: a ClusterRole's rules, or each watched namespace's Role's
(exactly what docs/operator.md lists under RBAC; a test compares them).
*/}}
{{- define "sensorpipe.operatorRules" -}}
- apiGroups: [sensorpipe.io]
  resources: [sensorpipelines]
  verbs: [list, watch, patch]
- apiGroups: [sensorpipe.io]
  resources: [sensorpipelines/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
