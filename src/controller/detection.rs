//! Drift the operator found and repaired, as evidence: which controls judge each setting it
//! repairs, so that the report shows them failing for the pass that found the change (with
//! what was found and that it was restored) before the next reading shows them passing again.

use super::children::ObjectRepair;
use crate::cloud::{Repair, ResourceKind};

/// A setting found changed and restored in this pass, and the controls that judge it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Detection {
    pub(crate) controls: &'static [&'static str],
    /// What was found and done.
    pub(crate) note: String,
}

/// The controls judging an AWS setting, by resource kind and the setting as the converge step
/// names it. Settings no control judges (the role's tags) map to none.
const AWS: &[(ResourceKind, &str, &[&str])] = &[
    (ResourceKind::Bucket, "Block Public Access", &["ITO-S3-01"]),
    (ResourceKind::Bucket, "Object Ownership", &["ITO-S3-02"]),
    (ResourceKind::Bucket, "bucket policy", &["ITO-S3-03", "ITO-S3-10", "ITO-S3-11"]),
    (ResourceKind::Bucket, "default encryption", &["ITO-S3-04", "ITO-S3-05"]),
    (ResourceKind::Bucket, "versioning", &["ITO-S3-06"]),
    (ResourceKind::Bucket, "Object Lock", &["ITO-S3-07"]),
    (ResourceKind::Bucket, "lifecycle rules", &["ITO-S3-08"]),
    (ResourceKind::Bucket, "server access logging", &["ITO-S3-09"]),
    (ResourceKind::Bucket, "tags", &["ITO-S3-12"]),
    (ResourceKind::Key, "key state", &["ITO-KMS-01"]),
    (ResourceKind::Key, "scheduled deletion", &["ITO-KMS-01", "ITO-KMS-02"]),
    (ResourceKind::Key, "automatic rotation", &["ITO-KMS-03"]),
    (ResourceKind::Key, "key policy", &["ITO-KMS-04"]),
    (ResourceKind::Key, "alias", &["ITO-KMS-07"]),
    (ResourceKind::Key, "tags", &["ITO-KMS-07"]),
    (ResourceKind::Role, "trust policy", &["ITO-IAM-01"]),
    (ResourceKind::Role, "permissions boundary", &["ITO-IAM-02"]),
    (ResourceKind::Role, "inline policy", &["ITO-IAM-03", "ITO-IAM-04"]),
    (ResourceKind::Role, "other inline policy", &["ITO-IAM-04", "ITO-IAM-05"]),
    (ResourceKind::Role, "managed policy", &["ITO-IAM-05"]),
];

/// The controls judging an object in a tenant namespace, by kind and name (`None`: any name).
const KUBERNETES: &[(&str, Option<&str>, &[&str])] = &[
    ("NetworkPolicy", Some("imaging-default-deny"), &["ITO-K8S-03"]),
    ("NetworkPolicy", None, &["ITO-K8S-04"]),
    ("RoleBinding", None, &["ITO-K8S-05", "ITO-K8S-06"]),
    ("ResourceQuota", None, &["ITO-K8S-07"]),
    ("ServiceAccount", None, &["ITO-K8S-09"]),
];

/// The controls judging the replica's resources and the replication configuration, whatever the
/// setting: each judges all of one resource's settings.
const REPLICA: &[(ResourceKind, &[&str])] = &[
    (ResourceKind::Bucket, &["ITO-DR-02"]),
    (ResourceKind::Key, &["ITO-DR-03"]),
    (ResourceKind::Role, &["ITO-DR-04"]),
];

fn aws_controls(repair: &Repair) -> &'static [&'static str] {
    if repair.what == "replication configuration" {
        return &["ITO-DR-01"];
    }
    if repair.replica {
        return REPLICA.iter().find(|(k, _)| *k == repair.kind).map_or(&[], |(_, ids)| ids);
    }
    AWS.iter().find(|(k, w, _)| *k == repair.kind && *w == repair.what).map_or(&[], |(_, _, ids)| ids)
}

fn kubernetes_controls(kind: &str, name: &str) -> &'static [&'static str] {
    KUBERNETES.iter().find(|(k, n, _)| *k == kind && n.is_none_or(|n| n == name)).map_or(&[], |(_, _, ids)| ids)
}

/// What the AWS verification and the apply of this pass repaired, judged by some control.
pub(crate) fn detections(aws: &[Repair], kubernetes: &[ObjectRepair]) -> Vec<Detection> {
    let aws = aws.iter().map(|r| Detection { controls: aws_controls(r), note: r.note.clone() });
    let kubernetes =
        kubernetes.iter().map(|r| Detection { controls: kubernetes_controls(&r.kind, &r.name), note: r.note.clone() });
    aws.chain(kubernetes).filter(|d| !d.controls.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::controls::CONTROLS;

    #[test]
    fn every_mapped_control_is_in_the_catalogue() {
        let mapped = AWS
            .iter()
            .flat_map(|(_, _, ids)| *ids)
            .chain(REPLICA.iter().flat_map(|(_, ids)| *ids))
            .chain(KUBERNETES.iter().flat_map(|(_, _, ids)| *ids))
            .chain(["ITO-DR-01"].iter());
        for id in mapped {
            assert!(CONTROLS.iter().any(|c| c.id == *id), "{id} is not a control");
        }
    }

    #[test]
    fn the_default_deny_and_the_other_network_policies_are_judged_by_their_own_controls() {
        assert_eq!(kubernetes_controls("NetworkPolicy", "imaging-default-deny"), ["ITO-K8S-03"]);
        assert_eq!(kubernetes_controls("NetworkPolicy", "imaging-allow-dns"), ["ITO-K8S-04"]);
        assert_eq!(kubernetes_controls("LimitRange", "imaging-limits"), [] as [&str; 0]);
    }

    #[test]
    fn repairs_no_control_judges_are_left_out() {
        let repair = |kind, what: &'static str| Repair { kind, what, replica: false, note: format!("restored {what}") };
        let found = detections(
            &[repair(ResourceKind::Role, "tags"), repair(ResourceKind::Bucket, "versioning")],
            &[ObjectRepair { kind: "RoleBinding".into(), name: "imaging-admins".into(), note: "changed".into() }],
        );
        let controls: Vec<_> = found.iter().map(|d| d.controls).collect();
        assert_eq!(controls, [&["ITO-S3-06"][..], &["ITO-K8S-05", "ITO-K8S-06"][..]]);
        assert_eq!(found[0].note, "restored versioning");
    }

    #[test]
    fn the_replicas_repairs_are_judged_by_the_replication_controls() {
        let replica = |kind, what: &'static str| Repair { kind, what, replica: true, note: String::new() };
        let found = detections(
            &[
                replica(ResourceKind::Bucket, "versioning"),
                replica(ResourceKind::Key, "automatic rotation"),
                replica(ResourceKind::Role, "trust policy"),
                Repair { replica: false, ..replica(ResourceKind::Bucket, "replication configuration") },
            ],
            &[],
        );
        let controls: Vec<_> = found.iter().map(|d| d.controls).collect();
        assert_eq!(controls, [&["ITO-DR-02"][..], &["ITO-DR-03"], &["ITO-DR-04"], &["ITO-DR-01"]]);
    }
}
