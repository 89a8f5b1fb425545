//! The tenant's IAM role with aws-sdk-iam.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;

use super::error::{CloudError, absent};
use super::{Aws, CloudEvent, DELETED, Identities, RETAINED, Step, policy};
use crate::api::{DeletionPolicy, RoleStatus};
use crate::desired::aws::{RoleSpec, TAG_RETAINED, TAG_TENANT_UID};

const KIND: &str = "role";
/// IAM lists at most this many policies per page; a role has at most 10 attached by default.
const PAGE: i32 = 100;

/// The role as IAM has it.
struct LiveRole {
    arn: String,
    trust_policy: Option<String>,
    tags: BTreeMap<String, String>,
}

impl Aws {
    async fn get_role(&self, want: &RoleSpec) -> Result<Option<LiveRole>, CloudError> {
        let out = absent(self.iam.get_role().role_name(&want.name).send().await, &["NoSuchEntity"])
            .map_err(|e| CloudError::aws("iam:GetRole", &role(want), e))?;
        Ok(out.and_then(|o| o.role).map(|r| LiveRole {
            arn: r.arn,
            trust_policy: r.assume_role_policy_document,
            tags: r.tags.unwrap_or_default().into_iter().map(|t| (t.key, t.value)).collect(),
        }))
    }

    /// The role when it is the tenant's; `Foreign` when a role of that name is not.
    async fn own_role(&self, want: &RoleSpec) -> Result<Option<LiveRole>, CloudError> {
        let Some(live) = self.get_role(want).await? else {
            return Ok(None);
        };
        let uid = want.tags.get(TAG_TENANT_UID);
        if live.tags.get(TAG_TENANT_UID) != uid {
            return Err(CloudError::Foreign {
                kind: KIND,
                name: want.name.clone(),
                detail: format!("its tag {TAG_TENANT_UID} is {:?}, not {:?}", live.tags.get(TAG_TENANT_UID), uid),
            });
        }
        Ok(Some(live))
    }

    async fn tag_role(&self, want: &RoleSpec, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        self.iam
            .tag_role()
            .role_name(&want.name)
            .set_tags(Some(iam_tags(tags)?))
            .send()
            .await
            .map_err(|e| CloudError::aws("iam:TagRole", &role(want), e))?;
        Ok(())
    }

    async fn role_policy_names(&self, want: &RoleSpec) -> Result<(Vec<String>, Vec<String>), CloudError> {
        let inline =
            absent(self.iam.list_role_policies().role_name(&want.name).max_items(PAGE).send().await, &["NoSuchEntity"])
                .map_err(|e| CloudError::aws("iam:ListRolePolicies", &role(want), e))?
                .map(|o| o.policy_names)
                .unwrap_or_default();
        let attached = absent(
            self.iam.list_attached_role_policies().role_name(&want.name).max_items(PAGE).send().await,
            &["NoSuchEntity"],
        )
        .map_err(|e| CloudError::aws("iam:ListAttachedRolePolicies", &role(want), e))?
        .map(|o| o.attached_policies.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.policy_arn)
        .collect();
        Ok((inline, attached))
    }

    async fn get_role_policy(&self, want: &RoleSpec) -> Result<Option<serde_json::Value>, CloudError> {
        let out = absent(
            self.iam.get_role_policy().role_name(&want.name).policy_name(&want.inline_policy_name).send().await,
            &["NoSuchEntity"],
        )
        .map_err(|e| CloudError::aws("iam:GetRolePolicy", &role(want), e))?;
        out.map(|o| {
            policy::parse(&o.policy_document).map_err(|detail| CloudError::Unreadable {
                what: "inline policy",
                resource: role(want),
                detail,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl Identities for Aws {
    async fn observe(&self, want: &RoleSpec) -> Result<Option<RoleStatus>, CloudError> {
        Ok(self.own_role(want).await?.map(|live| RoleStatus { name: want.name.clone(), arn: live.arn }))
    }

    async fn ensure(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<RoleStatus, CloudError> {
        let Some(live) = self.own_role(want).await? else {
            let out = self
                .iam
                .create_role()
                .role_name(&want.name)
                .path(&want.path)
                .description(&want.description)
                .assume_role_policy_document(want.trust_policy.to_string())
                .set_tags(Some(iam_tags(&want.tags)?))
                .send()
                .await;
            let arn = match out {
                Ok(out) => out.role.map(|r| r.arn).unwrap_or_else(|| want.arn.clone()),
                // Created by a concurrent pass: take it as it is, the next pass checks it.
                Err(e) if super::error::code_of(&e) == Some("EntityAlreadyExists") => {
                    self.own_role(want).await?.map(|r| r.arn).unwrap_or_else(|| want.arn.clone())
                }
                Err(e) => return Err(CloudError::aws("iam:CreateRole", &role(want), e)),
            };
            step.created(KIND, format!("created IAM role {arn}"));
            let status = RoleStatus { name: want.name.clone(), arn };
            let recorded = status.clone();
            step.record(|ids| ids.role = Some(recorded)).await?;
            return Ok(status);
        };
        let status = RoleStatus { name: want.name.clone(), arn: live.arn.clone() };
        let recorded = status.clone();
        step.record(|ids| ids.role = Some(recorded)).await?;

        let trust = live
            .trust_policy
            .as_deref()
            .map(policy::parse)
            .transpose()
            .map_err(|detail| CloudError::Unreadable { what: "trust policy", resource: role(want), detail })?;
        if !trust.as_ref().is_some_and(|t| policy::equivalent(t, &want.trust_policy)) {
            self.iam
                .update_assume_role_policy()
                .role_name(&want.name)
                .policy_document(want.trust_policy.to_string())
                .send()
                .await
                .map_err(|e| CloudError::aws("iam:UpdateAssumeRolePolicy", &role(want), e))?;
            let reread = self.get_role(want).await?.and_then(|r| r.trust_policy);
            let reread = reread.as_deref().map(policy::parse).transpose().ok().flatten();
            if !reread.is_some_and(|t| policy::equivalent(&t, &want.trust_policy)) {
                return Err(CloudError::NotConverged {
                    what: "trust policy",
                    resource: role(want),
                    detail: "IAM returns another document than the one written".into(),
                });
            }
            step.repaired(KIND, format!("restored the trust policy of IAM role {}", want.name));
        }
        let missing = missing_tags(&want.tags, &live.tags);
        if !missing.is_empty() {
            self.tag_role(want, &missing).await?;
            step.repaired(KIND, format!("restored tags {} of IAM role {}", keys(&missing), want.name));
        }
        Ok(status)
    }

    async fn ensure_permissions(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<(), CloudError> {
        let (inline, attached) = self.role_policy_names(want).await?;
        let current = if inline.contains(&want.inline_policy_name) { self.get_role_policy(want).await? } else { None };
        if !current.as_ref().is_some_and(|p| policy::equivalent(p, &want.inline_policy)) {
            self.iam
                .put_role_policy()
                .role_name(&want.name)
                .policy_name(&want.inline_policy_name)
                .policy_document(want.inline_policy.to_string())
                .send()
                .await
                .map_err(|e| CloudError::aws("iam:PutRolePolicy", &role(want), e))?;
            if !self.get_role_policy(want).await?.is_some_and(|p| policy::equivalent(&p, &want.inline_policy)) {
                return Err(CloudError::NotConverged {
                    what: "inline policy",
                    resource: role(want),
                    detail: "IAM returns another document than the one written".into(),
                });
            }
            step.repaired(
                KIND,
                format!("restored inline policy {} of IAM role {}", want.inline_policy_name, want.name),
            );
        }
        // Invariant 4: the role's permissions name only the tenant's bucket and key, so any
        // other policy on it is removed.
        for name in inline.iter().filter(|n| **n != want.inline_policy_name) {
            self.iam
                .delete_role_policy()
                .role_name(&want.name)
                .policy_name(name)
                .send()
                .await
                .map_err(|e| CloudError::aws("iam:DeleteRolePolicy", &role(want), e))?;
            step.repaired(KIND, format!("removed inline policy {name} from IAM role {}", want.name));
        }
        for arn in &attached {
            self.iam
                .detach_role_policy()
                .role_name(&want.name)
                .policy_arn(arn)
                .send()
                .await
                .map_err(|e| CloudError::aws("iam:DetachRolePolicy", &role(want), e))?;
            step.repaired(KIND, format!("detached managed policy {arn} from IAM role {}", want.name));
        }
        Ok(())
    }

    async fn retire(
        &self,
        want: &RoleSpec,
        policy: DeletionPolicy,
        events: &mut Vec<CloudEvent>,
    ) -> Result<(), CloudError> {
        let live = match self.own_role(want).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(()),
            Err(CloudError::Foreign { detail, .. }) => {
                tracing::warn!(role = want.name, "not retiring a role that is not the tenant's: {detail}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match policy {
            DeletionPolicy::Retain => {
                if live.tags.get(TAG_RETAINED).map(String::as_str) != Some("true") {
                    self.tag_role(want, &BTreeMap::from([(TAG_RETAINED.to_string(), "true".to_string())])).await?;
                    events.push(CloudEvent {
                        reason: RETAINED,
                        note: format!("kept IAM role {} and tagged it {TAG_RETAINED}=true", live.arn),
                    });
                }
            }
            DeletionPolicy::Delete => {
                let (inline, attached) = self.role_policy_names(want).await?;
                for name in &inline {
                    absent(
                        self.iam.delete_role_policy().role_name(&want.name).policy_name(name).send().await,
                        &["NoSuchEntity"],
                    )
                    .map_err(|e| CloudError::aws("iam:DeleteRolePolicy", &role(want), e))?;
                }
                for arn in &attached {
                    absent(
                        self.iam.detach_role_policy().role_name(&want.name).policy_arn(arn).send().await,
                        &["NoSuchEntity"],
                    )
                    .map_err(|e| CloudError::aws("iam:DetachRolePolicy", &role(want), e))?;
                }
                absent(self.iam.delete_role().role_name(&want.name).send().await, &["NoSuchEntity"])
                    .map_err(|e| CloudError::aws("iam:DeleteRole", &role(want), e))?;
                events.push(CloudEvent { reason: DELETED, note: format!("deleted IAM role {}", live.arn) });
            }
        }
        Ok(())
    }
}

fn role(want: &RoleSpec) -> String {
    format!("IAM role {}", want.name)
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, CloudError> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| CloudError::Config(format!("tag {k}: {e}"))))
        .collect()
}

/// Desired tags that are absent or have another value.
pub(crate) fn missing_tags(
    want: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    want.iter().filter(|(k, v)| live.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn keys(tags: &BTreeMap<String, String>) -> String {
    tags.keys().cloned().collect::<Vec<_>>().join(", ")
}
