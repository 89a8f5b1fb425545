//! What every reconcile shares: the clients, the caches, and two small memories per tenant (the
//! back-off of a failing tenant and the last AWS verification).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use super::RunOptions;
use super::children::Stores;
use super::events::Events;
use super::guard::Guard;
use crate::api::ImagingTenant;
use crate::api::condition::Verdict;
use crate::api::metadata::RECONCILE_REQUESTED_AT;
use crate::cloud::{Cloud, CloudIds};
use crate::config::Settings;
use crate::metrics::Metrics;

/// Everything a reconcile needs, shared by all of them.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) settings: Settings,
    pub(crate) cloud: Cloud,
    pub(crate) events: Events,
    pub(crate) stores: Stores,
    /// The tenants this operator reconciles (its shard), from the controller's own cache.
    pub(crate) tenants: Store<DeserializeGuard<ImagingTenant>>,
    /// The isolation layers the cluster enforces beside NetworkPolicies.
    pub(crate) guard: Guard,
    pub(crate) metrics: std::sync::Arc<Metrics>,
    pub(crate) resync_interval: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) aws_checks: AwsChecks,
    pub(crate) reports: super::reports::Reports,
}

impl Context {
    pub(crate) fn new(
        client: Client,
        settings: Settings,
        cloud: Cloud,
        stores: Stores,
        tenants: Store<DeserializeGuard<ImagingTenant>>,
        metrics: std::sync::Arc<Metrics>,
        opts: &RunOptions,
    ) -> Self {
        Context {
            tenants,
            guard: Guard::default(),
            events: Events::new(client.clone(), opts.reporter.clone()),
            client,
            settings,
            cloud,
            stores,
            metrics,
            resync_interval: opts.resync_interval,
            backoff: Backoff::default(),
            aws_checks: AwsChecks::default(),
            reports: Default::default(),
        }
    }

    /// With the guard layers the controller keeps reading.
    pub(crate) fn with_guard(self, guard: Guard) -> Self {
        Context { guard, ..self }
    }

    /// Forgets a retired tenant.
    pub(crate) fn forget(&self, uid: &str) {
        self.backoff.reset(uid);
        self.aws_checks.forget(uid);
        self.reports.forget(uid);
        self.metrics.forget_tenant(uid);
    }
}

/// Exponential back-off per tenant (kube-runtime has none per object): a failing tenant must not
/// hammer AWS or starve the others.
#[derive(Default)]
pub(crate) struct Backoff {
    /// Per tenant UID: consecutive failures.
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before the next try: 5 s doubling to 5 min, with ±20 % jitter so failing tenants
    /// do not retry in lockstep.
    pub(crate) fn next(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("back-off lock");
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n, rand::random_range(0.8..1.2))
    }

    pub(crate) fn reset(&self, uid: &str) {
        self.failures.lock().expect("back-off lock").remove(uid);
    }
}

/// The back-off after `failures` consecutive failures, scaled by `jitter`.
fn delay(failures: u32, jitter: f64) -> Duration {
    let base = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(6)).min(300);
    Duration::from_secs_f64(base as f64 * jitter)
}

/// The last AWS verification of each tenant. AWS is read again only when it is due (invariant 8:
/// on resync, on a spec change, on request, or while something failed); in between, its verdicts
/// stand. Kept in memory rather than read back from a status the watch cache may not show yet.
#[derive(Default)]
pub(crate) struct AwsChecks {
    checks: Mutex<HashMap<String, AwsCheck>>,
}

#[derive(Clone, Debug)]
pub(crate) struct AwsCheck {
    at: Instant,
    generation: Option<i64>,
    requested_at: Option<String>,
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) ids: CloudIds,
}

impl AwsChecks {
    pub(crate) fn due(&self, tenant: &ImagingTenant, uid: &str, resync_interval: Duration) -> bool {
        let checks = self.checks.lock().expect("AWS check lock");
        match checks.get(uid) {
            None => true,
            Some(c) => {
                !c.verdicts.iter().all(|v| v.ok)
                    || c.generation != tenant.metadata.generation
                    || c.requested_at.as_deref() != requested_at(tenant)
                    || c.at.elapsed() >= resync_interval
            }
        }
    }

    pub(crate) fn record(&self, tenant: &ImagingTenant, uid: &str, verdicts: &[Verdict], ids: &CloudIds) {
        let check = AwsCheck {
            at: Instant::now(),
            generation: tenant.metadata.generation,
            requested_at: requested_at(tenant).map(str::to_string),
            verdicts: verdicts.to_vec(),
            ids: ids.clone(),
        };
        self.checks.lock().expect("AWS check lock").insert(uid.to_string(), check);
    }

    pub(crate) fn last(&self, uid: &str) -> Option<AwsCheck> {
        self.checks.lock().expect("AWS check lock").get(uid).cloned()
    }

    fn forget(&self, uid: &str) {
        self.checks.lock().expect("AWS check lock").remove(uid);
    }
}

fn requested_at(tenant: &ImagingTenant) -> Option<&str> {
    tenant.annotations().get(RECONCILE_REQUESTED_AT).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| delay(n, 1.0).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(1, 0.8), Duration::from_secs(4));
        assert_eq!(delay(u32::MAX, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn backoff_is_per_tenant_and_reset_by_success() {
        let b = Backoff::default();
        let first = b.next("a");
        let second = b.next("a");
        assert!(second > first, "{first:?} then {second:?}");
        assert!(b.next("b") < Duration::from_secs(7), "another tenant starts at 5 s");
        b.reset("a");
        assert!(b.next("a") < Duration::from_secs(7), "a success starts over");
    }

    fn tenant(generation: i64, requested: Option<&str>) -> ImagingTenant {
        let mut t: ImagingTenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": "group-a"},
            "spec": {}
        }))
        .expect("a valid tenant");
        t.metadata.generation = Some(generation);
        if let Some(r) = requested {
            t.annotations_mut().insert(RECONCILE_REQUESTED_AT.into(), r.into());
        }
        t
    }

    #[test]
    fn aws_is_due_first_then_on_change_request_failure_or_resync() {
        let checks = AwsChecks::default();
        let resync = Duration::from_secs(600);
        let ok = [Verdict::ok("KeyReady", "Provisioned", "fine")];
        assert!(checks.due(&tenant(1, None), "u", resync), "never verified");
        checks.record(&tenant(1, None), "u", &ok, &CloudIds::default());
        assert!(!checks.due(&tenant(1, None), "u", resync), "verified just now");
        assert!(checks.due(&tenant(2, None), "u", resync), "spec changed");
        assert!(checks.due(&tenant(1, Some("now")), "u", resync), "re-read requested");
        assert!(checks.due(&tenant(1, None), "u", Duration::ZERO), "resync interval passed");
        let failed = [Verdict::failed("KeyReady", "AccessDenied", "no")];
        checks.record(&tenant(1, None), "u", &failed, &CloudIds::default());
        assert!(checks.due(&tenant(1, None), "u", resync), "a failure is retried");
        checks.forget("u");
        assert!(checks.last("u").is_none());
    }
}
