{{/* Release full name, at most 63 characters. */}}
{{- define "isoflop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "isoflop.selectorLabels" -}}
app.kubernetes.io/name: isoflop-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "isoflop.labels" -}}
{{ include "isoflop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: isoflop
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "isoflop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "isoflop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when the replicas coordinate through kopf peering. */}}
{{- define "isoflop.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* The operator's permissions on the resources of the namespaces it serves. */}}
{{- define "isoflop.namespacedRules" -}}
- apiGroups: [isoflop.dev]
  resources: [scalingsweeps]
  verbs: [list, watch, patch]
- apiGroups: [isoflop.dev]
  resources: [scalingsweeps/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, create, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, patch]
# create: only with dryRun=All (isoflop.cluster.dryrun), for the server to judge a trial's pod
# (its PriorityClass, ServiceAccount, Pod Security) before its Job exists; Jobs make the pods
- apiGroups: [""]
  resources: [pods]
  verbs: [list, create]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list]
{{- if and (include "isoflop.peering" .) .Values.watch.namespaces }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}
