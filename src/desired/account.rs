//! The account-level policies that fence the operator and the roles it creates: the operator's
//! own identity policy, the permissions boundary of every tenant role, and a guard-rail service
//! control policy. `imaging-tenant-operator aws-policies` prints them; `deploy/iam/` holds them
//! for placeholder values.
//!
//! Pure, like the rest of `desired`: settings in, policy documents out.
//!
//! Every action of the operator policy is one the code in `src/cloud/` calls (or one AWS checks
//! for such a call: `iam:TagRole` and `kms:TagResource` for tags given at creation,
//! `s3:PutBucketOwnershipControls`, `s3:PutBucketObjectLockConfiguration` and
//! `s3:PutBucketVersioning` for the settings of `CreateBucket`). Actions on an existing key are
//! not here: tenant key policies name the operator role and do not delegate to IAM, so the key
//! policy alone grants them.

use serde_json::{Value, json};

use crate::api::metadata::{MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY, TAG_TENANT_UID};
use crate::config::Settings;
use crate::desired::aws::{
    AUDITOR_BUCKET_ACTIONS, AUDITOR_KEY_ACTIONS, OBJECT_DATA_ACTIONS, REPLICATION_DESTINATION_ACTIONS,
    REPLICATION_SOURCE_BUCKET_ACTIONS, REPLICATION_SOURCE_OBJECT_ACTIONS, TENANT_BUCKET_ACTIONS, TENANT_KEY_ACTIONS,
    TENANT_OBJECT_ACTIONS, TENANT_REPLICA_ACTIONS, s3_service, s3_service_in,
};
use crate::desired::names;

const POLICY_VERSION: &str = "2012-10-17";

/// The shortest key deletion window the guard-rail SCP lets the operator ask for.
pub const MIN_KEY_DELETION_WINDOW_DAYS: u32 = 30;

/// IAM actions on tenant roles that only read.
pub const ROLE_READ_ACTIONS: [&str; 4] =
    ["iam:GetRole", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies"];

/// S3 bucket actions the operator calls on tenant buckets: reads of every setting it converges,
/// and their writes. `DeleteBucketLifecycle` is authorised as `s3:PutLifecycleConfiguration`,
/// `HeadBucket` as `s3:ListBucket`, `ListObjectVersions` as `s3:ListBucketVersions`.
pub const BUCKET_READ_ACTIONS: [&str; 11] = [
    "s3:GetBucketLogging",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:ListBucket",
    // Counts what is left before a `Delete` tenant's bucket is deleted.
    "s3:ListBucketVersions",
];
pub const BUCKET_WRITE_ACTIONS: [&str; 12] = [
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:PutBucketLogging",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:TagResource",
];

/// What the operator calls for replication on tenant buckets: the configuration's read and
/// write (`DeleteBucketReplication` is authorised as `s3:PutReplicationConfiguration`).
pub const REPLICATION_CONFIGURATION_ACTIONS: [&str; 2] =
    ["s3:GetReplicationConfiguration", "s3:PutReplicationConfiguration"];

/// Key-data actions the operator never has, denied outright in its own policy and again in the
/// guard-rail SCP (as are [`OBJECT_DATA_ACTIONS`]).
pub const OPERATOR_DENIED_KEY_ACTIONS: [&str; 4] =
    ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"];

/// The four documents of `aws-policies`.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountPolicies {
    /// Identity policy of the operator role.
    pub operator_policy: Value,
    /// Customer-managed policy set as the permissions boundary of every tenant role.
    pub permissions_boundary: Value,
    /// Recommended service control policy for the account (or its OU).
    pub guardrail_scp: Value,
    /// Read-only identity policy for `evidence`.
    pub evidence_reader: Value,
    /// What `restore-drill` uses, with a replication region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_drill_policy: Option<Value>,
}

/// All four policies for these settings (`operator_role_arn`, `permissions_boundary_arn` and
/// `break_glass_role_arn` as `aws-policies` builds them).
pub fn policies(settings: &Settings) -> AccountPolicies {
    AccountPolicies {
        operator_policy: operator_policy(settings),
        permissions_boundary: permissions_boundary_policy(settings),
        guardrail_scp: guardrail_scp(settings),
        evidence_reader: evidence_reader_policy(settings),
        restore_drill_policy: restore_drill_policy(settings),
    }
}

/// What `restore-drill` does with the caller's credentials: write a canary under
/// `restore-drill/` in a tenant bucket (its key through S3), find and read its replica (the
/// replica key through S3 in the replication region), and put delete markers on both. Tenant
/// key policies let only the tenant role use the keys, so the drill runs as the tenant role,
/// whose own policy already allows all of this; this document says exactly what that is.
pub fn restore_drill_policy(settings: &Settings) -> Option<Value> {
    let replica = settings.replication_region.as_deref()?;
    let buckets = tenant_buckets_arn(settings);
    Some(json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                // HeadObject answers 404 for a replica not there yet only with s3:ListBucket.
                "Sid": "FindCanaries",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": buckets,
            },
            {
                "Sid": "WriteReadAndMarkCanaries",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
                "Resource": format!("{buckets}/restore-drill/*"),
            },
            {
                "Sid": "EncryptCanariesThroughS3",
                "Effect": "Allow",
                "Action": "kms:GenerateDataKey",
                "Resource": keys_arn(settings),
                "Condition": {"StringEquals": {"kms:ViaService": s3_service(settings)}},
            },
            {
                "Sid": "ReadReplicasThroughS3",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": keys_arn_in(settings, replica),
                "Condition": {"StringEquals": {"kms:ViaService": s3_service_in(settings, replica)}},
            },
        ]
    }))
}

/// `arn:<partition>:iam::<account>:role/imaging-tenants/*`: every tenant role of the account.
/// Which of them belong to this cluster is told by their cluster tag.
pub fn tenant_roles_arn(settings: &Settings) -> String {
    format!("arn:{}:iam::{}:role{}*", settings.partition, settings.account_id, names::ROLE_PATH)
}

/// `arn:<partition>:s3:::<prefix>-*`: the buckets the operator may administer.
pub fn tenant_buckets_arn(settings: &Settings) -> String {
    format!("arn:{}:s3:::{}-*", settings.partition, settings.bucket_prefix)
}

/// `arn:<partition>:kms:<region>:<account>:alias/imaging/<cluster>/*`: this cluster's aliases.
pub fn tenant_aliases_arn(settings: &Settings) -> String {
    tenant_aliases_arn_in(settings, &settings.region)
}

fn tenant_aliases_arn_in(settings: &Settings, region: &str) -> String {
    format!(
        "arn:{}:kms:{region}:{}:{}{}/*",
        settings.partition,
        settings.account_id,
        names::ALIAS_PREFIX,
        names::alias_cluster(&settings.cluster_name)
    )
}

/// `arn:<partition>:kms:<region>:<account>:key/*`.
pub fn keys_arn(settings: &Settings) -> String {
    keys_arn_in(settings, &settings.region)
}

fn keys_arn_in(settings: &Settings, region: &str) -> String {
    format!("arn:{}:kms:{region}:{}:key/*", settings.partition, settings.account_id)
}

/// `arn:<partition>:iam::<account>:role/imaging-tenants/imaging-*-replication`: the roles S3
/// replicates tenant buckets with, the only ones the operator may pass.
pub fn replication_roles_arn(settings: &Settings) -> String {
    format!(
        "arn:{}:iam::{}:role{}{}*{}",
        settings.partition,
        settings.account_id,
        names::ROLE_PATH,
        names::ROLE_PREFIX,
        names::REPLICATION_ROLE_SUFFIX
    )
}

fn cluster_tag(settings: &Settings) -> (String, String) {
    (format!("aws:RequestTag/{TAG_CLUSTER}"), settings.cluster_name.clone())
}

/// The operator's identity policy: it administers, it never reads.
///
/// - IAM: tenant roles are created and changed only with the permissions boundary, and only
///   roles tagged with this cluster are changed (the cluster and tenant UID tags cannot be
///   re-written afterwards), so one cluster's operator cannot touch another's roles. Removing a
///   boundary, or setting another one, is denied.
/// - KMS: only single-Region `AWS_KMS` symmetric keys tagged with this cluster are created,
///   without bypassing the policy lockout check; aliases only under this cluster's prefix; no
///   data use of any key.
/// - S3: configuration of buckets with the configured prefix; no object data, ever.
pub fn operator_policy(settings: &Settings) -> Value {
    let roles = tenant_roles_arn(settings);
    let boundary = &settings.permissions_boundary_arn;
    let (cluster_request_tag, cluster) = cluster_tag(settings);
    let cluster_resource_tag = format!("aws:ResourceTag/{TAG_CLUSTER}");
    let managed_by_request_tag = format!("aws:RequestTag/{TAG_MANAGED_BY}");
    let uid_request_tag = format!("aws:RequestTag/{TAG_TENANT_UID}");
    let buckets = tenant_buckets_arn(settings);
    let mut policy = json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ReadTenantRoles",
                "Effect": "Allow",
                "Action": ROLE_READ_ACTIONS,
                "Resource": roles,
            },
            {
                "Sid": "CreateTenantRolesUnderTheBoundary",
                "Effect": "Allow",
                "Action": "iam:CreateRole",
                "Resource": roles,
                "Condition": {
                    "StringEquals": {
                        "iam:PermissionsBoundary": boundary,
                        cluster_request_tag.clone(): cluster,
                        managed_by_request_tag.clone(): MANAGED_BY,
                    },
                    "Null": {uid_request_tag.clone(): "false"},
                },
            },
            {
                // CreateRole with tags also needs iam:TagRole.
                "Sid": "TagNewTenantRoles",
                "Effect": "Allow",
                "Action": "iam:TagRole",
                "Resource": roles,
                "Condition": {
                    "StringEquals": {
                        cluster_request_tag.clone(): cluster,
                        managed_by_request_tag.clone(): MANAGED_BY,
                    },
                    "Null": {uid_request_tag.clone(): "false"},
                },
            },
            {
                "Sid": "ChangeThisClustersTenantRolesUnderTheBoundary",
                "Effect": "Allow",
                "Action": ["iam:PutRolePermissionsBoundary", "iam:PutRolePolicy"],
                "Resource": roles,
                "Condition": {
                    "StringEquals": {
                        "iam:PermissionsBoundary": boundary,
                        cluster_resource_tag.clone(): cluster,
                    }
                },
            },
            {
                "Sid": "ChangeThisClustersTenantRoles",
                "Effect": "Allow",
                "Action": [
                    "iam:DeleteRole",
                    "iam:DeleteRolePolicy",
                    "iam:DetachRolePolicy",
                    "iam:UpdateAssumeRolePolicy",
                ],
                "Resource": roles,
                "Condition": {"StringEquals": {cluster_resource_tag.clone(): cluster}},
            },
            {
                "Sid": "RetagThisClustersTenantRoles",
                "Effect": "Allow",
                "Action": "iam:TagRole",
                "Resource": roles,
                "Condition": {
                    "StringEquals": {cluster_resource_tag.clone(): cluster},
                    "ForAllValues:StringNotEquals": {"aws:TagKeys": [TAG_CLUSTER, TAG_TENANT_UID]},
                },
            },
            {
                // The allow above admits a create-time TagRole on any role name: it must never
                // re-tag another cluster's role as this one's.
                "Sid": "DenyTaggingOtherClustersRoles",
                "Effect": "Deny",
                "Action": "iam:TagRole",
                "Resource": roles,
                "Condition": {
                    "StringNotEquals": {cluster_resource_tag.clone(): cluster},
                    "Null": {cluster_resource_tag: "false"},
                },
            },
            {
                "Sid": "DenyRemovingPermissionsBoundaries",
                "Effect": "Deny",
                "Action": "iam:DeleteRolePermissionsBoundary",
                "Resource": "*",
            },
            {
                "Sid": "DenyRolesWithoutTheBoundary",
                "Effect": "Deny",
                "Action": ["iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy"],
                "Resource": "*",
                "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": boundary}},
            },
            {
                "Sid": "CreateThisClustersTenantKeys",
                "Effect": "Allow",
                "Action": "kms:CreateKey",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        cluster_request_tag.clone(): cluster,
                        managed_by_request_tag.clone(): MANAGED_BY,
                        "kms:KeyOrigin": "AWS_KMS",
                        "kms:KeySpec": "SYMMETRIC_DEFAULT",
                        "kms:KeyUsage": "ENCRYPT_DECRYPT",
                    },
                    // False when given, and false by default when not: the operator does not
                    // send either parameter.
                    "BoolIfExists": {
                        "kms:MultiRegion": "false",
                        "kms:BypassPolicyLockoutSafetyCheck": "false",
                    },
                    "Null": {uid_request_tag.clone(): "false"},
                },
            },
            {
                // CreateKey with tags also needs kms:TagResource; on an existing key, TagResource
                // is granted by the key's policy, so this statement matters only at creation
                // and for keys already tagged with this cluster.
                "Sid": "TagThisClustersTenantKeys",
                "Effect": "Allow",
                "Action": "kms:TagResource",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        cluster_request_tag.clone(): cluster,
                        managed_by_request_tag: MANAGED_BY,
                    },
                    "StringEqualsIfExists": {format!("aws:ResourceTag/{TAG_CLUSTER}"): cluster},
                    "Null": {uid_request_tag: "false"},
                },
            },
            {
                // Not resource-scoped in KMS: the tag search for a key whose alias was never
                // created lists keys and aliases.
                "Sid": "FindTenantKeys",
                "Effect": "Allow",
                "Action": ["kms:ListAliases", "kms:ListKeys"],
                "Resource": "*",
            },
            {
                "Sid": "ThisClustersTenantKeyAliases",
                "Effect": "Allow",
                "Action": ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"],
                // The key side of these calls is granted by the key's policy.
                "Resource": match regions(settings).as_slice() {
                    [only] => json!(tenant_aliases_arn_in(settings, only)),
                    all => json!(all.iter().map(|r| tenant_aliases_arn_in(settings, r)).collect::<Vec<_>>()),
                },
            },
            {
                "Sid": "DenyKeyDataUse",
                "Effect": "Deny",
                "Action": OPERATOR_DENIED_KEY_ACTIONS,
                "Resource": "*",
            },
            {
                "Sid": "DenyPolicyLockoutBypass",
                "Effect": "Deny",
                "Action": ["kms:CreateKey", "kms:PutKeyPolicy"],
                "Resource": "*",
                "Condition": {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}},
            },
            {
                "Sid": "ReadTenantBuckets",
                "Effect": "Allow",
                "Action": BUCKET_READ_ACTIONS,
                "Resource": buckets,
            },
            {
                "Sid": "AdministerTenantBuckets",
                "Effect": "Allow",
                "Action": BUCKET_WRITE_ACTIONS,
                "Resource": buckets,
            },
            {
                "Sid": "DenyObjectData",
                "Effect": "Deny",
                "Action": OBJECT_DATA_ACTIONS,
                "Resource": "*",
            },
            {
                "Sid": "WhoAmI",
                "Effect": "Allow",
                "Action": "sts:GetCallerIdentity",
                "Resource": "*",
            },
        ]
    });
    if settings.replication_region.is_some() {
        let statements = policy["Statement"].as_array_mut().expect("statements");
        statements.push(json!({
            "Sid": "ConfigureReplicationOfTenantBuckets",
            "Effect": "Allow",
            "Action": REPLICATION_CONFIGURATION_ACTIONS,
            "Resource": tenant_buckets_arn(settings),
        }));
        // PutBucketReplication hands the replication role to S3: only those roles, only to S3.
        statements.push(json!({
            "Sid": "PassReplicationRolesToS3",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": replication_roles_arn(settings),
            "Condition": {"StringEquals": {"iam:PassedToService": "s3.amazonaws.com"}},
        }));
    }
    if let Some(audit) = &settings.audit_log_bucket {
        // Before logging to it, the operator checks that the access-log bucket is this
        // account's and blocks public access.
        policy["Statement"].as_array_mut().expect("statements").push(json!({
            "Sid": "CheckAuditLogBucket",
            "Effect": "Allow",
            "Action": ["s3:GetBucketPublicAccessBlock", "s3:ListBucket"],
            "Resource": format!("arn:{}:s3:::{audit}", settings.partition),
        }));
    }
    policy
}

/// The permissions boundary of every tenant role: whatever a tenant role's own policy says, it
/// can do no more than use objects of buckets with the configured prefix and, through S3 in the
/// tenant region, decrypt and generate data keys. No IAM, no bucket settings, no key
/// administration, no other service.
pub fn permissions_boundary_policy(settings: &Settings) -> Value {
    let buckets = tenant_buckets_arn(settings);
    let mut policy = json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ListTenantBuckets",
                "Effect": "Allow",
                "Action": TENANT_BUCKET_ACTIONS,
                "Resource": buckets,
            },
            {
                "Sid": "ReadWriteTenantObjects",
                "Effect": "Allow",
                "Action": TENANT_OBJECT_ACTIONS,
                "Resource": format!("{buckets}/*"),
            },
            {
                "Sid": "UseKeysOnlyThroughS3",
                "Effect": "Allow",
                "Action": TENANT_KEY_ACTIONS,
                "Resource": keys_arn(settings),
                "Condition": {"StringEquals": {"kms:ViaService": s3_service(settings)}},
            },
        ]
    });
    if let Some(replica) = &settings.replication_region {
        // The replication roles, under the same boundary, and the tenant roles reading their
        // replicas: still only tenant buckets, and keys only through S3 in their own region.
        let is_bucket_action = |a: &str| a.starts_with("s3:ListBucket") || a.starts_with("s3:GetBucket");
        let mut bucket_actions: Vec<&str> = REPLICATION_SOURCE_BUCKET_ACTIONS.to_vec();
        bucket_actions.extend(TENANT_REPLICA_ACTIONS.iter().filter(|a| is_bucket_action(a)));
        bucket_actions.retain(|a| !TENANT_BUCKET_ACTIONS.contains(a));
        bucket_actions.sort_unstable();
        bucket_actions.dedup();
        let mut source_objects: Vec<&str> = REPLICATION_SOURCE_OBJECT_ACTIONS.to_vec();
        source_objects.extend(REPLICATION_DESTINATION_ACTIONS);
        source_objects.extend(TENANT_REPLICA_ACTIONS.iter().filter(|a| !is_bucket_action(a)));
        source_objects.retain(|a| !TENANT_OBJECT_ACTIONS.contains(a));
        source_objects.sort_unstable();
        source_objects.dedup();
        let statements = policy["Statement"].as_array_mut().expect("statements");
        statements.push(json!({
            "Sid": "ReplicateTenantBuckets",
            "Effect": "Allow",
            "Action": bucket_actions,
            "Resource": buckets,
        }));
        statements.push(json!({
            "Sid": "ReplicateTenantObjects",
            "Effect": "Allow",
            "Action": source_objects,
            "Resource": format!("{buckets}/*"),
        }));
        statements.push(json!({
            "Sid": "DecryptReplicasOnlyThroughS3",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": keys_arn_in(settings, replica),
            "Condition": {"StringEquals": {"kms:ViaService": s3_service_in(settings, replica)}},
        }));
        statements.push(json!({
            "Sid": "EncryptReplicasOnlyThroughS3",
            "Effect": "Allow",
            "Action": "kms:Encrypt",
            "Resource": keys_arn_in(settings, replica),
            "Condition": {"StringEquals": {"kms:ViaService": s3_service_in(settings, replica)}},
        }));
    }
    policy
}

/// The operator's region, and the replication region when there is one.
fn regions(settings: &Settings) -> Vec<&str> {
    let mut regions = vec![settings.region.as_str()];
    regions.extend(settings.replication_region.as_deref());
    regions
}

/// A service control policy for the account of the tenants (attach it to its OU): what must
/// hold even if the operator's own policy, a bucket policy or a key policy were widened.
///
/// - the operator role never reads, writes or deletes objects, nor bypasses retention;
/// - it never uses a key for data (`kms:Decrypt` and the rest);
/// - nobody bypasses the key policy lockout check;
/// - the operator schedules key deletion only with the longest window (30 days);
/// - no one but the break-glass role removes a tenant role's permissions boundary or changes the
///   boundary policy.
pub fn guardrail_scp(settings: &Settings) -> Value {
    let operator = json!({"aws:PrincipalArn": settings.operator_role_arn});
    let mut exempt: Vec<String> = Vec::new();
    exempt.extend(settings.break_glass_role_arn.clone());
    let mut statements = vec![
        json!({
            "Sid": "OperatorNeverTouchesObjectData",
            "Effect": "Deny",
            "Action": OBJECT_DATA_ACTIONS,
            "Resource": "*",
            "Condition": {"ArnEquals": operator},
        }),
        json!({
            "Sid": "OperatorNeverUsesKeysForData",
            "Effect": "Deny",
            "Action": OPERATOR_DENIED_KEY_ACTIONS,
            "Resource": "*",
            "Condition": {"ArnEquals": operator},
        }),
        json!({
            "Sid": "NoKeyPolicyLockoutBypass",
            "Effect": "Deny",
            "Action": ["kms:CreateKey", "kms:PutKeyPolicy"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}},
        }),
        json!({
            "Sid": "OperatorSchedulesKeyDeletionOnlyWithTheLongestWindow",
            "Effect": "Deny",
            "Action": "kms:ScheduleKeyDeletion",
            "Resource": "*",
            "Condition": {
                "ArnEquals": operator,
                "NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": MIN_KEY_DELETION_WINDOW_DAYS.to_string()},
            },
        }),
    ];
    let boundary_guard = |sid: &str, actions: Value, resource: Value| {
        let mut statement = json!({"Sid": sid, "Effect": "Deny", "Action": actions, "Resource": resource});
        if !exempt.is_empty() {
            statement["Condition"] = json!({"ArnNotEquals": {"aws:PrincipalArn": exempt}});
        }
        statement
    };
    statements.push(boundary_guard(
        "KeepTenantRoleBoundaries",
        json!("iam:DeleteRolePermissionsBoundary"),
        json!(tenant_roles_arn(settings)),
    ));
    statements.push(boundary_guard(
        "KeepTheBoundaryPolicy",
        json!([
            "iam:CreatePolicyVersion",
            "iam:DeletePolicy",
            "iam:DeletePolicyVersion",
            "iam:SetDefaultPolicyVersion"
        ]),
        json!(settings.permissions_boundary_arn),
    ));
    json!({"Version": POLICY_VERSION, "Statement": statements})
}

/// KMS actions `evidence` calls on a tenant key; the key policy grants them to its
/// administrators and to the auditor roles.
pub const EVIDENCE_KEY_READ_ACTIONS: [&str; 5] = AUDITOR_KEY_ACTIONS;

/// The identity policy of whoever runs `evidence`: reads of the settings of tenant buckets and
/// of their replicas, of keys in the operator's and the replication region, and of roles, and
/// nothing else: no `s3:ListBucket` (object names), no object, no key use. Tenant bucket and key
/// policies admit such reads only from the operator, break-glass and auditor roles
/// (`--auditor-role-arn`): attach it to an auditor role, or use it as the session policy of a
/// read-only session of the break-glass role (see docs/compliance.md).
pub fn evidence_reader_policy(settings: &Settings) -> Value {
    let bucket_reads = AUDITOR_BUCKET_ACTIONS;
    // Replica keys are in the replication region (ITO-DR-03).
    let keys: Vec<String> = regions(settings).into_iter().map(|r| keys_arn_in(settings, r)).collect();
    json!({
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ReadTenantBucketSettings",
                "Effect": "Allow",
                "Action": bucket_reads,
                "Resource": tenant_buckets_arn(settings),
            },
            {
                "Sid": "ReadTenantKeys",
                "Effect": "Allow",
                "Action": EVIDENCE_KEY_READ_ACTIONS,
                "Resource": keys,
            },
            {
                "Sid": "ReadTenantRoles",
                "Effect": "Allow",
                "Action": ROLE_READ_ACTIONS,
                "Resource": tenant_roles_arn(settings),
            },
            {
                "Sid": "WhoAmI",
                "Effect": "Allow",
                "Action": "sts:GetCallerIdentity",
                "Resource": "*",
            },
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evidence_reader_only_reads() {
        let policy = evidence_reader_policy(&settings());
        for statement in policy["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow");
            let actions: Vec<&str> = match &statement["Action"] {
                Value::String(a) => vec![a.as_str()],
                other => other.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect(),
            };
            for action in actions {
                let verb = action.split_once(':').unwrap().1;
                assert!(["Get", "List", "Describe"].iter().any(|p| verb.starts_with(p)), "{action} is not a read");
            }
        }
        assert!(policy.to_string().contains(ROLES));
    }

    fn settings() -> Settings {
        Settings {
            cluster_name: "prod-1".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
            account_id: "111122223333".into(),
            bucket_prefix: "imaging".into(),
            operator_role_arn: "arn:aws:iam::111122223333:role/imaging-tenant-operator".into(),
            break_glass_role_arn: Some("arn:aws:iam::111122223333:role/imaging-break-glass".into()),
            permissions_boundary_arn: "arn:aws:iam::111122223333:policy/imaging-tenant-boundary".into(),
            ..Settings::placeholder()
        }
    }

    const BOUNDARY: &str = "arn:aws:iam::111122223333:policy/imaging-tenant-boundary";
    const ROLES: &str = "arn:aws:iam::111122223333:role/imaging-tenants/*";

    /// The policy as AWS reads it: one entry per Sid, each with its actions as a list.
    fn statements(policy: &Value) -> BTreeMap<String, Value> {
        assert_eq!(policy["Version"], "2012-10-17");
        let list = policy["Statement"].as_array().expect("a Statement list");
        let by_sid: BTreeMap<String, Value> = list
            .iter()
            .map(|s| (s["Sid"].as_str().expect("every statement has a Sid").to_string(), s.clone()))
            .collect();
        assert_eq!(by_sid.len(), list.len(), "Sids are unique");
        by_sid
    }

    fn actions(statement: &Value) -> Vec<String> {
        match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            other => panic!("Action {other}"),
        }
    }

    fn allowed(policy: &Value) -> Vec<String> {
        let list = policy["Statement"].as_array().unwrap();
        list.iter().filter(|s| s["Effect"] == "Allow").flat_map(actions).collect()
    }

    use std::collections::BTreeMap;

    #[test]
    fn the_operator_allows_exactly_the_calls_of_the_cloud_layer() {
        let mut allowed = allowed(&operator_policy(&settings()));
        allowed.sort();
        allowed.dedup();
        let expected = [
            "iam:CreateRole",
            "iam:DeleteRole",
            "iam:DeleteRolePolicy",
            "iam:DetachRolePolicy",
            "iam:GetRole",
            "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies",
            "iam:ListRolePolicies",
            "iam:PutRolePermissionsBoundary",
            "iam:PutRolePolicy",
            "iam:TagRole",
            "iam:UpdateAssumeRolePolicy",
            "kms:CreateAlias",
            "kms:CreateKey",
            "kms:DeleteAlias",
            "kms:ListAliases",
            "kms:ListKeys",
            "kms:TagResource",
            "kms:UpdateAlias",
            "s3:CreateBucket",
            "s3:DeleteBucket",
            "s3:GetBucketLogging",
            "s3:GetBucketObjectLockConfiguration",
            "s3:GetBucketOwnershipControls",
            "s3:GetBucketPolicy",
            "s3:GetBucketPublicAccessBlock",
            "s3:GetBucketTagging",
            "s3:GetBucketVersioning",
            "s3:GetEncryptionConfiguration",
            "s3:GetLifecycleConfiguration",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:PutBucketLogging",
            "s3:PutBucketObjectLockConfiguration",
            "s3:PutBucketOwnershipControls",
            "s3:PutBucketPolicy",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutBucketTagging",
            "s3:PutBucketVersioning",
            "s3:PutEncryptionConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:TagResource",
            "sts:GetCallerIdentity",
        ];
        assert_eq!(allowed, expected);
        for never in ["iam:AttachRolePolicy", "iam:UntagRole", "iam:PassRole", "kms:Decrypt", "s3:GetObject"] {
            assert!(!allowed.iter().any(|a| a == never), "{never}");
        }
        assert!(!allowed.iter().any(|a| a.contains('*')), "no wildcard action is allowed: {allowed:?}");
    }

    #[test]
    fn roles_are_created_and_changed_only_under_the_boundary_and_in_this_cluster() {
        let s = statements(&operator_policy(&settings()));
        let create = &s["CreateTenantRolesUnderTheBoundary"];
        assert_eq!(actions(create), ["iam:CreateRole"]);
        assert_eq!(create["Resource"], ROLES);
        let equals = &create["Condition"]["StringEquals"];
        assert_eq!(equals["iam:PermissionsBoundary"], BOUNDARY);
        assert_eq!(equals["aws:RequestTag/imaging.tenancy.dev/cluster"], "prod-1");
        assert_eq!(equals["aws:RequestTag/app.kubernetes.io/managed-by"], "imaging-tenant-operator");
        assert_eq!(create["Condition"]["Null"]["aws:RequestTag/imaging.tenancy.dev/tenant-uid"], "false");

        let under_boundary = &s["ChangeThisClustersTenantRolesUnderTheBoundary"];
        assert_eq!(actions(under_boundary), ["iam:PutRolePermissionsBoundary", "iam:PutRolePolicy"]);
        let equals = &under_boundary["Condition"]["StringEquals"];
        assert_eq!(equals["iam:PermissionsBoundary"], BOUNDARY);
        assert_eq!(equals["aws:ResourceTag/imaging.tenancy.dev/cluster"], "prod-1");

        let change = &s["ChangeThisClustersTenantRoles"];
        assert_eq!(
            actions(change),
            ["iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:UpdateAssumeRolePolicy"]
        );
        assert_eq!(
            change["Condition"],
            json!({"StringEquals": {"aws:ResourceTag/imaging.tenancy.dev/cluster": "prod-1"}})
        );

        let retag = &s["RetagThisClustersTenantRoles"];
        assert_eq!(retag["Condition"]["StringEquals"]["aws:ResourceTag/imaging.tenancy.dev/cluster"], "prod-1");
        assert_eq!(
            retag["Condition"]["ForAllValues:StringNotEquals"]["aws:TagKeys"],
            json!(["imaging.tenancy.dev/cluster", "imaging.tenancy.dev/tenant-uid"])
        );
        let tag_new = &s["TagNewTenantRoles"];
        assert_eq!(tag_new["Condition"]["StringEquals"]["aws:RequestTag/imaging.tenancy.dev/cluster"], "prod-1");

        let others = &s["DenyTaggingOtherClustersRoles"];
        assert_eq!(others["Effect"], "Deny");
        assert_eq!(others["Condition"]["StringNotEquals"]["aws:ResourceTag/imaging.tenancy.dev/cluster"], "prod-1");
        assert_eq!(others["Condition"]["Null"]["aws:ResourceTag/imaging.tenancy.dev/cluster"], "false");

        // Every allowed IAM write names only tenant roles and needs this cluster's tag.
        for statement in s.values().filter(|st| st["Effect"] == "Allow") {
            if actions(statement).iter().any(|a| a.starts_with("iam:") && !ROLE_READ_ACTIONS.contains(&a.as_str())) {
                assert_eq!(statement["Resource"], ROLES, "{statement}");
                let condition = statement["Condition"].to_string();
                assert!(condition.contains("imaging.tenancy.dev/cluster\":\"prod-1\""), "{statement}");
            }
        }
    }

    #[test]
    fn the_boundary_cannot_be_removed_or_replaced() {
        let s = statements(&operator_policy(&settings()));
        let remove = &s["DenyRemovingPermissionsBoundaries"];
        assert_eq!(
            (remove["Effect"].as_str(), actions(remove)),
            (Some("Deny"), vec!["iam:DeleteRolePermissionsBoundary".to_string()])
        );
        assert_eq!(remove["Resource"], "*");
        let other = &s["DenyRolesWithoutTheBoundary"];
        assert_eq!(other["Effect"], "Deny");
        assert_eq!(actions(other), ["iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy"]);
        assert_eq!(other["Condition"], json!({"StringNotEquals": {"iam:PermissionsBoundary": BOUNDARY}}));
    }

    #[test]
    fn keys_are_created_single_region_aws_kms_tagged_and_never_used_for_data() {
        let s = statements(&operator_policy(&settings()));
        let create = &s["CreateThisClustersTenantKeys"];
        assert_eq!(actions(create), ["kms:CreateKey"]);
        let equals = &create["Condition"]["StringEquals"];
        assert_eq!(equals["kms:KeyOrigin"], "AWS_KMS");
        assert_eq!(equals["kms:KeySpec"], "SYMMETRIC_DEFAULT");
        assert_eq!(equals["aws:RequestTag/imaging.tenancy.dev/cluster"], "prod-1");
        assert_eq!(create["Condition"]["BoolIfExists"]["kms:MultiRegion"], "false");
        assert_eq!(create["Condition"]["BoolIfExists"]["kms:BypassPolicyLockoutSafetyCheck"], "false");

        let tag = &s["TagThisClustersTenantKeys"];
        assert_eq!(actions(tag), ["kms:TagResource"]);
        assert_eq!(tag["Condition"]["StringEquals"]["aws:RequestTag/imaging.tenancy.dev/cluster"], "prod-1");
        assert_eq!(tag["Condition"]["StringEqualsIfExists"]["aws:ResourceTag/imaging.tenancy.dev/cluster"], "prod-1");

        let aliases = &s["ThisClustersTenantKeyAliases"];
        assert_eq!(aliases["Resource"], "arn:aws:kms:us-east-1:111122223333:alias/imaging/prod-1/*");

        let data = &s["DenyKeyDataUse"];
        assert_eq!(data["Effect"], "Deny");
        assert_eq!(actions(data), ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]);
        let lockout = &s["DenyPolicyLockoutBypass"];
        assert_eq!(lockout["Condition"], json!({"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}));
    }

    #[test]
    fn buckets_are_administered_by_prefix_and_object_data_is_denied() {
        let s = statements(&operator_policy(&settings()));
        for sid in ["ReadTenantBuckets", "AdministerTenantBuckets"] {
            assert_eq!(s[sid]["Resource"], "arn:aws:s3:::imaging-*");
            assert!(actions(&s[sid]).iter().all(|a| !a.contains("Object") || a.contains("ObjectLock")), "{sid}");
        }
        let deny = &s["DenyObjectData"];
        assert_eq!(deny["Effect"], "Deny");
        for action in ["s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*", "s3:BypassGovernanceRetention"] {
            assert!(actions(deny).contains(&action.to_string()), "{action}");
        }
    }

    #[test]
    fn the_boundary_allows_only_tenant_object_use_and_keys_through_s3() {
        let policy = permissions_boundary_policy(&settings());
        let s = statements(&policy);
        assert_eq!(s.len(), 3);
        assert_eq!(s["ListTenantBuckets"]["Resource"], "arn:aws:s3:::imaging-*");
        assert_eq!(actions(&s["ListTenantBuckets"]), TENANT_BUCKET_ACTIONS);
        assert_eq!(s["ReadWriteTenantObjects"]["Resource"], "arn:aws:s3:::imaging-*/*");
        assert_eq!(actions(&s["ReadWriteTenantObjects"]), TENANT_OBJECT_ACTIONS);
        let keys = &s["UseKeysOnlyThroughS3"];
        assert_eq!(actions(keys), ["kms:Decrypt", "kms:GenerateDataKey"]);
        assert_eq!(keys["Resource"], "arn:aws:kms:us-east-1:111122223333:key/*");
        assert_eq!(keys["Condition"], json!({"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}));
        assert!(s.values().all(|st| st["Effect"] == "Allow" && st.get("NotAction").is_none()));
    }

    #[test]
    fn the_scp_fences_the_operator_and_the_boundary() {
        let s = statements(&guardrail_scp(&settings()));
        let operator = json!({"aws:PrincipalArn": "arn:aws:iam::111122223333:role/imaging-tenant-operator"});
        assert!(s.values().all(|st| st["Effect"] == "Deny"));
        let objects = &s["OperatorNeverTouchesObjectData"];
        assert_eq!(objects["Condition"]["ArnEquals"], operator);
        assert!(actions(objects).contains(&"s3:GetObject*".to_string()));
        assert!(actions(objects).contains(&"s3:DeleteObject*".to_string()));
        let keys = &s["OperatorNeverUsesKeysForData"];
        assert!(actions(keys).contains(&"kms:Decrypt".to_string()));
        assert_eq!(keys["Condition"]["ArnEquals"], operator);
        let lockout = &s["NoKeyPolicyLockoutBypass"];
        assert_eq!(actions(lockout), ["kms:CreateKey", "kms:PutKeyPolicy"]);
        assert_eq!(lockout["Condition"], json!({"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}));
        let deletion = &s["OperatorSchedulesKeyDeletionOnlyWithTheLongestWindow"];
        assert_eq!(actions(deletion), ["kms:ScheduleKeyDeletion"]);
        assert_eq!(deletion["Condition"]["NumericLessThan"]["kms:ScheduleKeyDeletionPendingWindowInDays"], "30");
        let boundary = &s["KeepTheBoundaryPolicy"];
        assert_eq!(boundary["Resource"], BOUNDARY);
        assert_eq!(
            boundary["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
            json!(["arn:aws:iam::111122223333:role/imaging-break-glass"])
        );
        assert_eq!(s["KeepTenantRoleBoundaries"]["Resource"], ROLES);

        let without = Settings { break_glass_role_arn: None, ..settings() };
        let s = statements(&guardrail_scp(&without));
        assert!(s["KeepTheBoundaryPolicy"].get("Condition").is_none(), "without break-glass nobody is exempt");
    }

    #[test]
    fn every_arn_is_in_the_partition() {
        for (partition, region) in [("aws-us-gov", "us-gov-west-1"), ("aws-cn", "cn-north-1")] {
            let s = Settings {
                partition: partition.into(),
                region: region.into(),
                operator_role_arn: format!("arn:{partition}:iam::111122223333:role/op"),
                permissions_boundary_arn: format!("arn:{partition}:iam::111122223333:policy/b"),
                break_glass_role_arn: None,
                ..settings()
            };
            let all = serde_json::to_string(&policies(&s)).unwrap();
            assert!(!all.contains("arn:aws:"), "{partition}: {all}");
            assert!(all.contains(&format!("arn:{partition}:s3:::imaging-*")), "{partition}");
        }
        let china = Settings { partition: "aws-cn".into(), region: "cn-north-1".into(), ..settings() };
        let boundary = permissions_boundary_policy(&china).to_string();
        assert!(boundary.contains("s3.cn-north-1.amazonaws.com.cn"), "{boundary}");
    }

    #[test]
    fn replication_adds_only_passing_the_replication_roles_to_s3_and_its_configuration() {
        let without = statements(&operator_policy(&settings()));
        assert!(!without.contains_key("PassReplicationRolesToS3"));
        assert!(!without.contains_key("ConfigureReplicationOfTenantBuckets"));

        let s = Settings { replication_region: Some("us-west-2".into()), ..settings() };
        let with = statements(&operator_policy(&s));
        let pass = &with["PassReplicationRolesToS3"];
        assert_eq!(pass["Action"], "iam:PassRole");
        assert_eq!(pass["Resource"], "arn:aws:iam::111122223333:role/imaging-tenants/imaging-*-replication");
        assert_eq!(pass["Condition"], json!({"StringEquals": {"iam:PassedToService": "s3.amazonaws.com"}}));
        assert_eq!(
            with["ConfigureReplicationOfTenantBuckets"]["Action"],
            json!(["s3:GetReplicationConfiguration", "s3:PutReplicationConfiguration"])
        );
        assert_eq!(
            with["ThisClustersTenantKeyAliases"]["Resource"],
            json!([
                "arn:aws:kms:us-east-1:111122223333:alias/imaging/prod-1/*",
                "arn:aws:kms:us-west-2:111122223333:alias/imaging/prod-1/*"
            ])
        );
        // The operator still never replicates, reads or decrypts anything itself.
        assert_eq!(with["DenyObjectData"], without["DenyObjectData"]);

        let boundary = statements(&permissions_boundary_policy(&s));
        let encrypt = &boundary["EncryptReplicasOnlyThroughS3"];
        assert_eq!(encrypt["Resource"], "arn:aws:kms:us-west-2:111122223333:key/*");
        assert_eq!(encrypt["Condition"], json!({"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}}));
        let objects = boundary["ReplicateTenantObjects"]["Action"].to_string();
        for action in ["s3:GetObjectVersionForReplication", "s3:ReplicateObject", "s3:ReplicateDelete"] {
            assert!(objects.contains(action), "{action}: {objects}");
        }
        assert!(!objects.contains("s3:DeleteObjectVersion") && !objects.contains("s3:PutObject\""), "{objects}");
    }
}
