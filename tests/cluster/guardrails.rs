//! Invariants 10 and 11 against the real API server: the chart's ValidatingAdmissionPolicies,
//! installed for real and bound cluster-wide for the whole binary (`guard::install`), refuse
//! each attack done as the attacker (impersonation), while the matching legitimate action still
//! works and the operator, running as its own ServiceAccount under these policies and the
//! chart's ClusterRole, makes its tenants Ready.

use std::fmt::Debug;
use std::time::Duration;

use crate::guard::{OPERATOR_USER, RELEASE_NAMESPACE};
use crate::operator::{Operator, create_tenant, wait_ready};
use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::api::metadata::{
    ALLOWED_EGRESS_CIDRS_ANNOTATION, ROLE_ARN_ANNOTATION, TENANT_LABEL, TENANT_NAMESPACES_ANNOTATION, TENANT_UID_LABEL,
};
use imaging_tenant_operator::desired::cluster_network::{self, Flavor};
use ito_test_support::{ControlPlane, Moto, create_namespace, unique_name, wait_for};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Everything the attacks need: the release whose policies are bound, the tenants the operator
/// made under them, and the attackers' names.
struct Guarded {
    tenant_a: String,
    a: String,
    a_ai: String,
    b: String,
    a_uid: String,
    a_role_arn: String,
    b_role_arn: String,
    /// A namespace that belongs to no tenant.
    plain: String,
    /// The name an attacker tries to create a forged tenant namespace under.
    forged: String,
    tenant_admin: String,
    tenant_editor: String,
    namespace_creator: String,
    /// Kept for the whole run; the harness kills the process when the binary exits.
    _operator: Operator,
}

impl Guarded {
    fn operator_client(&self, cp: &ControlPlane) -> Client {
        let namespace_group = format!("system:serviceaccounts:{RELEASE_NAMESPACE}");
        cp.client_as(OPERATOR_USER, &["system:serviceaccounts", &namespace_group, "system:authenticated"])
    }
}

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// The request was refused by an admission policy (403) whose message contains `needle`.
fn refused<T: Debug>(result: Result<T, kube::Error>, needle: &str, attack: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") => {
            assert!(s.message.contains(needle), "{attack}: refused, but the message lacks {needle:?}: {}", s.message)
        }
        other => panic!("{attack}: must be refused by an admission policy, got {other:?}"),
    }
}

fn succeeds<T>(result: Result<T, kube::Error>, action: &str) -> T {
    result.unwrap_or_else(|e| panic!("{action} must still succeed under the admission policies: {e}"))
}

/// Starts the operator (as its ServiceAccount) and lets it create two tenants under the
/// policies. Once for the module.
async fn guarded() -> &'static Guarded {
    static GUARDED: OnceCell<Guarded> = OnceCell::const_new();
    GUARDED.get_or_init(set_up).await
}

async fn set_up() -> Guarded {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let admin = cp.client();
    crate::install_crd(&admin).await;

    let tenant_a = unique_name("ga");
    let tenant_b = unique_name("gb");
    let (a, a_ai, b) = (tenant_a.clone(), format!("{tenant_a}-ai"), tenant_b.clone());
    let plain = create_namespace(&admin, "guard-plain").await;
    let forged = unique_name("guard-forged");

    // The attackers: a user who may create and edit namespaces (tenant admins get admin and
    // editors edit through the operator's RoleBindings).
    let namespace_creator = unique_name("nina");
    let role = unique_name("guard-namespace-creator");
    grant_cluster_role(
        &admin,
        &role,
        &namespace_creator,
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "create", "update", "patch", "delete"]}]),
    )
    .await;

    let operator = Operator::start(cp, moto).await;
    let tenant_admin = format!("{tenant_a}-admin@example.com");
    let tenant_editor = format!("{tenant_a}-editor@example.com");
    create_tenant(
        &admin,
        &operator.tenant(
            &tenant_a,
            json!({
                "namespaces": [{"name": a}, {"name": a_ai}],
                "access": {
                    "admins": [{"kind": "User", "name": tenant_admin}],
                    "editors": [{"kind": "User", "name": tenant_editor}],
                },
                "network": {"allowEgressTo": [{"cidr": "10.20.0.0/16"}, {"cidr": "2001:db8::/32"}]},
            }),
        ),
    )
    .await;
    create_tenant(&admin, &operator.tenant(&tenant_b, json!({}))).await;
    let a_tenant = wait_ready(&admin, &tenant_a).await;
    wait_ready(&admin, &tenant_b).await;

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let annotation = |ns: &Namespace, key: &str| ns.annotations().get(key).cloned().unwrap_or_default();
    let a_ns = namespaces.get(&a).await.unwrap();
    assert_eq!(annotation(&a_ns, ALLOWED_EGRESS_CIDRS_ANNOTATION), "10.20.0.0/16,2001:db8::/32");
    assert_eq!(annotation(&a_ns, TENANT_NAMESPACES_ANNOTATION), format!("{a},{a_ai}"));
    let a_role_arn = annotation(&a_ns, ROLE_ARN_ANNOTATION);
    let b_role_arn = annotation(&namespaces.get(&b).await.unwrap(), ROLE_ARN_ANNOTATION);
    assert!(
        a_role_arn.starts_with("arn:aws:iam::") && b_role_arn.starts_with("arn:aws:iam::") && a_role_arn != b_role_arn
    );

    Guarded {
        a_uid: a_tenant.uid().unwrap(),
        tenant_a,
        a,
        a_ai,
        b,
        a_role_arn,
        b_role_arn,
        plain,
        forged,
        tenant_admin,
        tenant_editor,
        namespace_creator,
        _operator: operator,
    }
}

/// A ClusterRole named `name` with `rules`, bound to the user `user`.
async fn grant_cluster_role(admin: &Client, name: &str, user: &str, rules: Value) {
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &object(json!({"metadata": {"name": name}, "rules": rules})))
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            })),
        )
        .await
        .unwrap();
}

fn network_policy(name: &str, spec: Value) -> NetworkPolicy {
    object(json!({"metadata": {"name": name}, "spec": spec}))
}

fn role_binding(name: &str, role: &str, subjects: Value) -> RoleBinding {
    object(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }))
}

async fn create_and_remove_network_policy(api: &Api<NetworkPolicy>, policy: NetworkPolicy, action: &str) {
    let created = succeeds(api.create(&PostParams::default(), &policy).await, action);
    api.delete(&created.name_any(), &DeleteParams::default()).await.unwrap();
}

/// A policy that narrows: pods and namespaces of the tenant, egress within allowEgressTo.
fn narrowing_policy(g: &Guarded) -> NetworkPolicy {
    network_policy(
        &unique_name("narrow"),
        json!({
            "podSelector": {"matchLabels": {"app": "pacs"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"app": "viewer"}}},
                {"namespaceSelector": {"matchLabels": {TENANT_LABEL: g.tenant_a, "team": "ai"}}},
            ]}],
            "egress": [{"to": [
                {"ipBlock": {"cidr": "10.20.1.0/24"}},
                {"ipBlock": {"cidr": "2001:db8:1::/48"}},
                {"namespaceSelector": {"matchLabels": {TENANT_LABEL: g.tenant_a}}, "podSelector": {}},
            ]}],
        }),
    )
}

#[tokio::test]
async fn tenant_admin_cannot_add_an_allow_all_network_policy() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<NetworkPolicy> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let allow_all = network_policy(
        "allow-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}),
    );
    refused(api.create(&PostParams::default(), &allow_all).await, "has a rule without peers", "allow-all policy");
    create_and_remove_network_policy(&api, narrowing_policy(g), "a narrowing NetworkPolicy").await;
}

#[tokio::test]
async fn tenant_admin_cannot_select_every_namespace() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<NetworkPolicy> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let every_namespace = network_policy(
        "from-everywhere",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    );
    refused(
        api.create(&PostParams::default(), &every_namespace).await,
        "may select only this tenant's namespaces",
        "namespaceSelector {}",
    );
    let widened = network_policy(
        "from-other-tenants",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {
            "matchLabels": {TENANT_LABEL: g.tenant_a},
            "matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}],
        }}]}]}),
    );
    refused(
        api.create(&PostParams::default(), &widened).await,
        "matchExpressions are not allowed",
        "namespaceSelector widened by matchExpressions",
    );
    create_and_remove_network_policy(&api, narrowing_policy(g), "a NetworkPolicy selecting the tenant's namespaces")
        .await;
}

#[tokio::test]
async fn tenant_editor_cannot_open_egress_to_the_internet() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<NetworkPolicy> = Api::namespaced(cp.client_as(&g.tenant_editor, &[]), &g.a_ai);
    let internet = network_policy(
        "to-internet",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
    );
    refused(api.create(&PostParams::default(), &internet).await, "egress ipBlock 0.0.0.0/0 is outside", "0.0.0.0/0");
    let ingress_by_ip = network_policy(
        "from-anywhere",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}]}),
    );
    refused(api.create(&PostParams::default(), &ingress_by_ip).await, "ingress by ipBlock", "ingress ipBlock");
    create_and_remove_network_policy(&api, narrowing_policy(g), "egress within allowEgressTo").await;
}

#[tokio::test]
async fn tenant_editor_cannot_reach_the_instance_metadata_service() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<NetworkPolicy> = Api::namespaced(cp.client_as(&g.tenant_editor, &[]), &g.a);
    let metadata = network_policy(
        "to-imds",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "10.20.0.0/16"}},
            {"ipBlock": {"cidr": "169.254.169.254/32"}},
        ]}]}),
    );
    refused(
        api.create(&PostParams::default(), &metadata).await,
        "egress ipBlock 169.254.169.254/32 is outside what tenant",
        "169.254.169.254/32",
    );
    create_and_remove_network_policy(&api, narrowing_policy(g), "egress within allowEgressTo").await;
}

#[tokio::test]
async fn tenant_admin_cannot_change_or_delete_the_default_deny_policy() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<NetworkPolicy> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let opened = json!({"spec": {"ingress": [{"from": [{"podSelector": {}}]}]}});
    refused(
        api.patch("imaging-default-deny", &PatchParams::default(), &Patch::Merge(&opened)).await,
        "is created and kept by imaging-tenant-operator",
        "edit imaging-default-deny",
    );
    refused(
        api.delete("imaging-default-deny", &DeleteParams::default()).await,
        "only the operator may delete it",
        "delete imaging-default-deny",
    );
    let unlabelled = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    refused(
        api.patch("imaging-default-deny", &PatchParams::default(), &Patch::Merge(&unlabelled)).await,
        "is created and kept by imaging-tenant-operator",
        "remove the managed-by label",
    );
    let mut forged = network_policy("imaging-fake", json!({"podSelector": {}}));
    forged.metadata.labels = Some([(TENANT_UID_LABEL.to_string(), g.a_uid.clone())].into());
    refused(
        api.create(&PostParams::default(), &forged).await,
        "only the operator may create it",
        "create an object with the operator's labels",
    );
    create_and_remove_network_policy(&api, narrowing_policy(g), "the tenant's own NetworkPolicy").await;
}

#[tokio::test]
async fn tenant_admin_cannot_bind_a_role_to_system_authenticated() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<RoleBinding> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let everyone = role_binding(
        "everyone-edits",
        "edit",
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]),
    );
    refused(
        api.create(&PostParams::default(), &everyone).await,
        "grants a role outside tenant",
        "bind edit to system:authenticated",
    );
    let colleagues = role_binding(
        "colleagues",
        "edit",
        json!([
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("bob@{}.example", g.tenant_a)},
            {"kind": "ServiceAccount", "name": "worker", "namespace": g.a_ai},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("system:serviceaccounts:{}", g.a)},
        ]),
    );
    succeeds(
        api.create(&PostParams::default(), &colleagues).await,
        "binding edit to a colleague and own ServiceAccounts",
    );
    api.delete("colleagues", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn tenant_admin_cannot_bind_a_role_to_another_tenants_service_account() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<RoleBinding> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let other = role_binding(
        "other-tenant",
        "edit",
        json!([{"kind": "ServiceAccount", "name": "imaging-workload", "namespace": g.b}]),
    );
    refused(
        api.create(&PostParams::default(), &other).await,
        &format!("ServiceAccount {}/imaging-workload", g.b),
        "bind edit to another tenant's ServiceAccount",
    );
    let as_user = role_binding(
        "other-tenant-user",
        "view",
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("system:serviceaccount:{}:imaging-workload", g.b)}]),
    );
    refused(api.create(&PostParams::default(), &as_user).await, "grants a role outside tenant", "bind by SA username");
    let own = role_binding(
        "own-workload",
        "view",
        json!([{"kind": "ServiceAccount", "name": "imaging-workload", "namespace": g.a}]),
    );
    succeeds(api.create(&PostParams::default(), &own).await, "binding view to the tenant's own ServiceAccount");
    api.delete("own-workload", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn namespace_creator_cannot_forge_a_tenant_namespace() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<Namespace> = Api::all(cp.client_as(&g.namespace_creator, &[]));
    let forged: Namespace = object(json!({"metadata": {"name": g.forged, "labels": {TENANT_LABEL: g.tenant_a}}}));
    refused(
        api.create(&PostParams::default(), &forged).await,
        "only imaging-tenant-operator creates namespaces with a tenant's labels",
        "create a namespace with a tenant's label",
    );
    let plain: Namespace = object(json!({"metadata": {"name": g.forged, "labels": {"team": "research"}}}));
    succeeds(api.create(&PostParams::default(), &plain).await, "creating a namespace without tenant labels");
    let claim = json!({"metadata": {"labels": {TENANT_LABEL: g.tenant_a}}});
    refused(
        api.patch(&g.forged, &PatchParams::default(), &Patch::Merge(&claim)).await,
        "cannot be made a tenant's by labelling it",
        "label an existing namespace as a tenant's",
    );
    api.delete(&g.forged, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn namespace_editor_cannot_remove_a_tenant_label_from_a_tenant_namespace() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<Namespace> = Api::all(cp.client_as(&g.namespace_creator, &[]));
    let unlabel = json!({"metadata": {"labels": {TENANT_LABEL: null}}});
    refused(
        api.patch(&g.a, &PatchParams::default(), &Patch::Merge(&unlabel)).await,
        "refused change of label imaging.tenancy.dev/tenant",
        "remove the tenant label",
    );
    let relax = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    refused(
        api.patch(&g.a, &PatchParams::default(), &Patch::Merge(&relax)).await,
        "label pod-security.kubernetes.io/enforce",
        "relax Pod Security",
    );
    let widen = json!({"metadata": {"annotations": {ALLOWED_EGRESS_CIDRS_ANNOTATION: "0.0.0.0/0"}}});
    refused(
        api.patch(&g.a, &PatchParams::default(), &Patch::Merge(&widen)).await,
        "annotation imaging.tenancy.dev/allowed-egress-cidrs",
        "widen the allowed egress annotation",
    );
    refused(api.delete(&g.a, &DeleteParams::default()).await, "only imaging-tenant-operator deletes it", "delete");
    let own = json!({"metadata": {"labels": {"example.com/cost-center": "radiology"}}});
    succeeds(api.patch(&g.a, &PatchParams::default(), &Patch::Merge(&own)).await, "adding a label of one's own");
}

#[tokio::test]
async fn tenant_admin_cannot_assume_another_tenants_iam_role() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<ServiceAccount> = Api::namespaced(cp.client_as(&g.tenant_admin, &[]), &g.a);
    let with_role = |name: &str, arn: &str| -> ServiceAccount {
        object(json!({"metadata": {"name": name, "annotations": {"eks.amazonaws.com/role-arn": arn}}}))
    };
    refused(
        api.create(&PostParams::default(), &with_role("thief", &g.b_role_arn)).await,
        &format!("may not assume IAM role {}", g.b_role_arn),
        "annotate a ServiceAccount with another tenant's role",
    );
    succeeds(
        api.create(&PostParams::default(), &with_role("uploader", &g.a_role_arn)).await,
        "a ServiceAccount with the tenant's own role",
    );
    api.delete("uploader", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn operator_service_account_cannot_bind_admin_in_kube_system() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let op = g.operator_client(cp);
    let binding = role_binding(
        &unique_name("stolen"),
        "admin",
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]),
    );
    refused(
        Api::<RoleBinding>::namespaced(op.clone(), "kube-system").create(&PostParams::default(), &binding).await,
        "may write rolebindings only in tenant namespaces",
        "the operator's ServiceAccount binds admin in kube-system",
    );
    // What the operator does there is still allowed: a labelled binding to view in a tenant namespace.
    let mut own = role_binding(
        "imaging-probe",
        "view",
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oidc:probe"}]),
    );
    own.metadata.labels = Some([(TENANT_UID_LABEL.to_string(), g.a_uid.clone())].into());
    succeeds(
        Api::<RoleBinding>::namespaced(op, &g.a)
            .create(&PostParams { dry_run: true, ..Default::default() }, &own)
            .await,
        "the operator binding view in its tenant's namespace",
    );
}

#[tokio::test]
async fn operator_service_account_cannot_bind_cluster_admin_in_a_tenant_namespace() {
    let cp = ControlPlane::shared().await;
    let admin = cp.client();
    let g = guarded().await;
    let api = Api::<RoleBinding>::namespaced(g.operator_client(cp), &g.a);
    let mut binding = role_binding(
        "imaging-stolen",
        "cluster-admin",
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]),
    );
    binding.metadata.labels = Some([(TENANT_UID_LABEL.to_string(), g.a_uid.clone())].into());
    // First fence: the chart's ClusterRole lets it bind admin, edit and view only.
    match api.create(&PostParams::default(), &binding).await {
        Err(kube::Error::Api(s)) if s.code == 403 && !s.message.contains("ValidatingAdmissionPolicy") => {}
        other => panic!("RBAC must refuse the operator binding cluster-admin, got {other:?}"),
    }
    // Second fence: even with `bind` on cluster-admin (a widened ClusterRole), the policy refuses.
    let widened = unique_name("guard-widened");
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &object(json!({"metadata": {"name": widened}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]}]})))
        .await
        .unwrap();
    let (sa_namespace, sa_name) = (RELEASE_NAMESPACE.to_string(), OPERATOR_USER.rsplit(':').next().unwrap().to_owned());
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": widened},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": widened},
                "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
            })),
        )
        .await
        .unwrap();
    let result = wait_for(Duration::from_secs(30), "RBAC to let the operator bind cluster-admin", || {
        let api = api.clone();
        let binding = binding.clone();
        async move {
            match api.create(&PostParams::default(), &binding).await {
                Err(kube::Error::Api(s)) if s.code == 403 && !s.message.contains("ValidatingAdmissionPolicy") => {
                    Err(s.message)
                }
                other => Ok(other),
            }
        }
    })
    .await;
    Api::<ClusterRoleBinding>::all(admin.clone()).delete(&widened, &DeleteParams::default()).await.unwrap();
    Api::<ClusterRole>::all(admin).delete(&widened, &DeleteParams::default()).await.unwrap();
    refused(result, "may bind only the ClusterRoles admin, edit and view", "bind cluster-admin in a tenant namespace");
}

#[tokio::test]
async fn operator_service_account_cannot_label_a_foreign_namespace() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let api: Api<Namespace> = Api::all(g.operator_client(cp));
    let takeover = json!({"metadata": {"labels": {
        TENANT_UID_LABEL: g.a_uid,
        TENANT_LABEL: g.tenant_a,
        "app.kubernetes.io/managed-by": "imaging-tenant-operator",
    }}});
    refused(
        api.patch(&g.plain, &PatchParams::default(), &Patch::Merge(&takeover)).await,
        "is not a tenant's",
        "the operator's ServiceAccount labels a foreign namespace",
    );
    let other_uid = json!({"metadata": {"labels": {TENANT_UID_LABEL: "00000000-0000-0000-0000-000000000000"}}});
    refused(
        api.patch(&g.b, &PatchParams::default(), &Patch::Merge(&other_uid)).await,
        "would get another tenant UID",
        "the operator's ServiceAccount moves a namespace to another tenant",
    );
    // Its own namespaces it still applies (dry run: the running operator owns the real ones).
    let own = json!({"metadata": {"labels": {"pod-security.kubernetes.io/warn": "restricted"}}});
    succeeds(
        api.patch(&g.a, &PatchParams { dry_run: true, ..Default::default() }, &Patch::Merge(&own)).await,
        "the operator patching its tenant's namespace",
    );
}

/// The tenant's Admin-tier ClusterNetworkPolicy: kept by the operator (the legitimate action),
/// untouchable by a network administrator who may otherwise edit such policies, and never a
/// tool for a stolen operator token: it may write only Pass and Deny rules.
#[tokio::test]
async fn nobody_can_loosen_the_cluster_network_policy_and_the_operator_token_cannot_accept_traffic() {
    let cp = ControlPlane::shared().await;
    let g = guarded().await;
    let admin = cp.client();
    let tenant: ImagingTenant = Api::all(admin.clone()).get(&g.tenant_a).await.unwrap();
    let name = cluster_network::name(&tenant);
    let cnp = Flavor::ClusterNetworkPolicy.api_resource();
    let live = Api::<DynamicObject>::all_with(admin.clone(), &cnp).get(&name).await.expect("the operator keeps it");
    assert_eq!(live.data["spec"]["tier"], "Admin");
    assert_eq!(live.labels().get(TENANT_UID_LABEL), Some(&g.a_uid));
    let guarded_status = tenant.status.unwrap();
    assert!(guarded_status.isolation_layers.contains(&"ClusterNetworkPolicy".to_string()));

    // A network administrator with full rights on ClusterNetworkPolicies.
    let netadmin = unique_name("netadmin");
    grant_cluster_role(
        &admin,
        &netadmin,
        &netadmin,
        json!([{"apiGroups": ["policy.networking.k8s.io"], "resources": ["clusternetworkpolicies"], "verbs": ["*"]}]),
    )
    .await;
    let as_netadmin: Api<DynamicObject> = Api::all_with(cp.client_as(&netadmin, &[]), &cnp);
    refused(
        as_netadmin.delete(&name, &DeleteParams::default()).await,
        "is created and kept by imaging-tenant-operator",
        "a network administrator deletes a tenant's ClusterNetworkPolicy",
    );
    let loosen = json!({"spec": {"ingress": [{"name": "open", "action": "Accept", "from": [{"namespaces": {}}]}]}});
    refused(
        as_netadmin.patch(&name, &PatchParams::default(), &Patch::Merge(&loosen)).await,
        "is created and kept by imaging-tenant-operator",
        "a network administrator loosens a tenant's ClusterNetworkPolicy",
    );

    // The operator's token writes an Accept rule, or a policy of another name: refused.
    let as_operator: Api<DynamicObject> = Api::all_with(g.operator_client(cp), &cnp);
    let own_namespaces = json!({"matchLabels": {TENANT_UID_LABEL: g.a_uid}});
    let forged = |name: &str, action: &str, subject: &Value| -> DynamicObject {
        object(json!({
            "apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name, "labels": {TENANT_UID_LABEL: g.a_uid, TENANT_LABEL: g.tenant_a, "app.kubernetes.io/managed-by": "imaging-tenant-operator"}},
            "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": subject},
                     "ingress": [{"name": "all", "action": action, "from": [{"namespaces": {}}]}]},
        }))
    };
    refused(
        as_operator
            .create(
                &PostParams::default(),
                &forged(&format!("imaging-tenant-{}", unique_name("x")), "Accept", &own_namespaces),
            )
            .await,
        "whose rules Pass or Deny",
        "the operator's ServiceAccount writes an Accept rule",
    );
    refused(
        as_operator.create(&PostParams::default(), &forged(&unique_name("open"), "Deny", &own_namespaces)).await,
        "named imaging-tenant-<tenant>",
        "the operator's ServiceAccount writes a policy outside its names",
    );
    refused(
        as_operator
            .create(
                &PostParams::default(),
                &forged(&format!("imaging-tenant-{}", unique_name("z")), "Deny", &json!({})),
            )
            .await,
        "whose subject is the namespaces labelled",
        "the operator's ServiceAccount cuts off every namespace of the cluster",
    );
    // What it does for real, it still may (dry run).
    succeeds(
        as_operator
            .create(
                &PostParams { dry_run: true, ..Default::default() },
                &forged(&format!("imaging-tenant-{}", unique_name("y")), "Deny", &own_namespaces),
            )
            .await,
        "the operator writing a Deny-only policy",
    );
}
