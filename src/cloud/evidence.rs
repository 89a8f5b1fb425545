//! Read-only reads of a tenant's role, key and bucket for `evidence`: the same reads the
//! operator converges with, and nothing that writes. A setting that cannot be read becomes the
//! error text of its [`Read`], so one denied call does not hide the others.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::CloudError;
use super::sdk::{SdkResult, code_of, first_pages};
use super::{Aws, Cloud, policy};
use crate::api::{KeyStatus, ReplicaStatus};
use crate::desired::aws::{BucketSpec, KeySpec, RoleSpec, TenantAws};
use crate::evidence::live::{
    AwsEvidence, BucketEvidence, KeyEvidence, ObjectLock, Read, ReplicaEvidence, RoleEvidence,
};

/// Pages of grants read per key.
const GRANT_PAGES: usize = 20;

/// Who the AWS credentials in use belong to (STS GetCallerIdentity).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

fn text(e: CloudError) -> String {
    e.to_string()
}

impl Cloud {
    /// The identity of the credentials in use.
    pub async fn caller(&self) -> Result<CallerIdentity, CloudError> {
        let out = self
            .aws
            .sts
            .get_caller_identity()
            .send()
            .await
            .aws_context("sts:GetCallerIdentity", "the credentials in use")?;
        Ok(CallerIdentity {
            account: out.account().unwrap_or_default().to_string(),
            arn: out.arn().unwrap_or_default().to_string(),
            user_id: out.user_id().unwrap_or_default().to_string(),
        })
    }

    /// The key behind `want.alias` (or, when the alias is gone, the key recorded in status).
    pub async fn read_key(&self, want: &KeySpec, recorded: Option<&KeyStatus>) -> Read<Option<KeyEvidence>> {
        self.aws.read_key(want, recorded).await
    }

    /// The role and its policies.
    pub async fn read_role(&self, want: &RoleSpec) -> Read<Option<RoleEvidence>> {
        self.aws.read_role(want).await.map_err(text)
    }

    /// The bucket and every setting the operator keeps on it, asking S3 to answer only for a
    /// bucket of `account`.
    pub async fn read_bucket(&self, want: &BucketSpec, account: &str) -> Read<Option<BucketEvidence>> {
        self.aws.bucket_owner.set(account);
        self.aws.read_bucket(want).await
    }

    /// The replica side of a tenant that should replicate (`None` for one that should not):
    /// the source bucket's replication configuration, and the replica bucket and key through
    /// the replication region's clients, the ones provisioning uses. `recorded` is
    /// `status.replica`, whose key is read when its alias is gone.
    pub async fn read_replica(
        &self,
        want: &TenantAws,
        recorded: Option<&ReplicaStatus>,
        account: &str,
    ) -> Option<ReplicaEvidence> {
        let replication = want.replication.as_ref()?;
        let far = self.region(&replication.region);
        // Shared with the replication region's clients.
        self.aws.bucket_owner.set(account);
        let configuration = self.aws.replication(&want.bucket).await.map_err(text);
        let recorded_key = recorded.and_then(|r| r.key.as_ref());
        Some(ReplicaEvidence {
            region: replication.region.clone(),
            configuration,
            key: far.read_key(&replication.key, recorded_key).await,
            bucket: far.read_bucket(&replication.bucket).await,
            role: self.read_role(&replication.role).await,
        })
    }

    /// [`Self::read_key`], [`Self::read_role`], [`Self::read_bucket`] and
    /// [`Self::read_replica`] together.
    pub async fn read_evidence(
        &self,
        want: &TenantAws,
        recorded: Option<&KeyStatus>,
        replica: Option<&ReplicaStatus>,
        account: &str,
    ) -> AwsEvidence {
        AwsEvidence {
            key: self.read_key(&want.key, recorded).await,
            role: self.read_role(&want.role).await,
            bucket: self.read_bucket(&want.bucket, account).await,
            replica: self.read_replica(want, replica, account).await,
        }
    }
}

impl Aws {
    async fn describe(&self, id: &str) -> Result<Option<aws_sdk_kms::types::KeyMetadata>, String> {
        let sent = self.kms.describe_key().key_id(id).send().await;
        let out = sent.absent(&["NotFoundException"]).aws_context("kms:DescribeKey", id).map_err(text)?;
        Ok(out.and_then(|o| o.key_metadata))
    }

    async fn read_key(&self, want: &KeySpec, recorded: Option<&KeyStatus>) -> Read<Option<KeyEvidence>> {
        let by_alias = self.describe(&want.alias).await?;
        let alias_target = by_alias.as_ref().map(|m| m.key_id.clone());
        let meta = match (by_alias, recorded.filter(|k| !k.id.is_empty())) {
            (Some(meta), _) => meta,
            (None, Some(k)) => match self.describe(&k.id).await? {
                Some(meta) => meta,
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        let id = meta.key_id.clone();
        let grants = first_pages(self.kms.list_grants().key_id(&id).into_paginator().send(), GRANT_PAGES)
            .await
            .aws_context("kms:ListGrants", &id)
            .map(|pages| {
                pages
                    .iter()
                    .flat_map(|p| p.grants())
                    .filter_map(|g| g.grantee_principal())
                    .map(str::to_string)
                    .collect()
            })
            .map_err(text);
        Ok(Some(KeyEvidence {
            arn: meta.arn.clone().unwrap_or_default(),
            state: meta.key_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
            origin: meta.origin().map(|o| o.as_str().to_string()).unwrap_or_default(),
            multi_region: meta.multi_region().unwrap_or(false),
            key_manager: meta.key_manager().map(|m| m.as_str().to_string()).unwrap_or_default(),
            deletion_date: meta.deletion_date().map(|d| d.to_string()),
            alias_target: Ok(alias_target),
            rotation: self.rotation(want, &id).await.map_err(text),
            policy: self.key_policy(want, &id).await.map_err(text),
            grants,
            tags: self.key_tags(&id, want).await.map(|t| t.0).map_err(text),
            id,
        }))
    }

    async fn read_role(&self, want: &RoleSpec) -> Result<Option<RoleEvidence>, CloudError> {
        let Some(live) = self.get_role(want).await? else {
            return Ok(None);
        };
        let trust_policy = live.trust_policy.as_deref().map(policy::parse).transpose().map_err(|detail| {
            CloudError::Unreadable { what: "trust policy", resource: format!("IAM role {}", want.name), detail }
        })?;
        let names = self.role_policy_names(want).await;
        let (inline_policies, attached_policies) = match names {
            Ok((inline, attached)) => (self.inline_policies(want, &inline).await.map_err(text), Ok(attached)),
            Err(e) => (Err(text(e.clone())), Err(text(e))),
        };
        Ok(Some(RoleEvidence {
            arn: live.arn,
            trust_policy,
            boundary: live.boundary,
            tags: live.tags.0,
            inline_policies,
            attached_policies,
        }))
    }

    async fn inline_policies(&self, want: &RoleSpec, names: &[String]) -> Result<BTreeMap<String, Value>, CloudError> {
        let mut out = BTreeMap::new();
        let resource = format!("IAM role {}", want.name);
        for name in names {
            let sent = self.iam.get_role_policy().role_name(&want.name).policy_name(name).send().await;
            let document = sent.aws_context("iam:GetRolePolicy", &resource)?.policy_document;
            let parsed = policy::parse(&document).map_err(|detail| CloudError::Unreadable {
                what: "inline policy",
                resource: resource.clone(),
                detail,
            })?;
            out.insert(name.clone(), parsed);
        }
        Ok(out)
    }

    async fn read_bucket(&self, want: &BucketSpec) -> Read<Option<BucketEvidence>> {
        // Whether the bucket exists in this account, asked with a read of one of its settings
        // rather than HeadBucket, which needs s3:ListBucket: the listing of object names that
        // an auditor role is not given.
        let resource = format!("S3 bucket {}", want.name);
        let versioning = match self.s3.get_bucket_versioning().bucket(&want.name).send().await {
            Ok(out) => out.status().map(|s| s.as_str().to_string()),
            Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(None),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                return Err(format!(
                    "s3:GetBucketVersioning on {resource} answers 403: another AWS account owns it, or these credentials may not read its settings (the bucket policy admits configuration reads only by the operator, break-glass and auditor roles)"
                ));
            }
            Err(e) => return Err(text(Err::<(), _>(e).aws_context("s3:GetBucketVersioning", &resource).unwrap_err())),
        };
        Ok(Some(BucketEvidence {
            name: want.name.clone(),
            tags: self.bucket_tags(want).await.map(|t| t.0).map_err(text),
            public_access_block: self.public_access_block(want).await.map_err(text),
            ownership: self.ownership(want).await.map_err(text),
            encryption: self.encryption(want).await.map_err(text),
            versioning: Ok(versioning),
            object_lock: self
                .object_lock(want)
                .await
                .map(|l| ObjectLock { enabled: l.enabled, retention: l.retention })
                .map_err(text),
            lifecycle: self.lifecycle(want).await.map_err(text),
            logging: self.logging(want).await.map_err(text),
            policy: self.bucket_policy(want).await.map(|p| p.map(|p| p.0)).map_err(text),
        }))
    }
}
