//! The tenant's KMS key with aws-sdk-kms.
//!
//! CreateKey is not idempotent, so the key is looked up by its recorded ID, then by its alias,
//! then by its tenant-uid tag among the keys that have no alias (a key whose alias was never
//! created because the operator stopped in between) before one is created.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::types::{KeySpec as KmsKeySpec, KeyState, KeyUsageType};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use backon::{BackoffBuilder, ExponentialBuilder};

use super::error::{CloudError, ErrorClass, ResourceKind};
use super::resource::{Retiring, Setting};
use super::sdk::{RetryOn, SdkResult, Tags, code_of, first_pages, retrying};
use super::{Aws, DELETED, Keys, Step, policy};
use crate::api::metadata::TAG_TENANT_UID;
use crate::api::{DeletionPolicy, KeyStatus};
use crate::desired::aws::KeySpec;

const KIND: ResourceKind = ResourceKind::Key;
const NOT_FOUND: [&str; 1] = ["NotFoundException"];
const POLICY_NAME: &str = "default";
/// Bounds of the tag search: pages of keys and aliases read, and unaliased keys whose tags are
/// read. It only runs when neither the recorded ID nor the alias finds the key.
const SEARCH_PAGES: usize = 20;
const SEARCH_CANDIDATES: usize = 200;
/// A role created a moment ago may not be usable as a key policy principal yet (IAM is
/// eventually consistent): CreateKey and PutKeyPolicy are tried again after 1, 2, 4, 8 and 8 s.
const PRINCIPAL_PROPAGATION: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(8))
    .with_max_times(5);
/// A throttled CreateKey is tried again after 0.4, 0.8, 1.6, 3.2 and 6.4 s, each times a
/// random factor between 0.5 and 1.5.
const CREATE_KEY_THROTTLED: ExponentialBuilder =
    ExponentialBuilder::new().with_min_delay(Duration::from_millis(400)).without_max_delay().with_max_times(5);

/// The key as KMS has it.
struct LiveKey {
    status: KeyStatus,
    state: Option<KeyState>,
    tags: Tags,
    /// Whether the alias is known to point to this key (found through it).
    alias_checked: bool,
}

impl Aws {
    async fn describe_key(
        &self,
        id: &str,
        want: &KeySpec,
    ) -> Result<Option<(KeyStatus, Option<KeyState>)>, CloudError> {
        let sent = self.kms.describe_key().key_id(id).send().await;
        let out = sent.absent(&NOT_FOUND).aws_context("kms:DescribeKey", &key(want, id))?;
        Ok(out.and_then(|o| o.key_metadata).map(|m| {
            (KeyStatus { id: m.key_id.clone(), arn: m.arn.unwrap_or_default(), alias: want.alias.clone() }, m.key_state)
        }))
    }

    async fn key_tags(&self, id: &str, want: &KeySpec) -> Result<Tags, CloudError> {
        let pages = first_pages(self.kms.list_resource_tags().key_id(id).into_paginator().send(), SEARCH_PAGES)
            .await
            .aws_context("kms:ListResourceTags", &key(want, id))?;
        Ok(pages.iter().flat_map(|p| p.tags()).map(|t| (t.tag_key.clone(), t.tag_value.clone())).collect())
    }

    fn is_ours(want: &KeySpec, tags: &Tags) -> bool {
        tags.get(TAG_TENANT_UID).is_some()
            && tags.get(TAG_TENANT_UID) == want.tags.get(TAG_TENANT_UID).map(String::as_str)
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
                    kind: ResourceKind::Alias,
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
        let aliases = first_pages(self.kms.list_aliases().into_paginator().page_size(100).send(), SEARCH_PAGES).await;
        let aliases = aliases.aws_context("kms:ListAliases", "the account's KMS aliases")?;
        let aliased: HashSet<&str> =
            aliases.iter().flat_map(|p| p.aliases()).filter_map(|a| a.target_key_id()).collect();
        let keys = first_pages(self.kms.list_keys().into_paginator().page_size(1000).send(), SEARCH_PAGES).await;
        let keys = keys.aws_context("kms:ListKeys", "the account's KMS keys")?;
        let candidates: Vec<&str> =
            keys.iter().flat_map(|p| p.keys()).filter_map(|k| k.key_id()).filter(|id| !aliased.contains(id)).collect();
        if candidates.len() > SEARCH_CANDIDATES {
            tracing::warn!(
                candidates = candidates.len(),
                "more keys without an alias than the tag search reads; only the first {SEARCH_CANDIDATES} are checked"
            );
        }
        for id in candidates.into_iter().take(SEARCH_CANDIDATES) {
            let tags = match self.key_tags(id, want).await {
                Ok(tags) => tags,
                // Keys of other teams may deny us ListResourceTags: not ours then.
                Err(e) if e.class() == ErrorClass::AccessDenied => continue,
                Err(e) => return Err(e),
            };
            if Self::is_ours(want, &tags)
                && let Some((status, state)) = self.describe_key(id, want).await?
            {
                tracing::info!(key = id, "found the tenant's key by its tag");
                return Ok(Some(LiveKey { status, state, tags, alias_checked: false }));
            }
        }
        Ok(None)
    }

    async fn create_key(&self, want: &KeySpec, step: &mut Step<'_>) -> Result<KeyStatus, CloudError> {
        let tags = Tags(want.tags.clone()).kms()?;
        let tags = &tags;
        // CreateKey is not idempotent: a request that timed out or failed with a server error
        // may still have created a key, so the SDK must not send it again. Such a failure ends
        // this pass, and the next one looks the key up by its tag before creating anything.
        // Only a throttled request, which KMS refused before doing anything, is retried here.
        let create = move || async move {
            self.create_key.acquire().await;
            self.kms
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
                .await
        };
        let throttled = CREATE_KEY_THROTTLED.build().map(|pause| pause.mul_f64(rand::random_range(0.5..1.5)));
        let out = retrying(
            create,
            vec![
                RetryOn { when: invalid_principal, pauses: Box::new(PRINCIPAL_PROPAGATION.build()) },
                RetryOn { when: |e| code_of(e) == Some("ThrottlingException"), pauses: Box::new(throttled) },
            ],
        )
        .await
        .aws_context("kms:CreateKey", &format!("the KMS key for alias {}", want.alias))?;
        let meta = out.key_metadata.ok_or_else(|| CloudError::Unreadable {
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
        self.create_alias(want, &status.id).await?;
        if want.rotation_enabled {
            self.enable_rotation(want, &status.id).await?;
        }
        Ok(status)
    }

    async fn create_alias(&self, want: &KeySpec, id: &str) -> Result<(), CloudError> {
        let sent = self.kms.create_alias().alias_name(&want.alias).target_key_id(id).send().await;
        sent.aws_context("kms:CreateAlias", &key(want, id))?;
        Ok(())
    }

    async fn enable_rotation(&self, want: &KeySpec, id: &str) -> Result<(), CloudError> {
        self.kms.enable_key_rotation().key_id(id).send().await.aws_context("kms:EnableKeyRotation", &key(want, id))?;
        Ok(())
    }

    async fn key_policy(&self, want: &KeySpec, id: &str) -> Result<Option<serde_json::Value>, CloudError> {
        let sent = self.kms.get_key_policy().key_id(id).policy_name(POLICY_NAME).send().await;
        let out = sent.aws_context("kms:GetKeyPolicy", &key(want, id))?;
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
            .aws_context("kms:GetKeyRotationStatus", &key(want, id))?
            .key_rotation_enabled())
    }

    async fn converge_key(&self, want: &KeySpec, live: LiveKey, step: &mut Step<'_>) -> Result<(), CloudError> {
        let id = live.status.id.as_str();
        let name = key(want, id);
        // A key pending deletion or disabled still protects the tenant's data: bring it back.
        if live.state == Some(KeyState::PendingDeletion) {
            self.kms.cancel_key_deletion().key_id(id).send().await.aws_context("kms:CancelKeyDeletion", &name)?;
            step.repaired(KIND, format!("cancelled the scheduled deletion of {name}"));
        }
        if matches!(live.state, Some(KeyState::PendingDeletion | KeyState::Disabled)) {
            self.kms.enable_key().key_id(id).send().await.aws_context("kms:EnableKey", &name)?;
            step.repaired(KIND, format!("re-enabled {name}"));
        }
        if want.rotation_enabled {
            Setting { kind: KIND, what: "automatic rotation", resource: &name }
                .converge(
                    step,
                    self.rotation(want, id).await?,
                    |enabled| *enabled,
                    async {
                        self.enable_rotation(want, id).await?;
                        self.rotation(want, id).await
                    },
                    |_| "still disabled".into(),
                    |_| format!("re-enabled automatic rotation of {name}"),
                )
                .await?;
        }
        Setting { kind: KIND, what: "key policy", resource: &name }
            .converge_policy(
                step,
                self.key_policy(want, id).await?,
                &want.policy,
                async {
                    self.put_key_policy(want, id).await?;
                    self.key_policy(want, id).await
                },
                "KMS",
                format!("restored the key policy of {name}"),
            )
            .await?;
        if !live.alias_checked {
            match self.describe_key(&want.alias, want).await? {
                Some((target, _)) if target.id == id => {}
                Some((target, _)) => {
                    // The alias name carries the tenant's hash: it belongs to this tenant's key.
                    let sent = self.kms.update_alias().alias_name(&want.alias).target_key_id(id).send().await;
                    sent.aws_context("kms:UpdateAlias", &name)?;
                    step.repaired(KIND, format!("pointed alias {} back from key {} to {name}", want.alias, target.id));
                }
                None => {
                    self.create_alias(want, id).await?;
                    step.repaired(KIND, format!("created the missing alias {} of {name}", want.alias));
                }
            }
        }
        let missing = live.tags.missing(&want.tags);
        if !missing.is_empty() {
            let keys = missing.keys();
            self.tag_key(want, id, missing).await?;
            step.repaired(KIND, format!("restored tags {keys} of {name}"));
        }
        Ok(())
    }

    async fn put_key_policy(&self, want: &KeySpec, id: &str) -> Result<(), CloudError> {
        let put =
            || self.kms.put_key_policy().key_id(id).policy_name(POLICY_NAME).policy(want.policy.to_string()).send();
        retrying(put, vec![RetryOn { when: invalid_principal, pauses: Box::new(PRINCIPAL_PROPAGATION.build()) }])
            .await
            .aws_context("kms:PutKeyPolicy", &key(want, id))?;
        Ok(())
    }

    async fn tag_key(&self, want: &KeySpec, id: &str, tags: Tags) -> Result<(), CloudError> {
        let sent = self.kms.tag_resource().key_id(id).set_tags(Some(tags.kms()?)).send().await;
        sent.aws_context("kms:TagResource", &key(want, id))?;
        Ok(())
    }
}

#[async_trait]
impl Keys for Aws {
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

    async fn retire(&self, want: &KeySpec, known: Option<&KeyStatus>, pass: &mut Retiring) -> Result<(), CloudError> {
        let Some(live) = pass.retirable(KIND, &want.alias, self.find_key(want, known).await)? else {
            return Ok(());
        };
        let id = live.status.id.as_str();
        match pass.policy() {
            DeletionPolicy::Retain => {
                pass.retain(&live.tags, key(want, id), |tags| self.tag_key(want, id, tags)).await?;
            }
            DeletionPolicy::Delete => {
                if let Some((target, _)) = self.describe_key(&want.alias, want).await?
                    && target.id == id
                {
                    let sent = self.kms.delete_alias().alias_name(&want.alias).send().await;
                    sent.absent(&NOT_FOUND).aws_context("kms:DeleteAlias", &key(want, id))?;
                }
                if live.state != Some(KeyState::PendingDeletion) {
                    self.kms
                        .schedule_key_deletion()
                        .key_id(id)
                        .pending_window_in_days(want.deletion_window_days)
                        .send()
                        .await
                        .absent(&NOT_FOUND)
                        .aws_context("kms:ScheduleKeyDeletion", &key(want, id))?;
                    pass.event(
                        DELETED,
                        format!(
                            "deleted alias {} and scheduled the deletion of KMS key {id} in {} days",
                            want.alias, want.deletion_window_days
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn key(want: &KeySpec, id: &str) -> String {
    if id.starts_with("alias/") { format!("KMS alias {id}") } else { format!("KMS key {id} ({})", want.alias) }
}

/// KMS refuses a policy naming a role it cannot see yet.
fn invalid_principal<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    code_of(e) == Some("MalformedPolicyDocumentException")
        && ProvideErrorMetadata::message(e).is_some_and(|m| m.to_ascii_lowercase().contains("principal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_schedules() {
        let principal: Vec<u128> = PRINCIPAL_PROPAGATION.build().map(|d| d.as_millis()).collect();
        assert_eq!(principal, [1000, 2000, 4000, 8000, 8000]);
        let throttled: Vec<u128> = CREATE_KEY_THROTTLED.build().map(|d| d.as_millis()).collect();
        assert_eq!(throttled, [400, 800, 1600, 3200, 6400]);
    }
}
