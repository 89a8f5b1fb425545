//! The tenant's IAM role with aws-sdk-iam.

use async_trait::async_trait;
use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::Value;

use super::error::{CloudError, ResourceKind};
use super::resource::{Retiring, Setting};
use super::sdk::{SdkResult, Tags, code_of};
use super::{ACCESS_REVOKED, Aws, DELETED, Identities, Step, policy};
use crate::api::metadata::TAG_TENANT_UID;
use crate::api::{DeletionPolicy, RoleStatus};
use crate::desired::aws::{RoleSpec, retained_trust_policy};

const KIND: ResourceKind = ResourceKind::Role;
const NO_SUCH_ENTITY: [&str; 1] = ["NoSuchEntity"];
/// IAM lists at most this many policies per page; a role has at most 10 attached by default.
const PAGE: i32 = 100;

/// The role as IAM has it.
pub(super) struct LiveRole {
    pub(super) arn: String,
    pub(super) trust_policy: Option<String>,
    /// ARN of the role's permissions boundary, if it has one.
    pub(super) boundary: Option<String>,
    pub(super) tags: Tags,
}

impl Aws {
    pub(super) async fn get_role(&self, want: &RoleSpec) -> Result<Option<LiveRole>, CloudError> {
        let sent = self.iam.get_role().role_name(&want.name).send().await;
        let out = sent.absent(&NO_SUCH_ENTITY).aws_context("iam:GetRole", &role(want))?;
        Ok(out.and_then(|o| o.role).map(|r| LiveRole {
            arn: r.arn,
            trust_policy: r.assume_role_policy_document,
            boundary: r.permissions_boundary.and_then(|b| b.permissions_boundary_arn),
            tags: r.tags.unwrap_or_default().into_iter().map(|t| (t.key, t.value)).collect(),
        }))
    }

    /// The role when it is the tenant's; `Foreign` when a role of that name is not.
    async fn own_role(&self, want: &RoleSpec) -> Result<Option<LiveRole>, CloudError> {
        let Some(live) = self.get_role(want).await? else {
            return Ok(None);
        };
        let uid = want.tags.get(TAG_TENANT_UID).map(String::as_str);
        if live.tags.get(TAG_TENANT_UID) != uid {
            return Err(CloudError::Foreign {
                kind: KIND,
                name: want.name.clone(),
                detail: format!("its tag {TAG_TENANT_UID} is {:?}, not {:?}", live.tags.get(TAG_TENANT_UID), uid),
            });
        }
        Ok(Some(live))
    }

    async fn tag_role(&self, want: &RoleSpec, tags: Tags) -> Result<(), CloudError> {
        let sent = self.iam.tag_role().role_name(&want.name).set_tags(Some(tags.iam()?)).send().await;
        sent.aws_context("iam:TagRole", &role(want))?;
        Ok(())
    }

    /// The names of the role's inline policies and the ARNs of its managed ones; none when
    /// the role is gone.
    pub(super) async fn role_policy_names(&self, want: &RoleSpec) -> Result<(Vec<String>, Vec<String>), CloudError> {
        let inline = self.iam.list_role_policies().role_name(&want.name).into_paginator().page_size(PAGE);
        let inline = every_item(inline.items().send(), "iam:ListRolePolicies", want).await?;
        let attached = self.iam.list_attached_role_policies().role_name(&want.name).into_paginator().page_size(PAGE);
        let attached = every_item(attached.items().send(), "iam:ListAttachedRolePolicies", want).await?;
        let attached = attached.into_iter().filter_map(|p| p.policy_arn).collect();
        Ok((inline, attached))
    }

    /// Removes inline policy `name`; the codes in `gone` mean it is gone already.
    async fn delete_role_policy(&self, want: &RoleSpec, name: &str, gone: &[&str]) -> Result<(), CloudError> {
        let sent = self.iam.delete_role_policy().role_name(&want.name).policy_name(name).send().await;
        sent.absent(gone).aws_context("iam:DeleteRolePolicy", &role(want))?;
        Ok(())
    }

    /// Detaches managed policy `arn`; the codes in `gone` mean it is detached already.
    async fn detach_role_policy(&self, want: &RoleSpec, arn: &str, gone: &[&str]) -> Result<(), CloudError> {
        let sent = self.iam.detach_role_policy().role_name(&want.name).policy_arn(arn).send().await;
        sent.absent(gone).aws_context("iam:DetachRolePolicy", &role(want))?;
        Ok(())
    }

    async fn get_role_policy(&self, want: &RoleSpec) -> Result<Option<Value>, CloudError> {
        let sent = self.iam.get_role_policy().role_name(&want.name).policy_name(&want.inline_policy_name).send().await;
        let out = sent.absent(&NO_SUCH_ENTITY).aws_context("iam:GetRolePolicy", &role(want))?;
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
    async fn ensure(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<RoleStatus, CloudError> {
        let Some(live) = self.own_role(want).await? else {
            let out = self
                .iam
                .create_role()
                .role_name(&want.name)
                .path(&want.path)
                .description(&want.description)
                .assume_role_policy_document(want.trust_policy.to_string())
                .permissions_boundary(&want.permissions_boundary)
                .set_tags(Some(Tags(want.tags.clone()).iam()?))
                .send()
                .await;
            let arn = match out {
                // Created by a concurrent pass: take it as it is, the next pass checks it.
                Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {
                    self.own_role(want).await?.map(|r| r.arn).unwrap_or_else(|| want.arn.clone())
                }
                out => out
                    .aws_context("iam:CreateRole", &role(want))?
                    .role
                    .map(|r| r.arn)
                    .unwrap_or_else(|| want.arn.clone()),
            };
            step.created(KIND, format!("created IAM role {arn}"));
            let status = RoleStatus { name: want.name.clone(), arn };
            let recorded = status.clone();
            step.record_role(recorded).await?;
            return Ok(status);
        };
        let status = RoleStatus { name: want.name.clone(), arn: live.arn.clone() };
        let recorded = status.clone();
        step.record_role(recorded).await?;

        let resource = role(want);
        // Before any policy write: the operator may write role policies only on roles that
        // carry the boundary (roles created by earlier versions get it here).
        Setting { kind: KIND, what: "permissions boundary", resource: &resource }
            .converge(
                step,
                live.boundary.clone(),
                |b| b.as_deref() == Some(want.permissions_boundary.as_str()),
                async {
                    self.iam
                        .put_role_permissions_boundary()
                        .role_name(&want.name)
                        .permissions_boundary(&want.permissions_boundary)
                        .send()
                        .await
                        .aws_context("iam:PutRolePermissionsBoundary", &resource)?;
                    Ok(self.get_role(want).await?.and_then(|r| r.boundary))
                },
                |answer| format!("wanted {}, IAM answers {answer:?}", want.permissions_boundary),
                |found| {
                    format!(
                        "set the permissions boundary {} on IAM role {} (found {found:?})",
                        want.permissions_boundary, want.name
                    )
                },
            )
            .await?;
        let trust = live
            .trust_policy
            .as_deref()
            .map(policy::parse)
            .transpose()
            .map_err(|detail| CloudError::Unreadable { what: "trust policy", resource: resource.clone(), detail })?;
        Setting { kind: KIND, what: "trust policy", resource: &resource }
            .converge_policy(
                step,
                trust,
                &want.trust_policy,
                async {
                    self.iam
                        .update_assume_role_policy()
                        .role_name(&want.name)
                        .policy_document(want.trust_policy.to_string())
                        .send()
                        .await
                        .aws_context("iam:UpdateAssumeRolePolicy", &resource)?;
                    let reread = self.get_role(want).await?.and_then(|r| r.trust_policy);
                    Ok(reread.as_deref().map(policy::parse).transpose().ok().flatten())
                },
                "IAM",
                format!("restored the trust policy of IAM role {}", want.name),
            )
            .await?;
        let missing = live.tags.missing(&want.tags);
        if !missing.is_empty() {
            let keys = missing.keys();
            self.tag_role(want, missing).await?;
            step.repaired(KIND, "tags", format!("restored tags {keys} of IAM role {}", want.name));
        }
        Ok(status)
    }

    async fn ensure_permissions(&self, want: &RoleSpec, step: &mut Step<'_>) -> Result<(), CloudError> {
        let (inline, attached) = self.role_policy_names(want).await?;
        let current = if inline.contains(&want.inline_policy_name) { self.get_role_policy(want).await? } else { None };
        let resource = role(want);
        Setting { kind: KIND, what: "inline policy", resource: &resource }
            .converge_policy(
                step,
                current,
                &want.inline_policy,
                async {
                    self.iam
                        .put_role_policy()
                        .role_name(&want.name)
                        .policy_name(&want.inline_policy_name)
                        .policy_document(want.inline_policy.to_string())
                        .send()
                        .await
                        .aws_context("iam:PutRolePolicy", &resource)?;
                    self.get_role_policy(want).await
                },
                "IAM",
                format!("restored inline policy {} of IAM role {}", want.inline_policy_name, want.name),
            )
            .await?;
        // Invariant 4: the role's permissions name only the tenant's bucket and key, so any
        // other policy on it is removed.
        for name in inline.iter().filter(|n| **n != want.inline_policy_name) {
            self.delete_role_policy(want, name, &[]).await?;
            step.repaired(
                KIND,
                "other inline policy",
                format!("removed inline policy {name} from IAM role {}", want.name),
            );
        }
        for arn in &attached {
            self.detach_role_policy(want, arn, &[]).await?;
            step.repaired(KIND, "managed policy", format!("detached managed policy {arn} from IAM role {}", want.name));
        }
        Ok(())
    }

    async fn retire(&self, want: &RoleSpec, pass: &mut Retiring) -> Result<(), CloudError> {
        let Some(live) = pass.retirable(KIND, &want.name, self.own_role(want).await)? else {
            return Ok(());
        };
        match pass.policy() {
            DeletionPolicy::Retain => {
                pass.retain(&live.tags, format!("IAM role {}", live.arn), |tags| self.tag_role(want, tags)).await?;
                if !want.revoke_on_retain {
                    return Ok(());
                }
                // Offboarding revokes access: nobody may assume the kept role any more.
                let closed = retained_trust_policy();
                let trust = live.trust_policy.as_deref().map(policy::parse).transpose().ok().flatten();
                if !trust.is_some_and(|t| policy::equivalent(&t, &closed)) {
                    self.iam
                        .update_assume_role_policy()
                        .role_name(&want.name)
                        .policy_document(closed.to_string())
                        .send()
                        .await
                        .aws_context("iam:UpdateAssumeRolePolicy", &role(want))?;
                    pass.event(
                        ACCESS_REVOKED,
                        format!(
                            "replaced the trust policy of IAM role {} with a deny-all: nobody can assume it",
                            live.arn
                        ),
                    );
                }
                Ok(())
            }
            DeletionPolicy::Delete => {
                // Gone already is as good as deleted.
                let (inline, attached) = self.role_policy_names(want).await?;
                for name in &inline {
                    self.delete_role_policy(want, name, &NO_SUCH_ENTITY).await?;
                }
                for arn in &attached {
                    self.detach_role_policy(want, arn, &NO_SUCH_ENTITY).await?;
                }
                let sent = self.iam.delete_role().role_name(&want.name).send().await;
                sent.absent(&NO_SUCH_ENTITY).aws_context("iam:DeleteRole", &role(want))?;
                pass.event(DELETED, format!("deleted IAM role {}", live.arn));
                Ok(())
            }
        }
    }
}

/// Every item of a listing about the role; none when the role is gone.
async fn every_item<T, E>(
    items: PaginationStream<Result<T, SdkError<E, HttpResponse>>>,
    operation: &str,
    want: &RoleSpec,
) -> Result<Vec<T>, CloudError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Ok(items.try_collect().await.absent(&NO_SUCH_ENTITY).aws_context(operation, &role(want))?.unwrap_or_default())
}

fn role(want: &RoleSpec) -> String {
    format!("IAM role {}", want.name)
}
