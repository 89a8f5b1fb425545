//! Read-only reads of the cluster for `evidence`: the tenants, what is in their namespaces, the
//! admission guards, and who is reading (SelfSubjectReview). Only get, list and the review.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::live::{GuardEvidence, KubernetesEvidence, NamespaceEvidence, Read};
use crate::api::ImagingTenant;
use crate::api::metadata::{GUARD_LABEL, TENANT_UID_LABEL};

/// Who the Kubernetes credentials in use are, as the apiserver authenticated them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubernetesIdentity {
    pub username: String,
    pub groups: Vec<String>,
}

/// A Kubernetes error as a person reads it: the status code and the apiserver's message.
pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} {}: {}", status.code, status.reason, status.message),
        other => other.to_string(),
    }
}

pub(crate) async fn whoami(client: &Client) -> Result<KubernetesIdentity, String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| format!("SelfSubjectReview: {}", describe(&e)))?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok(KubernetesIdentity { username: user.username.unwrap_or_default(), groups: user.groups.unwrap_or_default() })
}

/// The tenant `name`, or every tenant.
pub(crate) async fn tenants(client: &Client, name: Option<&str>) -> Result<Vec<ImagingTenant>, String> {
    let api: Api<ImagingTenant> = Api::all(client.clone());
    match name {
        Some(name) => match api.get_opt(name).await {
            Ok(Some(t)) => Ok(vec![t]),
            Ok(None) => Err(format!("there is no ImagingTenant {name}")),
            Err(e) => Err(format!("get ImagingTenant {name}: {}", describe(&e))),
        },
        None => {
            let mut list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list ImagingTenants: {}", describe(&e)))?
                .items;
            list.sort_by(|a, b| a.tenant_name().cmp(b.tenant_name()));
            Ok(list)
        }
    }
}

fn json<K: Serialize>(items: Vec<K>) -> Vec<Value> {
    items.into_iter().map(|o| serde_json::to_value(o).expect("Kubernetes objects serialize to JSON")).collect()
}

async fn list_in<K>(client: &Client, ns: &str) -> Read<Vec<Value>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| json(l.items))
        .map_err(|e| format!("list {} in {ns}: {}", K::plural(&()), describe(&e)))
}

/// The admission guards and the bindings that name them.
pub(crate) async fn guards(client: &Client) -> Read<Vec<GuardEvidence>> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let policies = policies
        .list(&ListParams::default().labels(GUARD_LABEL))
        .await
        .map_err(|e| format!("list ValidatingAdmissionPolicies: {}", describe(&e)))?;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let bindings = bindings
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ValidatingAdmissionPolicyBindings: {}", describe(&e)))?;
    let bindings = json(bindings.items);
    Ok(json(policies.items)
        .into_iter()
        .map(|policy| {
            let name = policy["metadata"]["name"].clone();
            let bindings = bindings.iter().filter(|b| b["spec"]["policyName"] == name).cloned().collect();
            GuardEvidence { policy, bindings }
        })
        .collect())
}

/// Everything `controls` judges on the Kubernetes side of one tenant; `guards` are read once
/// for all tenants.
pub(crate) async fn kubernetes(
    client: &Client,
    tenant: &ImagingTenant,
    guards: &Read<Vec<GuardEvidence>>,
) -> KubernetesEvidence {
    let uid = tenant.metadata.uid.clone().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = namespaces
        .list_metadata(&ListParams::default().labels(&format!("{TENANT_UID_LABEL}={uid}")))
        .await
        .map(|l| l.items.into_iter().filter_map(|n| n.metadata.name).collect())
        .map_err(|e| format!("list namespaces: {}", describe(&e)));
    let mut evidence = Vec::new();
    for name in tenant.namespace_names() {
        let object = namespaces
            .get_opt(&name)
            .await
            .map(|n| n.map(|n| serde_json::to_value(n).expect("a Namespace serializes to JSON")))
            .map_err(|e| format!("get namespace {name}: {}", describe(&e)));
        evidence.push(NamespaceEvidence {
            object,
            network_policies: list_in::<NetworkPolicy>(client, &name).await,
            role_bindings: list_in::<RoleBinding>(client, &name).await,
            resource_quotas: list_in::<ResourceQuota>(client, &name).await,
            service_accounts: list_in::<ServiceAccount>(client, &name).await,
            name,
        });
    }
    KubernetesEvidence { labelled_namespaces: labelled, namespaces: evidence, guards: guards.clone() }
}
