//! The guard: the isolation layers the cluster enforces beside the NetworkPolicies, so that no one
//! inside a tenant, and no stolen operator token, can undo what the operator builds.
//!
//! - the chart's ValidatingAdmissionPolicies, each installed and bound with `Deny`;
//! - the Admin-tier network layer, where the cluster serves `ClusterNetworkPolicy` (or its
//!   predecessor `AdminNetworkPolicy`): one policy per tenant, kept by [`apply`].
//!
//! What the cluster offers is read at start-up and again every [`RECHECK`] (so a CRD installed
//! or an admission policy removed is noticed); when it changes, every tenant is reconciled again
//! and its `Guarded` condition says which layers are active.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::children::Changes;
use super::error::Error;
use crate::api::ImagingTenant;
use crate::api::condition::{self as cond, Verdict};
use crate::api::metadata::{
    ADMISSION_GUARDS, FIELD_MANAGER, GUARD_LABEL, MANAGED_BY_LABEL, RETAINED_LABEL, TENANT_UID_LABEL,
};
use crate::desired::cluster_network::{self, Flavor};

/// How often the cluster's guard layers are read again.
pub(crate) const RECHECK: Duration = Duration::from_secs(20);

/// The admission layer as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Every guard is installed and bound with Deny.
    Active,
    /// These guards are missing, or not bound with Deny.
    Missing(Vec<&'static str>),
    /// The API server does not serve ValidatingAdmissionPolicies (Kubernetes older than 1.30).
    Unsupported,
    /// They could not be read (for example the operator may not list them).
    Unreadable(String),
}

/// What the cluster enforces beside NetworkPolicies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layers {
    pub(crate) admission: Admission,
    /// The policy kinds of the Admin-tier network layer the cluster serves, preferred first.
    pub(crate) network: Vec<Flavor>,
}

impl Default for Layers {
    fn default() -> Self {
        Layers { admission: Admission::Unreadable("not read yet".into()), network: Vec::new() }
    }
}

/// The last reading, shared by every reconcile.
#[derive(Clone, Default)]
pub(crate) struct Guard {
    layers: Arc<RwLock<Layers>>,
    /// `--allow-unguarded`: Ready does not wait for the admission layer.
    pub(crate) allow_unguarded: bool,
}

impl Guard {
    pub(crate) fn layers(&self) -> Layers {
        self.layers.read().expect("guard lock").clone()
    }

    fn set(&self, layers: Layers) -> bool {
        let mut current = self.layers.write().expect("guard lock");
        let changed = *current != layers;
        *current = layers;
        changed
    }
}

/// Reads the layers once now, then keeps reading them; every change sends one item on the
/// returned stream (the controller reconciles every tenant on it).
pub(crate) async fn start(
    client: Client,
    allow_unguarded: bool,
    kinds: Vec<Flavor>,
) -> (Guard, mpsc::UnboundedReceiver<()>) {
    let guard = Guard { allow_unguarded, ..Guard::default() };
    let first = read(&client, &kinds, &Layers::default()).await;
    log(&first);
    guard.set(first);
    let (tx, rx) = mpsc::unbounded();
    let shared = guard.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECHECK).await;
            let next = read(&client, &kinds, &shared.layers()).await;
            if shared.set(next.clone()) {
                log(&next);
                if tx.unbounded_send(()).is_err() {
                    return;
                }
            }
        }
    });
    (guard, rx)
}

fn log(layers: &Layers) {
    match &layers.admission {
        Admission::Active => info!(network = ?layers.network, "admission guard active"),
        other => warn!(admission = ?other, network = ?layers.network, "admission guard not active"),
    }
}

/// One reading. A layer that cannot be read keeps its previous reading for the network kinds
/// (a passing API hiccup must not make the operator drop its policies).
async fn read(client: &Client, kinds: &[Flavor], previous: &Layers) -> Layers {
    let network = match served_flavors(client, kinds).await {
        Ok(served) => served,
        Err(e) => {
            warn!(error = %e, "could not read which network policy kinds the cluster serves; keeping the last reading");
            previous.network.clone()
        }
    };
    Layers { admission: admission(client).await, network }
}

/// Of the kinds the operator may use (`--cluster-network-policy-kind`), those served.
async fn served_flavors(client: &Client, kinds: &[Flavor]) -> Result<Vec<Flavor>, kube::Error> {
    let mut served = Vec::new();
    for &flavor in kinds {
        let group_version = format!("{}/{}", Flavor::GROUP, flavor.version());
        match client.list_api_group_resources(&group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == flavor.plural()) => served.push(flavor),
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(served)
}

async fn admission(client: &Client) -> Admission {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let listed = match policies.list(&ListParams::default().labels(GUARD_LABEL)).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Admission::Unsupported,
        Err(e) => return Admission::Unreadable(format!("listing ValidatingAdmissionPolicies: {e}")),
    };
    let bound = match bindings.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return Admission::Unreadable(format!("listing ValidatingAdmissionPolicyBindings: {e}")),
    };
    admission_from(&listed, &bound)
}

/// Pure: which guards are installed (failure policy Fail) and bound with Deny.
pub(crate) fn admission_from(
    policies: &[ValidatingAdmissionPolicy],
    bindings: &[ValidatingAdmissionPolicyBinding],
) -> Admission {
    let active = |guard: &str| {
        policies.iter().any(|p| {
            let failing_closed = p.spec.as_ref().and_then(|s| s.failure_policy.as_deref()).unwrap_or("Fail") == "Fail";
            p.labels().get(GUARD_LABEL).map(String::as_str) == Some(guard)
                && failing_closed
                && bindings.iter().any(|b| {
                    b.spec.policy_name == p.name_any() && b.spec.validation_actions.iter().any(|a| a == "Deny")
                })
        })
    };
    let missing: Vec<&'static str> = ADMISSION_GUARDS.iter().copied().filter(|g| !active(g)).collect();
    if missing.is_empty() { Admission::Active } else { Admission::Missing(missing) }
}

/// Keeps the tenant's Admin-tier network policy, in the preferred kind the cluster serves, for
/// the namespaces it owns; removes one of a kind no longer preferred. Returns the kind in place.
pub(crate) async fn apply(
    client: &Client,
    layers: &Layers,
    tenant: &ImagingTenant,
    owned: &[String],
    changes: &mut Changes,
) -> Result<Option<Flavor>, Error> {
    let uid = tenant.metadata.uid.as_deref().unwrap_or_default();
    let name = cluster_network::name(tenant);
    let mut in_place = None;
    for (i, flavor) in layers.network.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &flavor.api_resource());
        let what = format!("{} {name}", flavor.kind());
        let live = api.get_opt(&name).await.map_err(|source| Error::Observe { what: what.clone(), source })?;
        if let Some(live) = &live
            && live.labels().get(TENANT_UID_LABEL).map(String::as_str) != Some(uid)
        {
            return Err(Error::ClusterPolicyConflict { what });
        }
        let wanted = i == 0 && !owned.is_empty();
        if !wanted {
            if live.is_some() {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|source| Error::Remove { what: what.clone(), source })?;
                changes.removed.push(what);
            }
            continue;
        }
        let desired = cluster_network::policy(tenant, owned, *flavor);
        if !live.as_ref().is_some_and(|l| matches(l, &desired)) {
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
                .await
                .map_err(|source| Error::Apply { what: what.clone(), source })?;
            match live {
                Some(_) => changes.repaired.push(what),
                None => changes.created(what, None),
            }
        }
        in_place = Some(*flavor);
    }
    Ok(in_place)
}

/// The live policy has the desired spec and labels.
fn matches(live: &DynamicObject, desired: &Value) -> bool {
    let labels_match = desired["metadata"]["labels"]
        .as_object()
        .is_some_and(|want| want.iter().all(|(k, v)| live.labels().get(k).map(|l| json!(l)) == Some(v.clone())));
    labels_match && live.data.get("spec") == desired.get("spec")
}

/// The tenant is gone: under Delete its policy goes; under Retain it stays, marked retained, so
/// the retained namespaces stay isolated.
pub(crate) async fn retire(client: &Client, tenant: &ImagingTenant, delete: bool) -> Result<(), Error> {
    let uid = tenant.metadata.uid.as_deref().unwrap_or_default();
    let name = cluster_network::name(tenant);
    for flavor in Flavor::ALL {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &flavor.api_resource());
        let what = format!("{} {name}", flavor.kind());
        let live = match api.get_opt(&name).await {
            Ok(live) => live,
            // Not served: nothing of this kind can exist.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(source) => return Err(Error::Observe { what, source }),
        };
        let Some(live) = live.filter(|l| l.labels().get(TENANT_UID_LABEL).map(String::as_str) == Some(uid)) else {
            continue;
        };
        let result = if delete {
            api.delete(&name, &DeleteParams::default()).await.map(|_| ())
        } else {
            let patch = json!({"metadata": {"labels": {RETAINED_LABEL: "true", MANAGED_BY_LABEL: null}}});
            api.patch(&live.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Remove { what, source }),
        }
    }
    Ok(())
}

/// The `Guarded` condition: True when the admission guard is active and, where the cluster
/// serves it, the Admin-tier network policy is in place.
pub(crate) fn verdict(
    layers: &Layers,
    network: Result<Option<Flavor>, &Error>,
    allow_unguarded: bool,
    policy_name: &str,
) -> Verdict {
    let network_text = match network {
        Err(e @ Error::ClusterPolicyConflict { .. }) => {
            return Verdict::failed(cond::GUARDED, "ClusterNetworkPolicyConflict", e.to_string()).stalled_if(true);
        }
        Err(e) => {
            return Verdict::failed(cond::GUARDED, "ClusterNetworkPolicyFailed", e.to_string())
                .stalled_if(!e.is_retryable());
        }
        Ok(Some(flavor)) => format!(
            "{} {policy_name} (Admin tier, evaluated before any NetworkPolicy) denies other namespaces and metadata addresses",
            flavor.kind(),
        ),
        Ok(None) if !layers.network.is_empty() => {
            return Verdict::failed(
                cond::GUARDED,
                "WaitingForNamespaces",
                format!("{policy_name} is applied once the tenant owns its namespaces; see NamespacesReady"),
            );
        }
        Ok(None) => {
            "the cluster serves no ClusterNetworkPolicy or AdminNetworkPolicy, so NetworkPolicies are the network layer"
                .to_string()
        }
    };
    let unguarded = |reason: &str, problem: String| {
        let tail = if allow_unguarded {
            " Running without it is allowed by --allow-unguarded, so Ready does not wait for it."
        } else {
            ""
        };
        // Installing, binding or reading the policies is for a person to do.
        Verdict::failed(cond::GUARDED, reason, format!("{problem}; {network_text}.{tail}")).stalled_if(true)
    };
    match &layers.admission {
        Admission::Active => Verdict::ok(
            cond::GUARDED,
            "Guarded",
            format!(
                "the admission policies are installed and bound: nobody inside the tenant can change what the operator keeps or open its isolation; {network_text}"
            ),
        ),
        Admission::Missing(missing) => unguarded(
            "AdmissionPoliciesMissing",
            format!(
                "the admission policies {} are not installed or not bound with validationActions [Deny]: a tenant admin could undo the isolation. Install the Helm chart with admission.enabled=true (Kubernetes 1.30 or newer)",
                missing.join(", ")
            ),
        ),
        Admission::Unsupported => unguarded(
            "AdmissionPoliciesUnsupported",
            "this API server does not serve ValidatingAdmissionPolicies (Kubernetes 1.30 or newer): a tenant admin could undo the isolation. Upgrade the cluster, or run with --allow-unguarded to accept that".to_string(),
        ),
        Admission::Unreadable(e) => unguarded(
            "AdmissionPoliciesUnreadable",
            format!("the admission policies could not be read ({e}): give the operator get/list on validatingadmissionpolicies and validatingadmissionpolicybindings, as the chart's ClusterRole does"),
        ),
    }
}

/// The layers in force for a tenant, for `status.isolationLayers`.
pub(crate) fn active_layers(layers: &Layers, network: Option<Flavor>) -> Vec<String> {
    let mut out = vec!["NetworkPolicy".to_string()];
    if layers.admission == Admission::Active {
        out.push("ValidatingAdmissionPolicy".to_string());
    }
    if let Some(flavor) = network {
        out.push(flavor.kind().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, guard: &str, failure: Option<&str>) -> ValidatingAdmissionPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {GUARD_LABEL: guard}},
            "spec": {"failurePolicy": failure},
        }))
        .unwrap()
    }

    fn binding(policy: &str, actions: &[&str]) -> ValidatingAdmissionPolicyBinding {
        serde_json::from_value(json!({
            "metadata": {"name": policy},
            "spec": {"policyName": policy, "validationActions": actions},
        }))
        .unwrap()
    }

    fn all() -> (Vec<ValidatingAdmissionPolicy>, Vec<ValidatingAdmissionPolicyBinding>) {
        let policies = ADMISSION_GUARDS.iter().map(|g| policy(&format!("rel-{g}"), g, None)).collect();
        let bindings = ADMISSION_GUARDS.iter().map(|g| binding(&format!("rel-{g}"), &["Deny"])).collect();
        (policies, bindings)
    }

    #[test]
    fn every_guard_bound_with_deny_is_active() {
        let (p, b) = all();
        assert_eq!(admission_from(&p, &b), Admission::Active);
    }

    #[test]
    fn a_guard_without_binding_audit_only_or_failing_open_is_missing() {
        let (mut p, mut b) = all();
        b.retain(|b| b.name_any() != "rel-tenant-irsa");
        b[0] = binding("rel-operator-owned", &["Audit", "Warn"]);
        p[1] = policy("rel-tenant-namespaces", "tenant-namespaces", Some("Ignore"));
        assert_eq!(
            admission_from(&p, &b),
            Admission::Missing(vec!["operator-owned", "tenant-namespaces", "tenant-irsa"])
        );
        assert_eq!(admission_from(&[], &[]), Admission::Missing(ADMISSION_GUARDS.to_vec()));
    }

    #[test]
    fn guarded_is_true_only_with_the_admission_layer() {
        let active = Layers { admission: Admission::Active, network: vec![Flavor::ClusterNetworkPolicy] };
        let v = verdict(&active, Ok(Some(Flavor::ClusterNetworkPolicy)), false, "imaging-tenant-a");
        assert!(v.ok, "{v:?}");
        assert!(v.message.contains("ClusterNetworkPolicy"));
        let missing = Layers { admission: Admission::Missing(vec!["tenant-irsa"]), network: vec![] };
        let v = verdict(&missing, Ok(None), false, "imaging-tenant-a");
        assert!(!v.ok);
        assert_eq!(v.reason, "AdmissionPoliciesMissing");
        assert!(v.message.contains("admission.enabled=true"), "{}", v.message);
        let allowed =
            verdict(&Layers { admission: Admission::Unsupported, network: vec![] }, Ok(None), true, "imaging-tenant-a");
        assert!(!allowed.ok);
        assert!(allowed.message.contains("--allow-unguarded"), "{}", allowed.message);
        assert_eq!(
            active_layers(&active, Some(Flavor::ClusterNetworkPolicy)),
            ["NetworkPolicy", "ValidatingAdmissionPolicy", "ClusterNetworkPolicy"]
        );
    }
}
