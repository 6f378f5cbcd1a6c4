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

{{- define "loadtester.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loadtester.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
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
