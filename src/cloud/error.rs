//! What can go wrong talking to AWS, said so that a person knows what to do.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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
    Foreign { kind: &'static str, name: String, detail: String },
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

/// AWS error codes that mean "slow down" or "try again shortly".
const TRANSIENT_CODES: [&str; 22] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceFailure",
    "KMSInternalException",
    "DependencyTimeoutException",
    "OperationAborted",
    "ConcurrentModification",
    "ConcurrentModificationException",
    "Timeout",
];

impl CloudError {
    /// The condition reason: the AWS error code, or ours, in CamelCase.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Aws { code, .. } => code,
            CloudError::Foreign { kind, .. } => match *kind {
                "bucket" => "BucketConflict",
                "key" | "alias" => "KeyConflict",
                _ => "RoleConflict",
            },
            CloudError::NotConverged { .. } => "NotConverged",
            CloudError::Unreadable { .. } => "UnreadableResponse",
            CloudError::Progress { .. } => "StatusNotRecorded",
            CloudError::Waiting { reason, .. } => reason,
            CloudError::Config(_) => "InvalidConfiguration",
        }
    }

    /// A small fixed set, for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            CloudError::Aws { code, status, .. } => {
                if is_throttling(code) {
                    "throttled"
                } else if matches!(code.as_str(), "Timeout" | "ConnectionError" | "InvalidResponse") {
                    "transport"
                } else if status.is_some_and(|s| s >= 500) || TRANSIENT_CODES.contains(&code.as_str()) {
                    "server"
                } else if code.contains("AccessDenied") || code == "UnauthorizedOperation" || code == "Forbidden" {
                    "access_denied"
                } else {
                    "client"
                }
            }
            CloudError::Foreign { .. } => "conflict",
            CloudError::NotConverged { .. } => "not_converged",
            CloudError::Unreadable { .. } => "unreadable",
            CloudError::Progress { .. } => "status",
            CloudError::Waiting { .. } => "waiting",
            CloudError::Config(_) => "config",
        }
    }

    /// Whether backing off and trying again may help without anyone changing anything.
    /// Access denied, validation errors and conflicts wait for a change instead.
    pub fn is_retryable(&self) -> bool {
        matches!(self.category(), "throttled" | "transport" | "server" | "status" | "waiting" | "not_converged")
    }

    pub(crate) fn aws<E>(operation: &str, resource: &str, err: SdkError<E, HttpResponse>) -> CloudError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (code, message) = match &err {
            SdkError::ServiceError(_) => (
                err.code().map(str::to_string).unwrap_or_else(|| match status {
                    Some(404) => "NotFound".into(),
                    Some(403) => "AccessDenied".into(),
                    Some(s) if s >= 500 => "ServiceUnavailable".into(),
                    _ => "UnknownError".into(),
                }),
                err.message().map(str::to_string).unwrap_or_else(|| source_chain(&err)),
            ),
            SdkError::TimeoutError(_) => ("Timeout".into(), source_chain(&err)),
            SdkError::DispatchFailure(_) => ("ConnectionError".into(), source_chain(&err)),
            SdkError::ResponseError(_) => ("InvalidResponse".into(), source_chain(&err)),
            _ => ("RequestConstruction".into(), source_chain(&err)),
        };
        CloudError::Aws { operation: operation.to_string(), resource: resource.to_string(), code, message, status }
    }
}

fn is_throttling(code: &str) -> bool {
    TRANSIENT_CODES[..10].contains(&code)
}

/// The error and its causes on one line: the SDK's own Display is often just "service error".
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// The AWS error code of a failed call, if AWS answered.
pub(crate) fn code_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(_) => err.code(),
        _ => None,
    }
}

/// `Ok(None)` for the error codes that mean "there is none".
#[allow(clippy::result_large_err)] // the SDK's own error type, passed through unchanged
pub(crate) fn absent<T, E: ProvideErrorMetadata>(
    result: Result<T, SdkError<E, HttpResponse>>,
    codes: &[&str],
) -> Result<Option<T>, SdkError<E, HttpResponse>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if code_of(&e).is_some_and(|c| codes.contains(&c)) => Ok(None),
        Err(e) => Err(e),
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
        assert_eq!(aws("AccessDenied", 403).category(), "access_denied");
        assert_eq!(aws("SlowDown", 503).category(), "throttled");
        assert_eq!(aws("AccessDenied", 403).code(), "AccessDenied");
        let foreign = CloudError::Foreign { kind: "bucket", name: "b".into(), detail: "d".into() };
        assert!(!foreign.is_retryable());
        assert_eq!(foreign.code(), "BucketConflict");
    }
}
