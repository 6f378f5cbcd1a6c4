{{/*
Names. The name defaults to "flagger", not the chart's name, so a release installed as Flagger's
(`helm install flagger ...`) gets Flagger's object names (Deployment, Service, ServiceAccount and
ClusterRole "flagger") and Flagger's app.kubernetes.io/name label: dashboards, alerts and scripts
written for Flagger keep finding it.
*/}}
{{- define "flaggerpy.name" -}}
{{- default "flagger" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flaggerpy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "flaggerpy.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flaggerpy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flaggerpy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flaggerpy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flaggerpy.labels" -}}
helm.sh/chart: {{ include "flaggerpy.chart" . }}
{{ include "flaggerpy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flaggerpy
{{- end }}

{{- define "flaggerpy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flaggerpy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the leader-election Lease lives: the watched namespace if any (as the controller does). */}}
{{- define "flaggerpy.electionNamespace" -}}
{{- default .Release.Namespace .Values.namespace }}
{{- end }}

{{/* Renders a value that may contain templates (Flagger's "flagger.render"). */}}
{{- define "flaggerpy.render" -}}
{{- $value := typeIs "string" .value | ternary .value (.value | toYaml) }}
{{- if contains "{{" (toJson .value) }}
{{- tpl $value .context }}
{{- else }}
{{- $value }}
{{- end }}
{{- end }}

{{/*
RBAC. A provider string maps to a family of rules: "linkerd", "osm" and "smi:*" write SMI
TrafficSplits, "gatewayapi:*" HTTPRoutes, "appmesh:*" App Mesh objects. "" is the controller's
default, istio.
*/}}
{{- define "flaggerpy.providerFamily" -}}
{{- $name := first (splitList ":" (default "istio" .)) }}
{{- if has $name (list "linkerd" "osm" "smi") }}smi{{ else }}{{ $name }}{{ end }}
{{- end }}

{{/* The provider families the ClusterRole grants, sorted and without duplicates. */}}
{{- define "flaggerpy.providerFamilies" -}}
{{- $families := list (include "flaggerpy.providerFamily" .Values.meshProvider) }}
{{- $additional := .Values.rbac.additionalProviders | default list }}
{{- if has "*" $additional }}
{{- $families = list "apisix" "appmesh" "contour" "gatewayapi" "gloo" "istio" "knative" "kuma" "nginx" "skipper" "smi" "traefik" }}
{{- else }}
{{- range $additional }}
{{- $families = append $families (include "flaggerpy.providerFamily" .) }}
{{- end }}
{{- end }}
{{- /* Only the families flaggerpy ships rules for: a third-party router's objects are granted
with rbac.extraRules, and "kubernetes" writes no routing objects. */}}
{{- $known := list "apisix" "appmesh" "contour" "gatewayapi" "gloo" "istio" "knative" "kuma" "nginx" "skipper" "smi" "traefik" }}
{{- $granted := list }}
{{- range ($families | uniq | sortAlpha) }}
{{- if has . $known }}{{ $granted = append $granted . }}{{ end }}
{{- end }}
{{- $granted | join "," }}
{{- end }}

{{/*
The verbs for mesh objects, as the routers' shared apply path uses them: read from a watch cache
(list, watch), re-read after a conflicting write (get), created, or replaced whole (update).
No patch, and no delete: the garbage collector removes what has an ownerReference to a Canary.
*/}}
{{- define "flaggerpy.writeVerbs" -}}
["get", "list", "watch", "create", "update"]
{{- end }}

{{- define "flaggerpy.rules.istio" -}}
# istio: VirtualService <svc> and DestinationRules <svc>-primary / <svc>-canary.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices", "destinationrules"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.smi" -}}
# linkerd, osm, smi:*: TrafficSplit <svc>.
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.appmesh" -}}
# appmesh, appmesh:v1beta2: VirtualNodes, VirtualRouters and VirtualServices.
- apiGroups: ["appmesh.k8s.aws"]
  resources: ["virtualnodes", "virtualrouters", "virtualservices"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.contour" -}}
# contour: HTTPProxy <svc>.
- apiGroups: ["projectcontour.io"]
  resources: ["httpproxies"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.gloo" -}}
# gloo: primary/canary Upstreams (copied from spec.upstreamRef) and RouteTable <svc>.
- apiGroups: ["gloo.solo.io"]
  resources: ["upstreams"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
- apiGroups: ["gateway.solo.io"]
  resources: ["routetables"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.nginx" -}}
# nginx: reads spec.ingressRef and writes the <ingress>-canary copy.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.skipper" -}}
# skipper: as nginx, and deleting the canary Ingress is how its router finalizes a Canary.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
{{- end }}

{{- define "flaggerpy.rules.traefik" -}}
# traefik: TraefikService <svc>.
- apiGroups: ["traefik.io"]
  resources: ["traefikservices"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.kuma" -}}
# kuma: TrafficRoute <svc> (cluster-scoped).
- apiGroups: ["kuma.io"]
  resources: ["trafficroutes"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.apisix" -}}
# apisix: reads spec.routeRef and writes ApisixRoute <route>-<svc>-canary.
- apiGroups: ["apisix.apache.org"]
  resources: ["apisixroutes"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.gatewayapi" -}}
# gatewayapi:v1, gatewayapi:v1beta1: HTTPRoute <svc> (its status tells whether the route is accepted).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: {{ include "flaggerpy.writeVerbs" . }}
{{- end }}

{{- define "flaggerpy.rules.knative" -}}
# knative: the target Knative Service's traffic split; its Revisions are only read.
- apiGroups: ["serving.knative.dev"]
  resources: ["services"]
  verbs: ["get", "list", "watch", "update"]
- apiGroups: ["serving.knative.dev"]
  resources: ["revisions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* Rules for cluster-scoped mesh objects: they need a ClusterRoleBinding even with -namespace. */}}
{{- define "flaggerpy.clusterScopedFamilies" -}}
{{- $scoped := list }}
{{- range (include "flaggerpy.providerFamilies" . | splitList ",") }}
{{- if eq . "kuma" }}{{ $scoped = append $scoped . }}{{ end }}
{{- end }}
{{- $scoped | join "," }}
{{- end }}
