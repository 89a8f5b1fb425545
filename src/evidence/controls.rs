//! The control catalogue: every control the operator enforces, with what is checked, the HIPAA
//! Security Rule paragraph it gives evidence for, its severity and the AWS Config managed rules
//! that check the same thing. `docs/compliance.md` is the same list for people.
//!
//! Each check is a pure function of what was read from the live systems ([`TenantEvidence`])
//! and of what the tenant should have (`desired`, with the same settings as the operator). It
//! answers pass, fail, error (the setting could not be read) or skip (not configured for this
//! tenant), with a message a person can act on and the excerpt of the evidence it judged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use super::live::{
    BucketEvidence, GuardEvidence, KeyEvidence, NamespaceEvidence, ObjectLock, Read, ReplicaEvidence, RoleEvidence,
    TenantEvidence,
};
use crate::api::metadata::{
    ADMISSION_GUARDS, GUARD_LABEL, IRSA_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, NAMESPACE_NAME_LABEL, TAG_REPLICA_OF,
    TENANT_UID_LABEL,
};
use crate::cloud::policy;
use crate::config::Settings;
use crate::desired::aws::{
    BlockPublicAccess, ReplicationAws, ReplicationChoice, ReplicationConfiguration, TenantAws, render_with_keys,
};
use crate::desired::cluster_network;
use crate::desired::kubernetes::{
    self, ALLOW_DNS, ALLOW_EGRESS, ALLOW_INGRESS, ALLOW_SAME_TENANT, BOUND_CLUSTER_ROLES, DEFAULT_DENY, QUOTA,
    TenantObjects,
};

/// Noncurrent versions are kept at least this long (the CRD enforces it for the spec too).
pub const MIN_NONCURRENT_DAYS: i32 = 30;

/// A paragraph of the HIPAA Security Rule (45 CFR Part 164, Subpart C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hipaa {
    /// 164.312(a)(1) Access control.
    AccessControl,
    /// 164.312(a)(2)(iv) Encryption and decryption.
    Encryption,
    /// 164.312(b) Audit controls.
    AuditControls,
    /// 164.312(c)(1) Integrity.
    Integrity,
    /// 164.312(d) Person or entity authentication.
    Authentication,
    /// 164.312(e)(1) Transmission security.
    TransmissionSecurity,
    /// 164.308(a)(7) Contingency plan.
    Contingency,
    /// 164.308(a)(7)(ii)(A) Data backup plan.
    DataBackup,
    /// 164.308(a)(7)(ii)(B) Disaster recovery plan.
    DisasterRecovery,
}

impl Hipaa {
    pub fn paragraph(self) -> &'static str {
        match self {
            Hipaa::AccessControl => "164.312(a)(1)",
            Hipaa::Encryption => "164.312(a)(2)(iv)",
            Hipaa::AuditControls => "164.312(b)",
            Hipaa::Integrity => "164.312(c)(1)",
            Hipaa::Authentication => "164.312(d)",
            Hipaa::TransmissionSecurity => "164.312(e)(1)",
            Hipaa::Contingency => "164.308(a)(7)",
            Hipaa::DataBackup => "164.308(a)(7)(ii)(A)",
            Hipaa::DisasterRecovery => "164.308(a)(7)(ii)(B)",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Hipaa::AccessControl => "Access control",
            Hipaa::Encryption => "Encryption and decryption",
            Hipaa::AuditControls => "Audit controls",
            Hipaa::Integrity => "Integrity",
            Hipaa::Authentication => "Person or entity authentication",
            Hipaa::TransmissionSecurity => "Transmission security",
            Hipaa::Contingency => "Contingency plan",
            Hipaa::DataBackup => "Data backup plan",
            Hipaa::DisasterRecovery => "Disaster recovery plan",
        }
    }
}

/// How bad a failure is (the severities of OpenReports and wg-policy reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// The outcome of one control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The evidence could not be read: the control is not shown to hold.
    Error,
    /// Not configured for this tenant (Object Lock without `spec.storage.retention`, replication
    /// for a tenant that does not replicate).
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Skip => "skip",
        }
    }
}

/// What a control found: the verdict, what to do, and the evidence judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub result: Verdict,
    pub message: String,
    pub evidence: Value,
}

fn pass(message: impl Into<String>, evidence: Value) -> Outcome {
    Outcome { result: Verdict::Pass, message: message.into(), evidence }
}

fn fail(message: impl Into<String>, evidence: Value) -> Outcome {
    Outcome { result: Verdict::Fail, message: message.into(), evidence }
}

fn error(message: impl Into<String>) -> Outcome {
    Outcome { result: Verdict::Error, message: message.into(), evidence: Value::Null }
}

fn skip(message: impl Into<String>) -> Outcome {
    Outcome { result: Verdict::Skip, message: message.into(), evidence: Value::Null }
}

/// One control of the catalogue.
pub struct Control {
    /// `ITO-<area>-<nn>`; never reused for another meaning.
    pub id: &'static str,
    pub title: &'static str,
    /// What is read and how it is judged.
    pub checks: &'static str,
    /// The paragraphs it gives evidence for, the first one the main one.
    pub hipaa: &'static [Hipaa],
    pub severity: Severity,
    /// AWS Config managed rules that check the same setting.
    pub aws_config_rules: &'static [&'static str],
    check: fn(&Context) -> Outcome,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

/// What the checks judge against: the evidence and what the tenant should have.
pub(crate) struct Context<'a> {
    ev: &'a TenantEvidence,
    settings: &'a Settings,
    aws: TenantAws,
    k8s: TenantObjects,
}

/// One control judged for one tenant.
#[derive(Clone, Debug)]
pub struct Finding {
    pub control: &'static Control,
    pub outcome: Outcome,
}

/// Judges every control of the catalogue for one tenant. `settings` are the operator's, with
/// the account ID read from STS.
pub fn evaluate(ev: &TenantEvidence, settings: &Settings) -> Vec<Finding> {
    let key_arn = match &ev.aws.key {
        Ok(Some(key)) => Some(key.arn.as_str()),
        _ => None,
    };
    let replica_key_arn = match ev.aws.replica.as_ref().map(|r| &r.key) {
        Some(Ok(Some(key))) => Some(key.arn.as_str()),
        _ => None,
    };
    let cx = Context {
        ev,
        settings,
        aws: render_with_keys(&ev.tenant, settings, key_arn, replica_key_arn),
        k8s: kubernetes::objects(&ev.tenant, settings),
    };
    CONTROLS.iter().map(|control| Finding { control, outcome: (control.check)(&cx) }).collect()
}

/// The control of an ID.
pub fn control(id: &str) -> Option<&'static Control> {
    CONTROLS.iter().find(|c| c.id == id)
}

/// The catalogue as the Markdown table of `docs/compliance.md` (a test keeps them equal).
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "| ID | control | what is checked, and how | HIPAA | severity | AWS Config managed rule |\n|---|---|---|---|---|---|\n",
    );
    for c in &CONTROLS {
        let hipaa: Vec<&str> = c.hipaa.iter().map(|h| h.paragraph()).collect();
        let rules: Vec<String> = c.aws_config_rules.iter().map(|r| format!("`{r}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.id,
            c.title,
            c.checks,
            hipaa.join(", "),
            c.severity.as_str(),
            if rules.is_empty() { "none".to_string() } else { rules.join(", ") }
        ));
    }
    out
}

use Hipaa::{
    AccessControl as A1, AuditControls as B, Authentication as D, Contingency as C7, DataBackup as DR_A,
    DisasterRecovery as DR_B, Encryption as A2IV, Integrity as C1, TransmissionSecurity as E1,
};

/// Every control, Kubernetes first, then the bucket, the key, the role and the replica.
pub static CONTROLS: [Control; 40] = [
    Control {
        id: "ITO-K8S-01",
        title: "The tenant's namespaces are exactly those of its spec",
        checks: "Lists namespaces labelled `imaging.tenancy.dev/tenant-uid=<tenant UID>` and gets each namespace of spec.namespaces: every one exists and carries the label, and no other namespace carries it (no foreign namespace is admitted into the tenant).",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_namespaces,
    },
    Control {
        id: "ITO-K8S-02",
        title: "Pod Security restricted on every tenant namespace",
        checks: "Reads the labels pod-security.kubernetes.io/{enforce,audit,warn} of every tenant namespace: each is `restricted`.",
        hipaa: &[A1],
        severity: Severity::Medium,
        aws_config_rules: &[],
        check: k8s_pod_security,
    },
    Control {
        id: "ITO-K8S-03",
        title: "Default-deny NetworkPolicy present and unmodified",
        checks: "Gets NetworkPolicy imaging-default-deny in every tenant namespace and compares its spec with the operator's (all pods, Ingress and Egress, no rule): any rule added opens traffic.",
        hipaa: &[E1, A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_default_deny,
    },
    Control {
        id: "ITO-K8S-04",
        title: "Allowed traffic is exactly what the spec lists",
        checks: "Compares the specs of the operator's allow policies (imaging-allow-same-tenant, -dns, -ingress, -egress) with those rendered from spec.network, and finds no other NetworkPolicy carrying the operator's labels.",
        hipaa: &[E1, A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_allow_list,
    },
    Control {
        id: "ITO-K8S-05",
        title: "RBAC subjects are only those of the spec",
        checks: "Reads every RoleBinding in the tenant namespaces: each subject is named in spec.access (admins, editors, viewers) or is a ServiceAccount of the tenant's own namespaces.",
        hipaa: &[A1, D],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_rbac_subjects,
    },
    Control {
        id: "ITO-K8S-06",
        title: "The operator's RoleBindings bind only admin, edit and view, as specified",
        checks: "Compares the RoleBindings imaging-admins, -editors and -viewers (roleRef and subjects) with those rendered from spec.access, and finds no other RoleBinding carrying the operator's labels.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_operator_bindings,
    },
    Control {
        id: "ITO-K8S-07",
        title: "Resource quota present",
        checks: "Gets ResourceQuota imaging-quota in every tenant namespace: its hard limits are those of spec.quota.hard.",
        hipaa: &[C7],
        severity: Severity::Low,
        aws_config_rules: &[],
        check: k8s_quota,
    },
    Control {
        id: "ITO-K8S-08",
        title: "Admission guards active for every tenant namespace",
        checks: "Lists ValidatingAdmissionPolicies labelled imaging.tenancy.dev/guard and their bindings: each of the six guards exists with failurePolicy Fail and a binding with validationActions Deny whose namespaceSelector selects every tenant namespace.",
        hipaa: &[C1, A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_guards,
    },
    Control {
        id: "ITO-K8S-09",
        title: "Workload identity (IRSA) only to the tenant's role",
        checks: "Reads every ServiceAccount in the tenant namespaces: the workload ServiceAccount exists, and every eks.amazonaws.com/role-arn annotation names the tenant's IAM role.",
        hipaa: &[A1, D],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_irsa,
    },
    Control {
        id: "ITO-K8S-10",
        title: "No garbage-collector path to a tenant namespace",
        checks: "Reads the ownerReferences of the tenant namespaces and of the operator's objects in them: there are none, so no deleted owner can make the garbage collector delete a namespace holding PHI or the isolation inside it.",
        hipaa: &[C7, C1],
        severity: Severity::Medium,
        aws_config_rules: &[],
        check: k8s_no_owner_references,
    },
    Control {
        id: "ITO-K8S-11",
        title: "Admin-tier network policy in force where the cluster serves one",
        checks: "Discovers whether the cluster serves ClusterNetworkPolicy or AdminNetworkPolicy (policy.networking.k8s.io) and gets the tenant's policy of the preferred kind: it carries the tenant's UID label and its spec is the operator's for the tenant's namespaces (same-tenant traffic passes to the namespace policies, every other namespace and the metadata addresses are denied, whatever a tenant's own NetworkPolicies say). Skipped when the cluster serves neither.",
        hipaa: &[E1, A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: k8s_admin_network,
    },
    Control {
        id: "ITO-S3-01",
        title: "Bucket blocks all public access",
        checks: "s3:GetPublicAccessBlock on the tenant bucket: BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy and RestrictPublicBuckets are all true.",
        hipaa: &[A1],
        severity: Severity::Critical,
        aws_config_rules: &[
            "s3-bucket-level-public-access-prohibited",
            "s3-bucket-public-read-prohibited",
            "s3-bucket-public-write-prohibited",
        ],
        check: s3_public_access,
    },
    Control {
        id: "ITO-S3-02",
        title: "Bucket owner enforced: ACLs disabled",
        checks: "s3:GetBucketOwnershipControls: the only rule is ObjectOwnership BucketOwnerEnforced, so no ACL grants access.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-acl-prohibited"],
        check: s3_ownership,
    },
    Control {
        id: "ITO-S3-03",
        title: "Bucket policy refuses requests without TLS 1.2",
        checks: "s3:GetBucketPolicy: statements DenyInsecureTransport (aws:SecureTransport false) and DenyTlsBelowVersion12 (s3:TlsVersion below 1.2) deny every principal on the bucket and its objects, as the operator writes them.",
        hipaa: &[E1],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-ssl-requests-only"],
        check: s3_tls_only,
    },
    Control {
        id: "ITO-S3-04",
        title: "Default encryption SSE-KMS with the tenant's key",
        checks: "s3:GetBucketEncryption: one rule, SSEAlgorithm aws:kms, KMSMasterKeyID the tenant key's ARN.",
        hipaa: &[A2IV],
        severity: Severity::Critical,
        aws_config_rules: &["s3-bucket-server-side-encryption-enabled", "s3-default-encryption-kms"],
        check: s3_encryption,
    },
    Control {
        id: "ITO-S3-05",
        title: "S3 Bucket Key enabled",
        checks: "s3:GetBucketEncryption: BucketKeyEnabled is true, so KMS calls carry the bucket's ARN as encryption context, which the tenant role's key permission requires.",
        hipaa: &[A2IV],
        severity: Severity::Low,
        aws_config_rules: &[],
        check: s3_bucket_key,
    },
    Control {
        id: "ITO-S3-06",
        title: "Versioning enabled",
        checks: "s3:GetBucketVersioning: Status Enabled (not Suspended, not never enabled).",
        hipaa: &[C1, C7],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-versioning-enabled"],
        check: s3_versioning,
    },
    Control {
        id: "ITO-S3-07",
        title: "Object Lock default retention as specified",
        checks: "s3:GetObjectLockConfiguration: when spec.storage.retention is set, Object Lock is enabled with that mode and at least that many days; skipped otherwise.",
        hipaa: &[C1, C7],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-default-lock-enabled"],
        check: s3_object_lock,
    },
    Control {
        id: "ITO-S3-08",
        title: "Lifecycle keeps noncurrent versions at least 30 days",
        checks: "s3:GetBucketLifecycleConfiguration: the rules are exactly those of spec.storage.lifecycle (whole bucket, no expiry of current objects), and none expires noncurrent versions in fewer than 30 days.",
        hipaa: &[C1, C7],
        severity: Severity::Medium,
        aws_config_rules: &["s3-version-lifecycle-policy-check"],
        check: s3_lifecycle,
    },
    Control {
        id: "ITO-S3-09",
        title: "Server access logging to the audit bucket",
        checks: "s3:GetBucketLogging: logging is enabled into --audit-log-bucket under the tenant bucket's own prefix. Fails when the operator runs without --audit-log-bucket.",
        hipaa: &[B],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-logging-enabled"],
        check: s3_logging,
    },
    Control {
        id: "ITO-S3-10",
        title: "Bucket policy admits only the tenant role and the administrators",
        checks: "s3:GetBucketPolicy: statements DenyAllButTenantRoleAndAdministrators, DenyObjectDataToAllButTenantRoleAndBreakGlass and DenyBucketConfigurationToAllButAdministrators (and the VPC endpoint perimeter when configured, and DenyAuditorsAllButReadingSettings when --auditor-role-arn is) are as the operator writes them, naming only the tenant role, the operator and the break-glass role (and the auditor roles, for reads of settings only), and the policy has no statement the operator does not write.",
        hipaa: &[A1],
        severity: Severity::Critical,
        aws_config_rules: &["s3-bucket-policy-grantee-check"],
        check: s3_tenant_only,
    },
    Control {
        id: "ITO-S3-11",
        title: "Uploads only with the tenant's key",
        checks: "s3:GetBucketPolicy: statements DenyOtherKmsKeys (naming the tenant key), DenyEncryptionOtherThanKms and DenyCustomerProvidedKeys are as the operator writes them.",
        hipaa: &[A2IV],
        severity: Severity::Medium,
        aws_config_rules: &[],
        check: s3_upload_encryption,
    },
    Control {
        id: "ITO-S3-12",
        title: "The bucket is the tenant's, in this account",
        checks: "s3:GetBucketVersioning and s3:GetBucketTagging with the expected bucket owner (this account): the bucket exists here and its imaging.tenancy.dev/tenant-uid tag is the tenant's UID.",
        hipaa: &[A1],
        severity: Severity::Medium,
        aws_config_rules: &["required-tags"],
        check: s3_owned,
    },
    Control {
        id: "ITO-KMS-01",
        title: "Tenant key enabled",
        checks: "kms:DescribeKey on the tenant's alias: KeyState Enabled.",
        hipaa: &[A2IV],
        severity: Severity::High,
        aws_config_rules: &[],
        check: kms_enabled,
    },
    Control {
        id: "ITO-KMS-02",
        title: "Tenant key not scheduled for deletion",
        checks: "kms:DescribeKey: KeyState is not PendingDeletion and no DeletionDate is set (a deleted key makes every object unreadable for good).",
        hipaa: &[A2IV, C7],
        severity: Severity::Critical,
        aws_config_rules: &["kms-cmk-not-scheduled-for-deletion"],
        check: kms_not_pending_deletion,
    },
    Control {
        id: "ITO-KMS-03",
        title: "Automatic key rotation on",
        checks: "kms:GetKeyRotationStatus: KeyRotationEnabled true.",
        hipaa: &[A2IV],
        severity: Severity::Medium,
        aws_config_rules: &["cmk-backing-key-rotation-enabled"],
        check: kms_rotation,
    },
    Control {
        id: "ITO-KMS-04",
        title: "Key policy: administrators manage, only the tenant role uses it, through S3",
        checks: "kms:GetKeyPolicy (policy `default`), compared as parsed JSON with the operator's: KeyAdministrators names only the operator and break-glass roles and no data action; TenantRoleThroughS3 names only the tenant role, only with kms:ViaService S3 in the tenant's region; AuditorsReadKeySettings, when --auditor-role-arn is set, names only the auditor roles and only reads; no other statement (none for the account root or `*`).",
        hipaa: &[A1, A2IV],
        severity: Severity::High,
        aws_config_rules: &[],
        check: kms_policy,
    },
    Control {
        id: "ITO-KMS-05",
        title: "Customer-managed key with KMS-generated material",
        checks: "kms:DescribeKey: KeyManager CUSTOMER and Origin AWS_KMS (no imported or external key material).",
        hipaa: &[A2IV],
        severity: Severity::Medium,
        aws_config_rules: &[],
        check: kms_origin,
    },
    Control {
        id: "ITO-KMS-06",
        title: "Single-Region key",
        checks: "kms:DescribeKey: MultiRegion false, so no replica in another Region is controlled by another key policy.",
        hipaa: &[A1],
        severity: Severity::Medium,
        aws_config_rules: &[],
        check: kms_single_region,
    },
    Control {
        id: "ITO-KMS-07",
        title: "The tenant's alias points to the tenant key",
        checks: "kms:DescribeKey on `alias/imaging/<cluster>/<tenant>-<hash>`: it resolves to the key the bucket encrypts with, tagged with the tenant's UID (kms:ListResourceTags).",
        hipaa: &[A2IV],
        severity: Severity::Low,
        aws_config_rules: &[],
        check: kms_alias,
    },
    Control {
        id: "ITO-KMS-08",
        title: "No grants on the tenant key",
        checks: "kms:ListGrants: none. A grant lets its grantee use the key outside the key policy; S3 with a Bucket Key needs none.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: kms_no_grants,
    },
    Control {
        id: "ITO-IAM-01",
        title: "Role trusts only the tenant's ServiceAccounts through the cluster's OIDC provider",
        checks: "iam:GetRole: the trust policy, compared as parsed JSON, admits only sts:AssumeRoleWithWebIdentity from the configured OIDC provider with sub `system:serviceaccount:<tenant namespace>:<workload ServiceAccount>` and aud sts.amazonaws.com.",
        hipaa: &[D, A1],
        severity: Severity::Critical,
        aws_config_rules: &[],
        check: iam_trust,
    },
    Control {
        id: "ITO-IAM-02",
        title: "Permissions boundary on the role",
        checks: "iam:GetRole: PermissionsBoundary is --permissions-boundary-arn.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: iam_boundary,
    },
    Control {
        id: "ITO-IAM-03",
        title: "Role policy names only the tenant's bucket and key",
        checks: "iam:GetRolePolicy imaging-tenant-access, compared as parsed JSON with the operator's: list the tenant bucket, read and write its objects, use the tenant key only through S3 for that bucket.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &["iam-inline-policy-blocked-kms-actions"],
        check: iam_permissions,
    },
    Control {
        id: "ITO-IAM-04",
        title: "No administrative statement in the role's policies",
        checks: "Every inline policy of the role (iam:ListRolePolicies, iam:GetRolePolicy): no Allow statement with Action `*` or `<service>:*`, or with NotAction.",
        hipaa: &[A1],
        severity: Severity::Critical,
        aws_config_rules: &["iam-policy-no-statements-with-admin-access"],
        check: iam_no_admin,
    },
    Control {
        id: "ITO-IAM-05",
        title: "No other policy on the role",
        checks: "iam:ListRolePolicies and iam:ListAttachedRolePolicies: the only policy is the inline imaging-tenant-access; no managed policy is attached.",
        hipaa: &[A1],
        severity: Severity::High,
        aws_config_rules: &[],
        check: iam_only_policy,
    },
    Control {
        id: "ITO-DR-01",
        title: "The bucket replicates to the tenant's replica in the replication region",
        checks: "s3:GetBucketReplication on the tenant bucket: one enabled rule `imaging-replica` over the whole bucket, with the tenant's replication role, to the tenant's replica bucket, replicating SSE-KMS objects encrypted there with the replica key, replicating delete markers, and with Replication Time Control (15 minutes, with metrics) exactly when spec.storage.replication.replicationTimeControl asks. Fails when a tenant that should replicate has no configuration; skipped for one that does not replicate (no --replication-region and no spec.storage.replication, or an opt-out the operator allows with --allow-replication-opt-out).",
        hipaa: &[DR_B, DR_A, C1],
        severity: Severity::High,
        aws_config_rules: &["s3-bucket-replication-enabled", "s3-bucket-cross-region-replication-enabled"],
        check: dr_replication,
    },
    Control {
        id: "ITO-DR-02",
        title: "Replica bucket protected as the source",
        checks: "In the replication region, with the expected bucket owner: s3:GetPublicAccessBlock (all four on), s3:GetBucketOwnershipControls (BucketOwnerEnforced), s3:GetBucketVersioning (Enabled), s3:GetBucketEncryption (SSE-KMS with the replica key), s3:GetBucketPolicy (every statement the operator writes for the replica, TLS 1.2 only, none other), s3:GetBucketTagging (the tenant's UID and imaging.tenancy.dev/replica-of the source bucket). Skipped as ITO-DR-01.",
        hipaa: &[DR_B, A1, A2IV, E1],
        severity: Severity::High,
        aws_config_rules: &[
            "s3-bucket-level-public-access-prohibited",
            "s3-bucket-versioning-enabled",
            "s3-default-encryption-kms",
            "s3-bucket-ssl-requests-only",
        ],
        check: dr_replica_bucket,
    },
    Control {
        id: "ITO-DR-03",
        title: "Replica key enabled, rotating and kept",
        checks: "In the replication region, kms:DescribeKey on the replica alias `alias/imaging/<cluster>/<tenant>-<hash>-dr`: KeyState Enabled, no DeletionDate, KeyManager CUSTOMER, Origin AWS_KMS, MultiRegion false; kms:GetKeyRotationStatus on; kms:GetKeyPolicy the operator's; kms:ListGrants none; kms:ListResourceTags the tenant's UID and the source bucket as replica-of. Skipped as ITO-DR-01.",
        hipaa: &[A2IV, DR_B],
        severity: Severity::Critical,
        aws_config_rules: &["cmk-backing-key-rotation-enabled", "kms-cmk-not-scheduled-for-deletion"],
        check: dr_replica_key,
    },
    Control {
        id: "ITO-DR-04",
        title: "Replication role trusts only S3 and stays under the boundary",
        checks: "iam:GetRole on the replication role: the trust policy admits only s3.amazonaws.com for the tenant bucket of this account; PermissionsBoundary is --permissions-boundary-arn; iam:ListRolePolicies and iam:GetRolePolicy: the one inline policy imaging-tenant-replication is the operator's (read the source's versions, write the replica, each key only through S3); iam:ListAttachedRolePolicies: none. Skipped as ITO-DR-01.",
        hipaa: &[A1, DR_A],
        severity: Severity::High,
        aws_config_rules: &["iam-policy-no-statements-with-admin-access"],
        check: dr_replication_role,
    },
];

// ---- Kubernetes ----

/// The result of one namespace for a per-namespace control: a problem or none, and what was seen.
struct Seen {
    problem: Option<String>,
    evidence: Value,
}

fn seen(problem: Option<String>, evidence: Value) -> Result<Seen, String> {
    Ok(Seen { problem, evidence })
}

/// Runs `judge` on every spec namespace that exists: fail if any has a problem or is missing,
/// error if anything could not be read.
fn per_namespace(
    cx: &Context,
    ok: &str,
    judge: impl Fn(&NamespaceEvidence, &Value) -> Result<Seen, String>,
) -> Outcome {
    let mut evidence = serde_json::Map::new();
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    for ns in &cx.ev.kubernetes.namespaces {
        let object = match &ns.object {
            Err(e) => {
                errors.push(format!("namespace {}: {e}", ns.name));
                continue;
            }
            Ok(None) => {
                problems.push(format!("namespace {} does not exist", ns.name));
                evidence.insert(ns.name.clone(), json!("absent"));
                continue;
            }
            Ok(Some(object)) => object,
        };
        match judge(ns, object) {
            Err(e) => errors.push(format!("namespace {}: {e}", ns.name)),
            Ok(Seen { problem, evidence: seen }) => {
                if let Some(p) = problem {
                    problems.push(format!("namespace {}: {p}", ns.name));
                }
                evidence.insert(ns.name.clone(), seen);
            }
        }
    }
    if !errors.is_empty() {
        return error(errors.join("; "));
    }
    if problems.is_empty() {
        pass(ok, Value::Object(evidence))
    } else {
        fail(problems.join("; "), Value::Object(evidence))
    }
}

fn read<T>(r: &Read<T>) -> Result<&T, String> {
    r.as_ref().map_err(Clone::clone)
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

fn operator_owned(object: &Value, uid: &str) -> bool {
    let labels = labels_of(object);
    labels.get(TENANT_UID_LABEL).map(String::as_str) == Some(uid)
        || labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

/// A value without nulls, empty lists and empty maps, which mean the same as absent.
fn pruned(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), pruned(v))).filter(|(_, v)| !is_empty(v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(pruned).collect()),
        other => other.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    pruned(a) == pruned(b)
}

fn tenant_uid<'a>(cx: &'a Context) -> &'a str {
    cx.ev.tenant.metadata.uid.as_deref().unwrap_or_default()
}

fn k8s_namespaces(cx: &Context) -> Outcome {
    let labelled = match read(&cx.ev.kubernetes.labelled_namespaces) {
        Ok(l) => l.iter().cloned().collect::<BTreeSet<_>>(),
        Err(e) => return error(format!("listing namespaces labelled {TENANT_UID_LABEL}: {e}")),
    };
    let spec: BTreeSet<String> = cx.ev.tenant.namespace_names().into_iter().collect();
    let mut problems = Vec::new();
    for ns in &cx.ev.kubernetes.namespaces {
        match &ns.object {
            Err(e) => return error(format!("namespace {}: {e}", ns.name)),
            Ok(None) => problems.push(format!("namespace {} of the spec does not exist", ns.name)),
            Ok(Some(_)) if !labelled.contains(&ns.name) => problems.push(format!(
                "namespace {} of the spec is not labelled {TENANT_UID_LABEL}={}: it is not the tenant's (see the tenant's NamespacesReady condition)",
                ns.name,
                tenant_uid(cx)
            )),
            Ok(Some(_)) => {}
        }
    }
    let foreign: Vec<&String> = labelled.difference(&spec).collect();
    if !foreign.is_empty() {
        problems.push(format!(
            "namespaces {foreign:?} carry the tenant's UID label but are not in spec.namespaces: remove the label, or add them to the spec if they are the tenant's"
        ));
    }
    let evidence = json!({"spec": spec, "labelledWithTenantUid": labelled});
    if problems.is_empty() {
        pass(format!("the namespaces labelled with the tenant's UID are exactly {spec:?}"), evidence)
    } else {
        fail(problems.join("; "), evidence)
    }
}

fn k8s_pod_security(cx: &Context) -> Outcome {
    per_namespace(cx, "every tenant namespace enforces, audits and warns at Pod Security level restricted", |_, ns| {
        let labels = labels_of(ns);
        let levels: BTreeMap<String, Option<String>> = ["enforce", "audit", "warn"]
            .iter()
            .map(|m| (m.to_string(), labels.get(&format!("pod-security.kubernetes.io/{m}")).cloned()))
            .collect();
        let weak: Vec<String> = levels
            .iter()
            .filter(|(_, level)| level.as_deref() != Some("restricted"))
            .map(|(mode, level)| format!("pod-security.kubernetes.io/{mode} is {level:?}"))
            .collect();
        let problem = (!weak.is_empty())
            .then(|| format!("{}; it must be restricted (the operator restores it)", weak.join(", ")));
        seen(problem, json!(levels))
    })
}

fn desired_policy(cx: &Context, ns: &str, name: &str) -> Option<Value> {
    cx.k8s
        .network_policies
        .iter()
        .find(|p| p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name))
        .map(kubernetes::to_json)
}

fn k8s_default_deny(cx: &Context) -> Outcome {
    per_namespace(
        cx,
        "imaging-default-deny denies all ingress and egress in every tenant namespace, unmodified",
        |ns, _| {
            let live = read(&ns.network_policies)?;
            let want = desired_policy(cx, &ns.name, DEFAULT_DENY).map(|p| p["spec"].clone()).unwrap_or_default();
            match live.iter().find(|p| name_of(p) == DEFAULT_DENY) {
                None => seen(Some(format!("NetworkPolicy {DEFAULT_DENY} is missing")), json!(null)),
                Some(p) if !same(&p["spec"], &want) => seen(
                    Some(format!("NetworkPolicy {DEFAULT_DENY} was changed: its spec is not the default deny {want}")),
                    p["spec"].clone(),
                ),
                Some(p) => seen(None, p["spec"].clone()),
            }
        },
    )
}

fn k8s_allow_list(cx: &Context) -> Outcome {
    let uid = tenant_uid(cx).to_string();
    per_namespace(cx, "the operator's allow policies are exactly what spec.network lists", |ns, _| {
        let live = read(&ns.network_policies)?;
        let mut problems = Vec::new();
        let mut evidence = serde_json::Map::new();
        for name in [ALLOW_SAME_TENANT, ALLOW_DNS, ALLOW_INGRESS, ALLOW_EGRESS] {
            let want = desired_policy(cx, &ns.name, name);
            let have = live.iter().find(|p| name_of(p) == name);
            match (want, have) {
                (Some(w), Some(h)) if !same(&w["spec"], &h["spec"]) => {
                    problems.push(format!("NetworkPolicy {name} differs from what the spec lists"))
                }
                (Some(_), None) => problems.push(format!("NetworkPolicy {name} is missing")),
                (None, Some(_)) => {
                    problems.push(format!("NetworkPolicy {name} exists but the spec lists no such traffic"))
                }
                _ => {}
            }
            if let Some(h) = have {
                evidence.insert(name.to_string(), h["spec"].clone());
            }
        }
        let ours = [DEFAULT_DENY, ALLOW_SAME_TENANT, ALLOW_DNS, ALLOW_INGRESS, ALLOW_EGRESS];
        for extra in live.iter().filter(|p| operator_owned(p, &uid) && !ours.contains(&name_of(p))) {
            problems.push(format!(
                "NetworkPolicy {} carries the operator's labels but is not the operator's",
                name_of(extra)
            ));
        }
        seen((!problems.is_empty()).then(|| problems.join(", ")), Value::Object(evidence))
    })
}

fn subject_text(s: &Value) -> String {
    match s["namespace"].as_str() {
        Some(ns) => {
            format!("{} {}/{}", s["kind"].as_str().unwrap_or_default(), ns, s["name"].as_str().unwrap_or_default())
        }
        None => format!("{} {}", s["kind"].as_str().unwrap_or_default(), s["name"].as_str().unwrap_or_default()),
    }
}

fn k8s_rbac_subjects(cx: &Context) -> Outcome {
    let access = &cx.ev.tenant.spec.access;
    let allowed: BTreeSet<(String, String, Option<String>)> = [&access.admins, &access.editors, &access.viewers]
        .into_iter()
        .flatten()
        .map(|s| (s.kind.as_str().to_string(), s.name.clone(), s.namespace.clone()))
        .collect();
    let tenant_namespaces = cx.ev.tenant.namespace_names();
    let own_service_account = |s: &Value| -> bool {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("ServiceAccount") => s["namespace"].as_str().is_some_and(|n| tenant_namespaces.iter().any(|t| t == n)),
            Some("User") => name
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(n, _)| tenant_namespaces.iter().any(|t| t == n)),
            Some("Group") => {
                name.strip_prefix("system:serviceaccounts:").is_some_and(|n| tenant_namespaces.iter().any(|t| t == n))
            }
            _ => false,
        }
    };
    per_namespace(
        cx,
        "every RoleBinding subject in the tenant namespaces is named in spec.access or is a ServiceAccount of the tenant",
        |ns, _| {
            let bindings = read(&ns.role_bindings)?;
            let mut outsiders = Vec::new();
            let mut evidence = serde_json::Map::new();
            for binding in bindings {
                let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
                evidence
                    .insert(name_of(binding).to_string(), json!(subjects.iter().map(subject_text).collect::<Vec<_>>()));
                for s in &subjects {
                    let key = (
                        s["kind"].as_str().unwrap_or_default().to_string(),
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["namespace"].as_str().map(str::to_string),
                    );
                    if !allowed.contains(&key) && !own_service_account(s) {
                        outsiders.push(format!("RoleBinding {} binds {}", name_of(binding), subject_text(s)));
                    }
                }
            }
            let problem = (!outsiders.is_empty()).then(|| {
                format!(
                    "{}, not named in spec.access: remove the binding or add the subject to the spec",
                    outsiders.join(", ")
                )
            });
            seen(problem, Value::Object(evidence))
        },
    )
}

fn k8s_operator_bindings(cx: &Context) -> Outcome {
    let uid = tenant_uid(cx).to_string();
    per_namespace(cx, "the operator's RoleBindings bind exactly spec.access to admin, edit and view", |ns, _| {
        let live = read(&ns.role_bindings)?;
        let mut problems = Vec::new();
        let mut evidence = serde_json::Map::new();
        for (name, _) in BOUND_CLUSTER_ROLES {
            let want = cx
                .k8s
                .role_bindings
                .iter()
                .find(|b| b.metadata.namespace.as_deref() == Some(&ns.name) && b.metadata.name.as_deref() == Some(name))
                .map(kubernetes::to_json);
            let have = live.iter().find(|b| name_of(b) == name);
            match (&want, have) {
                (Some(w), Some(h)) if !same(&w["roleRef"], &h["roleRef"]) || !same(&w["subjects"], &h["subjects"]) => {
                    problems.push(format!("RoleBinding {name} differs from spec.access"))
                }
                (Some(_), None) => problems.push(format!("RoleBinding {name} is missing")),
                (None, Some(h)) if operator_owned(h, &uid) => {
                    problems.push(format!("RoleBinding {name} exists but spec.access lists nobody for it"))
                }
                _ => {}
            }
            if let Some(h) = have {
                evidence.insert(name.to_string(), json!({"roleRef": h["roleRef"]["name"], "subjects": h["subjects"]}));
            }
        }
        let ours: Vec<&str> = BOUND_CLUSTER_ROLES.iter().map(|(n, _)| *n).collect();
        for extra in live.iter().filter(|b| operator_owned(b, &uid) && !ours.contains(&name_of(b))) {
            problems.push(format!(
                "RoleBinding {} (to {}) carries the operator's labels but is not the operator's",
                name_of(extra),
                extra["roleRef"]["name"].as_str().unwrap_or_default()
            ));
        }
        seen((!problems.is_empty()).then(|| problems.join(", ")), Value::Object(evidence))
    })
}

fn k8s_quota(cx: &Context) -> Outcome {
    per_namespace(cx, "imaging-quota holds spec.quota.hard in every tenant namespace", |ns, _| {
        let live = read(&ns.resource_quotas)?;
        let want = kubernetes::to_json(&kubernetes::resource_quota(&cx.ev.tenant, &ns.name));
        match live.iter().find(|q| name_of(q) == QUOTA) {
            None => seen(Some(format!("ResourceQuota {QUOTA} is missing")), json!(null)),
            Some(q) if !same(&q["spec"]["hard"], &want["spec"]["hard"]) => seen(
                Some(format!(
                    "ResourceQuota {QUOTA} has hard limits {} instead of {}",
                    q["spec"]["hard"], want["spec"]["hard"]
                )),
                q["spec"]["hard"].clone(),
            ),
            Some(q) => seen(None, q["spec"]["hard"].clone()),
        }
    })
}

/// Whether a Kubernetes label selector selects an object with these labels.
pub(crate) fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_ok = match_labels.into_iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions = selector["matchExpressions"].as_array().into_iter().flatten();
    labels_ok
        && expressions.into_iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str() {
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        })
}

fn guard_name(guard: &GuardEvidence) -> String {
    let label = labels_of(&guard.policy).get(GUARD_LABEL).cloned().unwrap_or_default();
    let name = name_of(&guard.policy);
    ADMISSION_GUARDS
        .iter()
        .find(|g| label == **g || name.ends_with(&format!("-{g}")))
        .map(|g| g.to_string())
        .unwrap_or(label)
}

/// Whether a guard policy is enforced for a namespace with these labels.
fn enforced(guard: &GuardEvidence, labels: &BTreeMap<String, String>) -> bool {
    let spec = &guard.policy["spec"];
    let fails_closed = spec["failurePolicy"].as_str().is_none_or(|p| p == "Fail");
    fails_closed
        && selects(&spec["matchConstraints"]["namespaceSelector"], labels)
        && guard.bindings.iter().any(|b| {
            let denies = b["spec"]["validationActions"].as_array().is_some_and(|a| a.iter().any(|x| x == "Deny"));
            denies && selects(&b["spec"]["matchResources"]["namespaceSelector"], labels)
        })
}

fn k8s_guards(cx: &Context) -> Outcome {
    let guards = match read(&cx.ev.kubernetes.guards) {
        Ok(g) => g,
        Err(e) => return error(format!("listing ValidatingAdmissionPolicies labelled {GUARD_LABEL}: {e}")),
    };
    per_namespace(cx, "all six admission guards deny, fail closed and are bound to every tenant namespace", |_, ns| {
        let mut labels = labels_of(ns);
        labels.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| name_of(ns).to_string());
        let mut evidence = serde_json::Map::new();
        let mut missing = Vec::new();
        for g in ADMISSION_GUARDS {
            let enforcing: Vec<&str> = guards
                .iter()
                .filter(|guard| guard_name(guard) == g && enforced(guard, &labels))
                .map(|guard| name_of(&guard.policy))
                .collect();
            if enforcing.is_empty() {
                missing.push(g);
            }
            evidence.insert(g.to_string(), json!(enforcing));
        }
        let problem = (!missing.is_empty()).then(|| {
            format!(
                "no ValidatingAdmissionPolicy labelled {GUARD_LABEL} with failurePolicy Fail and a Deny binding selecting this namespace for {missing:?}: install or upgrade the chart with admission.enabled=true, and check admission.namespaceSelector"
            )
        });
        seen(problem, Value::Object(evidence))
    })
}

fn k8s_irsa(cx: &Context) -> Outcome {
    let role = cx.aws.role.arn.clone();
    let workload = cx.settings.workload_service_account.clone();
    per_namespace(cx, "every IRSA annotation in the tenant namespaces names only the tenant's role", |ns, _| {
        let accounts = read(&ns.service_accounts)?;
        let mut problems = Vec::new();
        let mut evidence = serde_json::Map::new();
        for sa in accounts {
            if let Some(arn) = sa["metadata"]["annotations"][IRSA_ANNOTATION].as_str() {
                evidence.insert(name_of(sa).to_string(), json!(arn));
                if arn != role {
                    problems
                        .push(format!("ServiceAccount {} may assume {arn}, not the tenant's role {role}", name_of(sa)));
                }
            }
        }
        match accounts.iter().find(|sa| name_of(sa) == workload) {
            None => problems.push(format!("the workload ServiceAccount {workload} is missing")),
            Some(sa) if sa["metadata"]["annotations"][IRSA_ANNOTATION].as_str() != Some(role.as_str()) => problems
                .push(format!("the workload ServiceAccount {workload} lacks the annotation {IRSA_ANNOTATION}={role}")),
            Some(_) => {}
        }
        seen((!problems.is_empty()).then(|| problems.join(", ")), Value::Object(evidence))
    })
}

fn k8s_no_owner_references(cx: &Context) -> Outcome {
    let uid = tenant_uid(cx).to_string();
    per_namespace(cx, "no tenant namespace and no operator object in one has an owner reference", |ns, object| {
        let mut owned = Vec::new();
        let owners = |o: &Value| o["metadata"]["ownerReferences"].as_array().is_some_and(|r| !r.is_empty());
        if owners(object) {
            owned.push(format!("Namespace {}", ns.name));
        }
        for (kind, list) in [
            ("NetworkPolicy", &ns.network_policies),
            ("RoleBinding", &ns.role_bindings),
            ("ResourceQuota", &ns.resource_quotas),
            ("ServiceAccount", &ns.service_accounts),
        ] {
            for o in read(list)?.iter().filter(|o| operator_owned(o, &uid) && owners(o)) {
                owned.push(format!("{kind} {}", name_of(o)));
            }
        }
        let problem = (!owned.is_empty()).then(|| {
            format!("{} carry owner references: a deleted owner would let the garbage collector delete them (the operator removes them at its next reconcile)", owned.join(", "))
        });
        seen(problem, json!({"withOwnerReferences": owned}))
    })
}

fn k8s_admin_network(cx: &Context) -> Outcome {
    let served = match read(&cx.ev.kubernetes.admin_network) {
        Ok(s) => s,
        Err(e) => return error(format!("reading the Admin-tier network policies: {e}")),
    };
    let Some(preferred) = served.first() else {
        return skip(
            "the cluster serves neither ClusterNetworkPolicy nor AdminNetworkPolicy: the namespace NetworkPolicies and the admission guards are the network layer",
        );
    };
    let name = cluster_network::name(&cx.ev.tenant);
    let kind = preferred.flavor.kind();
    let Some(live) = &preferred.policy else {
        return fail(
            format!(
                "there is no {kind} {name}: the Admin-tier layer does not hold for this tenant; see the tenant's Guarded condition"
            ),
            json!({"kind": kind, "name": name}),
        );
    };
    let mut owned: Vec<String> = cx
        .ev
        .kubernetes
        .labelled_namespaces
        .as_ref()
        .map(|l| l.iter().filter(|n| cx.ev.tenant.namespace_names().contains(n)).cloned().collect())
        .unwrap_or_default();
    owned.sort();
    let want = cluster_network::policy(&cx.ev.tenant, &owned, preferred.flavor);
    let evidence = json!({"kind": kind, "name": name, "spec": live["spec"]});
    let uid_label = labels_of(live).get(TENANT_UID_LABEL).cloned();
    if uid_label.as_deref() != Some(tenant_uid(cx)) {
        fail(format!("{kind} {name} carries {TENANT_UID_LABEL}={uid_label:?}: it is not the tenant's"), evidence)
    } else if !same(&live["spec"], &want["spec"]) {
        fail(
            format!(
                "{kind} {name} was changed: its spec is not the operator's for namespaces {owned:?}; the operator restores it at its next reconcile"
            ),
            evidence,
        )
    } else {
        pass(format!("{kind} {name} isolates the tenant's namespaces {owned:?} from every other namespace"), evidence)
    }
}

// ---- S3 ----

/// Runs `judge` on the bucket when it exists and could be read.
fn with_bucket(cx: &Context, judge: impl Fn(&BucketEvidence) -> Outcome) -> Outcome {
    match &cx.ev.aws.bucket {
        Err(e) => error(format!("reading S3 bucket {}: {e}", cx.aws.bucket.name)),
        Ok(None) => fail(
            format!(
                "S3 bucket {} does not exist in this account: see the tenant's BucketReady condition",
                cx.aws.bucket.name
            ),
            json!({"bucket": cx.aws.bucket.name}),
        ),
        Ok(Some(b)) => judge(b),
    }
}

/// Runs `judge` on one setting of the bucket.
fn bucket_setting<T>(
    cx: &Context,
    what: &str,
    setting: impl Fn(&BucketEvidence) -> &Read<T>,
    judge: impl Fn(&BucketEvidence, &T) -> Outcome,
) -> Outcome {
    with_bucket(cx, |b| match setting(b) {
        Err(e) => error(format!("reading the {what} of S3 bucket {}: {e}", b.name)),
        Ok(value) => judge(b, value),
    })
}

fn s3_public_access(cx: &Context) -> Outcome {
    bucket_setting(
        cx,
        "Block Public Access",
        |b| &b.public_access_block,
        |b, bpa| {
            let evidence = json!(bpa);
            if *bpa == Some(BlockPublicAccess::ALL) {
                pass(format!("S3 bucket {} blocks public ACLs and policies (all four settings)", b.name), evidence)
            } else {
                fail(
                    format!(
                        "S3 bucket {} does not block all public access ({bpa:?}): turn on all four Block Public Access settings",
                        b.name
                    ),
                    evidence,
                )
            }
        },
    )
}

fn s3_ownership(cx: &Context) -> Outcome {
    bucket_setting(
        cx,
        "Object Ownership",
        |b| &b.ownership,
        |b, ownership| {
            let evidence = json!({"objectOwnership": ownership});
            if ownership.as_deref() == Some("BucketOwnerEnforced") {
                pass(format!("S3 bucket {} has ACLs disabled (BucketOwnerEnforced)", b.name), evidence)
            } else {
                fail(
                    format!(
                        "S3 bucket {} has Object Ownership {ownership:?}, so ACLs may grant access: set BucketOwnerEnforced",
                        b.name
                    ),
                    evidence,
                )
            }
        },
    )
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

fn statement(policy: &Value, sid: &str) -> Option<Value> {
    statements(policy).into_iter().find(|s| s["Sid"] == sid)
}

/// Compares the statements `sids` of a live policy with the desired ones; the problems found.
fn statements_match(live: &Value, want: &Value, sids: &[&str]) -> (Vec<String>, Value) {
    let mut problems = Vec::new();
    let mut evidence = serde_json::Map::new();
    for sid in sids {
        let Some(w) = statement(want, sid) else { continue };
        match statement(live, sid) {
            None => problems.push(format!("statement {sid} is missing")),
            Some(l) => {
                let as_policy = |s: &Value| json!({"Statement": [s]});
                if !policy::equivalent(&as_policy(&l), &as_policy(&w)) {
                    problems.push(format!("statement {sid} was changed"));
                }
                evidence.insert(sid.to_string(), l);
            }
        }
    }
    (problems, Value::Object(evidence))
}

fn bucket_policy_statements(cx: &Context, what: &str, sids: &[&str], ok: String, fix: &str) -> Outcome {
    bucket_setting(
        cx,
        "bucket policy",
        |b| &b.policy,
        |b, live| {
            let Some(live) = live else {
                return fail(format!("S3 bucket {} has no bucket policy: {fix}", b.name), Value::Null);
            };
            let (problems, evidence) = statements_match(live, &cx.aws.bucket.policy, sids);
            if problems.is_empty() {
                pass(ok.clone(), evidence)
            } else {
                fail(
                    format!("the {what} of S3 bucket {} is not in force: {}; {fix}", b.name, problems.join(", ")),
                    evidence,
                )
            }
        },
    )
}

const RESTORE: &str = "the operator restores it at its next resync (annotate the tenant with imaging.tenancy.dev/reconcile-requested-at to ask now); if it does not, its BucketSecured condition says why";

fn s3_tls_only(cx: &Context) -> Outcome {
    bucket_policy_statements(
        cx,
        "TLS requirement",
        &["DenyInsecureTransport", "DenyTlsBelowVersion12"],
        format!("the policy of S3 bucket {} denies requests without TLS and below TLS 1.2", cx.aws.bucket.name),
        RESTORE,
    )
}

fn s3_encryption(cx: &Context) -> Outcome {
    let want = cx.aws.bucket.encryption.kms_key_arn.clone();
    bucket_setting(
        cx,
        "default encryption",
        |b| &b.encryption,
        |b, enc| {
            let evidence = json!(enc);
            match enc {
                Some(e) if e.sse_algorithm == "aws:kms" && e.kms_key_arn == want => pass(
                    format!("S3 bucket {} encrypts new objects with SSE-KMS and the tenant key {want}", b.name),
                    evidence,
                ),
                other => fail(
                    format!(
                        "S3 bucket {} default encryption is {other:?}, not SSE-KMS with the tenant key {want}: {RESTORE}",
                        b.name
                    ),
                    evidence,
                ),
            }
        },
    )
}

fn s3_bucket_key(cx: &Context) -> Outcome {
    bucket_setting(
        cx,
        "default encryption",
        |b| &b.encryption,
        |b, enc| {
            let enabled = enc.as_ref().is_some_and(|e| e.bucket_key_enabled);
            let evidence = json!({"bucketKeyEnabled": enabled});
            if enabled {
                pass(format!("S3 bucket {} uses an S3 Bucket Key", b.name), evidence)
            } else {
                fail(format!("S3 bucket {} does not use an S3 Bucket Key: {RESTORE}", b.name), evidence)
            }
        },
    )
}

fn s3_versioning(cx: &Context) -> Outcome {
    bucket_setting(
        cx,
        "versioning",
        |b| &b.versioning,
        |b, status| {
            let evidence = json!({"status": status});
            if status.as_deref() == Some("Enabled") {
                pass(format!("S3 bucket {} keeps every version of every object", b.name), evidence)
            } else {
                fail(format!("versioning of S3 bucket {} is {status:?}, not Enabled: {RESTORE}", b.name), evidence)
            }
        },
    )
}

fn s3_object_lock(cx: &Context) -> Outcome {
    let Some(want) = cx.aws.bucket.object_lock.clone() else {
        return skip("spec.storage.retention is not set: the tenant asks for no Object Lock retention");
    };
    bucket_setting(
        cx,
        "Object Lock configuration",
        |b| &b.object_lock,
        |b, lock: &ObjectLock| {
            let evidence = json!({"enabled": lock.enabled, "defaultRetention": lock.retention});
            let holds = lock.enabled
                && lock
                    .retention
                    .as_ref()
                    .is_some_and(|r| (r.mode == want.mode || r.mode == "COMPLIANCE") && r.days >= want.days);
            if holds {
                pass(
                    format!("S3 bucket {} retains every new version {} days in {} mode", b.name, want.days, want.mode),
                    evidence,
                )
            } else {
                fail(
                    format!(
                        "S3 bucket {} does not retain new versions {} days in {} mode (Object Lock {:?}): {RESTORE}",
                        b.name, want.days, want.mode, lock
                    ),
                    evidence,
                )
            }
        },
    )
}

fn s3_lifecycle(cx: &Context) -> Outcome {
    let want = cx.aws.bucket.lifecycle.clone();
    bucket_setting(
        cx,
        "lifecycle configuration",
        |b| &b.lifecycle,
        |b, rules| {
            let evidence = json!(rules);
            let short: Vec<String> = rules
                .iter()
                .filter(|r| r.noncurrent_version_expiration_days.is_some_and(|d| d < MIN_NONCURRENT_DAYS))
                .map(|r| {
                    format!(
                        "{} expires noncurrent versions after {:?} days",
                        r.id, r.noncurrent_version_expiration_days
                    )
                })
                .collect();
            let mut sorted = want.clone();
            sorted.sort();
            if !short.is_empty() {
                fail(
                    format!(
                        "S3 bucket {}: {}; noncurrent versions must be kept at least {MIN_NONCURRENT_DAYS} days: {RESTORE}",
                        b.name,
                        short.join(", ")
                    ),
                    evidence,
                )
            } else if *rules != sorted {
                fail(
                    format!(
                        "the lifecycle rules of S3 bucket {} are not those of spec.storage.lifecycle ({sorted:?}): {RESTORE}",
                        b.name
                    ),
                    evidence,
                )
            } else {
                pass(
                    format!(
                        "S3 bucket {} has exactly the lifecycle rules of the spec and keeps noncurrent versions at least {MIN_NONCURRENT_DAYS} days",
                        b.name
                    ),
                    evidence,
                )
            }
        },
    )
}

fn s3_logging(cx: &Context) -> Outcome {
    let Some(want) = cx.aws.bucket.logging.clone() else {
        return fail(
            "the operator's settings name no --audit-log-bucket, so S3 server access logging of tenant buckets is off: run the operator (and this report) with --audit-log-bucket",
            json!({"auditLogBucket": null}),
        );
    };
    bucket_setting(
        cx,
        "server access logging",
        |b| &b.logging,
        |b, logging| {
            let evidence = json!(logging);
            if logging.as_ref() == Some(&want) {
                pass(
                    format!("S3 bucket {} logs every request to {}/{}", b.name, want.target_bucket, want.target_prefix),
                    evidence,
                )
            } else {
                fail(
                    format!(
                        "S3 bucket {} logs to {logging:?}, not to {}/{}: {RESTORE}",
                        b.name, want.target_bucket, want.target_prefix
                    ),
                    evidence,
                )
            }
        },
    )
}

fn s3_tenant_only(cx: &Context) -> Outcome {
    let want = &cx.aws.bucket.policy;
    bucket_setting(
        cx,
        "bucket policy",
        |b| &b.policy,
        |b, live| {
            let Some(live) = live else {
                return fail(format!("S3 bucket {} has no bucket policy: {RESTORE}", b.name), Value::Null);
            };
            let sids = [
                "DenyAllButTenantRoleAndAdministrators",
                "DenyObjectDataToAllButTenantRoleAndBreakGlass",
                "DenyBucketConfigurationToAllButAdministrators",
                "DenyTenantDataOutsideVpcEndpoints",
                "DenyAuditorsAllButReadingSettings",
            ];
            let (mut problems, mut evidence) = statements_match(live, want, &sids);
            let known: Vec<Value> = statements(want).iter().map(|s| s["Sid"].clone()).collect();
            let extra: Vec<Value> = statements(live).into_iter().filter(|s| !known.contains(&s["Sid"])).collect();
            if !extra.is_empty() {
                problems.push(format!(
                    "statements {:?} are not the operator's",
                    extra.iter().map(|s| s["Sid"].clone()).collect::<Vec<_>>()
                ));
                evidence["notTheOperators"] = json!(extra);
            }
            if problems.is_empty() {
                pass(
                    format!(
                        "the policy of S3 bucket {} admits only the tenant role {} and the administrators",
                        b.name, cx.aws.role.arn
                    ),
                    evidence,
                )
            } else {
                fail(
                    format!(
                        "the policy of S3 bucket {} does not keep the bucket to the tenant: {}; {RESTORE}",
                        b.name,
                        problems.join(", ")
                    ),
                    evidence,
                )
            }
        },
    )
}

fn s3_upload_encryption(cx: &Context) -> Outcome {
    bucket_policy_statements(
        cx,
        "upload encryption requirement",
        &["DenyOtherKmsKeys", "DenyEncryptionOtherThanKms", "DenyCustomerProvidedKeys"],
        format!(
            "the policy of S3 bucket {} refuses uploads that ask for another key or kind of encryption",
            cx.aws.bucket.name
        ),
        RESTORE,
    )
}

fn s3_owned(cx: &Context) -> Outcome {
    let uid = tenant_uid(cx).to_string();
    bucket_setting(
        cx,
        "tags",
        |b| &b.tags,
        |b, tags| {
            let found = tags.get(TENANT_UID_LABEL);
            let evidence = json!({TENANT_UID_LABEL: found});
            if found == Some(&uid) {
                pass(format!("S3 bucket {} is in this account and tagged with the tenant's UID", b.name), evidence)
            } else {
                fail(
                    format!(
                        "S3 bucket {} has tag {TENANT_UID_LABEL}={found:?}, not the tenant's UID {uid}: it is not known to be the tenant's; see the tenant's BucketReady condition",
                        b.name
                    ),
                    evidence,
                )
            }
        },
    )
}

// ---- KMS ----

fn with_key(cx: &Context, judge: impl Fn(&KeyEvidence) -> Outcome) -> Outcome {
    match &cx.ev.aws.key {
        Err(e) => error(format!("reading KMS key {}: {e}", cx.aws.key.alias)),
        Ok(None) => fail(
            format!("no KMS key answers to {}: see the tenant's KeyReady condition", cx.aws.key.alias),
            json!({"alias": cx.aws.key.alias}),
        ),
        Ok(Some(k)) => judge(k),
    }
}

fn key_setting<T>(
    cx: &Context,
    what: &str,
    setting: impl Fn(&KeyEvidence) -> &Read<T>,
    judge: impl Fn(&KeyEvidence, &T) -> Outcome,
) -> Outcome {
    with_key(cx, |k| match setting(k) {
        Err(e) => error(format!("reading the {what} of KMS key {}: {e}", k.id)),
        Ok(value) => judge(k, value),
    })
}

fn kms_enabled(cx: &Context) -> Outcome {
    with_key(cx, |k| {
        let evidence = json!({"keyId": k.id, "keyState": k.state});
        if k.state == "Enabled" {
            pass(format!("KMS key {} is enabled", k.id), evidence)
        } else {
            fail(
                format!(
                    "KMS key {} is {}: nothing can be read or written in the bucket; the operator re-enables it",
                    k.id, k.state
                ),
                evidence,
            )
        }
    })
}

fn kms_not_pending_deletion(cx: &Context) -> Outcome {
    with_key(cx, |k| {
        let evidence = json!({"keyId": k.id, "keyState": k.state, "deletionDate": k.deletion_date});
        if k.state != "PendingDeletion" && k.deletion_date.is_none() {
            pass(format!("KMS key {} is not scheduled for deletion", k.id), evidence)
        } else {
            fail(
                format!(
                    "KMS key {} is scheduled for deletion on {:?}: cancel it now (kms:CancelKeyDeletion) or every object of the tenant becomes unreadable for good",
                    k.id, k.deletion_date
                ),
                evidence,
            )
        }
    })
}

fn kms_rotation(cx: &Context) -> Outcome {
    key_setting(
        cx,
        "rotation status",
        |k| &k.rotation,
        |k, enabled| {
            let evidence = json!({"keyId": k.id, "keyRotationEnabled": enabled});
            if *enabled {
                pass(format!("KMS key {} rotates automatically", k.id), evidence)
            } else {
                fail(format!("automatic rotation of KMS key {} is off: {RESTORE}", k.id), evidence)
            }
        },
    )
}

/// A short account of how two policies differ, statement by statement.
fn policy_difference(live: &Value, want: &Value) -> String {
    let sids = |p: &Value| {
        statements(p).iter().map(|s| s["Sid"].as_str().unwrap_or("<no Sid>").to_string()).collect::<BTreeSet<_>>()
    };
    let (l, w) = (sids(live), sids(want));
    let mut out = Vec::new();
    let missing: Vec<&String> = w.difference(&l).collect();
    let extra: Vec<&String> = l.difference(&w).collect();
    if !missing.is_empty() {
        out.push(format!("missing statements {missing:?}"));
    }
    if !extra.is_empty() {
        out.push(format!("statements not the operator's {extra:?}"));
    }
    let (changed, _) = statements_match(live, want, &w.intersection(&l).map(String::as_str).collect::<Vec<_>>());
    out.extend(changed);
    if out.is_empty() { "the documents differ".into() } else { out.join(", ") }
}

fn kms_policy(cx: &Context) -> Outcome {
    let want = &cx.aws.key.policy;
    key_setting(
        cx,
        "key policy",
        |k| &k.policy,
        |k, live| match live {
            Some(live) if policy::equivalent(live, want) => pass(
                format!(
                    "the policy of KMS key {} lets the administrators manage it and only {} use it through S3",
                    k.id, cx.aws.role.arn
                ),
                live.clone(),
            ),
            Some(live) => fail(
                format!(
                    "the policy of KMS key {} is not the tenant key policy: {}; {RESTORE}",
                    k.id,
                    policy_difference(live, want)
                ),
                live.clone(),
            ),
            None => fail(format!("KMS key {} has no key policy `default`", k.id), Value::Null),
        },
    )
}

fn kms_origin(cx: &Context) -> Outcome {
    with_key(cx, |k| {
        let evidence = json!({"keyId": k.id, "origin": k.origin, "keyManager": k.key_manager});
        if k.origin == "AWS_KMS" && k.key_manager == "CUSTOMER" {
            pass(format!("KMS key {} is customer-managed with key material generated by KMS", k.id), evidence)
        } else {
            fail(
                format!(
                    "KMS key {} has origin {} and manager {}: the tenant key must be a customer-managed key generated by KMS",
                    k.id, k.origin, k.key_manager
                ),
                evidence,
            )
        }
    })
}

fn kms_single_region(cx: &Context) -> Outcome {
    with_key(cx, |k| {
        let evidence = json!({"keyId": k.id, "multiRegion": k.multi_region});
        if !k.multi_region {
            pass(format!("KMS key {} is a single-Region key", k.id), evidence)
        } else {
            fail(
                format!("KMS key {} is a multi-Region key, whose replicas other Regions' key policies control", k.id),
                evidence,
            )
        }
    })
}

fn kms_alias(cx: &Context) -> Outcome {
    let uid = tenant_uid(cx).to_string();
    let alias = cx.aws.key.alias.clone();
    key_setting(
        cx,
        "alias",
        |k| &k.alias_target,
        |k, target| {
            let tags = match &k.tags {
                Ok(t) => t,
                Err(e) => return error(format!("reading the tags of KMS key {}: {e}", k.id)),
            };
            let tag = tags.get(TENANT_UID_LABEL);
            let evidence = json!({"alias": alias, "targetKeyId": target, TENANT_UID_LABEL: tag});
            if target.as_deref() == Some(k.id.as_str()) && tag == Some(&uid) {
                pass(format!("{alias} points to KMS key {}, tagged with the tenant's UID", k.id), evidence)
            } else {
                fail(
                    format!(
                        "{alias} points to {target:?} and key {} is tagged {TENANT_UID_LABEL}={tag:?}: see the tenant's KeyReady condition",
                        k.id
                    ),
                    evidence,
                )
            }
        },
    )
}

fn kms_no_grants(cx: &Context) -> Outcome {
    key_setting(
        cx,
        "grants",
        |k| &k.grants,
        |k, grantees| {
            let evidence = json!({"keyId": k.id, "grantees": grantees});
            if grantees.is_empty() {
                pass(format!("KMS key {} has no grants", k.id), evidence)
            } else {
                fail(
                    format!(
                        "KMS key {} has grants to {grantees:?}, which may use it outside the key policy: retire them (kms:RetireGrant)",
                        k.id
                    ),
                    evidence,
                )
            }
        },
    )
}

// ---- IAM ----

fn with_role(cx: &Context, judge: impl Fn(&RoleEvidence) -> Outcome) -> Outcome {
    match &cx.ev.aws.role {
        Err(e) => error(format!("reading IAM role {}: {e}", cx.aws.role.name)),
        Ok(None) => fail(
            format!("IAM role {} does not exist: see the tenant's IdentityReady condition", cx.aws.role.name),
            json!({"role": cx.aws.role.name}),
        ),
        Ok(Some(r)) => judge(r),
    }
}

fn iam_trust(cx: &Context) -> Outcome {
    let want = &cx.aws.role.trust_policy;
    with_role(cx, |r| match &r.trust_policy {
        Some(live) if policy::equivalent(live, want) => pass(
            format!(
                "IAM role {} trusts only the tenant's workload ServiceAccounts through {}",
                r.arn, cx.settings.oidc_provider_arn
            ),
            live.clone(),
        ),
        Some(live) => fail(
            format!(
                "the trust policy of IAM role {} is not the tenant's: {}; {RESTORE}",
                r.arn,
                policy_difference(live, want)
            ),
            live.clone(),
        ),
        None => fail(format!("IAM role {} has no trust policy", r.arn), Value::Null),
    })
}

fn iam_boundary(cx: &Context) -> Outcome {
    let want = cx.settings.permissions_boundary_arn.clone();
    with_role(cx, |r| {
        let evidence = json!({"permissionsBoundary": r.boundary});
        if r.boundary.as_deref() == Some(want.as_str()) {
            pass(format!("IAM role {} has the permissions boundary {want}", r.arn), evidence)
        } else {
            fail(
                format!("IAM role {} has permissions boundary {:?}, not {want}: {RESTORE}", r.arn, r.boundary),
                evidence,
            )
        }
    })
}

fn with_inline(cx: &Context, judge: impl Fn(&RoleEvidence, &BTreeMap<String, Value>) -> Outcome) -> Outcome {
    with_role(cx, |r| match &r.inline_policies {
        Err(e) => error(format!("reading the inline policies of IAM role {}: {e}", r.arn)),
        Ok(inline) => judge(r, inline),
    })
}

fn iam_permissions(cx: &Context) -> Outcome {
    let name = cx.aws.role.inline_policy_name.clone();
    let want = &cx.aws.role.inline_policy;
    with_inline(cx, |r, inline| match inline.get(&name) {
        Some(live) if policy::equivalent(live, want) => pass(
            format!(
                "inline policy {name} of IAM role {} names only bucket {} and key {}",
                r.arn, cx.aws.bucket.name, cx.aws.bucket.encryption.kms_key_arn
            ),
            live.clone(),
        ),
        Some(live) => fail(
            format!(
                "inline policy {name} of IAM role {} is not the tenant's: {}; {RESTORE}",
                r.arn,
                policy_difference(live, want)
            ),
            live.clone(),
        ),
        None => fail(format!("IAM role {} has no inline policy {name}: {RESTORE}", r.arn), Value::Null),
    })
}

/// Allow statements that grant a whole service or everything.
fn admin_statements(policy: &Value) -> Vec<Value> {
    statements(policy)
        .into_iter()
        .filter(|s| s["Effect"] == "Allow")
        .filter(|s| {
            let actions = match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                _ => Vec::new(),
            };
            !s["NotAction"].is_null() || actions.iter().any(|a| a == "*" || a.ends_with(":*"))
        })
        .collect()
}

fn iam_no_admin(cx: &Context) -> Outcome {
    with_inline(cx, |r, inline| {
        let found: BTreeMap<&String, Vec<Value>> =
            inline.iter().map(|(n, p)| (n, admin_statements(p))).filter(|(_, s)| !s.is_empty()).collect();
        if found.is_empty() {
            pass(
                format!("no inline policy of IAM role {} allows a whole service or everything", r.arn),
                json!({"policies": inline.keys().collect::<Vec<_>>()}),
            )
        } else {
            fail(
                format!(
                    "inline policies {:?} of IAM role {} allow a whole service or everything: remove them (the operator removes policies it did not write)",
                    found.keys().collect::<Vec<_>>(),
                    r.arn
                ),
                json!(found),
            )
        }
    })
}

fn iam_only_policy(cx: &Context) -> Outcome {
    let name = cx.aws.role.inline_policy_name.clone();
    with_inline(cx, |r, inline| {
        let attached = match &r.attached_policies {
            Ok(a) => a,
            Err(e) => return error(format!("listing the managed policies attached to IAM role {}: {e}", r.arn)),
        };
        let others: Vec<&String> = inline.keys().filter(|n| **n != name).collect();
        let evidence = json!({"inline": inline.keys().collect::<Vec<_>>(), "attached": attached});
        if others.is_empty() && attached.is_empty() {
            pass(format!("IAM role {} has no policy but {name}", r.arn), evidence)
        } else {
            fail(
                format!(
                    "IAM role {} has other inline policies {others:?} and attached policies {attached:?}: {RESTORE}",
                    r.arn
                ),
                evidence,
            )
        }
    })
}

// ---- Replication ----

/// Runs `judge` on the replica of a tenant that should replicate; skips one that should not, and
/// fails one that asks for a replica the operator cannot make.
fn with_replica(cx: &Context, judge: impl Fn(&ReplicationAws, &ReplicaEvidence) -> Outcome) -> Outcome {
    match ReplicationChoice::of(&cx.ev.tenant, cx.settings) {
        ReplicationChoice::Off => skip(
            "the tenant does not replicate: neither spec.storage.replication nor the operator's --replication-region asks for a replica",
        ),
        ReplicationChoice::OptedOut => skip(
            "the tenant opted out of replication (spec.storage.replication.enabled false), which the operator allows with --allow-replication-opt-out",
        ),
        ReplicationChoice::Invalid { reason, message } => {
            fail(format!("the tenant should replicate but cannot: {message}"), json!({"reason": reason}))
        }
        ReplicationChoice::On { .. } => match (&cx.aws.replication, &cx.ev.aws.replica) {
            (Some(want), Some(ev)) => judge(want, ev),
            _ => error("the replica side of the tenant was not read"),
        },
    }
}

/// Differences between the live replication configuration and the operator's.
fn replication_differences(live: &ReplicationConfiguration, want: &ReplicationConfiguration) -> Vec<String> {
    // Without `..`: a field added to the configuration is compared, or this does not compile.
    let ReplicationConfiguration {
        role_arn,
        rule_id,
        priority,
        prefix,
        destination_bucket_arn,
        sse_kms_encrypted_objects,
        replica_kms_key_arn,
        delete_marker_replication,
        replication_time_control,
    } = want;
    let mut out = Vec::new();
    let mut differs = |what: &str, live: String, want: String| {
        if live != want {
            out.push(format!("{what} is {live}, not {want}"));
        }
    };
    differs(
        "the rule",
        format!("{:?} (priority {})", live.rule_id, live.priority),
        format!("{rule_id:?} (priority {priority})"),
    );
    differs("the role", live.role_arn.clone(), role_arn.clone());
    differs("the prefix", format!("{:?}", live.prefix), format!("{prefix:?}"));
    differs("the destination", live.destination_bucket_arn.clone(), destination_bucket_arn.clone());
    differs(
        "replication of SSE-KMS objects",
        live.sse_kms_encrypted_objects.to_string(),
        sse_kms_encrypted_objects.to_string(),
    );
    differs("the replica key", live.replica_kms_key_arn.clone(), replica_kms_key_arn.clone());
    differs(
        "delete marker replication",
        live.delete_marker_replication.to_string(),
        delete_marker_replication.to_string(),
    );
    differs(
        "Replication Time Control",
        live.replication_time_control.to_string(),
        replication_time_control.to_string(),
    );
    out
}

fn dr_replication(cx: &Context) -> Outcome {
    let source = cx.aws.bucket.name.clone();
    with_replica(cx, |want, ev| {
        let want_config = &want.configuration;
        match &ev.configuration {
            Err(e) => error(format!("reading the replication configuration of S3 bucket {source}: {e}")),
            Ok(None) => fail(
                format!(
                    "S3 bucket {source} has no replication configuration: nothing reaches its replica {} in {}; {RESTORE}",
                    want.bucket.name, want.region
                ),
                Value::Null,
            ),
            Ok(Some(live)) => {
                let evidence = json!(live);
                let problems = replication_differences(live, want_config);
                if problems.is_empty() {
                    pass(
                        format!(
                            "S3 bucket {source} replicates every object, SSE-KMS objects and delete markers to {} in {}, encrypted with the replica key{}",
                            want.bucket.name,
                            want.region,
                            if want_config.replication_time_control { ", within 15 minutes (RTC)" } else { "" }
                        ),
                        evidence,
                    )
                } else {
                    fail(
                        format!(
                            "the replication configuration of S3 bucket {source} is not the operator's: {}; {RESTORE}",
                            problems.join(", ")
                        ),
                        evidence,
                    )
                }
            }
        }
    })
}

/// A setting of a replica resource, or why it could not be read.
fn replica_read<'a, T>(r: &'a Read<T>, what: &str, resource: &str, errors: &mut Vec<String>) -> Option<&'a T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("reading the {what} of {resource}: {e}"));
            None
        }
    }
}

/// Judges the problems and read errors found on one replica resource.
fn replica_outcome(ok: String, resource: &str, problems: Vec<String>, errors: Vec<String>, evidence: Value) -> Outcome {
    if !problems.is_empty() {
        fail(format!("{resource} is not as the operator keeps it: {}; {RESTORE}", problems.join(", ")), evidence)
    } else if !errors.is_empty() {
        error(errors.join("; "))
    } else {
        pass(ok, evidence)
    }
}

/// The tags a replica resource must carry: the tenant's UID and the source bucket it replicates.
fn replica_tag_problems(tags: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    [TENANT_UID_LABEL, TAG_REPLICA_OF]
        .into_iter()
        .filter(|k| tags.get(*k) != want.get(*k))
        .map(|k| format!("tag {k} is {:?}, not {:?}", tags.get(k), want.get(k)))
        .collect()
}

fn dr_replica_bucket(cx: &Context) -> Outcome {
    with_replica(cx, |want, ev| {
        let b = match &ev.bucket {
            Err(e) => return error(format!("reading replica S3 bucket {} in {}: {e}", want.bucket.name, want.region)),
            Ok(None) => {
                return fail(
                    format!(
                        "replica S3 bucket {} does not exist in {} in this account: see the tenant's ReplicaReady condition",
                        want.bucket.name, want.region
                    ),
                    json!({"bucket": want.bucket.name}),
                );
            }
            Ok(Some(b)) => b,
        };
        let resource = format!("replica S3 bucket {} in {}", b.name, want.region);
        let (mut problems, mut errors) = (Vec::new(), Vec::new());
        let bpa = replica_read(&b.public_access_block, "Block Public Access", &resource, &mut errors);
        if let Some(bpa) = bpa
            && *bpa != Some(BlockPublicAccess::ALL)
        {
            problems.push(format!("Block Public Access is {bpa:?}, not all four on"));
        }
        let ownership = replica_read(&b.ownership, "Object Ownership", &resource, &mut errors);
        if let Some(o) = ownership
            && o.as_deref() != Some("BucketOwnerEnforced")
        {
            problems.push(format!("Object Ownership is {o:?}, not BucketOwnerEnforced"));
        }
        let versioning = replica_read(&b.versioning, "versioning", &resource, &mut errors);
        if let Some(v) = versioning
            && v.as_deref() != Some("Enabled")
        {
            problems.push(format!("versioning is {v:?}, not Enabled"));
        }
        let encryption = replica_read(&b.encryption, "default encryption", &resource, &mut errors);
        let key = &want.bucket.encryption.kms_key_arn;
        if let Some(e) = encryption
            && !e.as_ref().is_some_and(|e| e.sse_algorithm == "aws:kms" && e.kms_key_arn == *key)
        {
            problems.push(format!("default encryption is {e:?}, not SSE-KMS with the replica key {key}"));
        }
        let policy = replica_read(&b.policy, "bucket policy", &resource, &mut errors);
        match policy {
            Some(Some(live)) if !policy::equivalent(live, &want.bucket.policy) => problems
                .push(format!("its policy is not the operator's: {}", policy_difference(live, &want.bucket.policy))),
            Some(None) => problems.push("it has no bucket policy (none denies requests without TLS)".into()),
            _ => {}
        }
        let tags = replica_read(&b.tags, "tags", &resource, &mut errors);
        if let Some(tags) = tags {
            problems.extend(replica_tag_problems(tags, &want.bucket.tags));
        }
        let evidence = json!({
            "bucket": b.name,
            "region": want.region,
            "publicAccessBlock": bpa,
            "objectOwnership": ownership,
            "versioning": versioning,
            "encryption": encryption,
            "policy": policy,
            "tags": tags,
        });
        replica_outcome(
            format!(
                "{resource} blocks public access, has ACLs disabled, keeps every version, encrypts with the replica key {key} and admits only TLS 1.2 requests of the tenant's roles and the administrators"
            ),
            &resource,
            problems,
            errors,
            evidence,
        )
    })
}

fn dr_replica_key(cx: &Context) -> Outcome {
    with_replica(cx, |want, ev| {
        let k = match &ev.key {
            Err(e) => return error(format!("reading replica KMS key {} in {}: {e}", want.key.alias, want.region)),
            Ok(None) => {
                return fail(
                    format!(
                        "no KMS key answers to {} in {}: see the tenant's ReplicaReady condition",
                        want.key.alias, want.region
                    ),
                    json!({"alias": want.key.alias}),
                );
            }
            Ok(Some(k)) => k,
        };
        let resource = format!("replica KMS key {}", k.arn);
        let (mut problems, mut errors) = (Vec::new(), Vec::new());
        if k.state != "Enabled" {
            problems.push(format!("it is {}, not Enabled: S3 cannot write replicas with it", k.state));
        }
        if k.deletion_date.is_some() {
            problems.push(format!(
                "it is scheduled for deletion on {:?}: cancel it (kms:CancelKeyDeletion) or the replica becomes unreadable for good",
                k.deletion_date
            ));
        }
        if k.key_manager != "CUSTOMER" || k.origin != "AWS_KMS" {
            problems
                .push(format!("it has manager {} and origin {}, not CUSTOMER and AWS_KMS", k.key_manager, k.origin));
        }
        if k.multi_region {
            problems.push("it is a multi-Region key".into());
        }
        let rotation = replica_read(&k.rotation, "rotation status", &resource, &mut errors);
        if rotation == Some(&false) {
            problems.push("automatic rotation is off".into());
        }
        let policy = replica_read(&k.policy, "key policy", &resource, &mut errors);
        match policy {
            Some(Some(live)) if !policy::equivalent(live, &want.key.policy) => problems
                .push(format!("its policy is not the operator's: {}", policy_difference(live, &want.key.policy))),
            Some(None) => problems.push("it has no key policy `default`".into()),
            _ => {}
        }
        let grants = replica_read(&k.grants, "grants", &resource, &mut errors);
        if let Some(g) = grants
            && !g.is_empty()
        {
            problems.push(format!("it has grants to {g:?}, which may use it outside the key policy"));
        }
        let tags = replica_read(&k.tags, "tags", &resource, &mut errors);
        if let Some(tags) = tags {
            problems.extend(replica_tag_problems(tags, &want.key.tags));
        }
        let evidence = json!({
            "keyArn": k.arn,
            "keyState": k.state,
            "deletionDate": k.deletion_date,
            "keyManager": k.key_manager,
            "origin": k.origin,
            "multiRegion": k.multi_region,
            "keyRotationEnabled": rotation,
            "grantees": grants,
            "tags": tags,
        });
        replica_outcome(
            format!(
                "{resource} is enabled, not scheduled for deletion, a customer-managed single-Region key generated by KMS, rotates automatically and has the operator's policy and no grants"
            ),
            &resource,
            problems,
            errors,
            evidence,
        )
    })
}

fn dr_replication_role(cx: &Context) -> Outcome {
    let boundary = cx.settings.permissions_boundary_arn.clone();
    with_replica(cx, |want, ev| {
        let r = match &ev.role {
            Err(e) => return error(format!("reading IAM role {}: {e}", want.role.name)),
            Ok(None) => {
                return fail(
                    format!("IAM role {} does not exist: see the tenant's ReplicaReady condition", want.role.name),
                    json!({"role": want.role.name}),
                );
            }
            Ok(Some(r)) => r,
        };
        let resource = format!("replication role {}", r.arn);
        let (mut problems, mut errors) = (Vec::new(), Vec::new());
        match &r.trust_policy {
            Some(live) if !policy::equivalent(live, &want.role.trust_policy) => problems.push(format!(
                "its trust policy is not the operator's: {}",
                policy_difference(live, &want.role.trust_policy)
            )),
            None => problems.push("it has no trust policy".into()),
            _ => {}
        }
        if r.boundary.as_deref() != Some(boundary.as_str()) {
            problems.push(format!("its permissions boundary is {:?}, not {boundary}", r.boundary));
        }
        let name = &want.role.inline_policy_name;
        let inline = replica_read(&r.inline_policies, "inline policies", &resource, &mut errors);
        if let Some(inline) = inline {
            match inline.get(name) {
                Some(live) if !policy::equivalent(live, &want.role.inline_policy) => problems.push(format!(
                    "inline policy {name} is not the operator's: {}",
                    policy_difference(live, &want.role.inline_policy)
                )),
                None => problems.push(format!("it has no inline policy {name}")),
                _ => {}
            }
            let others: Vec<&String> = inline.keys().filter(|n| *n != name).collect();
            if !others.is_empty() {
                problems.push(format!("it has other inline policies {others:?}"));
            }
        }
        let attached = replica_read(&r.attached_policies, "attached policies", &resource, &mut errors);
        if let Some(a) = attached
            && !a.is_empty()
        {
            problems.push(format!("it has attached policies {a:?}"));
        }
        let evidence = json!({
            "roleArn": r.arn,
            "trustPolicy": r.trust_policy,
            "permissionsBoundary": r.boundary,
            "inline": inline.map(|i| i.keys().collect::<Vec<_>>()),
            "attached": attached,
        });
        replica_outcome(
            format!(
                "{resource} trusts only S3 for the tenant bucket, has the permissions boundary {boundary} and no policy but {name}"
            ),
            &resource,
            problems,
            errors,
            evidence,
        )
    })
}

#[cfg(test)]
#[path = "controls_tests.rs"]
mod tests;
