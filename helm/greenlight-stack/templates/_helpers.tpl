{{/* Labels of every object this chart renders itself. */}}
{{- define "greenlight-stack.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: greenlight
{{- end }}

{{/* Labels of Prometheus Operator objects: kube-prometheus-stack selects them by release. */}}
{{- define "greenlight-stack.monitoringLabels" -}}
{{ include "greenlight-stack.labels" . }}
release: {{ .Release.Name }}
{{- end }}
