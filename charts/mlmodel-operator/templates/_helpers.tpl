{{/* Names, labels and shared fragments of the chart. */}}

{{- define "mlmodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name alone when it already names the chart, as most releases are named. */}}
{{- define "mlmodel-operator.fullname" -}}
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

{{- define "mlmodel-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Never changes for a release: a Deployment's selector is immutable. */}}
{{- define "mlmodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlmodel-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlmodel-operator.labels" -}}
helm.sh/chart: {{ include "mlmodel-operator.chart" . }}
{{ include "mlmodel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlmodel-operator
{{- end }}

{{- define "mlmodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlmodel-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlmodel-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does with the API in the namespaces it watches, and nothing more: every rule was
found missing (403) when the operator ran with less, except where a comment says otherwise.
Server-side apply of an object that does not exist yet needs create as well as patch.
*/}}
{{- define "mlmodel-operator.namespacedRules" -}}
- apiGroups: ["machine-learning.org"]
  resources: ["mlmodeldeployments"]
  # get: read afresh when a status write finds the cached copy stale. patch: the
  # machine-learning.org/rollout annotation is removed once acted on.
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["machine-learning.org"]
  resources: ["mlmodeldeployments/status"]
  verbs: ["patch"]
- apiGroups: ["machine-learning.org"]
  # Children name their MLModelDeployment as owner with blockOwnerDeletion, which clusters with
  # the OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only with this.
  resources: ["mlmodeldeployments/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  # delete: a canary's Deployment goes when it is promoted or rolled back.
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  # delete: a canary's backend Services (with a Gateway) go when it ends.
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  # delete: the sidecar's ConfigMap goes when monitoring is turned off.
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  # Scheduling verdicts and readiness of the model pods are what the status reports.
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  # patch: a repeated reason updates the count of the Event already posted.
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  # Applied with --network-policy, and removed when it is turned off (a policy left behind
  # would go on blocking traffic), so granted either way.
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  # The HorizontalPodAutoscaler of a model with spec.autoscaling (without KEDA), removed when
  # autoscaling is turned off or KEDA takes over.
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.rbac.keda }}
- apiGroups: ["keda.sh"]
  # The ScaledObject of a model with spec.autoscaling when the cluster serves KEDA.
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.prometheusOperator }}
- apiGroups: ["monitoring.coreos.com"]
  # Applied and removed with the model's monitoring when the cluster serves these kinds.
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.gatewayAPI }}
- apiGroups: ["gateway.networking.k8s.io"]
  # A model's HTTPRoute (spec.rollout.gateway) when the cluster serves the Gateway API.
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.inferenceExtension }}
- apiGroups: ["inference.networking.k8s.io"]
  # The InferencePool of an llm model behind a Gateway, when the cluster serves InferencePools.
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  # The identity of that pool's endpoint picker.
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  # The picker's Role and RoleBinding. The API server lets the operator grant only rights it
  # holds itself (pods and inferencepools above, llm-d's objects below), so it needs neither
  # `escalate` nor `bind`.
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["llm-d.ai"]
  # Never read by the operator: held so that it may grant them, read-only, to the picker.
  resources: ["inferenceobjectives", "inferencemodelrewrites"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{/*
kopf's peering: replicas watch the peering object and refresh their records in it; the operator
creates the object when it is missing (plain manifests cannot carry it) and its own resync reads
it to act only in the active replica.
*/}}
{{- define "mlmodel-operator.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ . | quote }}]
  verbs: ["get", "list", "watch", "patch", "create"]
{{- end }}

{{/*
What the activator does with the API, in the models' namespaces.
*/}}
{{- define "mlmodel-operator.activatorRules" -}}
- apiGroups: ["machine-learning.org"]
  resources: ["mlmodeldeployments"]
  verbs: ["get", "list"]
# Wake (replicas 1 and the woken-at annotation) and take idle models to zero.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get"]
# Whether a model is autoscaled, and by whom (the operator's HPA or KEDA's).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get"]
# The Service's slice that points at the activator while the model has no ready replica.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "create", "patch", "delete"]
# One Event per wake, with its cold-start time.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
