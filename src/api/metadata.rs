//! Names the operator writes into other objects' metadata and into AWS: labels, annotations,
//! the finalizer, the server-side apply field manager and AWS tag keys. Defined here only.

/// The operator's name: the field manager of everything it applies and the value of
/// [`MANAGED_BY_LABEL`] (and of the AWS tag of the same key).
pub const OPERATOR: &str = "imaging-tenant-operator";

/// Server-side apply field manager of every object and status the operator writes.
pub const FIELD_MANAGER: &str = OPERATOR;

/// `app.kubernetes.io/managed-by=imaging-tenant-operator` on every Kubernetes object of a tenant,
/// and the same AWS tag on every AWS resource.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = OPERATOR;

/// The tenant's name, as a label and as an AWS tag.
pub const TENANT_LABEL: &str = "imaging.tenancy.dev/tenant";
/// The tenant's UID, as a label and as an AWS tag: children are found by it.
pub const TENANT_UID_LABEL: &str = "imaging.tenancy.dev/tenant-uid";
/// `true` on what a `Retain` deletion kept, as a label and as an AWS tag.
pub const RETAINED_LABEL: &str = "imaging.tenancy.dev/retained";

/// The label the apiserver sets on every namespace; it cannot be forged, unlike a tenant label.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// IRSA: the IAM role a ServiceAccount's pods may assume.
pub const IRSA_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// On every tenant namespace, for the chart's admission policies (which can read the namespace of
/// a request but not the tenant): the CIDRs of `spec.network.allowEgressTo`, comma-separated,
/// empty when none. Tenant NetworkPolicies may reach no other IP block.
pub const ALLOWED_EGRESS_CIDRS_ANNOTATION: &str = "imaging.tenancy.dev/allowed-egress-cidrs";
/// On every tenant namespace: the tenant's namespaces, comma-separated. Tenant RoleBindings may
/// name ServiceAccounts of these namespaces only.
pub const TENANT_NAMESPACES_ANNOTATION: &str = "imaging.tenancy.dev/tenant-namespaces";
/// On every tenant namespace: the tenant role's ARN, the only IRSA role a ServiceAccount there
/// may carry.
pub const ROLE_ARN_ANNOTATION: &str = "imaging.tenancy.dev/role-arn";

/// Keeps a tenant until its retirement (`deletionPolicy`) is done.
pub const FINALIZER: &str = "imaging.tenancy.dev/cleanup";
/// Changing this annotation asks for an immediate re-read of AWS.
pub const RECONCILE_REQUESTED_AT: &str = "imaging.tenancy.dev/reconcile-requested-at";

/// AWS tag keys: the same strings as the labels above.
pub const TAG_TENANT: &str = TENANT_LABEL;
pub const TAG_TENANT_UID: &str = TENANT_UID_LABEL;
pub const TAG_CLUSTER: &str = "imaging.tenancy.dev/cluster";
pub const TAG_MANAGED_BY: &str = MANAGED_BY_LABEL;
pub const TAG_RETAINED: &str = RETAINED_LABEL;
/// On the replica bucket and the replica key: the name of the tenant bucket they replicate.
pub const TAG_REPLICA_OF: &str = "imaging.tenancy.dev/replica-of";

/// On each of the chart's ValidatingAdmissionPolicies: which guard it is. The operator reads
/// these to tell whether the admission layer is installed and bound (condition `Guarded`).
pub const GUARD_LABEL: &str = "imaging.tenancy.dev/guard";

/// The chart's admission guards, by the value of [`GUARD_LABEL`]; all must be installed and
/// bound with `Deny` for the admission layer to count.
pub const ADMISSION_GUARDS: [&str; 6] = [
    "operator-owned",
    "tenant-namespaces",
    "tenant-network-policies",
    "tenant-role-bindings",
    "tenant-irsa",
    "operator-confined",
];
