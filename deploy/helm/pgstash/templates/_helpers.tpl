{{/*
Names, labels, and the values the templates derive: the upstream URL, the
Redis URL's source, the Secrets' names and where they are mounted.
*/}}

{{- define "pgstash.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects are named this; "<release>-pgstash" unless the release name holds "pgstash". */}}
{{- define "pgstash.fullname" -}}
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

{{- define "pgstash.redisName" -}}
{{- printf "%s-redis" (include "pgstash.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgstash.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; component tells pgstash's pods from the bundled Redis'. */}}
{{- define "pgstash.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgstash.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "pgstash.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pgstash.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The metrics Service's own labels, which the ServiceMonitor selects. */}}
{{- define "pgstash.metricsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pgstash.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: metrics
{{- end }}

{{- define "pgstash.commonLabels" -}}
helm.sh/chart: {{ include "pgstash.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pgstash.labels" -}}
{{ include "pgstash.selectorLabels" . }}
{{ include "pgstash.commonLabels" . }}
{{- end }}

{{- define "pgstash.redisLabels" -}}
{{ include "pgstash.redisSelectorLabels" . }}
{{ include "pgstash.commonLabels" . }}
{{- end }}

{{- define "pgstash.usersSecret" -}}
{{- default (printf "%s-users" (include "pgstash.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The Secret with the Redis password, or "" when the URL has none. */}}
{{- define "pgstash.redisPasswordSecret" -}}
{{- if .Values.redis.passwordSecret }}
{{- .Values.redis.passwordSecret }}
{{- else if and .Values.redis.bundled.enabled (not .Values.redis.url) (not .Values.redis.existingSecret) }}
{{- printf "%s-redis" (include "pgstash.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Where PGSTASH_REDIS comes from: "secret", "url", "bundled" or "none".
Fails on contradicting values rather than guessing.
*/}}
{{- define "pgstash.redisSource" -}}
{{- $r := .Values.redis }}
{{- if and $r.existingSecret $r.url }}
{{- fail "redis.existingSecret and redis.url are both set: set one" }}
{{- end }}
{{- if and $r.bundled.enabled (or $r.existingSecret $r.url) }}
{{- fail "redis.bundled.enabled is true while redis.url or redis.existingSecret names another Redis: set redis.bundled.enabled=false" }}
{{- end }}
{{- if $r.existingSecret }}secret
{{- else if $r.url }}url
{{- else if $r.bundled.enabled }}bundled
{{- else if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount > 1 needs a shared Redis: set redis.url, redis.existingSecret or redis.bundled.enabled" }}
{{- else }}none
{{- end }}
{{- end }}

{{/* The PGSTASH_REDIS value when it is not read from a Secret. */}}
{{- define "pgstash.redisURL" -}}
{{- $source := include "pgstash.redisSource" . }}
{{- $url := .Values.redis.url }}
{{- if eq $source "bundled" }}
{{- $url = printf "redis://%s:6379" (include "pgstash.redisName" .) }}
{{- end }}
{{- if include "pgstash.redisPasswordSecret" . }}
{{- if not (regexMatch "^[a-z-]+://[^@/]+" $url) }}
{{- fail (printf "redis.url %q: expected scheme://host:port" $url) }}
{{- end }}
{{- if regexMatch "^[a-z-]+://[^/]*@" $url }}
{{- fail "redis.url holds a user or password: leave them out (redis.username, redis.passwordSecret) or use redis.existingSecret" }}
{{- end }}
{{- $url = regexReplaceAll "^([a-z-]+)://" $url (printf "${1}://%s:$(REDIS_PASSWORD)@" .Values.redis.username) }}
{{- end }}
{{- $url }}
{{- end }}

{{/* Mount points of the optional TLS Secrets. */}}
{{- define "pgstash.tlsDir" -}}/run/secrets/pgstash-tls{{- end }}

{{/* The upstream URL built from host, port, params and the TLS Secrets. */}}
{{- define "pgstash.upstreamURL" -}}
{{- $u := .Values.upstream }}
{{- $dir := include "pgstash.tlsDir" . }}
{{- $params := list }}
{{- range $key, $value := $u.params }}
{{- if has $key (list "sslrootcert" "sslcert" "sslkey") }}
{{- fail (printf "upstream.params.%s: set upstream.tls instead" $key) }}
{{- end }}
{{- $params = append $params (printf "%s=%v" $key $value) }}
{{- end }}
{{- if $u.tls.caSecret }}
{{- $params = append $params (printf "sslrootcert=%s/upstream-ca/%s" $dir $u.tls.caKey) }}
{{- end }}
{{- if $u.tls.clientSecret }}
{{- $params = append $params (printf "sslcert=%s/upstream-client/tls.crt" $dir) }}
{{- $params = append $params (printf "sslkey=%s/upstream-client/tls.key" $dir) }}
{{- end }}
{{- printf "postgres://%s:%v" $u.host $u.port }}
{{- if $params }}?{{ join "&" $params }}{{ end }}
{{- end }}

{{/* A file's text inside a ConfigMap's "|" block: indented 4, no trailing blanks. */}}
{{- define "pgstash.block" -}}
{{- regexReplaceAll "(?m)[ \t]+$" (. | trim | indent 4) "" }}
{{- end }}

{{/* A TOML basic string: JSON's escapes are TOML's; &, < and > kept as they are. */}}
{{- define "pgstash.toml" -}}
{{- toJson (toString .) | replace "\\u0026" "&" | replace "\\u003c" "<" | replace "\\u003e" ">" }}
{{- end }}
