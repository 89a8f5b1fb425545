//! Errors of a reconcile: what failed, on which object, and whether retrying can help.

use crate::cloud::CloudError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("reading {what}: {source}")]
    Observe { what: String, source: kube::Error },

    #[error("applying {what}: {source}")]
    Apply { what: String, source: kube::Error },

    #[error("removing {what}: {source}")]
    Remove { what: String, source: kube::Error },

    #[error("writing the status of ImagingTenant {tenant}: {source}")]
    Status { tenant: String, source: kube::Error },

    #[error("finalizer of ImagingTenant {tenant}: {message}")]
    Finalizer { tenant: String, message: String },

    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),

    #[error("deletion of ImagingTenant {tenant} is blocked: {message}")]
    DeletionBlocked { tenant: String, message: String },

    #[error(
        "{what} exists and is not this tenant's (its label imaging.tenancy.dev/tenant-uid differs); it was left untouched. Have its owner remove it"
    )]
    ClusterPolicyConflict { what: String },
}

impl Error {
    /// A static label for metrics (never the message: its cardinality is unbounded).
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "kubernetes_read",
            Error::Apply { .. } => "kubernetes_apply",
            Error::Remove { .. } => "kubernetes_remove",
            Error::Status { .. } => "status",
            Error::Finalizer { .. } => "finalizer",
            Error::Cloud(e) => e.category(),
            Error::DeletionBlocked { .. } => "deletion_blocked",
            Error::ClusterPolicyConflict { .. } => "conflict",
        }
    }

    /// Whether backing off and retrying can fix it, as opposed to waiting for a spec change.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Observe { source, .. }
            | Error::Apply { source, .. }
            | Error::Remove { source, .. }
            | Error::Status { source, .. } => kube_retryable(source),
            Error::Cloud(e) => e.is_retryable(),
            Error::Finalizer { .. } | Error::DeletionBlocked { .. } => true,
            Error::ClusterPolicyConflict { .. } => false,
        }
    }
}

/// Invalid requests (400, 403, 422) will fail the same way until something changes; conflicts,
/// server errors and transport failures may pass on the next try.
pub(crate) fn kube_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => !matches!(status.code, 400 | 403 | 404 | 422),
        _ => true,
    }
}

/// The CamelCase reason for a condition from a Kubernetes API error.
pub(crate) fn kube_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => "Forbidden".into(),
        kube::Error::Api(status) if status.code == 422 => "Invalid".into(),
        kube::Error::Api(status) if status.code == 409 => "Conflict".into(),
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        kube::Error::Api(_) => "ApiError".into(),
        _ => "ApiUnavailable".into(),
    }
}

/// The message of a Kubernetes API error without the transport noise.
pub(crate) fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
