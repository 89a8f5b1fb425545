//! The tenant's namespaces: claimed (created, or found as the tenant's, never taken over), and
//! retired by `deletionPolicy` when the tenant or the namespace's entry in the spec goes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::children::{
    self, Changes, Stores, apply_one, cut_owner_reference, describe, has_owner_reference, owned_by, without_owner,
};
use super::error::Error;
use crate::api::DeletionPolicy;
use crate::api::metadata::{FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, RETAINED_LABEL, TENANT_LABEL};

/// What claiming the namespaces of the spec came to.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Namespaces that exist and belong to the tenant.
    pub(crate) owned: BTreeSet<String>,
    /// Namespaces that exist and belong to someone else, with the tenant they belong to if any.
    pub(crate) conflicts: Vec<(String, Option<String>)>,
    /// Namespaces that do not exist yet but whose name another tenant's name reserves, with
    /// that tenant.
    pub(crate) reserved: Vec<(String, String)>,
    /// The tenant's namespaces still being deleted.
    pub(crate) terminating: Vec<String>,
    /// The last error creating or applying a namespace.
    pub(crate) error: Option<Error>,
}

impl Claims {
    /// Whether some namespace of the spec is not (yet) the tenant's.
    pub(crate) fn incomplete(&self, wanted: usize) -> bool {
        self.owned.len() < wanted
    }
}

/// What is known of one namespace the tenant asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// Absent: the operator may create it.
    Free,
    /// Exists and belongs to this tenant.
    Owned { terminating: bool },
    /// Exists and belongs to someone else; never touched.
    Foreign { owner: Option<String> },
}

/// Invariant 1: creates the namespaces that do not exist, applies those that are the tenant's,
/// and never touches one that is not.
pub(crate) async fn claim(
    client: &Client,
    stores: &Stores,
    tenant_uid: &str,
    wanted: &[Namespace],
    reserved_by: impl Fn(&str) -> Option<String>,
    changes: &mut Changes,
) -> Result<Claims, Error> {
    let mut claims = Claims::default();
    for ns in wanted {
        let name = ns.name_any();
        let result = match look_up(client, stores, tenant_uid, &name).await? {
            Claim::Free => match reserved_by(&name) {
                Some(other) => {
                    claims.reserved.push((name, other));
                    continue;
                }
                None => create(client, ns, changes).await,
            },
            Claim::Owned { terminating: true } => {
                claims.terminating.push(name);
                continue;
            }
            Claim::Owned { terminating: false } => {
                let cached = stores.namespaces.get(&ObjectRef::new(&name)).and_then(|c| c.object());
                let api = Api::all(client.clone());
                match apply_one(&api, cached.as_ref(), ns, changes).await {
                    // Namespaces of earlier versions had an owner reference to the tenant.
                    Ok(()) => match cached.filter(|c| has_owner_reference(c, tenant_uid)) {
                        Some(cached) => cut_owner_reference(&api, &cached, tenant_uid).await.map(|()| true),
                        None => Ok(true),
                    },
                    Err(e) => Err(e),
                }
            }
            Claim::Foreign { owner } => {
                claims.conflicts.push((name, owner));
                continue;
            }
        };
        match result {
            Ok(true) => {
                claims.owned.insert(name);
            }
            // Someone created it between our read and our create: look again next time.
            Ok(false) => claims.conflicts.push((name, None)),
            Err(e) => claims.error = Some(e),
        }
    }
    Ok(claims)
}

/// The other tenant whose name reserves namespace `ns`, if any. A tenant's namespaces are its
/// name or start with `<name>-`, so both `group` and `group-a` could claim `group-a-x`; the
/// longer, more specific name reserves it. Among `others` (the names of the other tenants), the
/// one with the longest such name wins, if it is longer than `own`.
pub(crate) fn reserved_by(ns: &str, own: &str, others: &[String]) -> Option<String> {
    others
        .iter()
        .filter(|other| other.len() > own.len())
        .filter(|other| {
            ns == other.as_str() || ns.strip_prefix(other.as_str()).is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|other| other.len())
        .cloned()
}

/// First the cache of managed namespaces, then the apiserver (a namespace the operator does not
/// manage is not in the cache).
async fn look_up(client: &Client, stores: &Stores, tenant_uid: &str, name: &str) -> Result<Claim, Error> {
    let cached = stores.namespaces.get(&ObjectRef::new(name)).and_then(|c| c.object());
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
        Some(ns) => Claim::Foreign { owner: ns.labels().get(TENANT_LABEL).cloned() },
    })
}

/// Creates a namespace that does not exist yet. Create (not apply) so that when two tenants race
/// for one name, the second gets AlreadyExists instead of merging into the first one's namespace.
async fn create(client: &Client, ns: &Namespace, changes: &mut Changes) -> Result<bool, Error> {
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

/// The namespaces the cache shows as the tenant's and still managed, whatever the spec says now.
pub(crate) fn labelled(stores: &Stores, tenant_uid: &str) -> Vec<Namespace> {
    stores.namespaces.state().iter().filter(|c| c.owned_by(tenant_uid)).filter_map(|c| c.object()).collect()
}

/// The tenant's managed namespaces that the spec no longer lists and that are not being deleted.
pub(crate) fn removed_from_spec(stores: &Stores, tenant_uid: &str, wanted: &BTreeSet<String>) -> Vec<String> {
    labelled(stores, tenant_uid)
        .into_iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none() && !wanted.contains(&ns.name_any()))
        // Without the managed-by label it is already detached.
        .filter(|ns| ns.labels().get(MANAGED_BY_LABEL).is_some_and(|v| v == MANAGED_BY))
        .map(|ns| ns.name_any())
        .collect()
}

/// What retiring a namespace came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    Done,
    /// Under `Delete`, a namespace dropped from the spec still holds this many
    /// PersistentVolumeClaims (at least); it is kept until they are gone.
    HoldsVolumes(usize),
}

/// Whether a namespace dropped from `spec.namespaces` under `Delete` waits for its volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Volumes {
    /// The namespace is deleted only once it holds no PersistentVolumeClaim.
    Keep,
    /// The whole tenant is deleted under `Delete`: its namespaces go with their volumes.
    DeleteWithNamespace,
}

/// Invariants 5 and 12 for one namespace: `Retain` detaches it and keeps everything in it but
/// revokes the tenant's access, `Delete` deletes it (Kubernetes then removes everything in it).
pub(crate) async fn retire(
    client: &Client,
    tenant_uid: &str,
    ns: &str,
    policy: DeletionPolicy,
    volumes: Volumes,
    changes: &mut Changes,
) -> Result<Retired, Error> {
    match policy {
        DeletionPolicy::Retain => detach(client, tenant_uid, ns, changes).await.map(|()| Retired::Done),
        DeletionPolicy::Delete => {
            if volumes == Volumes::Keep {
                let claims = volume_claims(client, ns).await?;
                if claims > 0 {
                    return Ok(Retired::HoldsVolumes(claims));
                }
            }
            delete(client, ns, changes).await.map(|()| Retired::Done)
        }
    }
}

/// How many PersistentVolumeClaims the namespace holds (up to a page).
async fn volume_claims(client: &Client, ns: &str) -> Result<usize, Error> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().limit(500))
        .await
        .map_err(|source| Error::Observe { what: format!("PersistentVolumeClaims in {ns}"), source })?;
    Ok(list.items.len())
}

/// Leaves the namespace with its data and its network isolation, but revokes the tenant's
/// access (RoleBindings, the workload ServiceAccount's IAM role), cuts any owner reference to the
/// tenant so garbage collection never removes anything, and marks the namespace as retained. The
/// tenant UID label stays, so only this very tenant could ever adopt it again.
async fn detach(client: &Client, tenant_uid: &str, ns: &str, changes: &mut Changes) -> Result<(), Error> {
    children::detach(client, tenant_uid, ns).await?;
    children::revoke(client, tenant_uid, ns, changes).await?;
    let api = Api::<Namespace>::all(client.clone());
    let Some(namespace) =
        api.get_opt(ns).await.map_err(|source| Error::Observe { what: format!("Namespace {ns}"), source })?
    else {
        return Ok(());
    };
    let labels: BTreeMap<&str, Option<&str>> =
        BTreeMap::from([(RETAINED_LABEL, Some("true")), (MANAGED_BY_LABEL, None)]);
    let patch = json!({"metadata": {"ownerReferences": without_owner(&namespace, tenant_uid), "labels": labels}});
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Remove { what: format!("Namespace {ns}"), source })?;
    changes.detached.push(format!("Namespace {ns}"));
    Ok(())
}

async fn delete(client: &Client, ns: &str, changes: &mut Changes) -> Result<(), Error> {
    match Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await {
        Ok(_) => {
            changes.removed.push(format!("Namespace {ns}"));
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Remove { what: format!("Namespace {ns}"), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_longer_tenant_name_reserves_its_namespaces() {
        let others = vec!["group-a".to_string(), "gr".to_string(), "group-a-ai".to_string()];
        assert_eq!(reserved_by("group-a", "group", &others).as_deref(), Some("group-a"));
        assert_eq!(reserved_by("group-a-x", "group", &others).as_deref(), Some("group-a"));
        assert_eq!(reserved_by("group-a-ai", "group", &others).as_deref(), Some("group-a-ai"), "the longest wins");
        assert_eq!(reserved_by("group-ab", "group", &others), None, "group-ab is not group-a's");
        assert_eq!(reserved_by("group-b", "group", &others), None);
        assert_eq!(reserved_by("group-x", "group", &others), None, "a shorter name reserves nothing");
        assert_eq!(reserved_by("group-a-x", "group-a", &others), None, "not against the tenant itself");
    }
}
