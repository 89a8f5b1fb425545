//! Prometheus metrics of the operator, served on `/metrics`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::condition;
use crate::cloud::CallStats;
use crate::cloud::budget::{BudgetStats, DEFAULTS};
use crate::evidence::controls::Verdict;

/// Every value a condition's status can take; each gets a series, 1 for the current one.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CategoryLabels {
    pub(crate) category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReadyLabels {
    pub(crate) ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabels {
    pub(crate) version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KubeRequestLabels {
    pub(crate) verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AwsCallLabels {
    pub(crate) service: String,
    pub(crate) operation: String,
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BudgetLabels {
    pub(crate) budget: String,
}

/// The request budgets' figures (see `cloud::budget`).
#[derive(Default)]
struct BudgetFamilies {
    requests: Family<BudgetLabels, Counter>,
    wait_seconds: Family<BudgetLabels, Counter<f64, AtomicU64>>,
    throttles: Family<BudgetLabels, Counter>,
    rate: Family<BudgetLabels, Gauge<f64, AtomicU64>>,
    /// What was already added to the counters.
    exported: Mutex<BTreeMap<&'static str, BudgetStats>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DriftLabels {
    pub(crate) outcome: String,
}

pub(crate) struct Metrics {
    pub(crate) registry: Mutex<Registry>,
    drift_events: Family<DriftLabels, Counter>,
    budgets: BudgetFamilies,
    reconciliations: Family<OutcomeLabels, Counter>,
    errors: Family<CategoryLabels, Counter>,
    duration: Histogram,
    tenants: Family<ReadyLabels, Gauge>,
    aws_calls: Family<AwsCallLabels, Counter>,
    aws_writes: Counter,
    kubernetes_requests: Family<KubeRequestLabels, Counter>,
    watch_restarts: Counter,
    ready_by_tenant: Mutex<HashMap<String, bool>>,
    leader: Gauge,
    /// The AWS call counts already added to the counters.
    aws_exported: Mutex<CallStats>,
    /// `imaging_tenant_condition` and `imaging_tenant_control`.
    tenant_series: Arc<TenantSeries>,
    /// Length of the last exposition, so the next is written without growing its buffer.
    last_encoded: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        // The per-tenant families are named for the tenant (`imaging_tenant_*`), the operator's
        // own under `imaging_tenant_operator_`.
        let mut root = Registry::default();
        let tenant_series = Arc::new(TenantSeries::default());
        root.register_collector(Box::new(tenant_series.clone()));
        let registry = root.sub_registry_with_prefix("imaging_tenant_operator");
        let leader = Gauge::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and reconciles, 0 on standby",
            leader.clone(),
        );
        registry.register("build_info", "Version of the running operator (always 1)", build_info.clone());
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        let reconciliations = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<CategoryLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let tenants = Family::<ReadyLabels, Gauge>::default();
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let aws_writes = Counter::default();
        let kubernetes_requests = Family::<KubeRequestLabels, Counter>::default();
        let watch_restarts = Counter::default();
        registry.register("reconciliations", "Reconciliations by outcome", reconciliations.clone());
        registry.register("reconcile_errors", "Reconcile errors by category", errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of one reconcile", duration.clone());
        registry.register("tenants", "Tenants by Ready state", tenants.clone());
        registry.register("aws_calls", "AWS API calls by service, operation and outcome", aws_calls.clone());
        registry.register("aws_writes", "AWS API calls that change something", aws_writes.clone());
        registry.register(
            "kubernetes_requests",
            "Requests to the Kubernetes API by verb (get, list, watch, create, patch, update, delete)",
            kubernetes_requests.clone(),
        );
        registry.register("watch_restarts", "Watch streams that failed and were restarted", watch_restarts.clone());
        let drift_events = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_events",
            "CloudTrail drift events read from the queue, by outcome (matched, unknown, malformed, duplicate, own)",
            drift_events.clone(),
        );
        for outcome in ["matched", "unknown", "malformed", "duplicate", "own"] {
            let _ = drift_events.get_or_create(&DriftLabels { outcome: outcome.into() });
        }
        let budgets = BudgetFamilies::default();
        registry.register("aws_budget_requests", "AWS requests by request budget", budgets.requests.clone());
        registry.register(
            "aws_budget_wait_seconds",
            "Time AWS requests waited for their request budget",
            budgets.wait_seconds.clone(),
        );
        registry.register(
            "aws_budget_throttles",
            "Throttling answers from AWS by request budget (each halves the budget's rate for a while)",
            budgets.throttles.clone(),
        );
        registry.register(
            "aws_budget_rate",
            "Requests per second a request budget allows now (below its configured rate after throttling)",
            budgets.rate.clone(),
        );
        for (name, rate) in DEFAULTS {
            budgets.rate.get_or_create(&BudgetLabels { budget: name.into() }).set(rate);
        }
        // Every family shows from the first scrape, before the first reconcile.
        for outcome in ["ok", "error"] {
            let _ = reconciliations.get_or_create(&OutcomeLabels { outcome: outcome.into() });
        }
        for ready in ["true", "false"] {
            tenants.get_or_create(&ReadyLabels { ready: ready.into() }).set(0);
        }
        Metrics {
            registry: Mutex::new(root),
            drift_events,
            budgets,
            reconciliations,
            errors,
            duration,
            tenants,
            aws_calls,
            aws_writes,
            kubernetes_requests,
            watch_restarts,
            ready_by_tenant: Mutex::default(),
            leader,
            aws_exported: Mutex::default(),
            tenant_series,
            last_encoded: AtomicUsize::new(0),
        }
    }

    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    pub(crate) fn reconciled(&self, outcome: &str, took: Duration) {
        self.reconciliations.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub(crate) fn failed(&self, category: &'static str) {
        self.errors.get_or_create(&CategoryLabels { category: category.into() }).inc();
    }

    /// Adds what the cloud layer counted since the last call (its counts are cumulative).
    pub(crate) fn record_aws(&self, now: &CallStats) {
        let mut exported = self.aws_exported.lock().expect("lock");
        let delta = now.since(&exported);
        for ((service, operation, outcome), n) in &delta.calls {
            self.aws_calls
                .get_or_create(&AwsCallLabels {
                    service: service.clone(),
                    operation: operation.clone(),
                    outcome: outcome.to_string(),
                })
                .inc_by(*n);
        }
        self.aws_writes.inc_by(delta.writes);
        *exported = now.clone();
    }

    pub(crate) fn drift_event(&self, outcome: &str) {
        self.drift_events.get_or_create(&DriftLabels { outcome: outcome.into() }).inc();
    }

    /// Adds what the request budgets counted since the last call, and their current rates.
    pub(crate) fn record_budgets(&self, now: &BTreeMap<&'static str, BudgetStats>) {
        let mut exported = self.budgets.exported.lock().expect("lock");
        for (name, stats) in now {
            let labels = BudgetLabels { budget: name.to_string() };
            let before = exported.get(name).cloned().unwrap_or_default();
            self.budgets.requests.get_or_create(&labels).inc_by(stats.requests.saturating_sub(before.requests));
            self.budgets.throttles.get_or_create(&labels).inc_by(stats.throttled.saturating_sub(before.throttled));
            let waited = stats.waited.saturating_sub(before.waited).as_secs_f64();
            self.budgets.wait_seconds.get_or_create(&labels).inc_by(waited);
            self.budgets.rate.get_or_create(&labels).set(stats.rate);
        }
        *exported = now.clone();
    }

    /// Counts one request to the Kubernetes API (called by the client's middleware).
    pub(crate) fn kubernetes_request<B>(&self, request: &http::Request<B>) {
        let query = request.uri().query().unwrap_or_default();
        let verb = match *request.method() {
            http::Method::GET if query.contains("watch=true") => "watch",
            http::Method::GET => "get",
            http::Method::POST => "create",
            http::Method::PATCH => "patch",
            http::Method::PUT => "update",
            http::Method::DELETE => "delete",
            _ => "other",
        };
        self.kubernetes_requests.get_or_create(&KubeRequestLabels { verb: verb.into() }).inc();
    }

    pub(crate) fn watch_restarted(&self) {
        self.watch_restarts.inc();
    }

    pub(crate) fn tenant_ready(&self, uid: &str, ready: bool) {
        let mut map = self.ready_by_tenant.lock().expect("lock");
        map.insert(uid.to_string(), ready);
        self.publish_ready(&map);
    }

    pub(crate) fn forget_tenant(&self, uid: &str) {
        let mut map = self.ready_by_tenant.lock().expect("lock");
        map.remove(uid);
        self.publish_ready(&map);
        drop(map);
        self.tenant_series.tenants.lock().expect("lock").remove(uid);
    }

    /// The current result of every control of a tenant.
    pub(crate) fn tenant_controls(&self, uid: &str, tenant: &str, results: &[(&'static str, Verdict)]) {
        self.tenant_series.update(uid, tenant, |entry| entry.controls = results.to_vec());
    }

    /// The tenant's conditions as written to its status; types it no longer has are dropped.
    pub(crate) fn tenant_conditions(&self, uid: &str, name: &str, conditions: &[Condition]) {
        self.tenant_series.update(uid, name, |entry| {
            entry.conditions = conditions
                .iter()
                .map(|c| {
                    let type_ =
                        match condition::PARTS.iter().chain(&condition::OVERALL).find(|known| **known == c.type_) {
                            Some(known) => Cow::Borrowed(*known),
                            None => Cow::Owned(c.type_.clone()),
                        };
                    (type_, CONDITION_STATUSES.iter().position(|s| *s == c.status))
                })
                .collect();
        });
    }

    /// Whether this replica holds the Lease (or runs without leader election) and reconciles.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    fn publish_ready(&self, map: &HashMap<String, bool>) {
        let ready = map.values().filter(|r| **r).count() as i64;
        self.tenants.get_or_create(&ReadyLabels { ready: "true".into() }).set(ready);
        self.tenants.get_or_create(&ReadyLabels { ready: "false".into() }).set(map.len() as i64 - ready);
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let last = self.last_encoded.load(Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 16);
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let registry = self.registry.lock().expect("lock");
        encode_registry(&mut out, &registry)
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        self.last_encoded.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// The per-tenant series, one small entry per tenant written out on each scrape. Kept as a
/// `Family`, each of a tenant's ~80 series held its own label strings and gauge: ~21 KiB a
/// tenant, against ~1 KiB here.
#[derive(Debug, Default)]
struct TenantSeries {
    /// By tenant UID.
    tenants: Mutex<BTreeMap<String, TenantEntry>>,
}

#[derive(Debug, Default)]
struct TenantEntry {
    name: Box<str>,
    /// Each condition's type and status (an index in `CONDITION_STATUSES`; none if another).
    conditions: Vec<(Cow<'static, str>, Option<usize>)>,
    controls: Vec<(&'static str, Verdict)>,
}

impl TenantSeries {
    /// Changes a tenant's entry; an entry left with no series goes.
    fn update(&self, uid: &str, name: &str, change: impl FnOnce(&mut TenantEntry)) {
        let mut tenants = self.tenants.lock().expect("lock");
        let entry = tenants.entry(uid.to_string()).or_default();
        if *entry.name != *name {
            entry.name = name.into();
        }
        change(entry);
        if entry.conditions.is_empty() && entry.controls.is_empty() {
            tenants.remove(uid);
        }
    }
}

impl Collector for TenantSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tenants = self.tenants.lock().expect("lock");
        let mut family = encoder.encode_descriptor(
            "imaging_tenant_condition",
            "Status of each condition of each tenant: 1 for the status it has (True, False or Unknown), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for t in tenants.values() {
            for (type_, status) in &t.conditions {
                for (i, s) in CONDITION_STATUSES.iter().enumerate() {
                    let labels = [("tenant", &*t.name), ("condition", type_), ("status", s)];
                    family.encode_family(&labels)?.encode_gauge(&i64::from(*status == Some(i)))?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "imaging_tenant_control",
            "Result of each control of each tenant (docs/compliance.md): 1 for its current result (pass, fail, error, skip)",
            None,
            MetricType::Gauge,
        )?;
        for t in tenants.values() {
            for (control, result) in &t.controls {
                let labels = [("tenant", &*t.name), ("control", control), ("result", result.as_str())];
                family.encode_family(&labels)?.encode_gauge(&1i64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    #[test]
    fn a_tenants_condition_series_follow_its_status_and_go_with_it() {
        let m = Metrics::new();
        m.tenant_conditions("u1", "group-a", &[condition("Ready", "False"), condition("DeletionBlocked", "True")]);
        let text = m.encode();
        assert!(text.contains("imaging_tenant_condition{tenant=\"group-a\",condition=\"Ready\",status=\"False\"} 1"));
        assert!(
            text.contains(
                "imaging_tenant_condition{tenant=\"group-a\",condition=\"DeletionBlocked\",status=\"True\"} 1"
            )
        );
        m.tenant_conditions("u1", "group-a", &[condition("Ready", "True")]);
        let text = m.encode();
        assert!(text.contains("imaging_tenant_condition{tenant=\"group-a\",condition=\"Ready\",status=\"True\"} 1"));
        assert!(text.contains("imaging_tenant_condition{tenant=\"group-a\",condition=\"Ready\",status=\"False\"} 0"));
        assert!(!text.contains("DeletionBlocked"), "a condition the tenant no longer has is dropped:\n{text}");
        m.forget_tenant("u1");
        assert!(!m.encode().contains("group-a"), "a deleted tenant leaves no series");
    }

    #[test]
    fn every_family_is_exposed() {
        let m = Metrics::new();
        m.reconciled("ok", Duration::from_millis(20));
        m.failed("kubernetes_apply");
        let mut stats = CallStats::default();
        stats.calls.insert(("s3".into(), "CreateBucket".into(), "ok"), 1);
        stats.writes = 1;
        m.record_aws(&stats);
        m.record_aws(&stats);
        m.watch_restarted();
        m.kubernetes_request(&http::Request::patch("/api/v1/namespaces/x").body(()).unwrap());
        m.tenant_ready("u1", true);
        m.tenant_ready("u2", false);
        m.tenant_controls("u1", "group-a", &[("ITO-S3-01", Verdict::Fail), ("ITO-S3-02", Verdict::Pass)]);
        m.tenant_controls("u1", "group-a", &[("ITO-S3-01", Verdict::Pass), ("ITO-S3-02", Verdict::Pass)]);
        m.set_leader(true);
        m.tenant_conditions("u1", "group-a", &[condition("Ready", "True")]);
        let text = m.encode();
        assert!(!text.contains("result=\"fail\""), "a changed result replaces the old one:\n{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        for family in [
            "imaging_tenant_operator_reconciliations_total{outcome=\"ok\"} 1",
            "imaging_tenant_operator_reconcile_errors_total{category=\"kubernetes_apply\"} 1",
            "imaging_tenant_operator_reconcile_duration_seconds_count 1",
            "imaging_tenant_operator_tenants{ready=\"true\"} 1",
            "imaging_tenant_operator_tenants{ready=\"false\"} 1",
            "imaging_tenant_operator_aws_calls_total{service=\"s3\",operation=\"CreateBucket\",outcome=\"ok\"} 1",
            "imaging_tenant_operator_aws_writes_total 1",
            "imaging_tenant_operator_watch_restarts_total 1",
            "imaging_tenant_operator_kubernetes_requests_total{verb=\"patch\"} 1",
            "imaging_tenant_control{tenant=\"group-a\",control=\"ITO-S3-01\",result=\"pass\"} 1",
            "imaging_tenant_operator_leader 1",
            "imaging_tenant_operator_build_info{version=\"",
            "imaging_tenant_condition{tenant=\"group-a\",condition=\"Ready\",status=\"True\"} 1",
            "imaging_tenant_condition{tenant=\"group-a\",condition=\"Ready\",status=\"False\"} 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
