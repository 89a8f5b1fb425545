//! The tenant's S3 bucket with aws-sdk-s3.
//!
//! Every setting is read back, compared in a normalised form with what `desired::aws` says,
//! written only when it differs, and read again after it was written. The operator never
//! deletes an object or an object version: the only deletion here is of an empty bucket.

use std::fmt::Debug;
use std::future::Future;

use async_trait::async_trait;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketLoggingStatus, BucketVersioningStatus,
    CreateBucketConfiguration, DefaultRetention, ExpirationStatus, LifecycleRule as S3LifecycleRule,
    LifecycleRuleFilter, LoggingEnabled, NoncurrentVersionExpiration, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetentionMode, ObjectLockRule, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Transition as S3Transition, TransitionStorageClass,
    VersioningConfiguration,
};
use serde_json::Value;

use super::error::{CloudError, ResourceKind};
use super::resource::{Retiring, Setting};
use super::sdk::{Built, SdkResult, Tags, code_of};
use super::{Aws, BucketRetirement, Buckets, DELETED, Step, policy};
use crate::api::metadata::TAG_TENANT_UID;
use crate::api::{BucketStatus, DeletionPolicy};
use crate::desired::aws::{
    AccessLogging, BlockPublicAccess, BucketEncryption, BucketSpec, LifecycleRule, ObjectLockRetention, Transition,
};

const KIND: ResourceKind = ResourceKind::Bucket;
/// Versions and delete markers counted before a `Delete` tenant's bucket is reported non-empty.
const COUNT_LIMIT: i32 = 1000;

/// The bucket as S3 has it.
struct LiveBucket {
    status: BucketStatus,
    tags: Tags,
}

/// A policy that compares as AWS reads it.
#[derive(Debug)]
pub(super) struct Policy(pub(super) Value);

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        policy::equivalent(&self.0, &other.0)
    }
}

/// Object Lock as read back.
#[derive(Debug, PartialEq)]
pub(super) struct Lock {
    pub(super) enabled: bool,
    pub(super) retention: Option<ObjectLockRetention>,
}

impl Aws {
    /// The bucket of the tenant's name, when it is the tenant's: HeadBucket with the expected
    /// owner puts it in this account, and its tenant-UID tag, written by CreateBucket itself,
    /// must be this tenant's. Without that tag it is not adopted, however empty.
    async fn find_bucket(&self, want: &BucketSpec) -> Result<Option<LiveBucket>, CloudError> {
        let region = match self.s3.head_bucket().bucket(&want.name).send().await {
            Ok(out) => out.bucket_region().unwrap_or(&want.region).to_string(),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                return match status {
                    Some(404) => Ok(None),
                    Some(403) => Err(CloudError::Foreign {
                        kind: KIND,
                        name: want.name.clone(),
                        detail: "HeadBucket answers 403: another AWS account owns it, or the operator lacks s3:ListBucket on it".into(),
                    }),
                    Some(301) => Err(CloudError::Foreign {
                        kind: KIND,
                        name: want.name.clone(),
                        detail: format!("it exists in another region than {}", want.region),
                    }),
                    _ => Err(e).aws_context("s3:HeadBucket", &bucket(want)),
                };
            }
        };
        let tags = self.bucket_tags(want).await?;
        let status = BucketStatus { name: want.name.clone(), arn: want.arn.clone(), region };
        match tags.get(TAG_TENANT_UID) {
            Some(uid) if Some(uid) == want.tags.get(TAG_TENANT_UID).map(String::as_str) => {
                Ok(Some(LiveBucket { status, tags }))
            }
            Some(uid) => Err(CloudError::Foreign {
                kind: KIND,
                name: want.name.clone(),
                detail: format!("its tag {TAG_TENANT_UID} is {uid:?}"),
            }),
            None => Err(CloudError::UntaggedBucket {
                name: want.name.clone(),
                tag: TAG_TENANT_UID,
                uid: want.tags.get(TAG_TENANT_UID).cloned().unwrap_or_default(),
            }),
        }
    }

    /// The access-log bucket exists in this account (HeadBucket with the expected owner) and
    /// blocks public access: its logs name every object key, and so every study path.
    async fn check_log_bucket(&self, name: &str) -> Result<(), CloudError> {
        let refused =
            |detail: &str| CloudError::AuditLogBucket { bucket: name.to_string(), detail: detail.to_string() };
        if let Err(e) = self.s3.head_bucket().bucket(name).send().await {
            return Err(match e.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => refused("does not exist: create it, or unset --audit-log-bucket"),
                Some(403) => refused(
                    "is not this account's, or the operator lacks s3:ListBucket on it (aws-policies --audit-log-bucket grants it)",
                ),
                _ => return Err(e).aws_context("s3:HeadBucket", &format!("access-log bucket {name}")),
            });
        }
        let sent = self.s3.get_public_access_block().bucket(name).send().await;
        let out = sent
            .absent(&["NoSuchPublicAccessBlockConfiguration"])
            .aws_context("s3:GetPublicAccessBlock", &format!("access-log bucket {name}"))?;
        let blocked = out.and_then(|o| o.public_access_block_configuration().cloned()).is_some_and(|c| {
            c.block_public_acls() == Some(true)
                && c.ignore_public_acls() == Some(true)
                && c.block_public_policy() == Some(true)
                && c.restrict_public_buckets() == Some(true)
        });
        if !blocked {
            return Err(refused(
                "does not block public access (all four Block Public Access settings): its logs name every object key; turn them on",
            ));
        }
        Ok(())
    }

    pub(super) async fn bucket_tags(&self, want: &BucketSpec) -> Result<Tags, CloudError> {
        let sent = self.s3.get_bucket_tagging().bucket(&want.name).send().await;
        let out = sent.absent(&["NoSuchTagSet"]).aws_context("s3:GetBucketTagging", &bucket(want))?;
        Ok(out
            .map(|o| o.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
            .unwrap_or_default())
    }

    /// Adds `add` to the bucket's tags (PutBucketTagging replaces the whole set).
    async fn add_bucket_tags(&self, want: &BucketSpec, live: &Tags, add: Tags) -> Result<(), CloudError> {
        let sent = self.s3.put_bucket_tagging().bucket(&want.name).tagging(live.with(&add).s3_tagging()?).send().await;
        sent.aws_context("s3:PutBucketTagging", &bucket(want))?;
        Ok(())
    }

    /// Object versions plus delete markers, up to `limit`, and whether there are more.
    async fn count_versions(&self, want: &BucketSpec, limit: i32) -> Result<(usize, bool), CloudError> {
        let sent = self.s3.list_object_versions().bucket(&want.name).max_keys(limit).send().await;
        let out = sent.aws_context("s3:ListObjectVersions", &bucket(want))?;
        Ok((out.versions().len() + out.delete_markers().len(), out.is_truncated().unwrap_or(false)))
    }

    async fn create_bucket(&self, want: &BucketSpec, step: &mut Step<'_>) -> Result<LiveBucket, CloudError> {
        let mut config = CreateBucketConfiguration::builder().set_tags(Some(Tags(want.tags.clone()).s3()?));
        if want.region != "us-east-1" {
            config = config.location_constraint(BucketLocationConstraint::from(want.region.as_str()));
        }
        let out = self
            .s3
            .create_bucket()
            .bucket(&want.name)
            .create_bucket_configuration(config.build())
            .object_ownership(ObjectOwnership::BucketOwnerEnforced)
            // Object Lock can only be switched on when the bucket is created (or later through
            // PutObjectLockConfiguration on a versioned bucket, which `secure` tries).
            .object_lock_enabled_for_bucket(want.object_lock.is_some())
            .send()
            .await;
        match out {
            // A concurrent pass created it: check it like an existing bucket.
            Err(e) if code_of(&e) == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) if code_of(&e) == Some("BucketAlreadyExists") => {
                return Err(CloudError::Foreign {
                    kind: KIND,
                    name: want.name.clone(),
                    detail: "another AWS account owns a bucket of that name".into(),
                });
            }
            out => {
                out.aws_context("s3:CreateBucket", &bucket(want))?;
            }
        }
        let status = BucketStatus { name: want.name.clone(), arn: want.arn.clone(), region: want.region.clone() };
        step.created(KIND, format!("created S3 bucket {}", want.name));
        let recorded = status.clone();
        step.record_bucket(recorded).await?;
        // The tags went with CreateBucket; `ensure` restores any that S3 does not show.
        let tags = self.bucket_tags(want).await?;
        Ok(LiveBucket { status, tags })
    }

    pub(super) async fn public_access_block(&self, want: &BucketSpec) -> Result<Option<BlockPublicAccess>, CloudError> {
        let sent = self.s3.get_public_access_block().bucket(&want.name).send().await;
        let out = sent
            .absent(&["NoSuchPublicAccessBlockConfiguration"])
            .aws_context("s3:GetPublicAccessBlock", &bucket(want))?;
        Ok(out.and_then(|o| {
            o.public_access_block_configuration().map(|c| BlockPublicAccess {
                block_public_acls: c.block_public_acls().unwrap_or(false),
                ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
                block_public_policy: c.block_public_policy().unwrap_or(false),
                restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
            })
        }))
    }

    async fn put_public_access_block(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let b = want.block_public_access;
        let config = PublicAccessBlockConfiguration::builder()
            .block_public_acls(b.block_public_acls)
            .ignore_public_acls(b.ignore_public_acls)
            .block_public_policy(b.block_public_policy)
            .restrict_public_buckets(b.restrict_public_buckets)
            .build();
        let put = self.s3.put_public_access_block().bucket(&want.name).public_access_block_configuration(config);
        put.send().await.aws_context("s3:PutPublicAccessBlock", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn ownership(&self, want: &BucketSpec) -> Result<Option<String>, CloudError> {
        let sent = self.s3.get_bucket_ownership_controls().bucket(&want.name).send().await;
        let out = sent
            .absent(&["OwnershipControlsNotFoundError"])
            .aws_context("s3:GetBucketOwnershipControls", &bucket(want))?;
        Ok(out.and_then(|o| {
            let rules = o.ownership_controls()?.rules();
            match rules {
                [only] => Some(only.object_ownership().as_str().to_string()),
                [] => None,
                many => Some(many.iter().map(|r| r.object_ownership().as_str()).collect::<Vec<_>>().join("+")),
            }
        }))
    }

    async fn put_ownership(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let rule = OwnershipControlsRule::builder()
            .object_ownership(ObjectOwnership::from(want.object_ownership.as_str()))
            .build()
            .or_config()?;
        let controls = OwnershipControls::builder().rules(rule).build().or_config()?;
        let sent = self.s3.put_bucket_ownership_controls().bucket(&want.name).ownership_controls(controls).send().await;
        sent.aws_context("s3:PutBucketOwnershipControls", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn encryption(&self, want: &BucketSpec) -> Result<Option<BucketEncryption>, CloudError> {
        let sent = self.s3.get_bucket_encryption().bucket(&want.name).send().await;
        let out = sent
            .absent(&["ServerSideEncryptionConfigurationNotFoundError"])
            .aws_context("s3:GetBucketEncryption", &bucket(want))?;
        let Some(config) = out.as_ref().and_then(|o| o.server_side_encryption_configuration()) else {
            return Ok(None);
        };
        let [rule] = config.rules() else {
            // More than one rule is not something this operator writes.
            return Ok(Some(BucketEncryption {
                sse_algorithm: format!("{} rules", config.rules().len()),
                kms_key_arn: String::new(),
                bucket_key_enabled: false,
            }));
        };
        let by_default = rule.apply_server_side_encryption_by_default();
        let mut key = by_default.and_then(|d| d.kms_master_key_id()).unwrap_or_default().to_string();
        // S3 may answer with the key ID where an ARN was written: the same key.
        if !key.is_empty() && !key.starts_with("arn:") && want.encryption.kms_key_arn.ends_with(&format!("key/{key}")) {
            key = want.encryption.kms_key_arn.clone();
        }
        Ok(Some(BucketEncryption {
            sse_algorithm: by_default.map(|d| d.sse_algorithm().as_str().to_string()).unwrap_or_default(),
            kms_key_arn: key,
            bucket_key_enabled: rule.bucket_key_enabled().unwrap_or(false),
        }))
    }

    async fn put_encryption(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let e = &want.encryption;
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::from(e.sse_algorithm.as_str()))
            .kms_master_key_id(&e.kms_key_arn)
            .build()
            .or_config()?;
        let config = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(by_default)
                    .bucket_key_enabled(e.bucket_key_enabled)
                    .build(),
            )
            .build()
            .or_config()?;
        let put = self.s3.put_bucket_encryption().bucket(&want.name).server_side_encryption_configuration(config);
        put.send().await.aws_context("s3:PutBucketEncryption", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn versioning(&self, want: &BucketSpec) -> Result<Option<String>, CloudError> {
        let sent = self.s3.get_bucket_versioning().bucket(&want.name).send().await;
        let out = sent.aws_context("s3:GetBucketVersioning", &bucket(want))?;
        Ok(out.status().map(|s| s.as_str().to_string()))
    }

    async fn put_versioning(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let config = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        let put = self.s3.put_bucket_versioning().bucket(&want.name).versioning_configuration(config);
        put.send().await.aws_context("s3:PutBucketVersioning", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn object_lock(&self, want: &BucketSpec) -> Result<Lock, CloudError> {
        let sent = self.s3.get_object_lock_configuration().bucket(&want.name).send().await;
        let out = sent
            .absent(&["ObjectLockConfigurationNotFoundError"])
            .aws_context("s3:GetObjectLockConfiguration", &bucket(want))?;
        let Some(config) = out.as_ref().and_then(|o| o.object_lock_configuration()) else {
            return Ok(Lock { enabled: false, retention: None });
        };
        Ok(Lock {
            enabled: config.object_lock_enabled() == Some(&ObjectLockEnabled::Enabled),
            retention: config.rule().and_then(|r| r.default_retention()).map(|d| ObjectLockRetention {
                mode: d.mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
                // A retention in years is not one this operator writes: it compares unequal.
                days: d.days().unwrap_or(-d.years().unwrap_or(0)),
            }),
        })
    }

    async fn put_object_lock(&self, want: &BucketSpec, retention: &ObjectLockRetention) -> Result<(), CloudError> {
        let config = ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(
                        DefaultRetention::builder()
                            .mode(ObjectLockRetentionMode::from(retention.mode.as_str()))
                            .days(retention.days)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let put = self.s3.put_object_lock_configuration().bucket(&want.name).object_lock_configuration(config);
        put.send().await.aws_context("s3:PutObjectLockConfiguration", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn lifecycle(&self, want: &BucketSpec) -> Result<Vec<LifecycleRule>, CloudError> {
        let sent = self.s3.get_bucket_lifecycle_configuration().bucket(&want.name).send().await;
        let out = sent
            .absent(&["NoSuchLifecycleConfiguration"])
            .aws_context("s3:GetBucketLifecycleConfiguration", &bucket(want))?;
        let mut rules: Vec<LifecycleRule> =
            out.map(|o| o.rules().iter().map(comparable_rule).collect()).unwrap_or_default();
        rules.sort();
        Ok(rules)
    }

    async fn put_lifecycle(&self, want: &BucketSpec) -> Result<(), CloudError> {
        if want.lifecycle.is_empty() {
            let sent = self.s3.delete_bucket_lifecycle().bucket(&want.name).send().await;
            sent.aws_context("s3:DeleteBucketLifecycle", &bucket(want))?;
            return Ok(());
        }
        let rules = want
            .lifecycle
            .iter()
            .map(|rule| {
                let mut b = S3LifecycleRule::builder()
                    .id(&rule.id)
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix("").build());
                if let Some(t) = &rule.transition {
                    b = b.transitions(
                        S3Transition::builder()
                            .days(t.days)
                            .storage_class(TransitionStorageClass::from(t.storage_class.as_str()))
                            .build(),
                    );
                }
                if let Some(days) = rule.noncurrent_version_expiration_days {
                    b = b.noncurrent_version_expiration(
                        NoncurrentVersionExpiration::builder().noncurrent_days(days).build(),
                    );
                }
                b.build()
            })
            .collect::<Result<Vec<_>, _>>()
            .or_config()?;
        let config = BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().or_config()?;
        let put = self.s3.put_bucket_lifecycle_configuration().bucket(&want.name).lifecycle_configuration(config);
        put.send().await.aws_context("s3:PutBucketLifecycleConfiguration", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn logging(&self, want: &BucketSpec) -> Result<Option<AccessLogging>, CloudError> {
        let sent = self.s3.get_bucket_logging().bucket(&want.name).send().await;
        let out = sent.aws_context("s3:GetBucketLogging", &bucket(want))?;
        Ok(out.logging_enabled().map(|l| AccessLogging {
            target_bucket: l.target_bucket().to_string(),
            target_prefix: l.target_prefix().to_string(),
        }))
    }

    async fn put_logging(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let status = match &want.logging {
            Some(l) => BucketLoggingStatus::builder()
                .logging_enabled(
                    LoggingEnabled::builder()
                        .target_bucket(&l.target_bucket)
                        .target_prefix(&l.target_prefix)
                        .build()
                        .or_config()?,
                )
                .build(),
            None => BucketLoggingStatus::builder().build(),
        };
        let sent = self.s3.put_bucket_logging().bucket(&want.name).bucket_logging_status(status).send().await;
        sent.aws_context("s3:PutBucketLogging", &bucket(want))?;
        Ok(())
    }

    pub(super) async fn bucket_policy(&self, want: &BucketSpec) -> Result<Option<Policy>, CloudError> {
        let sent = self.s3.get_bucket_policy().bucket(&want.name).send().await;
        let out = sent.absent(&["NoSuchBucketPolicy"]).aws_context("s3:GetBucketPolicy", &bucket(want))?;
        out.and_then(|o| o.policy)
            .map(|doc| {
                policy::parse(&doc).map(Policy).map_err(|detail| CloudError::Unreadable {
                    what: "bucket policy",
                    resource: bucket(want),
                    detail,
                })
            })
            .transpose()
    }

    async fn put_bucket_policy(&self, want: &BucketSpec) -> Result<(), CloudError> {
        let sent = self.s3.put_bucket_policy().bucket(&want.name).policy(want.policy.to_string()).send().await;
        sent.aws_context("s3:PutBucketPolicy", &bucket(want))?;
        Ok(())
    }

    /// One setting: `read` compared with `desired`, written by `write` when it differs; what
    /// was wanted and what S3 answers go into `NotConverged`, what was found into `Repaired`.
    async fn setting<T, R>(
        &self,
        step: &mut Step<'_>,
        want: &BucketSpec,
        what: &'static str,
        read: impl Fn() -> R,
        desired: T,
        write: impl Future<Output = Result<(), CloudError>>,
    ) -> Result<(), CloudError>
    where
        T: PartialEq + Debug,
        R: Future<Output = Result<T, CloudError>>,
    {
        Setting { kind: KIND, what, resource: &bucket(want) }
            .converge(
                step,
                read().await?,
                |live| *live == desired,
                async {
                    write.await?;
                    read().await
                },
                |answer| format!("wanted {desired:?}, S3 answers {answer:?}"),
                |found| format!("restored {what} of S3 bucket {} (found {found:?})", want.name),
            )
            .await
    }
}

#[async_trait]
impl Buckets for Aws {
    async fn ensure(&self, want: &BucketSpec, step: &mut Step<'_>) -> Result<BucketStatus, CloudError> {
        let live = match self.find_bucket(want).await? {
            Some(live) => {
                let recorded = live.status.clone();
                step.record_bucket(recorded).await?;
                live
            }
            None => self.create_bucket(want, step).await?,
        };
        let missing = live.tags.missing(&want.tags);
        if !missing.is_empty() {
            let keys = missing.keys();
            self.add_bucket_tags(want, &live.tags, missing).await?;
            step.repaired(KIND, "tags", format!("restored tags {keys} of S3 bucket {}", want.name));
        }
        Ok(live.status)
    }

    async fn secure(&self, want: &BucketSpec, step: &mut Step<'_>) -> Result<(), CloudError> {
        if let Some(logging) = &want.logging {
            self.check_log_bucket(&logging.target_bucket).await?;
        }
        self.setting(
            step,
            want,
            "Block Public Access",
            || self.public_access_block(want),
            Some(want.block_public_access),
            self.put_public_access_block(want),
        )
        .await?;
        self.setting(
            step,
            want,
            "Object Ownership",
            || self.ownership(want),
            Some(want.object_ownership.clone()),
            self.put_ownership(want),
        )
        .await?;
        self.setting(
            step,
            want,
            "default encryption",
            || self.encryption(want),
            Some(want.encryption.clone()),
            self.put_encryption(want),
        )
        .await?;
        if want.versioning {
            self.setting(
                step,
                want,
                "versioning",
                || self.versioning(want),
                Some("Enabled".to_string()),
                self.put_versioning(want),
            )
            .await?;
        }
        if let Some(retention) = &want.object_lock {
            let desired = Lock { enabled: true, retention: Some(retention.clone()) };
            let live = self.object_lock(want).await?;
            let was_enabled = live.enabled;
            Setting { kind: KIND, what: "Object Lock", resource: &bucket(want) }
                .converge(
                    step,
                    live,
                    |lock| *lock == desired,
                    async {
                        self.put_object_lock(want, retention).await.map_err(|e| {
                            if was_enabled {
                                return e;
                            }
                            CloudError::NotConverged {
                                what: "Object Lock",
                                resource: bucket(want),
                                detail: format!(
                                    "spec.storage.retention was set after the bucket was created without Object Lock, and enabling it now failed ({e}); objects written so far have no retention. Enable Object Lock on the bucket (AWS allows it on versioned buckets) or move the data to a new tenant"
                                ),
                            }
                        })?;
                        self.object_lock(want).await
                    },
                    |answer| format!("wanted {desired:?}, S3 answers {answer:?}"),
                    |found| {
                        if found.enabled {
                            format!(
                                "restored the Object Lock default retention of S3 bucket {} (found {:?})",
                                want.name, found.retention
                            )
                        } else {
                            format!(
                                "enabled Object Lock with {} days {} retention on the existing S3 bucket {}; objects written before keep no retention",
                                retention.days, retention.mode, want.name
                            )
                        }
                    },
                )
                .await?;
        }
        self.setting(
            step,
            want,
            "lifecycle rules",
            || self.lifecycle(want),
            want.lifecycle.clone(),
            self.put_lifecycle(want),
        )
        .await?;
        self.setting(
            step,
            want,
            "server access logging",
            || self.logging(want),
            want.logging.clone(),
            self.put_logging(want),
        )
        .await?;
        let live = self.bucket_policy(want).await?.map(|p| p.0);
        Setting { kind: KIND, what: "bucket policy", resource: &bucket(want) }
            .converge_policy(
                step,
                live,
                &want.policy,
                async {
                    self.put_bucket_policy(want).await?;
                    Ok(self.bucket_policy(want).await?.map(|p| p.0))
                },
                "S3",
                format!("restored the bucket policy of S3 bucket {}", want.name),
            )
            .await
    }

    async fn retire(&self, want: &BucketSpec, pass: &mut Retiring) -> Result<BucketRetirement, CloudError> {
        // Only HeadBucket's 404 means gone: a 403, another owner or a missing tag is not.
        let live = match self.find_bucket(want).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(BucketRetirement::Gone),
            Err(CloudError::UntaggedBucket { tag, .. }) => {
                let detail = format!("it has no {tag} tag");
                tracing::warn!(
                    bucket = want.name,
                    "not retiring a bucket that is not known to be the tenant's: {detail}"
                );
                return Ok(BucketRetirement::Unconfirmed { detail });
            }
            Err(CloudError::Foreign { detail, .. }) => {
                tracing::warn!(
                    bucket = want.name,
                    "not retiring a bucket that is not known to be the tenant's: {detail}"
                );
                return Ok(BucketRetirement::Unconfirmed { detail });
            }
            Err(e) => return Err(e),
        };
        match pass.policy() {
            DeletionPolicy::Retain => {
                let kept = format!("S3 bucket {} with its objects", want.name);
                pass.retain(&live.tags, kept, |tags| self.add_bucket_tags(want, &live.tags, tags)).await?;
                Ok(BucketRetirement::Retained)
            }
            DeletionPolicy::Delete => {
                let (counted, more) = self.count_versions(want, COUNT_LIMIT).await?;
                if counted > 0 || more {
                    return Ok(BucketRetirement::NotEmpty { counted, more });
                }
                match self.s3.delete_bucket().bucket(&want.name).send().await {
                    Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(BucketRetirement::Gone),
                    // Written to since it was counted.
                    Err(e) if code_of(&e) == Some("BucketNotEmpty") => {
                        return Ok(BucketRetirement::NotEmpty { counted: 1, more: true });
                    }
                    out => {
                        out.aws_context("s3:DeleteBucket", &bucket(want))?;
                    }
                }
                pass.event(DELETED, format!("deleted the empty S3 bucket {}", want.name));
                Ok(BucketRetirement::Gone)
            }
        }
    }
}

fn bucket(want: &BucketSpec) -> String {
    format!("S3 bucket {}", want.name)
}

/// A lifecycle rule as S3 returns it, in the form `desired::aws` writes. A rule with anything
/// else (a filter, an expiration of current objects, ...) gets an ID that cannot match.
#[allow(deprecated)] // `Prefix` outside `Filter` is deprecated, but S3 may still return it.
fn comparable_rule(rule: &S3LifecycleRule) -> LifecycleRule {
    let whole_bucket = rule.prefix().unwrap_or_default().is_empty()
        && rule.filter().is_none_or(|f| {
            f.prefix().unwrap_or_default().is_empty()
                && f.tag().is_none()
                && f.and().is_none()
                && f.object_size_greater_than().is_none()
                && f.object_size_less_than().is_none()
        });
    let only_ours = whole_bucket
        && rule.status() == &ExpirationStatus::Enabled
        && rule.expiration().is_none()
        && rule.noncurrent_version_transitions().is_empty()
        && rule.abort_incomplete_multipart_upload().is_none()
        && rule.transitions().len() <= 1
        && rule.noncurrent_version_expiration().is_none_or(|n| n.newer_noncurrent_versions().is_none());
    let id = rule.id().unwrap_or_default().to_string();
    LifecycleRule {
        id: if only_ours { id } else { format!("{id} (with settings this operator does not write)") },
        transition: rule.transitions().first().map(|t| Transition {
            days: t.days().unwrap_or_default(),
            storage_class: t.storage_class().map(|c| c.as_str().to_string()).unwrap_or_default(),
        }),
        noncurrent_version_expiration_days: rule.noncurrent_version_expiration().and_then(|n| n.noncurrent_days()),
    }
}
