//! The AWS resources of a tenant: role, key and bucket specs with their policy documents.
//!
//! Pure: the controller converges AWS towards what [`render_with`] returns, and `plan` prints
//! [`render`]. Policies are `serde_json::Value`s, compared as parsed JSON by `cloud::policy`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{ImagingTenant, RetentionMode};
use crate::config::Settings;
use crate::desired::names;

use crate::api::metadata::{MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY, TAG_REPLICA_OF, TAG_TENANT, TAG_TENANT_UID};

/// Shown for the key ARN until the key exists.
pub const KEY_ARN_PLACEHOLDER: &str = "<key-arn>";
/// Shown for the replica key's ARN until it exists.
pub const REPLICA_KEY_ARN_PLACEHOLDER: &str = "<replica-key-arn>";
/// Name of the replication role's one inline policy.
pub const REPLICATION_POLICY_NAME: &str = "imaging-tenant-replication";
/// ID of the one rule of the tenant bucket's replication configuration.
pub const REPLICATION_RULE_ID: &str = "imaging-replica";
/// Shown for the tenant UID offline.
pub const UID_PLACEHOLDER: &str = "<tenant-uid>";
/// Name of the role's one inline policy.
pub const ROLE_POLICY_NAME: &str = "imaging-tenant-access";

const POLICY_VERSION: &str = "2012-10-17";

/// Everything the tenant should have in AWS.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantAws {
    pub role: RoleSpec,
    pub key: KeySpec,
    pub bucket: BucketSpec,
    /// The replica in a second region, when the tenant replicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationAws>,
}

/// Whether and where a tenant replicates: `spec.storage.replication` with the operator's
/// `--replication-region` and `--allow-replication-opt-out`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "replication")]
pub enum ReplicationChoice {
    /// Neither the spec nor the operator asks for a replica.
    Off,
    /// The tenant turned replication off, as the operator allows.
    OptedOut,
    On {
        region: String,
        replication_time_control: bool,
        /// The tenant asked for `enabled: false`, which the operator does not allow.
        opt_out_refused: bool,
    },
    /// Replication is asked for but cannot be done as asked; the reason is a condition reason.
    Invalid { reason: String, message: String },
}

impl ReplicationChoice {
    pub fn of(tenant: &ImagingTenant, settings: &Settings) -> ReplicationChoice {
        let spec = tenant.spec.storage.replication.as_ref();
        let default = settings.replication_region.as_deref();
        let (region, rtc, opt_out_refused) = match spec {
            None => match default {
                None => return ReplicationChoice::Off,
                Some(region) => (region.to_string(), false, false),
            },
            Some(r) if !r.enabled => match default {
                Some(region) if !settings.allow_replication_opt_out => {
                    (r.region.clone().unwrap_or_else(|| region.to_string()), r.replication_time_control, true)
                }
                _ => return ReplicationChoice::OptedOut,
            },
            Some(r) => match r.region.as_deref().or(default) {
                Some(region) => (region.to_string(), r.replication_time_control, false),
                None => {
                    return ReplicationChoice::Invalid {
                        reason: "ReplicationRegionMissing".into(),
                        message: "spec.storage.replication names no region and the operator has no --replication-region: set spec.storage.replication.region".into(),
                    };
                }
            },
        };
        if region == settings.region {
            return ReplicationChoice::Invalid {
                reason: "ReplicaRegionIsSourceRegion".into(),
                message: format!(
                    "the replica region {region} is the region of the tenant's bucket: a replica there does not survive the loss of the region; choose another spec.storage.replication.region"
                ),
            };
        }
        if !settings.region.starts_with('<') && Settings::partition_of(&region) != settings.partition {
            return ReplicationChoice::Invalid {
                reason: "ReplicaRegionInOtherPartition".into(),
                message: format!(
                    "the replica region {region} is in another AWS partition than {}: S3 replicates only within a partition",
                    settings.region
                ),
            };
        }
        ReplicationChoice::On { region, replication_time_control: rtc, opt_out_refused }
    }
}

/// The tenant's replica: a bucket and a key of its own in the replication region, the role S3
/// replicates with, and the source bucket's replication configuration.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationAws {
    pub region: String,
    /// The tenant asked not to replicate, which the operator does not allow.
    #[serde(skip)]
    pub opt_out_refused: bool,
    pub role: RoleSpec,
    pub key: KeySpec,
    pub bucket: BucketSpec,
    pub configuration: ReplicationConfiguration,
}

/// The source bucket's replication configuration, in the form it is compared in.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationConfiguration {
    pub role_arn: String,
    pub rule_id: String,
    pub priority: i32,
    /// The whole bucket (an empty prefix filter).
    pub prefix: String,
    pub destination_bucket_arn: String,
    /// Objects encrypted with the tenant key are replicated...
    pub sse_kms_encrypted_objects: bool,
    /// ...and encrypted with this key in the replica bucket.
    pub replica_kms_key_arn: String,
    pub delete_marker_replication: bool,
    /// S3 Replication Time Control (15 minutes) with replication metrics.
    pub replication_time_control: bool,
}

/// The tenant's IAM role, assumed by its workloads through IRSA.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    pub name: String,
    pub path: String,
    pub arn: String,
    /// ARN of the IAM policy set as the role's permissions boundary.
    pub permissions_boundary: String,
    pub description: String,
    pub trust_policy: Value,
    pub inline_policy_name: String,
    pub inline_policy: Value,
    pub tags: BTreeMap<String, String>,
    /// Whether a `Retain` deletion replaces the trust policy with a deny-all: the tenant role's
    /// is, so offboarding revokes access; the replication role keeps trusting S3 alone, so the
    /// kept bucket's last versions still reach the kept replica.
    #[serde(skip)]
    pub revoke_on_retain: bool,
}

/// The tenant's customer-managed KMS key.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    pub alias: String,
    pub description: String,
    pub key_spec: String,
    pub key_usage: String,
    pub rotation_enabled: bool,
    pub policy: Value,
    pub tags: BTreeMap<String, String>,
    /// Used only when a `Delete` tenant's key is scheduled for deletion.
    pub deletion_window_days: i32,
}

/// The tenant's S3 bucket and every setting the operator keeps on it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub block_public_access: BlockPublicAccess,
    pub object_ownership: String,
    pub encryption: BucketEncryption,
    /// `Enabled` is required when true; when false the operator leaves versioning as it is.
    pub versioning: bool,
    /// Object Lock default retention; Object Lock is enabled at creation when this is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockRetention>,
    /// The whole lifecycle configuration; empty means none.
    pub lifecycle: Vec<LifecycleRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<AccessLogging>,
    pub policy: Value,
    pub tags: BTreeMap<String, String>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockPublicAccess {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl BlockPublicAccess {
    pub const ALL: BlockPublicAccess = BlockPublicAccess {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BucketEncryption {
    pub sse_algorithm: String,
    pub kms_key_arn: String,
    pub bucket_key_enabled: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLockRetention {
    /// `GOVERNANCE` or `COMPLIANCE`, as S3 spells it.
    pub mode: String,
    pub days: i32,
}

/// One lifecycle rule, applying to the whole bucket.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent_version_expiration_days: Option<i32>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub days: i32,
    pub storage_class: String,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogging {
    pub target_bucket: String,
    pub target_prefix: String,
}

/// What `plan` shows: the key ARN is not known before the key exists.
pub fn render(tenant: &ImagingTenant, settings: &Settings) -> TenantAws {
    render_with(tenant, settings, None)
}

/// The tenant's AWS resources; `key_arn` is the live key's ARN once it exists.
pub fn render_with(tenant: &ImagingTenant, settings: &Settings, key_arn: Option<&str>) -> TenantAws {
    render_with_keys(tenant, settings, key_arn, None)
}

/// The tenant's AWS resources with the live ARNs of its key and of its replica key.
pub fn render_with_keys(
    tenant: &ImagingTenant,
    settings: &Settings,
    key_arn: Option<&str>,
    replica_key_arn: Option<&str>,
) -> TenantAws {
    let replication = match ReplicationChoice::of(tenant, settings) {
        ReplicationChoice::On { region, replication_time_control, opt_out_refused } => Some(replication(
            tenant,
            settings,
            &region,
            replication_time_control,
            opt_out_refused,
            key_arn.unwrap_or(KEY_ARN_PLACEHOLDER),
            replica_key_arn.unwrap_or(REPLICA_KEY_ARN_PLACEHOLDER),
        )),
        _ => None,
    };
    let refs = replication.as_ref().map(|r| ReplicaRefs {
        replication_role: &r.role.arn,
        bucket_arn: &r.bucket.arn,
        key_arn: &r.bucket.encryption.kms_key_arn,
        region: &r.region,
    });
    let mut aws = render_source(tenant, settings, key_arn, refs.as_ref());
    aws.replication = replication;
    aws
}

/// What the source side names of the replica.
struct ReplicaRefs<'a> {
    replication_role: &'a str,
    bucket_arn: &'a str,
    key_arn: &'a str,
    region: &'a str,
}

fn render_source(
    tenant: &ImagingTenant,
    settings: &Settings,
    key_arn: Option<&str>,
    replica: Option<&ReplicaRefs<'_>>,
) -> TenantAws {
    let replication_role = replica.map(|r| r.replication_role);
    let key_arn = key_arn.unwrap_or(KEY_ARN_PLACEHOLDER);
    let tags = tags(tenant, settings);
    let role_arn = names::role_arn(tenant, settings);
    let bucket = names::bucket_name(tenant, settings);
    let bucket_arn = names::bucket_arn(tenant, settings);
    let uid = tenant.metadata.uid.as_deref().unwrap_or(UID_PLACEHOLDER);
    let name = tenant.tenant_name();
    TenantAws {
        role: RoleSpec {
            name: names::role_name(tenant, settings),
            path: names::ROLE_PATH.to_string(),
            arn: role_arn.clone(),
            permissions_boundary: settings.permissions_boundary_arn.clone(),
            description: format!("Workloads of imaging tenant {name} ({uid}) in cluster {}", settings.cluster_name),
            trust_policy: trust_policy(tenant, settings),
            inline_policy_name: ROLE_POLICY_NAME.to_string(),
            inline_policy: role_policy(
                settings,
                &bucket_arn,
                key_arn,
                replica.map(|r| (r.bucket_arn, r.key_arn, r.region)),
            ),
            tags: tags.clone(),
            revoke_on_retain: true,
        },
        key: KeySpec {
            alias: names::key_alias(tenant, settings),
            description: format!(
                "Encrypts the S3 bucket {bucket} of imaging tenant {name} ({uid}) in cluster {}",
                settings.cluster_name
            ),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            rotation_enabled: true,
            policy: key_policy(
                settings,
                &settings.region,
                &role_arn,
                &TENANT_KEY_ACTIONS,
                replication_role.map(|r| (r, "kms:Decrypt")),
            ),
            tags: tags.clone(),
            deletion_window_days: tenant.spec.encryption.deletion_window_days,
        },
        bucket: BucketSpec {
            name: bucket.clone(),
            arn: bucket_arn.clone(),
            region: settings.region.clone(),
            block_public_access: BlockPublicAccess::ALL,
            object_ownership: "BucketOwnerEnforced".into(),
            encryption: BucketEncryption {
                sse_algorithm: "aws:kms".into(),
                kms_key_arn: key_arn.to_string(),
                bucket_key_enabled: true,
            },
            versioning: tenant.spec.storage.versioning,
            object_lock: tenant.spec.storage.retention.as_ref().map(|r| ObjectLockRetention {
                mode: match r.mode {
                    RetentionMode::Governance => "GOVERNANCE".into(),
                    RetentionMode::Compliance => "COMPLIANCE".into(),
                },
                days: r.days,
            }),
            lifecycle: lifecycle(tenant),
            logging: settings.audit_log_bucket.as_ref().map(|target| AccessLogging {
                target_bucket: target.clone(),
                target_prefix: names::access_log_prefix(tenant, settings),
            }),
            policy: bucket_policy_of(
                settings,
                &BucketParties { bucket_arn: &bucket_arn, role_arn: &role_arn, key_arn, replication_role },
                Side::Source,
            ),
            tags,
        },
        replication: None,
    }
}

/// The replica side: bucket and key in `region`, as protected as the source, the replication
/// role, and the source bucket's replication configuration.
fn replication(
    tenant: &ImagingTenant,
    settings: &Settings,
    region: &str,
    replication_time_control: bool,
    opt_out_refused: bool,
    key_arn: &str,
    replica_key_arn: &str,
) -> ReplicationAws {
    let source = render_source(tenant, settings, Some(key_arn), None);
    let uid = tenant.metadata.uid.as_deref().unwrap_or(UID_PLACEHOLDER);
    let name = tenant.tenant_name();
    let role_name = names::replication_role_name(tenant, settings);
    let role_arn = names::replication_role_arn(tenant, settings);
    let bucket = names::replica_bucket_name(tenant, settings);
    let bucket_arn = names::replica_bucket_arn(tenant, settings);
    let mut replica_tags = source.bucket.tags.clone();
    replica_tags.insert(TAG_REPLICA_OF.into(), source.bucket.name.clone());
    ReplicationAws {
        region: region.to_string(),
        opt_out_refused,
        role: RoleSpec {
            name: role_name,
            path: names::ROLE_PATH.to_string(),
            arn: role_arn.clone(),
            permissions_boundary: settings.permissions_boundary_arn.clone(),
            description: format!(
                "S3 replication of imaging tenant {name} ({uid}) in cluster {} to {region}",
                settings.cluster_name
            ),
            trust_policy: replication_trust_policy(settings, &source.bucket.arn),
            inline_policy_name: REPLICATION_POLICY_NAME.to_string(),
            inline_policy: replication_role_policy(
                settings,
                region,
                &source.bucket.arn,
                key_arn,
                &bucket_arn,
                replica_key_arn,
            ),
            tags: source.role.tags.clone(),
            revoke_on_retain: false,
        },
        key: KeySpec {
            alias: names::replica_key_alias(tenant, settings),
            description: format!(
                "Encrypts the replica S3 bucket {bucket} of imaging tenant {name} ({uid}) in cluster {}",
                settings.cluster_name
            ),
            policy: key_policy(settings, region, &source.role.arn, &["kms:Decrypt"], Some((&role_arn, "kms:Encrypt"))),
            tags: replica_tags.clone(),
            ..source.key.clone()
        },
        bucket: BucketSpec {
            name: bucket.clone(),
            arn: bucket_arn.clone(),
            region: region.to_string(),
            encryption: BucketEncryption {
                sse_algorithm: "aws:kms".into(),
                kms_key_arn: replica_key_arn.to_string(),
                bucket_key_enabled: true,
            },
            // S3 delivers access logs only to a bucket in the same region as the logged one.
            logging: None,
            policy: bucket_policy_of(
                settings,
                &BucketParties {
                    bucket_arn: &bucket_arn,
                    role_arn: &source.role.arn,
                    key_arn: replica_key_arn,
                    replication_role: Some(&role_arn),
                },
                Side::Replica,
            ),
            tags: replica_tags,
            ..source.bucket.clone()
        },
        configuration: ReplicationConfiguration {
            role_arn,
            rule_id: REPLICATION_RULE_ID.into(),
            priority: 1,
            prefix: String::new(),
            destination_bucket_arn: bucket_arn,
            sse_kms_encrypted_objects: true,
            replica_kms_key_arn: replica_key_arn.to_string(),
            delete_marker_replication: true,
            replication_time_control,
        },
    }
}

/// Only S3, for the tenant's bucket in this account, may assume the replication role.
pub fn replication_trust_policy(settings: &Settings, source_bucket_arn: &str) -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "S3ReplicatesTheTenantBucket",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": settings.account_id},
                "ArnEquals": {"aws:SourceArn": source_bucket_arn},
            },
        }]
    })
}

/// What the replication role may do on the source bucket.
pub const REPLICATION_SOURCE_BUCKET_ACTIONS: [&str; 2] = ["s3:GetReplicationConfiguration", "s3:ListBucket"];
/// What the replication role may do on the source bucket's object versions: read them with
/// their ACL, tags, retention and legal hold, for replication only.
pub const REPLICATION_SOURCE_OBJECT_ACTIONS: [&str; 5] = [
    "s3:GetObjectLegalHold",
    "s3:GetObjectRetention",
    "s3:GetObjectVersionAcl",
    "s3:GetObjectVersionForReplication",
    "s3:GetObjectVersionTagging",
];
/// What the replication role may do in the replica bucket.
pub const REPLICATION_DESTINATION_ACTIONS: [&str; 3] = ["s3:ReplicateDelete", "s3:ReplicateObject", "s3:ReplicateTags"];
/// What the tenant role may do in its replica: read it, and put a delete marker (never delete
/// a version).
pub const TENANT_REPLICA_ACTIONS: [&str; 6] = [
    "s3:DeleteObject",
    "s3:GetBucketLocation",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListBucketVersions",
];

/// The replication role's permissions: read the source's versions, decrypt them with the tenant
/// key through S3 in the source region for that bucket only, and write them into the replica
/// encrypted with the replica key through S3 in the replica region.
pub fn replication_role_policy(
    settings: &Settings,
    region: &str,
    source_bucket_arn: &str,
    key_arn: &str,
    replica_bucket_arn: &str,
    replica_key_arn: &str,
) -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ReadSourceReplicationConfiguration",
                "Effect": "Allow",
                "Action": REPLICATION_SOURCE_BUCKET_ACTIONS,
                "Resource": source_bucket_arn,
            },
            {
                "Sid": "ReadSourceObjectVersions",
                "Effect": "Allow",
                "Action": REPLICATION_SOURCE_OBJECT_ACTIONS,
                "Resource": format!("{source_bucket_arn}/*"),
            },
            {
                "Sid": "ReplicateIntoReplica",
                "Effect": "Allow",
                "Action": REPLICATION_DESTINATION_ACTIONS,
                "Resource": format!("{replica_bucket_arn}/*"),
            },
            {
                "Sid": "DecryptSourceThroughS3",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key_arn,
                "Condition": {"StringEquals": {
                    "kms:ViaService": s3_service_in(settings, &settings.region),
                    "kms:EncryptionContext:aws:s3:arn": source_bucket_arn,
                }},
            },
            {
                "Sid": "EncryptReplicaThroughS3",
                "Effect": "Allow",
                "Action": "kms:Encrypt",
                "Resource": replica_key_arn,
                "Condition": {"StringEquals": {
                    "kms:ViaService": s3_service_in(settings, region),
                    "kms:EncryptionContext:aws:s3:arn": replica_bucket_arn,
                }},
            },
        ]
    })
}

/// Tags of every AWS resource of the tenant: the operator's own, then `spec.tags` (which cannot
/// use the operator's keys: the CRD rejects them).
pub fn tags(tenant: &ImagingTenant, settings: &Settings) -> BTreeMap<String, String> {
    let mut tags = tenant.spec.tags.clone();
    tags.insert(TAG_TENANT.into(), tenant.tenant_name().to_string());
    tags.insert(TAG_TENANT_UID.into(), tenant.metadata.uid.clone().unwrap_or_else(|| UID_PLACEHOLDER.into()));
    tags.insert(TAG_CLUSTER.into(), settings.cluster_name.clone());
    tags.insert(TAG_MANAGED_BY.into(), MANAGED_BY.into());
    tags
}

/// Invariant 4: only the tenant's workload ServiceAccounts, through the cluster's OIDC provider,
/// for the STS audience.
pub fn trust_policy(tenant: &ImagingTenant, settings: &Settings) -> Value {
    let issuer = settings.oidc_issuer();
    let subjects: Vec<String> = tenant
        .namespace_names()
        .iter()
        .map(|ns| format!("system:serviceaccount:{ns}:{}", settings.workload_service_account))
        .collect();
    json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "TenantWorkloadServiceAccounts",
            "Effect": "Allow",
            "Principal": {"Federated": settings.oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    format!("{issuer}:sub"): subjects,
                    format!("{issuer}:aud"): "sts.amazonaws.com",
                }
            }
        }]
    })
}

/// The trust policy of a role kept by a `Retain` deletion (invariant 12): nobody may assume it,
/// so neither a former workload nor a later namespace of the same name reaches the retained data.
/// The break-glass role reaches it through the bucket and key policies.
pub fn retained_trust_policy() -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "RetainedNobodyAssumes",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity", "sts:AssumeRoleWithSAML", "sts:TagSession"],
        }]
    })
}

/// What a tenant role may do on its bucket: list it and its multipart uploads.
pub const TENANT_BUCKET_ACTIONS: [&str; 3] = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"];
/// What a tenant role may do on its objects: read and write images, and delete an object (under
/// versioning that leaves a recoverable delete marker), but not a version, a retention or a
/// legal hold.
pub const TENANT_OBJECT_ACTIONS: [&str; 5] =
    ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"];
/// What a tenant role may do with its key, only through S3.
pub const TENANT_KEY_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey"];

/// Every S3 action on object data or its protection: reading, writing and deleting objects and
/// versions, their ACLs, tags, retention and legal holds, restores, replication, and bypassing
/// governance retention. The bucket policy keeps these to the tenant role and the break-glass
/// role; the operator administers the bucket and never needs one of them.
pub const OBJECT_DATA_ACTIONS: [&str; 10] = [
    "s3:AbortMultipartUpload",
    "s3:BypassGovernanceRetention",
    "s3:DeleteObject*",
    "s3:GetObject*",
    "s3:ListMultipartUploadParts",
    "s3:PutObject*",
    "s3:ReplicateDelete",
    "s3:ReplicateObject",
    "s3:ReplicateTags",
    "s3:RestoreObject",
];

/// Invariant 4: the role's permissions name only the tenant's bucket and key, and its key only
/// for that bucket (the encryption context S3 sends with a Bucket Key is the bucket's ARN).
/// With a replica (`replica`: its bucket ARN, key ARN and region), the tenant role may also read
/// it and decrypt with its key, through S3 in that region, for that bucket.
pub fn role_policy(settings: &Settings, bucket_arn: &str, key_arn: &str, replica: Option<(&str, &str, &str)>) -> Value {
    let mut policy = source_role_policy(settings, bucket_arn, key_arn);
    if let Some((replica_arn, replica_key_arn, region)) = replica {
        let statements = policy["Statement"].as_array_mut().expect("statements");
        statements.push(json!({
            "Sid": "ReadTenantReplica",
            "Effect": "Allow",
            "Action": TENANT_REPLICA_ACTIONS,
            "Resource": [replica_arn.to_string(), format!("{replica_arn}/*")],
        }));
        statements.push(json!({
            "Sid": "DecryptTenantReplicaThroughS3",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": replica_key_arn,
            "Condition": {"StringEquals": {
                "kms:ViaService": s3_service_in(settings, region),
                "kms:EncryptionContext:aws:s3:arn": replica_arn,
            }},
        }));
    }
    policy
}

fn source_role_policy(settings: &Settings, bucket_arn: &str, key_arn: &str) -> Value {
    json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ListTenantBucket",
                "Effect": "Allow",
                "Action": TENANT_BUCKET_ACTIONS,
                "Resource": bucket_arn,
            },
            {
                "Sid": "ReadWriteTenantObjects",
                "Effect": "Allow",
                "Action": TENANT_OBJECT_ACTIONS,
                "Resource": format!("{bucket_arn}/*"),
            },
            {
                "Sid": "UseTenantKeyThroughS3ForTheBucket",
                "Effect": "Allow",
                "Action": TENANT_KEY_ACTIONS,
                "Resource": key_arn,
                "Condition": {"StringEquals": {
                    "kms:ViaService": s3_service(settings),
                    "kms:EncryptionContext:aws:s3:arn": bucket_arn,
                }},
            },
        ]
    })
}

/// What the key administrators may do: everything but use the key for data. The operator needs
/// all of these (`DescribeKey`, policy, rotation, alias, tags, scheduling deletion); the
/// break-glass role gets the same, so a key whose policy went wrong can still be repaired.
pub const KEY_ADMIN_ACTIONS: [&str; 22] = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
];

/// What an auditor role (`--auditor-role-arn`) may do with a tenant key or replica key: read
/// its settings for `evidence`, never use it for data, never change it.
pub const AUDITOR_KEY_ACTIONS: [&str; 5] =
    ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListGrants", "kms:ListResourceTags"];

/// What an auditor role may do on a tenant bucket or replica: read the settings `evidence`
/// judges. Not `s3:ListBucket`, which lists object names; no object, no write.
pub const AUDITOR_BUCKET_ACTIONS: [&str; 10] = [
    "s3:GetBucketLogging",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetReplicationConfiguration",
];

/// Invariant 4: administrators (operator, break-glass) manage the key; only the tenant role uses
/// it, and only through S3 in the tenant's region. Auditor roles read its settings.
///
/// There is deliberately no `arn:aws:iam::<account>:root` statement: that would let every IAM
/// principal of the account with a broad enough identity policy use the key. The price is that
/// only the principals named here can ever change the key policy. If the operator role were
/// deleted, the break-glass role is the way back in (configure one: without it, a lost operator
/// role means a support case with AWS to regain control of the key).
pub fn key_policy(
    settings: &Settings,
    region: &str,
    role_arn: &str,
    tenant_actions: &[&str],
    replication: Option<(&str, &str)>,
) -> Value {
    let through_s3 = json!({
        "StringEquals": {
            "kms:ViaService": s3_service_in(settings, region),
            "kms:CallerAccount": settings.account_id,
        }
    });
    let mut policy = json!({
        "Version": POLICY_VERSION,
        "Id": "imaging-tenant-key",
        "Statement": [
            {
                "Sid": "KeyAdministrators",
                "Effect": "Allow",
                "Principal": {"AWS": administrators(settings)},
                "Action": KEY_ADMIN_ACTIONS,
                "Resource": "*",
            },
            {
                "Sid": "TenantRoleThroughS3",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": tenant_actions,
                "Resource": "*",
                "Condition": through_s3,
            },
        ]
    });
    if !settings.auditor_role_arns.is_empty() {
        policy["Statement"].as_array_mut().expect("statements").push(json!({
            "Sid": "AuditorsReadKeySettings",
            "Effect": "Allow",
            "Principal": {"AWS": settings.auditor_role_arns},
            "Action": AUDITOR_KEY_ACTIONS,
            "Resource": "*",
        }));
    }
    if let Some((replication_role, action)) = replication {
        // The replication role decrypts the source's versions and encrypts the replicas, each
        // only through S3 in its key's region.
        policy["Statement"].as_array_mut().expect("statements").push(json!({
            "Sid": "ReplicationRoleThroughS3",
            "Effect": "Allow",
            "Principal": {"AWS": replication_role},
            "Action": action,
            "Resource": "*",
            "Condition": through_s3,
        }));
    }
    policy
}

/// Invariant 4: TLS 1.2 or better, only the tenant role and the administrators, and no object
/// written with another key. Within that, object data is for the tenant role (and break-glass),
/// never the operator; bucket configuration is for the operator and break-glass, never the
/// tenant role. Auditor roles, when configured, read the bucket's settings and nothing else.
///
/// Uploads without encryption headers are allowed: the bucket's default encryption applies the
/// tenant key to them, and multipart `UploadPart` requests never carry those headers. What is
/// denied is asking for anything else: another KMS key, SSE-S3 or DSSE, or a customer-provided key.
pub fn bucket_policy(settings: &Settings, bucket_arn: &str, role_arn: &str, key_arn: &str) -> Value {
    bucket_policy_of(settings, &BucketParties { bucket_arn, role_arn, key_arn, replication_role: None }, Side::Source)
}

/// Who a bucket policy names.
struct BucketParties<'a> {
    bucket_arn: &'a str,
    role_arn: &'a str,
    key_arn: &'a str,
    /// The replication role, when the tenant replicates.
    replication_role: Option<&'a str>,
}

/// Which bucket of a replicating tenant a policy is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The tenant's bucket: the replication role reads it.
    Source,
    /// The replica: the replication role writes it, the tenant role only reads it.
    Replica,
}

fn bucket_policy_of(settings: &Settings, parties: &BucketParties<'_>, side: Side) -> Value {
    let BucketParties { bucket_arn, role_arn, key_arn, replication_role } = *parties;
    let bucket_and_objects = json!([bucket_arn, format!("{bucket_arn}/*")]);
    let objects = format!("{bucket_arn}/*");
    let auditors = &settings.auditor_role_arns;
    let mut admitted = vec![role_arn.to_string()];
    admitted.extend(administrators(settings));
    admitted.extend(replication_role.map(str::to_string));
    admitted.extend(auditors.iter().cloned());
    let mut data_readers = vec![role_arn.to_string()];
    data_readers.extend(settings.break_glass_role_arn.clone());
    data_readers.extend(replication_role.map(str::to_string));
    // On the source the replication role reads the replication configuration, a bucket setting.
    let mut configurators = administrators(settings);
    if side == Side::Source {
        configurators.extend(replication_role.map(str::to_string));
    }
    // Auditors pass this statement only for reads: DenyAuditorsAllButReadingSettings below.
    configurators.extend(auditors.iter().cloned());
    let tenant_actions: Vec<&str> = OBJECT_DATA_ACTIONS.iter().chain(&TENANT_BUCKET_ACTIONS).copied().collect();
    let mut policy = json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": bucket_and_objects,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "DenyTlsBelowVersion12",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": bucket_and_objects,
                "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
            },
            {
                // aws:PrincipalArn is the role ARN (with its path) for assumed-role sessions, so
                // the operator and break-glass keep managing the bucket.
                "Sid": "DenyAllButTenantRoleAndAdministrators",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": bucket_and_objects,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": admitted}},
            },
            {
                // The operator can rewrite this policy, so this statement alone does not keep
                // it from the data: the guard-rail SCP of `aws-policies` does that.
                "Sid": "DenyObjectDataToAllButTenantRoleAndBreakGlass",
                "Effect": "Deny",
                "Principal": "*",
                "Action": OBJECT_DATA_ACTIONS,
                "Resource": bucket_and_objects,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": data_readers}},
            },
            {
                "Sid": "DenyBucketConfigurationToAllButAdministrators",
                "Effect": "Deny",
                "Principal": "*",
                "NotAction": tenant_actions,
                "Resource": bucket_and_objects,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": configurators}},
            },
            {
                "Sid": "DenyOtherKmsKeys",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {
                    "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}
                },
            },
            {
                "Sid": "DenyEncryptionOtherThanKms",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}},
            },
            {
                "Sid": "DenyCustomerProvidedKeys",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
            },
        ]
    });
    let statements = policy["Statement"].as_array_mut().expect("statements");
    if let Some(replication_role) = replication_role {
        // The replication role, admitted above, does only its part.
        let allowed: Vec<&str> = match side {
            Side::Source => {
                REPLICATION_SOURCE_BUCKET_ACTIONS.iter().chain(&REPLICATION_SOURCE_OBJECT_ACTIONS).copied().collect()
            }
            Side::Replica => REPLICATION_DESTINATION_ACTIONS.to_vec(),
        };
        statements.push(json!({
            "Sid": "DenyReplicationRoleAllButReplication",
            "Effect": "Deny",
            "Principal": "*",
            "NotAction": allowed,
            "Resource": bucket_and_objects,
            "Condition": {"ArnEquals": {"aws:PrincipalArn": replication_role}},
        }));
    }
    if !auditors.is_empty() {
        // Auditors, admitted above, read the bucket's settings: no object, no write.
        statements.push(json!({
            "Sid": "DenyAuditorsAllButReadingSettings",
            "Effect": "Deny",
            "Principal": "*",
            "NotAction": AUDITOR_BUCKET_ACTIONS,
            "Resource": bucket_and_objects,
            "Condition": {"ArnEquals": {"aws:PrincipalArn": auditors}},
        }));
    }
    if side == Side::Replica {
        // The replica is written by replication only: the tenant role reads it.
        statements.push(json!({
            "Sid": "DenyTenantRoleAllButReadingReplica",
            "Effect": "Deny",
            "Principal": "*",
            "NotAction": TENANT_REPLICA_ACTIONS,
            "Resource": bucket_and_objects,
            "Condition": {"ArnEquals": {"aws:PrincipalArn": role_arn}},
        }));
    }
    if !settings.s3_vpc_endpoint_ids.is_empty() {
        // The network perimeter: the tenant role reaches objects only from inside the VPC, so a
        // leaked session of it is useless elsewhere. Administrators are not held to it.
        statements.push(json!({
            "Sid": "DenyTenantDataOutsideVpcEndpoints",
            "Effect": "Deny",
            "Principal": "*",
            "Action": tenant_actions,
            "Resource": bucket_and_objects,
            "Condition": {
                "ArnEquals": {"aws:PrincipalArn": role_arn},
                "StringNotEquals": {"aws:SourceVpce": settings.s3_vpc_endpoint_ids},
            },
        }));
    }
    policy
}

/// The operator role, and the break-glass role when there is one.
pub fn administrators(settings: &Settings) -> Vec<String> {
    let mut admins = vec![settings.operator_role_arn.clone()];
    admins.extend(settings.break_glass_role_arn.clone());
    admins
}

/// `s3.<region>.amazonaws.com` (`.com.cn` in the China partition), the `kms:ViaService` value.
pub fn s3_service(settings: &Settings) -> String {
    s3_service_in(settings, &settings.region)
}

/// `s3.<region>.amazonaws.com` for another region of the partition.
pub fn s3_service_in(settings: &Settings, region: &str) -> String {
    let suffix = if settings.partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("s3.{region}.{suffix}")
}

fn lifecycle(tenant: &ImagingTenant) -> Vec<LifecycleRule> {
    let Some(lifecycle) = &tenant.spec.storage.lifecycle else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    if let Some(days) = lifecycle.archive_after_days {
        rules.push(LifecycleRule {
            id: "imaging-archive".into(),
            transition: Some(Transition { days, storage_class: lifecycle.archive_storage_class.as_str().into() }),
            noncurrent_version_expiration_days: None,
        });
    }
    if let Some(days) = lifecycle.expire_noncurrent_after_days {
        rules.push(LifecycleRule {
            id: "imaging-expire-noncurrent".into(),
            transition: None,
            noncurrent_version_expiration_days: Some(days),
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(manifest: serde_json::Value) -> ImagingTenant {
        serde_json::from_value(manifest).expect("a valid ImagingTenant")
    }

    fn settings() -> Settings {
        Settings {
            cluster_name: "prod-1".into(),
            region: "eu-central-1".into(),
            partition: "aws".into(),
            account_id: "111122223333".into(),
            bucket_prefix: "acme-img".into(),
            audit_log_bucket: Some("acme-audit-logs".into()),
            oidc_provider_arn: "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE".into(),
            operator_role_arn: "arn:aws:iam::111122223333:role/imaging-tenant-operator".into(),
            break_glass_role_arn: Some("arn:aws:iam::111122223333:role/ops/break-glass".into()),
            auditor_role_arns: Vec::new(),
            permissions_boundary_arn: "arn:aws:iam::111122223333:policy/imaging-tenant-boundary".into(),
            workload_service_account: "imaging-workload".into(),
            s3_vpc_endpoint_ids: Vec::new(),
            replication_region: None,
            allow_replication_opt_out: false,
        }
    }

    fn group_a() -> ImagingTenant {
        example(json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": "group-a", "uid": "6f1c3a52-5a3e-4c1e-9d7a-0b6a0c2f1e11"},
            "spec": {
                "namespaces": [{"name": "group-a"}, {"name": "group-a-ai"}],
                "storage": {
                    "versioning": true,
                    "retention": {"mode": "Governance", "days": 2555},
                    "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 2555}
                },
                "encryption": {"deletionWindowDays": 14},
                "tags": {"cost-center": "radiology-a"},
                "deletionPolicy": "Delete"
            }
        }))
    }

    fn group_b() -> ImagingTenant {
        example(json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": "group-b", "uid": "0d9e8c7b-1a2b-4c3d-8e9f-a0b1c2d3e4f5"},
            "spec": {}
        }))
    }

    #[test]
    fn group_a_with_its_key() {
        let key = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        insta::assert_yaml_snapshot!(render_with(&group_a(), &settings(), Some(key)));
    }

    #[test]
    fn group_b_offline_before_its_key_exists() {
        let settings = Settings { audit_log_bucket: None, break_glass_role_arn: None, ..settings() };
        insta::assert_yaml_snapshot!(render(&group_b(), &settings));
    }

    #[test]
    fn plan_with_placeholder_settings() {
        let mut tenant = group_b();
        tenant.metadata.uid = None;
        insta::assert_yaml_snapshot!(render(&tenant, &Settings::placeholder()));
    }

    #[test]
    fn policies_of_one_tenant_never_name_another() {
        let s = settings();
        let (a, b) = (render(&group_a(), &s), render(&group_b(), &s));
        let a_docs = serde_json::to_string(&(&a.role, &a.key, &a.bucket)).unwrap();
        for name in [&b.role.name, &b.bucket.name] {
            assert!(!a_docs.contains(name.as_str()), "{name} appears in group-a's resources");
        }
        let subjects = &a.role.trust_policy["Statement"][0]["Condition"]["StringEquals"];
        let subjects = subjects.as_object().unwrap();
        let sub = subjects.iter().find(|(k, _)| k.ends_with(":sub")).unwrap().1;
        assert_eq!(
            sub,
            &json!([
                "system:serviceaccount:group-a:imaging-workload",
                "system:serviceaccount:group-a-ai:imaging-workload"
            ])
        );
    }

    #[test]
    fn key_policy_gives_the_key_to_no_account_root() {
        let policy = render(&group_a(), &settings()).key.policy.to_string();
        assert!(!policy.contains(":root"), "{policy}");
        assert!(!policy.contains("\"kms:*\""), "{policy}");
    }

    fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
        policy["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid).unwrap_or_else(|| panic!("{sid}"))
    }

    #[test]
    fn tenant_data_is_held_to_the_vpc_endpoints_only_when_some_are_configured() {
        let sid = "DenyTenantDataOutsideVpcEndpoints";
        let key = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let tenant = group_a();
        let without = render_with(&tenant, &settings(), Some(key));
        let statements = without.bucket.policy["Statement"].as_array().unwrap();
        assert!(statements.iter().all(|s| s["Sid"] != sid), "no perimeter unless configured");

        let ids = vec!["vpce-0a1b2c3d4e5f67890".to_string(), "vpce-11112222333344445".to_string()];
        let with = render_with(&tenant, &Settings { s3_vpc_endpoint_ids: ids.clone(), ..settings() }, Some(key));
        let statements = with.bucket.policy["Statement"].as_array().unwrap();
        let perimeter = statements.iter().find(|s| s["Sid"] == sid).expect("the perimeter statement");
        assert_eq!(perimeter["Effect"], "Deny");
        assert_eq!(perimeter["Condition"]["ArnEquals"]["aws:PrincipalArn"], with.role.arn.as_str());
        assert_eq!(perimeter["Condition"]["StringNotEquals"]["aws:SourceVpce"], json!(ids));
        let actions: Vec<&str> = perimeter["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(actions.contains(&"s3:GetObject*") && actions.contains(&"s3:PutObject*"), "{actions:?}");
    }

    #[test]
    fn every_role_carries_the_permissions_boundary() {
        let role = render(&group_a(), &settings()).role;
        assert_eq!(role.permissions_boundary, "arn:aws:iam::111122223333:policy/imaging-tenant-boundary");
    }

    #[test]
    fn the_tenant_role_uses_its_key_only_for_its_bucket_through_s3() {
        let aws = render(&group_a(), &settings());
        let key_use = statement(&aws.role.inline_policy, "UseTenantKeyThroughS3ForTheBucket");
        assert_eq!(key_use["Action"], json!(["kms:Decrypt", "kms:GenerateDataKey"]));
        assert_eq!(
            key_use["Condition"],
            json!({"StringEquals": {
                "kms:ViaService": "s3.eu-central-1.amazonaws.com",
                "kms:EncryptionContext:aws:s3:arn": aws.bucket.arn,
            }})
        );
    }

    #[test]
    fn only_the_tenant_role_and_break_glass_reach_object_data() {
        let s = settings();
        let aws = render(&group_a(), &s);
        let data = statement(&aws.bucket.policy, "DenyObjectDataToAllButTenantRoleAndBreakGlass");
        assert_eq!(data["Effect"], "Deny");
        assert_eq!(data["Action"], json!(OBJECT_DATA_ACTIONS));
        assert_eq!(
            data["Condition"],
            json!({"ArnNotEquals": {"aws:PrincipalArn": [aws.role.arn, s.break_glass_role_arn.clone().unwrap()]}})
        );
        for action in
            ["s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*", "s3:BypassGovernanceRetention", "s3:RestoreObject"]
        {
            assert!(OBJECT_DATA_ACTIONS.contains(&action), "{action}");
        }
        let config = statement(&aws.bucket.policy, "DenyBucketConfigurationToAllButAdministrators");
        assert_eq!(config["Effect"], "Deny");
        let not_action: Vec<&str> =
            config["NotAction"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        for action in OBJECT_DATA_ACTIONS.iter().chain(&TENANT_BUCKET_ACTIONS) {
            assert!(not_action.contains(action), "{action}");
        }
        assert!(!not_action.iter().any(|a| a.starts_with("s3:PutBucket") || a.starts_with("s3:PutLifecycle")));
        assert_eq!(config["Condition"], json!({"ArnNotEquals": {"aws:PrincipalArn": administrators(&s)}}));
    }

    #[test]
    fn the_key_policy_gives_administrators_no_data_use() {
        let policy = render(&group_a(), &settings()).key.policy;
        let admins = statement(&policy, "KeyAdministrators");
        let actions: Vec<&str> = admins["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        for data in ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt"] {
            assert!(!actions.iter().any(|a| a.starts_with(data) || a.ends_with('*')), "{data} in {actions:?}");
        }
    }

    #[test]
    fn the_china_partition_uses_its_own_service_domain() {
        let s = Settings { partition: "aws-cn".into(), region: "cn-north-1".into(), ..settings() };
        assert_eq!(s3_service(&s), "s3.cn-north-1.amazonaws.com.cn");
    }

    fn replicating(spec: Value) -> ImagingTenant {
        let mut t = group_a();
        t.spec.storage.replication = serde_json::from_value(spec).unwrap();
        t
    }

    #[test]
    fn group_a_replicating_with_its_keys() {
        let key = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let replica_key = "arn:aws:kms:eu-west-1:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab";
        let t = replicating(json!({"region": "eu-west-1", "replicationTimeControl": true}));
        insta::assert_yaml_snapshot!(render_with_keys(&t, &settings(), Some(key), Some(replica_key)));
    }

    #[test]
    fn whether_and_where_a_tenant_replicates() {
        let s = settings();
        let with_default = Settings { replication_region: Some("eu-west-1".into()), ..settings() };
        let opt_out = Settings { allow_replication_opt_out: true, ..with_default.clone() };
        let on = |region: &str, opt_out_refused: bool| ReplicationChoice::On {
            region: region.into(),
            replication_time_control: false,
            opt_out_refused,
        };
        assert_eq!(ReplicationChoice::of(&group_b(), &s), ReplicationChoice::Off);
        assert_eq!(ReplicationChoice::of(&group_b(), &with_default), on("eu-west-1", false));
        let own = replicating(json!({"region": "us-west-2"}));
        assert_eq!(ReplicationChoice::of(&own, &s), on("us-west-2", false));
        assert_eq!(ReplicationChoice::of(&own, &with_default), on("us-west-2", false), "the spec wins");
        let off = replicating(json!({"enabled": false}));
        assert_eq!(ReplicationChoice::of(&off, &s), ReplicationChoice::OptedOut);
        assert_eq!(ReplicationChoice::of(&off, &opt_out), ReplicationChoice::OptedOut);
        assert_eq!(ReplicationChoice::of(&off, &with_default), on("eu-west-1", true), "opt-out not allowed");
        let nowhere = replicating(json!({}));
        assert!(matches!(
            ReplicationChoice::of(&nowhere, &s),
            ReplicationChoice::Invalid { reason, .. } if reason == "ReplicationRegionMissing"
        ));
        let same = replicating(json!({"region": "eu-central-1"}));
        assert!(matches!(
            ReplicationChoice::of(&same, &s),
            ReplicationChoice::Invalid { reason, .. } if reason == "ReplicaRegionIsSourceRegion"
        ));
        let china = replicating(json!({"region": "cn-north-1"}));
        assert!(matches!(
            ReplicationChoice::of(&china, &s),
            ReplicationChoice::Invalid { reason, .. } if reason == "ReplicaRegionInOtherPartition"
        ));
    }

    #[test]
    fn the_replication_role_does_only_replication_and_the_tenant_role_only_reads_its_replica() {
        let key = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let replica_key = "arn:aws:kms:eu-west-1:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab";
        let aws =
            render_with_keys(&replicating(json!({"region": "eu-west-1"})), &settings(), Some(key), Some(replica_key));
        let r = aws.replication.as_ref().unwrap();
        let source_fence = statement(&aws.bucket.policy, "DenyReplicationRoleAllButReplication");
        assert_eq!(source_fence["Condition"]["ArnEquals"]["aws:PrincipalArn"], r.role.arn.as_str());
        let allowed: Vec<&str> =
            source_fence["NotAction"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(allowed.contains(&"s3:GetObjectVersionForReplication") && !allowed.contains(&"s3:PutObject"));
        let replica_fence = statement(&r.bucket.policy, "DenyReplicationRoleAllButReplication");
        assert_eq!(replica_fence["NotAction"], json!(REPLICATION_DESTINATION_ACTIONS));
        let tenant_fence = statement(&r.bucket.policy, "DenyTenantRoleAllButReadingReplica");
        assert_eq!(tenant_fence["Condition"]["ArnEquals"]["aws:PrincipalArn"], aws.role.arn.as_str());
        assert!(!tenant_fence["NotAction"].to_string().contains("PutObject"));
        // Each key is used only through S3 in its own region.
        let decrypt = statement(&r.role.inline_policy, "DecryptSourceThroughS3");
        assert_eq!(decrypt["Condition"]["StringEquals"]["kms:ViaService"], "s3.eu-central-1.amazonaws.com");
        let encrypt = statement(&r.role.inline_policy, "EncryptReplicaThroughS3");
        assert_eq!(encrypt["Resource"], replica_key);
        assert_eq!(encrypt["Condition"]["StringEquals"]["kms:ViaService"], "s3.eu-west-1.amazonaws.com");
        assert_eq!(r.bucket.encryption.kms_key_arn, replica_key);
        assert_eq!(r.bucket.object_lock, aws.bucket.object_lock, "the same retention as the source");
        assert!(r.bucket.logging.is_none(), "S3 logs only within a region");
        assert_eq!(r.configuration.replica_kms_key_arn, replica_key);
        assert!(r.configuration.delete_marker_replication && r.configuration.sse_kms_encrypted_objects);
        // The source key admits the replication role for decryption only.
        let source_key = statement(&aws.key.policy, "ReplicationRoleThroughS3");
        assert_eq!(
            (source_key["Action"].as_str(), source_key["Principal"]["AWS"].as_str()),
            (Some("kms:Decrypt"), Some(r.role.arn.as_str()))
        );
    }

    /// Whether `pattern` (with `*` and `?` as IAM reads them) matches `action`, case-insensitively.
    fn matches(pattern: &str, action: &str) -> bool {
        fn go(p: &[u8], a: &[u8]) -> bool {
            match (p.first(), a.first()) {
                (None, None) => true,
                (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
                (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
                (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
                _ => false,
            }
        }
        go(pattern.as_bytes(), action.as_bytes())
    }

    fn list(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            _ => Vec::new(),
        }
    }

    fn names_action(statement: &Value, action: &str) -> bool {
        if statement.get("NotAction").is_some() {
            !list(&statement["NotAction"]).iter().any(|p| matches(p, action))
        } else {
            list(&statement["Action"]).iter().any(|p| matches(p, action))
        }
    }

    /// Whether a bucket policy explicitly denies `action` to a session of `principal` over
    /// TLS 1.3. Statements whose conditions are about the request's encryption headers are
    /// left out: they deny uploads only, and leaving them out only makes this say "not denied"
    /// more often.
    fn bucket_policy_denies(policy: &Value, principal: &str, action: &str) -> bool {
        statements(policy).into_iter().filter(|st| st["Effect"] == "Deny" && names_action(st, action)).any(|st| {
            st["Condition"].as_object().into_iter().flatten().all(|(operator, keys)| {
                keys.as_object().unwrap().iter().all(|(key, value)| match (operator.as_str(), key.as_str()) {
                    ("ArnEquals", "aws:PrincipalArn") => list(value).iter().any(|v| v == principal),
                    ("ArnNotEquals", "aws:PrincipalArn") => !list(value).iter().any(|v| v == principal),
                    ("Bool", "aws:SecureTransport") => value == "true",
                    ("NumericLessThan", "s3:TlsVersion") => false,
                    _ => false,
                })
            })
        })
    }

    /// Whether a key policy allows `action` to `principal` (key policies here have no Deny).
    fn key_policy_allows(policy: &Value, principal: &str, action: &str) -> bool {
        statements(policy).into_iter().any(|st| {
            st["Effect"] == "Allow"
                && names_action(&st, action)
                && list(&st["Principal"]["AWS"]).iter().any(|p| p == principal)
        })
    }

    fn statements(policy: &Value) -> Vec<Value> {
        policy["Statement"].as_array().unwrap().clone()
    }

    #[test]
    fn an_auditor_role_reads_bucket_and_key_settings_and_nothing_else() {
        const AUDITOR: &str = "arn:aws:iam::111122223333:role/auditors/imaging-evidence";
        const STRANGER: &str = "arn:aws:iam::111122223333:role/someone-else";
        let s = Settings {
            auditor_role_arns: vec![AUDITOR.into()],
            replication_region: Some("eu-west-1".into()),
            ..settings()
        };
        let key = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let replica_key = "arn:aws:kms:eu-west-1:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab";
        let aws = render_with_keys(&group_a(), &s, Some(key), Some(replica_key));
        let replica = aws.replication.as_ref().unwrap();
        let writes_and_data = [
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:PutBucketPolicy",
            "s3:DeleteBucketPolicy",
            "s3:PutBucketVersioning",
            "s3:PutEncryptionConfiguration",
            "s3:PutReplicationConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:PutBucketObjectLockConfiguration",
            "s3:BypassGovernanceRetention",
            "s3:DeleteBucket",
            "s3:ReplicateObject",
        ];
        for policy in [&aws.bucket.policy, &replica.bucket.policy] {
            for action in AUDITOR_BUCKET_ACTIONS {
                assert!(!bucket_policy_denies(policy, AUDITOR, action), "the auditor may {action}");
                assert!(bucket_policy_denies(policy, STRANGER, action), "no one else may {action}");
            }
            for action in writes_and_data {
                assert!(bucket_policy_denies(policy, AUDITOR, action), "the auditor may not {action}");
            }
            // The operator and the tenant role keep what they had.
            assert!(!bucket_policy_denies(policy, &s.operator_role_arn, "s3:PutBucketPolicy"));
            assert!(!bucket_policy_denies(policy, &aws.role.arn, "s3:GetObject"));
        }
        for policy in [&aws.key.policy, &replica.key.policy] {
            for action in AUDITOR_KEY_ACTIONS {
                assert!(key_policy_allows(policy, AUDITOR, action), "the auditor may {action}");
            }
            for action in [
                "kms:Decrypt",
                "kms:Encrypt",
                "kms:GenerateDataKey",
                "kms:ReEncryptFrom",
                "kms:CreateGrant",
                "kms:PutKeyPolicy",
                "kms:DisableKeyRotation",
                "kms:ScheduleKeyDeletion",
                "kms:DisableKey",
                "kms:TagResource",
            ] {
                assert!(!key_policy_allows(policy, AUDITOR, action), "the auditor may not {action}");
            }
            assert!(!key_policy_allows(policy, STRANGER, "kms:DescribeKey"));
        }
        // Without auditors, none of this is written.
        let plain = render_with_keys(&group_a(), &settings(), Some(key), None);
        assert!(!plain.bucket.policy.to_string().contains("Auditors"));
        assert!(!plain.key.policy.to_string().contains("Auditors"));
    }
}
