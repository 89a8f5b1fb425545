//! The Kubernetes objects of a tenant: per namespace, Pod Security labels, the network policies
//! of invariant 2, role bindings, quota, limit range and the workload ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::api::{ImagingTenant, Subject, SubjectKind};
use crate::config::Settings;
use crate::desired::names;

use crate::api::metadata::{
    ALLOWED_EGRESS_CIDRS_ANNOTATION, IRSA_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, NAMESPACE_NAME_LABEL,
    ROLE_ARN_ANNOTATION, TENANT_LABEL, TENANT_NAMESPACES_ANNOTATION, TENANT_UID_LABEL,
};

pub const DEFAULT_DENY: &str = "imaging-default-deny";
pub const ALLOW_SAME_TENANT: &str = "imaging-allow-same-tenant";
pub const ALLOW_DNS: &str = "imaging-allow-dns";
pub const ALLOW_INGRESS: &str = "imaging-allow-ingress";
pub const ALLOW_EGRESS: &str = "imaging-allow-egress";
pub const QUOTA: &str = "imaging-quota";
pub(crate) const LIMITS: &str = "imaging-limits";

/// The ClusterRoles tenants are bound to, by access level. Invariant 3: nothing else.
pub const BOUND_CLUSTER_ROLES: [(&str, &str); 3] =
    [("imaging-admins", "admin"), ("imaging-editors", "edit"), ("imaging-viewers", "view")];

/// Every Kubernetes object a tenant should have. `apply` destructures it without `..`, so a new
/// kind cannot be forgotten there.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TenantObjects {
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    pub(crate) network_policies: Vec<NetworkPolicy>,
    pub(crate) role_bindings: Vec<RoleBinding>,
    pub(crate) resource_quotas: Vec<ResourceQuota>,
    pub(crate) limit_ranges: Vec<LimitRange>,
}

/// Labels every object of the tenant carries.
pub(crate) fn labels(tenant: &ImagingTenant) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (TENANT_LABEL.to_string(), tenant.tenant_name().to_string()),
    ]);
    if let Some(uid) = &tenant.metadata.uid {
        labels.insert(TENANT_UID_LABEL.to_string(), uid.clone());
    }
    labels
}

fn meta(tenant: &ImagingTenant, name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        // No owner reference: the garbage collector must never delete a tenant's namespace, or
        // the isolation inside it, when the tenant disappears without the operator's cleanup
        // (invariant 12). The operator finds its objects by the tenant-uid label.
        labels: Some(labels(tenant)),
        ..ObjectMeta::default()
    }
}

pub(crate) fn objects(tenant: &ImagingTenant, settings: &Settings) -> TenantObjects {
    let namespaces = tenant.namespace_names();
    let mut out = TenantObjects::default();
    for ns in &namespaces {
        out.namespaces.push(namespace(tenant, settings, ns));
        out.service_accounts.push(service_account(tenant, settings, ns));
        out.network_policies.extend(network_policies(tenant, ns, &namespaces));
        out.role_bindings.extend(role_bindings(tenant, ns));
        out.resource_quotas.push(resource_quota(tenant, ns));
        out.limit_ranges.push(limit_range(tenant, ns));
    }
    out
}

/// Every object as JSON with apiVersion and kind, namespaces first: the order `apply` uses.
pub fn render(tenant: &ImagingTenant, settings: &Settings) -> Vec<serde_json::Value> {
    let TenantObjects { namespaces, service_accounts, network_policies, role_bindings, resource_quotas, limit_ranges } =
        objects(tenant, settings);
    let mut out = Vec::new();
    out.extend(namespaces.iter().map(to_json));
    out.extend(network_policies.iter().map(to_json));
    out.extend(role_bindings.iter().map(to_json));
    out.extend(resource_quotas.iter().map(to_json));
    out.extend(limit_ranges.iter().map(to_json));
    out.extend(service_accounts.iter().map(to_json));
    out
}

/// JSON of a typed object with its apiVersion and kind set (server-side apply needs both).
pub(crate) fn to_json<K: Resource<DynamicType = ()> + serde::Serialize>(obj: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(obj).expect("Kubernetes objects serialize to JSON");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

/// A tenant namespace: Pod Security `restricted`, and what the chart's admission policies need to
/// know of the tenant, since they see the namespace of a request but not the tenant.
pub(crate) fn namespace(tenant: &ImagingTenant, settings: &Settings, name: &str) -> Namespace {
    let mut metadata = meta(tenant, name, None);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".into());
        labels.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".into());
    }
    let egress: Vec<&str> = tenant.spec.network.allow_egress_to.iter().map(|p| p.cidr.as_str()).collect();
    metadata.annotations = Some(BTreeMap::from([
        (ALLOWED_EGRESS_CIDRS_ANNOTATION.to_string(), egress.join(",")),
        (TENANT_NAMESPACES_ANNOTATION.to_string(), tenant.namespace_names().join(",")),
        // The same ARN as the workload ServiceAccount's IRSA annotation.
        (ROLE_ARN_ANNOTATION.to_string(), names::role_arn(tenant, settings)),
    ]));
    Namespace { metadata, ..Namespace::default() }
}

pub(crate) fn service_account(tenant: &ImagingTenant, settings: &Settings, ns: &str) -> ServiceAccount {
    let mut metadata = meta(tenant, &settings.workload_service_account, Some(ns));
    metadata.annotations = Some(BTreeMap::from([(IRSA_ANNOTATION.to_string(), names::role_arn(tenant, settings))]));
    ServiceAccount { metadata, ..ServiceAccount::default() }
}

fn namespace_names_selector(names: &[String]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.to_string(),
            operator: "In".to_string(),
            values: Some(names.to_vec()),
        }]),
        match_labels: None,
    }
}

fn namespaces_peer(names: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer { namespace_selector: Some(namespace_names_selector(names)), ..NetworkPolicyPeer::default() }
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some(protocol.to_string()), port: Some(IntOrString::Int(port)), end_port: None }
}

fn policy(tenant: &ImagingTenant, ns: &str, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy { metadata: meta(tenant, name, Some(ns)), spec: Some(spec) }
}

/// Invariant 2: default deny both ways; the tenant's own namespaces (selected by the
/// apiserver-set name label, never by a forgeable tenant label); DNS to kube-dns; and exactly
/// what `spec.network` lists.
pub(crate) fn network_policies(tenant: &ImagingTenant, ns: &str, tenant_namespaces: &[String]) -> Vec<NetworkPolicy> {
    let all_pods = LabelSelector::default();
    let both = Some(vec!["Ingress".to_string(), "Egress".to_string()]);
    let mut out = vec![
        policy(
            tenant,
            ns,
            DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: both.clone(),
                ..NetworkPolicySpec::default()
            },
        ),
        policy(
            tenant,
            ns,
            ALLOW_SAME_TENANT,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: both,
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![namespaces_peer(tenant_namespaces)]),
                    ports: None,
                }]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![namespaces_peer(tenant_namespaces)]),
                    ports: None,
                }]),
            },
        ),
        policy(
            tenant,
            ns,
            ALLOW_DNS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Egress".to_string()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                NAMESPACE_NAME_LABEL.to_string(),
                                "kube-system".to_string(),
                            )])),
                            match_expressions: None,
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
                            match_expressions: None,
                        }),
                        ip_block: None,
                    }]),
                    ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
                }]),
                ..NetworkPolicySpec::default()
            },
        ),
    ];
    let ingress_from: Vec<String> =
        tenant.spec.network.allow_ingress_from.iter().map(|p| p.namespace.clone()).collect();
    if !ingress_from.is_empty() {
        out.push(policy(
            tenant,
            ns,
            ALLOW_INGRESS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".to_string()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![namespaces_peer(&ingress_from)]),
                    ports: None,
                }]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    if !tenant.spec.network.allow_egress_to.is_empty() {
        let egress = tenant
            .spec
            .network
            .allow_egress_to
            .iter()
            .map(|peer| NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr: peer.cidr.clone(), except: None }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(peer.ports.iter().map(|p| port("TCP", p.0)).collect()),
            })
            .collect();
        out.push(policy(
            tenant,
            ns,
            ALLOW_EGRESS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods),
                policy_types: Some(vec!["Egress".to_string()]),
                egress: Some(egress),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    out
}

fn rbac_subject(subject: &Subject) -> RbacSubject {
    match subject.kind {
        SubjectKind::ServiceAccount => RbacSubject {
            kind: "ServiceAccount".to_string(),
            name: subject.name.clone(),
            namespace: subject.namespace.clone(),
            api_group: Some(String::new()),
        },
        kind => RbacSubject {
            kind: kind.as_str().to_string(),
            name: subject.name.clone(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".to_string()),
        },
    }
}

/// Invariant 3: one binding per non-empty access level, to admin, edit or view only.
pub(crate) fn role_bindings(tenant: &ImagingTenant, ns: &str) -> Vec<RoleBinding> {
    let access = &tenant.spec.access;
    [&access.admins, &access.editors, &access.viewers]
        .into_iter()
        .zip(BOUND_CLUSTER_ROLES)
        .filter(|(subjects, _)| !subjects.is_empty())
        .map(|(subjects, (name, cluster_role))| RoleBinding {
            metadata: meta(tenant, name, Some(ns)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_string()),
                kind: "ClusterRole".to_string(),
                name: cluster_role.to_string(),
            },
            subjects: Some(subjects.iter().map(rbac_subject).collect()),
        })
        .collect()
}

fn quantities(values: &BTreeMap<String, IntOrString>) -> BTreeMap<String, Quantity> {
    values
        .iter()
        .map(|(k, v)| {
            let q = match v {
                IntOrString::Int(i) => i.to_string(),
                IntOrString::String(s) => s.clone(),
            };
            (k.clone(), Quantity(q))
        })
        .collect()
}

pub(crate) fn resource_quota(tenant: &ImagingTenant, ns: &str) -> ResourceQuota {
    ResourceQuota {
        metadata: meta(tenant, QUOTA, Some(ns)),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&tenant.spec.quota.hard)),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}

/// Defaults for containers that set no requests, so they still run under the quota.
pub(crate) fn limit_range(tenant: &ImagingTenant, ns: &str) -> LimitRange {
    let quota = &tenant.spec.quota;
    let non_empty = |m: &BTreeMap<String, IntOrString>| (!m.is_empty()).then(|| quantities(m));
    LimitRange {
        metadata: meta(tenant, LIMITS, Some(ns)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default_request: non_empty(&quota.default_request),
                default: non_empty(&quota.default_limit),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
