//! How the operator uses the AWS SDKs: one error mapping, the SDKs' paginators with a bound,
//! back-off for the few calls retried here (not by the SDK), and one tag type for three APIs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::error::operation::BuildError;
use backon::{ConstantBuilder, Retryable};

use std::sync::{Arc, OnceLock};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::error::{CloudError, TRANSPORT_CODES};
use crate::api::metadata::TAG_RETAINED;

/// What a call's result becomes in the operator's terms.
pub(crate) trait SdkResult<T, E> {
    /// The call's error as [`CloudError::Aws`], naming the operation (`s3:PutBucketPolicy`)
    /// and the resource (`S3 bucket x`).
    fn aws_context(self, operation: &str, resource: &str) -> Result<T, CloudError>;

    /// `Ok(None)` for the error codes that mean "there is none" (`NoSuchEntity`, ...).
    #[allow(clippy::result_large_err)] // the SDK's own error type, passed through unchanged
    fn absent(self, codes: &[&str]) -> Result<Option<T>, SdkError<E, HttpResponse>>;
}

impl<T, E> SdkResult<T, E> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn aws_context(self, operation: &str, resource: &str) -> Result<T, CloudError> {
        self.map_err(|e| aws_error(operation, resource, e))
    }

    fn absent(self, codes: &[&str]) -> Result<Option<T>, SdkError<E, HttpResponse>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(e) if code_of(&e).is_some_and(|c| codes.contains(&c)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A request the SDK's builder refused (a required field missing) as [`CloudError::Config`].
pub(crate) trait Built<T> {
    fn or_config(self) -> Result<T, CloudError>;
}

impl<T> Built<T> for Result<T, BuildError> {
    fn or_config(self) -> Result<T, CloudError> {
        self.map_err(|e| CloudError::Config(e.to_string()))
    }
}

fn aws_error<E>(operation: &str, resource: &str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let [timeout, connection, invalid] = TRANSPORT_CODES;
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
        SdkError::TimeoutError(_) => (timeout.into(), source_chain(&err)),
        SdkError::DispatchFailure(_) => (connection.into(), source_chain(&err)),
        SdkError::ResponseError(_) => (invalid.into(), source_chain(&err)),
        _ => ("RequestConstruction".into(), source_chain(&err)),
    };
    CloudError::Aws { operation: operation.to_string(), resource: resource.to_string(), code, message, status }
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

/// The first `max` pages of an SDK paginator (`.into_paginator().send()`); later pages are
/// not requested.
#[allow(clippy::result_large_err)] // the SDK's own error type, passed through unchanged
pub(crate) async fn first_pages<P, E>(
    mut pages: PaginationStream<Result<P, SdkError<E, HttpResponse>>>,
    max: usize,
) -> Result<Vec<P>, SdkError<E, HttpResponse>> {
    let mut read = Vec::new();
    while read.len() < max
        && let Some(page) = pages.next().await
    {
        read.push(page?);
    }
    Ok(read)
}

/// A reason to try a call again, with its own pauses.
pub(crate) struct RetryOn<E> {
    pub(crate) when: fn(&E) -> bool,
    pub(crate) pauses: Box<dyn Iterator<Item = Duration> + Send + Sync>,
}

/// Calls `call` until it succeeds, fails for none of `reasons`, or its reason has no pause
/// left. Each reason counts its own retries, whatever the others did in between.
pub(crate) async fn retrying<T, E, Fut>(call: impl FnMut() -> Fut, mut reasons: Vec<RetryOn<E>>) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    // The pause comes from the reason that matches (`adjust`), not from one shared schedule.
    call.retry(ConstantBuilder::new().without_max_times())
        .adjust(|e, _| reasons.iter_mut().find(|r| (r.when)(e)).and_then(|r| r.pauses.next()))
        .await
}

/// Tags as every API of the operator takes and returns them, rendered for each SDK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tags(pub(crate) BTreeMap<String, String>);

/// Sends `x-amz-expected-bucket-owner` with every S3 request but CreateBucket, once the account
/// is known: S3 then refuses (403) to act on a bucket of that name that another account owns,
/// so no setting of the operator's ever lands on, or is read from, someone else's bucket.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExpectedBucketOwner {
    account: Arc<OnceLock<String>>,
}

impl ExpectedBucketOwner {
    /// The operator's account (12 digits); the first one set stays.
    pub(crate) fn set(&self, account: &str) {
        if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
            let _ = self.account.set(account.to_string());
        }
    }
}

impl Intercept for ExpectedBucketOwner {
    fn name(&self) -> &'static str {
        "ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(account) = self.account.get() else { return Ok(()) };
        // CreateBucket has no owner yet to expect; ListBuckets names no bucket.
        if !cfg.load::<Metadata>().is_some_and(|m| matches!(m.name(), "CreateBucket" | "ListBuckets")) {
            context.request_mut().headers_mut().insert("x-amz-expected-bucket-owner", account.clone());
        }
        Ok(())
    }
}

impl Tags {
    /// What the Retain policy puts on a kept resource.
    pub(crate) fn retained() -> Tags {
        Tags(BTreeMap::from([(TAG_RETAINED.to_string(), "true".to_string())]))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(crate) fn is_retained(&self) -> bool {
        self.get(TAG_RETAINED) == Some("true")
    }

    /// The tags of `want` that are absent here or have another value.
    pub(crate) fn missing(&self, want: &BTreeMap<String, String>) -> Tags {
        want.iter().filter(|(k, v)| self.0.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These tags with `more` added (or replaced).
    pub(crate) fn with(&self, more: &Tags) -> Tags {
        let mut all = self.0.clone();
        all.extend(more.0.clone());
        Tags(all)
    }

    /// The keys, for event notes.
    pub(crate) fn keys(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    pub(crate) fn iam(&self) -> Result<Vec<aws_sdk_iam::types::Tag>, CloudError> {
        self.render(|k, v| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
    }

    pub(crate) fn kms(&self) -> Result<Vec<aws_sdk_kms::types::Tag>, CloudError> {
        self.render(|k, v| aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build())
    }

    pub(crate) fn s3(&self) -> Result<Vec<aws_sdk_s3::types::Tag>, CloudError> {
        self.render(|k, v| aws_sdk_s3::types::Tag::builder().key(k).value(v).build())
    }

    pub(crate) fn s3_tagging(&self) -> Result<aws_sdk_s3::types::Tagging, CloudError> {
        aws_sdk_s3::types::Tagging::builder()
            .set_tag_set(Some(self.s3()?))
            .build()
            .map_err(|e| CloudError::Config(format!("bucket tags: {e}")))
    }

    fn render<T, B: std::fmt::Display>(&self, tag: impl Fn(&str, &str) -> Result<T, B>) -> Result<Vec<T>, CloudError> {
        self.0.iter().map(|(k, v)| tag(k, v).map_err(|e| CloudError::Config(format!("tag {k}: {e}")))).collect()
    }
}

impl FromIterator<(String, String)> for Tags {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Tags(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tags_are_the_absent_and_the_changed_ones() {
        let live = Tags::from_iter([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
        let want = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "3".to_string()),
            ("c".to_string(), "4".to_string()),
        ]);
        let missing = live.missing(&want);
        assert_eq!(missing.keys(), "b, c");
        assert_eq!(live.with(&missing).missing(&want), Tags::default());
        assert!(!live.is_retained());
        assert!(live.with(&Tags::retained()).is_retained());
    }
}
