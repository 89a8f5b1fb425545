//! Status: conditions from the pipeline's verdicts, written only when something changed, and IDs
//! of AWS resources recorded the moment they exist.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::error::{Error, kube_message, kube_reason};
use super::namespaces::Claims;
use crate::api::condition::{self as cond, Verdict};
use crate::api::metadata::FIELD_MANAGER;
use crate::api::{ImagingTenant, ImagingTenantStatus};
use crate::cloud::{CloudIds, Progress};

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// NamespacesReady: conflicts first, then namespaces still terminating, then errors.
pub(crate) fn namespaces_verdict(claims: &Claims) -> Verdict {
    let Claims { owned, conflicts, reserved, terminating, error } = claims;
    if let Some((name, other)) = reserved.first() {
        return Verdict::failed(
            cond::NAMESPACES_READY,
            "NamespaceConflict",
            format!(
                "namespace {name} is reserved for tenant '{other}': a tenant's namespaces are its name or start with '<its name>-', and '{other}' is the more specific name; it was not created. Choose another name in spec.namespaces"
            ),
        )
        .stalled_if(true);
    }
    if let Some((name, owner)) = conflicts.first() {
        let whose = match owner {
            Some(other) => format!("it belongs to tenant '{other}'"),
            None => "it was not created by the operator for this tenant".to_string(),
        };
        let others = if conflicts.len() > 1 { format!(" (and {} more)", conflicts.len() - 1) } else { String::new() };
        return Verdict::failed(
            cond::NAMESPACES_READY,
            "NamespaceConflict",
            format!(
                "namespace {name} already exists and {whose}{others}; it was left untouched. Choose another name in spec.namespaces, or have its owner remove it"
            ),
        )
        .stalled_if(true);
    }
    if let Some(name) = terminating.first() {
        return Verdict::failed(
            cond::NAMESPACES_READY,
            "NamespaceTerminating",
            format!("namespace {name} is being deleted; it is created again once it is gone"),
        );
    }
    if let Some(e) = error {
        return error_verdict(cond::NAMESPACES_READY, e);
    }
    let list: Vec<&str> = owned.iter().map(String::as_str).collect();
    Verdict::ok(
        cond::NAMESPACES_READY,
        "NamespacesOwned",
        format!("namespaces {} exist and belong to this tenant", list.join(", ")),
    )
}

/// A failed part; one that retrying cannot fix stalls the tenant.
fn error_verdict(type_: &'static str, error: &Error) -> Verdict {
    let verdict = match error {
        Error::Observe { what, source } | Error::Apply { what, source } | Error::Remove { what, source } => {
            Verdict::failed(type_, kube_reason(source), format!("{what}: {}", kube_message(source)))
        }
        other => Verdict::failed(type_, "Error", other.to_string()),
    };
    verdict.stalled_if(!error.is_retryable())
}

/// The verdict of one part applied inside the tenant's namespaces.
pub(crate) fn part_verdict(
    type_: &'static str,
    error: Option<&Error>,
    waiting: bool,
    ok_reason: &str,
    ok_message: &str,
) -> Verdict {
    match error {
        Some(e) => error_verdict(type_, e),
        None if waiting => Verdict::failed(
            type_,
            "WaitingForNamespaces",
            "applied only in the namespaces that belong to this tenant; see NamespacesReady",
        ),
        None => Verdict::ok(type_, ok_reason, ok_message),
    }
}

/// The next status: verdicts in the fixed order of `PARTS`, then Ready, Reconciling and Stalled,
/// timestamps kept where nothing changed.
pub(crate) fn build(
    tenant: &ImagingTenant,
    previous: &ImagingTenantStatus,
    mut verdicts: Vec<Verdict>,
    owned: &BTreeSet<String>,
    ids: CloudIds,
    guard: Guarding,
) -> ImagingTenantStatus {
    verdicts.sort_by_key(|v| cond::PARTS.iter().position(|p| *p == v.type_).unwrap_or(usize::MAX));
    let optional: &[&str] = if guard.optional { &[cond::GUARDED] } else { &[] };
    let ready = cond::ready(&verdicts, optional);
    let progress = cond::progress(&verdicts, &ready, optional);
    verdicts.push(ready);
    verdicts.extend(progress);
    ImagingTenantStatus {
        observed_generation: tenant.metadata.generation,
        conditions: cond::merge(&previous.conditions, &verdicts, tenant.metadata.generation, &now()),
        namespaces: owned.iter().cloned().collect(),
        isolation_layers: guard.layers,
        bucket: ids.bucket,
        key: ids.key,
        role: ids.role,
        replica: ids.replica.filter(|r| !r.is_empty()),
    }
}

/// The status of a tenant seen for the first time: Ready False and Reconciling True at its
/// generation, before any other work.
pub(crate) fn first_seen(tenant: &ImagingTenant) -> ImagingTenantStatus {
    ImagingTenantStatus {
        observed_generation: tenant.metadata.generation,
        conditions: cond::merge(&[], &cond::first_seen(), tenant.metadata.generation, &now()),
        ..ImagingTenantStatus::default()
    }
}

/// What the status says of the guard beside its condition.
pub(crate) struct Guarding {
    /// The layers in force.
    pub(crate) layers: Vec<String>,
    /// Ready does not wait for Guarded (`--allow-unguarded`).
    pub(crate) optional: bool,
}

/// Adds (or refreshes) the DeletionBlocked condition.
pub(crate) fn set_deletion_blocked(status: &mut ImagingTenantStatus, tenant: &ImagingTenant, verdict: &Verdict) {
    let mut verdicts: Vec<Verdict> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != cond::DELETION_BLOCKED)
        .filter_map(|c| {
            cond::PARTS.iter().chain(&[cond::READY, cond::RECONCILING, cond::STALLED]).find(|p| **p == c.type_).map(
                |p| Verdict {
                    type_: p,
                    ok: c.status == "True",
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    stalled: false,
                },
            )
        })
        .collect();
    // DeletionBlocked=True while the deletion waits (for example on a non-empty bucket).
    verdicts.push(Verdict { type_: cond::DELETION_BLOCKED, ..verdict.clone() });
    status.conditions = cond::merge(&status.conditions, &verdicts, tenant.metadata.generation, &now());
}

/// Writes the status only when it differs from what is stored (`previous`, `None` when there is
/// none yet): no write, no watch event, no reconcile storm.
pub(crate) async fn write_if_changed(
    client: &Client,
    tenant: &ImagingTenant,
    previous: Option<&ImagingTenantStatus>,
    next: &ImagingTenantStatus,
) -> Result<bool, Error> {
    if previous == Some(next) {
        return Ok(false);
    }
    let api: Api<ImagingTenant> = Api::all(client.clone());
    let patch = json!({
        "apiVersion": "imaging.tenancy.dev/v1alpha1",
        "kind": "ImagingTenant",
        "status": next,
    });
    api.patch_status(&tenant.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Status { tenant: tenant.name_any(), source })?;
    Ok(true)
}

/// Records AWS resource IDs in status as soon as the cloud layer reports them (crash safety:
/// a restarted operator finds them there before looking anywhere else).
pub(crate) struct StatusProgress {
    client: Client,
    tenant: String,
    recorded: CloudIds,
}

impl StatusProgress {
    pub(crate) fn new(client: Client, tenant: String) -> Self {
        StatusProgress { client, tenant, recorded: CloudIds::default() }
    }
}

#[async_trait::async_trait]
impl Progress for StatusProgress {
    async fn record(&mut self, ids: &CloudIds) -> Result<(), String> {
        if *ids == self.recorded {
            return Ok(());
        }
        let api: Api<ImagingTenant> = Api::all(self.client.clone());
        let patch = json!({"status": {"role": ids.role, "key": ids.key, "bucket": ids.bucket, "replica": ids.replica}});
        api.patch_status(&self.tenant, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("recording AWS resource IDs in the status of {}: {e}", self.tenant))?;
        self.recorded = ids.clone();
        Ok(())
    }
}
