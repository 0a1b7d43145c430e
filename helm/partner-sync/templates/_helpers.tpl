{{/* Names and labels shared by every object. */}}
{{- define "partner-sync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "partner-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "partner-sync.labels" -}}
{{ include "partner-sync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "partner-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "partner-sync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "partner-sync.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The connector's settings: the user's, with what the chart owns forced over them. */}}
{{- define "partner-sync.config" -}}
{{- $owned := dict
      "telemetry" (dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) "log_format" "json")
      "delivery" (dict "shutdown_budget_seconds" (int .Values.shutdownBudgetSeconds))
      "state" (dict "spill_dir" .Values.spillVolume.mountPath) -}}
{{- $config := mustMergeOverwrite (deepCopy .Values.config) $owned -}}
{{- toToml $config -}}
{{- end -}}

{{/* The most replicas that get partitions. */}}
{{- define "partner-sync.maxReplicas" -}}
{{- min (int .Values.autoscaling.maxReplicas) (int .Values.topicPartitions) -}}
{{- end -}}
