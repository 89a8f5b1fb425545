{{/* Chart name, at most 63 characters. */}}
{{- define "ito.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already holds the chart name. */}}
{{- define "ito.fullname" -}}
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

{{- define "ito.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ito.labels" -}}
helm.sh/chart: {{ include "ito.chart" . }}
{{ include "ito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: imaging-tenant-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods; never change them, a Deployment's selector is immutable. */}}
{{- define "ito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ito.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ito.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.create=false needs serviceAccount.name: the existing ServiceAccount the operator runs as" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The IAM role the operator's pods assume through IRSA. */}}
{{- define "ito.podRoleArn" -}}
{{- default .Values.operatorRoleArn .Values.serviceAccount.roleArn }}
{{- end }}

{{- define "ito.leaseName" -}}
{{- default (include "ito.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "ito.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{- define "ito.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Settings that only make sense together; checked once, from the Deployment, with a message that
says what to change.
*/}}
{{- define "ito.validate" -}}
{{- if and (not .Values.serviceAccount.create) .Values.serviceAccount.roleArn }}
{{- fail "serviceAccount.roleArn annotates the ServiceAccount the chart creates; with serviceAccount.create=false, annotate your own ServiceAccount instead" }}
{{- end }}
{{- if and (not .Values.serviceAccount.irsa) .Values.serviceAccount.roleArn }}
{{- fail "serviceAccount.roleArn is the IRSA annotation; with serviceAccount.irsa=false (EKS Pod Identity) the pod identity association names the role: unset serviceAccount.roleArn" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be less than replicaCount (%d), or no node running an operator pod could ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- end }}
{{- end }}

{{/* The operator's Kubernetes username: its ServiceAccount's. */}}
{{- define "ito.operatorUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ito.serviceAccountName" .) }}
{{- end }}

{{/*
CEL variables shared by the admission policies: who is asking. The operator (this release's
ServiceAccount, and those of other shards listed in admission.operatorUsernames), the
break-glass groups, and the control plane's namespace controller and garbage collector.
*/}}
{{- define "ito.admissionIdentities" -}}
- name: operator
  expression: {{ printf "request.userInfo.username in %s" (prepend .Values.admission.operatorUsernames (include "ito.operatorUsername" .) | toJson) | quote }}
- name: breakGlass
  expression: {{ printf "has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in %s)" (.Values.admission.breakGlassGroups | toJson) | quote }}
- name: privileged
  expression: "variables.operator || variables.breakGlass"
- name: namespaceController
  expression: {{ printf "request.userInfo.username in %s" (.Values.admission.namespaceControllerUsernames | toJson) | quote }}
- name: garbageCollector
  expression: {{ printf "request.userInfo.username in %s" (.Values.admission.garbageCollectorUsernames | toJson) | quote }}
{{- end }}

{{/* CEL variables about the namespace of a namespaced request: is it a tenant's, and what the operator wrote on it. */}}
{{- define "ito.admissionNamespace" -}}
- name: nsLabels
  expression: "namespaceObject != null && has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}"
- name: nsAnnotations
  expression: "namespaceObject != null && has(namespaceObject.metadata.annotations) ? namespaceObject.metadata.annotations : {}"
- name: tenant
  expression: "'imaging.tenancy.dev/tenant' in variables.nsLabels ? variables.nsLabels['imaging.tenancy.dev/tenant'] : ''"
{{- end }}

{{/* The binding of one admission policy: Deny, in the namespaces admission.namespaceSelector selects. */}}
{{- define "ito.admissionBinding" -}}
{{- $root := index . 0 }}
{{- $policy := index . 1 }}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ $policy }}
  labels:
    {{- include "ito.labels" $root | nindent 4 }}
spec:
  policyName: {{ $policy }}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      {{- toYaml $root.Values.admission.namespaceSelector | nindent 6 }}
{{- end }}
