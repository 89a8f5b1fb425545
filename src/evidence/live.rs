//! What `evidence` reads from the live systems for one tenant, as plain data: the controls of
//! [`super::controls`] judge it without I/O. Each setting is a [`Read`]: its value, or why it
//! could not be read (access denied, throttled, unreadable), which makes a control an `error`
//! rather than a pass or a fail.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::ImagingTenant;
use crate::desired::aws::{
    AccessLogging, BlockPublicAccess, BucketEncryption, LifecycleRule, ObjectLockRetention, ReplicationConfiguration,
};
use crate::desired::cluster_network::Flavor;

/// A setting as read, or a message saying why it could not be read.
pub type Read<T> = Result<T, String>;

/// Everything read about one tenant.
#[derive(Clone, Debug)]
pub struct TenantEvidence {
    /// The ImagingTenant as the apiserver holds it (spec and UID).
    pub tenant: ImagingTenant,
    pub kubernetes: KubernetesEvidence,
    pub aws: AwsEvidence,
}

/// The tenant's Kubernetes side.
#[derive(Clone, Debug)]
pub struct KubernetesEvidence {
    /// Names of the namespaces labelled with the tenant's UID.
    pub labelled_namespaces: Read<Vec<String>>,
    /// Each namespace of the spec, in spec order.
    pub namespaces: Vec<NamespaceEvidence>,
    /// The admission policies labelled as guards, with their bindings.
    pub guards: Read<Vec<GuardEvidence>>,
    /// The tenant's Admin-tier network policy of each kind the cluster serves, in order of
    /// preference; empty when it serves neither.
    pub admin_network: Read<Vec<AdminNetworkEvidence>>,
}

/// The tenant's policy of one Admin-tier kind the cluster serves.
#[derive(Clone, Debug)]
pub struct AdminNetworkEvidence {
    pub flavor: Flavor,
    /// `None` when there is none of the tenant's name.
    pub policy: Option<Value>,
}

/// One namespace of the spec and what is in it.
#[derive(Clone, Debug)]
pub struct NamespaceEvidence {
    pub name: String,
    /// The Namespace object, `None` when it does not exist.
    pub object: Read<Option<Value>>,
    pub network_policies: Read<Vec<Value>>,
    pub role_bindings: Read<Vec<Value>>,
    pub resource_quotas: Read<Vec<Value>>,
    pub service_accounts: Read<Vec<Value>>,
}

/// A ValidatingAdmissionPolicy labelled `imaging.tenancy.dev/guard` and the bindings naming it.
#[derive(Clone, Debug)]
pub struct GuardEvidence {
    pub policy: Value,
    pub bindings: Vec<Value>,
}

/// The tenant's AWS side: `Ok(None)` when a resource does not exist.
#[derive(Clone, Debug)]
pub struct AwsEvidence {
    pub bucket: Read<Option<BucketEvidence>>,
    pub key: Read<Option<KeyEvidence>>,
    pub role: Read<Option<RoleEvidence>>,
    /// The replica side, read only for a tenant that should replicate.
    pub replica: Option<ReplicaEvidence>,
}

/// A replicating tenant's replica side: the source bucket's replication configuration, and the
/// replica bucket and key as the replication region's S3 and KMS answer them.
#[derive(Clone, Debug)]
pub struct ReplicaEvidence {
    pub region: String,
    /// The source bucket's replication configuration, `None` when it has none.
    pub configuration: Read<Option<ReplicationConfiguration>>,
    pub bucket: Read<Option<BucketEvidence>>,
    pub key: Read<Option<KeyEvidence>>,
    pub role: Read<Option<RoleEvidence>>,
}

/// The bucket's settings as S3 answers them.
#[derive(Clone, Debug)]
pub struct BucketEvidence {
    pub name: String,
    pub tags: Read<BTreeMap<String, String>>,
    pub public_access_block: Read<Option<BlockPublicAccess>>,
    pub ownership: Read<Option<String>>,
    pub encryption: Read<Option<BucketEncryption>>,
    /// `Enabled`, `Suspended`, or `None` when never enabled.
    pub versioning: Read<Option<String>>,
    pub object_lock: Read<ObjectLock>,
    pub lifecycle: Read<Vec<LifecycleRule>>,
    pub logging: Read<Option<AccessLogging>>,
    pub policy: Read<Option<Value>>,
}

/// Object Lock as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub enabled: bool,
    pub retention: Option<ObjectLockRetention>,
}

/// The key as KMS describes it.
#[derive(Clone, Debug)]
pub struct KeyEvidence {
    pub id: String,
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
    /// `AWS_KMS`, `EXTERNAL`, `AWS_CLOUDHSM`, `EXTERNAL_KEY_STORE`.
    pub origin: String,
    pub multi_region: bool,
    /// `CUSTOMER` or `AWS`.
    pub key_manager: String,
    /// When a deletion is scheduled, its date.
    pub deletion_date: Option<String>,
    /// The key the tenant's alias points to (`None`: the alias does not exist).
    pub alias_target: Read<Option<String>>,
    pub rotation: Read<bool>,
    pub policy: Read<Option<Value>>,
    /// Grantee principals of the key's grants.
    pub grants: Read<Vec<String>>,
    pub tags: Read<BTreeMap<String, String>>,
}

/// The role as IAM describes it.
#[derive(Clone, Debug)]
pub struct RoleEvidence {
    pub arn: String,
    pub trust_policy: Option<Value>,
    pub boundary: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Inline policies by name.
    pub inline_policies: Read<BTreeMap<String, Value>>,
    /// ARNs of attached managed policies.
    pub attached_policies: Read<Vec<String>>,
}
