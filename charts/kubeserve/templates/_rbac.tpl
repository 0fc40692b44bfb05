{{/*
The operator's RBAC rules. operator/kubeserve/rbac.py is the source of truth:
tests/chart/test_rbac.py renders the chart and checks these rules equal rbac.rules() and
rbac.cluster_rules(), so a new child kind needs a line here too.
*/}}

{{/* rbac.rules(namespaced=...): call with (dict "namespaced" true|false). */}}
{{- define "kubeserve.rbac.rules" -}}
# ModelDeployments: kopf lists and watches them; the operator reads them. Only the status
# subresource is written.
- apiGroups: [kubeserve.io]
  resources: [modeldeployments]
  verbs: [get, list, watch]
# Status: the operator's conditions, replicas and url.
- apiGroups: [kubeserve.io]
  resources: [modeldeployments/status]
  verbs: [get, patch]
# blockOwnerDeletion on the children's owner references (OwnerReferencesPermissionEnforcement).
- apiGroups: [kubeserve.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# Children (resources/kinds.py CHILD_KINDS): observe, list once at startup (the inventory),
# server-side apply (create + patch), prune. All but KEDA's ScaledObject and its HTTP add-on's
# HTTPScaledObject (optional: their CRDs may be absent) are also watched
# (by label), so a deleted or hand-edited child is restored at once and the Deployment's
# readiness reaches the ModelDeployment status.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, create, patch, delete]
- apiGroups: [http.keda.sh]
  resources: [httpscaledobjects]
  verbs: [get, list, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# The canary's Gateway API routes (optional: the CRDs may be absent; not watched).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [grpcroutes]
  verbs: [get, list, create, patch, delete]
# kopf posts events about handler progress and errors.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Model-server pods, read-only (by label): cold-start timings from their status.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- if not .namespaced }}
# kopf: runtime observation of CustomResourceDefinitions (all-namespaces mode only).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
{{- end -}}

{{/* rbac.cluster_rules(): needed in both modes. */}}
{{- define "kubeserve.rbac.clusterRules" -}}
# Nodes, read-only: GPU capacity and labels for the Schedulable condition.
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
{{- end -}}


{{/* rbac.lease_rules(name): the leader election Lease, in the release namespace only. */}}
{{- define "kubeserve.rbac.leaseRules" -}}
# Create cannot be restricted by name (the object has none until it exists).
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
# Read and renew (PUT) only this release's Lease.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "kubeserve.fullname" . }}]
  verbs: [get, update]
{{- end -}}
