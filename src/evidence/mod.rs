//! Evidence an auditor accepts: every control the operator enforces, judged from live state
//! and mapped to the HIPAA Security Rule and to AWS Config's managed rules.
//!
//! `imaging-tenant-operator evidence` reads the cluster and AWS with read-only calls (no
//! operator needs to run), judges every control of [`controls::CONTROLS`] for each tenant, and
//! writes the report as JSON or Markdown with a SHA-256 digest (see `docs/compliance.md`).
//!
//! Exit status: 0 every control passed (or was skipped); 1 some control failed; 2 a usage
//! error, or some evidence could not be read (the report is still written, with `error`
//! results).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::api::ImagingTenant;
use crate::cloud::{AwsOptions, Cloud};
use crate::config::{Settings, SettingsArgs};
use crate::desired::aws::render_with;

pub mod controls;
pub mod live;
pub mod policy_report;
pub(crate) mod read;
pub mod report;

pub use read::KubernetesIdentity;

use controls::Verdict;
use live::{GuardEvidence, Read, TenantEvidence};
use report::{Header, TenantFindings};

#[derive(clap::Args, Debug, Clone)]
#[command(
    mut_arg("cluster_name", |a| a.required(true)),
    mut_arg("aws_region", |a| a.required(true)),
    mut_arg("oidc_provider_arn", |a| a.required(true)),
    mut_arg("operator_role_arn", |a| a.required(true)),
    mut_arg("permissions_boundary_arn", |a| a.required(true)),
    after_help = "Give it the operator's settings (the flags and ITO_* variables of `run`): every control compares \
        what it reads with what the operator builds with them. Read-only: the kubeconfig in use and the default AWS \
        credential chain. Exit status: 0 every control passed; 1 some control failed; 2 a usage error, or some \
        evidence could not be read (the report is still written, with `error` results)."
)]
pub struct EvidenceArgs {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// Report on this ImagingTenant only (default: every tenant of the cluster).
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Endpoint for S3, KMS, IAM and STS (an emulator or a VPC endpoint).
    #[arg(long, env = "ITO_AWS_ENDPOINT_URL")]
    pub(crate) aws_endpoint_url: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One JSON document (docs/evidence-report.schema.json).
    Json,
    /// Markdown for people.
    Markdown,
}

/// A failure that ends the command with exit status 2.
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Reads everything the controls judge about one tenant: the cluster side, then the key (whose
/// ARN the bucket's expected encryption names), the role, the bucket and, for a tenant that
/// should replicate, its replica. `guards` are read once
/// for all tenants ([`read::guards`]).
pub(crate) async fn gather(
    client: &kube::Client,
    cloud: &Cloud,
    settings: &Settings,
    tenant: ImagingTenant,
    guards: &Read<Vec<GuardEvidence>>,
) -> TenantEvidence {
    let kubernetes = read::kubernetes(client, &tenant, guards).await;
    let offline = render_with(&tenant, settings, None);
    let recorded = tenant.status.as_ref().and_then(|s| s.key.clone());
    let key = cloud.read_key(&offline.key, recorded.as_ref()).await;
    let key_arn = key.as_ref().ok().and_then(|k| k.as_ref()).map(|k| k.arn.clone());
    let want = render_with(&tenant, settings, key_arn.as_deref());
    let replica = tenant.status.as_ref().and_then(|s| s.replica.clone());
    let aws = live::AwsEvidence {
        key,
        role: cloud.read_role(&want.role).await,
        bucket: cloud.read_bucket(&want.bucket, &settings.account_id).await,
        replica: cloud.read_replica(&want, replica.as_ref(), &settings.account_id).await,
    };
    TenantEvidence { tenant, kubernetes, aws }
}

/// `imaging-tenant-operator evidence ...`.
pub fn main(args: &EvidenceArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &EvidenceArgs) -> Result<u8, Fatal> {
    let region = args.settings.aws_region.clone().unwrap_or_default();
    let cloud = Cloud::connect(&AwsOptions {
        region: region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        ..AwsOptions::default()
    })
    .await?;
    let caller = cloud.caller().await.map_err(|e| Fatal(format!("who am I in AWS: {e}")))?;
    let settings = args.settings.resolve(Some(&caller.account))?;
    let config = kube::Config::infer().await.map_err(|e| Fatal(format!("no Kubernetes configuration: {e}")))?;
    let client = kube::Client::try_from(config)?;
    let whoami = read::whoami(&client).await?;
    let tenants = read::tenants(&client, args.tenant.as_deref()).await?;
    let guards = read::guards(&client).await;

    let mut results = Vec::new();
    for tenant in tenants {
        let read_at = now();
        let evidence = gather(&client, &cloud, &settings, tenant, &guards).await;
        results.push(TenantFindings {
            name: evidence.tenant.tenant_name().to_string(),
            uid: evidence.tenant.metadata.uid.clone().unwrap_or_default(),
            read_at,
            findings: controls::evaluate(&evidence, &settings),
        });
    }

    let header = Header {
        generated_at: now(),
        cluster: settings.cluster_name.clone(),
        region: settings.region.clone(),
        account_id: settings.account_id.clone(),
        aws: caller,
        kubernetes: whoami,
    };
    let json = report::json_report(&header, &results);
    let text = match args.format {
        Format::Json => report::document(&json),
        Format::Markdown => report::markdown_report(&json),
    };
    match &args.output {
        Some(path) => std::fs::write(path, &text).map_err(|e| Fatal(format!("writing {}: {e}", path.display())))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())?;
        }
    }

    let mut worst = Verdict::Pass;
    for tenant in &results {
        for f in tenant.findings.iter().filter(|f| matches!(f.outcome.result, Verdict::Fail | Verdict::Error)) {
            eprintln!("{}: {} {}: {}", tenant.name, f.control.id, f.outcome.result.as_str(), f.outcome.message);
            worst = worst.max(f.outcome.result);
        }
    }
    Ok(match worst {
        Verdict::Error => 2,
        Verdict::Fail => 1,
        Verdict::Pass | Verdict::Skip => 0,
    })
}
