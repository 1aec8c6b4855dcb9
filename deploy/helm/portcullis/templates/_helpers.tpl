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
Where the config file is mounted (see rollOnConfigChange).
*/}}
{{- define "portcullis.configPath" -}}
{{- if .Values.configFragments }}/etc/portcullis/config.d
{{- else if .Values.rollOnConfigChange }}/etc/portcullis/config.yaml
{{- else }}/etc/portcullis/config/config.yaml{{ end }}
{{- end }}

{{/*
config.server.http_listen (the HTTP forward-auth listener), or nothing. With existingConfigMap this is
the only key of `config` the chart reads: set it to open the port.
*/}}
{{- define "portcullis.httpListen" -}}
{{- if not .Values.devMode }}{{ (default (dict) .Values.config.server).http_listen | default "" }}{{ end }}
{{- end }}

{{/*
Pods there will be at least (the HPA's minimum when autoscaling).
*/}}
{{- define "portcullis.minPods" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicas }}{{ end }}
{{- end }}

{{/*
Render-time checks on values that the JSON schema cannot express.
Included by the Deployment; renders nothing, or fails the render.
*/}}
{{- define "portcullis.validateValues" -}}
{{- $server := default (dict) .Values.config.server }}
{{- $listen := default "0.0.0.0:9001" $server.listen | toString }}
{{- if not .Values.devMode }}
{{- /* devMode listens on ports.grpc and ports.admin whatever config says */}}
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
{{- end }}
{{- $http := include "portcullis.httpListen" . }}
{{- if $http }}
{{- if not (hasSuffix (printf ":%d" (int .Values.ports.http)) $http) }}
{{- fail (printf "config.server.http_listen (%s) must use ports.http (%d): the container and Service ports are ports.http" $http (int .Values.ports.http)) }}
{{- end }}
{{- if or (hasPrefix "127." $http) (hasPrefix "localhost:" $http) (hasPrefix "[::1]" $http) }}
{{- fail (printf "config.server.http_listen (%s) is a loopback address: no proxy could reach it" $http) }}
{{- end }}
{{- end }}
{{- if and .Values.configFragments .Values.rollOnConfigChange }}
{{- fail "configFragments with rollOnConfigChange: other teams' ConfigMaps change without a helm upgrade, so the chart cannot roll pods for them; the fragments are mounted as a directory and reload in place (rollOnConfigChange: false)" }}
{{- end }}
{{- if and .Values.configFragments .Values.devMode }}
{{- fail "configFragments with devMode: serve --dev reads no configuration" }}
{{- end }}
{{- $fragmentNames := list (default (include "portcullis.fullname" .) .Values.existingConfigMap) }}
{{- range .Values.configFragments }}
{{- if not .configMap }}
{{- fail "configFragments: every entry needs configMap (the name of a ConfigMap whose *.yaml keys are fragments)" }}
{{- end }}
{{- if has .configMap $fragmentNames }}
{{- fail (printf "configFragments: ConfigMap %s is listed twice (or is the chart's own configuration)" .configMap) }}
{{- end }}
{{- $fragmentNames = append $fragmentNames .configMap }}
{{- end }}
{{- if and .Values.existingConfigMap .Values.rollOnConfigChange }}
{{- fail "existingConfigMap with rollOnConfigChange: the chart cannot see your ConfigMap's content; it is mounted as a directory and reloads in place" }}
{{- end }}
{{- if and .Values.kubernetesTokenReview.enabled (eq (include "portcullis.serviceAccountName" .) "default") }}
{{- fail "kubernetesTokenReview.enabled binds system:auth-delegator to the pods' ServiceAccount: give them their own (serviceAccount.create: true, or serviceAccount.name), not \"default\"" }}
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
{{- if .Values.devMode }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicas) 1) }}
{{- fail "devMode needs replicas: 1 and autoscaling.enabled: false: each dev pod makes its own signing key, so a token from one pod fails on the others" }}
{{- end }}
{{- else if and (empty .Values.config.providers) (not .Values.existingConfigMap) (not .Values.configFragments) }}
{{- fail "config.providers is empty: set your issuer (e.g. a `type: jwt` provider with `issuer:` and `audiences:`, see values.yaml), or choose devMode: true for a development-only issuer. The chart ships no placeholder issuer." }}
{{- end }}
{{- $drain := 5 }}
{{- if hasKey $server "drain_seconds" }}{{ $drain = int $server.drain_seconds }}{{ end }}
{{- if and (not .Values.devMode) (le (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.server.drain_seconds (%d): the kubelet would kill portcullis while it drains" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $pods := int (include "portcullis.minPods" .) }}
{{- if not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if or (eq (toString $pdb.maxUnavailable) "0") (eq (toString $pdb.maxUnavailable) "0%") }}
{{- fail "podDisruptionBudget.maxUnavailable 0 blocks every voluntary eviction (node drains hang): use 1" }}
{{- end }}
{{- else if kindIs "string" $pdb.minAvailable }}
{{- if eq $pdb.minAvailable "100%" }}
{{- fail "podDisruptionBudget.minAvailable 100% blocks every voluntary eviction (node drains hang): use maxUnavailable: 1" }}
{{- end }}
{{- else if ge (int $pdb.minAvailable) $pods }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below the number of pods (%d, replicas or autoscaling.minReplicas): otherwise no pod can ever be evicted and node drains hang; use maxUnavailable: 1" (int $pdb.minAvailable) $pods) }}
{{- end }}
{{- end }}
{{- if and .Values.caBundle.configMap .Values.caBundle.secret }}
{{- fail "caBundle: give configMap or secret, not both" }}
{{- end }}
{{- if and .Values.tls.existingSecret (eq .Values.probes.type "grpc") }}
{{- fail "tls.existingSecret needs probes.type: http: kubelet's gRPC probes cannot speak TLS (the admin port's /healthz and /readyz stay plaintext)" }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pod: never the workload's selector labels, so the
Service, the PDB and the Deployment do not count it.
*/}}
{{- define "portcullis.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Label matchers selecting this release's series in Prometheus.
*/}}
{{- define "portcullis.metricSelector" -}}
{{- default (printf "namespace=%q,service=%q" .Release.Namespace (include "portcullis.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/*
The portcullis configuration: .Values.config, with `state` pointing at the
external Redis when redis.url, redis.sentinel or redis.cluster is set.
*/}}
{{- define "portcullis.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $redis := .Values.redis -}}
{{- $sentinel := $redis.sentinel | default dict -}}
{{- $cluster := $redis.cluster | default dict -}}
{{- $modes := list -}}
{{- if $redis.url }}{{ $modes = append $modes "redis.url" }}{{ end -}}
{{- if or $sentinel.masterName $sentinel.urls }}{{ $modes = append $modes "redis.sentinel" }}{{ end -}}
{{- if $cluster.urls }}{{ $modes = append $modes "redis.cluster" }}{{ end -}}
{{- if gt (len $modes) 1 -}}
{{- fail (printf "set only one of redis.url, redis.sentinel and redis.cluster (set: %s)" (join ", " $modes)) -}}
{{- end -}}
{{- if $modes -}}
{{- if hasKey $config "state" -}}
{{- fail (printf "set either %s or config.state, not both" (first $modes)) -}}
{{- end -}}
{{- $state := dict "backend" "redis" "key_prefix" $redis.keyPrefix -}}
{{- if $redis.url -}}
{{- $_ := set $state "url" $redis.url -}}
{{- else if $cluster.urls -}}
{{- $_ := set $state "cluster" (dict "urls" $cluster.urls) -}}
{{- else -}}
{{- if not (and $sentinel.masterName $sentinel.urls) -}}
{{- fail "redis.sentinel needs both masterName and urls" -}}
{{- end -}}
{{- $_ := set $state "sentinel" (dict "master_name" $sentinel.masterName "urls" $sentinel.urls) -}}
{{- end -}}
{{- if $redis.existingSecret -}}
{{- $_ := set $state "password" (dict "env" "PORTCULLIS_REDIS_PASSWORD") -}}
{{- end -}}
{{- $_ := set $config "state" $state -}}
{{- else if $redis.existingSecret -}}
{{- fail "redis.existingSecret is set but redis.url is empty (and so are redis.sentinel and redis.cluster)" -}}
{{- end -}}
{{- $server := $config.server | default dict -}}
{{- if and (hasKey $server "ext_authz_timeout_ms") (ne (int (get $server "ext_authz_timeout_ms")) (int .Values.extAuthzTimeoutMs)) -}}
{{- fail (printf "config.server.ext_authz_timeout_ms (%d) differs from extAuthzTimeoutMs (%d): set extAuthzTimeoutMs only, the chart renders both the config and the install notes' proxy snippets from it" (int (get $server "ext_authz_timeout_ms")) (int .Values.extAuthzTimeoutMs)) -}}
{{- end -}}
{{- $_ := set $server "ext_authz_timeout_ms" (int .Values.extAuthzTimeoutMs) -}}
{{- if .Values.tls.existingSecret -}}
{{- if hasKey $server "tls" -}}
{{- fail "set either tls.existingSecret or config.server.tls, not both" -}}
{{- end -}}
{{- $tls := dict "cert_file" "/etc/portcullis/tls/tls.crt" "key_file" "/etc/portcullis/tls/tls.key" -}}
{{- if .Values.tls.clientCAKey -}}
{{- $_ := set $tls "client_ca_file" (printf "/etc/portcullis/tls/%s" .Values.tls.clientCAKey) -}}
{{- end -}}
{{- $_ := set $server "tls" $tls -}}
{{- else if .Values.tls.clientCAKey -}}
{{- fail "tls.clientCAKey needs tls.existingSecret" -}}
{{- end -}}
{{- $_ := set $config "server" $server -}}
{{- if kindIs "map" $config.identity_token -}}
{{- if not (hasKey $config.identity_token "state_dir") -}}
{{- /* the generated signing key goes to the writable state volume, not the read-only root */ -}}
{{- $_ := set $config.identity_token "state_dir" (printf "%s/identity-token" .Values.stateVolume.mountPath) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
extAuthzTimeoutMs as a protobuf duration for the proxies' config ("6s", "2.500s").
*/}}
{{- define "portcullis.extAuthzTimeout" -}}
{{- $ms := int .Values.extAuthzTimeoutMs -}}
{{- if eq (mod $ms 1000) 0 -}}{{ div $ms 1000 }}s{{- else -}}{{ printf "%d.%03ds" (div $ms 1000) (mod $ms 1000) }}{{- end -}}
{{- end -}}

{{/*
The `helm test` token: a JWT a provider must look at and refuse (invalid_token). Its issuer and
audience are tests.issuer / tests.audience, else the first `type: jwt` provider's (devMode: the
development issuer's), its algorithm that provider's first, its typ the provider's required_typ
(else JWT), so nothing but the key set can refuse it, and its signature zeros: whatever the key,
it is not valid. base64url without padding (RFC 7515 §2).
*/}}
{{- define "portcullis.testToken" -}}
{{- $iss := .Values.tests.issuer }}
{{- $aud := .Values.tests.audience }}
{{- $alg := "ES256" }}
{{- $typ := "JWT" }}
{{- if .Values.devMode }}
{{- $iss = default (printf "http://127.0.0.1:%d/dev" (int .Values.ports.admin)) $iss }}
{{- $aud = default "portcullis-dev" $aud }}
{{- else }}
{{- $jwt := dict }}
{{- range .Values.config.providers }}{{ if and (empty $jwt) (eq (toString .type) "jwt") }}{{ $jwt = . }}{{ end }}{{ end }}
{{- if $jwt }}
{{- $iss = default (toString $jwt.issuer) $iss }}
{{- $aud = default (toString (first (default (list "") $jwt.audiences))) $aud }}
{{- $alg = toString (first (default (list "RS256") $jwt.algorithms)) }}
{{- $typ = toString (default "JWT" $jwt.required_typ) }}
{{- end }}
{{- end }}
{{- if not $iss }}
{{- fail "helm test needs an issuer for its forged token: set tests.issuer and tests.audience (no `type: jwt` provider in config.providers, or existingConfigMap)" }}
{{- end }}
{{- $header := dict "alg" $alg "typ" $typ }}
{{- $claims := dict "iss" $iss "aud" $aud "sub" "helm-test" "exp" 4102444800 }}
{{- $b64 := list ($header | toJson | b64enc) ($claims | toJson | b64enc) }}
{{- $parts := list }}
{{- range $b64 }}{{ $parts = append $parts (. | replace "+" "-" | replace "/" "_" | trimSuffix "=" | trimSuffix "=") }}{{ end }}
{{- printf "%s.%s.%s" (index $parts 0) (index $parts 1) (repeat 86 "A") }}
{{- end }}

{{/*
Whether an external Redis is configured (redis.url, redis.sentinel or redis.cluster).
*/}}
{{- define "portcullis.redisEnabled" -}}
{{- $sentinel := .Values.redis.sentinel | default dict -}}
{{- $cluster := .Values.redis.cluster | default dict -}}
{{- if or .Values.redis.url $sentinel.urls $cluster.urls -}}true{{- end -}}
{{- end }}
