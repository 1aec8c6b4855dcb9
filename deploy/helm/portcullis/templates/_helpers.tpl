{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. When the release name already contains the chart
name it is used as is (release "portcullis" -> "portcullis").
*/}}
{{- define "portcullis.fullname" -}}
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

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ext-authz
{{- end }}

{{/*
Selector labels (immutable on a Deployment: keep them minimal).
*/}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository@digest, or repository:tag (tag
defaults to the chart's appVersion).
*/}}
{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Cluster-local DNS name of the Service.
*/}}
{{- define "portcullis.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "portcullis.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Render-time checks on values that the JSON schema cannot express.
Included by the Deployment; renders nothing, or fails the render.
*/}}
{{- define "portcullis.validateValues" -}}
{{- $server := default (dict) .Values.config.server }}
{{- $listen := default "0.0.0.0:9001" $server.listen | toString }}
{{- if not (hasSuffix (printf ":%d" (int .Values.ports.grpc)) $listen) }}
{{- fail (printf "config.server.listen (%s) must use ports.grpc (%d): the Service and probes target ports.grpc" $listen (int .Values.ports.grpc)) }}
{{- end }}
{{- $admin := default "0.0.0.0:9002" $server.admin_listen | toString }}
{{- if not (hasSuffix (printf ":%d" (int .Values.ports.admin)) $admin) }}
{{- fail (printf "config.server.admin_listen (%s) must use ports.admin (%d): the Service, probes and ServiceMonitor target ports.admin" $admin (int .Values.ports.admin)) }}
{{- end }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]" $listen) }}
{{- fail (printf "config.server.listen (%s) is a loopback address: Envoy could not reach it" $listen) }}
{{- end }}
{{- if and (or .Values.secrets.mountAsFiles .Values.secrets.env) (not .Values.secrets.existingSecret) }}
{{- fail "secrets.mountAsFiles / secrets.env need secrets.existingSecret (the chart does not create Secrets)" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- fail "podDisruptionBudget.enabled needs minAvailable or maxUnavailable" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
