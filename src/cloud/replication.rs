//! Replication of the tenant's bucket with aws-sdk-s3: the source bucket's replication
//! configuration, converged like every setting, and the check of the replica key it names.

use async_trait::async_trait;
use aws_sdk_kms::types::KeyState;
use aws_sdk_s3::types::{
    DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, EncryptionConfiguration, Metrics,
    MetricsStatus, ReplicationConfiguration as S3ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter,
    ReplicationRuleStatus, ReplicationTime, ReplicationTimeStatus, ReplicationTimeValue, SourceSelectionCriteria,
    SseKmsEncryptedObjects, SseKmsEncryptedObjectsStatus,
};

use super::error::{CloudError, ResourceKind};
use super::resource::Setting;
use super::sdk::{Built, SdkResult};
use super::{Aws, REPAIRED, Replications, Step};
use crate::api::metadata::{TAG_REPLICA_OF, TAG_TENANT_UID};
use crate::desired::aws::{BucketSpec, KeySpec, REPLICATION_RULE_ID, ReplicationConfiguration};

const NO_CONFIGURATION: [&str; 1] = ["ReplicationConfigurationNotFoundError"];
/// Replication Time Control's only threshold, in minutes.
const RTC_MINUTES: i32 = 15;

impl Aws {
    /// The source bucket's replication configuration in the form it is compared in; `None`
    /// when it has none.
    pub(super) async fn replication(
        &self,
        source: &BucketSpec,
    ) -> Result<Option<ReplicationConfiguration>, CloudError> {
        let sent = self.s3.get_bucket_replication().bucket(&source.name).send().await;
        let out = sent.absent(&NO_CONFIGURATION).aws_context("s3:GetBucketReplication", &bucket(source))?;
        Ok(out.and_then(|o| o.replication_configuration().map(comparable)))
    }

    async fn put_replication(&self, source: &BucketSpec, want: &ReplicationConfiguration) -> Result<(), CloudError> {
        let mut destination = Destination::builder().bucket(&want.destination_bucket_arn).encryption_configuration(
            EncryptionConfiguration::builder().replica_kms_key_id(&want.replica_kms_key_arn).build(),
        );
        if want.replication_time_control {
            let minutes = ReplicationTimeValue::builder().minutes(RTC_MINUTES).build();
            destination = destination
                .replication_time(
                    ReplicationTime::builder()
                        .status(ReplicationTimeStatus::Enabled)
                        .time(minutes.clone())
                        .build()
                        .or_config()?,
                )
                .metrics(
                    Metrics::builder().status(MetricsStatus::Enabled).event_threshold(minutes).build().or_config()?,
                );
        }
        let rule = ReplicationRule::builder()
            .id(&want.rule_id)
            .priority(want.priority)
            .status(ReplicationRuleStatus::Enabled)
            .filter(ReplicationRuleFilter::builder().prefix(&want.prefix).build())
            .source_selection_criteria(
                SourceSelectionCriteria::builder()
                    .sse_kms_encrypted_objects(
                        SseKmsEncryptedObjects::builder()
                            .status(if want.sse_kms_encrypted_objects {
                                SseKmsEncryptedObjectsStatus::Enabled
                            } else {
                                SseKmsEncryptedObjectsStatus::Disabled
                            })
                            .build()
                            .or_config()?,
                    )
                    .build(),
            )
            .delete_marker_replication(
                DeleteMarkerReplication::builder()
                    .status(if want.delete_marker_replication {
                        DeleteMarkerReplicationStatus::Enabled
                    } else {
                        DeleteMarkerReplicationStatus::Disabled
                    })
                    .build(),
            )
            .destination(destination.build().or_config()?)
            .build()
            .or_config()?;
        let config = S3ReplicationConfiguration::builder().role(&want.role_arn).rules(rule).build().or_config()?;
        let sent = self.s3.put_bucket_replication().bucket(&source.name).replication_configuration(config).send().await;
        sent.aws_context("s3:PutBucketReplication", &bucket(source))?;
        Ok(())
    }
}

#[async_trait]
impl Replications for Aws {
    async fn verify_replica_key(&self, want: &KeySpec, region: &str, key_arn: &str) -> Result<(), CloudError> {
        let refused = |detail: String| CloudError::ReplicaKeyRefused { key: key_arn.to_string(), detail };
        // arn:<partition>:kms:<region>:<account>:key/<id>
        let parts: Vec<&str> = key_arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _, "kms", key_region, _, id] if id.starts_with("key/") => {
                if *key_region != region {
                    return Err(refused(format!("it is in {key_region}, not in the replica region {region}")));
                }
            }
            _ => return Err(refused("it is not the ARN of a KMS key".into())),
        }
        let name = format!("replica KMS key {key_arn}");
        let sent = self.kms.describe_key().key_id(key_arn).send().await;
        let Some(out) = sent.absent(&["NotFoundException"]).aws_context("kms:DescribeKey", &name)? else {
            return Err(refused(format!("it does not exist in {region}")));
        };
        let Some(meta) = out.key_metadata() else {
            return Err(refused("KMS describes no metadata for it".into()));
        };
        if meta.arn() != Some(key_arn) {
            return Err(refused(format!("KMS describes it as {:?}", meta.arn())));
        }
        if meta.key_state() != Some(&KeyState::Enabled) || !meta.enabled() {
            let state = meta.key_state().map(|s| s.as_str()).unwrap_or("in no known state");
            return Err(refused(format!("it is {state}, not Enabled: S3 could not encrypt replicas with it")));
        }
        let sent = self.kms.list_resource_tags().key_id(key_arn).send().await;
        let tags = sent.aws_context("kms:ListResourceTags", &name)?;
        let tag = |key: &str| tags.tags().iter().find(|t| t.tag_key() == key).map(|t| t.tag_value().to_string());
        for key in [TAG_TENANT_UID, TAG_REPLICA_OF] {
            if tag(key).as_deref() != want.tags.get(key).map(String::as_str) {
                return Err(refused(format!(
                    "its tag {key} is {:?}, not {:?}: it is not this tenant's replica key",
                    tag(key),
                    want.tags.get(key)
                )));
            }
        }
        Ok(())
    }

    async fn configure(
        &self,
        source: &BucketSpec,
        want: &ReplicationConfiguration,
        step: &mut Step<'_>,
    ) -> Result<String, CloudError> {
        let resource = bucket(source);
        let live = self.replication(source).await?;
        Setting { kind: ResourceKind::Bucket, what: "replication configuration", resource: &resource }
            .converge(
                step,
                live,
                |live| live.as_ref() == Some(want),
                async {
                    self.put_replication(source, want).await?;
                    self.replication(source).await
                },
                |answer| format!("wanted {want:?}, S3 answers {answer:?}"),
                |found| {
                    format!("restored the replication configuration of S3 bucket {} (found {found:?})", source.name)
                },
            )
            .await?;
        Ok(want.replica_kms_key_arn.clone())
    }

    async fn unconfigure(&self, source: &BucketSpec, step: &mut Step<'_>) -> Result<(), CloudError> {
        // Only the operator's own rule: a configuration someone else wrote is left alone.
        let Some(live) = self.replication(source).await? else { return Ok(()) };
        if !live.rule_id.starts_with(REPLICATION_RULE_ID) {
            return Ok(());
        }
        let sent = self.s3.delete_bucket_replication().bucket(&source.name).send().await;
        sent.aws_context("s3:DeleteBucketReplication", &bucket(source))?;
        step.event(
            REPAIRED,
            format!(
                "removed the replication configuration of S3 bucket {}: the tenant no longer replicates; the replica {} and its key are kept",
                source.name, live.destination_bucket_arn
            ),
        );
        Ok(())
    }
}

/// A replication configuration as S3 returns it, in the form `desired::aws` writes. One with
/// anything else (more rules, a filter, another storage class, ...) gets a rule ID that
/// cannot match.
#[allow(deprecated)] // `Prefix` outside `Filter` is deprecated, but S3 may still return it.
fn comparable(config: &S3ReplicationConfiguration) -> ReplicationConfiguration {
    let rules = config.rules();
    let Some(rule) = rules.first() else {
        return ReplicationConfiguration {
            role_arn: config.role().to_string(),
            rule_id: "(no rule)".into(),
            priority: 0,
            prefix: String::new(),
            destination_bucket_arn: String::new(),
            sse_kms_encrypted_objects: false,
            replica_kms_key_arn: String::new(),
            delete_marker_replication: false,
            replication_time_control: false,
        };
    };
    let destination = rule.destination();
    let filter = rule.filter();
    let prefix = filter.and_then(|f| f.prefix()).or(rule.prefix()).unwrap_or_default().to_string();
    let rtc = destination.and_then(|d| d.replication_time()).is_some_and(|t| {
        *t.status() == ReplicationTimeStatus::Enabled && t.time().and_then(|v| v.minutes()) == Some(RTC_MINUTES)
    });
    let metrics = destination.and_then(|d| d.metrics()).is_some_and(|m| {
        *m.status() == MetricsStatus::Enabled && m.event_threshold().and_then(|v| v.minutes()) == Some(RTC_MINUTES)
    });
    let only_ours = rules.len() == 1
        && *rule.status() == ReplicationRuleStatus::Enabled
        && filter.is_none_or(|f| f.tag().is_none() && f.and().is_none())
        && rule.existing_object_replication().is_none()
        && destination.is_some_and(|d| {
            d.storage_class().is_none() && d.access_control_translation().is_none() && d.account().is_none()
        })
        // Metrics go with Replication Time Control, never alone.
        && rtc == metrics;
    let id = rule.id().unwrap_or_default().to_string();
    ReplicationConfiguration {
        role_arn: config.role().to_string(),
        rule_id: if only_ours { id } else { format!("{id} (with settings this operator does not write)") },
        priority: rule.priority().unwrap_or_default(),
        prefix,
        destination_bucket_arn: destination.map(|d| d.bucket().to_string()).unwrap_or_default(),
        sse_kms_encrypted_objects: rule
            .source_selection_criteria()
            .and_then(|c| c.sse_kms_encrypted_objects())
            .is_some_and(|s| *s.status() == SseKmsEncryptedObjectsStatus::Enabled),
        replica_kms_key_arn: destination
            .and_then(|d| d.encryption_configuration())
            .and_then(|e| e.replica_kms_key_id())
            .unwrap_or_default()
            .to_string(),
        delete_marker_replication: rule
            .delete_marker_replication()
            .and_then(|d| d.status())
            .is_some_and(|s| *s == DeleteMarkerReplicationStatus::Enabled),
        replication_time_control: rtc,
    }
}

fn bucket(want: &BucketSpec) -> String {
    format!("S3 bucket {}", want.name)
}
