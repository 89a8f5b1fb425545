//! The objects the operator keeps inside tenant namespaces. One list names their kinds; it
//! drives the watches, the caches, the order of applying and the detaching on retirement.
//!
//! Applying is server-side apply of what differs from the cache, then removal of the tenant's
//! labelled orphans of that kind (zookeeper-operator's cluster-resources idiom).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use super::error::Error;
use crate::api::ImagingTenant;
use crate::api::metadata::{FIELD_MANAGER, IRSA_ANNOTATION, TENANT_LABEL, TENANT_UID_LABEL};
use crate::desired::kubernetes::{TenantObjects, to_json};
use crate::metrics::Metrics;

/// The part of a tenant, and so the condition, that a kind of object counts towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// NetworkIsolated
    Network,
    /// AccessBound
    Access,
    /// QuotaApplied
    Quota,
}

/// The kinds the operator keeps inside each tenant namespace, in the order it applies them
/// (network isolation first, the workload ServiceAccount last), each with the part it belongs to.
/// Namespaces themselves are claimed, not applied: see `namespaces`.
macro_rules! with_child_kinds {
    ($then:ident) => {
        $then! {
            network_policies: NetworkPolicy => Network,
            role_bindings: RoleBinding => Access,
            resource_quotas: ResourceQuota => Quota,
            limit_ranges: LimitRange => Quota,
            service_accounts: ServiceAccount => Quota,
        }
    };
}

/// A watched tenant that one of its objects changed; what `Controller::reconcile_on` takes.
pub(crate) type Trigger = ObjectRef<DeserializeGuard<ImagingTenant>>;

macro_rules! child_kind_plumbing {
    ($($field:ident: $kind:ty => $part:ident,)*) => {
        /// Caches of the tenant's namespaces and objects, fed by label-selected watches; reads
        /// here cost no API call.
        #[derive(Clone)]
        pub(crate) struct Stores {
            pub(crate) namespaces: Store<Cached<Namespace>>,
            $(pub(crate) $field: Store<Cached<$kind>>,)*
        }

        impl Stores {
            /// One watch per kind, selected by `selector`: the caches, and one stream of the
            /// tenants whose objects changed.
            pub(crate) fn watch(
                client: &Client,
                selector: &str,
                metrics: &Arc<Metrics>,
            ) -> (Stores, BoxStream<'static, Trigger>) {
                let (namespaces, trigger) = watch_kind::<Namespace>(client, selector, metrics);
                let mut triggers = vec![trigger];
                $(
                    let ($field, trigger) = watch_kind::<$kind>(client, selector, metrics);
                    triggers.push(trigger);
                )*
                (Stores { namespaces, $($field,)* }, futures::stream::select_all(triggers).boxed())
            }

            /// Waits until every cache has its first full list; false if a watch stopped first.
            pub(crate) async fn synced(&self) -> bool {
                let mut all = synced(&self.namespaces).await;
                $(all &= synced(&self.$field).await;)*
                all
            }
        }

        /// Applies every kind of object of the tenant in its owned namespaces, in the list's
        /// order. Destructured without `..`: a new kind in `TenantObjects` must be listed.
        pub(crate) async fn apply(
            client: &Client,
            stores: &Stores,
            tenant_uid: &str,
            owned: &BTreeSet<String>,
            objects: &TenantObjects,
            changes: &mut Changes,
        ) -> Outcome {
            let TenantObjects { namespaces: _, $($field,)* } = objects;
            let mut outcome = Outcome::default();
            $(
                let result = converge_kind(client, &stores.$field, tenant_uid, owned, $field, changes).await;
                outcome.record(Part::$part, result);
            )*
            outcome
        }

        /// Cuts every owner reference to the tenant from its objects in namespace `ns` (objects
        /// of earlier versions had them), so the garbage collector never removes them.
        pub(crate) async fn detach(client: &Client, tenant_uid: &str, ns: &str) -> Result<(), Error> {
            $(detach_kind::<$kind>(client, tenant_uid, ns).await?;)*
            Ok(())
        }
    };
}

with_child_kinds!(child_kind_plumbing);

/// A label-selected, guarded watch of one kind feeding a cache, and the tenants its changes
/// concern. One malformed object cannot break the watch (`DeserializeGuard`).
fn watch_kind<K>(
    client: &Client,
    selector: &str,
    metrics: &Arc<Metrics>,
) -> (Store<Cached<K>>, BoxStream<'static, Trigger>)
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<DeserializeGuard<K>> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let metrics = metrics.clone();
    let watch = watcher(api, watcher::Config::default().labels(selector)).map_ok(compact);
    let triggers = reflector::reflector(writer, watch)
        .default_backoff()
        .touched_objects()
        .filter_map(move |event| {
            future::ready(match event {
                Ok(child) => child.tenant.as_deref().map(ObjectRef::new),
                Err(e) => {
                    metrics.watch_restarted();
                    warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; restarting it with back-off");
                    None
                }
            })
        })
        .boxed();
    (reader, triggers)
}

/// What a cache keeps of an object: its JSON without managed fields, kubectl's last applied
/// configuration, creation time, generation or status (the comparison with the desired object
/// reads none of them), parsed when it is looked at, and the few fields that pick it out. Kept
/// parsed, an object takes about three times the memory of its JSON.
pub(crate) struct Cached<K> {
    name: Box<str>,
    namespace: Option<Box<str>>,
    /// The tenant named by its tenant label, whose reconcile a change of it triggers.
    tenant: Option<Box<str>>,
    /// Its tenant UID label: which tenant owns it.
    tenant_uid: Option<Box<str>>,
    /// None for an object that could not be read as `K`: to the operator it is not there.
    json: Option<Box<str>>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Cached {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            tenant: self.tenant.clone(),
            tenant_uid: self.tenant_uid.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource + Serialize + DeserializeOwned> Cached<K> {
    fn new(object: DeserializeGuard<K>) -> Self {
        let json = match object.0 {
            Ok(mut obj) => {
                let meta = obj.meta_mut();
                prune_meta(meta);
                meta.creation_timestamp = None;
                meta.generation = None;
                let mut value = serde_json::to_value(&obj).unwrap_or_default();
                if let Some(fields) = value.as_object_mut() {
                    fields.remove("status");
                }
                Ok((obj, value.to_string().into_boxed_str()))
            }
            Err(invalid) => Err(invalid.metadata),
        };
        let meta = match &json {
            Ok((obj, _)) => obj.meta(),
            Err(meta) => meta,
        };
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).map(|v| v.as_str().into());
        Cached {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().map(Into::into),
            tenant: label(TENANT_LABEL),
            tenant_uid: label(TENANT_UID_LABEL),
            json: json.ok().map(|(_, text)| text),
            kind: PhantomData,
        }
    }

    /// The object as cached (see above: not all of it).
    pub(crate) fn object(&self) -> Option<K> {
        serde_json::from_str(self.json.as_deref()?).ok()
    }

    pub(crate) fn owned_by(&self, tenant_uid: &str) -> bool {
        self.tenant_uid.as_deref() == Some(tenant_uid)
    }
}

impl<K: Resource<DynamicType = ()>> reflector::Lookup for Cached<K> {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    // A cache key needs neither; leaving them out keeps each key to its name and namespace.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// A watch event with its object as the cache keeps it.
fn compact<K: Resource + Serialize + DeserializeOwned>(
    event: watcher::Event<DeserializeGuard<K>>,
) -> watcher::Event<Cached<K>> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(Cached::new(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(Cached::new(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(Cached::new(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// `kubectl apply` keeps a copy of what was applied in this annotation; no comparison reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no comparison reads from an object's metadata: managed fields (much of a
/// server-side applied object) and kubectl's copy of the last applied configuration.
fn prune_meta(meta: &mut kube::core::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// What the tenants' cache keeps of a tenant: everything but its managed fields and kubectl's
/// last applied configuration.
pub(crate) fn prune<K: Resource>(object: &mut DeserializeGuard<K>) {
    match &mut object.0 {
        Ok(obj) => prune_meta(obj.meta_mut()),
        Err(invalid) => prune_meta(&mut invalid.metadata),
    }
}

/// Waits for a cache's first full list. A store's readiness wakes only its latest waiter (the
/// controller waits on its own store too), so poll again now and then instead of trusting one
/// wake-up.
pub(crate) async fn synced<K>(store: &Store<K>) -> bool
where
    K: reflector::Lookup<DynamicType = ()> + Clone + 'static,
{
    let kind = K::kind(&());
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(Ok(())) => {
                tracing::debug!(cache = kind.as_ref(), "cache synced");
                return true;
            }
            Ok(Err(_)) => {
                warn!(cache = kind.as_ref(), "cache stopped before it synced");
                return false;
            }
            Err(_) => continue,
        }
    }
}

/// What applying changed, for Events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) created: Vec<String>,
    /// UIDs of the objects in `created`, in the same order.
    pub(crate) created_uids: Vec<String>,
    pub(crate) repaired: Vec<String>,
    /// The objects in tenant namespaces among `repaired`, for the controls that judge them.
    pub(crate) repairs: Vec<ObjectRepair>,
    pub(crate) removed: Vec<String>,
    pub(crate) detached: Vec<String>,
    /// Access taken away from a retained namespace.
    pub(crate) revoked: Vec<String>,
}

impl Changes {
    pub(crate) fn created(&mut self, what: String, uid: Option<String>) {
        self.created.push(what);
        self.created_uids.push(uid.unwrap_or_default());
    }
}

/// An object in a tenant namespace found changed and restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectRepair {
    /// `NetworkPolicy`, `RoleBinding`, ...
    pub(crate) kind: String,
    pub(crate) name: String,
    /// What was found and done.
    pub(crate) note: String,
}

/// Per part of the tenant, the first error applying it met.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    errors: Vec<(Part, Error)>,
}

impl Outcome {
    fn record(&mut self, part: Part, result: Result<(), Error>) {
        if let Err(e) = result
            && self.error(part).is_none()
        {
            self.errors.push((part, e));
        }
    }

    pub(crate) fn error(&self, part: Part) -> Option<&Error> {
        self.errors.iter().find(|(p, _)| *p == part).map(|(_, e)| e)
    }

    pub(crate) fn errors(&self) -> impl Iterator<Item = &Error> {
        self.errors.iter().map(|(_, e)| e)
    }
}

/// Whether `observed` already holds everything `desired` sets. Fields the apiserver or others add
/// (defaults, extra labels) are ignored; lists must match item by item.
fn contains(observed: &Value, desired: &Value) -> bool {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => contains(ov, dv),
            None => dv.is_null() || dv.as_object().is_some_and(|m| m.is_empty()),
        }),
        (Value::Array(o), Value::Array(d)) => o.len() == d.len() && o.iter().zip(d).all(|(ov, dv)| contains(ov, dv)),
        _ => observed == desired,
    }
}

/// The top-level fields of `observed` that differ from `desired` (apart from metadata): what
/// someone changed.
fn differing(observed: &Value, desired: &Value) -> Value {
    let fields: serde_json::Map<String, Value> = desired
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, d)| {
            !matches!(k.as_str(), "metadata" | "apiVersion" | "kind") && !contains(&observed[k.as_str()], d)
        })
        .map(|(k, _)| (k.clone(), observed[k.as_str()].clone()))
        .collect();
    Value::Object(fields)
}

/// JSON cut short enough for an Event's note.
fn short(v: &Value) -> String {
    const MAX: usize = 300;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// `Kind namespace/name`, for Events and errors.
pub(crate) fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {}/{}", K::kind(&()), ns, obj.name_any()),
        None => format!("{} {}", K::kind(&()), obj.name_any()),
    }
}

/// Top-level fields of a NetworkPolicy's spec that someone else added to the operator's: an
/// `ingress` or `egress` list on a policy that has none opens traffic. [`contains`] ignores
/// extra fields, and server-side apply never removes a field another manager set, so these are
/// found and removed on their own.
fn foreign_policy_rules(kind: &str, observed: &Value, desired: &Value) -> Vec<String> {
    if kind != "NetworkPolicy" {
        return Vec::new();
    }
    let present = |v: &Value| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty()));
    observed["spec"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| present(v) && !present(&desired["spec"][k.as_str()]))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Server-side applies `obj` unless the cache shows it already as desired.
pub(crate) async fn apply_one<K>(api: &Api<K>, cached: Option<&K>, obj: &K, changes: &mut Changes) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let want = to_json(obj);
    let mut found = String::new();
    if let Some(have) = cached {
        let have = serde_json::to_value(have).unwrap_or_default();
        let foreign = foreign_policy_rules(&K::kind(&()), &have, &want);
        found = short(&if foreign.is_empty() { differing(&have, &want) } else { json!({"spec": have["spec"]}) });
        if foreign.is_empty() && contains(&have, &want) {
            return Ok(());
        }
        if !foreign.is_empty() {
            let removal =
                json!({"spec": foreign.iter().map(|k| (k.clone(), Value::Null)).collect::<serde_json::Map<_, _>>()});
            api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&removal))
                .await
                .map_err(|source| Error::Apply { what: describe(obj), source })?;
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api
        .patch(&obj.name_any(), &params, &Patch::Apply(&want))
        .await
        .map_err(|source| Error::Apply { what: describe(obj), source })?;
    // The cache may lag behind our own writes: report only what this apply really changed.
    match cached {
        Some(have) if have.resource_version() != applied.resource_version() => {
            let what = describe(obj);
            let note = format!("{what} had been changed (found {found}); the operator restored it");
            changes.repairs.push(ObjectRepair { kind: K::kind(&()).to_string(), name: obj.name_any(), note });
            changes.repaired.push(what);
        }
        Some(_) => {}
        None if is_fresh(&applied) => changes.created(describe(obj), applied.uid()),
        None => {}
    }
    Ok(())
}

/// Created moments ago (by the apply that returned it), as opposed to found already there.
fn is_fresh<K: Resource>(obj: &K) -> bool {
    obj.meta().creation_timestamp.as_ref().is_some_and(|t| {
        k8s_openapi::jiff::Timestamp::now().duration_since(t.0) < k8s_openapi::jiff::SignedDuration::from_secs(10)
    })
}

/// Applies the desired objects of one kind in the given namespaces and removes that kind's
/// orphans there: objects labelled and owned by this tenant that are no longer desired.
async fn converge_kind<K>(
    client: &Client,
    store: &Store<Cached<K>>,
    tenant_uid: &str,
    namespaces: &BTreeSet<String>,
    wanted: &[K],
    changes: &mut Changes,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug,
{
    let cached = |ns: &str, name: &str| store.get(&ObjectRef::new(name).within(ns)).and_then(|c| c.object());
    for obj in wanted {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        if !namespaces.contains(&ns) {
            continue;
        }
        let api = Api::<K>::namespaced(client.clone(), &ns);
        apply_one(&api, cached(&ns, &obj.name_any()).as_ref(), obj, changes).await?;
    }
    let wanted_keys: BTreeSet<(String, String)> =
        wanted.iter().map(|o| (o.meta().namespace.clone().unwrap_or_default(), o.name_any())).collect();
    for cached in &store.state() {
        let ns = cached.namespace.as_deref().unwrap_or_default().to_string();
        if !namespaces.contains(&ns) || !cached.owned_by(tenant_uid) {
            continue;
        }
        let Some(obj) = &cached.object() else { continue };
        let api = Api::<K>::namespaced(client.clone(), &ns);
        if !wanted_keys.contains(&(ns.clone(), obj.name_any())) {
            match api.delete(&obj.name_any(), &DeleteParams::default()).await {
                Ok(_) => changes.removed.push(describe(obj)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(Error::Remove { what: describe(obj), source }),
            }
        } else if has_owner_reference(obj, tenant_uid) {
            cut_owner_reference(&api, obj, tenant_uid).await?;
        }
    }
    Ok(())
}

/// Whether an owner reference to the tenant remains (objects of earlier versions had one).
pub(crate) fn has_owner_reference<K: Resource>(obj: &K, tenant_uid: &str) -> bool {
    obj.meta().owner_references.iter().flatten().any(|o| o.uid == tenant_uid)
}

/// Removes the tenant's owner reference from an object, so the garbage collector can never
/// delete it when the tenant disappears without the operator's cleanup (invariant 12).
pub(crate) async fn cut_owner_reference<K>(api: &Api<K>, obj: &K, tenant_uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let patch = json!({"metadata": {"ownerReferences": without_owner(obj, tenant_uid)}});
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Remove { what: format!("the owner reference of {}", describe(obj)), source })?;
    tracing::info!(object = %describe(obj), "removed the owner reference to the tenant");
    Ok(())
}

/// Whether the tenant owns this object: it carries the tenant's UID label (which only the
/// operator writes, and which a retained namespace keeps).
pub(crate) fn owned_by<K: Resource>(obj: &K, tenant_uid: &str) -> bool {
    obj.meta().labels.as_ref().and_then(|l| l.get(TENANT_UID_LABEL)).is_some_and(|u| u == tenant_uid)
}

/// Offboarding under `Retain` (invariant 12): the namespace keeps its data and its isolation,
/// but the tenant's RoleBindings go and its ServiceAccounts lose the IAM role annotation.
pub(crate) async fn revoke(client: &Client, tenant_uid: &str, ns: &str, changes: &mut Changes) -> Result<(), Error> {
    let selector = ListParams::default().labels(&format!("{TENANT_UID_LABEL}={tenant_uid}"));
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns);
    let listed = bindings
        .list(&selector)
        .await
        .map_err(|source| Error::Observe { what: format!("RoleBindings in {ns}"), source })?;
    for rb in listed {
        match bindings.delete(&rb.name_any(), &DeleteParams::default()).await {
            Ok(_) => changes.revoked.push(describe(&rb)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Remove { what: describe(&rb), source }),
        }
    }
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let listed = accounts
        .list(&selector)
        .await
        .map_err(|source| Error::Observe { what: format!("ServiceAccounts in {ns}"), source })?;
    for sa in listed.into_iter().filter(|sa| sa.annotations().contains_key(IRSA_ANNOTATION)) {
        let patch = json!({"metadata": {"annotations": {IRSA_ANNOTATION: null}}});
        let what = format!("the IAM role annotation of {}", describe(&sa));
        accounts
            .patch(&sa.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Remove { what: what.clone(), source })?;
        changes.revoked.push(what);
    }
    Ok(())
}

async fn detach_kind<K>(client: &Client, tenant_uid: &str, ns: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{TENANT_UID_LABEL}={tenant_uid}")))
        .await
        .map_err(|source| Error::Observe { what: format!("{} in {ns}", K::kind(&())), source })?;
    for obj in list.into_iter().filter(|o| has_owner_reference(o, tenant_uid)) {
        cut_owner_reference(&api, &obj, tenant_uid).await?;
    }
    Ok(())
}

/// The object's owner references without the tenant's, as a merge patch value.
pub(crate) fn without_owner<K: Resource>(obj: &K, tenant_uid: &str) -> Value {
    let rest: Vec<_> = obj.meta().owner_references.iter().flatten().filter(|o| o.uid != tenant_uid).cloned().collect();
    if rest.is_empty() { Value::Null } else { serde_json::to_value(rest).unwrap_or(Value::Null) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_added_to_a_policy_that_has_none_are_foreign() {
        let deny = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
        let widened = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]}});
        assert_eq!(foreign_policy_rules("NetworkPolicy", &widened, &deny), ["ingress"]);
        assert!(foreign_policy_rules("NetworkPolicy", &deny, &deny).is_empty());
        let emptied = json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": []}});
        assert!(foreign_policy_rules("NetworkPolicy", &emptied, &deny).is_empty(), "an empty list allows nothing");
        assert!(foreign_policy_rules("ResourceQuota", &widened, &deny).is_empty());
    }

    #[test]
    fn the_cache_keeps_an_object_without_managed_fields_or_status() {
        let quota: ResourceQuota = serde_json::from_value(json!({
            "metadata": {
                "name": "tenant-quota", "namespace": "group-a", "resourceVersion": "7",
                "labels": {TENANT_LABEL: "group-a", TENANT_UID_LABEL: "u1"},
                "managedFields": [{"manager": "imaging-tenant-operator", "operation": "Apply"}],
            },
            "spec": {"hard": {"requests.cpu": "8"}},
            "status": {"hard": {"requests.cpu": "8"}, "used": {"requests.cpu": "0"}},
        }))
        .unwrap();
        let cached = Cached::new(DeserializeGuard(Ok(quota)));
        assert_eq!(cached.tenant.as_deref(), Some("group-a"));
        assert!(cached.owned_by("u1") && !cached.owned_by("u2"));
        let back = cached.object().expect("parses back");
        assert_eq!(back.metadata.resource_version.as_deref(), Some("7"));
        assert!(back.metadata.managed_fields.is_none());
        assert!(back.status.is_none());
        assert_eq!(back.spec.and_then(|s| s.hard).unwrap()["requests.cpu"].0, "8");
        use kube::runtime::reflector::Lookup;
        let key = cached.to_object_ref(());
        assert_eq!(key, ObjectRef::new("tenant-quota").within("group-a"));
        assert!(key.extra.resource_version.is_none(), "a key is only a name and a namespace");
    }

    #[test]
    fn an_object_that_cannot_be_read_is_not_there_for_the_operator() {
        let invalid: DeserializeGuard<ResourceQuota> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "group-a", "labels": {TENANT_UID_LABEL: "u1"}},
            "spec": {"hard": "not a map"},
        }))
        .unwrap();
        assert!(invalid.0.is_err());
        let cached = Cached::new(invalid);
        assert!(cached.object().is_none());
        assert!(cached.owned_by("u1"), "its labels still say whose it is");
    }

    #[test]
    fn contains_ignores_extra_fields_but_not_missing_ones() {
        let have =
            json!({"metadata": {"labels": {"a": "1", "kubernetes.io/metadata.name": "x"}}, "spec": {"p": [1, 2]}});
        assert!(contains(&have, &json!({"metadata": {"labels": {"a": "1"}}})));
        assert!(!contains(&have, &json!({"metadata": {"labels": {"a": "2"}}})));
        assert!(!contains(&have, &json!({"spec": {"p": [1]}})));
        assert!(!contains(&have, &json!({"spec": {"q": 1}})));
        assert!(contains(&have, &json!({"spec": {"podSelector": {}}})));
    }
}
