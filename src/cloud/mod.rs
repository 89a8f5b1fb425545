//! What a reconcile needs from AWS, and the AWS implementation.
//!
//! Three small traits, one per kind of resource ([`Identities`], [`Keys`], [`Buckets`]), each
//! with observe / ensure / retire; [`Cloud`] runs them in the fixed order role → key → role
//! permissions → bucket → bucket settings, because the key policy names the role, and the role's
//! permissions and the bucket's encryption and policy name the key.
//!
//! Crash safety (invariant 7): every lookup comes before any create (role and bucket by their
//! deterministic names, the key by its recorded ID, then its alias, then its tags), every create
//! carries the tenant's tags, and every new ID is handed to [`Progress`] before the next call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;

use crate::api::condition::{BUCKET_READY, BUCKET_SECURED, DELETION_BLOCKED, IDENTITY_READY, KEY_READY, Verdict};
use crate::api::{BucketStatus, DeletionPolicy, ImagingTenant, KeyStatus, RoleStatus};
use crate::config::Settings;
use crate::desired::aws::{BucketSpec, KeySpec, RoleSpec, TenantAws, render_with};

mod bucket;
pub mod budget;
mod calls;
mod error;
mod evidence;
mod identity;
mod key;
pub mod policy;
mod resource;
mod sdk;

pub use calls::CallStats;
pub use error::{CloudError, ErrorClass, ResourceKind};
pub use evidence::CallerIdentity;
pub(crate) use resource::Retiring;
use sdk::SdkResult;

/// IDs of the tenant's AWS resources, as recorded in `status.{role,key,bucket}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudIds {
    pub role: Option<RoleStatus>,
    pub key: Option<KeyStatus>,
    pub bucket: Option<BucketStatus>,
}

/// Where new IDs go the moment they exist: the controller patches `status.{role,key,bucket}`.
/// An error stops provisioning before anything else is created.
#[async_trait]
pub trait Progress: Send {
    async fn record(&mut self, ids: &CloudIds) -> Result<(), String>;
}

/// Something done to an AWS resource, for a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEvent {
    /// `Created`, `Repaired`, `Retained`, `Deleted` or `DeletionBlocked`.
    pub reason: &'static str,
    /// Names the resource and what was done.
    pub note: String,
}

pub(crate) const CREATED: &str = "Created";
pub const REPAIRED: &str = "Repaired";
pub const RETAINED: &str = "Retained";
pub const DELETED: &str = "Deleted";
/// Access taken away from what a `Retain` deletion kept.
pub const ACCESS_REVOKED: &str = "AccessRevoked";
pub(crate) const DELETION_BLOCKED_EVENT: &str = "DeletionBlocked";

/// The outcome of [`Cloud::provision`].
#[derive(Clone, Debug, PartialEq)]
pub struct CloudReport {
    pub ids: CloudIds,
    /// IdentityReady, KeyReady, BucketReady, BucketSecured, in that order.
    pub verdicts: Vec<Verdict>,
    pub events: Vec<CloudEvent>,
    /// The first failure, for the back-off decision.
    pub error: Option<CloudError>,
}

/// The outcome of [`Cloud::retire`].
#[derive(Clone, Debug, PartialEq)]
pub enum Retirement {
    /// Nothing left to do: the finalizer may go.
    Done {
        events: Vec<CloudEvent>,
    },
    /// A `Delete` tenant's bucket still holds objects; the verdict is `DeletionBlocked=True`.
    Blocked {
        verdict: Verdict,
        events: Vec<CloudEvent>,
    },
    Failed(CloudError),
}

/// How to reach AWS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsOptions {
    pub region: String,
    /// An emulator or VPC endpoint for every service; S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// Request budgets (requests per second) that differ from [`budget::DEFAULTS`].
    pub budgets: BTreeMap<String, f64>,
}

/// The SDK retries throttling (SlowDown, ThrottlingException, Throttling, ...), 5xx answers,
/// timeouts and broken connections itself, with exponential back-off and full jitter.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// What the reconcile needs from the tenant's IAM role.
#[async_trait]
pub(crate) trait Identities: Send + Sync {
    /// Looks the role up, creates it when absent, restores its trust policy and tags.
    async fn ensure(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<RoleStatus, CloudError>;
    /// Restores the inline policy and removes every other policy from the role.
    async fn ensure_permissions(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<(), CloudError>;
    /// Tags the role as retained, or deletes it (inline and attached policies first).
    async fn retire(&self, want: &RoleSpec, pass: &mut Retiring) -> Result<(), CloudError>;
}

/// What the reconcile needs from the tenant's KMS key.
#[async_trait]
pub(crate) trait Keys: Send + Sync {
    /// Looks the key up as `observe` does, creates it when absent (rate-limited), restores its
    /// enabled state, rotation, policy, alias and tags.
    async fn ensure(
        &self,
        want: &KeySpec,
        known: Option<&KeyStatus>,
        step: &mut Step<'_>,
    ) -> Result<KeyStatus, CloudError>;
    /// Tags the key as retained, or deletes its alias and schedules its deletion.
    async fn retire(&self, want: &KeySpec, known: Option<&KeyStatus>, pass: &mut Retiring) -> Result<(), CloudError>;
}

/// What the reconcile needs from the tenant's S3 bucket.
#[async_trait]
pub(crate) trait Buckets: Send + Sync {
    /// Looks the bucket up, creates it when absent, restores its tags.
    async fn ensure(&self, want: &BucketSpec, step: &mut Step<'_>) -> Result<BucketStatus, CloudError>;
    /// Reads back every setting, writes what differs, and re-reads what it wrote.
    async fn secure(&self, want: &BucketSpec, step: &mut Step<'_>) -> Result<(), CloudError>;
    /// Tags the bucket as retained, or deletes it when it holds no object version and no
    /// delete marker. Never deletes an object.
    async fn retire(&self, want: &BucketSpec, pass: &mut Retiring) -> Result<BucketRetirement, CloudError>;
}

/// What retiring a bucket came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BucketRetirement {
    Gone,
    Retained,
    /// Versions and delete markers counted, and whether there are more than counted.
    NotEmpty {
        counted: usize,
        more: bool,
    },
    /// A bucket of the tenant's name exists but cannot be confirmed as the tenant's, or cannot
    /// be read (access denied, another owner, no tenant tag): it is not known to be gone.
    Unconfirmed {
        detail: String,
    },
}

/// One provisioning pass: collects events and hands new IDs to [`Progress`].
pub(crate) struct Step<'a> {
    ids: CloudIds,
    recorded: CloudIds,
    progress: &'a mut dyn Progress,
    events: Vec<CloudEvent>,
    /// Resources created in this pass: their settings are part of "Created", not repairs.
    created: Vec<ResourceKind>,
}

impl<'a> Step<'a> {
    fn new(known: &CloudIds, progress: &'a mut dyn Progress) -> Self {
        Step { ids: known.clone(), recorded: known.clone(), progress, events: Vec::new(), created: Vec::new() }
    }

    /// Sets an ID and records it at once when it changed.
    pub(crate) async fn record(&mut self, set: impl FnOnce(&mut CloudIds)) -> Result<(), CloudError> {
        set(&mut self.ids);
        if self.ids == self.recorded {
            return Ok(());
        }
        let what = describe(&self.ids);
        self.progress.record(&self.ids).await.map_err(|detail| CloudError::Progress { what, detail })?;
        self.recorded = self.ids.clone();
        Ok(())
    }

    pub(crate) fn created(&mut self, kind: ResourceKind, note: String) {
        self.created.push(kind);
        self.event(CREATED, note);
    }

    /// Whether `kind` was created in this pass.
    pub(crate) fn is_new(&self, kind: ResourceKind) -> bool {
        self.created.contains(&kind)
    }

    /// A `Repaired` event, unless the resource is new in this pass.
    pub(crate) fn repaired(&mut self, kind: ResourceKind, note: String) {
        if !self.is_new(kind) {
            self.event(REPAIRED, note);
        }
    }

    pub(crate) fn event(&mut self, reason: &'static str, note: String) {
        tracing::info!(reason, "{note}");
        self.events.push(CloudEvent { reason, note });
    }
}

fn describe(ids: &CloudIds) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &ids.role {
        parts.push(format!("role {}", r.name));
    }
    if let Some(k) = &ids.key {
        parts.push(format!("key {}", k.id));
    }
    if let Some(b) = &ids.bucket {
        parts.push(format!("bucket {}", b.name));
    }
    parts.join(", ")
}

/// The AWS clients of the operator, shared by all tenants.
#[derive(Clone)]
pub struct Cloud {
    aws: Arc<Aws>,
}

pub(crate) struct Aws {
    pub(crate) iam: aws_sdk_iam::Client,
    pub(crate) kms: aws_sdk_kms::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) calls: calls::CallCounter,
    pub(crate) budgets: Arc<budget::Budgets>,
    pub(crate) bucket_owner: sdk::ExpectedBucketOwner,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}

impl Cloud {
    /// Clients from aws-config's default chain (environment, IRSA web identity, profile),
    /// pointed at `endpoint_url` when one is given.
    pub(crate) async fn connect(opts: &AwsOptions) -> Result<Cloud, CloudError> {
        if opts.region.is_empty() {
            return Err(CloudError::Config("--aws-region is empty".into()));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(opts.region.clone()));
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        if config.credentials_provider().is_none() {
            return Err(CloudError::Config("no AWS credentials provider found".into()));
        }
        Ok(Self::from_sdk_config(&config, opts))
    }

    /// Clients from a given SDK configuration (tests hand moto's), with the operator's retry
    /// and timeout policy, `opts.region` and `opts.endpoint_url`.
    pub fn from_sdk_config(config: &SdkConfig, opts: &AwsOptions) -> Cloud {
        let calls = calls::CallCounter::default();
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(120))
            .build();
        let region = Region::new(opts.region.clone());
        let endpoint = opts.endpoint_url.clone().or_else(|| config.endpoint_url().map(str::to_string));
        // Every request waits for its budget; the HTTP client is the one the SDK would use.
        let budgets = Arc::new(budget::Budgets::new(&opts.budgets));
        let inner = config.http_client().or_else(|| {
            aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(BehaviorVersion::latest()).and_then(
                |plugin| plugin.runtime_components(&RuntimeComponentsBuilder::new("default client")).http_client(),
            )
        });
        let http_client = inner.map(|inner| budget::BudgetedHttpClient::new(inner, budgets.clone()));

        macro_rules! client {
            ($sdk:ident) => {{
                let mut b = $sdk::config::Builder::from(config)
                    .region(region.clone())
                    .retry_config(retry.clone())
                    .timeout_config(timeouts.clone())
                    .interceptor(calls.clone())
                    .interceptor(budget::BudgetTag::new(budgets.clone()));
                if let Some(client) = &http_client {
                    b = b.http_client(client.clone());
                }
                if let Some(url) = &endpoint {
                    b = b.endpoint_url(url);
                }
                b
            }};
        }
        let bucket_owner = sdk::ExpectedBucketOwner::default();
        let s3 = client!(aws_sdk_s3).force_path_style(endpoint.is_some()).interceptor(bucket_owner.clone()).build();
        Cloud {
            aws: Arc::new(Aws {
                iam: aws_sdk_iam::Client::from_conf(client!(aws_sdk_iam).build()),
                kms: aws_sdk_kms::Client::from_conf(client!(aws_sdk_kms).build()),
                s3: aws_sdk_s3::Client::from_conf(s3),
                sts: aws_sdk_sts::Client::from_conf(client!(aws_sdk_sts).build()),
                sqs: aws_sdk_sqs::Client::from_conf(client!(aws_sdk_sqs).build()),
                calls,
                budgets,
                bucket_owner,
            }),
        }
    }

    /// The account the operator's credentials belong to (STS GetCallerIdentity).
    pub async fn account_id(&self) -> Result<String, CloudError> {
        Ok(self.caller_identity().await?.0)
    }

    /// Account and ARN of the operator's credentials; the ARN lets start-up check that
    /// `--operator-role-arn` names the role actually in use (the key and bucket policies admit
    /// only that role).
    pub(crate) async fn caller_identity(&self) -> Result<(String, String), CloudError> {
        let out = self
            .aws
            .sts
            .get_caller_identity()
            .send()
            .await
            .aws_context("sts:GetCallerIdentity", "the operator's credentials")?;
        Ok((out.account().unwrap_or_default().to_string(), out.arn().unwrap_or_default().to_string()))
    }

    /// Counts of the AWS calls made so far.
    pub fn calls(&self) -> CallStats {
        self.aws.calls.snapshot()
    }

    /// The SQS client, for the drift event queue.
    pub(crate) fn sqs(&self) -> aws_sdk_sqs::Client {
        self.aws.sqs.clone()
    }

    /// What each request budget did since this `Cloud` was built.
    pub fn budgets(&self) -> BTreeMap<&'static str, budget::BudgetStats> {
        self.aws.budgets.snapshot()
    }

    /// Creates or repairs the tenant's role, key and bucket, and verifies every setting.
    pub async fn provision(
        &self,
        tenant: &ImagingTenant,
        settings: &Settings,
        known: &CloudIds,
        progress: &mut dyn Progress,
    ) -> CloudReport {
        let aws: &Aws = &self.aws;
        aws.bucket_owner.set(&settings.account_id);
        provision(Resources::of(aws), tenant, settings, known, progress).await
    }

    /// Follows `spec.deletionPolicy` (invariant 5).
    pub async fn retire(&self, tenant: &ImagingTenant, settings: &Settings, known: &CloudIds) -> Retirement {
        let aws: &Aws = &self.aws;
        aws.bucket_owner.set(&settings.account_id);
        retire(Resources::of(aws), tenant, settings, known).await
    }
}

/// An implementation of each of the three traits, for the pipelines.
#[derive(Clone, Copy)]
pub(crate) struct Resources<'a> {
    pub(crate) identities: &'a dyn Identities,
    pub(crate) keys: &'a dyn Keys,
    pub(crate) buckets: &'a dyn Buckets,
}

impl<'a> Resources<'a> {
    /// All three from one implementation.
    pub(crate) fn of(all: &'a (impl Identities + Keys + Buckets)) -> Self {
        Resources { identities: all, keys: all, buckets: all }
    }
}

/// The pipeline, on any implementation of the three traits.
pub(crate) async fn provision(
    resources: Resources<'_>,
    tenant: &ImagingTenant,
    settings: &Settings,
    known: &CloudIds,
    progress: &mut dyn Progress,
) -> CloudReport {
    let Resources { identities, keys, buckets } = resources;
    let mut step = Step::new(known, progress);
    let mut error: Option<CloudError> = None;
    let keep = |e: CloudError, error: &mut Option<CloudError>| {
        tracing::warn!(code = e.code(), "{e}");
        if error.is_none() {
            *error = Some(e.clone());
        }
        e
    };
    let offline = render_with(tenant, settings, None);

    // 1. The role (trust policy and tags): the key policy names it, so it must exist first.
    let role = identities.ensure(&offline.role, &mut step).await.map_err(|e| keep(e, &mut error));

    // 2. The key.
    let key = match &role {
        Ok(_) => keys.ensure(&offline.key, known.key.as_ref(), &mut step).await.map_err(|e| keep(e, &mut error)),
        Err(e) => {
            Err(waiting("WaitingForRole", &format!("the KMS key waits for the IAM role {}", offline.role.name), e))
        }
    };
    let want: TenantAws = render_with(tenant, settings, key.as_ref().ok().map(|k| k.arn.as_str()));

    // 3. The role's permissions, which name the key.
    let permissions = match (&role, &key) {
        (Ok(_), Ok(_)) => identities.ensure_permissions(&want.role, &mut step).await.map_err(|e| keep(e, &mut error)),
        (Err(e), _) => Err(e.clone()),
        (_, Err(e)) => Err(waiting(
            "WaitingForKey",
            &format!("the permissions of IAM role {} wait for the KMS key", want.role.name),
            e,
        )),
    };

    // 4. The bucket, encrypted with the key. A failed status record stops everything.
    let stop = matches!(&error, Some(CloudError::Progress { .. }));
    let bucket = match &key {
        Ok(_) if !stop => buckets.ensure(&want.bucket, &mut step).await.map_err(|e| keep(e, &mut error)),
        Ok(_) => Err(error.clone().expect("stopped on an error")),
        Err(e) => Err(waiting("WaitingForKey", &format!("the S3 bucket waits for the KMS key {}", want.key.alias), e)),
    };
    let secured = match &bucket {
        Ok(_) => buckets.secure(&want.bucket, &mut step).await.map_err(|e| keep(e, &mut error)),
        Err(e) => Err(e.clone()),
    };

    let verdicts = vec![
        match (&role, &permissions) {
            (Ok(r), Ok(())) => Verdict::ok(
                IDENTITY_READY,
                "Provisioned",
                format!(
                    "IAM role {} trusts only the tenant's workload ServiceAccounts and may use only bucket {} and key {}",
                    r.arn, want.bucket.name, want.key.alias
                ),
            ),
            (Err(e), _) | (_, Err(e)) => failed(IDENTITY_READY, e),
        },
        match &key {
            Ok(k) => Verdict::ok(
                KEY_READY,
                "Provisioned",
                format!("KMS key {} ({}) is enabled, rotates yearly and has the tenant key policy", k.id, k.alias),
            ),
            Err(e) => failed(KEY_READY, e),
        },
        match &bucket {
            Ok(b) => Verdict::ok(BUCKET_READY, "Provisioned", format!("S3 bucket {} exists in {}", b.name, b.region)),
            Err(e) => failed(BUCKET_READY, e),
        },
        match &secured {
            Ok(()) => Verdict::ok(
                BUCKET_SECURED,
                "Verified",
                format!(
                    "every setting of bucket {} was read back and matches: public access blocked, owner enforced, SSE-KMS with the tenant key and Bucket Key, versioning{}, lifecycle, access logging, tenant-only TLS policy",
                    want.bucket.name,
                    if want.bucket.object_lock.is_some() { ", Object Lock retention" } else { "" }
                ),
            ),
            Err(e) => failed(BUCKET_SECURED, e),
        },
    ];
    CloudReport { ids: step.ids.clone(), verdicts, events: std::mem::take(&mut step.events), error }
}

/// Invariant 5, on any implementation of the three traits.
pub(crate) async fn retire(
    resources: Resources<'_>,
    tenant: &ImagingTenant,
    settings: &Settings,
    known: &CloudIds,
) -> Retirement {
    let Resources { identities, keys, buckets } = resources;
    let key_arn = known.key.as_ref().map(|k| k.arn.as_str()).filter(|a| !a.is_empty());
    let want = render_with(tenant, settings, key_arn);
    let mut pass = Retiring::new(tenant.spec.deletion_policy);
    // Bucket first, then the key only once the bucket is confirmed gone (or kept), and the role
    // last: nothing is crypto-shredded, and no step runs ahead of the data it protects.
    match buckets.retire(&want.bucket, &mut pass).await {
        Err(e) => return Retirement::Failed(e),
        Ok(BucketRetirement::NotEmpty { counted, more }) => {
            let count = if more { format!("at least {counted}") } else { counted.to_string() };
            let message = format!(
                "bucket {} still holds {count} object versions or delete markers; the operator never deletes objects: empty the bucket (every version) to let deletion continue, or set deletionPolicy to Retain. The KMS key {} is kept until the bucket is gone",
                want.bucket.name, want.key.alias
            );
            return blocked(pass, "BucketNotEmpty", message);
        }
        Ok(BucketRetirement::Unconfirmed { detail }) if pass.policy() == DeletionPolicy::Delete => {
            let message = format!(
                "bucket {} cannot be confirmed gone ({detail}); the KMS key {} is kept, since scheduling its deletion would make every object in that bucket unreadable for good: give the operator s3:ListBucket on the bucket, or remove the bucket yourself, or set deletionPolicy to Retain",
                want.bucket.name, want.key.alias
            );
            return blocked(pass, "BucketNotConfirmedGone", message);
        }
        Ok(BucketRetirement::Gone | BucketRetirement::Retained | BucketRetirement::Unconfirmed { .. }) => {}
    }
    if let Err(e) = keys.retire(&want.key, known.key.as_ref(), &mut pass).await {
        return Retirement::Failed(e);
    }
    if let Err(e) = identities.retire(&want.role, &mut pass).await {
        return Retirement::Failed(e);
    }
    Retirement::Done { events: pass.into_events() }
}

/// A deletion that waits: `DeletionBlocked=True` with `reason`, and an Event saying why.
fn blocked(mut pass: Retiring, reason: &str, message: String) -> Retirement {
    pass.event(DELETION_BLOCKED_EVENT, message.clone());
    Retirement::Blocked { verdict: Verdict::ok(DELETION_BLOCKED, reason, message), events: pass.into_events() }
}

fn waiting(reason: &'static str, what: &str, cause: &CloudError) -> CloudError {
    CloudError::Waiting { reason, detail: format!("{what}, which failed: {cause}") }
}

fn failed(type_: &'static str, e: &CloudError) -> Verdict {
    let hint = match e.class() {
        ErrorClass::AccessDenied => ": grant the operator's role the actions in deploy/iam/operator-policy.json",
        ErrorClass::Throttled | ErrorClass::Server | ErrorClass::Transport => ": retrying with back-off",
        _ => "",
    };
    Verdict::failed(type_, e.code().to_string(), format!("{e}{hint}"))
}
