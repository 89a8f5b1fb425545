//! What the role, the key and the bucket do the same way: converge a setting (read, compare,
//! write what differs, read back), and retire (the preamble, and the Retain tagging).

use std::future::Future;

use serde_json::Value;

use super::error::{CloudError, ResourceKind};
use super::sdk::Tags;
use super::{CloudEvent, RETAINED, Step, policy};
use crate::api::DeletionPolicy;
use crate::api::metadata::TAG_RETAINED;

/// One setting of one resource, as the converge step names it.
pub(crate) struct Setting<'a> {
    pub(crate) kind: ResourceKind,
    /// `trust policy`, `default encryption`, ...
    pub(crate) what: &'static str,
    /// `IAM role x`, `S3 bucket y`, ...
    pub(crate) resource: &'a str,
}

impl Setting<'_> {
    /// The converge step: nothing when `live` is `wanted`; otherwise `write_and_read_back`,
    /// then `NotConverged` with `differs(answer)` when AWS still answers something else, or a
    /// `Repaired` event with `repaired(live)`.
    pub(crate) async fn converge<T>(
        self,
        step: &mut Step<'_>,
        live: T,
        wanted: impl Fn(&T) -> bool,
        write_and_read_back: impl Future<Output = Result<T, CloudError>>,
        differs: impl FnOnce(&T) -> String,
        repaired: impl FnOnce(&T) -> String,
    ) -> Result<(), CloudError> {
        if wanted(&live) {
            return Ok(());
        }
        let answer = write_and_read_back.await?;
        if !wanted(&answer) {
            return Err(CloudError::NotConverged {
                what: self.what,
                resource: self.resource.to_string(),
                detail: differs(&answer),
            });
        }
        step.repaired(self.kind, self.what, repaired(&live));
        Ok(())
    }

    /// [`Setting::converge`] for a policy document, compared as AWS reads it (an unreadable
    /// read-back counts as another document, which `service` is said to return).
    pub(crate) async fn converge_policy(
        self,
        step: &mut Step<'_>,
        live: Option<Value>,
        wanted: &Value,
        write_and_read_back: impl Future<Output = Result<Option<Value>, CloudError>>,
        service: &str,
        repaired: String,
    ) -> Result<(), CloudError> {
        self.converge(
            step,
            live,
            |p| p.as_ref().is_some_and(|p| policy::equivalent(p, wanted)),
            write_and_read_back,
            |_| format!("{service} returns another document than the one written"),
            |found| format!("{repaired} (found {})", found_document(found.as_ref(), wanted)),
        )
        .await
    }
}

/// How a policy document found in place of the operator's differs, short enough for an
/// Event's note.
fn found_document(found: Option<&Value>, wanted: &Value) -> String {
    const MAX: usize = 400;
    let Some(doc) = found else { return "no policy".into() };
    let text = policy::difference(doc, wanted);
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// One retirement pass: the tenant's deletion policy, and the events of what was done.
#[derive(Debug)]
pub(crate) struct Retiring {
    policy: DeletionPolicy,
    events: Vec<CloudEvent>,
}

impl Retiring {
    pub(crate) fn new(policy: DeletionPolicy) -> Self {
        Retiring { policy, events: Vec::new() }
    }

    pub(crate) fn policy(&self) -> DeletionPolicy {
        self.policy
    }

    pub(crate) fn event(&mut self, reason: &'static str, note: String) {
        self.events.push(CloudEvent { reason, note });
    }

    pub(crate) fn into_events(self) -> Vec<CloudEvent> {
        self.events
    }

    /// The preamble of every retirement: the tenant's resource as `found`, or `None` when
    /// there is none, or when the one of the tenant's name is not the tenant's (left untouched,
    /// with a warning).
    pub(crate) fn retirable<L>(
        &self,
        kind: ResourceKind,
        name: &str,
        found: Result<Option<L>, CloudError>,
    ) -> Result<Option<L>, CloudError> {
        match found {
            Err(CloudError::Foreign { detail, .. }) => {
                tracing::warn!(%kind, name, "not retiring a {kind} that is not the tenant's: {detail}");
                Ok(None)
            }
            found => found,
        }
    }

    /// The Retain policy: tags the kept resource `TAG_RETAINED=true` once, with a `Retained`
    /// event that names it as `kept`.
    pub(crate) async fn retain<Fut>(
        &mut self,
        live: &Tags,
        kept: String,
        tag: impl FnOnce(Tags) -> Fut,
    ) -> Result<(), CloudError>
    where
        Fut: Future<Output = Result<(), CloudError>>,
    {
        if !live.is_retained() {
            tag(Tags::retained()).await?;
            self.event(RETAINED, format!("kept {kept} and tagged it {TAG_RETAINED}=true"));
        }
        Ok(())
    }
}
