//! The reconcile: a tenant through the finalizer, then a pipeline of named steps.
//!
//! apply: first status (once) → claim namespaces → retire namespaces removed from the spec →
//! apply children → verify AWS → write status → next action. cleanup: retire namespaces → retire AWS.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::children::{self, Changes, ObjectRepair, Part};
use super::context::Context;
use super::detection;
use super::error::Error;
use super::guard;
use super::namespaces::{self, Claims, Retired, Volumes};
use super::status;
use crate::api::condition::{self as cond, Verdict};
use crate::api::metadata::FINALIZER;
use crate::api::{DeletionPolicy, ImagingTenant, ImagingTenantStatus};
use crate::cloud::{CloudIds, CloudReport, Repair, Retirement};
use crate::desired::cluster_network;
use crate::desired::kubernetes as desired;

/// A foreign namespace, or the volumes of a namespace waiting for deletion, are not watched:
/// look again this soon.
const UNWATCHED_RECHECK: Duration = Duration::from_secs(60);

/// The conditions of the parts applied inside the tenant's namespaces, with their success.
const CHILD_PARTS: [(Part, &str, &str, &str); 3] = [
    (
        Part::Network,
        cond::NETWORK_ISOLATED,
        "PoliciesApplied",
        "default-deny, same-tenant, DNS and listed allow policies are in place in every tenant namespace",
    ),
    (
        Part::Access,
        cond::ACCESS_BOUND,
        "BindingsApplied",
        "admins, editors and viewers are bound to admin, edit and view in every tenant namespace",
    ),
    (
        Part::Quota,
        cond::QUOTA_APPLIED,
        "QuotaApplied",
        "ResourceQuota, LimitRange and workload ServiceAccount are in place in every tenant namespace",
    ),
];

/// The AWS conditions, in the order the cloud layer reports them.
const AWS_PARTS: [&str; 4] = [cond::IDENTITY_READY, cond::KEY_READY, cond::BUCKET_READY, cond::BUCKET_SECURED];

/// Reconcile entry point: malformed objects are reported, valid ones go through the finalizer.
pub(crate) async fn reconcile(guard: Arc<DeserializeGuard<ImagingTenant>>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    ctx.metrics.reconciled(if result.is_ok() { "ok" } else { "error" }, started.elapsed());
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer { tenant: name, message: other.to_string() },
    })
}

/// Back-off per tenant on errors that escape the pipeline (status writes, finalizer, cleanup).
pub(crate) fn error_policy(guard: Arc<DeserializeGuard<ImagingTenant>>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.category());
    let uid = guard.meta().uid.clone().unwrap_or_default();
    let delay = ctx.backoff.next(&uid);
    warn!(tenant = %guard.name_any(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The desired state, applied.
async fn apply(tenant: &ImagingTenant, ctx: &Context) -> Result<Action, Error> {
    let uid = tenant_uid(tenant);
    let objects = desired::objects(tenant, &ctx.settings);
    let wanted: BTreeSet<String> = tenant.namespace_names().into_iter().collect();
    let mut changes = Changes::default();
    let previous = write_first_seen(tenant, ctx).await?;

    let others: Vec<String> = ctx
        .tenants
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|t| t.metadata.uid != tenant.metadata.uid)
        .map(|t| t.name_any())
        .collect();
    let own = tenant.name_any();
    let reserved = |ns: &str| namespaces::reserved_by(ns, &own, &others);
    let claims = namespaces::claim(&ctx.client, &ctx.stores, uid, &objects.namespaces, reserved, &mut changes).await?;
    report_conflicts(tenant, ctx, &claims).await;
    let holding_volumes = retire_removed_namespaces(tenant, ctx, &wanted, &mut changes).await?;
    let applied = children::apply(&ctx.client, &ctx.stores, uid, &claims.owned, &objects, &mut changes).await;
    let layers = ctx.guard.layers();
    let owned: Vec<String> = claims.owned.iter().cloned().collect();
    let cluster_policy = guard::apply(&ctx.client, &layers, tenant, &owned, &mut changes).await;
    ctx.events.changes(tenant, &changes, is_restoring(tenant)).await;
    let aws = verify_aws(tenant, ctx, &claims, wanted.len(), &changes.repairs).await;

    let waiting = claims.incomplete(wanted.len());
    let mut verdicts = vec![status::namespaces_verdict(&claims)];
    verdicts.extend(CHILD_PARTS.iter().map(|(part, type_, reason, message)| {
        status::part_verdict(type_, applied.error(*part), waiting, reason, message)
    }));
    let policy_name = cluster_network::name(tenant);
    verdicts.push(guard::verdict(&layers, cluster_policy.as_ref().copied(), ctx.guard.allow_unguarded, &policy_name));
    verdicts.extend(aws.verdicts);
    verdicts.extend(volumes_verdict(&holding_volumes));
    let guarding = status::Guarding {
        layers: guard::active_layers(&layers, cluster_policy.as_ref().ok().copied().flatten()),
        optional: ctx.guard.allow_unguarded,
    };
    write_status(tenant, ctx, previous.as_ref(), verdicts, &claims.owned, aws.ids, guarding).await?;

    // Failed steps are counted by category, AWS's by error class (access_denied, throttled, ...).
    let failures = claims.error.iter().chain(applied.errors()).chain(cluster_policy.as_ref().err());
    for category in failures.map(Error::category).chain(aws.failure) {
        ctx.metrics.failed(category);
    }
    let pass = Pass {
        retryable_failure: applied.errors().chain(claims.error.as_ref()).any(Error::is_retryable)
            || cluster_policy.as_ref().is_err_and(Error::is_retryable)
            || aws.retryable_failure,
        terminating: !claims.terminating.is_empty(),
        unwatched_wait: !claims.conflicts.is_empty() || !claims.reserved.is_empty() || !holding_volumes.is_empty(),
    };
    Ok(match next_action(&pass, ctx.resync_interval) {
        Next::Backoff => {
            let delay = ctx.backoff.next(uid);
            info!(retry_in = ?delay, "some parts failed; retrying with back-off");
            Action::requeue(delay)
        }
        Next::Requeue(after) => {
            ctx.backoff.reset(uid);
            // Back at the tenant's slot for its next AWS verification (spread over the interval),
            // or sooner to read again what the report shows as found changed and restored (one
            // already due waits for a pass that can read it).
            let due = ctx.aws_checks.due_in(uid, ctx.resync_interval);
            let after = if due.is_zero() { after } else { after.min(due) };
            let recheck = ctx.reports.recheck_in(uid).filter(|r| !r.is_zero()).map(|r| r.max(Duration::from_secs(1)));
            Action::requeue(recheck.map_or(after, |r| after.min(r)))
        }
    })
}

/// A tenant without conditions gets its first status before any other work, so that whoever
/// waits on it sees at once that the operator took it up. Returns the status now stored.
async fn write_first_seen(tenant: &ImagingTenant, ctx: &Context) -> Result<Option<ImagingTenantStatus>, Error> {
    match &tenant.status {
        Some(s) if !s.conditions.is_empty() => Ok(Some(s.clone())),
        stored => {
            let mut first = status::first_seen(tenant);
            if let Some(s) = stored {
                // AWS IDs recorded before a crash stay.
                (first.bucket, first.key, first.role) = (s.bucket.clone(), s.key.clone(), s.role.clone());
            }
            status::write_if_changed(&ctx.client, tenant, stored.as_ref(), &first).await?;
            Ok(Some(first))
        }
    }
}

/// A namespace of someone else is reported, never taken over.
async fn report_conflicts(tenant: &ImagingTenant, ctx: &Context, claims: &Claims) {
    if claims.conflicts.is_empty() {
        return;
    }
    let names: Vec<&str> = claims.conflicts.iter().map(|(n, _)| n.as_str()).collect();
    let note =
        format!("namespaces {} exist and do not belong to this tenant; they were not modified", names.join(", "));
    ctx.events.publish(tenant, EventType::Warning, "NamespaceConflict", "ClaimNamespace", note).await;
}

/// Namespaces dropped from the spec follow the deletion policy; under `Delete`, one that still
/// holds PersistentVolumeClaims is kept. Returns those, with their claim counts.
async fn retire_removed_namespaces(
    tenant: &ImagingTenant,
    ctx: &Context,
    wanted: &BTreeSet<String>,
    changes: &mut Changes,
) -> Result<Vec<(String, usize)>, Error> {
    let uid = tenant_uid(tenant);
    let mut holding = Vec::new();
    for ns in namespaces::removed_from_spec(&ctx.stores, uid, wanted) {
        let policy = tenant.spec.deletion_policy;
        if let Retired::HoldsVolumes(claims) =
            namespaces::retire(&ctx.client, uid, &ns, policy, Volumes::Keep, changes).await?
        {
            holding.push((ns, claims));
        }
    }
    Ok(holding)
}

/// `DeletionBlocked` while a namespace dropped from the spec waits for its volumes to go.
fn volumes_verdict(holding: &[(String, usize)]) -> Option<Verdict> {
    let list: Vec<String> = holding
        .iter()
        .map(|(ns, n)| format!("{ns} ({n} PersistentVolumeClaim{})", if *n == 1 { "" } else { "s" }))
        .collect();
    (!list.is_empty()).then(|| {
        Verdict::ok(
            cond::DELETION_BLOCKED,
            "NamespaceHoldsVolumes",
            format!(
                "namespaces dropped from spec.namespaces still hold volumes and are kept: {}; the operator deletes a namespace only once it holds no PersistentVolumeClaim: move or delete the claims, or put the namespace back in spec.namespaces",
                list.join(", ")
            ),
        )
    })
}

/// The spec did not change since the last status: what was created now had been deleted.
fn is_restoring(tenant: &ImagingTenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| s.observed_generation == tenant.metadata.generation)
}

/// What the AWS step found.
struct AwsOutcome {
    verdicts: Vec<Verdict>,
    ids: CloudIds,
    retryable_failure: bool,
    /// The category of the first AWS failure of this pass, when AWS was called.
    failure: Option<&'static str>,
}

/// AWS is provisioned only with every namespace owned, so the role's trust policy never names a
/// namespace that belongs to someone else. It is read again when due (resync, spec change,
/// request, failure); in between, the last verification stands. The controls are judged after
/// each verification, after a pass that repaired an object in a tenant namespace (`repaired`),
/// and when what such a pass published as failing is due to be read again.
async fn verify_aws(
    tenant: &ImagingTenant,
    ctx: &Context,
    claims: &Claims,
    wanted: usize,
    repaired: &[ObjectRepair],
) -> AwsOutcome {
    let uid = tenant_uid(tenant);
    let previous = tenant.status.clone().unwrap_or_default();
    let known = CloudIds::of(&previous);
    let pending = |reason: &str, message: &str| AwsOutcome {
        verdicts: AWS_PARTS.iter().map(|part| Verdict::failed(part, reason, message)).collect(),
        ids: known.clone(),
        retryable_failure: false,
        failure: None,
    };
    if claims.incomplete(wanted) || claims.owned.is_empty() {
        return pending(
            "WaitingForNamespaces",
            "AWS resources are provisioned once every namespace in spec.namespaces belongs to this tenant",
        );
    }
    if ctx.aws_checks.last(uid).is_none()
        && let Some(recorded) = recorded_verification(tenant)
    {
        ctx.aws_checks.seed(tenant, uid, &recorded, &known, ctx.resync_interval);
    }
    // A change made while the spec is unchanged is drift; one following the spec is not.
    let drift = |aws: &[Repair]| if is_restoring(tenant) { detection::detections(aws, repaired) } else { Vec::new() };
    if !ctx.aws_checks.due(tenant, uid, ctx.resync_interval) {
        if let Some(detections) = ctx.reports.to_publish(uid, drift(&[]), false, Instant::now()) {
            super::reports::publish(tenant, ctx, &detections).await;
        }
        return match ctx.aws_checks.last(uid) {
            Some(last) => {
                AwsOutcome { verdicts: last.verdicts, ids: last.ids, retryable_failure: false, failure: None }
            }
            None => pending("Pending", "AWS resources were not verified yet"),
        };
    }
    let mut scoped = tenant.clone();
    scoped.spec.namespaces.retain(|n| claims.owned.contains(&n.name));
    let mut progress = status::StatusProgress::new(ctx.client.clone(), tenant.name_any());
    // Converging reads every setting; the controls then read the same settings, which AWS
    // answers once unless something was written in between.
    let (ids, verdicts, error) = crate::cloud::reading_once(async {
        let CloudReport { ids, verdicts, events, repairs, error } =
            ctx.cloud.provision(&scoped, &ctx.settings, &known, &mut progress).await;
        for e in events {
            ctx.events.publish(tenant, EventType::Normal, e.reason, "ReconcileAws", e.note).await;
        }
        ctx.aws_checks.record(tenant, uid, &verdicts, &ids);
        let detections = ctx.reports.to_publish(uid, drift(&repairs), true, Instant::now()).unwrap_or_default();
        super::reports::publish(tenant, ctx, &detections).await;
        (ids, verdicts, error)
    })
    .await;
    AwsOutcome {
        verdicts,
        ids,
        retryable_failure: error.as_ref().is_some_and(|e| e.is_retryable()),
        failure: error.as_ref().map(|e| e.category()),
    }
}

/// The AWS verdicts a Ready tenant's status records for its current generation: what a restarted
/// operator takes as the last verification (each tenant is then verified at its own slot of the
/// resync interval, not all at once).
fn recorded_verification(tenant: &ImagingTenant) -> Option<Vec<Verdict>> {
    let status = tenant.status.as_ref()?;
    if status.observed_generation != tenant.metadata.generation || !cond::is_true(&status.conditions, cond::READY) {
        return None;
    }
    AWS_PARTS
        .iter()
        .map(|part| {
            let c = cond::find(&status.conditions, part)?;
            (c.status == "True").then(|| Verdict::ok(part, c.reason.clone(), c.message.clone()))
        })
        .collect()
}

/// The status from the verdicts, written only when it differs from the stored one.
async fn write_status(
    tenant: &ImagingTenant,
    ctx: &Context,
    stored: Option<&ImagingTenantStatus>,
    verdicts: Vec<Verdict>,
    owned: &BTreeSet<String>,
    ids: CloudIds,
    guarding: status::Guarding,
) -> Result<(), Error> {
    let previous = stored.cloned().unwrap_or_default();
    let next = status::build(tenant, &previous, verdicts, owned, ids, guarding);
    ctx.metrics.tenant_ready(tenant_uid(tenant), cond::is_true(&next.conditions, cond::READY));
    ctx.metrics.tenant_conditions(tenant_uid(tenant), &tenant.name_any(), &next.conditions);
    status::write_if_changed(&ctx.client, tenant, stored, &next).await?;
    Ok(())
}

/// What one pass of `apply` came to, as far as the next pass is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pass {
    /// Something failed that may pass on a later try without anyone changing anything.
    retryable_failure: bool,
    /// A namespace of the tenant is still being deleted and must be created again.
    terminating: bool,
    /// Waiting on something no watch reports: a namespace of the spec that belongs to someone
    /// else, or one dropped from the spec that still holds volumes.
    unwatched_wait: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Try again after the tenant's back-off.
    Backoff,
    /// All went as far as it can: look again after this long (and on any watch event).
    Requeue(Duration),
}

/// The next action after a pass: back off while something retryable failed or a namespace is
/// terminating; look again soon at what no watch reports; otherwise wait for the resync.
fn next_action(pass: &Pass, resync_interval: Duration) -> Next {
    if pass.retryable_failure || pass.terminating {
        Next::Backoff
    } else if pass.unwatched_wait {
        Next::Requeue(resync_interval.min(UNWATCHED_RECHECK))
    } else {
        Next::Requeue(resync_interval)
    }
}

/// The tenant is being deleted: follow `deletionPolicy`. Returning an error keeps the finalizer,
/// so a blocked deletion is retried with back-off.
async fn cleanup(tenant: &ImagingTenant, ctx: &Context) -> Result<Action, Error> {
    let uid = tenant_uid(tenant);
    let mut changes = Changes::default();
    for ns in namespaces::labelled(&ctx.stores, uid) {
        let policy = tenant.spec.deletion_policy;
        namespaces::retire(&ctx.client, uid, &ns.name_any(), policy, Volumes::DeleteWithNamespace, &mut changes)
            .await?;
    }
    guard::retire(&ctx.client, tenant, tenant.spec.deletion_policy == DeletionPolicy::Delete).await?;
    ctx.events.changes(tenant, &changes, false).await;

    let previous = tenant.status.clone().unwrap_or_default();
    let known = CloudIds::of(&previous);
    match ctx.cloud.retire(tenant, &ctx.settings, &known).await {
        Retirement::Done { events } => {
            for e in events {
                ctx.events.publish(tenant, EventType::Normal, e.reason, "Retire", e.note).await;
            }
            ctx.forget(uid);
            info!(policy = ?tenant.spec.deletion_policy, "tenant retired");
            Ok(Action::await_change())
        }
        Retirement::Blocked { verdict, events } => {
            for e in events {
                ctx.events.publish(tenant, EventType::Warning, e.reason, "Retire", e.note).await;
            }
            write_deletion_blocked(tenant, ctx, &previous, &verdict).await?;
            Err(Error::DeletionBlocked { tenant: tenant.name_any(), message: verdict.message })
        }
        Retirement::Failed(e) => Err(Error::Cloud(e)),
    }
}

async fn write_deletion_blocked(
    tenant: &ImagingTenant,
    ctx: &Context,
    previous: &ImagingTenantStatus,
    verdict: &Verdict,
) -> Result<(), Error> {
    let mut blocked = previous.clone();
    status::set_deletion_blocked(&mut blocked, tenant, verdict);
    status::write_if_changed(&ctx.client, tenant, tenant.status.as_ref(), &blocked).await?;
    Ok(())
}

fn tenant_uid(tenant: &ImagingTenant) -> &str {
    tenant.metadata.uid.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(600);

    #[test]
    fn a_clean_pass_waits_for_the_resync() {
        assert_eq!(next_action(&Pass::default(), RESYNC), Next::Requeue(RESYNC));
    }

    #[test]
    fn retryable_failures_and_terminating_namespaces_back_off() {
        let failed = Pass { retryable_failure: true, ..Pass::default() };
        assert_eq!(next_action(&failed, RESYNC), Next::Backoff);
        let terminating = Pass { terminating: true, unwatched_wait: true, ..Pass::default() };
        assert_eq!(next_action(&terminating, RESYNC), Next::Backoff);
    }

    #[test]
    fn a_conflict_or_a_namespace_holding_volumes_is_looked_at_again_within_a_minute() {
        let conflict = Pass { unwatched_wait: true, ..Pass::default() };
        assert_eq!(next_action(&conflict, RESYNC), Next::Requeue(UNWATCHED_RECHECK));
        assert_eq!(next_action(&conflict, Duration::from_secs(20)), Next::Requeue(Duration::from_secs(20)));
    }
}
