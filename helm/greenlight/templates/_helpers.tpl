{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "greenlight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, with the chart name unless it is already in it. */}}
{{- define "greenlight.fullname" -}}
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

{{- define "greenlight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "greenlight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "greenlight.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "greenlight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: greenlight
{{- end }}

{{- define "greenlight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "greenlight.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the webhook's serving certificate (chart-generated or cert-manager's). */}}
{{- define "greenlight.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "greenlight.fullname" .) }}
{{- end }}

{{- define "greenlight.webhookServiceName" -}}
{{- include "greenlight.fullname" . }}
{{- end }}

{{- define "greenlight.auditClaimName" -}}
{{- default (printf "%s-audit" (include "greenlight.fullname" .)) .Values.audit.persistence.existingClaim }}
{{- end }}

{{/* Labels for the Prometheus Operator objects: chart labels plus monitoring.labels (templated). */}}
{{- define "greenlight.monitoringLabels" -}}
{{ include "greenlight.labels" . }}
{{- range $key, $value := .Values.monitoring.labels }}
{{ $key }}: {{ tpl $value $ | quote }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the operator serves only the namespaces in watchNamespaces. */}}
{{- define "greenlight.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The chart-generated webhook CA and serving certificate as JSON {ca, crt, key} (base64 PEM),
     reused from the Secret of a previous release so upgrades keep the caBundle stable. Call it
     once per render (fromJson) and share the result: each call would otherwise mint a new CA. */}}
{{- define "greenlight.webhookCert" -}}
{{- $secretName := include "greenlight.webhookSecretName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $data := dig "data" (dict) $existing }}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") }}
{{- dict "ca" (index $data "ca.crt") "crt" (index $data "tls.crt") "key" (index $data "tls.key") | toJson }}
{{- else }}
{{- $service := include "greenlight.webhookServiceName" . }}
{{- $days := int .Values.webhook.certValidityDays }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "greenlight.fullname" .)) $days }}
{{- $dns := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service .Release.Namespace) nil $dns $days $ca }}
{{- dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) | toJson }}
{{- end }}
{{- end }}

{{/* Rules on the namespaced resources the operator handles (ClusterRole or per-namespace Role). */}}
{{- define "greenlight.namespacedRules" -}}
- apiGroups: ["greenlight.dev"]
  resources: ["approvalrequests"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["greenlight.dev"]
  resources: ["approvalrequests/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
