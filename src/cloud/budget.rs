//! Request budgets per AWS operation, shared by every reconcile of one operator.
//!
//! AWS limits request rates per account and region, per operation: KMS allows 5 requests per
//! second for each of `CreateKey`, `CreateAlias`, `PutKeyPolicy`, `EnableKeyRotation`,
//! `TagResource` and `ScheduleKeyDeletion` (separate quotas), and throttles reads and the IAM and
//! S3 control planes well before any of our tenants would notice otherwise. One token bucket per
//! budget (the table in [`DEFAULTS`], each overridable with `--aws-budget NAME=RATE`) spaces the
//! requests; a throttling answer from AWS halves that budget's rate, which then recovers linearly
//! over [`RECOVERY`].
//!
//! The wait happens in the HTTP connector ([`BudgetedHttpClient`]), for every attempt including
//! the SDK's retries; an interceptor ([`BudgetTag`]) tells the connector which budget a request
//! belongs to, and reports throttling answers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::time::Instant;

use super::reuse;

/// How long a throttled budget takes to climb back to its configured rate.
pub(crate) const RECOVERY: Duration = Duration::from_secs(60);

/// A throttled budget never drops below this share of its configured rate.
const FLOOR: f64 = 0.1;

/// The budgets and their default rates (requests per second). KMS writes get 4 of the 5 AWS
/// allows, leaving room for people and other tools in the account.
pub const DEFAULTS: [(&str, f64); 14] = [
    ("kms:CreateKey", 4.0),
    ("kms:CreateAlias", 4.0),
    ("kms:PutKeyPolicy", 4.0),
    ("kms:EnableKeyRotation", 4.0),
    ("kms:TagResource", 4.0),
    ("kms:ScheduleKeyDeletion", 4.0),
    ("kms:write", 4.0),
    ("kms:read", 40.0),
    ("s3:write", 20.0),
    ("s3:read", 50.0),
    ("iam:write", 5.0),
    ("iam:read", 15.0),
    ("sts", 10.0),
    ("other", 10.0),
];

/// The budget an operation counts against.
pub(crate) fn budget_of(service: &str, operation: &str) -> &'static str {
    let write = super::calls::is_write(operation);
    match (service, write) {
        ("kms", true) => DEFAULTS
            .iter()
            .map(|(name, _)| *name)
            .find(|name| name.strip_prefix("kms:") == Some(operation))
            .unwrap_or("kms:write"),
        ("kms", false) => "kms:read",
        ("s3", true) => "s3:write",
        ("s3", false) => "s3:read",
        ("iam", true) => "iam:write",
        ("iam", false) => "iam:read",
        ("sts", _) => "sts",
        _ => "other",
    }
}

/// Parses `NAME=RATE` overrides (RATE in requests per second, > 0).
pub fn parse_override(text: &str) -> Result<(String, f64), String> {
    let (name, rate) =
        text.split_once('=').ok_or_else(|| format!("{text:?}: expected NAME=RATE, e.g. kms:CreateKey=4"))?;
    if !DEFAULTS.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = DEFAULTS.iter().map(|(n, _)| *n).collect();
        return Err(format!("{name:?} is not a budget; budgets: {}", names.join(", ")));
    }
    let rate: f64 = rate.parse().map_err(|_| format!("{text:?}: the rate must be a number of requests per second"))?;
    if !(rate > 0.0 && rate <= 10_000.0) {
        return Err(format!("{text:?}: the rate must be above 0 and at most 10000 requests per second"));
    }
    Ok((name.to_string(), rate))
}

/// What one budget did, for metrics and the bench.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetStats {
    pub requests: u64,
    pub waited: Duration,
    pub throttled: u64,
    /// Requests per second allowed now (below the configured rate after throttling).
    pub rate: f64,
    pub configured: f64,
}

struct Bucket {
    configured: f64,
    state: Mutex<State>,
}

struct State {
    /// When the next request may go, were no burst allowed.
    next: Instant,
    /// The rate right after the last throttling, and when it came.
    throttled: Option<(f64, Instant)>,
    stats: BudgetStats,
}

impl Bucket {
    fn new(configured: f64, now: Instant) -> Self {
        let stats = BudgetStats { rate: configured, configured, ..BudgetStats::default() };
        Bucket { configured, state: Mutex::new(State { next: now, throttled: None, stats }) }
    }

    fn rate(&self, state: &State, now: Instant) -> f64 {
        match state.throttled {
            None => self.configured,
            Some((low, at)) => {
                let recovered = (now.saturating_duration_since(at).as_secs_f64() / RECOVERY.as_secs_f64()).min(1.0);
                low + (self.configured - low) * recovered
            }
        }
    }

    /// Reserves the next slot: how long to wait before sending. Requests are spaced by the rate,
    /// without bursts, so no window of one second ever holds more than the rate allows (AWS's
    /// own buckets may be less forgiving than they are documented).
    fn reserve(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().expect("budget lock");
        let rate = self.rate(&state, now);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let at = state.next.max(now);
        state.next = at + interval;
        let wait = at.saturating_duration_since(now);
        state.stats.requests += 1;
        state.stats.waited += wait;
        state.stats.rate = rate;
        wait
    }

    fn throttled(&self, now: Instant) {
        let mut state = self.state.lock().expect("budget lock");
        let low = (self.rate(&state, now) / 2.0).max(self.configured * FLOOR);
        state.throttled = Some((low, now));
        state.stats.throttled += 1;
        state.stats.rate = low;
    }
}

/// The table of budgets.
pub(crate) struct Budgets {
    buckets: BTreeMap<&'static str, Bucket>,
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets").field("budgets", &self.buckets.keys().collect::<Vec<_>>()).finish()
    }
}

impl Budgets {
    /// The defaults with `overrides` (name → requests per second) applied.
    pub(crate) fn new(overrides: &BTreeMap<String, f64>) -> Self {
        let now = Instant::now();
        let buckets = DEFAULTS
            .iter()
            .map(|(name, rate)| (*name, Bucket::new(overrides.get(*name).copied().unwrap_or(*rate), now)))
            .collect();
        Budgets { buckets }
    }

    fn bucket(&self, budget: &str) -> &Bucket {
        self.buckets.get(budget).unwrap_or_else(|| &self.buckets["other"])
    }

    /// How long a request of `budget` must wait before it is sent; the slot is taken.
    pub(crate) fn reserve(&self, budget: &str) -> Duration {
        self.bucket(budget).reserve(Instant::now())
    }

    /// AWS answered a request of `budget` with throttling.
    pub(crate) fn throttled(&self, budget: &str) {
        self.bucket(budget).throttled(Instant::now());
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, BudgetStats> {
        self.buckets.iter().map(|(name, b)| (*name, b.state.lock().expect("budget lock").stats.clone())).collect()
    }
}

/// The budget of a request, carried from the interceptor to the connector.
#[derive(Clone, Copy, Debug)]
struct BudgetName(&'static str);

/// A request's service and whether its operation changes something, carried likewise (see
/// `reuse`).
#[derive(Clone, Debug)]
struct Operation {
    service: String,
    writes: bool,
}

/// Tags each request with its budget, and reports throttling answers to it.
#[derive(Clone, Debug)]
pub(crate) struct BudgetTag {
    budgets: Arc<Budgets>,
}

impl BudgetTag {
    pub(crate) fn new(budgets: Arc<Budgets>) -> Self {
        BudgetTag { budgets }
    }
}

fn budget_from(cfg: &ConfigBag) -> &'static str {
    cfg.load::<Metadata>().map(|m| budget_of(&m.service().to_ascii_lowercase(), m.name())).unwrap_or("other")
}

/// Throttling, as the AWS services we use answer it: 429, 503 (S3 SlowDown), or a 400 whose
/// error code says so (KMS ThrottlingException, IAM Throttling, STS and others).
fn is_throttling(status: u16, body: &[u8]) -> bool {
    const CODES: [&str; 5] = ["Throttling", "SlowDown", "RequestLimitExceeded", "TooManyRequests", "RequestThrottled"];
    status == 429
        || status == 503
        || (status == 400 && {
            let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
            CODES.iter().any(|c| text.contains(c))
        })
}

impl Intercept for BudgetTag {
    fn name(&self) -> &'static str {
        "BudgetTag"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().add_extension(BudgetName(budget_from(cfg)));
        let operation = match cfg.load::<Metadata>() {
            Some(m) => {
                Operation { service: m.service().to_ascii_lowercase(), writes: super::calls::is_write(m.name()) }
            }
            None => Operation { service: String::new(), writes: true },
        };
        context.request_mut().add_extension(operation);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response()
            && !reuse::is_reused(response)
            && is_throttling(response.status().as_u16(), response.body().bytes().unwrap_or_default())
        {
            self.budgets.throttled(budget_from(cfg));
        }
        Ok(())
    }
}

/// An HTTP client that waits for the request's budget before sending, and within a
/// verification answers a read that AWS already answered (see `reuse`).
#[derive(Clone, Debug)]
pub(crate) struct BudgetedHttpClient {
    inner: SharedHttpClient,
    budgets: Arc<Budgets>,
}

impl BudgetedHttpClient {
    pub(crate) fn new(inner: SharedHttpClient, budgets: Arc<Budgets>) -> Self {
        BudgetedHttpClient { inner, budgets }
    }
}

impl HttpClient for BudgetedHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(BudgetedConnector {
            inner: self.inner.http_connector(settings, components),
            budgets: self.budgets.clone(),
        })
    }
}

#[derive(Debug)]
struct BudgetedConnector {
    inner: SharedHttpConnector,
    budgets: Arc<Budgets>,
}

impl HttpConnector for BudgetedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let budget = request.extension::<BudgetName>().map(|b| b.0).unwrap_or("other");
        let (service, writes) = request.extension::<Operation>().map_or(("", true), |o| (o.service.as_str(), o.writes));
        let plan = match reuse::current() {
            Some(answers) => answers.plan(&request, service, writes),
            None => reuse::Plan::Send,
        };
        let keep = match plan {
            reuse::Plan::Reused(response) => return HttpConnectorFuture::ready(Ok(response)),
            reuse::Plan::Keep(answers, key) => Some((answers, key)),
            reuse::Plan::Send => None,
        };
        let wait = self.budgets.reserve(budget);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let response = inner.call(request).await?;
            Ok(match keep {
                Some((answers, key)) => answers.keep(key, response).await,
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_count_against_their_budget() {
        assert_eq!(budget_of("kms", "CreateKey"), "kms:CreateKey");
        assert_eq!(budget_of("kms", "ScheduleKeyDeletion"), "kms:ScheduleKeyDeletion");
        assert_eq!(budget_of("kms", "UpdateAlias"), "kms:write");
        assert_eq!(budget_of("kms", "DescribeKey"), "kms:read");
        assert_eq!(budget_of("s3", "PutBucketPolicy"), "s3:write");
        assert_eq!(budget_of("s3", "HeadBucket"), "s3:read");
        assert_eq!(budget_of("iam", "CreateRole"), "iam:write");
        assert_eq!(budget_of("iam", "GetRole"), "iam:read");
        assert_eq!(budget_of("sts", "GetCallerIdentity"), "sts");
    }

    #[test]
    fn overrides_are_checked() {
        assert_eq!(parse_override("kms:CreateKey=2.5"), Ok(("kms:CreateKey".into(), 2.5)));
        assert!(parse_override("kms:Nope=1").unwrap_err().contains("not a budget"));
        assert!(parse_override("kms:CreateKey").unwrap_err().contains("NAME=RATE"));
        assert!(parse_override("kms:CreateKey=0").unwrap_err().contains("above 0"));
        assert!(parse_override("kms:CreateKey=fast").is_err());
    }

    /// Sends `n` requests at once and returns when each may go, relative to the start.
    fn burst(bucket: &Bucket, n: usize, start: Instant) -> Vec<f64> {
        (0..n).map(|_| bucket.reserve(start).as_secs_f64()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_never_exceeds_the_budget() {
        let start = Instant::now();
        let bucket = Bucket::new(4.0, start);
        let times = burst(&bucket, 100, start);
        // No window of one second holds more than 4 sends.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().filter(|u| **u < t + 1.0 - 1e-9).count();
            assert!(in_window <= 4, "{in_window} requests within a second from {t}");
        }
        assert!((times[99] - 24.75).abs() < 1e-6, "the 100th request goes after 99 intervals: {}", times[99]);
        assert_eq!(bucket.state.lock().unwrap().stats.requests, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_which_recovers() {
        let start = Instant::now();
        let bucket = Bucket::new(4.0, start);
        bucket.throttled(start);
        assert_eq!(bucket.state.lock().unwrap().stats.rate, 2.0);
        bucket.throttled(start);
        assert_eq!(bucket.state.lock().unwrap().stats.rate, 1.0);
        let times = burst(&bucket, 5, start);
        assert!((times[4] - 4.0).abs() < 1e-6, "at 1/s, the fifth request waits 4 s: {times:?}");
        tokio::time::advance(RECOVERY).await;
        let later = Instant::now();
        let gaps = burst(&bucket, 10, later);
        let rate = 9.0 / (gaps[9] - gaps[0]);
        assert!((rate - 4.0).abs() < 0.01, "recovered to 4/s after {RECOVERY:?}: {rate}");
        for _ in 0..10 {
            bucket.throttled(later);
        }
        assert!(bucket.state.lock().unwrap().stats.rate >= 0.4 - 1e-9, "never below the floor");
    }

    #[test]
    fn throttling_answers_are_recognised() {
        assert!(is_throttling(400, br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
        assert!(is_throttling(400, b"<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>"));
        assert!(is_throttling(503, b"<Error><Code>SlowDown</Code></Error>"));
        assert!(is_throttling(429, b""));
        assert!(!is_throttling(400, br#"{"__type":"ValidationException"}"#));
        assert!(!is_throttling(404, b""));
    }
}
