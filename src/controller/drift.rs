//! Event-driven drift detection (`--drift-events-queue-url`): CloudTrail management events that
//! change a tenant's bucket, key or role reach an SQS queue through an EventBridge rule
//! (`drift-events`, `deploy/aws/`); each names its resource, which maps to a tenant through the
//! IDs its status records, and that tenant's AWS verification is due at once. With it, a long
//! resync interval still finds a tampered bucket policy within seconds.
//!
//! Malformed, duplicate and unknown events, and the operator's own writes, are counted and
//! dropped; every message is deleted once read, so none can block the queue.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::context::AwsChecks;
use crate::api::ImagingTenant;
use crate::metrics::Metrics;

/// Event IDs remembered to drop SQS's duplicate deliveries.
const REMEMBERED: usize = 4096;

/// What became of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It names a resource of this tenant.
    Matched,
    /// It names no resource of a tenant of this operator.
    Unknown,
    /// Not a CloudTrail event as EventBridge delivers it.
    Malformed,
    /// Seen before (SQS delivers at least once).
    Duplicate,
    /// Made by the operator itself.
    Own,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::Unknown => "unknown",
            Outcome::Malformed => "malformed",
            Outcome::Duplicate => "duplicate",
            Outcome::Own => "own",
        }
    }
}

/// The resource names an event carries.
#[derive(Debug, Default, PartialEq, Eq)]
struct Named {
    id: String,
    values: Vec<String>,
    actor: Option<String>,
}

fn parse(body: &str) -> Option<Named> {
    let event: Value = serde_json::from_str(body).ok()?;
    if event.get("detail-type")?.as_str()? != "AWS API Call via CloudTrail" {
        return None;
    }
    let detail = event.get("detail")?;
    detail.get("eventSource")?.as_str()?;
    let id = event.get("id").and_then(Value::as_str).or_else(|| detail.get("eventID")?.as_str())?.to_string();
    let mut values = Vec::new();
    if let Some(params) = detail.get("requestParameters").and_then(Value::as_object) {
        for key in ["bucketName", "roleName", "keyId", "aliasName", "targetKeyId"] {
            if let Some(v) = params.get(key).and_then(Value::as_str) {
                values.push(v.to_string());
            }
        }
    }
    for list in [detail.get("resources"), event.get("resources")].into_iter().flatten() {
        for r in list.as_array().into_iter().flatten() {
            let arn = r.get("ARN").or_else(|| r.get("arn")).and_then(Value::as_str).or_else(|| r.as_str());
            values.extend(arn.map(str::to_string));
        }
    }
    let actor = detail
        .pointer("/userIdentity/sessionContext/sessionIssuer/arn")
        .or_else(|| detail.pointer("/userIdentity/arn"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(Named { id, values, actor })
}

/// The tenant whose recorded bucket, key or role the names match.
fn tenant_of(named: &Named, tenants: &[Arc<ImagingTenant>]) -> Option<Arc<ImagingTenant>> {
    tenants
        .iter()
        .find(|t| {
            let Some(status) = &t.status else { return false };
            let mut ours: Vec<&str> = Vec::new();
            if let Some(b) = &status.bucket {
                ours.extend([b.name.as_str(), b.arn.as_str()]);
            }
            if let Some(k) = &status.key {
                ours.extend([k.id.as_str(), k.arn.as_str(), k.alias.as_str()]);
            }
            if let Some(r) = &status.role {
                ours.extend([r.name.as_str(), r.arn.as_str()]);
            }
            // The replica's bucket, key and role, when the tenant replicates.
            if let Some(replica) = &status.replica {
                if let Some(b) = &replica.bucket {
                    ours.extend([b.name.as_str(), b.arn.as_str()]);
                }
                if let Some(k) = &replica.key {
                    ours.extend([k.id.as_str(), k.arn.as_str(), k.alias.as_str()]);
                }
                if let Some(r) = &replica.role {
                    ours.extend([r.name.as_str(), r.arn.as_str()]);
                }
            }
            ours.retain(|v| !v.is_empty());
            named.values.iter().any(|v| {
                ours.contains(&v.as_str())
                    // A bucket ARN with an object key, or an alias ARN ending in the alias name.
                    || ours.iter().any(|o| v.starts_with(&format!("{o}/")) || v.ends_with(&format!(":{o}")))
            })
        })
        .cloned()
}

/// Decides one message.
struct Judge {
    seen: HashSet<String>,
    order: VecDeque<String>,
    operator_role_arn: String,
}

impl Judge {
    fn judge(&mut self, body: &str, tenants: &[Arc<ImagingTenant>]) -> (Outcome, Option<Arc<ImagingTenant>>) {
        let Some(named) = parse(body) else { return (Outcome::Malformed, None) };
        if !self.seen.insert(named.id.clone()) {
            return (Outcome::Duplicate, None);
        }
        self.order.push_back(named.id.clone());
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        if named.actor.as_deref() == Some(self.operator_role_arn.as_str()) {
            return (Outcome::Own, None);
        }
        match tenant_of(&named, tenants) {
            Some(t) => (Outcome::Matched, Some(t)),
            None => (Outcome::Unknown, None),
        }
    }
}

/// Consumes the queue for as long as the operator runs; yields the tenants to reconcile.
pub(crate) fn start(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    operator_role_arn: String,
    tenants: Store<DeserializeGuard<ImagingTenant>>,
    checks: Arc<AwsChecks>,
    metrics: Arc<Metrics>,
) -> mpsc::UnboundedReceiver<ObjectRef<DeserializeGuard<ImagingTenant>>> {
    let (tx, rx) = mpsc::unbounded();
    info!(queue = %queue_url, "consuming drift events");
    tokio::spawn(async move {
        let mut judge = Judge { seen: HashSet::new(), order: VecDeque::new(), operator_role_arn };
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(20)
                .send()
                .await;
            let messages = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "receiving drift events failed; retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    continue;
                }
            };
            let current: Vec<Arc<ImagingTenant>> =
                tenants.state().iter().filter_map(|g| g.0.as_ref().ok().cloned().map(Arc::new)).collect();
            for message in messages {
                let (outcome, tenant) = judge.judge(message.body().unwrap_or_default(), &current);
                metrics.drift_event(outcome.label());
                if let Some(t) = tenant {
                    debug!(tenant = %t.name_any(), "drift event: verifying the tenant's AWS resources now");
                    checks.stale(t.metadata.uid.as_deref().unwrap_or_default());
                    if tx.unbounded_send(ObjectRef::new(&t.name_any())).is_err() {
                        return;
                    }
                }
                if let Some(handle) = message.receipt_handle()
                    && let Err(e) = sqs.delete_message().queue_url(&queue_url).receipt_handle(handle).send().await
                {
                    warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "deleting a drift event failed; it comes back after its visibility timeout");
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant() -> Arc<ImagingTenant> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant",
                "metadata": {"name": "group-a", "uid": "u-1"}, "spec": {},
                "status": {
                    "bucket": {"name": "imaging-group-a-1234", "arn": "arn:aws:s3:::imaging-group-a-1234"},
                    "key": {"id": "k-1", "arn": "arn:aws:kms:us-east-1:123456789012:key/k-1", "alias": "alias/imaging/c/group-a-1234"},
                    "role": {"name": "imaging-group-a-1234", "arn": "arn:aws:iam::123456789012:role/imaging-tenants/imaging-group-a-1234"},
                    "replica": {
                        "bucket": {"name": "imaging-group-a-1234-dr", "region": "eu-west-1"},
                        "key": {"id": "k-2", "arn": "arn:aws:kms:eu-west-1:123456789012:key/k-2"},
                        "role": {"name": "imaging-group-a-1234-replication"},
                    },
                },
            }))
            .unwrap(),
        )
    }

    fn event(id: &str, source: &str, params: Value, actor: &str) -> String {
        json!({
            "version": "0", "id": id, "detail-type": "AWS API Call via CloudTrail", "source": format!("aws.{source}"),
            "detail": {"eventSource": format!("{source}.amazonaws.com"), "eventName": "X", "requestParameters": params,
                       "userIdentity": {"type": "AssumedRole", "sessionContext": {"sessionIssuer": {"arn": actor}}}},
        })
        .to_string()
    }

    #[test]
    fn events_map_to_their_tenant_once() {
        let tenants = vec![tenant()];
        let mut judge = Judge { seen: HashSet::new(), order: VecDeque::new(), operator_role_arn: "arn:op".into() };
        let bucket = event("1", "s3", json!({"bucketName": "imaging-group-a-1234"}), "arn:someone");
        assert_eq!(judge.judge(&bucket, &tenants).0, Outcome::Matched);
        assert_eq!(judge.judge(&bucket, &tenants).0, Outcome::Duplicate);
        let key = event("2", "kms", json!({"keyId": "arn:aws:kms:us-east-1:123456789012:key/k-1"}), "arn:someone");
        assert_eq!(judge.judge(&key, &tenants).0, Outcome::Matched);
        let role = event("3", "iam", json!({"roleName": "imaging-group-a-1234"}), "arn:someone");
        assert_eq!(judge.judge(&role, &tenants).0, Outcome::Matched);
        let other = event("4", "s3", json!({"bucketName": "someone-elses"}), "arn:someone");
        assert_eq!(judge.judge(&other, &tenants).0, Outcome::Unknown);
        let own = event("5", "s3", json!({"bucketName": "imaging-group-a-1234"}), "arn:op");
        assert_eq!(judge.judge(&own, &tenants).0, Outcome::Own);
        for bad in ["", "not json", "{}", r#"{"detail-type":"Scheduled Event","id":"x","detail":{}}"#, "[1,2]"] {
            assert_eq!(judge.judge(bad, &tenants).0, Outcome::Malformed, "{bad}");
        }
        let similar = event("6", "s3", json!({"bucketName": "imaging-group-a-12345"}), "arn:someone");
        assert_eq!(judge.judge(&similar, &tenants).0, Outcome::Unknown, "a longer name is another bucket");
        let replica = event("7", "s3", json!({"bucketName": "imaging-group-a-1234-dr"}), "arn:someone");
        assert_eq!(judge.judge(&replica, &tenants).0, Outcome::Matched, "the replica bucket is the tenant's");
        let replica_key = event("8", "kms", json!({"keyId": "k-2"}), "arn:someone");
        assert_eq!(judge.judge(&replica_key, &tenants).0, Outcome::Matched);
        let replication_role =
            event("9", "iam", json!({"roleName": "imaging-group-a-1234-replication"}), "arn:someone");
        assert_eq!(judge.judge(&replication_role, &tenants).0, Outcome::Matched);
    }
}
