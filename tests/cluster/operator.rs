//! The operator under test: the real binary, run against the harness's control plane and moto.
//!
//! Each test starts its own operator with its own `--tenant-selector`, so tests of one binary
//! run in parallel without reconciling each other's tenants, and a test may kill and restart its
//! operator without disturbing the others.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use imaging_tenant_operator::api::{ImagingTenant, condition};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use ito_test_support::{
    ControlPlane, ManagedProcess, Moto, free_port, http_request, scratch_dir, spawn_managed, unique_name, wait_for,
};

pub const SHARD_LABEL: &str = "imaging.tenancy.dev/test-shard";
pub const OIDC_PROVIDER_ARN: &str =
    "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TESTCLUSTER";
pub const OPERATOR_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/imaging-tenant-operator";
pub const BREAK_GLASS_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/imaging-break-glass";
pub const PERMISSIONS_BOUNDARY_ARN: &str = "arn:aws:iam::123456789012:policy/imaging-tenant-boundary";
pub const CLUSTER: &str = "test-cluster";

/// The operator binary's `run` command against the harness's control plane and moto, with a clean
/// environment, the test settings, and its endpoints on the given ports. It acts as the chart's
/// ServiceAccount, under the chart's ClusterRole and admission policies (`install_crd`).
pub fn run_command(cp: &ControlPlane, moto: &Moto, metrics_port: u16, health_port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"));
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", crate::guard::operator_kubeconfig(cp))
        .env("AWS_REGION", "us-east-1");
    test_settings(&mut cmd, moto);
    cmd.env("ITO_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("ITO_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
        .env("ITO_LOG_LEVEL", "info,imaging_tenant_operator=debug");
    cmd
}

/// moto's credentials and the operator settings of the tests (cluster, region, role ARNs), for
/// every command of the binary that talks to AWS.
pub fn test_settings(cmd: &mut Command, moto: &Moto) {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ITO_CLUSTER_NAME", CLUSTER)
        .env("ITO_AWS_REGION", "us-east-1")
        .env("ITO_AWS_ENDPOINT_URL", moto.endpoint_url())
        .env("ITO_OIDC_PROVIDER_ARN", OIDC_PROVIDER_ARN)
        .env("ITO_OPERATOR_ROLE_ARN", OPERATOR_ROLE_ARN)
        .env("ITO_BREAK_GLASS_ROLE_ARN", BREAK_GLASS_ROLE_ARN)
        .env("ITO_PERMISSIONS_BOUNDARY_ARN", PERMISSIONS_BOUNDARY_ARN);
}

/// A running operator process reconciling only the tenants labelled with its shard.
pub struct Operator {
    pub shard: String,
    pub metrics_port: u16,
    pub health_port: u16,
    process: Option<ManagedProcess>,
    log: PathBuf,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl Operator {
    /// Starts an operator for a new shard and waits until it is ready.
    pub async fn start(cp: &ControlPlane, moto: &Moto) -> Operator {
        Self::start_with(cp, moto, &[]).await
    }

    pub async fn start_with(cp: &ControlPlane, moto: &Moto, extra_args: &[&str]) -> Operator {
        Self::start_with_env(cp, moto, extra_args, &[]).await
    }

    /// Starts an operator with extra environment variables, e.g. another `KUBECONFIG`.
    pub async fn start_with_env(
        cp: &ControlPlane,
        moto: &Moto,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Operator {
        crate::install_crd(&cp.client()).await;
        let shard = unique_name("shard");
        let dir = scratch_dir("operator");
        let mut op = Operator {
            log: dir.join(format!("{shard}.log")),
            shard,
            metrics_port: 0,
            health_port: 0,
            process: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        op.restart(cp, moto).await;
        op
    }

    /// Starts (again) the operator process of this shard, and waits for /readyz.
    pub async fn restart(&mut self, cp: &ControlPlane, moto: &Moto) {
        self.stop();
        self.metrics_port = free_port();
        self.health_port = free_port();
        let mut cmd = run_command(cp, moto, self.metrics_port, self.health_port);
        cmd.env("ITO_TENANT_SELECTOR", format!("{SHARD_LABEL}={}", self.shard))
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let process =
            spawn_managed(&format!("operator-{}", self.shard), cmd, &self.log).expect("start the operator binary");
        self.process = Some(process);
        let port = self.health_port;
        let log = self.log.clone();
        wait_for(Duration::from_secs(60), "the operator to report ready on /readyz", || {
            let log = log.clone();
            async move {
                match tokio::task::spawn_blocking(move || http_request("GET", port, "/readyz")).await.unwrap() {
                    Ok((200, _)) => Ok(()),
                    Ok((code, body)) => Err(format!("{code} {body}")),
                    Err(e) => Err(format!("{e}; operator log:\n{}", ito_test_support::log_tail(&log, 20))),
                }
            }
        })
        .await;
    }

    /// Kills the process at once (SIGKILL), as a crash or a node loss would.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        ito_test_support::log_tail(&self.log, lines)
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        let port = self.metrics_port;
        match tokio::task::spawn_blocking(move || http_request("GET", port, "/metrics")).await.unwrap() {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// Sum of the samples of one metric family whose label text contains `filter`.
    pub async fn metric_sum(&self, name: &str, filter: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// A tenant manifest of this shard, with `spec` as given.
    pub fn tenant(&self, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": name, "labels": {SHARD_LABEL: self.shard}},
            "spec": spec,
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- operator {} log (tail) ---\n{}", self.shard, self.log_tail(60));
        }
        self.stop();
    }
}

/// Creates a tenant from a JSON manifest and returns it as stored.
pub async fn create_tenant(client: &Client, manifest: &Value) -> ImagingTenant {
    let api: Api<ImagingTenant> = Api::all(client.clone());
    let tenant: ImagingTenant = serde_json::from_value(manifest.clone()).expect("a well-formed ImagingTenant");
    api.create(&PostParams::default(), &tenant)
        .await
        .unwrap_or_else(|e| panic!("create tenant {}: {e}", tenant.name_any()))
}

/// Waits until condition `type_` of the tenant has `status`, and returns the tenant.
pub async fn wait_condition(
    client: &Client,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> ImagingTenant {
    let api: Api<ImagingTenant> = Api::all(client.clone());
    wait_for(timeout, &format!("ImagingTenant {name} to have {type_}={status}"), || {
        let api = api.clone();
        async move {
            let t = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = t.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            match condition::find(&conditions, type_) {
                Some(c) if c.status == status => Ok(t),
                _ => Err(format!(
                    "conditions: {}",
                    conditions
                        .iter()
                        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            }
        }
    })
    .await
}

pub async fn wait_ready(client: &Client, name: &str) -> ImagingTenant {
    wait_condition(client, name, condition::READY, "True", Duration::from_secs(120)).await
}

/// Events about a tenant (the recorder writes them to the default namespace).
pub async fn events_for(client: &Client, tenant: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(tenant))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Waits for an event with `reason` whose note contains `text`.
pub async fn wait_event(client: &Client, tenant: &str, reason: &str, text: &str) {
    wait_for(Duration::from_secs(60), &format!("event {reason} mentioning {text:?} for {tenant}"), || async {
        let events = events_for(client, tenant).await;
        if events.iter().any(|(r, n)| r == reason && n.contains(text)) { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await
}
