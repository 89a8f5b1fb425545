//! What every reconcile shares: the clients, the caches, and two small memories per tenant (the
//! back-off of a failing tenant and the last AWS verification).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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
    pub(crate) aws_checks: Arc<AwsChecks>,
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
            aws_checks: Arc::default(),
            reports: Default::default(),
        }
    }

    /// With the guard layers the controller keeps reading, and the verification memory the drift
    /// event consumer marks stale.
    pub(crate) fn with(self, guard: Guard, aws_checks: Arc<AwsChecks>) -> Self {
        Context { guard, aws_checks, ..self }
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
pub(crate) struct AwsChecks {
    checks: Mutex<HashMap<String, AwsCheck>>,
    /// Where the tenants' phases in the resync interval are counted from.
    epoch: Instant,
}

impl Default for AwsChecks {
    fn default() -> Self {
        AwsChecks { checks: Mutex::default(), epoch: Instant::now() }
    }
}

/// The tenant's fixed place in the resync interval, from its UID: verifications of many tenants
/// spread evenly over the interval whenever the tenants were created or the operator started.
fn phase(uid: &str, resync_interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    resync_interval.mul_f64(fraction)
}

/// When a tenant verified at `at` is due again: at the first of its slots (epoch + phase + k ×
/// interval) that comes at least half an interval after `at`, so between 0.5 and 1.5 intervals.
fn next_due(at: Instant, epoch: Instant, phase: Duration, resync_interval: Duration) -> Instant {
    if resync_interval.is_zero() {
        return at;
    }
    let earliest = at + resync_interval / 2;
    let first = epoch + phase;
    if earliest <= first {
        return first;
    }
    let k = (earliest - first).as_secs_f64() / resync_interval.as_secs_f64();
    first + resync_interval.mul_f64(k.ceil())
}

#[derive(Clone, Debug)]
pub(crate) struct AwsCheck {
    at: Instant,
    generation: Option<i64>,
    requested_at: Option<String>,
    /// A drift event named one of the tenant's resources since.
    stale: bool,
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) ids: CloudIds,
}

impl AwsChecks {
    pub(crate) fn due(&self, tenant: &ImagingTenant, uid: &str, resync_interval: Duration) -> bool {
        let checks = self.checks.lock().expect("AWS check lock");
        match checks.get(uid) {
            None => true,
            Some(c) => {
                c.stale
                    || !c.verdicts.iter().all(|v| v.ok)
                    || c.generation != tenant.metadata.generation
                    || c.requested_at.as_deref() != requested_at(tenant)
                    || Instant::now() >= next_due(c.at, self.epoch, phase(uid, resync_interval), resync_interval)
            }
        }
    }

    /// How long until the tenant's next verification is due (zero when it is due now).
    pub(crate) fn due_in(&self, uid: &str, resync_interval: Duration) -> Duration {
        let checks = self.checks.lock().expect("AWS check lock");
        match checks.get(uid) {
            Some(c) if !c.stale && c.verdicts.iter().all(|v| v.ok) => {
                next_due(c.at, self.epoch, phase(uid, resync_interval), resync_interval)
                    .saturating_duration_since(Instant::now())
            }
            _ => Duration::ZERO,
        }
    }

    /// A restarted operator takes a Ready tenant's recorded AWS verdicts as a verification made
    /// half an interval ago, so that it verifies it at its slot in the coming interval instead of
    /// verifying every tenant at once.
    pub(crate) fn seed(
        &self,
        tenant: &ImagingTenant,
        uid: &str,
        verdicts: &[Verdict],
        ids: &CloudIds,
        resync: Duration,
    ) {
        let mut checks = self.checks.lock().expect("AWS check lock");
        checks.entry(uid.to_string()).or_insert_with(|| AwsCheck {
            at: Instant::now().checked_sub(resync / 2).unwrap_or(self.epoch),
            generation: tenant.metadata.generation,
            // The status does not say which request it answered: a tenant carrying the
            // reconcile-request annotation is verified at once, as asked.
            requested_at: None,
            stale: false,
            verdicts: verdicts.to_vec(),
            ids: ids.clone(),
        });
    }

    /// The tenant's AWS resources changed behind the operator's back: verify them now.
    pub(crate) fn stale(&self, uid: &str) {
        if let Some(c) = self.checks.lock().expect("AWS check lock").get_mut(uid) {
            c.stale = true;
        }
    }

    pub(crate) fn record(&self, tenant: &ImagingTenant, uid: &str, verdicts: &[Verdict], ids: &CloudIds) {
        let check = AwsCheck {
            at: Instant::now(),
            generation: tenant.metadata.generation,
            requested_at: requested_at(tenant).map(str::to_string),
            stale: false,
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
        checks.record(&tenant(1, None), "u", &ok, &CloudIds::default());
        checks.stale("u");
        assert!(checks.due(&tenant(1, None), "u", resync), "a drift event names the tenant");
        assert_eq!(checks.due_in("u", resync), Duration::ZERO);
        checks.forget("u");
        assert!(checks.last("u").is_none());
    }

    /// Share of `times` (offsets from `start`) in each tenth of the interval.
    fn histogram(times: &[Duration], resync: Duration) -> Vec<usize> {
        let mut bins = vec![0; 10];
        for t in times {
            let bin = ((t.as_secs_f64() / resync.as_secs_f64()) * 10.0).floor() as usize;
            bins[bin.min(9)] += 1;
        }
        bins
    }

    #[tokio::test(start_paused = true)]
    async fn verifications_of_tenants_created_together_spread_over_the_interval() {
        let checks = AwsChecks::default();
        let resync = Duration::from_secs(600);
        let ok = [Verdict::ok("KeyReady", "Provisioned", "fine")];
        let uids: Vec<String> = (0..1000).map(|i| format!("5f0c{i:04}-7d1e-4b8a-9c3e-{i:012}")).collect();
        tokio::time::advance(Duration::from_secs(7)).await;
        let start = Instant::now();
        for uid in &uids {
            checks.record(&tenant(1, None), uid, &ok, &CloudIds::default());
        }
        let due: Vec<Duration> = uids.iter().map(|u| checks.due_in(u, resync)).collect();
        assert!(
            due.iter().all(|d| *d >= resync / 2 && *d <= resync * 3 / 2),
            "between half and one and a half intervals"
        );
        let relative: Vec<Duration> = due.iter().map(|d| *d - resync / 2).collect();
        let bins = histogram(&relative, resync);
        assert!(bins.iter().all(|n| (70..=130).contains(n)), "1000 tenants over 10 slots: {bins:?}");
        // Nobody is due before its slot, everybody after it.
        tokio::time::advance(resync / 2).await;
        let now_due = uids.iter().filter(|u| checks.due(&tenant(1, None), u, resync)).count();
        assert!(now_due < 30, "{now_due} due at the start of the spread");
        tokio::time::advance(resync).await;
        assert!(uids.iter().all(|u| checks.due(&tenant(1, None), u, resync)));
        assert!(Instant::now() > start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_operator_verifies_ready_tenants_at_their_slots_not_at_once() {
        let checks = AwsChecks::default();
        let resync = Duration::from_secs(600);
        let ok = [Verdict::ok("KeyReady", "Provisioned", "fine")];
        let uids: Vec<String> = (0..500).map(|i| format!("a1b2{i:04}-0000-4000-8000-{i:012}")).collect();
        for uid in &uids {
            checks.seed(&tenant(1, None), uid, &ok, &CloudIds::default(), resync);
        }
        let due_now = uids.iter().filter(|u| checks.due(&tenant(1, None), u, resync)).count();
        assert!(due_now < 10, "{due_now} of 500 verified right after the restart");
        let bins = histogram(&uids.iter().map(|u| checks.due_in(u, resync)).collect::<Vec<_>>(), resync);
        assert!(bins.iter().all(|n| (30..=70).contains(n)), "500 tenants over the first interval: {bins:?}");
        // A spec change or a request still goes first, also one made before the restart.
        assert!(checks.due(&tenant(2, None), &uids[0], resync));
        assert!(checks.due(&tenant(1, Some("now")), &uids[0], resync));
        let asked = AwsChecks::default();
        asked.seed(&tenant(1, Some("before")), "x", &ok, &CloudIds::default(), resync);
        assert!(asked.due(&tenant(1, Some("before")), "x", resync));
    }
}
