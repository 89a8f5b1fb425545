//! Real parts for the integration tests and examples of imaging-tenant-operator (see "Tests:
//! real parts" in the design).
//!
//! A test binary (`tests/cluster/main.rs`) or example (`examples/demo.rs`) gets, shared by all of
//! its tests and started on first use:
//!
//! - [`ControlPlane::shared`]: etcd, kube-apiserver and kube-controller-manager on loopback,
//!   built by `make k8s-bin`. Hand out clients with [`ControlPlane::client`] and
//!   [`ControlPlane::client_as`] inside each test, since every `#[tokio::test]` has its own
//!   runtime.
//! - [`Moto::shared`]: `moto_server` for S3, KMS, IAM and STS, installed by `make moto`.
//!
//! Tests share these, so each test creates its own namespaces and cloud resources with
//! [`unique_name`]. All processes and scratch files go away when the binary exits, whether the
//! tests passed, panicked or the binary was killed.
//!
//! [`guard`] installs what a cluster with the chart has (RBAC, admission policies, the network
//! policy CRDs) and a kubeconfig acting as the operator's ServiceAccount.
//!
//! Besides, [`faults`] is an HTTP proxy that injects AWS errors, [`corpus`] reads the manifest
//! corpus under `tests/fixtures/`, and [`chart`] runs the pinned helm and kubectl on the chart.
//! Nothing here depends on the operator crate: what needs its types stays in the test binaries.

use std::path::Path;

mod certs;
pub mod chart;
mod control_plane;
pub mod corpus;
pub mod faults;
pub mod guard;
mod moto;
mod net;
mod process;
mod wait;

pub use control_plane::{BREAK_GLASS_GROUP, ControlPlane, tool_path};
pub use moto::{ACCOUNT_ID, Moto, PYTHON_ENV, REGION, test_python};
pub use net::{free_port, http_request};
pub use process::{ManagedProcess, log_tail, scratch_dir, spawn_managed};
pub use wait::{unique_name, wait_for};

/// The repository's root directory (this crate lives in `crates/test-support`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support lies two levels below the root")
}

/// Selects rustls' process-wide crypto provider. The dependency tree enables both `ring` and
/// `aws-lc-rs`, and then rustls refuses to guess; kube's TLS is configured for `ring`.
/// Called by the `shared()` constructors, so tests need not call it themselves.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `code` of a Kubernetes API error (403, 404, 409, 422, ...), or `None` for other errors.
pub fn api_error_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Creates a namespace named `prefix-<unique>` and returns its name.
pub async fn create_namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = unique_name(prefix);
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "imaging-tenant-operator.test/harness": "true" } },
    }))
    .expect("a valid Namespace");
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Waits until the CustomResourceDefinition `name` is Established, i.e. its resources are served.
pub async fn wait_established(client: &kube::Client, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    wait_for(std::time::Duration::from_secs(30), &format!("CRD {name} to be established"), || {
        let api = api.clone();
        async move {
            let crd = api.get(name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established { Ok(()) } else { Err(format!("{:?}", crd.status)) }
        }
    })
    .await;
}

/// Server-side applies `crd` (so a second install is a no-op) and waits until it is Established.
pub async fn apply_crd(
    client: &kube::Client,
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    field_manager: &str,
) {
    use kube::ResourceExt;
    let api: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(client.clone());
    let name = crd.name_any();
    api.patch(&name, &kube::api::PatchParams::apply(field_manager).force(), &kube::api::Patch::Apply(crd))
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    wait_established(client, &name).await;
}
