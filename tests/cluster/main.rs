//! Tests against one real control plane (etcd, kube-apiserver, kube-controller-manager) and one
//! moto, started by the first test that asks and shared by every test of this binary: the
//! harness itself (`smoke`), `plan` against the apiserver, the cloud layer against moto, the
//! operator binary end to end, leader election and shutdown, and the Helm chart installed.
//!
//! Tests run concurrently and keep apart by unique names: their own namespaces, tenants labelled
//! with their own shard (each test runs its own operator processes with a tenant selector), their
//! own `Cloud`, Lease and Helm release. What they share, the ImagingTenant CRD and the chart's
//! guard (the operator runs as its ServiceAccount under the admission policies), [`install_crd`]
//! installs once.

mod chart_install;
mod cloud_crash;
mod cloud_faults;
mod cloud_provision;
mod cloud_replication;
mod cloud_retire;
mod connectivity;
mod drift_events;
mod e2e_isolation;
mod evidence;
mod guardrails;
mod invariants_kubernetes;
mod kstatus;
mod plan_apiserver;
mod restore_drill;
mod runtime_leader_election;
mod runtime_shutdown;
mod smoke;
mod tamper;

mod cloud_fixtures;
mod guard;
mod operator;
mod replicas;

use std::time::Duration;

use ito_test_support::{apply_crd, repo_root, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tokio::sync::OnceCell;

/// The checked-in CRD, which `tests/offline/crd_drift.rs` proves is what `imaging-tenant-operator
/// crd` prints, and which users install.
const CRD_FILE: &str = "crds/imagingtenants.imaging.tenancy.dev.yaml";
const TENANTS: &str = "/apis/imaging.tenancy.dev/v1alpha1/imagingtenants";

/// Installs the checked-in ImagingTenant CRD once for the whole binary, and waits until it is
/// established and tenants are served; then what every test runs under ([`guard::install`]: the
/// chart's RBAC and admission policies, the AdminNetworkPolicy CRD). The first caller installs
/// (server-side, so it would be a no-op a second time); concurrent callers wait for that, later
/// ones return at once.
pub async fn install_crd(client: &kube::Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let path = repo_root().join(CRD_FILE);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("parse the checked-in CRD");
            apply_crd(client, &crd, "imaging-tenant-operator-tests").await;
            wait_for(Duration::from_secs(60), "ImagingTenants to be served", || async {
                let list = http::Request::get(TENANTS).body(Vec::new()).map_err(|e| e.to_string())?;
                client.request::<serde_json::Value>(list).await.map(|_| ()).map_err(|e| format!("not served yet: {e}"))
            })
            .await;
            guard::install(client).await;
        })
        .await;
}
