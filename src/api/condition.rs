//! Status conditions: the types, and how a new set is merged with the previous one so that
//! `lastTransitionTime` only moves when a condition's status actually changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, SchemaGenerator, json_schema};

pub const NAMESPACES_READY: &str = "NamespacesReady";
pub const NETWORK_ISOLATED: &str = "NetworkIsolated";
pub const ACCESS_BOUND: &str = "AccessBound";
pub const QUOTA_APPLIED: &str = "QuotaApplied";
pub const IDENTITY_READY: &str = "IdentityReady";
pub const KEY_READY: &str = "KeyReady";
pub const BUCKET_READY: &str = "BucketReady";
pub const BUCKET_SECURED: &str = "BucketSecured";
/// The layers that keep people inside a tenant from undoing its isolation are in force.
pub const GUARDED: &str = "Guarded";
/// The replica bucket and its key exist in the replication region and every setting of the
/// replica bucket was read back and matches. Reported only for a tenant that replicates.
pub const REPLICA_READY: &str = "ReplicaReady";
/// The replication role and the tenant bucket's replication configuration are in place, and
/// the replica key it names was verified. Reported only for a tenant that replicates.
pub const REPLICATION_CONFIGURED: &str = "ReplicationConfigured";
pub const READY: &str = "Ready";
/// kstatus: True while work or a retry is pending (the operator gets there on its own).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: True when a person must act (a conflict, access denied, invalid settings); the
/// operator waits for a change.
pub const STALLED: &str = "Stalled";
/// Set only while a Delete-policy tenant cannot be removed yet (for example a non-empty bucket).
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// Every condition that must be True for Ready, in the order they are reported. The replica
/// conditions are reported, and so held against Ready, only for a tenant that replicates.
pub const PARTS: [&str; 11] = [
    NAMESPACES_READY,
    NETWORK_ISOLATED,
    ACCESS_BOUND,
    QUOTA_APPLIED,
    GUARDED,
    IDENTITY_READY,
    KEY_READY,
    BUCKET_READY,
    BUCKET_SECURED,
    REPLICA_READY,
    REPLICATION_CONFIGURED,
];

/// The condition types about the tenant as a whole; with `PARTS`, every type the operator writes.
pub const OVERALL: [&str; 4] = [READY, RECONCILING, STALLED, DELETION_BLOCKED];

/// A condition as the reconciler decides it, before timestamps and generation are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
    /// Failed in a way that trying again cannot fix: a person must act.
    pub stalled: bool,
}

impl Verdict {
    pub fn ok(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Verdict { type_, ok: true, reason: reason.into(), message: message.into(), stalled: false }
    }

    pub fn failed(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Verdict { type_, ok: false, reason: reason.into(), message: message.into(), stalled: false }
    }

    /// A failure only a person can fix when `needs_person` (a failed verdict only).
    pub fn stalled_if(mut self, needs_person: bool) -> Self {
        self.stalled = !self.ok && needs_person;
        self
    }
}

/// Turns verdicts into conditions, keeping the previous `lastTransitionTime` of every condition
/// whose status did not change, so that an unchanged tenant gets a byte-identical status.
pub fn merge(previous: &[Condition], verdicts: &[Verdict], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|v| {
            let status = if v.ok { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: v.type_.to_string(),
                status: status.to_string(),
                reason: v.reason.clone(),
                message: v.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Ready summarises the parts: True when all are (but those in `optional`), otherwise False
/// naming the first that is not.
pub fn ready(parts: &[Verdict], optional: &[&str]) -> Verdict {
    match parts.iter().find(|v| !v.ok && !optional.contains(&v.type_)) {
        None => Verdict::ok(
            READY,
            "Provisioned",
            "every namespace, policy, binding, quota and AWS resource is in place and verified",
        ),
        Some(v) => Verdict::failed(READY, v.reason.clone(), format!("{}: {}", v.type_, v.message)),
    }
}

/// kstatus's `Reconciling` and `Stalled` from the parts and Ready, never both True: Stalled
/// when a required part failed in a way only a person can fix (named by the first such part),
/// otherwise Reconciling while Ready is False (with Ready's reason and message).
pub fn progress(parts: &[Verdict], ready: &Verdict, optional: &[&str]) -> [Verdict; 2] {
    if ready.ok {
        return [
            Verdict::failed(RECONCILING, "Reconciled", "everything is in place; nothing is pending"),
            Verdict::failed(STALLED, "Reconciled", "everything is in place; nothing needs a person"),
        ];
    }
    match parts.iter().find(|v| v.stalled && !v.ok && !optional.contains(&v.type_)) {
        Some(v) => [
            Verdict::failed(
                RECONCILING,
                "Stalled",
                "the operator waits for a change before it tries again; see Stalled",
            ),
            Verdict::ok(STALLED, v.reason.clone(), format!("{}: {}", v.type_, v.message)),
        ],
        None => [
            Verdict::ok(RECONCILING, ready.reason.clone(), ready.message.clone()),
            Verdict::failed(
                STALLED,
                "Progressing",
                "nothing needs a person yet: the operator is working or retrying with back-off",
            ),
        ],
    }
}

/// The status of a tenant the operator has just seen, written before any other work so that
/// tools waiting on it see at once that it is being worked on.
pub fn first_seen() -> Vec<Verdict> {
    let reason = "Provisioning";
    let message =
        "the operator has taken up this tenant: namespaces, policies, bindings, quota and AWS resources come next";
    vec![
        Verdict::failed(READY, reason, message),
        Verdict::ok(RECONCILING, reason, message),
        Verdict::failed(STALLED, "Progressing", "nothing needs a person yet: the operator is working"),
    ]
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Schema of `status.conditions`: metav1.Condition items in a list keyed by `type`.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "maxLength": 316, "description": "Type of condition in CamelCase."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0, "description": "The metadata.generation the condition was set for."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "reason": {"type": "string", "maxLength": 1024, "description": "Why, in CamelCase."},
                "message": {"type": "string", "maxLength": 32768, "description": "What happened and what to do, for a person."}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let first = merge(&[], &[Verdict::ok(KEY_READY, "Created", "ok")], Some(1), &at(100));
        let second = merge(&first, &[Verdict::ok(KEY_READY, "Created", "ok")], Some(1), &at(200));
        assert_eq!(first, second);
    }

    #[test]
    fn changed_status_moves_its_transition_time() {
        let first = merge(&[], &[Verdict::ok(KEY_READY, "Created", "ok")], Some(1), &at(100));
        let second = merge(&first, &[Verdict::failed(KEY_READY, "AccessDenied", "no")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(200));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn ready_names_the_first_failing_part() {
        let parts = vec![
            Verdict::ok(NAMESPACES_READY, "Created", "ok"),
            Verdict::failed(BUCKET_READY, "AccessDenied", "s3:CreateBucket denied"),
        ];
        let r = ready(&parts, &[]);
        assert!(!r.ok);
        assert_eq!(r.reason, "AccessDenied");
        assert!(r.message.starts_with("BucketReady:"));
    }

    fn progress_of(parts: &[Verdict], optional: &[&str]) -> [Verdict; 2] {
        progress(parts, &ready(parts, optional), optional)
    }

    #[test]
    fn a_ready_tenant_is_neither_reconciling_nor_stalled() {
        let [reconciling, stalled] = progress_of(&[Verdict::ok(NAMESPACES_READY, "NamespacesOwned", "ok")], &[]);
        assert!(!reconciling.ok && !stalled.ok);
    }

    #[test]
    fn pending_work_is_reconciling() {
        let parts = vec![
            Verdict::ok(NAMESPACES_READY, "NamespacesOwned", "ok"),
            Verdict::failed(KEY_READY, "ThrottlingException", "retrying with back-off"),
        ];
        let [reconciling, stalled] = progress_of(&parts, &[]);
        assert!(reconciling.ok && !stalled.ok);
        assert_eq!(reconciling.reason, "ThrottlingException");
        assert!(reconciling.message.starts_with("KeyReady:"), "{}", reconciling.message);
    }

    #[test]
    fn a_failure_only_a_person_can_fix_stalls_even_beside_pending_work() {
        let parts = vec![
            Verdict::failed(NAMESPACES_READY, "NamespaceTerminating", "being deleted"),
            Verdict::failed(IDENTITY_READY, "AccessDenied", "iam:CreateRole denied").stalled_if(true),
            Verdict::failed(KEY_READY, "WaitingForRole", "waits"),
        ];
        let [reconciling, stalled] = progress_of(&parts, &[]);
        assert!(!reconciling.ok && stalled.ok);
        assert_eq!(stalled.reason, "AccessDenied");
        assert!(stalled.message.starts_with("IdentityReady: iam:CreateRole"), "{}", stalled.message);
    }

    #[test]
    fn an_optional_part_does_not_stall() {
        let parts = vec![
            Verdict::failed(NAMESPACES_READY, "NamespaceTerminating", "being deleted"),
            Verdict::failed(GUARDED, "AdmissionPoliciesMissing", "no").stalled_if(true),
        ];
        let [reconciling, stalled] = progress_of(&parts, &[GUARDED]);
        assert!(reconciling.ok && !stalled.ok);
    }

    #[test]
    fn only_a_failure_can_stall() {
        assert!(!Verdict::ok(KEY_READY, "Provisioned", "ok").stalled_if(true).stalled);
    }

    #[test]
    fn an_optional_part_does_not_hold_ready() {
        let parts = vec![
            Verdict::ok(NAMESPACES_READY, "Created", "ok"),
            Verdict::failed(GUARDED, "AdmissionPoliciesUnsupported", "no"),
        ];
        assert!(ready(&parts, &[GUARDED]).ok);
        assert!(!ready(&parts, &[]).ok);
    }
}
