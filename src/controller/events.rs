//! Kubernetes Events on the tenant: what the operator created, repaired, removed or kept, and
//! what it refused to do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use super::children::Changes;
use crate::api::ImagingTenant;

/// Longest Event note the apiserver accepts is 1 kB.
const MAX_NOTE: usize = 1000;
/// How long a reported creation is remembered (the watch cache can lag behind our own writes).
const REMEMBER_CREATED: Duration = Duration::from_secs(600);

/// Publishes Events about tenants.
pub(crate) struct Events {
    recorder: Recorder,
    /// Objects reported as created lately: one creation must not be reported twice.
    reported: Mutex<HashMap<String, Instant>>,
}

impl Events {
    pub(crate) fn new(client: Client, reporter: Reporter) -> Self {
        Events { recorder: Recorder::new(client, reporter), reported: Mutex::default() }
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
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note.as_ref(), MAX_NOTE)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
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
            .filter(|(what, uid)| reported.insert(format!("{what} {uid}"), Instant::now()).is_none())
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
