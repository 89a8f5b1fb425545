//! What can go wrong talking to AWS, said so that a person knows what to do.

use std::fmt;

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};

/// A failed step of provisioning or retiring a tenant's AWS resources.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// AWS answered with an error, or did not answer.
    #[error("{operation} on {resource} failed: {code}: {message}")]
    Aws {
        /// `iam:CreateRole`, `s3:PutBucketPolicy`, ...
        operation: String,
        /// The role, key, alias or bucket the call was about.
        resource: String,
        /// The AWS error code (`AccessDenied`, `SlowDown`, ...), or ours for transport
        /// failures (`Timeout`, `ConnectionError`, `InvalidResponse`).
        code: String,
        message: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
    },
    /// A resource with the tenant's deterministic name exists but is not the tenant's.
    #[error(
        "{kind} {name} exists but does not belong to this tenant ({detail}); it is left untouched: remove or rename it, or delete and re-create the tenant to get a new name"
    )]
    Foreign { kind: ResourceKind, name: String, detail: String },
    /// A bucket of the tenant's name without any tenant-UID tag. The operator creates its
    /// buckets with that tag in the CreateBucket call itself, so nothing proves this one is the
    /// tenant's: it is neither used, tagged nor deleted until a person decides.
    #[error(
        "S3 bucket {name} has this tenant's name but no {tag} tag, so it is not known to be the tenant's and is left untouched (the operator creates its buckets with that tag). If it is a stray bucket, delete it after checking that nothing in it is needed, and the operator creates the tenant's bucket; if it really is this tenant's, tag it {tag}={uid} and the operator takes it up on its next pass"
    )]
    UntaggedBucket { name: String, tag: &'static str, uid: String },
    /// The tenant's key was found but is not safe to adopt (key material from outside KMS, a
    /// multi-Region key, a key store that is unavailable, standing grants).
    #[error(
        "KMS key {name} carries the tenant's tags but is not used: {detail}. A key the operator did not create this way may let someone else decrypt the tenant's images: delete its alias and tags after checking who made it, and the operator creates a new key"
    )]
    UnsafeKey { name: String, detail: String },
    /// The key a replication configuration is to name, or names, is not the tenant's usable
    /// replica key: the configuration is not written (or is reported) until it is.
    #[error(
        "replica KMS key {key} is refused for the replication configuration: {detail}. The operator restores the tenant's replica key on its next pass; if this persists, check who changed the key or its tags"
    )]
    ReplicaKeyRefused { key: String, detail: String },
    /// The bucket receiving the tenant bucket's access logs is missing, not this account's, or
    /// not protected from public access.
    #[error("access-log bucket {bucket} {detail}")]
    AuditLogBucket { bucket: String, detail: String },
    /// A setting was written and read back, and still differs.
    #[error("{what} of {resource} still differs after it was written: {detail}")]
    NotConverged { what: &'static str, resource: String, detail: String },
    /// AWS answered with something the operator cannot interpret (e.g. a policy that is not JSON).
    #[error("{what} of {resource} cannot be read: {detail}")]
    Unreadable { what: &'static str, resource: String, detail: String },
    /// A resource exists but the status could not record its ID; nothing more is created until
    /// it can, so that a crash cannot leave an unrecorded duplicate.
    #[error("could not record {what} in the tenant's status: {detail}")]
    Progress { what: String, detail: String },
    /// A step needs something an earlier step did not produce.
    #[error("{detail}")]
    Waiting { reason: &'static str, detail: String },
    /// The operator's AWS configuration is unusable.
    #[error("AWS configuration: {0}")]
    Config(String),
}

/// The kinds of AWS resource a tenant has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Role,
    Key,
    Alias,
    Bucket,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Role => "role",
            ResourceKind::Key => "key",
            ResourceKind::Alias => "alias",
            ResourceKind::Bucket => "bucket",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a [`CloudError`] is: decides back-off or waiting, and labels metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// AWS asks to slow down.
    Throttled,
    /// No answer, or one that could not be parsed.
    Transport,
    /// AWS failed (5xx), or asks to try again shortly.
    Server,
    AccessDenied,
    /// Any other error AWS answered with: invalid requests, quotas, ...
    Client,
    /// A resource of the tenant's name is someone else's.
    Conflict,
    NotConverged,
    Unreadable,
    /// The tenant's status could not record an ID.
    Status,
    /// An earlier step failed.
    Waiting,
    Config,
}

impl ErrorClass {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transport => "transport",
            ErrorClass::Server => "server",
            ErrorClass::AccessDenied => "access_denied",
            ErrorClass::Client => "client",
            ErrorClass::Conflict => "conflict",
            ErrorClass::NotConverged => "not_converged",
            ErrorClass::Unreadable => "unreadable",
            ErrorClass::Status => "status",
            ErrorClass::Waiting => "waiting",
            ErrorClass::Config => "config",
        }
    }

    /// Whether backing off and trying again may help without anyone changing anything.
    /// Access denied, validation errors and conflicts wait for a change instead.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled
                | ErrorClass::Transport
                | ErrorClass::Server
                | ErrorClass::Status
                | ErrorClass::Waiting
                | ErrorClass::NotConverged
        )
    }

    /// The class of an error AWS answered with `code` (and `status`, when a response arrived):
    /// throttling and transient codes as the SDK's own retry classifier lists them.
    pub(crate) fn of_aws(code: &str, status: Option<u16>) -> ErrorClass {
        if THROTTLING_ERRORS.contains(&code) {
            ErrorClass::Throttled
        } else if TRANSPORT_CODES.contains(&code) {
            ErrorClass::Transport
        } else if status.is_some_and(|s| s >= 500)
            || TRANSIENT_ERRORS.contains(&code)
            || CONCURRENT_WRITES.contains(&code)
        {
            ErrorClass::Server
        } else if code.contains("AccessDenied") || code == "UnauthorizedOperation" || code == "Forbidden" {
            ErrorClass::AccessDenied
        } else {
            ErrorClass::Client
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Our codes for calls that got no usable answer: timed out, no connection, unparsable.
pub(crate) const TRANSPORT_CODES: [&str; 3] = ["Timeout", "ConnectionError", "InvalidResponse"];

/// Codes AWS answers with 409 when another request changed the resource at the same time:
/// the SDK does not retry them, but the next pass may succeed.
const CONCURRENT_WRITES: [&str; 3] = ["OperationAborted", "ConcurrentModification", "ConcurrentModificationException"];

impl CloudError {
    /// The condition reason: the AWS error code, or ours, in CamelCase.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Aws { code, .. } => code,
            CloudError::Foreign { kind, .. } => match kind {
                ResourceKind::Bucket => "BucketConflict",
                ResourceKind::Key | ResourceKind::Alias => "KeyConflict",
                ResourceKind::Role => "RoleConflict",
            },
            CloudError::UntaggedBucket { .. } => "BucketUntagged",
            CloudError::UnsafeKey { .. } => "KeyRefused",
            CloudError::ReplicaKeyRefused { .. } => "ReplicaKeyRefused",
            CloudError::AuditLogBucket { .. } => "AuditLogBucketUnusable",
            CloudError::NotConverged { .. } => "NotConverged",
            CloudError::Unreadable { .. } => "UnreadableResponse",
            CloudError::Progress { .. } => "StatusNotRecorded",
            CloudError::Waiting { reason, .. } => reason,
            CloudError::Config(_) => "InvalidConfiguration",
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            CloudError::Aws { code, status, .. } => ErrorClass::of_aws(code, *status),
            CloudError::Foreign { .. } | CloudError::UntaggedBucket { .. } | CloudError::UnsafeKey { .. } => {
                ErrorClass::Conflict
            }
            CloudError::AuditLogBucket { .. } => ErrorClass::Client,
            CloudError::NotConverged { .. } | CloudError::ReplicaKeyRefused { .. } => ErrorClass::NotConverged,
            CloudError::Unreadable { .. } => ErrorClass::Unreadable,
            CloudError::Progress { .. } => ErrorClass::Status,
            CloudError::Waiting { .. } => ErrorClass::Waiting,
            CloudError::Config(_) => ErrorClass::Config,
        }
    }

    /// A small fixed set, for metric labels.
    pub fn category(&self) -> &'static str {
        self.class().as_str()
    }

    /// Whether backing off and trying again may help without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(code: &str, status: u16) -> CloudError {
        CloudError::Aws {
            operation: "s3:PutBucketPolicy".into(),
            resource: "bucket b".into(),
            code: code.into(),
            message: "m".into(),
            status: Some(status),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retried_and_client_errors_are_not() {
        assert!(aws("SlowDown", 503).is_retryable());
        assert!(aws("ThrottlingException", 400).is_retryable());
        assert!(aws("Throttling", 400).is_retryable());
        assert!(aws("InternalError", 500).is_retryable());
        assert!(aws("Whatever", 502).is_retryable());
        assert!(!aws("AccessDenied", 403).is_retryable());
        assert!(!aws("AccessDeniedException", 400).is_retryable());
        assert!(!aws("MalformedPolicy", 400).is_retryable());
        assert!(!aws("ValidationError", 400).is_retryable());
        assert_eq!(aws("AccessDenied", 403).class(), ErrorClass::AccessDenied);
        assert_eq!(aws("AccessDenied", 403).category(), "access_denied");
        assert_eq!(aws("SlowDown", 503).class(), ErrorClass::Throttled);
        assert_eq!(aws("SlowDown", 503).category(), "throttled");
        assert_eq!(aws("AccessDenied", 403).code(), "AccessDenied");
        let foreign = CloudError::Foreign { kind: ResourceKind::Bucket, name: "b".into(), detail: "d".into() };
        assert!(!foreign.is_retryable());
        assert_eq!(foreign.class(), ErrorClass::Conflict);
        assert_eq!(foreign.code(), "BucketConflict");
        assert_eq!(foreign.to_string().split(' ').next(), Some("bucket"));
        let untagged =
            CloudError::UntaggedBucket { name: "b".into(), tag: "imaging.tenancy.dev/tenant-uid", uid: "u-1".into() };
        assert!(!untagged.is_retryable(), "waits for a person");
        assert_eq!(untagged.class(), ErrorClass::Conflict);
        assert_eq!(untagged.code(), "BucketUntagged");
        let message = untagged.to_string();
        assert!(message.contains("delete it") && message.contains("tag it imaging.tenancy.dev/tenant-uid=u-1"));
    }
}
