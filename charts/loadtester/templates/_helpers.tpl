{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "loadtester.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name when it already contains the chart name, so
`helm install flagger-loadtester ...` gives Flagger's Service name and existing
webhook URLs (http://flagger-loadtester.<namespace>/) keep working.
*/}}
{{- define "loadtester.fullname" -}}
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

{{- define "loadtester.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loadtester.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loadtester.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "loadtester.labels" -}}
helm.sh/chart: {{ include "loadtester.chart" . }}
{{ include "loadtester.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flaggerpy
{{- end }}

{{/*
The ServiceAccount the pod runs as. Flagger's serviceAccountName (an existing account) wins;
otherwise the chart's own, created when serviceAccount.create or (as in Flagger) rbac.create.
*/}}
{{- define "loadtester.serviceAccountName" -}}
{{- if .Values.serviceAccountName }}
{{- .Values.serviceAccountName }}
{{- else if include "loadtester.createServiceAccount" . }}
{{- default (include "loadtester.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "loadtester.createServiceAccount" -}}
{{- if and (not .Values.serviceAccountName) (or .Values.serviceAccount.create .Values.rbac.create) }}true{{ end }}
{{- end }}

{{/*
Role names: the full name, plus the namespace for a ClusterRole, so load testers installed in
two namespaces under the same release name do not take over each other's cluster-wide role.
*/}}
{{- define "loadtester.rbacName" -}}
{{- if eq (toString .Values.rbac.scope) "cluster" }}
{{- printf "%s-%s" (include "loadtester.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "loadtester.fullname" . }}
{{- end }}
{{- end }}

{{/*
The container securityContext. Flagger's chart spells it {enabled, context}; this chart's
default is the context itself. Both are accepted, so Flagger values files keep working.
*/}}
{{- define "loadtester.securityContext" -}}
{{- if hasKey .Values.securityContext "enabled" }}
{{- if .Values.securityContext.enabled }}
{{- toYaml (default (dict) .Values.securityContext.context) }}
{{- end }}
{{- else }}
{{- toYaml .Values.securityContext }}
{{- end }}
{{- end }}

{{/* A value rendered as a template: a string as is, anything else as YAML first. */}}
{{- define "loadtester.render" -}}
{{- if typeIs "string" .value }}
{{- tpl .value .context }}
{{- else }}
{{- tpl (.value | toYaml) .context }}
{{- end }}
{{- end }}

{{/* The Secret holding the token, if a token is configured at all. */}}
{{- define "loadtester.secretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.token }}
{{- include "loadtester.fullname" . }}
{{- end }}
{{- end }}
