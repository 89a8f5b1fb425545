//! `run`: the controller process. Flags (each with an environment variable), logging, the
//! metrics and health endpoints, leader election and graceful shutdown.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::runtime::events::Reporter;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::metadata::OPERATOR;
use crate::cloud::{AwsOptions, Cloud};
use crate::config::SettingsArgs;
use crate::controller::{self, RunOptions};
use crate::desired::cluster_network::Flavor;
use crate::metrics::Metrics;

#[derive(clap::Args, Debug, Clone)]
#[command(
    mut_arg("cluster_name", |a| a.required(true)),
    mut_arg("aws_region", |a| a.required(true)),
    mut_arg("oidc_provider_arn", |a| a.required(true)),
    mut_arg("operator_role_arn", |a| a.required(true)),
    mut_arg("permissions_boundary_arn", |a| a.required(true))
)]
pub struct RunArgs {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// Run without --break-glass-role-arn. Risky: tenant key policies name their administrators
    /// by role ARN and give nothing to the account root, so if the operator role is deleted and
    /// recreated (same name, new role ID) every tenant key is locked and only AWS Support can
    /// restore access.
    #[arg(long, env = "ITO_ALLOW_NO_BREAK_GLASS_ROLE")]
    pub(crate) allow_no_break_glass_role: bool,
    /// Let tenants be Ready without the chart's admission policies (clusters older than 1.30, which
    /// do not serve ValidatingAdmissionPolicies). Risky: a tenant admin can then undo the
    /// isolation; the Guarded condition stays False and says so.
    #[arg(long, env = "ITO_ALLOW_UNGUARDED")]
    pub(crate) allow_unguarded: bool,
    /// The kind of the per-tenant Admin-tier network policy: auto (ClusterNetworkPolicy where the
    /// cluster serves it, else AdminNetworkPolicy where served, else none), or one of the two.
    #[arg(long, env = "ITO_CLUSTER_NETWORK_POLICY_KIND", default_value = "auto", value_parser = ["auto", "ClusterNetworkPolicy", "AdminNetworkPolicy"])]
    pub(crate) cluster_network_policy_kind: String,
    /// URL of an SQS queue receiving CloudTrail events about the tenants' buckets, keys and roles
    /// (see `drift-events`): a tenant they name is verified at once instead of at its resync.
    #[arg(long, env = "ITO_DRIFT_EVENTS_QUEUE_URL")]
    pub(crate) drift_events_queue_url: Option<String>,
    /// Endpoint for S3, KMS, IAM and STS (an emulator or a VPC endpoint).
    #[arg(long, env = "ITO_AWS_ENDPOINT_URL")]
    pub(crate) aws_endpoint_url: Option<String>,
    /// How often AWS resources are re-read and drift repaired (e.g. 10m, 90s, 1h).
    #[arg(long, env = "ITO_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub(crate) resync_interval: Duration,
    /// Tenants reconciled at the same time.
    #[arg(long, env = "ITO_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) concurrency: u16,
    /// KMS CreateKey calls per second across all tenants (KMS allows 5/s per account and region).
    #[arg(long, env = "ITO_AWS_MAX_CREATE_KEY_PER_SECOND", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub(crate) aws_max_create_key_per_second: u32,
    /// Request budget of a group of AWS operations, NAME=RATE in requests per second (repeat, or
    /// comma-separate in the environment), e.g. kms:PutKeyPolicy=2 or iam:write=3. Budgets:
    /// kms:CreateKey, kms:CreateAlias, kms:PutKeyPolicy, kms:EnableKeyRotation, kms:TagResource,
    /// kms:ScheduleKeyDeletion, kms:write, kms:read, s3:write, s3:read, iam:write, iam:read, sts,
    /// other. A throttling answer halves a budget for a minute.
    #[arg(long = "aws-budget", env = "ITO_AWS_BUDGET", value_delimiter = ',', value_parser = crate::cloud::budget::parse_override)]
    pub(crate) aws_budgets: Vec<(String, f64)>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "ITO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub(crate) metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "ITO_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub(crate) health_addr: SocketAddr,
    /// Elect one active replica through a coordination.k8s.io Lease.
    #[arg(long, env = "ITO_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) leader_election: bool,
    /// Namespace of the Lease (defaults to the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "ITO_LEADER_ELECTION_NAMESPACE")]
    pub(crate) leader_election_namespace: Option<String>,
    /// Name of the Lease; give each shard (--tenant-selector) its own.
    #[arg(long, env = "ITO_LEADER_ELECTION_LEASE", default_value = OPERATOR)]
    pub(crate) leader_election_lease: String,
    /// Seconds a leader holds the Lease without renewing it before a standby takes over.
    #[arg(long, env = "ITO_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    pub(crate) leader_election_lease_seconds: u64,
    /// Only reconcile ImagingTenants matching this label selector (shard the tenants).
    #[arg(long, env = "ITO_TENANT_SELECTOR")]
    pub(crate) tenant_selector: Option<String>,
    /// Log filter, e.g. info or imaging_tenant_operator=debug,kube=info.
    #[arg(long, env = "ITO_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Log format.
    #[arg(long, env = "ITO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
}

/// Parses durations such as `600`, `90s`, `10m`, `1h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("'{text}': unit must be s, m or h")),
    };
    if seconds == 0 {
        return Err("the interval must be longer than zero".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn init_logging(args: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

impl RunArgs {
    /// What clap cannot say: the break-glass role is required unless explicitly waived.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.settings.break_glass_role_arn.is_none() && !self.allow_no_break_glass_role {
            return Err("--break-glass-role-arn (ITO_BREAK_GLASS_ROLE_ARN) is required: tenant key policies name \
                their administrators by role ARN, so without a break-glass role a recreated operator role locks \
                every tenant key. Pass --allow-no-break-glass-role to run without one anyway."
                .into());
        }
        Ok(())
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    if let Err(e) = args.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_logging(&args);
    // rustls has two providers in the dependency tree (ring for kube, aws-lc for the AWS SDK);
    // pick one for the process so neither side has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone)]
struct Health {
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    cloud: Cloud,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if *h.ready.borrow() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches not synced") }
}

async fn metrics(State(h): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    h.metrics.record_aws(&h.cloud.calls());
    h.metrics.record_budgets(&h.cloud.budgets());
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], h.metrics.encode())
}

async fn serve_http(addr: SocketAddr, router: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing in-flight reconciles"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: finishing in-flight reconciles"),
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Metrics::shared();
    let counted = metrics.clone();
    let client = kube::client::ClientBuilder::try_from(kube::Config::infer().await?)?
        .with_layer(&tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counted.kubernetes_request(&request);
            request
        }))
        .build();
    let cloud = Cloud::connect(&AwsOptions {
        region: args.settings.aws_region.clone().unwrap_or_default(),
        endpoint_url: args.aws_endpoint_url.clone(),
        budgets: {
            let mut budgets: std::collections::BTreeMap<String, f64> = args.aws_budgets.iter().cloned().collect();
            budgets.entry("kms:CreateKey".into()).or_insert(f64::from(args.aws_max_create_key_per_second));
            budgets
        },
    })
    .await?;
    let (account_id, caller) = cloud.caller_identity().await?;
    let settings = args.settings.resolve(Some(&account_id)).map_err(|e| anyhow::anyhow!(e))?;
    // Key and bucket policies admit the operator only under --operator-role-arn: say so early
    // when the credentials in use are something else.
    if !caller_is_role(&caller, &settings.operator_role_arn) {
        warn!(
            caller = %caller,
            operator_role = %settings.operator_role_arn,
            "the AWS identity in use is not --operator-role-arn; tenant key and bucket policies admit only that role"
        );
    }
    info!(cluster = %settings.cluster_name, region = %settings.region, account = %settings.account_id, "starting");

    let (ready_tx, ready_rx) = watch::channel(false);
    let health = Health { ready: ready_rx, metrics: metrics.clone(), cloud: cloud.clone() };
    let health_router =
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health.clone());
    let metrics_router = Router::new().route("/metrics", get(self::metrics)).with_state(health);
    let health_addr = args.health_addr;
    let metrics_addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = serve_http(health_addr, health_router).await {
            error!(error = %e, addr = %health_addr, "health endpoint failed");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = serve_http(metrics_addr, metrics_router).await {
            error!(error = %e, addr = %metrics_addr, "metrics endpoint failed");
        }
    });

    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into()), std::process::id())
    });
    let reporter = Reporter { controller: OPERATOR.into(), instance: Some(identity.clone()) };
    let opts = RunOptions {
        reporter,
        concurrency: args.concurrency,
        resync_interval: args.resync_interval,
        tenant_selector: args.tenant_selector.clone(),
        allow_unguarded: args.allow_unguarded,
        drift_events_queue_url: args.drift_events_queue_url.clone(),
        network_policy_kinds: match args.cluster_network_policy_kind.as_str() {
            "ClusterNetworkPolicy" => vec![Flavor::ClusterNetworkPolicy],
            "AdminNetworkPolicy" => vec![Flavor::AdminNetworkPolicy],
            _ => Flavor::ALL.to_vec(),
        },
    };

    if !args.leader_election {
        metrics.set_leader(true);
        controller::run(client, settings, cloud, metrics, opts, ready_tx, terminated()).await;
        return Ok(());
    }

    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let lease_seconds = args.leader_election_lease_seconds.max(5);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.leader_election_lease)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_parameters(LeaseParams::new(identity.clone(), lease_seconds, (lease_seconds / 3).max(2)))
        .build()
        .await?;
    info!(lease = %args.leader_election_lease, %namespace, %identity, "waiting to become leader");
    // A standby replica is ready: it serves its endpoints and only waits for the Lease. Reporting
    // it unready would stall rolling updates and, with the PodDisruptionBudget, node drains.
    let _ = ready_tx.send(true);
    let mut term = Box::pin(terminated());
    loop {
        tokio::select! {
            leader = manager.changed() => {
                if leader? { break; }
            }
            _ = &mut term => return Ok(()),
        }
    }
    info!("became leader");
    metrics.set_leader(true);
    // The new leader is ready again once its caches are synced.
    let _ = ready_tx.send(false);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let lost = {
        let stop_tx = stop_tx.clone();
        let metrics = metrics.clone();
        async move {
            tokio::select! {
                _ = term => {}
                res = async {
                    loop {
                        match manager.changed().await {
                            Ok(true) => continue,
                            Ok(false) => break "lost the Lease".to_string(),
                            Err(e) => break format!("cannot renew the Lease: {e}"),
                        }
                    }
                } => warn!(reason = %res, "stepping down"),
            }
            metrics.set_leader(false);
            let _ = stop_tx.send(true);
            manager
        }
    };
    let lease_task = tokio::spawn(lost);
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };
    controller::run(client, settings, cloud, metrics, opts, ready_tx, shutdown).await;
    let _ = stop_tx.send(true);
    if let Ok(manager) = lease_task.await {
        if let Err(e) = manager.release().await {
            warn!(error = %e, "could not release the Lease");
        } else {
            info!("released the Lease");
        }
    }
    Ok(())
}

/// Whether `caller` (an STS caller ARN) is a session of `role_arn`.
/// `arn:aws:sts::1:assumed-role/NAME/session` is a session of `arn:aws:iam::1:role/PATH/NAME`.
fn caller_is_role(caller: &str, role_arn: &str) -> bool {
    if caller == role_arn {
        return true;
    }
    let role_name = role_arn.rsplit('/').next().unwrap_or_default();
    let account = |arn: &str| arn.split(':').nth(4).unwrap_or_default().to_string();
    caller.split(":assumed-role/").nth(1).and_then(|rest| rest.split('/').next()) == Some(role_name)
        && account(caller) == account(role_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_of_the_operator_role_are_recognised() {
        let role = "arn:aws:iam::123456789012:role/platform/imaging-tenant-operator";
        assert!(caller_is_role("arn:aws:sts::123456789012:assumed-role/imaging-tenant-operator/pod-1", role));
        assert!(!caller_is_role("arn:aws:sts::999999999999:assumed-role/imaging-tenant-operator/pod-1", role));
        assert!(!caller_is_role("arn:aws:sts::123456789012:assumed-role/other/pod-1", role));
        assert!(!caller_is_role("arn:aws:iam::123456789012:user/admin", role));
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let required = [
            "run",
            "--cluster-name=c",
            "--aws-region=us-east-1",
            "--oidc-provider-arn=arn:aws:iam::123456789012:oidc-provider/x",
            "--operator-role-arn=arn:aws:iam::123456789012:role/op",
        ];
        <Cli as clap::Parser>::try_parse_from(required.iter().chain(args)).map(|c| c.run)
    }

    #[test]
    fn the_permissions_boundary_is_required() {
        let Err(err) = parse(&[]) else { panic!("run without a boundary parsed") };
        assert!(err.to_string().contains("--permissions-boundary-arn"), "{err}");
    }

    #[test]
    fn the_break_glass_role_is_required_unless_explicitly_waived() {
        let boundary = "--permissions-boundary-arn=arn:aws:iam::123456789012:policy/b";
        let args = parse(&[boundary]).unwrap();
        let err = args.check().unwrap_err();
        assert!(err.contains("--break-glass-role-arn") && err.contains("--allow-no-break-glass-role"), "{err}");
        assert!(parse(&[boundary, "--allow-no-break-glass-role"]).unwrap().check().is_ok());
        let with_role = parse(&[boundary, "--break-glass-role-arn=arn:aws:iam::123456789012:role/bg"]).unwrap();
        assert!(with_role.check().is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
