{{/* Names, labels and images shared by every template. */}}

{{- define "kubeserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The object name prefix: the release name, plus the chart name unless already in it. */}}
{{- define "kubeserve.fullname" -}}
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

{{- define "kubeserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubeserve.labels" -}}
helm.sh/chart: {{ include "kubeserve.chart" . }}
{{ include "kubeserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubeserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kubeserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubeserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
A model-server image: the override in modelImages.<key>, else
<modelImages.repository>/<component>:<tag><suffix>. Call with (list $ key component suffix).
The defaults match operator/kubeserve/config.py (ENV_VARS); tests/chart checks they agree.
*/}}
{{- define "kubeserve.modelImage" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $component := index . 2 -}}
{{- $suffix := index . 3 -}}
{{- $images := $root.Values.modelImages -}}
{{- $override := index $images $key -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "%s/%s:%s%s" $images.repository $component ($images.tag | default $root.Chart.AppVersion) $suffix -}}
{{- end -}}
{{- end -}}

{{/* The operator's command line after the image's entrypoint (tini -- kubeserve). */}}
{{- define "kubeserve.args" -}}
- run
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.health.port }}/healthz
- --metrics-port={{ if .Values.metrics.enabled }}{{ .Values.metrics.port }}{{ else }}0{{ end }}
- --log-format={{ .Values.operator.logFormat }}
- --log-level={{ .Values.operator.logLevel }}
- --leader-elect
- --leader-election-id={{ include "kubeserve.fullname" . }}
{{- with .Values.selector }}
- {{ printf "--selector=%s" . | quote }}
{{- end }}
{{- end -}}
