//! What the role, the key and the bucket do the same way: converge a setting (read, compare,
//! write what differs, read back), and the preamble and Retain tagging of retirement.

use std::future::Future;

use super::error::{CloudError, ResourceKind};
use super::sdk::Tags;
use super::{CloudEvent, RETAINED, Step};
use crate::desired::aws::TAG_RETAINED;

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
        step.repaired(self.kind, repaired(&live));
        Ok(())
    }
}

/// The preamble of every retirement: the tenant's resource as `found`, or `None` when there is
/// none, or when the one of the tenant's name is not the tenant's (left untouched, with a warning).
pub(crate) fn retirable<L>(
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

/// The Retain policy: tags the kept resource `TAG_RETAINED=true` once, with a `Retained` event
/// that names it as `kept`.
pub(crate) async fn retain<Fut>(
    live: &Tags,
    kept: String,
    events: &mut Vec<CloudEvent>,
    tag: impl FnOnce(Tags) -> Fut,
) -> Result<(), CloudError>
where
    Fut: Future<Output = Result<(), CloudError>>,
{
    if !live.is_retained() {
        tag(Tags::retained()).await?;
        events.push(CloudEvent { reason: RETAINED, note: format!("kept {kept} and tagged it {TAG_RETAINED}=true") });
    }
    Ok(())
}
