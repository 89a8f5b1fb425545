//! The tenant's KMS key with aws-sdk-kms.
//!
//! CreateKey is not idempotent, so the key is looked up by its recorded ID, then by its alias,
//! then by its tenant-uid tag among the keys that have no alias (a key whose alias was never
//! created because the operator stopped in between) before one is created.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::types::{KeySpec as KmsKeySpec, KeyState, KeyUsageType, Tag};

use super::error::{CloudError, absent, code_of};
use super::identity::{keys, missing_tags};
use super::{Aws, CloudEvent, DELETED, Keys, RETAINED, Step, policy};
use crate::api::{DeletionPolicy, KeyStatus};
use crate::desired::aws::{KeySpec, TAG_RETAINED, TAG_TENANT_UID};

const KIND: &str = "key";
const NOT_FOUND: [&str; 1] = ["NotFoundException"];
const POLICY_NAME: &str = "default";
/// Bounds of the tag search: pages of keys and aliases read, and unaliased keys whose tags are
/// read. It only runs when neither the recorded ID nor the alias finds the key.
const SEARCH_PAGES: usize = 20;
const SEARCH_CANDIDATES: usize = 200;
/// A role created a moment ago may not be usable as a key policy principal yet (IAM is
/// eventually consistent): CreateKey and PutKeyPolicy are tried again after these pauses.
const PRINCIPAL_PROPAGATION: [u64; 5] = [1, 2, 4, 8, 8];

/// The key as KMS has it.
struct LiveKey {
    status: KeyStatus,
    state: Option<KeyState>,
    tags: BTreeMap<String, String>,
    /// Whether the alias is known to point to this key (found through it).
    alias_checked: bool,
}

impl Aws {
    async fn describe_key(
        &self,
        id: &str,
        want: &KeySpec,
    ) -> Result<Option<(KeyStatus, Option<KeyState>)>, CloudError> {
        let out = absent(self.kms.describe_key().key_id(id).send().await, &NOT_FOUND)
            .map_err(|e| CloudError::aws("kms:DescribeKey", &key(want, id), e))?;
        Ok(out.and_then(|o| o.key_metadata).map(|m| {
            (KeyStatus { id: m.key_id.clone(), arn: m.arn.unwrap_or_default(), alias: want.alias.clone() }, m.key_state)
        }))
    }

    async fn key_tags(&self, id: &str, want: &KeySpec) -> Result<BTreeMap<String, String>, CloudError> {
        let mut tags = BTreeMap::new();
        let mut marker = None;
        for _ in 0..SEARCH_PAGES {
            let out = self
                .kms
                .list_resource_tags()
                .key_id(id)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:ListResourceTags", &key(want, id), e))?;
            tags.extend(out.tags().iter().map(|t| (t.tag_key.clone(), t.tag_value.clone())));
            marker = out.next_marker().map(str::to_string);
            if !out.truncated() || marker.is_none() {
                break;
            }
        }
        Ok(tags)
    }

    fn is_ours(want: &KeySpec, tags: &BTreeMap<String, String>) -> bool {
        tags.get(TAG_TENANT_UID).is_some() && tags.get(TAG_TENANT_UID) == want.tags.get(TAG_TENANT_UID)
    }

    async fn find_key(&self, want: &KeySpec, known: Option<&KeyStatus>) -> Result<Option<LiveKey>, CloudError> {
        // 1. The ID recorded in status.
        if let Some(known) = known.filter(|k| !k.id.is_empty())
            && let Some((status, state)) = self.describe_key(&known.id, want).await?
        {
            let tags = self.key_tags(&status.id, want).await?;
            if Self::is_ours(want, &tags) {
                return Ok(Some(LiveKey { status, state, tags, alias_checked: false }));
            }
            tracing::warn!(key = known.id, "the key recorded in status is not the tenant's; looking it up by alias");
        }
        // 2. The alias.
        if let Some((status, state)) = self.describe_key(&want.alias, want).await? {
            let tags = self.key_tags(&status.id, want).await?;
            if !Self::is_ours(want, &tags) {
                return Err(CloudError::Foreign {
                    kind: "alias",
                    name: want.alias.clone(),
                    detail: format!(
                        "it points to key {} whose tag {TAG_TENANT_UID} is {:?}",
                        status.id,
                        tags.get(TAG_TENANT_UID)
                    ),
                });
            }
            return Ok(Some(LiveKey { status, state, tags, alias_checked: true }));
        }
        // 3. The tag, among keys without an alias.
        self.search_by_tag(want).await
    }

    async fn search_by_tag(&self, want: &KeySpec) -> Result<Option<LiveKey>, CloudError> {
        let mut aliased = HashSet::new();
        let mut marker = None;
        for _ in 0..SEARCH_PAGES {
            let out = self
                .kms
                .list_aliases()
                .limit(100)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:ListAliases", "the account's KMS aliases", e))?;
            aliased.extend(out.aliases().iter().filter_map(|a| a.target_key_id.clone()));
            marker = out.next_marker().map(str::to_string);
            if !out.truncated() || marker.is_none() {
                break;
            }
        }
        let mut candidates = Vec::new();
        let mut marker = None;
        for _ in 0..SEARCH_PAGES {
            let out = self
                .kms
                .list_keys()
                .limit(1000)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:ListKeys", "the account's KMS keys", e))?;
            candidates.extend(out.keys().iter().filter_map(|k| k.key_id.clone()).filter(|id| !aliased.contains(id)));
            marker = out.next_marker().map(str::to_string);
            if !out.truncated() || marker.is_none() {
                break;
            }
        }
        if candidates.len() > SEARCH_CANDIDATES {
            tracing::warn!(
                candidates = candidates.len(),
                "more keys without an alias than the tag search reads; only the first {SEARCH_CANDIDATES} are checked"
            );
        }
        for id in candidates.into_iter().take(SEARCH_CANDIDATES) {
            let tags = match self.key_tags(&id, want).await {
                Ok(tags) => tags,
                // Keys of other teams may deny us ListResourceTags: not ours then.
                Err(e) if e.category() == "access_denied" => continue,
                Err(e) => return Err(e),
            };
            if Self::is_ours(want, &tags)
                && let Some((status, state)) = self.describe_key(&id, want).await?
            {
                tracing::info!(key = id, "found the tenant's key by its tag");
                return Ok(Some(LiveKey { status, state, tags, alias_checked: false }));
            }
        }
        Ok(None)
    }

    async fn create_key(&self, want: &KeySpec, step: &mut Step<'_>) -> Result<KeyStatus, CloudError> {
        let tags = kms_tags(&want.tags)?;
        let mut pauses = PRINCIPAL_PROPAGATION.iter();
        let mut throttled = 0u32;
        let meta = loop {
            self.create_key.acquire().await;
            // CreateKey is not idempotent: a request that timed out or failed with a server error
            // may still have created a key, so the SDK must not send it again. Such a failure ends
            // this pass, and the next one looks the key up by its tag before creating anything.
            // Only a throttled request, which KMS refused before doing anything, is retried here.
            let out = self
                .kms
                .create_key()
                .description(&want.description)
                .key_usage(KeyUsageType::from(want.key_usage.as_str()))
                .key_spec(KmsKeySpec::from(want.key_spec.as_str()))
                .policy(want.policy.to_string())
                .set_tags(Some(tags.clone()))
                .customize()
                .config_override(
                    aws_sdk_kms::config::Builder::default()
                        .retry_config(aws_smithy_types::retry::RetryConfig::disabled()),
                )
                .send()
                .await;
            match out {
                Ok(out) => break out.key_metadata,
                Err(e) if invalid_principal(&e) && pauses.len() > 0 => {
                    tokio::time::sleep(Duration::from_secs(*pauses.next().expect("a pause"))).await;
                }
                Err(e) if code_of(&e) == Some("ThrottlingException") && throttled < 5 => {
                    throttled += 1;
                    let jitter = rand::random_range(0.5..1.5);
                    tokio::time::sleep(Duration::from_millis(200 << throttled).mul_f64(jitter)).await;
                }
                Err(e) => {
                    return Err(CloudError::aws("kms:CreateKey", &format!("the KMS key for alias {}", want.alias), e));
                }
            }
        };
        let meta = meta.ok_or_else(|| CloudError::Unreadable {
            what: "CreateKey answer",
            resource: format!("the KMS key for alias {}", want.alias),
            detail: "no key metadata".into(),
        })?;
        let status =
            KeyStatus { id: meta.key_id.clone(), arn: meta.arn.unwrap_or_default(), alias: want.alias.clone() };
        step.created(KIND, format!("created KMS key {} with alias {}", status.id, want.alias));
        // Invariant 7: the ID goes to status before anything else happens.
        let recorded = status.clone();
        step.record(|ids| ids.key = Some(recorded)).await?;
        self.kms
            .create_alias()
            .alias_name(&want.alias)
            .target_key_id(&status.id)
            .send()
            .await
            .map_err(|e| CloudError::aws("kms:CreateAlias", &key(want, &status.id), e))?;
        if want.rotation_enabled {
            self.kms
                .enable_key_rotation()
                .key_id(&status.id)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:EnableKeyRotation", &key(want, &status.id), e))?;
        }
        Ok(status)
    }

    async fn key_policy(&self, want: &KeySpec, id: &str) -> Result<Option<serde_json::Value>, CloudError> {
        let out = self
            .kms
            .get_key_policy()
            .key_id(id)
            .policy_name(POLICY_NAME)
            .send()
            .await
            .map_err(|e| CloudError::aws("kms:GetKeyPolicy", &key(want, id), e))?;
        out.policy().map(policy::parse).transpose().map_err(|detail| CloudError::Unreadable {
            what: "key policy",
            resource: key(want, id),
            detail,
        })
    }

    async fn rotation(&self, want: &KeySpec, id: &str) -> Result<bool, CloudError> {
        Ok(self
            .kms
            .get_key_rotation_status()
            .key_id(id)
            .send()
            .await
            .map_err(|e| CloudError::aws("kms:GetKeyRotationStatus", &key(want, id), e))?
            .key_rotation_enabled())
    }

    async fn converge_key(&self, want: &KeySpec, live: LiveKey, step: &mut Step<'_>) -> Result<(), CloudError> {
        let id = live.status.id.as_str();
        let name = key(want, id);
        // A key pending deletion or disabled still protects the tenant's data: bring it back.
        if live.state == Some(KeyState::PendingDeletion) {
            self.kms
                .cancel_key_deletion()
                .key_id(id)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:CancelKeyDeletion", &name, e))?;
            step.repaired(KIND, format!("cancelled the scheduled deletion of {name}"));
        }
        if matches!(live.state, Some(KeyState::PendingDeletion | KeyState::Disabled)) {
            self.kms.enable_key().key_id(id).send().await.map_err(|e| CloudError::aws("kms:EnableKey", &name, e))?;
            step.repaired(KIND, format!("re-enabled {name}"));
        }
        if want.rotation_enabled && !self.rotation(want, id).await? {
            self.kms
                .enable_key_rotation()
                .key_id(id)
                .send()
                .await
                .map_err(|e| CloudError::aws("kms:EnableKeyRotation", &name, e))?;
            if !self.rotation(want, id).await? {
                return Err(CloudError::NotConverged {
                    what: "automatic rotation",
                    resource: name,
                    detail: "still disabled".into(),
                });
            }
            step.repaired(KIND, format!("re-enabled automatic rotation of {name}"));
        }
        if !self.key_policy(want, id).await?.is_some_and(|p| policy::equivalent(&p, &want.policy)) {
            self.put_key_policy(want, id).await?;
            if !self.key_policy(want, id).await?.is_some_and(|p| policy::equivalent(&p, &want.policy)) {
                return Err(CloudError::NotConverged {
                    what: "key policy",
                    resource: name,
                    detail: "KMS returns another document than the one written".into(),
                });
            }
            step.repaired(KIND, format!("restored the key policy of {name}"));
        }
        if !live.alias_checked {
            match self.describe_key(&want.alias, want).await? {
                Some((target, _)) if target.id == id => {}
                Some((target, _)) => {
                    // The alias name carries the tenant's hash: it belongs to this tenant's key.
                    self.kms
                        .update_alias()
                        .alias_name(&want.alias)
                        .target_key_id(id)
                        .send()
                        .await
                        .map_err(|e| CloudError::aws("kms:UpdateAlias", &name, e))?;
                    step.repaired(KIND, format!("pointed alias {} back from key {} to {name}", want.alias, target.id));
                }
                None => {
                    self.kms
                        .create_alias()
                        .alias_name(&want.alias)
                        .target_key_id(id)
                        .send()
                        .await
                        .map_err(|e| CloudError::aws("kms:CreateAlias", &name, e))?;
                    step.repaired(KIND, format!("created the missing alias {} of {name}", want.alias));
                }
            }
        }
        let missing = missing_tags(&want.tags, &live.tags);
        if !missing.is_empty() {
            self.tag_key(want, id, &missing).await?;
            step.repaired(KIND, format!("restored tags {} of {name}", keys(&missing)));
        }
        Ok(())
    }

    async fn put_key_policy(&self, want: &KeySpec, id: &str) -> Result<(), CloudError> {
        let mut pauses = PRINCIPAL_PROPAGATION.iter();
        loop {
            match self
                .kms
                .put_key_policy()
                .key_id(id)
                .policy_name(POLICY_NAME)
                .policy(want.policy.to_string())
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if invalid_principal(&e) && pauses.len() > 0 => {
                    tokio::time::sleep(Duration::from_secs(*pauses.next().expect("a pause"))).await;
                }
                Err(e) => return Err(CloudError::aws("kms:PutKeyPolicy", &key(want, id), e)),
            }
        }
    }

    async fn tag_key(&self, want: &KeySpec, id: &str, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        self.kms
            .tag_resource()
            .key_id(id)
            .set_tags(Some(kms_tags(tags)?))
            .send()
            .await
            .map_err(|e| CloudError::aws("kms:TagResource", &key(want, id), e))?;
        Ok(())
    }
}

#[async_trait]
impl Keys for Aws {
    async fn observe(&self, want: &KeySpec, known: Option<&KeyStatus>) -> Result<Option<KeyStatus>, CloudError> {
        Ok(self.find_key(want, known).await?.map(|live| live.status))
    }

    async fn ensure(
        &self,
        want: &KeySpec,
        known: Option<&KeyStatus>,
        step: &mut Step<'_>,
    ) -> Result<KeyStatus, CloudError> {
        let Some(live) = self.find_key(want, known).await? else {
            return self.create_key(want, step).await;
        };
        let status = live.status.clone();
        let recorded = status.clone();
        step.record(|ids| ids.key = Some(recorded)).await?;
        self.converge_key(want, live, step).await?;
        Ok(status)
    }

    async fn retire(
        &self,
        want: &KeySpec,
        known: Option<&KeyStatus>,
        policy: DeletionPolicy,
        events: &mut Vec<CloudEvent>,
    ) -> Result<(), CloudError> {
        let live = match self.find_key(want, known).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(()),
            Err(CloudError::Foreign { detail, .. }) => {
                tracing::warn!(alias = want.alias, "not retiring a key that is not the tenant's: {detail}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let id = live.status.id.as_str();
        match policy {
            DeletionPolicy::Retain => {
                if live.tags.get(TAG_RETAINED).map(String::as_str) != Some("true") {
                    self.tag_key(want, id, &BTreeMap::from([(TAG_RETAINED.to_string(), "true".to_string())])).await?;
                    events.push(CloudEvent {
                        reason: RETAINED,
                        note: format!("kept {} and tagged it {TAG_RETAINED}=true", key(want, id)),
                    });
                }
            }
            DeletionPolicy::Delete => {
                if let Some((target, _)) = self.describe_key(&want.alias, want).await?
                    && target.id == id
                {
                    absent(self.kms.delete_alias().alias_name(&want.alias).send().await, &NOT_FOUND)
                        .map_err(|e| CloudError::aws("kms:DeleteAlias", &key(want, id), e))?;
                }
                if live.state != Some(KeyState::PendingDeletion) {
                    absent(
                        self.kms
                            .schedule_key_deletion()
                            .key_id(id)
                            .pending_window_in_days(want.deletion_window_days)
                            .send()
                            .await,
                        &NOT_FOUND,
                    )
                    .map_err(|e| CloudError::aws("kms:ScheduleKeyDeletion", &key(want, id), e))?;
                    events.push(CloudEvent {
                        reason: DELETED,
                        note: format!(
                            "deleted alias {} and scheduled the deletion of KMS key {id} in {} days",
                            want.alias, want.deletion_window_days
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

fn key(want: &KeySpec, id: &str) -> String {
    if id.starts_with("alias/") { format!("KMS alias {id}") } else { format!("KMS key {id} ({})", want.alias) }
}

fn kms_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, CloudError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder().tag_key(k).tag_value(v).build().map_err(|e| CloudError::Config(format!("tag {k}: {e}")))
        })
        .collect()
}

fn invalid_principal<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> bool {
    code_of(e) == Some("MalformedPolicyDocumentException")
        && aws_smithy_types::error::metadata::ProvideErrorMetadata::message(e)
            .is_some_and(|m| m.to_ascii_lowercase().contains("principal"))
}
