//! The only place that writes the tenant's Kubernetes objects: server-side apply of what differs
//! from the cache, removal of labelled orphans, and detaching or deleting on retirement.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::Error;
use crate::api::ImagingTenant;
use crate::desired::kubernetes::{self as desired, TENANT_UID_LABEL, TenantObjects, to_json};

pub const FIELD_MANAGER: &str = "imaging-tenant-operator";

/// Caches of the children, fed by label-selected watches; reads here cost no API call.
#[derive(Clone)]
pub struct Stores {
    pub namespaces: Store<DeserializeGuard<Namespace>>,
    pub service_accounts: Store<DeserializeGuard<ServiceAccount>>,
    pub network_policies: Store<DeserializeGuard<NetworkPolicy>>,
    pub role_bindings: Store<DeserializeGuard<RoleBinding>>,
    pub resource_quotas: Store<DeserializeGuard<ResourceQuota>>,
    pub limit_ranges: Store<DeserializeGuard<LimitRange>>,
}

/// What applying changed, for events and for deciding whether anything was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    /// UIDs of the objects in `created`, in the same order.
    pub created_uids: Vec<String>,
    pub repaired: Vec<String>,
    pub removed: Vec<String>,
    pub detached: Vec<String>,
}

impl Changes {
    pub fn created(&mut self, what: String, uid: Option<String>) {
        self.created.push(what);
        self.created_uids.push(uid.unwrap_or_default());
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.repaired.is_empty() && self.removed.is_empty() && self.detached.is_empty()
    }
}

/// Whether `observed` already holds everything `desired` sets. Fields the apiserver or others add
/// (defaults, extra labels) are ignored; lists must match item by item.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    match (observed, desired) {
        (Value::Object(o), Value::Object(d)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => contains(ov, dv),
            None => dv.is_null() || dv.as_object().is_some_and(|m| m.is_empty()),
        }),
        (Value::Array(o), Value::Array(d)) => o.len() == d.len() && o.iter().zip(d).all(|(ov, dv)| contains(ov, dv)),
        _ => observed == desired,
    }
}

/// Whether the tenant owns this object: a controller reference to the tenant, or (for retained
/// namespaces, whose references were removed) the tenant's UID label.
pub fn owned_by<K: Resource>(obj: &K, tenant_uid: &str) -> bool {
    let meta = obj.meta();
    let by_ref = meta.owner_references.iter().flatten().any(|o| o.uid == tenant_uid && o.controller == Some(true));
    let by_label = meta.labels.as_ref().and_then(|l| l.get(TENANT_UID_LABEL)).is_some_and(|u| u == tenant_uid);
    by_ref || by_label
}

/// What we know about one namespace the tenant asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Absent: the operator may create it.
    Free,
    /// Exists and belongs to this tenant.
    Owned { terminating: bool },
    /// Exists and belongs to someone else; never touched.
    Foreign { owner: Option<String> },
}

/// Looks at one requested namespace: first the cache of managed namespaces, then the apiserver
/// (a namespace we do not manage is not in the cache).
pub async fn claim(client: &Client, stores: &Stores, tenant_uid: &str, name: &str) -> Result<Claim, Error> {
    let cached =
        stores.namespaces.get(&kube::runtime::reflector::ObjectRef::new(name)).and_then(|g| g.0.as_ref().ok().cloned());
    let ns = match cached {
        Some(ns) => Some(ns),
        None => Api::<Namespace>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|source| Error::Observe { what: format!("Namespace {name}"), source })?,
    };
    Ok(match ns {
        None => Claim::Free,
        Some(ns) if owned_by(&ns, tenant_uid) => Claim::Owned { terminating: ns.metadata.deletion_timestamp.is_some() },
        Some(ns) => Claim::Foreign { owner: ns.labels().get(desired::TENANT_LABEL).cloned() },
    })
}

fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {}/{}", K::kind(&()), ns, obj.name_any()),
        None => format!("{} {}", K::kind(&()), obj.name_any()),
    }
}

/// Creates a namespace that does not exist yet. Create (not apply) so that when two tenants race
/// for one name, the second gets AlreadyExists instead of merging into the first one's namespace.
pub async fn create_namespace(client: &Client, ns: &Namespace, changes: &mut Changes) -> Result<bool, Error> {
    let api = Api::<Namespace>::all(client.clone());
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() }, ns).await {
        Ok(created) => {
            changes.created(describe(ns), created.uid());
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(source) => Err(Error::Apply { what: describe(ns), source }),
    }
}

/// Server-side applies `obj` unless the cache shows it already as desired.
async fn apply_one<K>(api: &Api<K>, cached: Option<&K>, obj: &K, changes: &mut Changes) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let want = to_json(obj);
    if let Some(have) = cached
        && contains(&serde_json::to_value(have).unwrap_or_default(), &want)
    {
        return Ok(());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&obj.name_any(), &params, &Patch::Apply(&want)).await?;
    // The cache may lag behind our own writes: report only what this apply really changed.
    match cached {
        Some(have) if have.resource_version() != applied.resource_version() => changes.repaired.push(describe(obj)),
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

pub async fn apply_namespace(
    client: &Client,
    stores: &Stores,
    ns: &Namespace,
    changes: &mut Changes,
) -> Result<(), Error> {
    let api = Api::<Namespace>::all(client.clone());
    let cached = stores
        .namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(&ns.name_any()))
        .and_then(|g| g.0.as_ref().ok().cloned());
    apply_one(&api, cached.as_ref(), ns, changes).await.map_err(|source| Error::Apply { what: describe(ns), source })
}

/// Applies the desired objects of one kind in the given namespaces and removes that kind's
/// orphans there: objects labelled and owned by this tenant that are no longer desired.
pub async fn converge_kind<K>(
    client: &Client,
    store: &Store<DeserializeGuard<K>>,
    tenant_uid: &str,
    namespaces: &BTreeSet<String>,
    wanted: &[K],
    changes: &mut Changes,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Serialize + DeserializeOwned + Debug,
{
    let cache: Vec<Arc<DeserializeGuard<K>>> = store.state();
    let cached = |ns: &str, name: &str| {
        cache.iter().find_map(|g| {
            g.0.as_ref().ok().filter(|o| o.meta().namespace.as_deref() == Some(ns) && o.name_any() == name).cloned()
        })
    };
    for obj in wanted {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        if !namespaces.contains(&ns) {
            continue;
        }
        let api = Api::<K>::namespaced(client.clone(), &ns);
        apply_one(&api, cached(&ns, &obj.name_any()).as_ref(), obj, changes)
            .await
            .map_err(|source| Error::Apply { what: describe(obj), source })?;
    }
    let wanted_keys: BTreeSet<(String, String)> =
        wanted.iter().map(|o| (o.meta().namespace.clone().unwrap_or_default(), o.name_any())).collect();
    for guard in &cache {
        let Ok(obj) = &guard.0 else { continue };
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        if !namespaces.contains(&ns) || wanted_keys.contains(&(ns.clone(), obj.name_any())) {
            continue;
        }
        let controlled =
            obj.meta().owner_references.iter().flatten().any(|o| o.uid == tenant_uid && o.controller == Some(true));
        if !controlled {
            continue;
        }
        let api = Api::<K>::namespaced(client.clone(), &ns);
        match api.delete(&obj.name_any(), &DeleteParams::default()).await {
            Ok(_) => changes.removed.push(describe(obj)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Remove { what: describe(obj), source }),
        }
    }
    Ok(())
}

/// Applies every child object in the tenant's owned namespaces, kind by kind in a fixed order.
/// Destructured without `..`: a new kind in `TenantObjects` must be handled here.
pub async fn apply_children(
    client: &Client,
    stores: &Stores,
    tenant_uid: &str,
    owned: &BTreeSet<String>,
    objects: &TenantObjects,
    changes: &mut Changes,
) -> ChildOutcome {
    let TenantObjects {
        namespaces: _,
        service_accounts,
        network_policies,
        role_bindings,
        resource_quotas,
        limit_ranges,
    } = objects;
    ChildOutcome {
        network: converge_kind(client, &stores.network_policies, tenant_uid, owned, network_policies, changes).await,
        access: converge_kind(client, &stores.role_bindings, tenant_uid, owned, role_bindings, changes).await,
        quota: async {
            converge_kind(client, &stores.resource_quotas, tenant_uid, owned, resource_quotas, changes).await?;
            converge_kind(client, &stores.limit_ranges, tenant_uid, owned, limit_ranges, changes).await
        }
        .await,
        service_accounts: converge_kind(client, &stores.service_accounts, tenant_uid, owned, service_accounts, changes)
            .await,
    }
}

/// Per part of the tenant, whether applying it worked.
pub struct ChildOutcome {
    pub network: Result<(), Error>,
    pub access: Result<(), Error>,
    pub quota: Result<(), Error>,
    pub service_accounts: Result<(), Error>,
}

/// Retain: leave the namespace and everything in it, but cut every owner reference to the tenant
/// so garbage collection never removes them, and mark the namespace as retained. The tenant UID
/// label stays, so only this very tenant could ever adopt it again.
pub async fn detach_namespace(client: &Client, tenant_uid: &str, ns: &str, changes: &mut Changes) -> Result<(), Error> {
    let params = PatchParams::default();
    macro_rules! detach_children {
        ($($kind:ty),*) => {$(
            let api = Api::<$kind>::namespaced(client.clone(), ns);
            let list = api
                .list(&kube::api::ListParams::default().labels(&format!("{TENANT_UID_LABEL}={tenant_uid}")))
                .await
                .map_err(|source| Error::Observe { what: format!("{} in {ns}", <$kind>::kind(&())), source })?;
            for obj in list {
                if obj.meta().owner_references.as_ref().is_some_and(|r| !r.is_empty()) {
                    let patch = json!({"metadata": {"ownerReferences": without_owner(&obj, tenant_uid)}});
                    api.patch(&obj.name_any(), &params, &Patch::Merge(&patch))
                        .await
                        .map_err(|source| Error::Remove { what: describe(&obj), source })?;
                }
            }
        )*};
    }
    detach_children!(NetworkPolicy, RoleBinding, ResourceQuota, LimitRange, ServiceAccount);
    let api = Api::<Namespace>::all(client.clone());
    let Some(namespace) =
        api.get_opt(ns).await.map_err(|source| Error::Observe { what: format!("Namespace {ns}"), source })?
    else {
        return Ok(());
    };
    let patch = json!({"metadata": {
        "ownerReferences": without_owner(&namespace, tenant_uid),
        "labels": {desired::RETAINED_LABEL: "true", desired::MANAGED_BY_LABEL: null},
    }});
    api.patch(ns, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Remove { what: format!("Namespace {ns}"), source })?;
    changes.detached.push(format!("Namespace {ns}"));
    Ok(())
}

fn without_owner<K: Resource>(obj: &K, tenant_uid: &str) -> Value {
    let rest: Vec<_> = obj.meta().owner_references.iter().flatten().filter(|o| o.uid != tenant_uid).cloned().collect();
    if rest.is_empty() { Value::Null } else { serde_json::to_value(rest).unwrap_or(Value::Null) }
}

/// Delete policy: remove the namespace (Kubernetes then removes everything in it).
pub async fn delete_namespace(client: &Client, ns: &str, changes: &mut Changes) -> Result<(), Error> {
    match Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await {
        Ok(_) => {
            changes.removed.push(format!("Namespace {ns}"));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Remove { what: format!("Namespace {ns}"), source }),
    }
}

/// Namespaces the cache shows as this tenant's, whatever the spec says now.
pub fn labelled_namespaces(stores: &Stores, tenant_uid: &str) -> Vec<Namespace> {
    stores
        .namespaces
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|ns| owned_by(*ns, tenant_uid))
        .cloned()
        .collect()
}

/// For tests of orphan and ownership logic.
pub fn tenant_uid(tenant: &ImagingTenant) -> &str {
    tenant.metadata.uid.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
