//! The `ImagingTenant` custom resource: types, schema, CEL rules and defaults.
//!
//! This module is the source of the CRD (`imaging-tenant-operator crd`). Everything that can be
//! judged from the object alone is expressed here as an OpenAPI constraint or a CEL rule, so the
//! apiserver rejects it at admission and `plan` rejects it offline with the same rules.

// Every item here is public API. KubeSchema's derive copies each struct into a private module to
// build its schema, and those copies would be reported as unreachable.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod condition;
pub mod metadata;

pub const GROUP: &str = "imaging.tenancy.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "ImagingTenant";

/// Longest tenant name. Namespaces are `<tenant>` or `<tenant>-<suffix>` (63 at most), and the
/// bucket, alias and role names derived from it must stay within their AWS limits with room for a
/// prefix and a hash (see `desired::names`).
pub const MAX_TENANT_NAME: usize = 40;

/// Desired state of a tenant: its namespaces, who may use them, the traffic they may have, their
/// quota, and the settings of its S3 bucket and KMS key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imaging.tenancy.dev",
    version = "v1alpha1",
    kind = "ImagingTenant",
    plural = "imagingtenants",
    singular = "imagingtenant",
    shortname = "itn",
    category = "imaging",
    status = "ImagingTenantStatus",
    doc = "An ImagingTenant is one healthcare group's isolated infrastructure for medical images. The operator turns it into dedicated namespaces with default-deny NetworkPolicies, RBAC bindings, a ResourceQuota and LimitRange and a workload ServiceAccount, and in AWS an IAM role, a customer-managed KMS key and an S3 bucket that only this tenant can reach. status.conditions say how far it got: Ready when all is in place, Reconciling while work is pending, Stalled when a person must act.",
    cel,
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".status.namespaces"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".status.bucket.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Message", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Ready\")].message"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name must be at most 40 characters so that namespace, bucket, key alias and role names derived from it fit"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1123 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    validation = Rule::new("self.metadata.name != 'default' && !self.metadata.name.startsWith('kube-') && !self.metadata.name.startsWith('openshift-')").message("metadata.name must not be 'default' or start with 'kube-' or 'openshift-': those namespaces belong to the platform"),
    validation = Rule::new("!has(self.spec.namespaces) || self.spec.namespaces.all(n, n.name == self.metadata.name || n.name.startsWith(self.metadata.name + '-'))").message("every spec.namespaces[].name must be the tenant name or start with '<tenant name>-'"),
    validation = Rule::new("!has(self.spec.storage) || !has(self.spec.storage.replication) || !has(self.spec.storage.replication.region) || (has(oldSelf.spec.storage) && has(oldSelf.spec.storage.replication) && oldSelf.spec.storage.replication == self.spec.storage.replication) || !has(self.status) || !has(self.status.bucket) || !has(self.status.bucket.region) || self.spec.storage.replication.region != self.status.bucket.region").message("spec.storage.replication.region must differ from the region of the tenant's bucket (status.bucket.region): a replica in the same region does not survive the loss of that region"),
    validation = Rule::new("oldSelf.spec.deletionPolicy != 'Retain' || self.spec.deletionPolicy != 'Delete' || (has(self.spec.deletionConfirmation) && self.spec.deletionConfirmation == self.metadata.name)").message("switching spec.deletionPolicy from Retain to Delete needs spec.deletionConfirmation set to the tenant's name: with Delete, deleting the tenant deletes its namespaces with their volumes, its IAM role, its bucket once empty, and then its KMS key"),
)]
#[serde(rename_all = "camelCase")]
pub struct ImagingTenantSpec {
    /// Human-readable name of the healthcare group, shown in status and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// Namespaces dedicated to this tenant. Each must be the tenant name or start with
    /// '<tenant name>-'. Defaults to one namespace named after the tenant. A namespace that
    /// already exists and does not belong to this tenant is reported as a conflict, never taken
    /// over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("spec.namespaces[].name must be unique"),
    )]
    pub namespaces: Vec<TenantNamespace>,

    /// Who may use the tenant's namespaces: admins get the ClusterRole 'admin', editors 'edit'
    /// and viewers 'view', bound by RoleBindings in every tenant namespace and nowhere else.
    #[serde(default)]
    pub access: Access,

    /// Traffic allowed in addition to the default: everything is denied except traffic among the
    /// tenant's own namespaces and DNS.
    #[serde(default)]
    pub network: Network,

    /// Resource limits applied to every tenant namespace.
    #[serde(default)]
    pub quota: Quota,

    /// Settings of the tenant's S3 bucket.
    #[serde(default)]
    pub storage: Storage,

    /// Settings of the tenant's KMS key.
    #[serde(default)]
    pub encryption: Encryption,

    /// Tags copied onto every AWS resource of the tenant when it is created. Keys starting with
    /// 'aws:' or 'imaging.tenancy.dev/' are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // maxProperties and the values' maxLength bound the CEL cost; without them the apiserver refuses the CRD.
    #[schemars(extend("maxProperties" = 40, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(
        validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('imaging.tenancy.dev/') && k != 'app.kubernetes.io/managed-by')").message("spec.tags keys must not start with 'aws:' or 'imaging.tenancy.dev/' and must not be 'app.kubernetes.io/managed-by': the operator sets those"),
        validation = Rule::new("self.all(k, k.size() >= 1 && k.size() <= 128 && k.matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]*$'))").message("spec.tags keys must be 1 to 128 letters, digits, spaces or _ . : / = + - @"),
        validation = Rule::new("self.all(k, self[k].size() <= 256 && self[k].matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]*$'))").message("spec.tags values must be at most 256 letters, digits, spaces or _ . : / = + - @"),
    )]
    pub tags: BTreeMap<String, String>,

    /// What happens to the tenant's resources when the ImagingTenant is deleted, or a namespace
    /// is removed from spec.namespaces. Retain (the default) deletes nothing and detaches
    /// everything; Delete removes namespaces and the IAM role, deletes the bucket only when it is
    /// empty, and then schedules the KMS key for deletion. Objects in the bucket are never deleted.
    /// Switching from Retain to Delete needs spec.deletionConfirmation.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The tenant's name, to confirm a switch of deletionPolicy from Retain to Delete. It makes
    /// the switch deliberate: a Delete tenant's deletion removes its namespaces (with their
    /// PersistentVolumeClaims), its IAM role, its bucket once empty, and then its KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub deletion_confirmation: Option<String>,
}

/// A namespace dedicated to the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantNamespace {
    /// Namespace name: a DNS-1123 label equal to the tenant name or starting with
    /// '<tenant name>-'. 'default' and 'kube-*' are reserved.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("namespace name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"),
        validation = Rule::new("self != 'default' && !self.startsWith('kube-') && !self.startsWith('openshift-')").message("namespaces 'default', 'kube-*' and 'openshift-*' belong to the platform and cannot be claimed by a tenant"),
    )]
    pub name: String,
}

/// Subjects bound to the built-in ClusterRoles in every tenant namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Subjects bound to the ClusterRole 'admin' in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub admins: Vec<Subject>,
    /// Subjects bound to the ClusterRole 'edit' in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub editors: Vec<Subject>,
    /// Subjects bound to the ClusterRole 'view' in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub viewers: Vec<Subject>,
}

/// A user, group or ServiceAccount, as in a RoleBinding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)").message("namespace is required for kind ServiceAccount and not allowed for User or Group"),
    validation = Rule::new("self.kind == 'ServiceAccount' || !self.name.startsWith('system:')").message("access subjects must not be 'system:' users or groups such as system:authenticated or system:serviceaccounts: those are the cluster's own identities, shared by everyone; name the tenant's people, groups or ServiceAccounts"),
)]
pub struct Subject {
    /// User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// Name of the user, group or ServiceAccount as the cluster's authenticator reports it.
    /// Users and groups starting with 'system:' are the cluster's own and not accepted.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("subject name must not be empty or blank"))]
    pub name: String,
    /// Namespace of the ServiceAccount (only for kind ServiceAccount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Kind of an RBAC subject.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// Traffic the tenant's pods may have beyond their own namespaces and DNS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Namespaces whose pods may open connections to the tenant's pods, for example the ingress
    /// controller's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allow_ingress_from: Vec<IngressPeer>,
    /// Extra destinations the tenant's pods may reach on TCP 443, for example VPC endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allow_egress_to: Vec<EgressPeer>,
}

/// A namespace allowed to reach the tenant's pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    /// Name of the namespace (matched by its kubernetes.io/metadata.name label, which only the
    /// apiserver sets).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("namespace must be a DNS-1123 label"))]
    pub namespace: String,
}

/// A network the tenant's pods may reach on TCP 443.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    /// IPv4 or IPv6 CIDR, for example 10.20.0.0/16. The whole internet (a /0) and networks
    /// broader than a /8 (IPv4) or /32 (IPv6) are not accepted: list the networks the tenant
    /// needs. Link-local networks (169.254.0.0/16, fe80::/10) and the AWS instance metadata
    /// network (fd00:ec2::/32) are never reachable: they hand out the node's credentials.
    #[schemars(length(min = 1, max = 43))]
    #[x_kube(
        validation = Rule::new("isCIDR(self)").message("cidr must be a CIDR such as 10.20.0.0/16"),
        validation = Rule::new("!isCIDR(self) || cidr(self).prefixLength() > 0").message("cidr must not be a /0: egress to every address defeats isolation; list the networks the tenant needs"),
        validation = Rule::new("!isCIDR(self) || cidr(self).prefixLength() >= (cidr(self).ip().family() == 4 ? 8 : 32)").message("cidr must not be broader than a /8 (IPv4) or a /32 (IPv6): list the networks the tenant needs"),
        validation = Rule::new("!isCIDR(self) || ['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::/32'].all(n, !cidr(n).containsCIDR(cidr(self)) && !cidr(self).containsCIDR(cidr(n)))").message("cidr must not overlap the link-local networks 169.254.0.0/16 or fe80::/10, or the AWS metadata network fd00:ec2::/32: they serve the node's credentials"),
    )]
    pub cidr: String,
    /// TCP ports allowed to that network. Defaults to 443.
    #[serde(default = "default_egress_ports")]
    #[schemars(length(min = 1, max = 8))]
    pub ports: Vec<Port>,
}

/// A TCP port number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Port(#[schemars(range(min = 1, max = 65535))] pub i32);

fn default_egress_ports() -> Vec<Port> {
    vec![Port(443)]
}

/// ResourceQuota and LimitRange settings for every tenant namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// ResourceQuota hard limits per namespace, as Kubernetes quantities, for example
    /// requests.cpu: "8", requests.memory: 32Gi, requests.storage: 1Ti, persistentvolumeclaims: "20".
    #[serde(default = "default_quota_hard")]
    // maxProperties and the values' maxLength bound the CEL cost; without them the apiserver refuses the CRD.
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": 64}))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.size() <= 253 && k.matches('^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_./]*[a-zA-Z0-9])?$'))").message("quota.hard keys must be resource names such as requests.cpu, limits.memory, requests.storage, persistentvolumeclaims or count/services"),
        validation = Rule::new("self.all(k, isQuantity(string(self[k])))").message("quota.hard values must be Kubernetes quantities such as \"8\", 500m, 32Gi or 1Ti"),
    )]
    pub hard: BTreeMap<String, IntOrString>,
    /// Default requests given by the LimitRange to containers that set none, so that pods
    /// without requests still run under the quota. Defaults to cpu 100m and memory 128Mi.
    #[serde(default = "default_container_requests")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": 64}))]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(string(self[k])))").message("quota.defaultRequest values must be Kubernetes quantities such as 100m or 128Mi"))]
    pub default_request: BTreeMap<String, IntOrString>,
    /// Default limits given by the LimitRange to containers that set none. Empty by default
    /// (containers without limits are not limited); set this when quota.hard limits `limits.*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": 64}))]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(string(self[k])))").message("quota.defaultLimit values must be Kubernetes quantities such as 1 or 1Gi"))]
    pub default_limit: BTreeMap<String, IntOrString>,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            hard: default_quota_hard(),
            default_request: default_container_requests(),
            default_limit: BTreeMap::new(),
        }
    }
}

fn default_quota_hard() -> BTreeMap<String, IntOrString> {
    [
        ("requests.cpu", "8"),
        ("requests.memory", "32Gi"),
        ("requests.storage", "1Ti"),
        ("persistentvolumeclaims", "20"),
        // Nothing of a tenant is exposed outside the cluster unless the quota says so.
        ("services.loadbalancers", "0"),
        ("services.nodeports", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), IntOrString::String(v.to_string())))
    .collect()
}

fn default_container_requests() -> BTreeMap<String, IntOrString> {
    [("cpu", "100m"), ("memory", "128Mi")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), IntOrString::String(v.to_string())))
        .collect()
}

/// Settings of the tenant's S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.retention) || self.versioning").message("storage.retention (S3 Object Lock) requires storage.versioning: true"),
    validation = Rule::new("!has(oldSelf.retention) || has(self.retention)").message("storage.retention cannot be removed once set: Object Lock retention may only grow stricter"),
    validation = Rule::new("!has(self.retention) || !has(self.lifecycle) || !has(self.lifecycle.expireNoncurrentAfterDays) || self.lifecycle.expireNoncurrentAfterDays >= self.retention.days").message("storage.lifecycle.expireNoncurrentAfterDays must be at least storage.retention.days"),
    validation = Rule::new("!has(oldSelf.retention) || oldSelf.retention.mode != 'Compliance' || (has(oldSelf.replication) && !oldSelf.replication.enabled) || (has(self.replication) ? self.replication.enabled : !has(oldSelf.replication))").message("storage.replication cannot be removed or disabled while storage.retention.mode is Compliance: the replica is part of what Compliance retention keeps"),
)]
pub struct Storage {
    /// Keep every version of every object. Must be true: an overwrite or delete keeps the
    /// previous version, so PHI cannot be destroyed by a mistaken or malicious write. (A tenant
    /// stored with versioning off by an earlier version keeps it until it is turned on; it
    /// cannot be turned off again.)
    #[serde(default = "default_true")]
    #[x_kube(validation = Rule::new("self").message("storage.versioning must be true: without versions, one overwrite or delete destroys an image for good"))]
    pub versioning: bool,
    /// S3 Object Lock default retention. Object Lock is enabled when the bucket is created; mode
    /// and days may only grow stricter (Governance to Compliance, more days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Lifecycle rules: archive current objects and expire old versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// A replica of every object in a second AWS region, in a bucket of its own encrypted with a
    /// key of its own (disaster recovery). Without this field the operator's
    /// --replication-region, if it has one, applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage { versioning: true, retention: None, lifecycle: None, replication: None }
    }
}

/// Replication of the tenant's bucket to a bucket in a second region.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.region) || (has(self.region) && self.region == oldSelf.region)").message("storage.replication.region cannot change once set: the replica bucket and key live in that region; create a new tenant to replicate elsewhere"),
)]
pub struct Replication {
    /// Replicate (the default). false turns replication off for this tenant, which the operator
    /// accepts only when it runs with --allow-replication-opt-out; the replica is then kept.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// AWS region of the replica, for example eu-west-1; it must differ from the operator's
    /// region. Defaults to the operator's --replication-region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 25))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$')").message("storage.replication.region must be an AWS region name such as eu-west-1 or us-gov-west-1"))]
    pub region: Option<String>,
    /// S3 Replication Time Control: replicate 99.99% of objects within 15 minutes, with
    /// replication metrics (at extra cost).
    #[serde(default)]
    pub replication_time_control: bool,
}

fn default_true() -> bool {
    true
}

/// S3 Object Lock default retention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(oldSelf.mode == 'Compliance' && self.mode == 'Governance')").message("storage.retention.mode cannot change from Compliance to Governance: retention may only grow stricter"),
    validation = Rule::new("self.days >= oldSelf.days").message("storage.retention.days cannot decrease: retention may only grow stricter"),
)]
pub struct Retention {
    /// Governance (privileged users can shorten it) or Compliance (nobody can, not even the
    /// account root).
    pub mode: RetentionMode,
    /// Days every new object version is protected from deletion and overwrite (1 to 36500).
    #[schemars(range(min = 1, max = 36500))]
    pub days: i32,
}

/// S3 Object Lock retention mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionMode {
    Governance,
    Compliance,
}

/// Lifecycle rules of the tenant's bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Move current objects to the archive storage class this many days after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub archive_after_days: Option<i32>,
    /// Storage class used for archiving. Defaults to GLACIER_IR (millisecond retrieval, suited
    /// to images a radiologist may reopen).
    #[serde(default)]
    pub archive_storage_class: ArchiveStorageClass,
    /// Permanently remove noncurrent (overwritten or deleted) object versions this many days
    /// after they became noncurrent (30 at least, and at least the retention). Current objects
    /// are never expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 36500))]
    pub expire_noncurrent_after_days: Option<i32>,
}

/// S3 storage class for archived objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ArchiveStorageClass {
    #[default]
    GLACIER_IR,
    GLACIER,
    DEEP_ARCHIVE,
    STANDARD_IA,
}

impl ArchiveStorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveStorageClass::GLACIER_IR => "GLACIER_IR",
            ArchiveStorageClass::GLACIER => "GLACIER",
            ArchiveStorageClass::DEEP_ARCHIVE => "DEEP_ARCHIVE",
            ArchiveStorageClass::STANDARD_IA => "STANDARD_IA",
        }
    }
}

/// Settings of the tenant's KMS key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Waiting period, 7 to 30 days, used only when deletionPolicy is Delete and the key is
    /// scheduled for deletion after the bucket is gone.
    #[serde(default = "default_deletion_window")]
    #[schemars(range(min = 7, max = 30))]
    pub deletion_window_days: i32,
}

impl Default for Encryption {
    fn default() -> Self {
        Encryption { deletion_window_days: default_deletion_window() }
    }
}

fn default_deletion_window() -> i32 {
    30
}

/// What deleting the tenant does to its resources.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete nothing: detach namespaces and AWS resources and tag them as retained.
    #[default]
    Retain,
    /// Delete namespaces and the role; delete the bucket only when empty; then schedule the
    /// key's deletion.
    Delete,
}

/// Observed state of an ImagingTenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Until the operator writes the first status, the API server shows observedGeneration 0: kstatus
// (Flux, Helm 4's --wait) reads a tenant without status as Current, and one with an older
// observed generation as InProgress.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct ImagingTenantStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// NamespacesReady, NetworkIsolated, AccessBound, QuotaApplied, Guarded, IdentityReady,
    /// KeyReady, BucketReady, BucketSecured, with replication ReplicaReady and
    /// ReplicationConfigured, and Ready, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Namespaces the tenant owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The isolation layers in force for the tenant's namespaces: NetworkPolicy, and where the
    /// cluster has them ValidatingAdmissionPolicy and ClusterNetworkPolicy (or
    /// AdminNetworkPolicy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolation_layers: Vec<String>,
    /// The tenant's S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketStatus>,
    /// The tenant's KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyStatus>,
    /// The tenant's IAM role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleStatus>,
    /// The replica of the tenant's bucket in the replication region, its KMS key there, and the
    /// IAM role S3 replicates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
}

/// The tenant's replica: recorded the moment each part exists.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The replica bucket (its region is the replication region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketStatus>,
    /// The replica bucket's KMS key, in the replication region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyStatus>,
    /// The IAM role S3 assumes to replicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleStatus>,
}

impl ReplicaStatus {
    pub fn is_empty(&self) -> bool {
        self.bucket.is_none() && self.key.is_none() && self.role.is_none()
    }
}

/// The tenant's S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    /// Bucket name.
    pub name: String,
    /// Bucket ARN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arn: String,
    /// AWS region of the bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// The tenant's KMS key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// KMS key ID.
    pub id: String,
    /// KMS key ARN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arn: String,
    /// Alias of the key (alias/imaging/<cluster>/<tenant>-<hash>).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub alias: String,
}

/// The tenant's IAM role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// IAM role name.
    pub name: String,
    /// IAM role ARN, the value of the workload ServiceAccounts' eks.amazonaws.com/role-arn.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arn: String,
}

impl ImagingTenant {
    /// The tenant's name (cluster-scoped objects always have one once stored).
    pub fn tenant_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The namespaces the tenant owns: spec.namespaces, or one named after the tenant.
    pub fn namespace_names(&self) -> Vec<String> {
        if self.spec.namespaces.is_empty() {
            vec![self.tenant_name().to_string()]
        } else {
            self.spec.namespaces.iter().map(|n| n.name.clone()).collect()
        }
    }
}

/// Annotations of every copy of the CRD. Deleting the CRD deletes every ImagingTenant at once,
/// without their cleanup, so GitOps tools must never delete or prune it: Argo CD and Flux read
/// these from the object itself, however it reached them.
pub const CRD_ANNOTATIONS: [(&str, &str); 2] = [
    ("argocd.argoproj.io/sync-options", "Delete=false,Prune=false"),
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
];

/// The ImagingTenant CRD, with [`CRD_ANNOTATIONS`].
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = ImagingTenant::crd();
    let annotations = crd.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in CRD_ANNOTATIONS {
        annotations.insert(key.to_string(), value.to_string());
    }
    crd
}

/// The CRD as YAML, as `imaging-tenant-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("the CRD serializes to YAML")
}
