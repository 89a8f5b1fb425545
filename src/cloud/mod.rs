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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;

use crate::api::condition::{
    BUCKET_READY, BUCKET_SECURED, DELETION_BLOCKED, IDENTITY_READY, KEY_READY, REPLICA_READY, REPLICATION_CONFIGURED,
    Verdict,
};
use crate::api::{
    BucketStatus, DeletionPolicy, ImagingTenant, ImagingTenantStatus, KeyStatus, ReplicaStatus, RoleStatus,
};
use crate::config::Settings;
use crate::desired::aws::{
    BucketSpec, KeySpec, ReplicationAws, ReplicationChoice, ReplicationConfiguration, RoleSpec, TenantAws,
    render_with_keys,
};

mod bucket;
pub mod budget;
mod calls;
mod error;
mod evidence;
mod identity;
mod key;
pub mod policy;
mod replication;
mod resource;
mod reuse;
mod sdk;

pub use calls::CallStats;
pub use error::{CloudError, ErrorClass, ResourceKind};
pub use evidence::CallerIdentity;
pub(crate) use resource::Retiring;
pub(crate) use reuse::within as reading_once;
use sdk::SdkResult;

/// IDs of the tenant's AWS resources, as recorded in `status.{role,key,bucket,replica}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudIds {
    pub role: Option<RoleStatus>,
    pub key: Option<KeyStatus>,
    pub bucket: Option<BucketStatus>,
    pub replica: Option<ReplicaStatus>,
}

impl CloudIds {
    /// The IDs a tenant's status records.
    pub fn of(status: &ImagingTenantStatus) -> CloudIds {
        CloudIds {
            role: status.role.clone(),
            key: status.key.clone(),
            bucket: status.bucket.clone(),
            replica: status.replica.clone(),
        }
    }

    fn replica(&self) -> ReplicaStatus {
        self.replica.clone().unwrap_or_default()
    }
}

/// Which of a tenant's two buckets (with its key and role) a step works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The tenant's bucket and key in the operator's region, and the tenant role.
    Source,
    /// The replica bucket and key in the replication region, and the replication role.
    Replica,
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

/// A setting of one of the tenant's own resources (not the replica's) that a pass found
/// changed and restored: what the controls that judge it are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub kind: ResourceKind,
    /// The setting, as the converge step names it: `trust policy`, `versioning`, ...
    pub what: &'static str,
    /// Whether it is the replica's (bucket, key or replication role) rather than the tenant's own.
    pub replica: bool,
    /// What was found and done, as in the `Repaired` event.
    pub note: String,
}

/// The outcome of [`Cloud::provision`].
#[derive(Clone, Debug, PartialEq)]
pub struct CloudReport {
    pub ids: CloudIds,
    /// IdentityReady, KeyReady, BucketReady, BucketSecured, in that order.
    pub verdicts: Vec<Verdict>,
    pub events: Vec<CloudEvent>,
    /// The settings of the tenant's resources found changed and restored.
    pub repairs: Vec<Repair>,
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
    repairs: Vec<Repair>,
    /// Resources created in this pass: their settings are part of "Created", not repairs.
    created: Vec<(ResourceKind, Side)>,
    /// Which side the resource at hand is on: where its ID is recorded.
    side: Side,
}

impl<'a> Step<'a> {
    fn new(known: &CloudIds, progress: &'a mut dyn Progress) -> Self {
        Step {
            ids: known.clone(),
            recorded: known.clone(),
            progress,
            events: Vec::new(),
            repairs: Vec::new(),
            created: Vec::new(),
            side: Side::Source,
        }
    }

    /// Works on `side` from now on.
    fn on(&mut self, side: Side) -> &mut Self {
        self.side = side;
        self
    }

    pub(crate) async fn record_role(&mut self, role: RoleStatus) -> Result<(), CloudError> {
        match self.side {
            Side::Source => self.record(|ids| ids.role = Some(role)).await,
            Side::Replica => self.record(|ids| ids.replica.get_or_insert_default().role = Some(role)).await,
        }
    }

    pub(crate) async fn record_key(&mut self, key: KeyStatus) -> Result<(), CloudError> {
        match self.side {
            Side::Source => self.record(|ids| ids.key = Some(key)).await,
            Side::Replica => self.record(|ids| ids.replica.get_or_insert_default().key = Some(key)).await,
        }
    }

    pub(crate) async fn record_bucket(&mut self, bucket: BucketStatus) -> Result<(), CloudError> {
        match self.side {
            Side::Source => self.record(|ids| ids.bucket = Some(bucket)).await,
            Side::Replica => self.record(|ids| ids.replica.get_or_insert_default().bucket = Some(bucket)).await,
        }
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
        self.created.push((kind, self.side));
        self.event(CREATED, note);
    }

    /// Whether `kind` on the current side was created in this pass.
    pub(crate) fn is_new(&self, kind: ResourceKind) -> bool {
        self.created.contains(&(kind, self.side))
    }

    /// A `Repaired` event of setting `what`, unless the resource is new in this pass; on the
    /// tenant's own side, also a [`Repair`] for the report.
    pub(crate) fn repaired(&mut self, kind: ResourceKind, what: &'static str, note: String) {
        if self.is_new(kind) {
            return;
        }
        self.repairs.push(Repair { kind, what, replica: self.side == Side::Replica, note: note.clone() });
        self.event(REPAIRED, note);
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
    if let Some(r) = &ids.replica {
        if let Some(r) = &r.role {
            parts.push(format!("replication role {}", r.name));
        }
        if let Some(k) = &r.key {
            parts.push(format!("replica key {}", k.id));
        }
        if let Some(b) = &r.bucket {
            parts.push(format!("replica bucket {}", b.name));
        }
    }
    parts.join(", ")
}

/// The AWS clients of the operator, shared by all tenants: those of its region, and one S3 and
/// one KMS client per replication region, made when a tenant first needs them.
#[derive(Clone)]
pub struct Cloud {
    aws: Arc<Aws>,
    config: SdkConfig,
    opts: AwsOptions,
    regions: Arc<Mutex<HashMap<String, Arc<Aws>>>>,
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
    /// The region of the S3 and KMS clients.
    pub(crate) region: String,
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
        let budgets = Arc::new(budget::Budgets::new(&opts.budgets));
        let aws = Self::clients(config, opts, &opts.region, calls, sdk::ExpectedBucketOwner::default(), budgets);
        Cloud {
            aws: Arc::new(aws),
            config: config.clone(),
            opts: opts.clone(),
            regions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The clients for `region`, counting calls in `calls`, sending `bucket_owner` and waiting
    /// for `budgets`.
    fn clients(
        config: &SdkConfig,
        opts: &AwsOptions,
        region: &str,
        calls: calls::CallCounter,
        bucket_owner: sdk::ExpectedBucketOwner,
        budgets: Arc<budget::Budgets>,
    ) -> Aws {
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(10));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(120))
            .build();
        let region = Region::new(region.to_string());
        let endpoint = opts.endpoint_url.clone().or_else(|| config.endpoint_url().map(str::to_string));
        // Every request waits for its budget; the HTTP client is the one the SDK would use.
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
        let s3 = client!(aws_sdk_s3).force_path_style(endpoint.is_some()).interceptor(bucket_owner.clone()).build();
        Aws {
            iam: aws_sdk_iam::Client::from_conf(client!(aws_sdk_iam).build()),
            kms: aws_sdk_kms::Client::from_conf(client!(aws_sdk_kms).build()),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sts: aws_sdk_sts::Client::from_conf(client!(aws_sdk_sts).build()),
            sqs: aws_sdk_sqs::Client::from_conf(client!(aws_sdk_sqs).build()),
            calls,
            budgets,
            bucket_owner,
            region: region.as_ref().to_string(),
        }
    }

    /// The clients of `region`: the operator's own, or those of a replication region (IAM is
    /// global; S3 and KMS are regional).
    pub(crate) fn region(&self, region: &str) -> Arc<Aws> {
        if region == self.aws.region {
            return self.aws.clone();
        }
        let mut regions = self.regions.lock().expect("the region clients' lock");
        regions
            .entry(region.to_string())
            .or_insert_with(|| {
                Arc::new(Self::clients(
                    &self.config,
                    &self.opts,
                    region,
                    self.aws.calls.clone(),
                    self.aws.bucket_owner.clone(),
                    // One budget table for both regions: the replication region's few calls
                    // are counted against the same rates, which is the cautious side.
                    self.aws.budgets.clone(),
                ))
            })
            .clone()
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
        let replica = self.replica_clients(tenant, settings, known);
        let resources = Resources::of(aws).with_replica(replica.as_deref());
        provision(resources, tenant, settings, known, progress).await
    }

    /// The clients of the tenant's replication region: the one it replicates to, else the one
    /// its status records (a replica made before replication was turned off).
    fn replica_clients(&self, tenant: &ImagingTenant, settings: &Settings, known: &CloudIds) -> Option<Arc<Aws>> {
        let region = match ReplicationChoice::of(tenant, settings) {
            ReplicationChoice::On { region, .. } => Some(region),
            _ => known.replica.as_ref().and_then(|r| r.bucket.as_ref()).map(|b| b.region.clone()),
        };
        region.filter(|r| !r.is_empty()).map(|r| self.region(&r))
    }

    /// Checks the key a replication configuration names: it exists, is enabled, lives in
    /// `region` and carries the tenant's tags as its replica key. `provision` does this before it
    /// writes the configuration and again on the key the configuration then names.
    pub async fn verify_replica_key(
        &self,
        tenant: &ImagingTenant,
        settings: &Settings,
        region: &str,
        key_arn: &str,
    ) -> Result<(), CloudError> {
        let aws = self.region(region);
        let want = render_with_keys(tenant, settings, None, None);
        let Some(replication) = want.replication else {
            return Err(CloudError::Config(format!("tenant {} does not replicate", tenant.tenant_name())));
        };
        aws.verify_replica_key(&replication.key, region, key_arn).await
    }

    /// Follows `spec.deletionPolicy` (invariant 5).
    pub async fn retire(&self, tenant: &ImagingTenant, settings: &Settings, known: &CloudIds) -> Retirement {
        let aws: &Aws = &self.aws;
        aws.bucket_owner.set(&settings.account_id);
        let replica = self.replica_clients(tenant, settings, known);
        retire(Resources::of(aws).with_replica(replica.as_deref()), tenant, settings, known).await
    }
}

/// What the reconcile needs for replication: the source bucket's replication configuration,
/// and the check of the key it names.
#[async_trait]
pub(crate) trait Replications: Send + Sync {
    /// Checks that `key_arn` exists, is enabled, lives in `region` and is the tenant's replica
    /// key (tags); called on the clients of the replica region.
    async fn verify_replica_key(&self, want: &KeySpec, region: &str, key_arn: &str) -> Result<(), CloudError>;
    /// Reads the source bucket's replication configuration, writes it when it differs, and reads
    /// it back; returns the replica key the live configuration names.
    async fn configure(
        &self,
        source: &BucketSpec,
        want: &ReplicationConfiguration,
        step: &mut Step<'_>,
    ) -> Result<String, CloudError>;
    /// Removes the operator's replication configuration from the source bucket, if it has one.
    async fn unconfigure(&self, source: &BucketSpec, step: &mut Step<'_>) -> Result<(), CloudError>;
}

/// An implementation of each trait, for the pipelines: those of the operator's region, and the
/// keys and buckets of the replication region.
#[derive(Clone, Copy)]
pub(crate) struct Resources<'a> {
    pub(crate) identities: &'a dyn Identities,
    pub(crate) keys: &'a dyn Keys,
    pub(crate) buckets: &'a dyn Buckets,
    pub(crate) replications: &'a dyn Replications,
    pub(crate) replica: Option<ReplicaResources<'a>>,
}

/// The replication region's keys and buckets.
#[derive(Clone, Copy)]
pub(crate) struct ReplicaResources<'a> {
    pub(crate) keys: &'a dyn Keys,
    pub(crate) buckets: &'a dyn Buckets,
    pub(crate) replications: &'a dyn Replications,
}

impl<'a> Resources<'a> {
    /// All from one implementation.
    pub(crate) fn of(all: &'a (impl Identities + Keys + Buckets + Replications)) -> Self {
        Resources { identities: all, keys: all, buckets: all, replications: all, replica: None }
    }

    /// With the replication region's implementation.
    pub(crate) fn with_replica(self, replica: Option<&'a (impl Keys + Buckets + Replications)>) -> Self {
        Resources { replica: replica.map(|r| ReplicaResources { keys: r, buckets: r, replications: r }), ..self }
    }
}

/// The pipeline, on any implementation of the traits.
pub(crate) async fn provision(
    resources: Resources<'_>,
    tenant: &ImagingTenant,
    settings: &Settings,
    known: &CloudIds,
    progress: &mut dyn Progress,
) -> CloudReport {
    let Resources { identities, keys, buckets, replications, replica } = resources;
    let mut step = Step::new(known, progress);
    let mut error: Option<CloudError> = None;
    let keep = |e: CloudError, error: &mut Option<CloudError>| {
        tracing::warn!(code = e.code(), "{e}");
        if error.is_none() {
            *error = Some(e.clone());
        }
        e
    };
    let choice = ReplicationChoice::of(tenant, settings);
    let offline = render_with_keys(tenant, settings, None, None);
    let replicating = offline.replication.as_ref();

    // 1. The roles (trust policies and tags): the key policies name them, so they come first.
    let role = identities.ensure(&offline.role, &mut step).await.map_err(|e| keep(e, &mut error));
    let replication_role = match replicating {
        Some(r) => Some(identities.ensure(&r.role, step.on(Side::Replica)).await.map_err(|e| keep(e, &mut error))),
        None => None,
    };
    step.on(Side::Source);

    // 2. The keys. The tenant key's policy names the replication role when there is one.
    let key = match (&role, &replication_role) {
        (Ok(_), None | Some(Ok(_))) => {
            keys.ensure(&offline.key, known.key.as_ref(), &mut step).await.map_err(|e| keep(e, &mut error))
        }
        (Err(e), _) => {
            Err(waiting("WaitingForRole", &format!("the KMS key waits for the IAM role {}", offline.role.name), e))
        }
        (_, Some(Err(e))) => Err(waiting(
            "WaitingForRole",
            &format!(
                "the KMS key waits for the replication role {}",
                replicating.map(|r| r.role.name.as_str()).unwrap_or_default()
            ),
            e,
        )),
    };
    let replica_key = match (replicating, replica, &role, &replication_role) {
        (Some(r), Some(there), Ok(_), Some(Ok(_))) => Some(
            there
                .keys
                .ensure(&r.key, known.replica.as_ref().and_then(|k| k.key.as_ref()), step.on(Side::Replica))
                .await
                .map_err(|e| keep(e, &mut error)),
        ),
        (Some(r), _, Err(e), _) | (Some(r), _, _, Some(Err(e))) => Some(Err(waiting(
            "WaitingForRole",
            &format!("the replica KMS key {} waits for the IAM roles", r.key.alias),
            e,
        ))),
        (Some(_), _, _, _) => Some(Err(CloudError::Config("no clients for the replication region".into()))),
        (None, _, _, _) => None,
    };
    step.on(Side::Source);
    let want: TenantAws = render_with_keys(
        tenant,
        settings,
        key.as_ref().ok().map(|k| k.arn.as_str()),
        replica_key.as_ref().and_then(|k| k.as_ref().ok()).map(|k| k.arn.as_str()),
    );

    // 3. The roles' permissions, which name the keys.
    let replica_key_error = replica_key.as_ref().and_then(|k| k.as_ref().err());
    let permissions = match (&role, &key, replica_key_error) {
        (Ok(_), Ok(_), None) => {
            identities.ensure_permissions(&want.role, &mut step).await.map_err(|e| keep(e, &mut error))
        }
        (Err(e), _, _) => Err(e.clone()),
        (_, Err(e), _) => Err(waiting(
            "WaitingForKey",
            &format!("the permissions of IAM role {} wait for the KMS key", want.role.name),
            e,
        )),
        (_, _, Some(e)) => Err(waiting(
            "WaitingForKey",
            &format!("the permissions of IAM role {} wait for the replica KMS key", want.role.name),
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

    // 5. The replica, then replication from the bucket to it.
    let replicated = match (&want.replication, replica, replica_key) {
        (Some(r), Some(there), Some(replica_key)) => {
            let stop = matches!(&error, Some(CloudError::Progress { .. }));
            let outcome = replicate(
                Replicate { source: there, source_side: replications, identities },
                r,
                &want.bucket,
                replica_key,
                replication_role.clone().expect("a replication role with a replica"),
                bucket.is_ok() && secured.is_ok() && !stop,
                &mut step,
            )
            .await;
            for e in outcome.errors() {
                keep(e.clone(), &mut error);
            }
            Some(outcome)
        }
        _ => None,
    };
    if matches!(choice, ReplicationChoice::Off | ReplicationChoice::OptedOut) && bucket.is_ok() {
        step.on(Side::Source);
        if let Err(e) = replications.unconfigure(&want.bucket, &mut step).await {
            keep(e, &mut error);
        }
    }

    let mut verdicts = vec![
        match (&role, &permissions) {
            (Ok(r), Ok(())) => Verdict::ok(
                IDENTITY_READY,
                "Provisioned",
                format!(
                    "IAM role {} trusts only the tenant's workload ServiceAccounts and may use only bucket {} and key {}{}",
                    r.arn,
                    want.bucket.name,
                    want.key.alias,
                    want.replication
                        .as_ref()
                        .map(|r| format!(", and read its replica {}", r.bucket.name))
                        .unwrap_or_default()
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
    match (&choice, &want.replication, replicated) {
        (ReplicationChoice::Invalid { reason, message }, _, _) => {
            verdicts.push(Verdict::failed(REPLICA_READY, reason.clone(), message.clone()));
            verdicts.push(Verdict::failed(REPLICATION_CONFIGURED, reason.clone(), message.clone()));
        }
        (_, Some(r), Some(outcome)) => verdicts.extend(outcome.verdicts(r)),
        _ => {}
    }
    CloudReport {
        ids: step.ids.clone(),
        verdicts,
        events: std::mem::take(&mut step.events),
        repairs: std::mem::take(&mut step.repairs),
        error,
    }
}

/// Who does what for replication: the replication region's keys, buckets and replications,
/// the source region's replications (the configuration lives on the source bucket), and IAM.
struct Replicate<'a> {
    source: ReplicaResources<'a>,
    source_side: &'a dyn Replications,
    identities: &'a dyn Identities,
}

/// What replication came to.
struct Replicated {
    key: Result<KeyStatus, CloudError>,
    bucket: Result<BucketStatus, CloudError>,
    secured: Result<(), CloudError>,
    role: Result<RoleStatus, CloudError>,
    permissions: Result<(), CloudError>,
    configured: Result<String, CloudError>,
}

impl Replicated {
    fn errors(&self) -> impl Iterator<Item = &CloudError> {
        [
            self.key.as_ref().err(),
            self.bucket.as_ref().err(),
            self.secured.as_ref().err(),
            self.role.as_ref().err(),
            self.permissions.as_ref().err(),
            self.configured.as_ref().err(),
        ]
        .into_iter()
        .flatten()
    }

    fn verdicts(self, want: &ReplicationAws) -> Vec<Verdict> {
        let replica = match (&self.key, &self.bucket, &self.secured) {
            (Ok(k), Ok(b), Ok(())) => Verdict::ok(
                REPLICA_READY,
                "Verified",
                format!(
                    "replica bucket {} exists in {} and every setting was read back and matches: public access blocked, owner enforced, SSE-KMS with its own key {} ({}) and Bucket Key, versioning{}, lifecycle, TLS-only policy that lets the tenant role read it",
                    b.name,
                    b.region,
                    k.id,
                    k.alias,
                    if want.bucket.object_lock.is_some() { ", Object Lock retention" } else { "" }
                ),
            ),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => failed(REPLICA_READY, e),
        };
        let configured = match (&self.role, &self.permissions, &self.configured) {
            (Ok(r), Ok(()), Ok(key)) => {
                let rtc = if want.configuration.replication_time_control {
                    ", with Replication Time Control (15 minutes) and metrics"
                } else {
                    ""
                };
                if want.opt_out_refused {
                    Verdict::ok(
                        REPLICATION_CONFIGURED,
                        "OptOutNotAllowed",
                        format!(
                            "spec.storage.replication.enabled is false, but the operator runs without --allow-replication-opt-out: bucket {} still replicates to {} in {} through IAM role {}",
                            want.configuration.destination_bucket_arn, want.bucket.name, want.region, r.arn
                        ),
                    )
                } else {
                    Verdict::ok(
                        REPLICATION_CONFIGURED,
                        "Replicating",
                        format!(
                            "every new object version and delete marker replicates to {} in {}, encrypted with replica key {key} (verified: enabled, in {}, the tenant's), through IAM role {}{rtc}",
                            want.bucket.name, want.region, want.region, r.arn
                        ),
                    )
                }
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => failed(REPLICATION_CONFIGURED, e),
        };
        vec![replica, configured]
    }
}

/// The replica key (ensured already), the replica bucket and its settings, the replication
/// role's permissions, and the source bucket's replication configuration, with the key it names
/// verified before the write and after.
async fn replicate(
    by: Replicate<'_>,
    want: &ReplicationAws,
    source: &BucketSpec,
    key: Result<KeyStatus, CloudError>,
    role: Result<RoleStatus, CloudError>,
    source_ready: bool,
    step: &mut Step<'_>,
) -> Replicated {
    let stop = |step: &Step<'_>| step.ids != step.recorded;
    step.on(Side::Replica);
    let bucket = match &key {
        Ok(_) if !stop(step) => by.source.buckets.ensure(&want.bucket, step).await,
        Ok(_) => {
            Err(CloudError::Waiting { reason: "WaitingForStatus", detail: "the IDs so far are not recorded".into() })
        }
        Err(e) => Err(waiting(
            "WaitingForKey",
            &format!("the replica bucket waits for the replica KMS key {}", want.key.alias),
            e,
        )),
    };
    let secured = match &bucket {
        Ok(_) => by.source.buckets.secure(&want.bucket, step).await,
        Err(e) => Err(e.clone()),
    };
    let permissions = match (&role, &key) {
        (Ok(_), Ok(_)) => by.identities.ensure_permissions(&want.role, step).await,
        (Err(e), _) => Err(e.clone()),
        (_, Err(e)) => Err(waiting(
            "WaitingForKey",
            &format!("the permissions of replication role {} wait for the replica KMS key", want.role.name),
            e,
        )),
    };
    let configured = match (&secured, &permissions) {
        (Ok(()), Ok(())) if source_ready => {
            let key_arn = &want.configuration.replica_kms_key_arn;
            match by.source.replications.verify_replica_key(&want.key, &want.region, key_arn).await {
                Err(e) => Err(e),
                Ok(()) => {
                    step.on(Side::Source);
                    let named = by.source_side.configure(source, &want.configuration, step).await;
                    step.on(Side::Replica);
                    match named {
                        Ok(named) => by
                            .source
                            .replications
                            .verify_replica_key(&want.key, &want.region, &named)
                            .await
                            .map(|()| named),
                        Err(e) => Err(e),
                    }
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => Err(waiting(
            "WaitingForReplica",
            &format!("the replication configuration of bucket {} waits for the replica", source.name),
            e,
        )),
        _ => Err(CloudError::Waiting {
            reason: "WaitingForBucket",
            detail: format!(
                "the replication configuration waits for bucket {} to be in place and verified (see BucketSecured)",
                source.name
            ),
        }),
    };
    step.on(Side::Source);
    Replicated { key, bucket, secured, role, permissions, configured }
}

/// Invariant 5, on any implementation of the traits; the replica follows the source.
pub(crate) async fn retire(
    resources: Resources<'_>,
    tenant: &ImagingTenant,
    settings: &Settings,
    known: &CloudIds,
) -> Retirement {
    let Resources { identities, keys, buckets, replica, .. } = resources;
    let key_arn = known.key.as_ref().map(|k| k.arn.as_str()).filter(|a| !a.is_empty());
    let recorded = known.replica();
    let replica_key_arn = recorded.key.as_ref().map(|k| k.arn.as_str()).filter(|a| !a.is_empty());
    let mut want = render_with_keys(tenant, settings, key_arn, replica_key_arn);
    if want.replication.is_none() && !recorded.is_empty() {
        // Replication was turned off after the replica was made: it is retired all the same,
        // in the region its status records.
        want.replication = replica_of_record(tenant, settings, &recorded, key_arn);
    }
    let mut pass = Retiring::new(tenant.spec.deletion_policy);
    // Bucket first, then the key only once the bucket is confirmed gone (or kept), and the role
    // last: nothing is crypto-shredded, and no step runs ahead of the data it protects.
    if let Some(blocked) = retire_bucket(buckets, &want.bucket, &want.key.alias, "bucket", &mut pass).await {
        return blocked;
    }
    let replication = want.replication.as_ref().zip(replica);
    if let Some((r, there)) = replication
        && let Some(blocked) = retire_bucket(there.buckets, &r.bucket, &r.key.alias, "replica bucket", &mut pass).await
    {
        return blocked;
    }
    if let Err(e) = keys.retire(&want.key, known.key.as_ref(), &mut pass).await {
        return Retirement::Failed(e);
    }
    if let Some((r, there)) = replication
        && let Err(e) = there.keys.retire(&r.key, recorded.key.as_ref(), &mut pass).await
    {
        return Retirement::Failed(e);
    }
    if let Err(e) = identities.retire(&want.role, &mut pass).await {
        return Retirement::Failed(e);
    }
    if let Some((r, _)) = replication
        && let Err(e) = identities.retire(&r.role, &mut pass).await
    {
        return Retirement::Failed(e);
    }
    if want.replication.is_some() && replica.is_none() {
        return Retirement::Failed(CloudError::Config("no clients for the replication region".into()));
    }
    Retirement::Done { events: pass.into_events() }
}

/// The replica a tenant's status records, as it was made: in the recorded region.
fn replica_of_record(
    tenant: &ImagingTenant,
    settings: &Settings,
    recorded: &ReplicaStatus,
    key_arn: Option<&str>,
) -> Option<ReplicationAws> {
    let region = recorded.bucket.as_ref().map(|b| b.region.clone()).filter(|r| !r.is_empty())?;
    let mut as_made = tenant.clone();
    as_made.spec.storage.replication =
        Some(crate::api::Replication { enabled: true, region: Some(region), replication_time_control: false });
    let replica_key_arn = recorded.key.as_ref().map(|k| k.arn.as_str());
    render_with_keys(&as_made, settings, key_arn, replica_key_arn).replication
}

/// Retires one bucket; `Some` when the deletion must wait (the key `alias` is kept).
async fn retire_bucket(
    buckets: &dyn Buckets,
    bucket: &BucketSpec,
    alias: &str,
    what: &str,
    pass: &mut Retiring,
) -> Option<Retirement> {
    let (reason, message) = match buckets.retire(bucket, pass).await {
        Err(e) => return Some(Retirement::Failed(e)),
        Ok(BucketRetirement::NotEmpty { counted, more }) => {
            let count = if more { format!("at least {counted}") } else { counted.to_string() };
            (
                if what == "bucket" { "BucketNotEmpty" } else { "ReplicaBucketNotEmpty" },
                format!(
                    "{what} {} still holds {count} object versions or delete markers; the operator never deletes objects: empty the bucket (every version) to let deletion continue, or set deletionPolicy to Retain. The KMS key {alias} is kept until the bucket is gone",
                    bucket.name
                ),
            )
        }
        Ok(BucketRetirement::Unconfirmed { detail }) if pass.policy() == DeletionPolicy::Delete => (
            if what == "bucket" { "BucketNotConfirmedGone" } else { "ReplicaBucketNotConfirmedGone" },
            format!(
                "{what} {} cannot be confirmed gone ({detail}); the KMS key {alias} is kept, since scheduling its deletion would make every object in that bucket unreadable for good: give the operator s3:ListBucket on the bucket, or remove the bucket yourself, or set deletionPolicy to Retain",
                bucket.name
            ),
        ),
        Ok(BucketRetirement::Gone | BucketRetirement::Retained | BucketRetirement::Unconfirmed { .. }) => return None,
    };
    let taken = std::mem::replace(pass, Retiring::new(pass.policy()));
    Some(blocked(taken, reason, message))
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
    Verdict::failed(type_, e.code().to_string(), format!("{e}{hint}")).stalled_if(!e.is_retryable())
}
