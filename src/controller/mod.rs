//! The controller: kube-runtime wiring and the reconcile pipeline
//! observe → validate → desired → apply → status.

pub mod error;
pub mod kubernetes;
pub mod status;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::api::condition::{self as cond, Verdict};
use crate::api::{DeletionPolicy, ImagingTenant};
use crate::cloud::{Cloud, CloudIds, CloudReport, Retirement};
use crate::config::Settings;
use crate::desired::kubernetes::{self as desired, MANAGED_BY, MANAGED_BY_LABEL};
use crate::metrics::Metrics;
pub use error::Error;
use kubernetes::{Changes, Claim, Stores};

pub const FINALIZER: &str = "imaging.tenancy.dev/cleanup";
/// Changing this annotation asks for an immediate re-read of AWS.
pub const RECONCILE_REQUESTED_AT: &str = "imaging.tenancy.dev/reconcile-requested-at";

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub cloud: Cloud,
    pub recorder: Recorder,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub resync_interval: Duration,
    /// Per tenant UID: consecutive failures, for exponential back-off per object.
    failures: Mutex<HashMap<String, u32>>,
    /// Per tenant UID: when AWS was last verified, and for which generation and annotation.
    aws_checks: Mutex<HashMap<String, AwsCheck>>,
    /// Objects reported as created lately: the watch cache can lag behind our own writes, and
    /// one creation must not be reported twice.
    reported: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone, Debug)]
struct AwsCheck {
    at: Instant,
    generation: Option<i64>,
    requested_at: Option<String>,
    /// What that verification found: reused until the next one, rather than read back from a
    /// status the watch cache may not show yet.
    verdicts: Vec<Verdict>,
    ids: CloudIds,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        cloud: Cloud,
        stores: Stores,
        metrics: Arc<Metrics>,
        resync: Duration,
        reporter: Reporter,
    ) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            cloud,
            stores,
            metrics,
            resync_interval: resync,
            failures: Mutex::default(),
            aws_checks: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    /// Exponential back-off per tenant: 5 s doubling to 5 min, with ±20 % jitter so failing
    /// tenants do not retry in lockstep.
    fn backoff(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("lock");
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let base = 5u64.saturating_mul(1 << (*n - 1).min(6)).min(300);
        let jitter = rand::random_range(0.8..1.2);
        Duration::from_secs_f64(base as f64 * jitter)
    }

    fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("lock").remove(uid);
    }

    fn aws_due(&self, tenant: &ImagingTenant) -> bool {
        let uid = kubernetes::tenant_uid(tenant);
        let checks = self.aws_checks.lock().expect("lock");
        match checks.get(uid) {
            None => true,
            Some(c) => {
                !c.verdicts.iter().all(|v| v.ok)
                    || c.generation != tenant.metadata.generation
                    || c.requested_at.as_deref() != tenant.annotations().get(RECONCILE_REQUESTED_AT).map(String::as_str)
                    || c.at.elapsed() >= self.resync_interval
            }
        }
    }

    fn aws_checked(&self, tenant: &ImagingTenant, verdicts: &[Verdict], ids: &CloudIds) {
        self.aws_checks.lock().expect("lock").insert(
            kubernetes::tenant_uid(tenant).to_string(),
            AwsCheck {
                at: Instant::now(),
                generation: tenant.metadata.generation,
                requested_at: tenant.annotations().get(RECONCILE_REQUESTED_AT).cloned(),
                verdicts: verdicts.to_vec(),
                ids: ids.clone(),
            },
        );
    }

    fn last_aws_check(&self, uid: &str) -> Option<AwsCheck> {
        self.aws_checks.lock().expect("lock").get(uid).cloned()
    }

    fn forget(&self, uid: &str) {
        self.failures.lock().expect("lock").remove(uid);
        self.aws_checks.lock().expect("lock").remove(uid);
    }

    async fn publish(&self, tenant: &ImagingTenant, type_: EventType, reason: &str, action: &str, note: String) {
        let note = truncate(&note, 1000);
        let event =
            KubeEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }

    async fn publish_changes(&self, tenant: &ImagingTenant, changes: &Changes, restoring: bool) {
        let mut changes = changes.clone();
        {
            let mut reported = self.reported.lock().expect("lock");
            reported.retain(|_, at| at.elapsed() < Duration::from_secs(600));
            // A restored object is a new object with a new UID, so it is reported again.
            let (created, uids): (Vec<_>, Vec<_>) = changes
                .created
                .iter()
                .zip(&changes.created_uids)
                .filter(|(what, uid)| reported.insert(format!("{what} {uid}"), Instant::now()).is_none())
                .map(|(w, u)| (w.clone(), u.clone()))
                .unzip();
            changes.created = created;
            changes.created_uids = uids;
        }
        let groups: [(&str, &Vec<String>); 4] = [
            (if restoring { "Restored" } else { "Created" }, &changes.created),
            ("Repaired", &changes.repaired),
            ("Removed", &changes.removed),
            ("Retained", &changes.detached),
        ];
        for (reason, items) in groups {
            if !items.is_empty() {
                let verb = match reason {
                    "Created" => "created",
                    "Restored" => "restored (it was deleted)",
                    "Repaired" => "restored to the desired state (it was changed)",
                    "Removed" => "removed (no longer desired)",
                    _ => "detached and kept (deletionPolicy Retain)",
                };
                self.publish(tenant, EventType::Normal, reason, "Reconcile", format!("{verb}: {}", items.join(", ")))
                    .await;
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Reconcile entry point: malformed objects are reported, valid ones go through the finalizer.
pub async fn reconcile(guard: Arc<DeserializeGuard<ImagingTenant>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let tenant = match &guard.0 {
        Ok(t) => Arc::new(t.clone()),
        Err(invalid) => {
            warn!(name = ?invalid.metadata.name, error = %invalid.error, "ImagingTenant cannot be read; waiting for a fix");
            return Ok(Action::await_change());
        }
    };
    let name = tenant.name_any();
    let span = info_span!("reconcile", tenant = %name, generation = ?tenant.metadata.generation);
    let started = Instant::now();
    let api: Api<ImagingTenant> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .instrument(span)
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    ctx.metrics.reconciled(outcome, started.elapsed());
    result.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer { tenant: name, message: other.to_string() },
    })
}

/// Back-off per tenant on errors that escape the pipeline (status writes, finalizer, cleanup).
pub fn error_policy(guard: Arc<DeserializeGuard<ImagingTenant>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.category());
    let uid = guard.meta().uid.clone().unwrap_or_default();
    let delay = ctx.backoff(&uid);
    warn!(tenant = %guard.name_any(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The desired state, applied: namespaces first (creating, adopting or reporting a conflict),
/// then their contents, then AWS, then status.
async fn apply(tenant: &ImagingTenant, ctx: &Context) -> Result<Action, Error> {
    let uid = kubernetes::tenant_uid(tenant).to_string();
    let objects = desired::objects(tenant, &ctx.settings);
    let mut changes = Changes::default();
    let mut verdicts = Vec::new();

    // Namespaces: never take over one that is not ours.
    let mut owned = BTreeSet::new();
    let mut conflicts = Vec::new();
    let mut terminating = Vec::new();
    let mut ns_error = None;
    for ns in &objects.namespaces {
        let name = ns.name_any();
        match kubernetes::claim(&ctx.client, &ctx.stores, &uid, &name).await? {
            Claim::Free => match kubernetes::create_namespace(&ctx.client, ns, &mut changes).await {
                Ok(true) => {
                    owned.insert(name);
                }
                // Someone created it between our read and our create: look again next time.
                Ok(false) => conflicts.push((name, None)),
                Err(e) => ns_error = Some(e),
            },
            Claim::Owned { terminating: true } => terminating.push(name),
            Claim::Owned { terminating: false } => {
                match kubernetes::apply_namespace(&ctx.client, &ctx.stores, ns, &mut changes).await {
                    Ok(()) => {
                        owned.insert(name);
                    }
                    Err(e) => ns_error = Some(e),
                }
            }
            Claim::Foreign { owner } => conflicts.push((name, owner)),
        }
    }
    verdicts.push(status::namespaces_verdict(&owned, &conflicts, &terminating, ns_error.as_ref()));
    if !conflicts.is_empty() {
        let list: Vec<String> = conflicts.iter().map(|(n, _)| n.clone()).collect();
        ctx.publish(
            tenant,
            EventType::Warning,
            "NamespaceConflict",
            "ClaimNamespace",
            format!("namespaces {} exist and do not belong to this tenant; they were not modified", list.join(", ")),
        )
        .await;
    }

    // Namespaces removed from the spec follow the deletion policy.
    let wanted: BTreeSet<String> = tenant.namespace_names().into_iter().collect();
    for ns in kubernetes::labelled_namespaces(&ctx.stores, &uid) {
        let name = ns.name_any();
        if wanted.contains(&name) || ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let managed = ns.labels().get(MANAGED_BY_LABEL).is_some_and(|v| v == MANAGED_BY);
        if !managed {
            continue; // already detached
        }
        match tenant.spec.deletion_policy {
            DeletionPolicy::Retain => kubernetes::detach_namespace(&ctx.client, &uid, &name, &mut changes).await?,
            DeletionPolicy::Delete => kubernetes::delete_namespace(&ctx.client, &name, &mut changes).await?,
        }
    }

    let children = kubernetes::apply_children(&ctx.client, &ctx.stores, &uid, &owned, &objects, &mut changes).await;
    let waiting = owned.len() < wanted.len();
    verdicts.push(status::part_verdict(
        cond::NETWORK_ISOLATED,
        children.network.as_ref().err(),
        waiting,
        "PoliciesApplied",
        "default-deny, same-tenant, DNS and listed allow policies are in place in every tenant namespace",
    ));
    verdicts.push(status::part_verdict(
        cond::ACCESS_BOUND,
        children.access.as_ref().err(),
        waiting,
        "BindingsApplied",
        "admins, editors and viewers are bound to admin, edit and view in every tenant namespace",
    ));
    let quota_error = children.quota.as_ref().err().or(children.service_accounts.as_ref().err());
    verdicts.push(status::part_verdict(
        cond::QUOTA_APPLIED,
        quota_error,
        waiting,
        "QuotaApplied",
        "ResourceQuota, LimitRange and workload ServiceAccount are in place in every tenant namespace",
    ));

    let restoring = tenant.status.as_ref().is_some_and(|s| s.observed_generation == tenant.metadata.generation);
    ctx.publish_changes(tenant, &changes, restoring).await;

    // AWS: only with every namespace owned, so the role's trust policy never names a namespace
    // that belongs to someone else. Re-read on resync, on spec change and on request.
    let previous = tenant.status.clone().unwrap_or_default();
    let mut ids = CloudIds { role: previous.role.clone(), key: previous.key.clone(), bucket: previous.bucket.clone() };
    let mut cloud_error = None;
    if waiting || owned.is_empty() {
        for part in [cond::IDENTITY_READY, cond::KEY_READY, cond::BUCKET_READY, cond::BUCKET_SECURED] {
            verdicts.push(Verdict::failed(
                part,
                "WaitingForNamespaces",
                "AWS resources are provisioned once every namespace in spec.namespaces belongs to this tenant",
            ));
        }
    } else if ctx.aws_due(tenant) {
        let mut scoped = tenant.clone();
        scoped.spec.namespaces.retain(|n| owned.contains(&n.name));
        let mut progress = status::StatusProgress::new(ctx.client.clone(), tenant.name_any());
        let CloudReport { ids: new_ids, verdicts: cloud_verdicts, events, error } =
            ctx.cloud.provision(&scoped, &ctx.settings, &ids, &mut progress).await;
        ids = new_ids;
        for e in events {
            ctx.publish(tenant, EventType::Normal, e.reason, "ReconcileAws", e.note).await;
        }
        ctx.aws_checked(tenant, &cloud_verdicts, &ids);
        verdicts.extend(cloud_verdicts);
        cloud_error = error;
    } else if let Some(last) = ctx.last_aws_check(&uid) {
        // Between resyncs, AWS state is what the last verification found.
        verdicts.extend(last.verdicts);
        ids = last.ids;
    } else {
        for part in [cond::IDENTITY_READY, cond::KEY_READY, cond::BUCKET_READY, cond::BUCKET_SECURED] {
            verdicts.push(Verdict::failed(part, "Pending", "AWS resources were not verified yet"));
        }
    }

    let new_status = status::build(tenant, &previous, verdicts, &owned, ids);
    let all_ready = cond::is_true(&new_status.conditions, cond::READY);
    ctx.metrics.tenant_ready(&uid, all_ready);
    status::write_if_changed(&ctx.client, tenant, &previous, &new_status).await?;

    let retryable = [&children.network, &children.access, &children.quota, &children.service_accounts]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .chain(ns_error.as_ref())
        .any(Error::is_retryable)
        || cloud_error.as_ref().is_some_and(|e| e.is_retryable())
        || !terminating.is_empty();
    if retryable {
        let delay = ctx.backoff(&uid);
        info!(retry_in = ?delay, "some parts failed; retrying with back-off");
        return Ok(Action::requeue(delay));
    }
    ctx.succeeded(&uid);
    if !conflicts.is_empty() {
        // A foreign namespace is not watched: look again in a minute in case it was removed.
        return Ok(Action::requeue(ctx.resync_interval.min(Duration::from_secs(60))));
    }
    Ok(Action::requeue(ctx.resync_interval))
}

/// The tenant is being deleted: follow `deletionPolicy`. Returning an error keeps the finalizer,
/// so a blocked deletion is retried with back-off.
async fn cleanup(tenant: &ImagingTenant, ctx: &Context) -> Result<Action, Error> {
    let uid = kubernetes::tenant_uid(tenant).to_string();
    let mut changes = Changes::default();
    let namespaces = kubernetes::labelled_namespaces(&ctx.stores, &uid);
    for ns in &namespaces {
        let name = ns.name_any();
        match tenant.spec.deletion_policy {
            DeletionPolicy::Retain => kubernetes::detach_namespace(&ctx.client, &uid, &name, &mut changes).await?,
            DeletionPolicy::Delete => kubernetes::delete_namespace(&ctx.client, &name, &mut changes).await?,
        }
    }
    ctx.publish_changes(tenant, &changes, false).await;

    let previous = tenant.status.clone().unwrap_or_default();
    let ids = CloudIds { role: previous.role.clone(), key: previous.key.clone(), bucket: previous.bucket.clone() };
    match ctx.cloud.retire(tenant, &ctx.settings, &ids).await {
        Retirement::Done { events } => {
            for e in events {
                ctx.publish(tenant, EventType::Normal, e.reason, "Retire", e.note).await;
            }
            ctx.forget(&uid);
            ctx.metrics.forget_tenant(&uid);
            info!(policy = ?tenant.spec.deletion_policy, "tenant retired");
            Ok(Action::await_change())
        }
        Retirement::Blocked { verdict, events } => {
            for e in events {
                ctx.publish(tenant, EventType::Warning, e.reason, "Retire", e.note).await;
            }
            let mut blocked = previous.clone();
            status::set_deletion_blocked(&mut blocked, tenant, &verdict);
            status::write_if_changed(&ctx.client, tenant, &previous, &blocked).await?;
            Err(Error::DeletionBlocked { tenant: tenant.name_any(), message: verdict.message })
        }
        Retirement::Failed(e) => Err(Error::Cloud(e)),
    }
}

/// A label-selected, guarded watch of one child kind, feeding a cache and a trigger stream.
fn child_watch<K>(
    client: &Client,
    selector: &str,
) -> (Store<DeserializeGuard<K>>, impl Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let api: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default().labels(selector)))
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Waits for a cache's first full list. A store's readiness wakes only its latest waiter (the
/// controller waits on the main store too), so poll again now and then instead of trusting one
/// wake-up.
async fn synced<K>(what: &str, store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(Ok(())) => {
                tracing::debug!(cache = what, "cache synced");
                return true;
            }
            Ok(Err(_)) => {
                warn!(cache = what, "cache stopped before it synced");
                return false;
            }
            Err(_) => continue,
        }
    }
}

/// The tenant a child belongs to, by its controller reference. `owns` would key the owner with
/// the child's namespace, and a cluster-scoped tenant would then be reconciled under two keys at
/// once; this names the tenant without a namespace.
fn owning_tenant<K: Resource>(
    child: DeserializeGuard<K>,
) -> Option<reflector::ObjectRef<DeserializeGuard<ImagingTenant>>> {
    let refs = match &child.0 {
        Ok(obj) => obj.meta().owner_references.clone(),
        Err(invalid) => invalid.metadata.owner_references.clone(),
    };
    refs.unwrap_or_default()
        .into_iter()
        .find(|o| {
            o.controller == Some(true) && o.kind == crate::api::KIND && o.api_version.starts_with(crate::api::GROUP)
        })
        .map(|o| reflector::ObjectRef::new(&o.name))
}

/// Options of the controller loop.
pub struct RunOptions {
    /// Who publishes the Events.
    pub reporter: Reporter,
    pub concurrency: u16,
    pub resync_interval: Duration,
    pub tenant_selector: Option<String>,
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    settings: Settings,
    cloud: Cloud,
    metrics: Arc<Metrics>,
    opts: RunOptions,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let (namespaces, ns_stream) = child_watch::<Namespace>(&client, &managed);
    let (service_accounts, sa_stream) = child_watch::<ServiceAccount>(&client, &managed);
    let (network_policies, np_stream) = child_watch::<NetworkPolicy>(&client, &managed);
    let (role_bindings, rb_stream) = child_watch::<RoleBinding>(&client, &managed);
    let (resource_quotas, rq_stream) = child_watch::<ResourceQuota>(&client, &managed);
    let (limit_ranges, lr_stream) = child_watch::<LimitRange>(&client, &managed);
    let stores =
        Stores { namespaces, service_accounts, network_policies, role_bindings, resource_quotas, limit_ranges };

    let tenants: Api<DeserializeGuard<ImagingTenant>> = Api::all(client.clone());
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &opts.tenant_selector {
        wc = wc.labels(sel);
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        cloud,
        stores.clone(),
        metrics.clone(),
        opts.resync_interval,
        opts.reporter,
    ));

    let controller = Controller::new(tenants, wc)
        .with_config(ControllerConfig::default().concurrency(opts.concurrency).debounce(Duration::from_millis(500)))
        .watches_stream(ns_stream, owning_tenant)
        .watches_stream(sa_stream, owning_tenant)
        .watches_stream(np_stream, owning_tenant)
        .watches_stream(rb_stream, owning_tenant)
        .watches_stream(rq_stream, owning_tenant)
        .watches_stream(lr_stream, owning_tenant)
        .graceful_shutdown_on(shutdown);
    let main_store = controller.store();

    // Ready once every cache has its first full list.
    let readiness = {
        let stores = stores.clone();
        async move {
            let synced = [
                synced("ImagingTenants", &main_store).await,
                synced("Namespaces", &stores.namespaces).await,
                synced("ServiceAccounts", &stores.service_accounts).await,
                synced("NetworkPolicies", &stores.network_policies).await,
                synced("RoleBindings", &stores.role_bindings).await,
                synced("ResourceQuotas", &stores.resource_quotas).await,
                synced("LimitRanges", &stores.limit_ranges).await,
            ];
            if synced.iter().all(|ok| *ok) {
                let _ = ready.send(true);
                info!("caches synced");
            }
        }
    };
    tokio::spawn(readiness);

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            let metrics = metrics.clone();
            async move {
                match res {
                    Err(kube::runtime::controller::Error::QueueError(e)) => {
                        metrics.watch_restarted();
                        warn!(error = %e, "watch failed; restarting it with back-off");
                    }
                    // A child whose owner is not ours (another shard) or is already gone.
                    Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                        tracing::trace!(%obj, "owner not in this operator's cache")
                    }
                    Err(e) => tracing::debug!(error = %e, "controller event"),
                    Ok(_) => {}
                }
            }
        })
        .await;
    info!("controller stopped");
}
