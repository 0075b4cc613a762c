{{/* Names ---------------------------------------------------------------------------------------------------- */}}

{{- define "delinkcious.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix: the release name, plus the chart's name unless the release name already holds it. */}}
{{- define "delinkcious.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>, e.g. the Service, ServiceAccount and ConfigMap of a service. Args: root, component. */}}
{{- define "delinkcious.componentName" -}}
{{- printf "%s-%s" (include "delinkcious.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "delinkcious.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------------------- */}}

{{/* What selects a component's pods. Args: root, component. */}}
{{- define "delinkcious.selectorLabels" -}}
app.kubernetes.io/name: {{ include "delinkcious.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. Args: root, component. */}}
{{- define "delinkcious.labels" -}}
{{ include "delinkcious.selectorLabels" . }}
app.kubernetes.io/part-of: delinkcious
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "delinkcious.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* What selects every pod of the release (the default-deny NetworkPolicy). */}}
{{- define "delinkcious.releaseSelector" -}}
app.kubernetes.io/name: {{ include "delinkcious.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Ownership annotations of every workload and its pods. */}}
{{- define "delinkcious.ownershipAnnotations" -}}
delinkcious.io/team: {{ .Values.ownership.team | quote }}
delinkcious.io/runbook-url: {{ .Values.ownership.runbookUrl | quote }}
delinkcious.io/source-url: {{ .Values.ownership.sourceUrl | quote }}
{{- end -}}

{{/*
checkov skips of every workload, each with its reason (the README lists them too):
- CKV_K8S_15 (imagePullPolicy Always): images are immutable version tags (or digests), so IfNotPresent is safe and
  works without a registry; CI, which has none, sets Never.
- CKV_K8S_43 (image by digest): tags follow the release (appVersion); a digest can be given per image (`digest`).
*/}}
{{- define "delinkcious.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Images are immutable version tags or digests; IfNotPresent also works where there is no registry
checkov.io/skip2: CKV_K8S_43=Images follow the release version tag; a digest can be set per image with the digest value
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------------------------- */}}

{{/*
A Delinkcious image: [registry/]repository(:tag|@digest). Args: root, image (the component's overrides: registry,
repository, tag, digest, pullPolicy), repository (the default), tag (a canary or blue-green tag, which wins).
*/}}
{{- define "delinkcious.image" -}}
{{- $root := .root -}}
{{- $image := .image | default dict -}}
{{- $registry := $root.Values.image.registry -}}
{{- if hasKey $image "registry" -}}{{- $registry = $image.registry -}}{{- end -}}
{{- $repository := $image.repository | default .repository -}}
{{- $tag := .tag | default $image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion | toString -}}
{{- if $registry -}}{{- $registry | trimSuffix "/" -}}/{{- end -}}
{{- $repository -}}
{{- if and $image.digest (not .tag) -}}@{{ $image.digest }}{{- else -}}:{{ $tag }}{{- end -}}
{{- end -}}

{{- define "delinkcious.pullPolicy" -}}
{{- $image := .image | default dict -}}
{{- $image.pullPolicy | default .root.Values.image.pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{/* A third-party server's image (postgres, redis, nats): [registry/]repository:tag. Arg: the image values. */}}
{{- define "delinkcious.serverImage" -}}
{{- if .registry -}}{{- .registry | trimSuffix "/" -}}/{{- end -}}
{{- .repository -}}
{{- if .digest -}}@{{ .digest }}{{- else -}}:{{ toString .tag }}{{- end -}}
{{- end -}}

{{/* Security ------------------------------------------------------------------------------------------------- */}}

{{/* Pod security context. Args: uid, roRoot unused here. */}}
{{- define "delinkcious.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context. Args: uid, readOnlyRootFilesystem. */}}
{{- define "delinkcious.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Facts ---------------------------------------------------------------------------------------------------- */}}

{{/* The services that call others with their caller identity: those some service allows, as a JSON list. */}}
{{- define "delinkcious.callers" -}}
{{- $callers := list -}}
{{- range $name, $service := .Values.services -}}
{{- range $service.allowedCallers -}}{{- $callers = append $callers . -}}{{- end -}}
{{- end -}}
{{- $callers | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* The services `name` accepts calls from: its allowedCallers and those whose calls name it, as a JSON list. */}}
{{- define "delinkcious.callersOf" -}}
{{- $callers := .service.allowedCallers | default list -}}
{{- range $other, $service := .root.Values.services -}}
{{- if has $.name ($service.calls | default list) -}}{{- $callers = append $callers $other -}}{{- end -}}
{{- end -}}
{{- $callers | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* The port a caller uses: the gRPC port of a service that has one, else its HTTP port. Arg: the service. */}}
{{- define "delinkcious.apiPort" -}}
{{- if .grpcPort -}}{{- int .grpcPort -}}{{- else -}}{{- int .port -}}{{- end -}}
{{- end -}}

{{/* `social-graph` -> `SOCIAL_GRAPH`, as services/local/wiring.py names a service's variables. */}}
{{- define "delinkcious.variablePrefix" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{- define "delinkcious.postgresqlHost" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "delinkcious.componentName" (dict "root" . "component" "postgresql") -}}
{{- else -}}
{{- required "externalPostgresql.host is required when postgresql.enabled is false" .Values.externalPostgresql.host -}}
{{- end -}}
{{- end -}}

{{- define "delinkcious.postgresqlPort" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{- int .Values.externalPostgresql.port -}}{{- end -}}
{{- end -}}

{{/* postgresql://<user>@<host>:<port>/<database>[?sslmode=...]. Args: root, user, database. */}}
{{- define "delinkcious.postgresqlUrl" -}}
{{- $root := .root -}}
{{- printf "postgresql://%s@%s:%s/%s" (urlquery .user) (include "delinkcious.postgresqlHost" $root) (include "delinkcious.postgresqlPort" $root) (urlquery .database) -}}
{{- if and (not $root.Values.postgresql.enabled) $root.Values.externalPostgresql.sslMode -}}
?sslmode={{ $root.Values.externalPostgresql.sslMode }}
{{- end -}}
{{- end -}}

{{- define "delinkcious.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:6379/0" (include "delinkcious.componentName" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- required "externalRedis.url is required when redis.enabled is false" .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{- define "delinkcious.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "delinkcious.componentName" (dict "root" . "component" "nats")) -}}
{{- else -}}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/* The ports of a comma-separated list of URLs (default: `default`), as a JSON list. Args: urls, default. */}}
{{- define "delinkcious.urlPorts" -}}
{{- $ports := list -}}
{{- range splitList "," .urls -}}
{{- $host := (urlParse (trim .)).host -}}
{{- $parts := splitList ":" $host -}}
{{- if gt (len $parts) 1 -}}{{- $ports = append $ports (int (last $parts)) -}}{{- else -}}{{- $ports = append $ports (int $.default) -}}{{- end -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}

{{/* Secret names. Args: root, kind (callerTokens, databasePasswords, redis, gateway, pageTokens). */}}
{{- define "delinkcious.secretName" -}}
{{- $suffixes := dict "callerTokens" "caller-tokens" "databasePasswords" "database-passwords" "redis" "redis" "gateway" "gateway" "pageTokens" "page-tokens" -}}
{{- index .root.Values.secrets .kind | default (include "delinkcious.componentName" (dict "root" .root "component" (index $suffixes .kind))) -}}
{{- end -}}

{{/*
A service's environment (non-secret facts; secrets are files named by *_FILE), with the names services/local/wiring.py
gives, as YAML. Args: root, name, service.
*/}}
{{- define "delinkcious.serviceEnv" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $service := .service -}}
{{- $values := $root.Values -}}
{{- $secrets := "/run/secrets/delinkcious" -}}
{{- $env := dict "SERVICE_NAME" $name "HOST" "0.0.0.0" "PORT" (toString (int $service.port)) "LOG_FORMAT" $values.logFormat "LOG_LEVEL" $values.logLevel -}}
{{- if $service.adminPort -}}{{- $_ := set $env "ADMIN_PORT" (toString (int $service.adminPort)) -}}{{- end -}}
{{- if $values.tracing.otlpEndpoint -}}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $values.tracing.otlpEndpoint -}}
{{- $_ := set $env "OTEL_SERVICE_NAME" $name -}}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" (toString $values.tracing.samplerRatio) -}}
{{- end -}}
{{- if $service.grpcPort -}}{{- $_ := set $env "GRPC_PORT" (toString (int $service.grpcPort)) -}}{{- end -}}
{{- if has $name (include "delinkcious.callers" $root | fromJsonArray) -}}
{{- $_ := set $env "CALLER_TOKEN_FILE" (printf "%s/caller-token" $secrets) -}}
{{- end -}}
{{- if $service.allowedCallers -}}
{{- $_ := set $env "TRUSTED_CALLERS_DIR" (printf "%s/callers" $secrets) -}}
{{- $_ := set $env "ALLOWED_CALLERS" (join "," $service.allowedCallers) -}}
{{- end -}}
{{- if has "postgres" $service.stores -}}
{{- $_ := set $env "DATABASE_URL" (include "delinkcious.postgresqlUrl" (dict "root" $root "user" $name "database" $name)) -}}
{{- $_ := set $env "DATABASE_PASSWORD_FILE" (printf "%s/database-password" $secrets) -}}
{{- end -}}
{{- if has "redis" $service.stores -}}
{{- $_ := set $env "REDIS_URL" (include "delinkcious.redisUrl" $root) -}}
{{- $_ := set $env "REDIS_PASSWORD_FILE" (printf "%s/redis-password" $secrets) -}}
{{- end -}}
{{- if has "nats" $service.stores -}}
{{- $_ := set $env "NATS_URL" (include "delinkcious.natsUrl" $root) -}}
{{- end -}}
{{- if $service.signsPageTokens -}}
{{- $_ := set $env "PAGE_TOKEN_SECRET_FILE" (printf "%s/page-token-secret" $secrets) -}}
{{- end -}}
{{- range $service.calls -}}
{{- $called := index $values.services . -}}
{{- $host := include "delinkcious.componentName" (dict "root" $root "component" .) -}}
{{- if $called.grpcPort -}}
{{- $_ := set $env (printf "%s_GRPC_ADDRESS" (include "delinkcious.variablePrefix" .)) (printf "%s:%d" $host (int $called.grpcPort)) -}}
{{- else -}}
{{- $_ := set $env (printf "%s_SERVICE_URL" (include "delinkcious.variablePrefix" .)) (printf "http://%s:%d" $host (int $called.port)) -}}
{{- end -}}
{{- end -}}
{{- if eq $name "api-gateway" -}}
{{- $_ := set $env "PUBLIC_BASE_URL" $values.gateway.publicBaseUrl -}}
{{- $_ := set $env "OAUTH_CLIENT_SECRET_FILE" (printf "%s/oauth-client-secret" $secrets) -}}
{{- $_ := set $env "SESSION_SECRET_FILE" (printf "%s/session-secret" $secrets) -}}
{{- $_ := set $env "TRUSTED_PROXY_HOPS" (toString (int $values.gateway.trustedProxyHops)) -}}
{{- if $values.identityProvider.enabled -}}
{{- $_ := set $env "AUTH_PROVIDER" "oidc" -}}
{{- $_ := set $env "OIDC_DISCOVERY_URL" (printf "http://127.0.0.1:%d/.well-known/openid-configuration" (int $values.identityProvider.port)) -}}
{{- $_ := set $env "OIDC_PROVIDER_NAME" $values.identityProvider.providerName -}}
{{- $_ := set $env "OAUTH_CLIENT_ID" ($values.gateway.oauthClientId | default $values.identityProvider.clientId) -}}
{{- else -}}
{{- $_ := set $env "AUTH_PROVIDER" $values.gateway.authProvider -}}
{{- $_ := set $env "OAUTH_CLIENT_ID" $values.gateway.oauthClientId -}}
{{- if eq $values.gateway.authProvider "oidc" -}}
{{- $_ := set $env "OIDC_DISCOVERY_URL" (required "gateway.oidcDiscoveryUrl is required with gateway.authProvider oidc" $values.gateway.oidcDiscoveryUrl) -}}
{{- $_ := set $env "OIDC_PROVIDER_NAME" $values.gateway.oidcProviderName -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $variable, $value := $service.env -}}
{{- $_ := set $env $variable (toString $value) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* The secret files a service's pod mounts (projected volume sources). Args: root, name, service. */}}
{{- define "delinkcious.serviceSecretSources" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $service := .service -}}
{{- $callerTokens := include "delinkcious.secretName" (dict "root" $root "kind" "callerTokens") -}}
{{- $own := has $name (include "delinkcious.callers" $root | fromJsonArray) -}}
{{- if or $own $service.allowedCallers }}
- secret:
    name: {{ $callerTokens }}
    items:
      {{- if $own }}
      - {key: {{ $name }}, path: caller-token}
      {{- end }}
      {{- range $service.allowedCallers }}
      - {key: {{ . }}, path: callers/{{ . }}}
      {{- end }}
{{- end }}
{{- if has "postgres" $service.stores }}
- secret:
    name: {{ include "delinkcious.secretName" (dict "root" $root "kind" "databasePasswords") }}
    items:
      - {key: {{ $name }}, path: database-password}
{{- end }}
{{- if has "redis" $service.stores }}
- secret:
    name: {{ include "delinkcious.secretName" (dict "root" $root "kind" "redis") }}
    items:
      - {key: redis-password, path: redis-password}
{{- end }}
{{- if $service.signsPageTokens }}
- secret:
    name: {{ include "delinkcious.secretName" (dict "root" $root "kind" "pageTokens") }}
    items:
      - {key: {{ $name }}, path: page-token-secret}
{{- end }}
{{- if eq $name "api-gateway" }}
- secret:
    name: {{ include "delinkcious.secretName" (dict "root" $root "kind" "gateway") }}
    items:
      - {key: session-secret, path: session-secret}
      - {key: oauth-client-secret, path: oauth-client-secret}
{{- end }}
{{- end -}}

{{/*
The Deployments of a service, as a JSON list of {suffix, track, color, tag, replicas, fixed}: the stable one (or a blue
and a green one), and a canary one where canary.enabled names the service. `fixed`: its replicas are set (a canary, a
colour given blueGreen.<colour>.replicas) and never autoscaled. Args: root, name, service.
*/}}
{{- define "delinkcious.variants" -}}
{{- $values := .root.Values -}}
{{- $variants := list -}}
{{- if $values.blueGreen.enabled -}}
{{- range $color := list "blue" "green" -}}
{{- $settings := index $values.blueGreen $color -}}
{{- $replicas := $.service.replicas -}}
{{- $fixed := false -}}
{{- if not (kindIs "invalid" $settings.replicas) -}}{{- $replicas = $settings.replicas -}}{{- $fixed = true -}}{{- end -}}
{{- $variants = append $variants (dict "suffix" (printf "-%s" $color) "track" "stable" "color" $color "tag" (toString ($settings.tag | default "")) "replicas" (int $replicas) "fixed" $fixed) -}}
{{- end -}}
{{- else -}}
{{- $variants = append $variants (dict "suffix" "" "track" "stable" "color" "" "tag" "" "replicas" (int .service.replicas) "fixed" false) -}}
{{- end -}}
{{- if and $values.canary.enabled (or (not $values.canary.services) (has .name $values.canary.services)) -}}
{{- $tag := required "canary.tag is required when canary.enabled is true" $values.canary.tag -}}
{{- $variants = append $variants (dict "suffix" "-canary" "track" "canary" "color" "" "tag" (toString $tag) "replicas" (int $values.canary.replicas) "fixed" true) -}}
{{- end -}}
{{- toJson $variants -}}
{{- end -}}

{{/* Whether a service's Deployments are autoscaled ("true" or ""). Args: root, service. */}}
{{- define "delinkcious.autoscaled" -}}
{{- $enabled := .root.Values.autoscaling.enabled -}}
{{- if and .service.autoscaling (hasKey .service.autoscaling "enabled") -}}{{- $enabled = .service.autoscaling.enabled -}}{{- end -}}
{{- if $enabled -}}true{{- end -}}
{{- end -}}

{{/* API versions: the newest the cluster serves (on `helm template`, the one --kube-version implies). */}}
{{- define "delinkcious.pdbApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{- define "delinkcious.hpaApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "autoscaling/v2/HorizontalPodAutoscaler") (semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end -}}
{{- end -}}

{{/* Native gRPC probes: beta and on by default from 1.24. */}}
{{- define "delinkcious.grpcProbes" -}}
{{- if semverCompare ">=1.24-0" .Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{/* A PersistentVolumeClaim's storage class. Arg: the persistence values. */}}
{{- define "delinkcious.storageClass" -}}
{{- if .storageClass -}}
{{- if eq "-" .storageClass }}
storageClassName: ""
{{- else }}
storageClassName: {{ .storageClass | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Scheduling of a pod. Args: root, component. */}}
{{- define "delinkcious.scheduling" -}}
{{- $scheduling := .root.Values.scheduling -}}
{{- with $scheduling.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $scheduling.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $scheduling.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $scheduling.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "delinkcious.selectorLabels" . | nindent 8 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The writable /tmp of every container (the root file system is read-only). Arg: root. */}}
{{- define "delinkcious.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/* NetworkPolicy peers from ipBlocks values ({cidr, except}). Arg: the list. */}}
{{- define "delinkcious.ipBlocks" -}}
{{- range . }}
- ipBlock:
    cidr: {{ .cidr | quote }}
    {{- with .except }}
    except:
      {{- range . }}
      - {{ . | quote }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* The egress rule to PostgreSQL (the in-chart server, or the external one's port). Arg: root. */}}
{{- define "delinkcious.postgresqlEgress" -}}
{{- if .Values.postgresql.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "delinkcious.selectorLabels" (dict "root" . "component" "postgresql") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 5432}
{{- else -}}
- to:
    {{- include "delinkcious.ipBlocks" .Values.networkPolicy.externalStoresEgress.ipBlocks | trim | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ int .Values.externalPostgresql.port }}}
{{- end -}}
{{- end -}}

{{/* A service's NetworkPolicy ingress rules. Args: root, name, service. */}}
{{- define "delinkcious.serviceIngress" -}}
{{- $root := .root -}}
{{- $values := .root.Values -}}
{{- $name := .name -}}
{{- $service := .service -}}
{{- $scrape := $values.metrics.scrapeFrom -}}
{{- $callers := include "delinkcious.callersOf" . | fromJsonArray -}}
{{- $metricsPort := $service.adminPort | default $service.port | int -}}
{{- if $callers }}
# Its callers, on the port they call.
- from:
    {{- range $callers }}
    - podSelector:
        matchLabels:
          {{- include "delinkcious.selectorLabels" (dict "root" $root "component" .) | nindent 10 }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ include "delinkcious.apiPort" $service }}}
{{- end }}
{{- if eq $name "api-gateway" }}
# The public API, from anywhere: the ingress controller, port-forwards, the helm test pod.
- ports:
    - {protocol: TCP, port: {{ int $service.port }}}
{{- if $values.identityProvider.enabled }}
# Development only: the identity provider's pages, for browsers.
- ports:
    - {protocol: TCP, port: {{ int $values.identityProvider.port }}}
{{- end }}
{{- end }}
{{- if or $scrape.namespaceSelector $scrape.podSelector }}
# Prometheus, on the port serving /metrics.
- from:
    - {{- with $scrape.namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $scrape.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    - {protocol: TCP, port: {{ $metricsPort }}}
{{- end }}
{{- end -}}

{{/* A service's NetworkPolicy egress rules. Args: root, name, service. */}}
{{- define "delinkcious.serviceEgress" -}}
{{- $root := .root -}}
{{- $values := .root.Values -}}
{{- $name := .name -}}
{{- $service := .service -}}
{{- range $other, $called := $values.services }}
{{- if or (has $other ($service.calls | default list)) (has $name ($called.allowedCallers | default list)) }}
- to:
    - podSelector:
        matchLabels:
          {{- include "delinkcious.selectorLabels" (dict "root" $root "component" $other) | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ include "delinkcious.apiPort" $called }}}
{{- end }}
{{- end }}
{{- if has "postgres" $service.stores }}
{{- include "delinkcious.postgresqlEgress" $root | nindent 0 }}
{{- end }}
{{- if has "redis" $service.stores }}
{{- if $values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "delinkcious.selectorLabels" (dict "root" $root "component" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 6379}
{{- else }}
- to:
    {{- include "delinkcious.ipBlocks" $values.networkPolicy.externalStoresEgress.ipBlocks | trim | nindent 4 }}
  ports:
    {{- range include "delinkcious.urlPorts" (dict "urls" $values.externalRedis.url "default" 6379) | fromJsonArray }}
    - {protocol: TCP, port: {{ int . }}}
    {{- end }}
{{- end }}
{{- end }}
{{- if has "nats" $service.stores }}
{{- if $values.nats.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "delinkcious.selectorLabels" (dict "root" $root "component" "nats") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 4222}
{{- else }}
- to:
    {{- include "delinkcious.ipBlocks" $values.networkPolicy.externalStoresEgress.ipBlocks | trim | nindent 4 }}
  ports:
    {{- range include "delinkcious.urlPorts" (dict "urls" $values.externalNats.url "default" 4222) | fromJsonArray }}
    - {protocol: TCP, port: {{ int . }}}
    {{- end }}
{{- end }}
{{- end }}
# The trace collector, when tracing is on (docs/tracing.md).
{{- if $values.tracing.otlpEndpoint }}
- to:
    {{- include "delinkcious.ipBlocks" $values.tracing.egress.ipBlocks | trim | nindent 4 }}
  ports:
    {{- range $values.tracing.egress.ports }}
    - {protocol: TCP, port: {{ int . }}}
    {{- end }}
{{- end }}
{{- if eq $name "link-checker" }}
# Users' links: the internet's web ports, not the cluster nor private, loopback or link-local ranges.
- to:
    {{- include "delinkcious.ipBlocks" $values.networkPolicy.linkCheckerEgress.ipBlocks | trim | nindent 4 }}
  ports:
    {{- range $values.networkPolicy.linkCheckerEgress.ports }}
    - {protocol: TCP, port: {{ int . }}}
    {{- end }}
{{- end }}
{{- if and (eq $name "api-gateway") (not $values.identityProvider.enabled) }}
# The identity provider (GitHub, an OIDC provider): token exchange and user info over HTTPS.
- to:
    {{- include "delinkcious.ipBlocks" $values.networkPolicy.gatewayEgress.ipBlocks | trim | nindent 4 }}
  ports:
    {{- range $values.networkPolicy.gatewayEgress.ports }}
    - {protocol: TCP, port: {{ int . }}}
    {{- end }}
{{- end }}
{{- end -}}
