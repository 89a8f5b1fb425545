//! Kubernetes Events on the tenant: what the operator created, repaired, removed or kept, and
//! what it refused to do.
//!
//! Events are sent as `events.k8s.io/v1`. The same Event again within six minutes (same tenant,
//! type, reason, action and note) is counted into the first one's `series` instead of being sent
//! anew, as client-go's recorder does. kube's `Recorder` does this too, but keeps a full copy of
//! every Event it sent in a table that never shrinks (about 10 KiB a tenant while thousands are
//! provisioned) and counts an Event with a different note as a repeat of the first, losing it;
//! this keeps a hash and a name per Event, and a different note is a different Event.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use tracing::warn;

use super::children::Changes;
use crate::api::ImagingTenant;

/// Longest Event note the apiserver accepts is 1 kB.
const MAX_NOTE: usize = 1000;
/// How long a reported creation is remembered (the watch cache can lag behind our own writes).
const REMEMBER_CREATED: Duration = Duration::from_secs(600);
/// How long after its last occurrence an Event is counted into, not sent anew (client-go's).
const SERIES_WINDOW: Duration = Duration::from_secs(360);

/// Publishes Events about tenants.
pub(crate) struct Events {
    client: Client,
    reporter: Reporter,
    /// Events sent lately, by the hash of what makes two the same.
    sent: Mutex<HashMap<u64, Sent>>,
    /// Objects reported as created lately, by hash: one creation must not be reported twice.
    reported: Mutex<HashMap<u64, Instant>>,
}

/// An Event sent lately.
struct Sent {
    name: String,
    count: i32,
    last: Instant,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Events {
    pub(crate) fn new(client: Client, reporter: Reporter) -> Self {
        Events { client, reporter, sent: Mutex::default(), reported: Mutex::default() }
    }

    /// One Event on the tenant; a failure to publish is logged, never fatal.
    pub(crate) async fn publish(
        &self,
        tenant: &ImagingTenant,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl AsRef<str>,
    ) {
        let note = truncate(note.as_ref(), MAX_NOTE);
        let regarding = tenant.object_ref(&());
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = hash_of((type_, reason, action, &regarding.uid, &regarding.name, &note));
        let api: Api<K8sEvent> =
            Api::namespaced(self.client.clone(), regarding.namespace.as_deref().unwrap_or("default"));
        let repeat = {
            let mut sent = self.sent.lock().expect("events lock");
            sent.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
            sent.get(&key).map(|s| (s.name.clone(), s.count + 1))
        };
        if let Some((name, count)) = repeat {
            let series = json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&series)).await {
                Ok(_) => {
                    if let Some(s) = self.sent.lock().expect("events lock").get_mut(&key) {
                        s.count = count;
                        s.last = Instant::now();
                    }
                    return;
                }
                // Gone (Events expire): sent anew.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(error = %e, reason, "could not publish event");
                    return;
                }
            }
        }
        let now = Timestamp::now();
        let name =
            format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.reporter.controller), now.as_nanosecond());
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(note),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            regarding: Some(regarding),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let sent = Sent { name, count: 1, last: Instant::now() };
                self.sent.lock().expect("events lock").insert(key, sent);
            }
            Err(e) => warn!(error = %e, reason, "could not publish event"),
        }
    }

    /// One Event per kind of change. `restoring`: the spec did not change, so what was created
    /// had been deleted by someone and is reported as `Restored`.
    pub(crate) async fn changes(&self, tenant: &ImagingTenant, changes: &Changes, restoring: bool) {
        let created = self.not_yet_reported(changes);
        let groups: [(&str, &str, &[String]); 5] = [
            if restoring {
                ("Restored", "restored (it was deleted)", &created)
            } else {
                ("Created", "created", &created)
            },
            ("Repaired", "restored to the desired state (it was changed)", &changes.repaired),
            ("Removed", "removed (no longer desired)", &changes.removed),
            ("Retained", "detached and kept (deletionPolicy Retain)", &changes.detached),
            (
                "AccessRevoked",
                "access revoked (deletionPolicy Retain keeps the data, not the access)",
                &changes.revoked,
            ),
        ];
        for (reason, verb, items) in groups {
            if !items.is_empty() {
                self.publish(tenant, EventType::Normal, reason, "Reconcile", format!("{verb}: {}", items.join(", ")))
                    .await;
            }
        }
    }

    /// The created objects not reported lately. A restored object is a new object with a new
    /// UID, so it is reported again.
    fn not_yet_reported(&self, changes: &Changes) -> Vec<String> {
        let mut reported = self.reported.lock().expect("events lock");
        reported.retain(|_, at| at.elapsed() < REMEMBER_CREATED);
        changes
            .created
            .iter()
            .zip(&changes.created_uids)
            .filter(|(what, uid)| reported.insert(hash_of((what, uid)), Instant::now()).is_none())
            .map(|(what, _)| what.clone())
            .collect()
    }
}

/// At most `max` bytes, cut at a character boundary, with "..." when cut.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 8), "abcde...");
        let cut = truncate("ééééé", 8);
        assert!(cut.len() <= 8 && cut.ends_with("..."), "{cut}");
    }
}
