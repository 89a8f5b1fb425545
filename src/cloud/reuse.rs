//! One verification reads each AWS setting once. Verifying a tenant reads its settings to
//! converge them, then the controls read them again for the policy reports; within
//! [`within`], a read that AWS already answered is answered again from that answer, as long as
//! nothing was written to that service since (a write to IAM forgets every IAM answer of the
//! scope, and so on; what one service answers does not depend on writes to another).
//!
//! The answers are kept in the HTTP connector ([`super::budget::BudgetedHttpClient`]) by request
//! (method, URI, operation header and body), only for reads (Get*, Head*, List*, Describe*) and
//! only when AWS answered 2xx or 404 (absent settings). A reused answer waits for no budget and
//! is not counted as a call: it is marked with [`REUSED`], which the call counter skips.
//! Outside a scope (retirement, the drift-events consumer, `evidence` run by hand) every read
//! goes to AWS.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::{Headers, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;

/// The header marking an answer taken from the scope rather than from AWS.
pub(crate) const REUSED: &str = "x-imaging-tenant-operator-reused";

/// A request as far as its answer depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    method: String,
    uri: String,
    /// `X-Amz-Target`, which names the operation of KMS's JSON protocol.
    target: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

/// The answers of one scope.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    by_request: Mutex<HashMap<Key, Answer>>,
}

tokio::task_local! {
    static SCOPE: Arc<Answers>;
}

/// Runs `work` as one scope: its reads are answered at most once by AWS until it writes.
pub(crate) async fn within<F: Future>(work: F) -> F::Output {
    SCOPE.scope(Arc::new(Answers::default()), work).await
}

/// The current scope's answers, if the caller runs within one.
pub(crate) fn current() -> Option<Arc<Answers>> {
    SCOPE.try_with(Arc::clone).ok()
}

fn key_of(request: &HttpRequest, service: &str) -> Option<Key> {
    Some(Key {
        service: service.to_string(),
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        target: request.headers().get("x-amz-target").map(str::to_string),
        // A streaming body cannot be compared; such a request is never answered twice.
        body: request.body().bytes()?.to_vec(),
    })
}

/// What the connector does with a request within a scope.
pub(crate) enum Plan {
    /// Answered before: this is the answer.
    Reused(HttpResponse),
    /// Send it, and keep the answer under this key.
    Keep(Arc<Answers>, KeepKey),
    /// Send it; nothing to keep.
    Send,
}

/// The key under which to keep an answer (opaque outside this module).
pub(crate) struct KeepKey(Key);

impl Answers {
    /// Decides about `request` to `service` (`write`: whether its operation changes something;
    /// an unknown service is every service).
    pub(crate) fn plan(self: &Arc<Self>, request: &HttpRequest, service: &str, write: bool) -> Plan {
        let mut answers = self.by_request.lock().expect("answers lock");
        if write {
            answers.retain(|key, _| !service.is_empty() && key.service != service);
            return Plan::Send;
        }
        let Some(key) = key_of(request, service) else { return Plan::Send };
        match answers.get(&key) {
            Some(answer) => Plan::Reused(response(answer, true)),
            None => Plan::Keep(self.clone(), KeepKey(key)),
        }
    }

    /// Keeps AWS's answer when it is one to keep (2xx, or 404 for an absent setting), and gives
    /// back an equivalent response to the SDK.
    pub(crate) async fn keep(&self, key: KeepKey, answer: HttpResponse) -> HttpResponse {
        let status = answer.status().as_u16();
        if !(200..300).contains(&status) && status != 404 {
            return answer;
        }
        let headers = answer.headers().clone();
        let body = match ByteStream::new(answer.into_body()).collect().await {
            Ok(body) => body.to_vec(),
            // The body broke off: give the SDK the failure as if it came while it read.
            Err(e) => {
                let mut broken = HttpResponse::new(StatusCode::try_from(status).expect("a status"), SdkBody::taken());
                *broken.headers_mut() = headers;
                tracing::debug!(error = %e, "reading an AWS answer failed");
                return broken;
            }
        };
        let answer = Answer { status, headers, body };
        let out = response(&answer, false);
        self.by_request.lock().expect("answers lock").insert(key.0, answer);
        out
    }
}

fn response(answer: &Answer, reused: bool) -> HttpResponse {
    let status = StatusCode::try_from(answer.status).expect("a status AWS answered");
    let mut response = HttpResponse::new(status, SdkBody::from(answer.body.clone()));
    *response.headers_mut() = answer.headers.clone();
    if reused {
        response.headers_mut().insert(REUSED, "true");
    }
    response
}

/// Whether a response was taken from the scope.
pub(crate) fn is_reused(response: &HttpResponse) -> bool {
    response.headers().contains_key(REUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, body: &str) -> HttpRequest {
        let mut r = HttpRequest::new(SdkBody::from(body.to_string()));
        r.set_uri(uri).unwrap();
        r.set_method("POST").unwrap();
        r
    }

    fn service_of(req: &HttpRequest) -> &'static str {
        ["iam", "kms", "s3"].into_iter().find(|s| req.uri().contains(&format!("{s}."))).unwrap_or("")
    }

    async fn answered(answers: &Arc<Answers>, req: &HttpRequest, status: u16, body: &str) {
        match answers.plan(req, service_of(req), false) {
            Plan::Keep(scope, key) => {
                let aws = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body.to_string()));
                let given = scope.keep(key, aws).await;
                assert_eq!(given.body().bytes(), Some(body.as_bytes()), "the SDK gets AWS's answer");
                assert!(!is_reused(&given));
            }
            _ => panic!("a first read goes to AWS"),
        }
    }

    #[tokio::test]
    async fn a_read_is_answered_again_until_something_is_written() {
        let answers = Arc::new(Answers::default());
        let get_role = request("https://iam.amazonaws.com/", "Action=GetRole&RoleName=a");
        answered(&answers, &get_role, 200, "<GetRoleResponse/>").await;
        match answers.plan(&get_role, "iam", false) {
            Plan::Reused(r) => {
                assert!(is_reused(&r));
                assert_eq!(r.body().bytes(), Some(&b"<GetRoleResponse/>"[..]));
            }
            _ => panic!("the same read is answered again"),
        }
        // Another role is another request.
        let other = request("https://iam.amazonaws.com/", "Action=GetRole&RoleName=b");
        assert!(matches!(answers.plan(&other, "iam", false), Plan::Keep(..)));
        // A write to another service forgets nothing; one to IAM forgets IAM's answers.
        let put = request("https://s3.amazonaws.com/b?policy", "{}");
        assert!(matches!(answers.plan(&put, "s3", true), Plan::Send));
        assert!(matches!(answers.plan(&get_role, "iam", false), Plan::Reused(_)));
        let put = request("https://iam.amazonaws.com/", "Action=PutRolePolicy&RoleName=b");
        assert!(matches!(answers.plan(&put, "iam", true), Plan::Send));
        assert!(matches!(answers.plan(&get_role, "iam", false), Plan::Keep(..)));
        // A write of an unknown service forgets everything.
        answered(&answers, &get_role, 200, "<GetRoleResponse/>").await;
        assert!(matches!(answers.plan(&put, "", true), Plan::Send));
        assert!(matches!(answers.plan(&get_role, "iam", false), Plan::Keep(..)));
    }

    #[tokio::test]
    async fn only_successes_and_absences_are_kept() {
        let answers = Arc::new(Answers::default());
        let policy = request("https://s3.amazonaws.com/b?policy", "");
        answered(&answers, &policy, 404, "<NoSuchBucketPolicy/>").await;
        assert!(matches!(answers.plan(&policy, "s3", false), Plan::Reused(_)), "an absent setting is an answer");
        let throttled = request("https://kms.amazonaws.com/", "{\"KeyId\":\"k\"}");
        match answers.plan(&throttled, "kms", false) {
            Plan::Keep(scope, key) => {
                let aws = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::from("ThrottlingException"));
                scope.keep(key, aws).await;
            }
            _ => panic!("a first read goes to AWS"),
        }
        assert!(matches!(answers.plan(&throttled, "kms", false), Plan::Keep(..)), "a throttled read is asked again");
    }

    #[tokio::test]
    async fn outside_a_scope_there_is_nothing_to_reuse() {
        assert!(current().is_none());
        within(async { assert!(current().is_some()) }).await;
    }
}
