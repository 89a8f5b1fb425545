//! Each control passes on what the operator builds and fails on one change behind its back.

use super::*;
use crate::api::ImagingTenant;
use crate::api::metadata::{ADMISSION_GUARDS, GUARD_LABEL};
use crate::desired::aws::{ObjectLockRetention, render_with_keys};
use crate::desired::cluster_network::Flavor;
use crate::evidence::live::{AdminNetworkEvidence, AwsEvidence, KubernetesEvidence, ReplicaEvidence};

const KEY_ARN: &str = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const REPLICA_KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/9876fedc-12ab-34cd-56ef-1234567890ab";
const AUDITOR: &str = "arn:aws:iam::111122223333:role/auditors/imaging-evidence";
const UID: &str = "6f1c3a52-5a3e-4c1e-9d7a-0b6a0c2f1e11";

fn settings() -> Settings {
    Settings {
        cluster_name: "prod-1".into(),
        region: "eu-central-1".into(),
        partition: "aws".into(),
        account_id: "111122223333".into(),
        bucket_prefix: "acme-img".into(),
        audit_log_bucket: Some("acme-audit-logs".into()),
        oidc_provider_arn:
            "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
                .into(),
        operator_role_arn: "arn:aws:iam::111122223333:role/imaging-tenant-operator".into(),
        break_glass_role_arn: Some("arn:aws:iam::111122223333:role/ops/break-glass".into()),
        auditor_role_arns: vec![AUDITOR.into()],
        permissions_boundary_arn: "arn:aws:iam::111122223333:policy/imaging-tenant-boundary".into(),
        workload_service_account: "imaging-workload".into(),
        s3_vpc_endpoint_ids: Vec::new(),
        replication_region: Some("eu-west-1".into()),
        ..Settings::placeholder()
    }
}

fn tenant() -> ImagingTenant {
    serde_json::from_value(json!({
        "apiVersion": "imaging.tenancy.dev/v1alpha1",
        "kind": "ImagingTenant",
        "metadata": {"name": "group-a", "uid": UID},
        "spec": {
            "namespaces": [{"name": "group-a"}, {"name": "group-a-ai"}],
            "access": {
                "admins": [{"kind": "Group", "name": "oidc:group-a-admins"}],
                "viewers": [{"kind": "User", "name": "alice@group-a.example"}]
            },
            "network": {"allowIngressFrom": [{"namespace": "ingress-nginx"}], "allowEgressTo": [{"cidr": "10.20.0.0/16"}]},
            "storage": {
                "retention": {"mode": "Governance", "days": 2555},
                "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 2555},
                "replication": {"replicationTimeControl": true}
            }
        }
    }))
    .expect("a valid tenant")
}

fn guard(name: &str) -> GuardEvidence {
    GuardEvidence {
        policy: json!({
            "metadata": {"name": format!("ito-{name}"), "labels": {GUARD_LABEL: name}},
            "spec": {"failurePolicy": "Fail"},
        }),
        bindings: vec![json!({
            "metadata": {"name": format!("ito-{name}")},
            "spec": {"policyName": format!("ito-{name}"), "validationActions": ["Deny"], "matchResources": {"namespaceSelector": {}}},
        })],
    }
}

/// What the operator builds, as it would be read back.
fn good() -> TenantEvidence {
    let tenant = tenant();
    let settings = settings();
    let objects = kubernetes::objects(&tenant, &settings);
    let aws = render_with_keys(&tenant, &settings, Some(KEY_ARN), Some(REPLICA_KEY_ARN));
    let in_ns = |list: Vec<Value>, ns: &str| -> Vec<Value> {
        list.into_iter().filter(|o| o["metadata"]["namespace"] == ns).collect()
    };
    let namespaces = objects
        .namespaces
        .iter()
        .map(|ns| {
            let name = ns.metadata.name.clone().unwrap();
            let mut object = kubernetes::to_json(ns);
            object["metadata"]["labels"][NAMESPACE_NAME_LABEL] = json!(name);
            NamespaceEvidence {
                object: Ok(Some(object)),
                network_policies: Ok(in_ns(objects.network_policies.iter().map(kubernetes::to_json).collect(), &name)),
                role_bindings: Ok(in_ns(objects.role_bindings.iter().map(kubernetes::to_json).collect(), &name)),
                resource_quotas: Ok(in_ns(objects.resource_quotas.iter().map(kubernetes::to_json).collect(), &name)),
                service_accounts: Ok(in_ns(objects.service_accounts.iter().map(kubernetes::to_json).collect(), &name)),
                name,
            }
        })
        .collect();
    let b = aws.bucket.clone();
    TenantEvidence {
        kubernetes: KubernetesEvidence {
            labelled_namespaces: Ok(tenant.namespace_names()),
            namespaces,
            guards: Ok(ADMISSION_GUARDS.iter().map(|g| guard(g)).collect()),
            admin_network: Ok(vec![AdminNetworkEvidence {
                flavor: Flavor::ClusterNetworkPolicy,
                policy: Some(cluster_network::policy(&tenant, &tenant.namespace_names(), Flavor::ClusterNetworkPolicy)),
            }]),
        },
        aws: AwsEvidence {
            bucket: Ok(Some(BucketEvidence {
                name: b.name.clone(),
                tags: Ok(b.tags.clone()),
                public_access_block: Ok(Some(b.block_public_access)),
                ownership: Ok(Some(b.object_ownership.clone())),
                encryption: Ok(Some(b.encryption.clone())),
                versioning: Ok(Some("Enabled".into())),
                object_lock: Ok(ObjectLock { enabled: true, retention: b.object_lock.clone() }),
                lifecycle: Ok({
                    let mut rules = b.lifecycle.clone();
                    rules.sort();
                    rules
                }),
                logging: Ok(b.logging.clone()),
                policy: Ok(Some(b.policy.clone())),
            })),
            key: Ok(Some(KeyEvidence {
                id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
                arn: KEY_ARN.into(),
                state: "Enabled".into(),
                origin: "AWS_KMS".into(),
                multi_region: false,
                key_manager: "CUSTOMER".into(),
                deletion_date: None,
                alias_target: Ok(Some("1234abcd-12ab-34cd-56ef-1234567890ab".into())),
                rotation: Ok(true),
                policy: Ok(Some(aws.key.policy.clone())),
                grants: Ok(Vec::new()),
                tags: Ok(aws.key.tags.clone()),
            })),
            role: Ok(Some(RoleEvidence {
                arn: aws.role.arn.clone(),
                trust_policy: Some(aws.role.trust_policy.clone()),
                boundary: Some(aws.role.permissions_boundary.clone()),
                tags: aws.role.tags.clone(),
                inline_policies: Ok(BTreeMap::from([(
                    aws.role.inline_policy_name.clone(),
                    aws.role.inline_policy.clone(),
                )])),
                attached_policies: Ok(Vec::new()),
            })),
            replica: Some(replica_as_built(aws.replication.as_ref().expect("the tenant replicates"))),
        },
        tenant,
    }
}

/// The replica side as the operator builds it, read back.
fn replica_as_built(r: &crate::desired::aws::ReplicationAws) -> ReplicaEvidence {
    ReplicaEvidence {
        region: r.region.clone(),
        configuration: Ok(Some(r.configuration.clone())),
        bucket: Ok(Some(BucketEvidence {
            name: r.bucket.name.clone(),
            tags: Ok(r.bucket.tags.clone()),
            public_access_block: Ok(Some(r.bucket.block_public_access)),
            ownership: Ok(Some(r.bucket.object_ownership.clone())),
            encryption: Ok(Some(r.bucket.encryption.clone())),
            versioning: Ok(Some("Enabled".into())),
            object_lock: Ok(ObjectLock { enabled: true, retention: r.bucket.object_lock.clone() }),
            lifecycle: Ok(r.bucket.lifecycle.clone()),
            logging: Ok(None),
            policy: Ok(Some(r.bucket.policy.clone())),
        })),
        key: Ok(Some(KeyEvidence {
            id: "9876fedc-12ab-34cd-56ef-1234567890ab".into(),
            arn: REPLICA_KEY_ARN.into(),
            state: "Enabled".into(),
            origin: "AWS_KMS".into(),
            multi_region: false,
            key_manager: "CUSTOMER".into(),
            deletion_date: None,
            alias_target: Ok(Some("9876fedc-12ab-34cd-56ef-1234567890ab".into())),
            rotation: Ok(true),
            policy: Ok(Some(r.key.policy.clone())),
            grants: Ok(Vec::new()),
            tags: Ok(r.key.tags.clone()),
        })),
        role: Ok(Some(RoleEvidence {
            arn: r.role.arn.clone(),
            trust_policy: Some(r.role.trust_policy.clone()),
            boundary: Some(r.role.permissions_boundary.clone()),
            tags: r.role.tags.clone(),
            inline_policies: Ok(BTreeMap::from([(r.role.inline_policy_name.clone(), r.role.inline_policy.clone())])),
            attached_policies: Ok(Vec::new()),
        })),
    }
}

fn replica(ev: &mut TenantEvidence) -> &mut ReplicaEvidence {
    ev.aws.replica.as_mut().unwrap()
}

fn outcome(ev: &TenantEvidence, id: &str) -> Outcome {
    evaluate(ev, &settings()).into_iter().find(|f| f.control.id == id).expect("a control of that ID").outcome
}

fn ns(ev: &mut TenantEvidence, i: usize) -> &mut NamespaceEvidence {
    &mut ev.kubernetes.namespaces[i]
}

fn list(r: &mut Read<Vec<Value>>) -> &mut Vec<Value> {
    r.as_mut().unwrap()
}

fn named<'a>(list: &'a mut [Value], name: &str) -> &'a mut Value {
    list.iter_mut().find(|o| o["metadata"]["name"] == name).unwrap()
}

fn bucket(ev: &mut TenantEvidence) -> &mut BucketEvidence {
    ev.aws.bucket.as_mut().unwrap().as_mut().unwrap()
}

fn key(ev: &mut TenantEvidence) -> &mut KeyEvidence {
    ev.aws.key.as_mut().unwrap().as_mut().unwrap()
}

fn role(ev: &mut TenantEvidence) -> &mut RoleEvidence {
    ev.aws.role.as_mut().unwrap().as_mut().unwrap()
}

fn bucket_statement<'a>(ev: &'a mut TenantEvidence, sid: &str) -> &'a mut Value {
    let policy = bucket(ev).policy.as_mut().unwrap().as_mut().unwrap();
    policy["Statement"].as_array_mut().unwrap().iter_mut().find(|s| s["Sid"] == sid).unwrap()
}

type Tamper = fn(&mut TenantEvidence);

/// For every control, one change an attacker or a mistake could make, which it must catch.
fn tampers() -> Vec<(&'static str, Tamper)> {
    vec![
        ("ITO-K8S-01", |ev| list_push(&mut ev.kubernetes.labelled_namespaces, "someone-else")),
        ("ITO-K8S-02", |ev| {
            let object = ns(ev, 1).object.as_mut().unwrap().as_mut().unwrap();
            object["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("privileged");
        }),
        ("ITO-K8S-03", |ev| {
            let p = named(list(&mut ns(ev, 0).network_policies), DEFAULT_DENY);
            p["spec"]["ingress"] = json!([{}]);
        }),
        ("ITO-K8S-04", |ev| {
            let p = named(list(&mut ns(ev, 1).network_policies), ALLOW_EGRESS);
            p["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = json!("0.0.0.0/0");
        }),
        ("ITO-K8S-05", |ev| {
            list(&mut ns(ev, 0).role_bindings).push(json!({
                "metadata": {"name": "sneaky"},
                "roleRef": {"kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "Group", "name": "system:authenticated"}],
            }));
        }),
        ("ITO-K8S-06", |ev| {
            let b = named(list(&mut ns(ev, 0).role_bindings), "imaging-viewers");
            b["roleRef"]["name"] = json!("cluster-admin");
        }),
        ("ITO-K8S-07", |ev| list(&mut ns(ev, 1).resource_quotas).clear()),
        ("ITO-K8S-08", |ev| {
            ev.kubernetes.guards.as_mut().unwrap()[2].bindings[0]["spec"]["validationActions"] = json!(["Audit"]);
        }),
        ("ITO-K8S-09", |ev| {
            let sa = named(list(&mut ns(ev, 0).service_accounts), "imaging-workload");
            sa["metadata"]["annotations"][IRSA_ANNOTATION] =
                json!("arn:aws:iam::111122223333:role/imaging-tenants/other");
        }),
        ("ITO-K8S-10", |ev| {
            let object = ns(ev, 0).object.as_mut().unwrap().as_mut().unwrap();
            object["metadata"]["ownerReferences"] = json!([{"kind": "ImagingTenant", "name": "group-a", "uid": UID}]);
        }),
        ("ITO-K8S-11", |ev| {
            let policy = ev.kubernetes.admin_network.as_mut().unwrap()[0].policy.as_mut().unwrap();
            policy["spec"]["priority"] = json!(999);
        }),
        ("ITO-S3-01", |ev| {
            bucket(ev).public_access_block.as_mut().unwrap().as_mut().unwrap().restrict_public_buckets = false
        }),
        ("ITO-S3-02", |ev| bucket(ev).ownership = Ok(Some("ObjectWriter".into()))),
        ("ITO-S3-03", |ev| {
            let policy = bucket(ev).policy.as_mut().unwrap().as_mut().unwrap();
            policy["Statement"].as_array_mut().unwrap().retain(|s| s["Sid"] != "DenyInsecureTransport");
        }),
        ("ITO-S3-04", |ev| bucket(ev).encryption.as_mut().unwrap().as_mut().unwrap().sse_algorithm = "AES256".into()),
        ("ITO-S3-05", |ev| bucket(ev).encryption.as_mut().unwrap().as_mut().unwrap().bucket_key_enabled = false),
        ("ITO-S3-06", |ev| bucket(ev).versioning = Ok(Some("Suspended".into()))),
        ("ITO-S3-07", |ev| {
            bucket(ev).object_lock = Ok(ObjectLock {
                enabled: true,
                retention: Some(ObjectLockRetention { mode: "GOVERNANCE".into(), days: 1 }),
            })
        }),
        ("ITO-S3-08", |ev| {
            bucket(ev).lifecycle.as_mut().unwrap()[1].noncurrent_version_expiration_days = Some(1);
        }),
        ("ITO-S3-09", |ev| bucket(ev).logging = Ok(None)),
        ("ITO-S3-10", |ev| {
            let s = bucket_statement(ev, "DenyAllButTenantRoleAndAdministrators");
            s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
                .as_array_mut()
                .unwrap()
                .push(json!("arn:aws:iam::999999999999:root"));
        }),
        ("ITO-S3-11", |ev| {
            bucket_statement(ev, "DenyOtherKmsKeys")["Condition"]["StringNotEqualsIfExists"]["s3:x-amz-server-side-encryption-aws-kms-key-id"] =
                json!("arn:aws:kms:eu-central-1:999999999999:key/x");
        }),
        ("ITO-S3-12", |ev| {
            bucket(ev).tags.as_mut().unwrap().insert(TENANT_UID_LABEL.into(), "another-tenant".into());
        }),
        ("ITO-KMS-01", |ev| key(ev).state = "Disabled".into()),
        ("ITO-KMS-02", |ev| {
            key(ev).state = "PendingDeletion".into();
            key(ev).deletion_date = Some("2026-12-30T00:00:00Z".into());
        }),
        ("ITO-KMS-03", |ev| key(ev).rotation = Ok(false)),
        ("ITO-KMS-04", |ev| {
            let policy = key(ev).policy.as_mut().unwrap().as_mut().unwrap();
            policy["Statement"].as_array_mut().unwrap().push(json!({
                "Sid": "EnableIamUserPermissions", "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*",
            }));
        }),
        ("ITO-KMS-05", |ev| key(ev).origin = "EXTERNAL".into()),
        ("ITO-KMS-06", |ev| key(ev).multi_region = true),
        ("ITO-KMS-07", |ev| key(ev).alias_target = Ok(Some("another-key".into()))),
        ("ITO-KMS-08", |ev| key(ev).grants = Ok(vec!["arn:aws:iam::111122223333:role/someone".into()])),
        ("ITO-IAM-01", |ev| {
            let trust = role(ev).trust_policy.as_mut().unwrap();
            trust["Statement"][0]["Condition"]["StringEquals"].as_object_mut().unwrap().values_mut().for_each(|v| {
                if let Some(list) = v.as_array_mut() {
                    list.push(json!("system:serviceaccount:group-b:imaging-workload"))
                }
            });
        }),
        ("ITO-IAM-02", |ev| role(ev).boundary = None),
        ("ITO-IAM-03", |ev| {
            let inline = role(ev).inline_policies.as_mut().unwrap();
            let policy = inline.values_mut().next().unwrap();
            policy["Statement"][1]["Resource"] = json!("arn:aws:s3:::*/*");
        }),
        ("ITO-IAM-04", |ev| {
            role(ev)
                .inline_policies
                .as_mut()
                .unwrap()
                .insert("debug".into(), json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}));
        }),
        ("ITO-IAM-05", |ev| {
            role(ev).attached_policies = Ok(vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()]);
        }),
        ("ITO-DR-01", |ev| {
            replica(ev).configuration.as_mut().unwrap().as_mut().unwrap().delete_marker_replication = false;
        }),
        ("ITO-DR-02", |ev| {
            let b = replica(ev).bucket.as_mut().unwrap().as_mut().unwrap();
            let policy = b.policy.as_mut().unwrap().as_mut().unwrap();
            policy["Statement"].as_array_mut().unwrap().retain(|s| s["Sid"] != "DenyInsecureTransport");
        }),
        ("ITO-DR-03", |ev| replica(ev).key.as_mut().unwrap().as_mut().unwrap().rotation = Ok(false)),
        ("ITO-DR-04", |ev| {
            let r = replica(ev).role.as_mut().unwrap().as_mut().unwrap();
            r.trust_policy.as_mut().unwrap()["Statement"][0]["Principal"] = json!({"AWS": "*"});
        }),
    ]
}

fn list_push(r: &mut Read<Vec<String>>, name: &str) {
    r.as_mut().unwrap().push(name.to_string());
}

#[test]
fn the_catalogue_has_unique_ids_and_maps_every_control_to_hipaa() {
    let ids: BTreeSet<&str> = CONTROLS.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), CONTROLS.len(), "control IDs are unique");
    assert!(CONTROLS.len() >= 25);
    for c in &CONTROLS {
        assert!(!c.hipaa.is_empty() && !c.title.is_empty() && !c.checks.is_empty(), "{}", c.id);
        assert!(
            c.id.starts_with("ITO-K8S-")
                || c.id.starts_with("ITO-S3-")
                || c.id.starts_with("ITO-KMS-")
                || c.id.starts_with("ITO-IAM-")
                || c.id.starts_with("ITO-DR-")
        );
    }
}

#[test]
fn every_control_passes_on_what_the_operator_builds() {
    let findings = evaluate(&good(), &settings());
    let not_passed: Vec<String> = findings
        .iter()
        .filter(|f| f.outcome.result != Verdict::Pass)
        .map(|f| format!("{}: {:?} {}", f.control.id, f.outcome.result, f.outcome.message))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
}

#[test]
fn every_control_fails_on_its_tampering_and_says_what_it_found() {
    let tampers = tampers();
    let covered: BTreeSet<&str> = tampers.iter().map(|(id, _)| *id).collect();
    let all: BTreeSet<&str> = CONTROLS.iter().map(|c| c.id).collect();
    assert_eq!(covered, all, "one tampering per control");
    for (id, tamper) in tampers {
        let mut ev = good();
        tamper(&mut ev);
        let o = outcome(&ev, id);
        assert_eq!(o.result, Verdict::Fail, "{id} must fail: {}", o.message);
        assert!(!o.message.is_empty(), "{id}");
    }
}

#[test]
fn a_setting_that_cannot_be_read_is_an_error_not_a_pass() {
    let mut ev = good();
    bucket(&mut ev).versioning = Err("AccessDenied: s3:GetBucketVersioning".into());
    key(&mut ev).rotation = Err("AccessDeniedException".into());
    ns(&mut ev, 0).network_policies = Err("403 Forbidden".into());
    ev.aws.role = Err("AccessDenied: iam:GetRole".into());
    for id in ["ITO-S3-06", "ITO-KMS-03", "ITO-K8S-03", "ITO-IAM-01"] {
        let o = outcome(&ev, id);
        assert_eq!(o.result, Verdict::Error, "{id}: {}", o.message);
        assert!(o.message.contains("Access") || o.message.contains("403"), "{id}: {}", o.message);
    }
}

#[test]
fn missing_resources_fail_and_object_lock_without_retention_is_skipped() {
    let mut ev = good();
    ev.aws.bucket = Ok(None);
    ev.aws.key = Ok(None);
    ns(&mut ev, 1).object = Ok(None);
    for id in ["ITO-S3-01", "ITO-KMS-01", "ITO-K8S-03"] {
        assert_eq!(outcome(&ev, id).result, Verdict::Fail, "{id}");
    }
    let mut ev = good();
    ev.tenant.spec.storage.retention = None;
    assert_eq!(outcome(&ev, "ITO-S3-07").result, Verdict::Skip);
    let mut ev = good();
    ev.kubernetes.admin_network.as_mut().unwrap()[0].policy = None;
    assert_eq!(outcome(&ev, "ITO-K8S-11").result, Verdict::Fail, "served but absent");
    ev.kubernetes.admin_network = Ok(Vec::new());
    assert_eq!(outcome(&ev, "ITO-K8S-11").result, Verdict::Skip, "not served");
}

#[test]
fn replication_controls_skip_a_tenant_that_does_not_replicate_and_fail_one_that_should() {
    const DR: [&str; 4] = ["ITO-DR-01", "ITO-DR-02", "ITO-DR-03", "ITO-DR-04"];
    // No --replication-region and no spec.storage.replication: nothing to replicate.
    let mut ev = good();
    ev.tenant.spec.storage.replication = None;
    ev.aws.replica = None;
    let no_region = Settings { replication_region: None, ..settings() };
    for f in evaluate(&ev, &no_region).into_iter().filter(|f| DR.contains(&f.control.id)) {
        assert_eq!(f.outcome.result, Verdict::Skip, "{}", f.control.id);
        assert!(f.outcome.message.contains("does not replicate"), "{}", f.outcome.message);
    }
    // An opt-out the operator allows is skipped and says so.
    let mut ev = good();
    ev.tenant.spec.storage.replication = Some(serde_json::from_value(json!({"enabled": false})).unwrap());
    ev.aws.replica = None;
    let allowed = Settings { allow_replication_opt_out: true, ..settings() };
    let o = evaluate(&ev, &allowed).into_iter().find(|f| f.control.id == "ITO-DR-01").unwrap().outcome;
    assert_eq!(o.result, Verdict::Skip);
    assert!(o.message.contains("opted out") && o.message.contains("--allow-replication-opt-out"), "{}", o.message);
    // One the operator does not allow still must replicate: without a configuration it fails.
    let mut ev = good();
    ev.tenant.spec.storage.replication = Some(serde_json::from_value(json!({"enabled": false})).unwrap());
    replica(&mut ev).configuration = Ok(None);
    let o = outcome(&ev, "ITO-DR-01");
    assert_eq!(o.result, Verdict::Fail);
    assert!(o.message.contains("no replication configuration"), "{}", o.message);
    // Replication asked for where it cannot be done fails every DR control.
    let mut ev = good();
    ev.aws.replica = None;
    let same_region = Settings { replication_region: Some("eu-central-1".into()), ..settings() };
    for f in evaluate(&ev, &same_region).into_iter().filter(|f| DR.contains(&f.control.id)) {
        assert_eq!(f.outcome.result, Verdict::Fail, "{}", f.control.id);
    }
    // A replica that is missing fails; one that cannot be read is an error.
    let mut ev = good();
    replica(&mut ev).bucket = Ok(None);
    replica(&mut ev).key = Ok(None);
    replica(&mut ev).role = Ok(None);
    for id in ["ITO-DR-02", "ITO-DR-03", "ITO-DR-04"] {
        assert_eq!(outcome(&ev, id).result, Verdict::Fail, "{id}");
    }
    let mut ev = good();
    replica(&mut ev).configuration = Err("AccessDenied: s3:GetReplicationConfiguration".into());
    replica(&mut ev).key.as_mut().unwrap().as_mut().unwrap().rotation = Err("AccessDeniedException".into());
    assert_eq!(outcome(&ev, "ITO-DR-01").result, Verdict::Error);
    assert_eq!(outcome(&ev, "ITO-DR-03").result, Verdict::Error);
    // Replication Time Control is judged as the spec asks.
    let mut ev = good();
    replica(&mut ev).configuration.as_mut().unwrap().as_mut().unwrap().replication_time_control = false;
    let o = outcome(&ev, "ITO-DR-01");
    assert_eq!(o.result, Verdict::Fail);
    assert!(o.message.contains("Replication Time Control"), "{}", o.message);
}

#[test]
fn an_auditor_statement_widened_or_removed_fails_the_policy_controls() {
    let mut ev = good();
    bucket_statement(&mut ev, "DenyAuditorsAllButReadingSettings")["NotAction"] = json!("s3:*");
    assert_eq!(outcome(&ev, "ITO-S3-10").result, Verdict::Fail);
    let mut ev = good();
    let policy = bucket(&mut ev).policy.as_mut().unwrap().as_mut().unwrap();
    policy["Statement"].as_array_mut().unwrap().retain(|s| s["Sid"] != "DenyAuditorsAllButReadingSettings");
    assert_eq!(outcome(&ev, "ITO-S3-10").result, Verdict::Fail);
    let mut ev = good();
    let policy = key(&mut ev).policy.as_mut().unwrap().as_mut().unwrap();
    let auditors =
        policy["Statement"].as_array_mut().unwrap().iter_mut().find(|s| s["Sid"] == "AuditorsReadKeySettings");
    auditors.unwrap()["Action"] = json!("kms:*");
    assert_eq!(outcome(&ev, "ITO-KMS-04").result, Verdict::Fail);
}

#[test]
fn a_compliance_retention_longer_than_asked_still_holds() {
    let mut ev = good();
    bucket(&mut ev).object_lock = Ok(ObjectLock {
        enabled: true,
        retention: Some(ObjectLockRetention { mode: "COMPLIANCE".into(), days: 3000 }),
    });
    assert_eq!(outcome(&ev, "ITO-S3-07").result, Verdict::Pass);
}

#[test]
fn no_audit_log_bucket_fails_the_logging_control() {
    let mut settings = settings();
    settings.audit_log_bucket = None;
    let findings = evaluate(&good(), &settings);
    let logging = findings.iter().find(|f| f.control.id == "ITO-S3-09").unwrap();
    assert_eq!(logging.outcome.result, Verdict::Fail);
    assert!(logging.outcome.message.contains("--audit-log-bucket"), "{}", logging.outcome.message);
}

#[test]
fn a_tenants_own_service_accounts_may_be_bound_but_outsiders_may_not() {
    let mut ev = good();
    list(&mut ns(&mut ev, 0).role_bindings).push(json!({
        "metadata": {"name": "team"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "pipeline", "namespace": "group-a-ai"},
            {"kind": "Group", "name": "system:serviceaccounts:group-a"},
            {"kind": "User", "name": "alice@group-a.example"},
        ],
    }));
    assert_eq!(outcome(&ev, "ITO-K8S-05").result, Verdict::Pass);
    list(&mut ns(&mut ev, 0).role_bindings).push(json!({
        "metadata": {"name": "other"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "group-b"}],
    }));
    let o = outcome(&ev, "ITO-K8S-05");
    assert_eq!(o.result, Verdict::Fail);
    assert!(o.message.contains("ServiceAccount group-b/x"), "{}", o.message);
}

#[test]
fn a_guard_bound_to_other_namespaces_does_not_count() {
    let mut ev = good();
    let guards = ev.kubernetes.guards.as_mut().unwrap();
    guards[0].bindings[0]["spec"]["matchResources"]["namespaceSelector"] = json!({
        "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["group-a"]}]
    });
    let o = outcome(&ev, "ITO-K8S-08");
    assert_eq!(o.result, Verdict::Fail);
    assert!(o.message.contains("group-a-ai") && o.message.contains("operator-owned"), "{}", o.message);
}

#[test]
fn label_selectors() {
    let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
    assert!(selects(&json!({}), &labels));
    assert!(selects(&Value::Null, &labels));
    assert!(selects(&json!({"matchLabels": {"a": "1"}}), &labels));
    assert!(!selects(&json!({"matchLabels": {"a": "2"}}), &labels));
    assert!(selects(&json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}), &labels));
    assert!(!selects(&json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}), &labels));
    assert!(selects(&json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}), &labels));
    assert!(!selects(&json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]}), &labels));
}

#[test]
fn docs_compliance_holds_the_catalogue() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/compliance.md");
    let text = std::fs::read_to_string(&path).expect("docs/compliance.md");
    let table = catalogue_markdown();
    assert!(
        text.contains(&table),
        "docs/compliance.md must hold the control catalogue exactly as the code has it; replace its table with:\n{table}"
    );
}

#[test]
fn the_json_report_validates_against_the_committed_schema_and_its_digest_recomputes() {
    use crate::cloud::CallerIdentity;
    use crate::evidence::read::KubernetesIdentity;
    use crate::evidence::report::{Header, TenantFindings, canonical, json_report, sha256_hex};

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/evidence-report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
    let mut tampered = good();
    bucket(&mut tampered).versioning = Err("AccessDenied".into());
    key(&mut tampered).rotation = Ok(false);
    let tenants: Vec<TenantFindings> = [good(), tampered]
        .iter()
        .map(|ev| TenantFindings {
            name: "group-a".into(),
            uid: UID.into(),
            read_at: "2026-11-30T06:00:00Z".into(),
            findings: evaluate(ev, &settings()),
        })
        .collect();
    let header = Header {
        generated_at: "2026-11-30T06:00:01Z".into(),
        cluster: "prod-1".into(),
        region: "eu-central-1".into(),
        account_id: "111122223333".into(),
        aws: CallerIdentity {
            account: "111122223333".into(),
            arn: "arn:aws:sts::111122223333:assumed-role/imaging-break-glass/audit".into(),
            user_id: "AROAEXAMPLE:audit".into(),
        },
        kubernetes: KubernetesIdentity { username: "auditor@example.org".into(), groups: vec!["auditors".into()] },
    };
    let report = json_report(&header, &tenants);
    let errors: Vec<String> = validator.iter_errors(&report).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report["summary"]["fail"], 1);
    assert_eq!(report["summary"]["error"], 1);

    let mut without = report.clone();
    let digest = without.as_object_mut().unwrap().remove("digest").unwrap();
    assert_eq!(digest["value"], sha256_hex(canonical(&without).as_bytes()));
    let mut broken = report.clone();
    broken["tenants"][0]["controls"][0]["result"] = json!("passed");
    assert!(!validator.is_valid(&broken), "the schema refuses an unknown result");
}

#[test]
fn policy_reports_hold_one_result_per_control_and_nothing_that_changes_between_passes() {
    use crate::evidence::policy_report::{KINDS, MAX_EVIDENCE, OPEN_REPORTS, render, same_content};
    let mut tampered = good();
    key(&mut tampered).rotation = Ok(false);
    for kind in KINDS {
        let findings = evaluate(&good(), &settings());
        let report = render(kind, &tenant(), &findings);
        assert_eq!(report["apiVersion"], kind.api_version());
        assert_eq!(report["metadata"]["name"], "imaging-tenant-group-a");
        assert_eq!(report["scope"]["uid"], UID);
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), CONTROLS.len());
        let kms_03 = results.iter().find(|r| r["policy"] == "ITO-KMS-03").unwrap();
        assert_eq!(kms_03["rule"], "ITO-KMS-03");
        assert_eq!(kms_03["category"], "164.312(a)(2)(iv)");
        assert_eq!(kms_03["severity"], "medium");
        assert_eq!(kms_03["result"], "pass");
        assert_eq!(kms_03["properties"]["awsConfigRules"], "cmk-backing-key-rotation-enabled");
        assert!(results.iter().all(|r| r["properties"].as_object().unwrap().values().all(Value::is_string)));
        assert!(
            results.iter().all(|r| r["properties"]["evidence"].as_str().is_none_or(|e| e.len() < MAX_EVIDENCE + 100))
        );
        assert!(!report.to_string().contains("timestamp"), "nothing that changes between passes");
        assert_eq!(report["source"].is_string(), kind == OPEN_REPORTS);

        let again = render(kind, &tenant(), &evaluate(&good(), &settings()));
        assert!(same_content(&report, &again));
        let changed = render(kind, &tenant(), &evaluate(&tampered, &settings()));
        assert!(!same_content(&report, &changed));
        assert_eq!(changed["summary"]["fail"], 1);
    }
}
