//! The chart and the plain manifests against a real API server: server-side dry-run of what
//! they render, `helm install`, the upgrade commands of README.md, and the installed
//! ServiceAccount's permissions, checked by impersonating it: it can do what the operator does
//! and nothing else. So are the ClusterRoles the chart gives people.

use ito_test_support::chart::*;
use ito_test_support::{ControlPlane, api_error_code, create_namespace, unique_name};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

const CRD_NAME: &str = "imagingtenants.imaging.tenancy.dev";
const FIELD_MANAGER: &str = "imaging-tenant-operator";

fn with_kubeconfig(mut cmd: std::process::Command, cp: &ControlPlane) -> std::process::Command {
    cmd.arg("--kubeconfig").arg(cp.kubeconfig_path());
    cmd
}

/// Applies the chart's CRD for real (server-side, as the docs say) and waits until it is served.
/// Once for the binary: the first test applies it, concurrent ones wait for that. The other tests
/// of the binary install the identical `crds/` copy (`crate::install_crd`); both are server-side
/// applies that take ownership, so neither order nor overlap matters.
async fn install_chart_crd(cp: &ControlPlane) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let mut cmd = kubectl();
            cmd.args(["apply", "--server-side", "--force-conflicts", "-f", &format!("{CHART}/crds/")]);
            run(with_kubeconfig(cmd, cp), None);
            ito_test_support::wait_established(&cp.client(), CRD_NAME).await;
        })
        .await;
}

/// `kubectl apply --server-side --dry-run=server` of `manifests`; returns what kubectl printed.
fn dry_run_apply(cp: &ControlPlane, manifests: &str) -> String {
    let mut cmd = kubectl();
    cmd.args(["apply", "--server-side", "--dry-run=server", "--field-manager", "chart-tests", "-f", "-"]);
    run(with_kubeconfig(cmd, cp), Some(manifests))
}

fn assert_all_applied(output: &str, docs: &[Value]) {
    for doc in docs {
        let (kind, name) = (kind_of(doc).to_lowercase(), name_of(doc));
        assert!(
            output
                .lines()
                .any(|l| l.starts_with(&kind) && l.contains(&format!("/{name} ")) && l.ends_with("(server dry run)")),
            "{kind} {name} missing from the dry-run output:\n{output}"
        );
    }
}

#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let ns = create_namespace(&cp.client(), "chart-dry-run").await;

    let minimal = helm_template(&["ito", CHART, "--namespace", &ns, "--values", MINIMAL_VALUES]);
    let output = dry_run_apply(cp, &minimal);
    assert_all_applied(&output, &documents(&minimal));

    // Every non-default value too; the ServiceMonitor's CRD is not in this cluster.
    let full = helm_template(&[
        "ito-full",
        CHART,
        "--namespace",
        &ns,
        "--values",
        FULL_VALUES,
        "--set",
        &format!("metrics.serviceMonitor.enabled=false,leaderElection.namespace={ns}"),
    ]);
    let output = dry_run_apply(cp, &full);
    assert_all_applied(&output, &documents(&full));
}

#[tokio::test]
async fn kustomize_output_passes_server_side_dry_run() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let client = cp.client();
    // The namespace must exist for the namespaced objects' dry run.
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "imaging-tenant-operator"}})).unwrap();
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(e) if api_error_code(&e) == Some(409) => {}
        Err(e) => panic!("create namespace imaging-tenant-operator: {e}"),
    }
    let mut cmd = kubectl();
    cmd.args(["kustomize", "deploy/"]);
    let manifests = run(cmd, None);
    let output = dry_run_apply(cp, &manifests);
    assert_all_applied(&output, &documents(&manifests));
}

/// Kubernetes names of one `helm install`.
struct Release {
    name: String,
    namespace: String,
    fullname: String,
}

impl Release {
    fn service_account_user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.fullname)
    }

    /// A client acting as the operator's ServiceAccount, with the groups the API server gives it.
    fn operator_client(&self, cp: &ControlPlane) -> Client {
        let namespace_group = format!("system:serviceaccounts:{}", self.namespace);
        cp.client_as(
            &self.service_account_user(),
            &["system:serviceaccounts", &namespace_group, "system:authenticated"],
        )
    }
}

fn helm_install(cp: &ControlPlane) -> Release {
    helm_install_with(cp, "rbac.userRoles=false")
}

/// `helm install` of a new release with the minimal values and `set`.
fn helm_install_with(cp: &ControlPlane, set: &str) -> Release {
    helm_install_by("helm", cp, set)
}

/// The same with one of [`HELMS`].
fn helm_install_by(binary: &str, cp: &ControlPlane, set: &str) -> Release {
    let name = unique_name("ito");
    let namespace = unique_name("chart-install");
    let mut cmd = helm_named(binary);
    // Without the admission policies: they are cluster-wide, and would refuse the other tests of
    // this binary, which change operator-owned objects as the admin to simulate drift (and this
    // module's own RBAC checks, done outside tenant namespaces). tests/cluster/guardrails.rs
    // installs them narrowed to its own namespaces. The user ClusterRoles have cluster-wide
    // names: only the test of them creates them (rbac.userRoles), as one shard would.
    cmd.args(["install", &name, CHART, "--namespace", &namespace, "--create-namespace", "--values", MINIMAL_VALUES])
        .args(["--set", "admission.enabled=false", "--set", set]);
    let out = run(with_kubeconfig(cmd, cp), None);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("Helm does not upgrade the CRD"), "NOTES.txt is shown: {out}");
    let fullname = format!("{name}-imaging-tenant-operator");
    Release { name, namespace, fullname }
}

fn helm_uninstall(cp: &ControlPlane, release: &Release) {
    helm_uninstall_by("helm", cp, release)
}

fn helm_uninstall_by(binary: &str, cp: &ControlPlane, release: &Release) {
    let mut cmd = helm_named(binary);
    cmd.args(["uninstall", &release.name, "--namespace", &release.namespace]);
    run(with_kubeconfig(cmd, cp), None);
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(e) if api_error_code(&e) == Some(403) => {}
        other => panic!("the operator's ServiceAccount must get 403 to {what}, got {other:?}"),
    }
}

fn allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("the operator's ServiceAccount must be allowed to {what}: {e}"))
}

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[tokio::test]
async fn helm_install_creates_the_operator_and_keeps_crd_and_tenants_on_uninstall() {
    installs_the_operator_and_keeps_crd_and_tenants_on_uninstall("helm").await;
}

#[tokio::test]
async fn helm4_install_upgrade_creates_the_operator_and_keeps_crd_and_tenants_on_uninstall() {
    installs_the_operator_and_keeps_crd_and_tenants_on_uninstall("helm4").await;
}

/// Install, upgrade (with `--reuse-values`, to one replica) and uninstall with one of [`HELMS`].
async fn installs_the_operator_and_keeps_crd_and_tenants_on_uninstall(binary: &str) {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let client = cp.client();
    let release = helm_install_by(binary, cp, "rbac.userRoles=false");
    let ns = &release.namespace;
    let name = &release.fullname;

    let deployment: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployment.get(name).await.expect("the Deployment exists");
    assert_eq!(deployment.spec.replicas, Some(2));
    Api::<ServiceAccount>::namespaced(client.clone(), ns).get(name).await.expect("the ServiceAccount exists");
    Api::<ConfigMap>::namespaced(client.clone(), ns).get(name).await.expect("the ConfigMap exists");
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .get(&format!("{name}-metrics"))
        .await
        .expect("the metrics Service exists");
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("the PodDisruptionBudget exists");
    Api::<NetworkPolicy>::namespaced(client.clone(), ns).get(name).await.expect("the NetworkPolicy exists");
    Api::<Role>::namespaced(client.clone(), ns)
        .get(&format!("{name}-leader-election"))
        .await
        .expect("the Lease Role exists");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get(&format!("{name}-leader-election"))
        .await
        .expect("the Lease RoleBinding exists");
    Api::<ClusterRole>::all(client.clone()).get(name).await.expect("the ClusterRole exists");
    Api::<ClusterRoleBinding>::all(client.clone()).get(name).await.expect("the ClusterRoleBinding exists");

    let mut upgrade = helm_named(binary);
    upgrade.args(["upgrade", &release.name, CHART, "--namespace", ns, "--reuse-values", "--set", "replicaCount=1"]);
    let out = run(with_kubeconfig(upgrade, cp), None);
    assert!(out.contains("STATUS: deployed") && out.contains("REVISION: 2"), "{binary} upgrade: {out}");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let upgraded = deployments.get(name).await.expect("the upgraded Deployment");
    assert_eq!(upgraded.spec.replicas, Some(1), "{binary} upgrade applied the new value");
    let pdb = Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), ns);
    assert!(pdb.get_opt(name).await.unwrap().is_none(), "with one replica the upgrade removed the budget");

    // A tenant exists when the release goes away: Helm must leave it and its CRD alone.
    let tenants = Api::<DynamicObject>::all_with(client.clone(), &tenant_resource());
    let tenant = unique_name("kept");
    tenants
        .create(&PostParams::default(), &object(json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "metadata": {"name": tenant}, "spec": {}})))
        .await
        .expect("create a tenant");
    helm_uninstall_by(binary, cp, &release);
    assert!(
        Api::<ClusterRole>::all(client.clone()).get_opt(name).await.unwrap().is_none(),
        "helm uninstall removes the release's objects"
    );
    Api::<CustomResourceDefinition>::all(client.clone()).get(CRD_NAME).await.expect("helm uninstall keeps the CRD");
    tenants.get(&tenant).await.expect("helm uninstall keeps the tenants");
    tenants.delete(&tenant, &DeleteParams::default()).await.unwrap();
}

fn tenant_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("imaging.tenancy.dev", "v1alpha1", "ImagingTenant"),
        "imagingtenants",
    )
}

/// Everything the operator does, done as its ServiceAccount: it all works.
#[tokio::test]
async fn operator_service_account_can_do_what_the_operator_does() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let release = helm_install(cp);
    let admin = cp.client();
    let op = release.operator_client(cp);

    // Tenants: list, watch (through list), get, finalizer and status patches, update.
    let tenant = unique_name("rbac");
    Api::<DynamicObject>::all_with(admin.clone(), &tenant_resource())
        .create(&PostParams::default(), &object(json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "metadata": {"name": tenant}, "spec": {}})))
        .await
        .expect("create a tenant");
    let tenants = Api::<DynamicObject>::all_with(op.clone(), &tenant_resource());
    allowed(tenants.list(&ListParams::default()).await, "list ImagingTenants");
    allowed(tenants.get(&tenant).await, "get an ImagingTenant");
    allowed(
        tenants
            .patch(
                &tenant,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["imaging.tenancy.dev/cleanup"]}})),
            )
            .await,
        "add a finalizer",
    );
    let status = json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "status": {"observedGeneration": 1, "namespaces": [tenant]}});
    allowed(tenants.patch_status(&tenant, &apply_params(), &Patch::Apply(status)).await, "apply a tenant's status");
    let mut stored = allowed(tenants.get(&tenant).await, "get an ImagingTenant");
    stored.metadata.finalizers = None;
    allowed(
        tenants.replace(&tenant, &PostParams::default(), &stored).await,
        "update an ImagingTenant (remove the finalizer)",
    );
    forbidden(tenants.delete(&tenant, &DeleteParams::default()).await, "delete an ImagingTenant");

    // A tenant namespace: created, applied, listed.
    let ns_name = unique_name("tenant-rbac");
    let namespaces = Api::<Namespace>::all(op.clone());
    allowed(
        namespaces
            .create(
                &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
                &object(json!({"metadata": {"name": ns_name}})),
            )
            .await,
        "create a namespace",
    );
    allowed(
        namespaces
            .patch(&ns_name, &apply_params(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})))
            .await,
        "apply a namespace",
    );
    allowed(
        namespaces.list(&ListParams::default().labels("app.kubernetes.io/managed-by=imaging-tenant-operator")).await,
        "list namespaces",
    );

    // Its children, created by server-side apply (patch + create).
    let children: [(ApiResource, Value); 4] = [
        (
            ApiResource::erase::<NetworkPolicy>(&()),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        ),
        (
            ApiResource::erase::<ServiceAccount>(&()),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "imaging-workload"}}),
        ),
        (
            ApiResource::erase::<ResourceQuota>(&()),
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "tenant-quota"}, "spec": {"hard": {"requests.cpu": "8"}}}),
        ),
        (
            ApiResource::erase::<LimitRange>(&()),
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "tenant-limits"}, "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
        ),
    ];
    for (resource, manifest) in &children {
        let api = Api::<DynamicObject>::namespaced_with(op.clone(), &ns_name, resource);
        let name = manifest["metadata"]["name"].as_str().unwrap();
        allowed(
            api.patch(name, &apply_params(), &Patch::Apply(manifest)).await,
            &format!("apply a {} in a tenant namespace", resource.kind),
        );
        allowed(api.list(&ListParams::default()).await, &format!("list {}", resource.plural));
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(op.clone(), &ns_name);
    allowed(claims.list(&ListParams::default()).await, "list PersistentVolumeClaims (before deleting a namespace)");
    forbidden(claims.delete("data", &DeleteParams::default()).await, "delete a PersistentVolumeClaim");
    let role_bindings = Api::<RoleBinding>::namespaced(op.clone(), &ns_name);
    for role in ["admin", "edit", "view"] {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("tenant-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oidc:group-a"}],
        });
        allowed(
            role_bindings.patch(&format!("tenant-{role}"), &apply_params(), &Patch::Apply(binding)).await,
            &format!("bind a group to ClusterRole {role} in a tenant namespace"),
        );
    }

    // Events about the tenant.
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": unique_name("tenant-event")},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "imaging-tenant-operator", "reportingInstance": "test",
        "action": "Reconcile", "reason": "Created", "type": "Normal", "note": "created",
        "regarding": {"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "name": tenant},
    });
    allowed(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(op.clone(), "default")
            .create(&PostParams::default(), &object(event))
            .await,
        "create an events.k8s.io Event",
    );
    let core_event = json!({
        "metadata": {"name": unique_name("tenant-core-event")},
        "involvedObject": {"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "name": tenant},
        "reason": "Created", "message": "created", "type": "Normal",
    });
    allowed(
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(op.clone(), "default")
            .create(&PostParams::default(), &object(core_event))
            .await,
        "create a core Event",
    );

    // Its Lease, in its own namespace.
    let leases = Api::<Lease>::namespaced(op.clone(), &release.namespace);
    let lease = json!({"metadata": {"name": release.fullname}, "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}});
    allowed(leases.create(&PostParams::default(), &object(lease)).await, "create its Lease");
    allowed(leases.get(&release.fullname).await, "get its Lease");
    allowed(
        leases
            .patch(
                &release.fullname,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"holderIdentity": "pod-b"}})),
            )
            .await,
        "patch its Lease",
    );

    // Orphans and tenants with deletionPolicy Delete.
    allowed(
        Api::<NetworkPolicy>::namespaced(op.clone(), &ns_name).delete("default-deny", &DeleteParams::default()).await,
        "delete a NetworkPolicy",
    );
    allowed(role_bindings.delete("tenant-view", &DeleteParams::default()).await, "delete a RoleBinding");
    allowed(namespaces.delete(&ns_name, &DeleteParams::default()).await, "delete a tenant namespace");

    Api::<DynamicObject>::all_with(admin, &tenant_resource()).delete(&tenant, &DeleteParams::default()).await.unwrap();
    helm_uninstall(cp, &release);
}

/// What the operator never does, tried as its ServiceAccount: 403 every time.
#[tokio::test]
async fn operator_service_account_is_denied_everything_else() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let release = helm_install(cp);
    let admin = cp.client();
    let op = release.operator_client(cp);
    let ns = create_namespace(&admin, "tenant-denied").await;

    let secrets = Api::<Secret>::namespaced(op.clone(), &ns);
    forbidden(secrets.list(&ListParams::default()).await, "list Secrets in a tenant namespace");
    forbidden(secrets.get("anything").await, "get a Secret");
    forbidden(Api::<Secret>::all(op.clone()).list(&ListParams::default()).await, "list Secrets cluster-wide");
    forbidden(
        secrets
            .create(&PostParams::default(), &object(json!({"metadata": {"name": "stolen"}, "stringData": {"a": "b"}})))
            .await,
        "create a Secret",
    );
    forbidden(Api::<Pod>::namespaced(op.clone(), &ns).list(&ListParams::default()).await, "list Pods");
    let exec = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/any/exec?command=sh&stdin=true&stdout=true"))
        .body(Vec::new())
        .unwrap();
    forbidden(op.request_text(exec).await, "exec into a Pod (pods/exec)");
    let configmaps = Api::<ConfigMap>::namespaced(op.clone(), &ns);
    forbidden(configmaps.list(&ListParams::default()).await, "list ConfigMaps");
    forbidden(
        configmaps.create(&PostParams::default(), &object(json!({"metadata": {"name": "cm"}}))).await,
        "create a ConfigMap",
    );
    let deployment = json!({
        "metadata": {"name": "miner"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    forbidden(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(op.clone(), &ns)
            .create(&PostParams::default(), &object(deployment))
            .await,
        "create a Deployment",
    );
    let cluster_binding = json!({
        "metadata": {"name": unique_name("steal")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": release.fullname, "namespace": release.namespace}],
    });
    forbidden(
        Api::<ClusterRoleBinding>::all(op.clone()).create(&PostParams::default(), &object(cluster_binding)).await,
        "create a ClusterRoleBinding",
    );
    let admin_binding = json!({
        "metadata": {"name": "cluster-admin-here"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "oidc:group-a"}],
    });
    forbidden(
        Api::<RoleBinding>::namespaced(op.clone(), &ns).create(&PostParams::default(), &object(admin_binding)).await,
        "bind ClusterRole cluster-admin in a namespace",
    );
    let role = json!({"metadata": {"name": "wider"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
    forbidden(
        Api::<Role>::namespaced(op.clone(), &ns).create(&PostParams::default(), &object(role)).await,
        "create a Role",
    );
    forbidden(
        Api::<ClusterRole>::all(op.clone())
            .patch("admin", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await,
        "change ClusterRole admin",
    );
    let lease = json!({"metadata": {"name": "someone-elses"}, "spec": {"holderIdentity": "me"}});
    forbidden(
        Api::<Lease>::namespaced(op.clone(), "kube-system").create(&PostParams::default(), &object(lease)).await,
        "create a Lease outside its namespace",
    );
    forbidden(Api::<Lease>::namespaced(op.clone(), &release.namespace).get("another-lease").await, "get another Lease");
    forbidden(
        Api::<CustomResourceDefinition>::all(op.clone()).delete(CRD_NAME, &DeleteParams::default()).await,
        "delete the CRD",
    );
    forbidden(
        Api::<Namespace>::all(op.clone())
            .replace(&ns, &PostParams::default(), &Api::<Namespace>::all(admin.clone()).get(&ns).await.unwrap())
            .await,
        "update (replace) a namespace",
    );

    helm_uninstall(cp, &release);
}

/// Access review of `verb` on `resource` for the ServiceAccount.
async fn can(
    admin: &Client,
    release: &Release,
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let namespace_group = format!("system:serviceaccounts:{}", release.namespace);
    let review: SubjectAccessReview = object(json!({
        "spec": {
            "user": release.service_account_user(),
            "groups": ["system:serviceaccounts", namespace_group, "system:authenticated"],
            "resourceAttributes": {"group": group, "resource": resource, "subresource": subresource, "verb": verb, "namespace": namespace, "name": name},
        },
    }));
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create a SubjectAccessReview");
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

/// Every verb on every kind the operator touches, and on kinds it must not, asked of the API
/// server's authorizer: allowed exactly where the operator needs it.
#[tokio::test]
async fn operator_service_account_has_exactly_the_needed_verbs() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let release = helm_install(cp);
    let admin = cp.client();
    let verbs = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "bind",
        "escalate",
        "impersonate",
    ];
    let managed = ["get", "list", "watch", "create", "patch", "delete"];
    let tenant_verbs = ["get", "list", "watch", "patch", "update"];
    let events = ["create", "patch"];
    // (group, resource, namespaced, the verbs it needs)
    let cases: &[(&str, &str, bool, &[&str])] = &[
        ("imaging.tenancy.dev", "imagingtenants", false, &tenant_verbs),
        ("imaging.tenancy.dev", "imagingtenants/status", false, &tenant_verbs),
        ("imaging.tenancy.dev", "imagingtenants/finalizers", false, &tenant_verbs),
        ("", "namespaces", false, &managed),
        ("", "serviceaccounts", true, &managed),
        ("", "resourcequotas", true, &managed),
        ("", "limitranges", true, &managed),
        ("networking.k8s.io", "networkpolicies", true, &managed),
        ("rbac.authorization.k8s.io", "rolebindings", true, &managed),
        ("events.k8s.io", "events", true, &events),
        ("", "events", true, &events),
        ("", "secrets", true, &[]),
        ("", "configmaps", true, &[]),
        ("", "pods", true, &[]),
        ("", "pods/exec", true, &[]),
        ("", "pods/log", true, &[]),
        ("", "serviceaccounts/token", true, &[]),
        ("", "nodes", false, &[]),
        // Only counted, before a namespace dropped from a Delete tenant's spec is deleted.
        ("", "persistentvolumeclaims", true, &["list"]),
        ("apps", "deployments", true, &[]),
        ("batch", "jobs", true, &[]),
        ("rbac.authorization.k8s.io", "roles", true, &[]),
        ("rbac.authorization.k8s.io", "clusterrolebindings", false, &[]),
        ("apiextensions.k8s.io", "customresourcedefinitions", false, &[]),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", false, &[]),
        ("certificates.k8s.io", "certificatesigningrequests", false, &[]),
        ("coordination.k8s.io", "leases", true, &[]),
        // Guarded and evidence read the admission guards; the tenants' policy reports are written.
        ("admissionregistration.k8s.io", "validatingadmissionpolicies", false, &["get", "list", "watch"]),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", false, &["get", "list", "watch"]),
        ("openreports.io", "clusterreports", false, &["get", "create", "patch"]),
        ("wgpolicyk8s.io", "clusterpolicyreports", false, &["get", "create", "patch"]),
    ];
    let tenant_ns = "some-tenant";
    let mut wrong = Vec::new();
    for (group, resource, namespaced, needed) in cases {
        let namespace = namespaced.then_some(tenant_ns);
        for verb in verbs {
            let expected = needed.contains(&verb);
            if can(&admin, &release, group, resource, verb, namespace, None).await != expected {
                wrong.push(format!("{verb} {group}/{resource}: expected allowed={expected}"));
            }
        }
    }
    // bind: only admin, edit and view; never escalate, never other ClusterRoles.
    for role in ["admin", "edit", "view", "cluster-admin", "system:node", "system:controller:namespace-controller"] {
        let expected = ["admin", "edit", "view"].contains(&role);
        for verb in verbs {
            let allowed =
                can(&admin, &release, "rbac.authorization.k8s.io", "clusterroles", verb, None, Some(role)).await;
            if allowed != (expected && verb == "bind") {
                wrong.push(format!("{verb} clusterroles/{role}: expected allowed={}", expected && verb == "bind"));
            }
        }
    }
    // Its own Lease only: create anywhere in its namespace, the rest by name.
    let lease_ns = Some(release.namespace.as_str());
    for (verb, name, expected) in [
        ("create", None, true),
        ("get", Some(release.fullname.as_str()), true),
        ("update", Some(release.fullname.as_str()), true),
        ("patch", Some(release.fullname.as_str()), true),
        ("delete", Some(release.fullname.as_str()), false),
        ("get", Some("kube-controller-manager"), false),
        ("list", None, false),
        ("watch", None, false),
    ] {
        if can(&admin, &release, "coordination.k8s.io", "leases", verb, lease_ns, name).await != expected {
            wrong.push(format!("{verb} leases/{name:?} in its namespace: expected allowed={expected}"));
        }
    }
    assert!(wrong.is_empty(), "the operator's ServiceAccount has the wrong permissions:\n{}", wrong.join("\n"));
    helm_uninstall(cp, &release);
}

/// The tests that change the shared CRD's metadata or spec take turns.
static CRD_WRITERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The commands of README.md's "## Upgrade" block, with this test's release name and namespace.
fn documented_upgrade_commands(release: &Release) -> Vec<Vec<String>> {
    let readme = read("README.md");
    let section = readme.split_once("\n## Upgrade\n").expect("an `## Upgrade` section in README.md").1;
    let block = section.split_once("```sh\n").expect("a sh block in ## Upgrade").1.split_once("```").unwrap().0;
    let commands: Vec<Vec<String>> = block
        .replace("\\\n", " ")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut out = Vec::new();
            for (i, word) in words.iter().enumerate() {
                let previous = if i > 0 { words[i - 1] } else { "" };
                out.push(if previous == "--namespace" {
                    release.namespace.clone()
                } else if words[0] == "helm" && i == 2 {
                    release.name.clone()
                } else {
                    (*word).to_owned()
                });
            }
            out
        })
        .collect();
    assert_eq!(commands.len(), 2, "the CRD, then the release: {commands:?}");
    assert_eq!(commands[0][..3], ["kubectl", "apply", "--server-side"], "{:?}", commands[0]);
    assert!(commands[0].contains(&"--force-conflicts".to_owned()), "{:?}", commands[0]);
    assert_eq!(commands[1][..2], ["helm", "upgrade"], "{:?}", commands[1]);
    commands
}

/// README.md's upgrade, word for word, on an installed release whose CRD an older chart (Helm,
/// with client-side writes) left behind: the CRD is updated by server-side apply despite Helm
/// owning its fields, and `helm upgrade` then succeeds.
#[tokio::test]
async fn documented_upgrade_applies_the_new_crd_and_upgrades_the_release() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let _writing = CRD_WRITERS.lock().await;
    let client = cp.client();
    let release = helm_install(cp);
    let commands = documented_upgrade_commands(&release);

    // The CRD as an older release left it: without the Message column, written by Helm.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let mut older = crds.get(CRD_NAME).await.unwrap();
    older.metadata.managed_fields = None;
    let columns = older.spec.versions[0].additional_printer_columns.as_mut().unwrap();
    columns.retain(|c| c.name != "Message");
    let params = PostParams { field_manager: Some("helm".into()), ..Default::default() };
    crds.replace(CRD_NAME, &params, &older).await.expect("write the older CRD as Helm");

    // Without --force-conflicts the apply stops at Helm's fields: why the README says it.
    let mut plain = kubectl();
    plain.args(commands[0].iter().skip(1).filter(|w| *w != "--force-conflicts"));
    let out = output(with_kubeconfig(plain, cp), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("conflict"),
        "expected a conflict without --force-conflicts: {stderr}"
    );

    for command in &commands {
        let mut cmd = if command[0] == "kubectl" { kubectl() } else { helm() };
        cmd.args(&command[1..]);
        let out = run(with_kubeconfig(cmd, cp), None);
        if command[0] == "helm" {
            assert!(out.contains("STATUS: deployed") && out.contains("REVISION: 2"), "{out}");
        }
    }
    let crd = crds.get(CRD_NAME).await.unwrap();
    let names: Vec<&str> =
        crd.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"Message"), "the new CRD is in place: {names:?}");
    ito_test_support::wait_established(&client, CRD_NAME).await;
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &release.namespace)
        .get(&release.fullname)
        .await
        .expect("the upgraded Deployment");
    assert_eq!(deployment.spec.replicas, Some(2), "--reuse-values kept the values");
    helm_uninstall(cp, &release);
}

/// imagingtenant-viewer reads tenants and imagingtenant-editor manages them, asked of the API
/// server as a user bound to each; neither reaches anything else, and neither is aggregated into
/// the built-in roles that tenant admins hold.
#[tokio::test]
async fn user_cluster_roles_give_viewers_and_editors_exactly_their_rights() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let admin = cp.client();
    let release = helm_install_with(cp, "rbac.userRoles=true");
    let suffix = unique_name("people");
    let mut bindings = Vec::new();
    for role in ["imagingtenant-viewer", "imagingtenant-editor"] {
        let name = format!("{role}-{suffix}");
        let binding = json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("{role}@{suffix}")}],
        });
        Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &object(binding)).await.unwrap();
        bindings.push(name);
    }
    let as_user = |role: &str| cp.client_as(&format!("{role}@{suffix}"), &["system:authenticated"]);
    let tenant = unique_name("people");
    let manifest = json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "metadata": {"name": tenant}, "spec": {}});
    let status = json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "status": {"observedGeneration": 1}});

    let editor = Api::<DynamicObject>::all_with(as_user("imagingtenant-editor"), &tenant_resource());
    editor_allowed(editor.create(&PostParams::default(), &object(manifest.clone())).await, "create a tenant");
    editor_allowed(editor.list(&ListParams::default()).await, "list tenants");
    editor_allowed(
        editor
            .patch(&tenant, &PatchParams::default(), &Patch::Merge(json!({"spec": {"displayName": "Group A"}})))
            .await,
        "patch a tenant",
    );
    let stored = editor_allowed(editor.get(&tenant).await, "get a tenant");
    editor_allowed(editor.replace(&tenant, &PostParams::default(), &stored).await, "update a tenant");
    denied(
        editor.patch_status(&tenant, &apply_params(), &Patch::Apply(status.clone())).await,
        "editor",
        "write status",
    );
    denied(
        Api::<Secret>::namespaced(as_user("imagingtenant-editor"), "default").list(&ListParams::default()).await,
        "editor",
        "list Secrets",
    );

    let viewer = Api::<DynamicObject>::all_with(as_user("imagingtenant-viewer"), &tenant_resource());
    editor_allowed(viewer.get(&tenant).await, "get a tenant (viewer)");
    editor_allowed(viewer.list(&ListParams::default()).await, "list tenants (viewer)");
    editor_allowed(viewer.get_status(&tenant).await, "get a tenant's status (viewer)");
    denied(viewer.create(&PostParams::default(), &object(manifest.clone())).await, "viewer", "create a tenant");
    denied(
        viewer.patch(&tenant, &PatchParams::default(), &Patch::Merge(json!({"spec": {"displayName": "x"}}))).await,
        "viewer",
        "patch a tenant",
    );
    denied(viewer.delete(&tenant, &DeleteParams::default()).await, "viewer", "delete a tenant");
    editor_allowed(editor.delete(&tenant, &DeleteParams::default()).await, "delete a tenant");

    // Not aggregated: the built-in roles a tenant admin holds know nothing of ImagingTenants.
    for role in ["view", "edit", "admin"] {
        let rules = Api::<ClusterRole>::all(admin.clone()).get(role).await.unwrap().rules.unwrap_or_default();
        assert!(
            !rules.iter().any(|r| r.api_groups.iter().flatten().any(|g| g == "imaging.tenancy.dev")),
            "ClusterRole {role} must not grant anything on ImagingTenants"
        );
    }
    for name in bindings {
        Api::<ClusterRoleBinding>::all(admin.clone()).delete(&name, &DeleteParams::default()).await.unwrap();
    }
    helm_uninstall(cp, &release);
}

fn editor_allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("a user bound to the chart's ClusterRole must be allowed to {what}: {e}"))
}

fn denied<T: std::fmt::Debug>(result: Result<T, kube::Error>, who: &str, what: &str) {
    match result {
        Err(e) if api_error_code(&e) == Some(403) => {}
        other => panic!("a user bound to imagingtenant-{who} must get 403 to {what}, got {other:?}"),
    }
}

/// crds.enabled, as README.md's "Upgrade" says: refused with the adoption commands while the CRD
/// belongs to no release; once adopted, the release manages it, and `helm uninstall` keeps it
/// (crds.keep) with every tenant.
#[tokio::test]
async fn templated_crd_is_refused_until_adopted_and_kept_on_uninstall() {
    let cp = ControlPlane::shared().await;
    install_chart_crd(cp).await;
    let _writing = CRD_WRITERS.lock().await;
    let client = cp.client();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = unique_name("ito");
    let namespace = unique_name("chart-crds");
    let install = |extra: &[&str]| {
        let mut cmd = helm();
        cmd.args([
            "install",
            &name,
            CHART,
            "--namespace",
            &namespace,
            "--create-namespace",
            "--values",
            MINIMAL_VALUES,
        ])
        .args(["--set", "admission.enabled=false,rbac.userRoles=false,crds.enabled=true"])
        .args(extra);
        output(with_kubeconfig(cmd, cp), None)
    };

    let out = install(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a CRD that belongs to no release is not taken over silently");
    assert!(
        stderr.contains(
            "Install with --skip-crds, or adopt it first: kubectl label crd imagingtenants.imaging.tenancy.dev"
        ),
        "{stderr}"
    );

    // Adopted as README.md says (the commands, with this release's name and namespace).
    let adopted = json!({"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": namespace},
    }});
    crds.patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(adopted)).await.unwrap();
    let out = install(&["--skip-crds"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crd = crds.get(CRD_NAME).await.unwrap();
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("helm.sh/resource-policy").map(String::as_str), Some("keep"));
    assert_eq!(
        annotations.get("argocd.argoproj.io/sync-options").map(String::as_str),
        Some("Delete=false,Prune=false")
    );

    let tenants = Api::<DynamicObject>::all_with(client.clone(), &tenant_resource());
    let tenant = unique_name("kept-crd");
    tenants
        .create(&PostParams::default(), &object(json!({"apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant", "metadata": {"name": tenant}, "spec": {}})))
        .await
        .expect("create a tenant");
    let mut cmd = helm();
    cmd.args(["uninstall", &name, "--namespace", &namespace]);
    run(with_kubeconfig(cmd, cp), None);
    crds.get(CRD_NAME).await.expect("helm uninstall keeps the CRD (crds.keep)");
    tenants.get(&tenant).await.expect("and every tenant");
    tenants.delete(&tenant, &DeleteParams::default()).await.unwrap();

    // Back to a CRD of no release, for the other tests.
    let labels: serde_json::Map<String, Value> = [
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "helm.sh/chart",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), Value::Null))
    .collect();
    let released = json!({"metadata": {
        "labels": labels,
        "annotations": {"meta.helm.sh/release-name": null, "meta.helm.sh/release-namespace": null, "helm.sh/resource-policy": null},
    }});
    crds.patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(released)).await.unwrap();
}
