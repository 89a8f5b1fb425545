//! Provisioning against moto: two tenants get isolated, fully configured resources; every
//! setting is read back from AWS; drift is repaired with an event; a steady state writes nothing;
//! a name taken by someone else is reported, never taken over.

use std::time::Instant;

use crate::cloud_fixtures::*;
use aws_sdk_s3::types::{BucketVersioningStatus, ServerSideEncryption, Tag, Tagging, VersioningConfiguration};
use imaging_tenant_operator::cloud::{CloudIds, REPAIRED, Retirement, policy};
use ito_test_support::{Moto, unique_name};
use serde_json::{Value, json};

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Object(map) => map.values().flat_map(strings).collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn two_tenants_get_isolated_resources_and_every_setting_reads_back() {
    let moto = Moto::shared().await;
    let settings = settings(Some(audit_bucket(moto).await));
    let a = tenant(
        "group-a",
        json!({
            "namespaces": [{"name": "placeholder"}],
            "storage": {"retention": {"mode": "Governance", "days": 30},
                        "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 365}},
            "tags": {"cost-center": "radiology-a"},
        }),
    );
    // Namespaces must start with the tenant name, which is unique per run.
    let mut a = a;
    let name = a.metadata.name.clone().unwrap();
    a.spec.namespaces = serde_json::from_value(json!([{"name": name}, {"name": format!("{name}-ai")}])).unwrap();
    let b = tenant("group-b", json!({}));
    let aws = connect(moto).await;
    let cloud = &aws.cloud;

    let started = Instant::now();
    let mut a_ids = KeepIds::default();
    let report_a = provision(cloud, &a, &settings, &mut a_ids).await;
    let first_pass = started.elapsed();
    assert!(all_ok(&report_a), "{}", verdicts(&report_a));
    let mut b_ids = KeepIds::default();
    let report_b = provision(cloud, &b, &settings, &mut b_ids).await;
    assert!(all_ok(&report_b), "{}", verdicts(&report_b));
    println!("first provision of a tenant: {first_pass:?}, {} AWS calls", cloud.calls().total() / 2);

    // Status got every ID as it appeared, and the report agrees.
    assert_eq!(a_ids.ids, report_a.ids);
    let created: Vec<_> = report_a.events.iter().filter(|e| e.reason == "Created").collect();
    assert_eq!(created.len(), 3, "{:?}", report_a.events);

    let want_a = desired(&a, &settings, &report_a.ids);
    let want_b = desired(&b, &settings, &report_b.ids);
    let (iam, kms, s3) = (&aws.iam, &aws.kms, &aws.s3);
    let bucket = &want_a.bucket.name;
    let key_arn = &report_a.ids.key.as_ref().unwrap().arn;

    // Bucket: every setting as AWS reports it.
    let bpa = s3.get_public_access_block().bucket(bucket).send().await.unwrap();
    let bpa = bpa.public_access_block_configuration().unwrap();
    assert_eq!(
        (bpa.block_public_acls(), bpa.ignore_public_acls(), bpa.block_public_policy(), bpa.restrict_public_buckets()),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let ownership = s3.get_bucket_ownership_controls().bucket(bucket).send().await.unwrap();
    assert_eq!(ownership.ownership_controls().unwrap().rules()[0].object_ownership().as_str(), "BucketOwnerEnforced");
    let encryption = s3.get_bucket_encryption().bucket(bucket).send().await.unwrap();
    let rule = &encryption.server_side_encryption_configuration().unwrap().rules()[0];
    let by_default = rule.apply_server_side_encryption_by_default().unwrap();
    assert_eq!(by_default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!(by_default.kms_master_key_id(), Some(key_arn.as_str()));
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    let versioning = s3.get_bucket_versioning().bucket(bucket).send().await.unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));
    let lock = s3.get_object_lock_configuration().bucket(bucket).send().await.unwrap();
    let lock = lock.object_lock_configuration().unwrap();
    assert_eq!(lock.object_lock_enabled().map(|e| e.as_str()), Some("Enabled"));
    let retention = lock.rule().unwrap().default_retention().unwrap();
    assert_eq!((retention.mode().map(|m| m.as_str()), retention.days()), (Some("GOVERNANCE"), Some(30)));
    let lifecycle = s3.get_bucket_lifecycle_configuration().bucket(bucket).send().await.unwrap();
    let mut rules: Vec<_> = lifecycle.rules().iter().map(|r| r.id().unwrap_or_default().to_string()).collect();
    rules.sort();
    assert_eq!(rules, ["imaging-archive", "imaging-expire-noncurrent"]);
    let logging = s3.get_bucket_logging().bucket(bucket).send().await.unwrap();
    let logging = logging.logging_enabled().expect("access logging");
    assert_eq!(logging.target_bucket(), settings.audit_log_bucket.as_deref().unwrap());
    assert_eq!(logging.target_prefix(), format!("{bucket}/"));
    let tags = s3.get_bucket_tagging().bucket(bucket).send().await.unwrap();
    assert!(tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/tenant-uid" && t.value() == uid(&a)));
    assert!(tags.tag_set().iter().any(|t| t.key() == "cost-center" && t.value() == "radiology-a"));

    // Bucket policy: A's role and the administrators, never B's role.
    let bucket_policy = s3.get_bucket_policy().bucket(bucket).send().await.unwrap();
    let bucket_policy = policy::parse(bucket_policy.policy().unwrap()).unwrap();
    assert!(policy::equivalent(&bucket_policy, &want_a.bucket.policy));
    let named = strings(&bucket_policy);
    assert!(named.contains(&want_a.role.arn) && named.contains(&OPERATOR_ROLE.to_string()));
    assert!(!named.contains(&want_b.role.arn), "A's bucket policy names B's role");
    assert!(named.contains(key_arn), "PutObject is tied to A's key");

    // Key: enabled, rotating, A's policy, alias, tags.
    let key_id = &report_a.ids.key.as_ref().unwrap().id;
    let described = kms.describe_key().key_id(&want_a.key.alias).send().await.unwrap();
    let meta = described.key_metadata().unwrap();
    assert_eq!(meta.key_id(), key_id);
    assert_eq!(meta.key_state().map(|s| s.as_str()), Some("Enabled"));
    assert!(kms.get_key_rotation_status().key_id(key_id).send().await.unwrap().key_rotation_enabled());
    let key_policy = kms.get_key_policy().key_id(key_id).policy_name("default").send().await.unwrap();
    let key_policy = policy::parse(key_policy.policy().unwrap()).unwrap();
    assert!(policy::equivalent(&key_policy, &want_a.key.policy));
    let named = strings(&key_policy);
    assert!(named.contains(&want_a.role.arn));
    assert!(!named.contains(&want_b.role.arn), "A's key policy names B's role");
    assert!(!named.iter().any(|n| n.ends_with(":root")), "the key is not handed to the account");

    // Role: path, trust to A's ServiceAccounts only, permissions naming only A's bucket and key.
    let role = iam.get_role().role_name(&want_a.role.name).send().await.unwrap();
    let role = role.role().unwrap();
    assert_eq!(role.path(), "/imaging-tenants/");
    let trust = policy::parse(role.assume_role_policy_document().unwrap()).unwrap();
    assert!(policy::equivalent(&trust, &want_a.role.trust_policy));
    let subjects: Vec<String> =
        strings(&trust).into_iter().filter(|s| s.starts_with("system:serviceaccount:")).collect();
    assert_eq!(
        subjects,
        [
            format!("system:serviceaccount:{name}:imaging-workload"),
            format!("system:serviceaccount:{name}-ai:imaging-workload")
        ]
    );
    let inline = iam.get_role_policy().role_name(&want_a.role.name).policy_name("imaging-tenant-access").send().await;
    let inline = policy::parse(inline.unwrap().policy_document()).unwrap();
    let mut resources: Vec<String> =
        inline["Statement"].as_array().unwrap().iter().flat_map(|s| strings(&s["Resource"])).collect();
    resources.sort();
    let mut expected = vec![want_a.bucket.arn.clone(), format!("{}/*", want_a.bucket.arn), key_arn.clone()];
    expected.sort();
    assert_eq!(resources, expected, "A's role names only A's bucket and key");
    let actions = strings(&inline);
    for forbidden in ["s3:DeleteObjectVersion", "s3:PutBucketPolicy", "s3:BypassGovernanceRetention", "s3:*", "kms:*"] {
        assert!(!actions.contains(&forbidden.to_string()), "{forbidden}");
    }
    assert_eq!(iam.list_role_policies().role_name(&want_a.role.name).send().await.unwrap().policy_names().len(), 1);

    // B got its own of everything.
    assert_ne!(report_a.ids.key.as_ref().unwrap().id, report_b.ids.key.as_ref().unwrap().id);
    assert_ne!(want_a.bucket.name, want_b.bucket.name);
    assert_eq!(census(moto, uid(&a)).await.buckets, std::slice::from_ref(&want_a.bucket.name));
}

#[tokio::test]
async fn steady_state_makes_zero_aws_writes() {
    let moto = Moto::shared().await;
    let settings = settings(Some(audit_bucket(moto).await));
    let t = tenant(
        "steady",
        json!({"storage": {"retention": {"mode": "Compliance", "days": 7}, "lifecycle": {"archiveAfterDays": 30}}}),
    );
    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    let first = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&first), "{}", verdicts(&first));
    let records = ids.records;

    let before = cloud.calls();
    let started = Instant::now();
    let second = provision(cloud, &t, &settings, &mut ids).await;
    let elapsed = started.elapsed();
    let calls = cloud.calls().since(&before);
    assert!(all_ok(&second), "{}", verdicts(&second));
    assert_eq!(calls.writes, 0, "a steady-state provision wrote: {:?}", calls.write_operations());
    assert!(second.events.is_empty(), "{:?}", second.events);
    assert_eq!(ids.records, records, "nothing new to record in status");
    println!("steady-state provision: {elapsed:?}, {} read calls, 0 writes: {:?}", calls.total(), calls.calls.keys());
}

#[tokio::test]
async fn drift_is_restored_and_each_repair_is_an_event() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("drift", json!({}));
    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    let first = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&first), "{}", verdicts(&first));
    let want = desired(&t, &settings, &ids.ids);
    let (iam, kms, s3) = (&aws.iam, &aws.kms, &aws.s3);
    let bucket = &want.bucket.name;
    let key_id = &ids.ids.key.clone().unwrap().id;

    // Someone loosens everything at once.
    s3.put_bucket_policy()
        .bucket(bucket)
        .policy(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": format!("{}/*", want.bucket.arn)}]}).to_string())
        .send()
        .await
        .unwrap();
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build())
        .send()
        .await
        .unwrap();
    kms.disable_key_rotation().key_id(key_id).send().await.unwrap();
    s3.delete_public_access_block().bucket(bucket).send().await.unwrap();
    let aes = crate::cloud_fixtures::s3_managed_encryption();
    s3.put_bucket_encryption().bucket(bucket).server_side_encryption_configuration(aes).send().await.unwrap();
    let mut trust = want.role.trust_policy.clone();
    trust["Statement"][0]["Condition"]["StringEquals"]
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.ends_with(":sub"))
        .unwrap()
        .1
        .as_array_mut()
        .unwrap()
        .push(json!("system:serviceaccount:intruder:default"));
    iam.update_assume_role_policy().role_name(&want.role.name).policy_document(trust.to_string()).send().await.unwrap();
    iam.put_role_policy()
        .role_name(&want.role.name)
        .policy_name("extra")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();

    let repaired = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&repaired), "{}", verdicts(&repaired));
    let notes: Vec<&str> = repaired.events.iter().filter(|e| e.reason == REPAIRED).map(|e| e.note.as_str()).collect();
    for what in [
        "bucket policy",
        "versioning",
        "automatic rotation",
        "Block Public Access",
        "default encryption",
        "trust policy",
        "removed inline policy extra",
    ] {
        assert!(notes.iter().any(|n| n.contains(what)), "no repair event for {what}: {notes:#?}");
    }
    assert!(
        notes.iter().all(|n| n.contains(bucket) || n.contains(&want.role.name) || n.contains(key_id)),
        "{notes:#?}"
    );

    // AWS really holds the restored settings again.
    let policy_now = s3.get_bucket_policy().bucket(bucket).send().await.unwrap();
    assert!(policy::equivalent(&policy::parse(policy_now.policy().unwrap()).unwrap(), &want.bucket.policy));
    assert_eq!(
        s3.get_bucket_versioning().bucket(bucket).send().await.unwrap().status(),
        Some(&BucketVersioningStatus::Enabled)
    );
    assert!(kms.get_key_rotation_status().key_id(key_id).send().await.unwrap().key_rotation_enabled());
    assert!(s3.get_public_access_block().bucket(bucket).send().await.is_ok());
    let trust_now = iam.get_role().role_name(&want.role.name).send().await.unwrap();
    let trust_now = policy::parse(trust_now.role().unwrap().assume_role_policy_document().unwrap()).unwrap();
    assert!(!trust_now.to_string().contains("intruder"));

    // And the next pass is quiet again.
    let before = cloud.calls();
    let quiet = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&quiet) && quiet.events.is_empty(), "{}\n{:?}", verdicts(&quiet), quiet.events);
    assert_eq!(cloud.calls().since(&before).writes, 0);
}

#[tokio::test]
async fn a_bucket_of_that_name_owned_by_another_tenant_is_reported_not_taken_over() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("squat", json!({}));
    let name = desired(&t, &settings, &Default::default()).bucket.name;
    let s3 = moto.s3_client();
    s3.create_bucket().bucket(&name).send().await.unwrap();
    let tagging = Tagging::builder()
        .tag_set(Tag::builder().key("imaging.tenancy.dev/tenant-uid").value("someone-else").build().unwrap())
        .build()
        .unwrap();
    s3.put_bucket_tagging().bucket(&name).tagging(tagging).send().await.unwrap();

    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    let report = provision(cloud, &t, &settings, &mut ids).await;
    let bucket_ready = &report.verdicts[2];
    assert!(!bucket_ready.ok);
    assert_eq!(bucket_ready.reason, "BucketConflict", "{}", verdicts(&report));
    assert!(bucket_ready.message.contains(&name) && bucket_ready.message.contains("someone-else"));
    assert!(!report.verdicts[3].ok, "not secured either");
    assert!(report.verdicts[0].ok && report.verdicts[1].ok, "role and key are unaffected");
    assert!(!report.error.as_ref().unwrap().is_retryable(), "waits for a person, not a back-off");
    assert!(ids.ids.bucket.is_none(), "the foreign bucket is not recorded as the tenant's");
    // Untouched: no policy was put on it, its tags are as they were.
    assert!(s3.get_bucket_policy().bucket(&name).send().await.is_err());
    let tags = s3.get_bucket_tagging().bucket(&name).send().await.unwrap();
    assert_eq!(tags.tag_set().len(), 1);

    // An untagged bucket with objects is not the tenant's either.
    let t2 = tenant("squat", json!({}));
    let name2 = desired(&t2, &settings, &Default::default()).bucket.name;
    s3.create_bucket().bucket(&name2).send().await.unwrap();
    s3.put_object().bucket(&name2).key("x").body(b"data".to_vec().into()).send().await.unwrap();
    let report = provision(cloud, &t2, &settings, &mut KeepIds::default()).await;
    assert_eq!(report.verdicts[2].reason, "BucketUntagged", "{}", verdicts(&report));
    assert!(s3.get_bucket_tagging().bucket(&name2).send().await.is_err(), "and is not tagged");
}

/// The operator creates its buckets with the tenant's tags in CreateBucket itself, so a bucket
/// of the tenant's name without its UID tag, even an empty one, is not known to be the tenant's:
/// it is reported with what to do, and neither used, tagged nor deleted. Once a person tags it
/// with the tenant's UID, it is the tenant's bucket.
#[tokio::test]
async fn an_empty_untagged_bucket_of_the_tenants_name_is_refused_not_adopted() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("stray", json!({"deletionPolicy": "Delete"}));
    let name = desired(&t, &settings, &Default::default()).bucket.name;
    let s3 = moto.s3_client();
    s3.create_bucket().bucket(&name).send().await.unwrap();

    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    let report = provision(cloud, &t, &settings, &mut ids).await;
    let bucket_ready = &report.verdicts[2];
    assert!(!bucket_ready.ok);
    assert_eq!(bucket_ready.reason, "BucketUntagged", "{}", verdicts(&report));
    for said in [
        name.as_str(),
        "no imaging.tenancy.dev/tenant-uid tag",
        "delete it",
        &format!("tag it imaging.tenancy.dev/tenant-uid={}", uid(&t)),
    ] {
        assert!(bucket_ready.message.contains(said), "{said:?} in {}", bucket_ready.message);
    }
    assert!(!report.verdicts[3].ok, "not secured either");
    assert!(report.verdicts[0].ok && report.verdicts[1].ok, "role and key are unaffected");
    assert!(!report.error.as_ref().unwrap().is_retryable(), "waits for a person, not a back-off");
    assert!(ids.ids.bucket.is_none(), "not recorded as the tenant's");
    let s3_writes: Vec<String> =
        cloud.calls().write_operations().into_iter().filter(|w| w.starts_with("s3:")).collect();
    assert!(s3_writes.is_empty(), "no S3 write: {s3_writes:?}");
    assert!(s3.get_bucket_tagging().bucket(&name).send().await.is_err(), "not tagged");
    assert!(s3.get_bucket_policy().bucket(&name).send().await.is_err(), "no policy put on it");

    // Deleting the tenant does not delete it, and keeps the key that may encrypt its objects.
    let want = desired(&t, &settings, &ids.ids);
    let Retirement::Blocked { verdict, .. } = cloud.retire(&t, &settings, &ids.ids).await else {
        panic!("a bucket that is not known to be the tenant's blocks deletion");
    };
    assert_eq!(verdict.reason, "BucketNotConfirmedGone");
    assert!(verdict.message.contains("no imaging.tenancy.dev/tenant-uid tag"), "{}", verdict.message);
    assert!(s3.head_bucket().bucket(&name).send().await.is_ok(), "the bucket stays");
    assert!(s3.get_bucket_tagging().bucket(&name).send().await.is_err(), "still not tagged");
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the key and alias stay");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");

    // A person says it is the tenant's by tagging it with the tenant's UID: it is taken up.
    let tagging = Tagging::builder()
        .tag_set(Tag::builder().key("imaging.tenancy.dev/tenant-uid").value(uid(&t)).build().unwrap())
        .build()
        .unwrap();
    s3.put_bucket_tagging().bucket(&name).tagging(tagging).send().await.unwrap();
    let report = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&report), "{}", verdicts(&report));
    assert_eq!(ids.ids.bucket.as_ref().map(|b| b.name.as_str()), Some(name.as_str()));
}

#[tokio::test]
async fn retention_added_later_enables_object_lock_or_says_why_not() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let retention = serde_json::from_value(json!({"mode": "Governance", "days": 10})).unwrap();

    // An empty versioned bucket: S3 lets Object Lock be switched on.
    let mut t = tenant("lock-late", json!({}));
    let mut ids = KeepIds::default();
    assert!(all_ok(&provision(cloud, &t, &settings, &mut ids).await));
    t.spec.storage.retention = Some(retention);
    let report = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&report), "{}", verdicts(&report));
    assert!(report.events.iter().any(|e| e.note.contains("enabled Object Lock")), "{:?}", report.events);

    // moto, unlike AWS since 2023, refuses it once the bucket holds objects: the condition says so.
    let mut t = tenant("lock-late", json!({}));
    let mut ids = KeepIds::default();
    assert!(all_ok(&provision(cloud, &t, &settings, &mut ids).await));
    let bucket = desired(&t, &settings, &ids.ids).bucket.name;
    put_object_without_policy(moto, &bucket, "study.dcm").await;
    t.spec.storage.retention = serde_json::from_value(json!({"mode": "Governance", "days": 10})).unwrap();
    let report = provision(cloud, &t, &settings, &mut ids).await;
    let secured = &report.verdicts[3];
    assert!(!secured.ok);
    assert_eq!(secured.reason, "NotConverged");
    assert!(
        secured.message.contains("spec.storage.retention was set after the bucket was created"),
        "{}",
        secured.message
    );
}

#[tokio::test]
async fn access_denied_is_reported_with_the_aws_code_and_not_retried() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("denied", json!({}));
    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    assert!(all_ok(&provision(cloud, &t, &settings, &mut ids).await));
    // A key policy that denies the operator DescribeKey (moto enforces Deny statements for it).
    let key_id = ids.ids.key.as_ref().unwrap().id.clone();
    let deny = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*"}]});
    let kms = &aws.kms;
    kms.put_key_policy().key_id(&key_id).policy_name("default").policy(deny.to_string()).send().await.unwrap();

    let before = cloud.calls();
    let report = provision(cloud, &t, &settings, &mut ids).await;
    let key_ready = &report.verdicts[1];
    assert!(!key_ready.ok);
    assert_eq!(key_ready.reason, "AccessDeniedException", "{}", verdicts(&report));
    assert!(key_ready.message.contains("kms:DescribeKey") && key_ready.message.contains("operator-policy.json"));
    let error = report.error.expect("the first failure");
    assert!(!error.is_retryable());
    assert_eq!(error.category(), "access_denied");
    let calls = cloud.calls().since(&before);
    let describe_errors = calls.calls.get(&("kms".into(), "DescribeKey".into(), "error")).copied().unwrap_or(0);
    assert_eq!(describe_errors, 1);
    assert_eq!(calls.attempts, calls.total(), "no call was retried");
    assert_eq!(report.verdicts[2].reason, "WaitingForKey");
}

#[tokio::test]
async fn the_account_id_comes_from_sts() {
    let moto = Moto::shared().await;
    assert_eq!(connect(moto).await.cloud.account_id().await.unwrap(), ACCOUNT);
}

#[tokio::test]
async fn every_role_carries_the_permissions_boundary_and_a_removed_one_is_restored() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("boundary", json!({}));
    let aws = connect(moto).await;
    let cloud = &aws.cloud;
    let mut ids = KeepIds::default();
    let first = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&first), "{}", verdicts(&first));
    let role = desired(&t, &settings, &ids.ids).role.name;
    let boundary = |out: aws_sdk_iam::operation::get_role::GetRoleOutput| {
        out.role.and_then(|r| r.permissions_boundary).and_then(|b| b.permissions_boundary_arn)
    };
    let live = boundary(aws.iam.get_role().role_name(&role).send().await.unwrap());
    assert_eq!(live.as_deref(), Some(settings.permissions_boundary_arn.as_str()), "created with the boundary");

    // A role without it (removed, or created by an earlier version) gets it back.
    aws.iam.delete_role_permissions_boundary().role_name(&role).send().await.unwrap();
    let second = provision(cloud, &t, &settings, &mut ids).await;
    assert!(all_ok(&second), "{}", verdicts(&second));
    let live = boundary(aws.iam.get_role().role_name(&role).send().await.unwrap());
    assert_eq!(live.as_deref(), Some(settings.permissions_boundary_arn.as_str()), "restored");
    assert!(
        second.events.iter().any(|e| e.reason == REPAIRED && e.note.contains("permissions boundary")),
        "{:?}",
        second.events
    );
}

/// A key the operator did not make the way it makes keys is never adopted, even with the
/// tenant's alias and tags: key material from outside KMS, a multi-Region key, a standing grant.
#[tokio::test]
async fn a_planted_key_is_refused() {
    use aws_sdk_kms::types::{GrantOperation, OriginType, Tag as KmsTag};
    let moto = Moto::shared().await;
    let settings = settings(None);
    let aws = connect(moto).await;
    for case in ["external", "multiregion", "granted"] {
        let t = tenant(&format!("planted-{case}"), json!({}));
        let want = desired(&t, &settings, &CloudIds::default());
        let tags: Vec<KmsTag> =
            want.key.tags.iter().map(|(k, v)| KmsTag::builder().tag_key(k).tag_value(v).build().unwrap()).collect();
        let mut create = aws.kms.create_key().set_tags(Some(tags));
        create = match case {
            "external" => create.origin(OriginType::External),
            "multiregion" => create.multi_region(true),
            _ => create,
        };
        let planted = create.send().await.unwrap().key_metadata.unwrap().key_id;
        aws.kms.create_alias().alias_name(&want.key.alias).target_key_id(&planted).send().await.unwrap();
        if case == "granted" {
            aws.kms
                .create_grant()
                .key_id(&planted)
                .grantee_principal("arn:aws:iam::999999999999:role/someone-else")
                .operations(GrantOperation::Decrypt)
                .send()
                .await
                .unwrap();
        }

        let mut ids = KeepIds::default();
        let report = provision(&aws.cloud, &t, &settings, &mut ids).await;
        let key_ready = report.verdicts.iter().find(|v| v.type_ == "KeyReady").unwrap();
        assert!(!key_ready.ok, "{case}: {}", verdicts(&report));
        assert_eq!(key_ready.reason, "KeyRefused", "{case}: {}", key_ready.message);
        assert!(key_ready.message.contains(&planted), "{case}: {}", key_ready.message);
        assert!(!report.error.as_ref().unwrap().is_retryable(), "{case}: waits for a person");
        let bucket = report.verdicts.iter().find(|v| v.type_ == "BucketReady").unwrap();
        assert!(!bucket.ok, "{case}: no bucket is encrypted with a refused key");
    }
}

/// Every S3 request but CreateBucket names the account that must own the bucket, so S3 refuses
/// to act on a bucket of the tenant's name that another account owns.
#[tokio::test]
async fn every_s3_request_names_the_expected_bucket_owner() {
    let moto = Moto::shared().await;
    let settings = settings(Some(audit_bucket(moto).await));
    let t = tenant("owner", json!({}));
    let aws = connect(moto).await;
    let mut ids = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut ids).await));
    let requests = aws.proxy.s3_requests();
    let bucket = desired(&t, &settings, &ids.ids).bucket.name;
    let creates: Vec<_> =
        requests.iter().filter(|(line, _)| line.trim_end_matches('/') == format!("PUT /{bucket}")).collect();
    assert_eq!(creates.len(), 1, "one CreateBucket: {requests:?}");
    let others: Vec<_> = requests.iter().filter(|r| !creates.contains(r)).collect();
    assert!(others.len() > 10, "the bucket's settings were read and written: {others:?}");
    let wrong: Vec<_> =
        others.iter().filter(|(_, owner)| owner.as_deref() != Some(settings.account_id.as_str())).collect();
    assert!(wrong.is_empty(), "S3 requests without the expected owner {}: {wrong:?}", settings.account_id);
}

/// The access-log bucket is checked before the tenant bucket logs to it: it must exist in this
/// account and block public access, or BucketSecured says what is wrong.
#[tokio::test]
async fn an_unusable_access_log_bucket_is_reported() {
    let moto = Moto::shared().await;
    let aws = connect(moto).await;
    // Missing.
    let missing = unique_name("itest-no-such-audit");
    let t = tenant("audit-missing", json!({}));
    let report = provision(&aws.cloud, &t, &settings(Some(missing.clone())), &mut KeepIds::default()).await;
    let secured = report.verdicts.iter().find(|v| v.type_ == "BucketSecured").unwrap();
    assert!(!secured.ok, "{}", verdicts(&report));
    assert_eq!(secured.reason, "AuditLogBucketUnusable");
    assert!(secured.message.contains(&missing) && secured.message.contains("does not exist"), "{}", secured.message);
    // Public access not blocked.
    let open = unique_name("itest-open-audit");
    moto.s3_client().create_bucket().bucket(&open).send().await.unwrap();
    let t = tenant("audit-open", json!({}));
    let report = provision(&aws.cloud, &t, &settings(Some(open.clone())), &mut KeepIds::default()).await;
    let secured = report.verdicts.iter().find(|v| v.type_ == "BucketSecured").unwrap();
    assert_eq!(secured.reason, "AuditLogBucketUnusable", "{}", verdicts(&report));
    assert!(secured.message.contains("Block Public Access"), "{}", secured.message);
    // A proper one is fine (the other tests use one).
    let proper = audit_bucket(moto).await;
    let t = tenant("audit-proper", json!({}));
    assert!(all_ok(&provision(&aws.cloud, &t, &settings(Some(proper)), &mut KeepIds::default()).await));
}
