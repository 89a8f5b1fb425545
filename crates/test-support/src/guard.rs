//! What every test of this binary runs under, as a production cluster would: the chart's RBAC and
//! admission policies bound cluster-wide, the operator acting as the chart's ServiceAccount (never
//! as cluster-admin), the controllers of kube-controller-manager as their own ServiceAccounts,
//! and both kinds of the Admin-tier network layer served: `ClusterNetworkPolicy` (which the
//! operator prefers, so every test's tenants get one, validated by the CRD's schema) and
//! `AdminNetworkPolicy` (the experimental channel of sig-network's network-policy-api, whose
//! `networks` peers kube-network-policies evaluates; `connectivity` forces that kind).
//!
//! Tests that simulate drift or clean up act through the break-glass group
//! (`ControlPlane::break_glass_client`), the chart's `admission.breakGlassGroups`. The demo and the
//! bench install the same, so the operator runs there as it would in a cluster.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::chart::{CHART, MINIMAL_VALUES, documents, helm_template, kind_of, name_of};
use crate::{BREAK_GLASS_GROUP, ControlPlane, apply_crd, scratch_dir, tool_path, unique_name, wait_for};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub const RELEASE: &str = "ito";
pub const RELEASE_NAMESPACE: &str = "ito-system";
/// The operator's ServiceAccount, as the chart names it for release [`RELEASE`].
pub const OPERATOR_USER: &str = "system:serviceaccount:ito-system:ito-imaging-tenant-operator";
/// The chart's admission policies.
pub const POLICIES: usize = 6;

/// The AdminNetworkPolicy and ClusterNetworkPolicy CRDs `make k8s-bin` copies next to the tools.
const ANP_CRD: &str = "crds/policy.networking.k8s.io_adminnetworkpolicies.yaml";
const CNP_CRD: &str = "crds/policy.networking.k8s.io_clusternetworkpolicies.yaml";

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn vap() -> ApiResource {
    resource("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies")
}

/// The chart's ServiceAccount, ClusterRole(Binding) and admission policies for [`RELEASE`], as
/// rendered with the break-glass group of the tests.
pub fn rendered() -> Vec<Value> {
    let values = json!({"admission": {"breakGlassGroups": [BREAK_GLASS_GROUP]}});
    let values_file = scratch_dir("guard").join("values.yaml");
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let values_path = values_file.display().to_string();
    let rendered = helm_template(&[
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--values",
        MINIMAL_VALUES,
        "--values",
        &values_path,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/clusterrole.yaml",
        "--show-only",
        "templates/clusterrolebinding.yaml",
        "--show-only",
        "templates/admission-policies.yaml",
    ]);
    documents(&rendered)
}

/// Installs the guard: the AdminNetworkPolicy and ClusterNetworkPolicy CRDs, the release
/// namespace, and the chart's ServiceAccount, ClusterRole(Binding) and admission policies; returns
/// once the policies are enforced. Idempotent (server-side apply).
pub async fn install(client: &Client) {
    install_network_policy_crd(client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": RELEASE_NAMESPACE}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {RELEASE_NAMESPACE}: {e}"),
    }
    let docs = rendered();
    assert_eq!(docs.iter().filter(|d| kind_of(d) == "ValidatingAdmissionPolicy").count(), POLICIES);
    apply_documents(client, &docs).await;
    expressions_type_check(client, &docs).await;
    // In force before any operator starts: a forged tenant namespace is refused (dry run).
    let creator = client.clone();
    wait_for(Duration::from_secs(30), "the admission policies to be enforced", || {
        let creator = creator.clone();
        async move {
            let ns: Namespace = serde_json::from_value(
                json!({"metadata": {"name": unique_name("probe"), "labels": {"imaging.tenancy.dev/tenant": "probe"}}}),
            )
            .unwrap();
            match Api::<Namespace>::all(creator).create(&PostParams { dry_run: true, ..Default::default() }, &ns).await
            {
                Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

async fn install_network_policy_crd(client: &Client) {
    for file in [ANP_CRD, CNP_CRD] {
        let path = tool_path(file).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            text.contains("networks:"),
            "{} must serve egress `networks` peers (the experimental channel for AdminNetworkPolicy): run `make k8s-bin`",
            path.display()
        );
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("parse the network policy CRD");
        apply_crd(client, &crd, "imaging-tenant-operator-tests").await;
    }
}

/// Server-side applies the chart's documents as the cluster admin.
pub async fn apply_documents(client: &Client, docs: &[Value]) {
    for doc in docs {
        let (api_resource, namespaced) = match kind_of(doc) {
            "ServiceAccount" => (ApiResource::erase::<ServiceAccount>(&()), true),
            "ClusterRole" => (ApiResource::erase::<ClusterRole>(&()), false),
            "ClusterRoleBinding" => (ApiResource::erase::<ClusterRoleBinding>(&()), false),
            "Role" => (ApiResource::erase::<Role>(&()), true),
            "RoleBinding" => (ApiResource::erase::<RoleBinding>(&()), true),
            "ValidatingAdmissionPolicy" => (vap(), false),
            "ValidatingAdmissionPolicyBinding" => (
                resource(
                    "admissionregistration.k8s.io",
                    "v1",
                    "ValidatingAdmissionPolicyBinding",
                    "validatingadmissionpolicybindings",
                ),
                false,
            ),
            other => panic!("unexpected kind {other} in the rendered chart"),
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), doc["metadata"]["namespace"].as_str().unwrap(), &api_resource)
        } else {
            Api::all_with(client.clone(), &api_resource)
        };
        api.patch(name_of(doc), &PatchParams::apply("imaging-tenant-operator-tests").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", kind_of(doc), name_of(doc)));
    }
}

/// The API server type-checks each policy's CEL against the kinds it matches: no warnings (a
/// misspelt field would otherwise only show as a runtime error, i.e. a denial).
pub async fn expressions_type_check(client: &Client, docs: &[Value]) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vap());
    for doc in docs.iter().filter(|d| kind_of(d) == "ValidatingAdmissionPolicy") {
        let name = name_of(doc);
        let checked = wait_for(Duration::from_secs(30), &format!("policy {name} to be type-checked"), || async {
            let policy = api.get(name).await.map_err(|e| e.to_string())?;
            let status = policy.data["status"].clone();
            if status["typeChecking"].is_object() { Ok(status) } else { Err(status.to_string()) }
        })
        .await;
        let warnings = &checked["typeChecking"]["expressionWarnings"];
        assert!(warnings.as_array().is_none_or(|w| w.is_empty()), "policy {name}: {warnings:#}");
    }
}

/// A kubeconfig that acts as the operator's ServiceAccount (impersonation by the admin user),
/// with the groups the API server gives a ServiceAccount token.
pub fn operator_kubeconfig(cp: &ControlPlane) -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("read the admin kubeconfig");
        let mut config: Value = serde_yaml::from_str(&text).expect("parse the admin kubeconfig");
        let auth = &mut config["users"][0]["user"];
        auth["as"] = json!(OPERATOR_USER);
        auth["as-groups"] = json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{RELEASE_NAMESPACE}"),
            "system:authenticated"
        ]);
        let path = scratch_dir("guard").join("operator-kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).expect("write the operator's kubeconfig");
        path
    })
    .clone()
}

/// The chart's leader-election Role for a Lease in another namespace, bound to the operator's
/// ServiceAccount (the chart grants it in the Lease's namespace only).
pub async fn grant_lease(client: &Client, namespace: &str, lease: &str) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": format!("ito-leader-election-{lease}"), "namespace": namespace},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update", "patch"], "resourceNames": [lease]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("ito-leader-election-{lease}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("ito-leader-election-{lease}")},
        "subjects": [{"kind": "ServiceAccount", "name": "ito-imaging-tenant-operator", "namespace": RELEASE_NAMESPACE}],
    }))
    .unwrap();
    let pp = PatchParams::apply("imaging-tenant-operator-tests").force();
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(role.metadata.name.as_deref().unwrap(), &pp, &Patch::Apply(&role))
        .await
        .expect("grant the Lease");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(binding.metadata.name.as_deref().unwrap(), &pp, &Patch::Apply(&binding))
        .await
        .expect("bind the Lease role");
}
