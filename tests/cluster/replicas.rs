//! Operator replicas with leader election, as the chart runs them: the real binary, against the
//! harness's control plane and moto, several processes sharing one Lease and one tenant shard.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

use crate::operator::SHARD_LABEL;
use ito_test_support::{ControlPlane, ManagedProcess, Moto, free_port, http_request, log_tail, scratch_dir, wait_for};

/// Lease duration of the replicas under test: the shortest the operator accepts.
pub const LEASE_SECONDS: u64 = 5;

/// One Lease and one tenant selector, shared by the replicas of a test.
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub shard: String,
}

impl Election {
    /// The holder of the Lease, `None` when it is free (released, or not created yet).
    pub async fn holder(&self, client: &Client) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        api.get_opt(&self.lease).await.expect("read the Lease").and_then(|l| l.spec).and_then(|s| s.holder_identity)
    }

    /// Waits until `identity` holds the Lease.
    pub async fn wait_holder(&self, client: &Client, identity: &str, timeout: Duration) {
        wait_for(timeout, &format!("{identity} to hold Lease {}/{}", self.namespace, self.lease), || async {
            match self.holder(client).await {
                Some(h) if h == identity => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        })
        .await
    }

    /// A tenant manifest of this shard.
    pub fn tenant(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": name, "labels": {SHARD_LABEL: self.shard}},
            "spec": {},
        })
    }
}

/// One operator process with leader election on.
pub struct Replica {
    pub identity: String,
    pub metrics_port: u16,
    pub health_port: u16,
    pub log: PathBuf,
    process: Option<ManagedProcess>,
}

impl Replica {
    /// Starts a replica named `identity` (its POD_NAME) and waits until /healthz answers.
    pub async fn start(cp: &ControlPlane, moto: &Moto, election: &Election, identity: &str) -> Replica {
        let metrics_port = free_port();
        let health_port = free_port();
        let log = scratch_dir("replica").join(format!("{identity}.log"));
        // As the chart does for the Lease's namespace: the ServiceAccount may hold this Lease.
        crate::guard::grant_lease(&cp.client(), &election.namespace, &election.lease).await;
        let mut cmd = crate::operator::run_command(cp, moto, metrics_port, health_port);
        cmd.env("POD_NAME", identity)
            .env("POD_NAMESPACE", &election.namespace)
            .env("ITO_TENANT_SELECTOR", format!("{SHARD_LABEL}={}", election.shard))
            .env("ITO_LOG_FORMAT", "json")
            .args(["--leader-election=true", "--leader-election-namespace", &election.namespace])
            .args(["--leader-election-lease", &election.lease])
            .args(["--leader-election-lease-seconds", &LEASE_SECONDS.to_string()]);
        let process =
            ito_test_support::spawn_managed(&format!("operator-{identity}"), cmd, &log).expect("start the operator");
        let replica = Replica { identity: identity.to_owned(), metrics_port, health_port, log, process: Some(process) };
        let port = replica.health_port;
        let log = replica.log.clone();
        wait_for(Duration::from_secs(60), &format!("{identity} to answer /healthz"), || {
            let log = log.clone();
            async move {
                match tokio::task::spawn_blocking(move || http_request("GET", port, "/healthz")).await.unwrap() {
                    Ok((200, _)) => Ok(()),
                    other => Err(format!("{other:?}; log:\n{}", log_tail(&log, 20))),
                }
            }
        })
        .await;
        replica
    }

    /// GET `path` on the health port.
    pub async fn health(&self, path: &'static str) -> Result<(u16, String), String> {
        let port = self.health_port;
        tokio::task::spawn_blocking(move || http_request("GET", port, path)).await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        let port = self.metrics_port;
        match tokio::task::spawn_blocking(move || http_request("GET", port, "/metrics")).await.unwrap() {
            Ok((200, body)) => body,
            other => panic!("GET /metrics of {}: {other:?}", self.identity),
        }
    }

    /// Sum of the samples of the metric `name` (exact, any labels).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("a running replica").pid()
    }

    /// Sends SIGTERM, as the kubelet does when it stops a pod.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "send SIGTERM to {}", self.identity);
    }

    /// Kills the process at once (SIGKILL), as a node loss would.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    /// Waits until the process exits, and returns its status.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let process = self.process.as_ref().expect("a started replica");
        wait_for(timeout, &format!("{} to exit", self.identity), || async {
            process.exit_status().ok_or_else(|| format!("still running; log:\n{}", self.log_tail(5)))
        })
        .await
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- replica {} log (tail) ---\n{}", self.identity, self.log_tail(40));
        }
        self.kill();
    }
}
