//! `restore-drill`: proves a tenant's replication end to end with a canary object.
//!
//! It reads the tenant's buckets and replica key from its status, writes a small canary under
//! `restore-drill/` in the tenant's bucket, waits for its replica, reads the replica back from
//! the replication region and checks its content and that it is encrypted with the replica key,
//! then puts a delete marker on the canary on both sides (never deleting a version), and prints
//! how long replication took.
//!
//! Exit status: 0 the canary replicated and read back as written; 1 it did not replicate in
//! time, or its replica differs (content, encryption) or its replication failed; 2 a usage,
//! configuration or access error.
//!
//! It runs with the caller's AWS credentials, which the bucket policies admit for object data
//! only as the tenant role or the break-glass role; `aws-policies --only restore-drill-policy`
//! prints what it needs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ReplicationStatus, ServerSideEncryption};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use kube::Api;

use crate::api::ImagingTenant;

/// Where canaries go in the tenant's bucket.
pub const CANARY_PREFIX: &str = "restore-drill/";

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Exit status: 0 the canary replicated and read back as written; 1 it did not replicate within \
    --timeout, or its replica differs; 2 usage, configuration or access error.")]
pub struct DrillArgs {
    /// The ImagingTenant whose replication is drilled.
    #[arg(long)]
    pub tenant: String,
    /// How long to wait for the canary's replica (90s, 15m, 1h).
    #[arg(long, default_value = "15m", value_parser = crate::run::parse_duration)]
    pub timeout: Duration,
    /// How often to look for the replica.
    #[arg(long, default_value = "5s", value_parser = crate::run::parse_duration)]
    pub poll_interval: Duration,
    /// An S3 endpoint (a VPC endpoint or an emulator) for both regions; path-style addressing.
    #[arg(long, env = "ITO_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

/// The tenant's two buckets and the key its replicas must be encrypted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillTarget {
    pub bucket: String,
    pub region: String,
    pub replica_bucket: String,
    pub replica_region: String,
    pub replica_key_arn: String,
}

impl DrillTarget {
    /// From the tenant's status; an error says what is missing.
    pub fn of(tenant: &ImagingTenant) -> Result<DrillTarget, String> {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        let status = tenant.status.clone().unwrap_or_default();
        let bucket = status.bucket.ok_or_else(|| format!("tenant {name} has no bucket in its status yet"))?;
        let replica = status.replica.unwrap_or_default();
        let (Some(replica_bucket), Some(replica_key)) = (replica.bucket, replica.key) else {
            return Err(format!(
                "tenant {name} does not replicate (status.replica has no bucket and key): set spec.storage.replication or run the operator with --replication-region"
            ));
        };
        Ok(DrillTarget {
            bucket: bucket.name,
            region: bucket.region,
            replica_bucket: replica_bucket.name,
            replica_region: replica_bucket.region,
            replica_key_arn: replica_key.arn,
        })
    }
}

/// What a successful drill measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillReport {
    pub key: String,
    /// From the end of the upload to the first sight of the replica (as often as polled).
    pub replication_time: Duration,
}

/// Why a drill did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DrillError {
    /// Exit status 1: replication did not prove itself.
    #[error("{0}")]
    NotReplicated(String),
    /// Exit status 2: the drill could not be run as asked.
    #[error("{0}")]
    Unusable(String),
}

impl DrillError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DrillError::NotReplicated(_) => 1,
            DrillError::Unusable(_) => 2,
        }
    }
}

/// The drill itself, with an S3 client for each region.
pub async fn drill(
    source: &aws_sdk_s3::Client,
    replica: &aws_sdk_s3::Client,
    target: &DrillTarget,
    timeout: Duration,
    poll_interval: Duration,
) -> Result<DrillReport, DrillError> {
    let key = format!("{CANARY_PREFIX}{}-{:08x}.txt", unix_seconds(), rand::random::<u32>());
    let body = format!("imaging-tenant-operator restore drill canary {key}\n");
    let access = |what: &str, e: &dyn ProvideErrorMetadata| {
        DrillError::Unusable(format!(
            "{what}: {}: {} (the drill runs as the tenant role or the break-glass role: see `aws-policies --only restore-drill-policy`)",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ))
    };
    source
        .put_object()
        .bucket(&target.bucket)
        .key(&key)
        .body(ByteStream::from(body.clone().into_bytes()))
        .send()
        .await
        .map_err(|e| access(&format!("writing the canary s3://{}/{key}", target.bucket), &e))?;
    let written = Instant::now();
    println!("wrote the canary s3://{}/{key} in {}", target.bucket, target.region);

    let outcome = wait_for_replica(source, replica, target, &key, written, timeout, poll_interval).await;
    let checked = match outcome {
        Ok(replication_time) => check_replica(replica, target, &key, &body).await.map(|()| replication_time),
        Err(e) => Err(e),
    };
    // The canary goes either way: delete markers only, on both sides.
    let cleaned = remove_canary(source, replica, target, &key).await;
    let replication_time = checked?;
    cleaned?;
    Ok(DrillReport { key, replication_time })
}

async fn wait_for_replica(
    source: &aws_sdk_s3::Client,
    replica: &aws_sdk_s3::Client,
    target: &DrillTarget,
    key: &str,
    written: Instant,
    timeout: Duration,
    poll_interval: Duration,
) -> Result<Duration, DrillError> {
    loop {
        match replica.head_object().bucket(&target.replica_bucket).key(key).send().await {
            Ok(_) => return Ok(written.elapsed()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
            Err(e) => {
                return Err(DrillError::Unusable(format!(
                    "looking for the replica s3://{}/{key} in {}: {} (a 403 here means the caller may not list or read the replica bucket)",
                    target.replica_bucket,
                    target.replica_region,
                    e.raw_response().map(|r| r.status().as_u16().to_string()).unwrap_or_else(|| e.to_string())
                )));
            }
        }
        // S3 says FAILED on the source object when it gave up replicating it.
        if let Ok(head) = source.head_object().bucket(&target.bucket).key(key).send().await
            && head.replication_status() == Some(&ReplicationStatus::Failed)
        {
            return Err(DrillError::NotReplicated(format!(
                "S3 reports the replication of s3://{}/{key} as FAILED: check the replication role's permissions and the replica key's policy",
                target.bucket
            )));
        }
        if written.elapsed() >= timeout {
            return Err(DrillError::NotReplicated(format!(
                "the canary s3://{}/{key} did not reach s3://{} in {} within {}s",
                target.bucket,
                target.replica_bucket,
                target.replica_region,
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(poll_interval.min(timeout.saturating_sub(written.elapsed()))).await;
    }
}

async fn check_replica(
    replica: &aws_sdk_s3::Client,
    target: &DrillTarget,
    key: &str,
    body: &str,
) -> Result<(), DrillError> {
    let name = format!("s3://{}/{key}", target.replica_bucket);
    let got = replica.get_object().bucket(&target.replica_bucket).key(key).send().await.map_err(|e| {
        DrillError::Unusable(format!(
            "reading the replica {name}: {}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ))
    })?;
    let encryption = got.server_side_encryption().cloned();
    let key_id = got.ssekms_key_id().map(str::to_string);
    let bytes = got
        .body
        .collect()
        .await
        .map_err(|e| DrillError::Unusable(format!("reading the replica {name}: {e}")))?
        .into_bytes();
    if bytes.as_ref() != body.as_bytes() {
        return Err(DrillError::NotReplicated(format!("the replica {name} differs from the canary written")));
    }
    if encryption != Some(ServerSideEncryption::AwsKms) || key_id.as_deref() != Some(target.replica_key_arn.as_str()) {
        return Err(DrillError::NotReplicated(format!(
            "the replica {name} is encrypted with {encryption:?} key {key_id:?}, not with the replica key {}",
            target.replica_key_arn
        )));
    }
    println!(
        "read the replica {name} in {}: same content, SSE-KMS with {}",
        target.replica_region, target.replica_key_arn
    );
    Ok(())
}

/// A delete marker on each side (DeleteObject without a version ID), never a version delete.
async fn remove_canary(
    source: &aws_sdk_s3::Client,
    replica: &aws_sdk_s3::Client,
    target: &DrillTarget,
    key: &str,
) -> Result<(), DrillError> {
    source.delete_object().bucket(&target.bucket).key(key).send().await.map_err(|e| {
        DrillError::Unusable(format!(
            "placing a delete marker on s3://{}/{key}: {}",
            target.bucket,
            e.code().unwrap_or("error")
        ))
    })?;
    // Delete marker replication may have put one there already; otherwise the drill does.
    if replica.head_object().bucket(&target.replica_bucket).key(key).send().await.is_ok() {
        replica.delete_object().bucket(&target.replica_bucket).key(key).send().await.map_err(|e| {
            DrillError::Unusable(format!(
                "placing a delete marker on s3://{}/{key}: {}",
                target.replica_bucket,
                e.code().unwrap_or("error")
            ))
        })?;
    }
    println!("placed delete markers on the canary in both buckets (no version was deleted)");
    Ok(())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// An S3 client for `region` from the default credential chain.
async fn s3_client(region: &str, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_string()));
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config).force_path_style(endpoint.is_some()).build(),
    )
}

pub fn main(args: &DrillArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("restore-drill: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!(
                "restore drill passed: {} replicated in {:.1}s",
                report.key,
                report.replication_time.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restore drill failed: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: &DrillArgs) -> Result<DrillReport, DrillError> {
    // As `run`: one rustls provider for the process (ring for kube, aws-lc for the AWS SDK).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| DrillError::Unusable(format!("no Kubernetes client (kubeconfig or in-cluster): {e}")))?;
    let tenants: Api<ImagingTenant> = Api::all(client);
    let tenant = tenants
        .get(&args.tenant)
        .await
        .map_err(|e| DrillError::Unusable(format!("reading ImagingTenant {}: {e}", args.tenant)))?;
    let target = DrillTarget::of(&tenant).map_err(DrillError::Unusable)?;
    let endpoint = args.aws_endpoint_url.as_deref().filter(|u| !u.is_empty());
    let source = s3_client(&target.region, endpoint).await;
    let replica = s3_client(&target.replica_region, endpoint).await;
    drill(&source, &replica, &target, args.timeout, args.poll_interval).await
}
