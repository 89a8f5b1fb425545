//! Disaster recovery against moto (one server serves every region): a replicating tenant gets a
//! replica bucket and key of its own in the replication region, as protected as the source, a
//! replication role, and the source bucket's replication configuration; every setting reads
//! back; the key the configuration names is verified; drift is repaired with events; Retain
//! keeps the replica and Delete removes it only when empty; a crash after any write converges.

use crate::cloud_fixtures::*;
use aws_sdk_s3::types::{DeleteMarkerReplicationStatus, ReplicationTimeStatus, SseKmsEncryptedObjectsStatus};
use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::api::condition::{DELETION_BLOCKED, REPLICA_READY, REPLICATION_CONFIGURED};
use imaging_tenant_operator::cloud::{CloudReport, DELETED, REPAIRED, RETAINED, Retirement, policy};
use imaging_tenant_operator::config::Settings;
use ito_test_support::Moto;
use ito_test_support::faults::Mode;
use serde_json::{Value, json};

const REPLICA_REGION: &str = "eu-west-1";

fn replicating(settings: Settings) -> Settings {
    Settings { replication_region: Some(REPLICA_REGION.into()), ..settings }
}

/// Six conditions, all True.
fn all_six_ok(report: &CloudReport) -> bool {
    report.verdicts.len() == 6 && report.verdicts.iter().all(|v| v.ok)
}

struct Regional {
    kms: aws_sdk_kms::Client,
    s3: aws_sdk_s3::Client,
}

fn replica_clients(moto: &Moto) -> Regional {
    let config = in_region(moto, REPLICA_REGION);
    Regional {
        kms: aws_sdk_kms::Client::new(&config),
        s3: aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build()),
    }
}

fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("{sid}: {policy}"))
}

#[tokio::test]
async fn a_replicating_tenant_gets_a_protected_replica_in_the_second_region_and_every_setting_reads_back() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let t = tenant(
        "dr",
        json!({"storage": {
            "retention": {"mode": "Governance", "days": 30},
            "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 365},
            "replication": {"replicationTimeControl": true},
        }}),
    );
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    let report = provision(&aws.cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&report), "{}", verdicts(&report));
    let types: Vec<&str> = report.verdicts.iter().map(|v| v.type_).collect();
    assert_eq!(&types[4..], [REPLICA_READY, REPLICATION_CONFIGURED]);
    let created: Vec<&str> = report.events.iter().filter(|e| e.reason == "Created").map(|e| e.note.as_str()).collect();
    assert_eq!(created.len(), 6, "role, replication role, key, replica key, bucket, replica bucket: {created:?}");

    // Status records the replica the moment it exists.
    assert_eq!(status.ids, report.ids);
    let replica = report.ids.replica.clone().expect("status.replica");
    let (replica_bucket, replica_key, replication_role) =
        (replica.bucket.unwrap(), replica.key.unwrap(), replica.role.unwrap());
    assert_eq!(replica_bucket.region, REPLICA_REGION);
    assert!(replica_key.arn.starts_with(&format!("arn:aws:kms:{REPLICA_REGION}:{ACCOUNT}:key/")), "{replica_key:?}");
    let key = report.ids.key.clone().unwrap();
    assert!(key.arn.contains(":us-east-1:"), "the tenant key stays in the operator's region: {key:?}");

    let want = desired_with_replica(&t, &settings, &report);
    let r = want.replication.as_ref().expect("replicating");
    assert_eq!(r.bucket.name, replica_bucket.name);
    let there = replica_clients(moto);

    // The replica bucket, read in its region: as protected as the source.
    let location = there.s3.get_bucket_location().bucket(&r.bucket.name).send().await.unwrap();
    assert_eq!(location.location_constraint().unwrap().as_str(), REPLICA_REGION);
    let bpa = there.s3.get_public_access_block().bucket(&r.bucket.name).send().await.unwrap();
    let bpa = bpa.public_access_block_configuration().unwrap();
    assert_eq!(
        (bpa.block_public_acls(), bpa.ignore_public_acls(), bpa.block_public_policy(), bpa.restrict_public_buckets()),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let ownership = there.s3.get_bucket_ownership_controls().bucket(&r.bucket.name).send().await.unwrap();
    assert_eq!(ownership.ownership_controls().unwrap().rules()[0].object_ownership().as_str(), "BucketOwnerEnforced");
    let encryption = there.s3.get_bucket_encryption().bucket(&r.bucket.name).send().await.unwrap();
    let rule = &encryption.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default().unwrap().kms_master_key_id(),
        Some(replica_key.arn.as_str())
    );
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    let versioning = aws.s3.get_bucket_versioning().bucket(&r.bucket.name).send().await.unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
    let lock = there.s3.get_object_lock_configuration().bucket(&r.bucket.name).send().await.unwrap();
    let retention = lock.object_lock_configuration().unwrap().rule().unwrap().default_retention().unwrap();
    assert_eq!((retention.mode().unwrap().as_str(), retention.days()), ("GOVERNANCE", Some(30)));
    let lifecycle = there.s3.get_bucket_lifecycle_configuration().bucket(&r.bucket.name).send().await.unwrap();
    assert_eq!(lifecycle.rules().len(), 2);
    let bucket_policy = there.s3.get_bucket_policy().bucket(&r.bucket.name).send().await.unwrap();
    let bucket_policy = policy::parse(bucket_policy.policy().unwrap()).unwrap();
    assert!(policy::equivalent(&bucket_policy, &r.bucket.policy));
    assert_eq!(statement(&bucket_policy, "DenyInsecureTransport")["Effect"], "Deny");
    assert_eq!(
        statement(&bucket_policy, "DenyTenantRoleAllButReadingReplica")["Condition"]["ArnEquals"]["aws:PrincipalArn"],
        want.role.arn.as_str(),
        "the tenant role only reads its replica"
    );
    let tags = there.s3.get_bucket_tagging().bucket(&r.bucket.name).send().await.unwrap();
    assert!(
        tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/replica-of" && t.value() == want.bucket.name)
    );

    // The replica key, read in its region: its own key, rotating, with the same policy shape.
    let described = there.kms.describe_key().key_id(&r.key.alias).send().await.unwrap();
    assert_eq!(described.key_metadata().unwrap().key_id(), replica_key.id);
    let rotation = there.kms.get_key_rotation_status().key_id(&replica_key.id).send().await.unwrap();
    assert!(rotation.key_rotation_enabled());
    let key_policy = there.kms.get_key_policy().key_id(&replica_key.id).policy_name("default").send().await.unwrap();
    let key_policy = policy::parse(key_policy.policy().unwrap()).unwrap();
    assert!(policy::equivalent(&key_policy, &r.key.policy));
    let admins = statement(&key_policy, "KeyAdministrators");
    assert!(!admins["Action"].to_string().contains("kms:Decrypt"));
    let encrypt = statement(&key_policy, "ReplicationRoleThroughS3");
    assert_eq!(encrypt["Action"], "kms:Encrypt");
    assert_eq!(encrypt["Condition"]["StringEquals"]["kms:ViaService"], format!("s3.{REPLICA_REGION}.amazonaws.com"));
    assert_eq!(statement(&key_policy, "TenantRoleThroughS3")["Action"], json!(["kms:Decrypt"]));
    // The tenant key lets the replication role decrypt, through S3 in the source region.
    let source_policy = aws.kms.get_key_policy().key_id(&key.id).policy_name("default").send().await.unwrap();
    let source_policy = policy::parse(source_policy.policy().unwrap()).unwrap();
    let decrypt = statement(&source_policy, "ReplicationRoleThroughS3");
    assert_eq!(
        (decrypt["Action"].as_str(), decrypt["Principal"]["AWS"].as_str()),
        (Some("kms:Decrypt"), Some(replication_role.arn.as_str()))
    );
    assert_eq!(decrypt["Condition"]["StringEquals"]["kms:ViaService"], "s3.us-east-1.amazonaws.com");

    // The replication role: trusted by S3 for this bucket only, under the boundary, minimal.
    let role = aws.iam.get_role().role_name(&replication_role.name).send().await.unwrap();
    let role = role.role().unwrap();
    assert_eq!(role.path(), "/imaging-tenants/");
    assert_eq!(
        role.permissions_boundary().and_then(|b| b.permissions_boundary_arn()),
        Some(settings.permissions_boundary_arn.as_str())
    );
    let trust = policy::parse(role.assume_role_policy_document().unwrap()).unwrap();
    assert!(policy::equivalent(&trust, &r.role.trust_policy));
    assert_eq!(trust["Statement"][0]["Principal"]["Service"], "s3.amazonaws.com");
    assert_eq!(trust["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"], want.bucket.arn.as_str());
    let inline = aws
        .iam
        .get_role_policy()
        .role_name(&replication_role.name)
        .policy_name("imaging-tenant-replication")
        .send()
        .await
        .unwrap();
    let inline = policy::parse(inline.policy_document()).unwrap();
    assert!(policy::equivalent(&inline, &r.role.inline_policy));
    assert_eq!(
        statement(&inline, "ReplicateIntoReplica")["Action"],
        json!(["s3:ReplicateDelete", "s3:ReplicateObject", "s3:ReplicateTags"])
    );
    assert_eq!(statement(&inline, "DecryptSourceThroughS3")["Resource"], key.arn.as_str());
    assert_eq!(statement(&inline, "EncryptReplicaThroughS3")["Resource"], replica_key.arn.as_str());

    // The source bucket's replication configuration, field by field.
    let config = aws.s3.get_bucket_replication().bucket(&want.bucket.name).send().await.unwrap();
    let config = config.replication_configuration().unwrap();
    assert_eq!(config.role(), replication_role.arn);
    let [rule] = config.rules() else { panic!("one rule: {config:?}") };
    assert_eq!(rule.id(), Some("imaging-replica"));
    assert_eq!(rule.status().as_str(), "Enabled");
    let destination = rule.destination().unwrap();
    assert_eq!(destination.bucket(), r.bucket.arn);
    assert_eq!(destination.encryption_configuration().unwrap().replica_kms_key_id(), Some(replica_key.arn.as_str()));
    assert_eq!(
        rule.source_selection_criteria().unwrap().sse_kms_encrypted_objects().unwrap().status(),
        &SseKmsEncryptedObjectsStatus::Enabled
    );
    assert_eq!(rule.delete_marker_replication().unwrap().status(), Some(&DeleteMarkerReplicationStatus::Enabled));
    let rtc = destination.replication_time().unwrap();
    assert_eq!((rtc.status(), rtc.time().unwrap().minutes()), (&ReplicationTimeStatus::Enabled, Some(15)));
    assert_eq!(destination.metrics().unwrap().event_threshold().unwrap().minutes(), Some(15));

    // The tenant role may read the replica and decrypt with its key there.
    let tenant_policy =
        aws.iam.get_role_policy().role_name(&want.role.name).policy_name("imaging-tenant-access").send().await.unwrap();
    let tenant_policy = policy::parse(tenant_policy.policy_document()).unwrap();
    assert_eq!(statement(&tenant_policy, "DecryptTenantReplicaThroughS3")["Resource"], replica_key.arn.as_str());

    // One of everything in each region, and a steady state that writes nothing.
    let here = census(moto, uid(&t)).await;
    let far = census_in(moto, uid(&t), REPLICA_REGION).await;
    assert_eq!((here.roles.len(), here.keys.len(), here.buckets.len()), (2, 1, 1), "{here:?}");
    assert_eq!((far.keys.len(), far.aliases.len(), far.buckets.len()), (1, 1, 1), "{far:?}");
    let before = aws.cloud.calls();
    let quiet = provision(&aws.cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&quiet) && quiet.events.is_empty(), "{:?}", quiet.events);
    assert_eq!(aws.cloud.calls().since(&before).writes, 0);
}

fn desired_with_replica(
    t: &ImagingTenant,
    settings: &Settings,
    report: &CloudReport,
) -> imaging_tenant_operator::desired::aws::TenantAws {
    let replica_key = report.ids.replica.as_ref().and_then(|r| r.key.as_ref()).map(|k| k.arn.as_str());
    imaging_tenant_operator::desired::aws::render_with_keys(
        t,
        settings,
        report.ids.key.as_ref().map(|k| k.arn.as_str()),
        replica_key,
    )
}

#[tokio::test]
async fn the_replica_key_is_verified_and_a_missing_disabled_or_misplaced_key_is_refused() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let t = tenant("dr-key", json!({}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    let report = provision(&aws.cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&report), "{}", verdicts(&report));
    let replica_key = report.ids.replica.clone().unwrap().key.unwrap();
    let source_key = report.ids.key.clone().unwrap();
    let cloud = &aws.cloud;
    cloud.verify_replica_key(&t, &settings, REPLICA_REGION, &replica_key.arn).await.expect("the replica key passes");

    let missing = format!("arn:aws:kms:{REPLICA_REGION}:{ACCOUNT}:key/00000000-1111-4222-8333-444444444444");
    let e = cloud.verify_replica_key(&t, &settings, REPLICA_REGION, &missing).await.unwrap_err();
    assert_eq!(e.code(), "ReplicaKeyRefused");
    assert!(e.to_string().contains("does not exist"), "{e}");

    let e = cloud.verify_replica_key(&t, &settings, REPLICA_REGION, &source_key.arn).await.unwrap_err();
    assert!(e.to_string().contains("not in the replica region eu-west-1"), "{e}");

    // A key of the replica region that is not this tenant's replica key.
    let there = replica_clients(moto);
    let stranger = there.kms.create_key().send().await.unwrap();
    let stranger = stranger.key_metadata().unwrap().arn().unwrap().to_string();
    let e = cloud.verify_replica_key(&t, &settings, REPLICA_REGION, &stranger).await.unwrap_err();
    assert!(e.to_string().contains("not this tenant's replica key"), "{e}");

    there.kms.disable_key().key_id(&replica_key.id).send().await.unwrap();
    let e = cloud.verify_replica_key(&t, &settings, REPLICA_REGION, &replica_key.arn).await.unwrap_err();
    assert!(e.to_string().contains("Disabled"), "{e}");
    // The next pass re-enables it before the configuration names it again.
    let repaired = provision(cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&repaired), "{}", verdicts(&repaired));
    assert!(
        repaired.events.iter().any(|e| e.reason == REPAIRED && e.note.contains("re-enabled")),
        "{:?}",
        repaired.events
    );
}

#[tokio::test]
async fn replica_drift_is_repaired_and_each_repair_is_an_event() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let t = tenant("dr-drift", json!({}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_six_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let replica = status.ids.replica.clone().unwrap();
    let (bucket, key) = (replica.bucket.unwrap(), replica.key.unwrap());
    let source = status.ids.bucket.clone().unwrap();
    let there = replica_clients(moto);

    there.s3.delete_bucket_policy().bucket(&bucket.name).send().await.unwrap();
    there.kms.disable_key_rotation().key_id(&key.id).send().await.unwrap();
    aws.s3.delete_bucket_replication().bucket(&source.name).send().await.unwrap();

    let report = provision(&aws.cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&report), "{}", verdicts(&report));
    let repairs: Vec<&str> = report.events.iter().filter(|e| e.reason == REPAIRED).map(|e| e.note.as_str()).collect();
    for what in ["bucket policy of S3 bucket", "automatic rotation", "replication configuration"] {
        assert!(repairs.iter().any(|n| n.contains(what)), "{what} not repaired: {repairs:?}");
    }
    let config = aws.s3.get_bucket_replication().bucket(&source.name).send().await.unwrap();
    let rule = &config.replication_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.destination().unwrap().encryption_configuration().unwrap().replica_kms_key_id(),
        Some(key.arn.as_str())
    );
}

#[tokio::test]
async fn a_replica_region_equal_to_the_source_region_is_reported_not_provisioned() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("dr-same", json!({"storage": {"replication": {"region": REGION}}}));
    let aws = connect(moto).await;
    let report = provision(&aws.cloud, &t, &settings, &mut KeepIds::default()).await;
    let replica = report.verdicts.iter().find(|v| v.type_ == REPLICA_READY).expect("ReplicaReady");
    assert!(!replica.ok);
    assert_eq!(replica.reason, "ReplicaRegionIsSourceRegion");
    assert!(report.verdicts[..4].iter().all(|v| v.ok), "{}", verdicts(&report));
    assert!(report.ids.replica.is_none());
}

#[tokio::test]
async fn an_opt_out_is_refused_unless_allowed_and_then_stops_replication_and_keeps_the_replica() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let mut t = tenant("dr-optout", json!({}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_six_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let source = status.ids.bucket.clone().unwrap();
    let replica = status.ids.replica.clone().unwrap();

    // Without --allow-replication-opt-out the tenant keeps replicating, and is told so.
    t.spec.storage.replication = serde_json::from_value(json!({"enabled": false})).unwrap();
    let refused = provision(&aws.cloud, &t, &settings, &mut status).await;
    assert!(all_six_ok(&refused), "{}", verdicts(&refused));
    let configured = refused.verdicts.iter().find(|v| v.type_ == REPLICATION_CONFIGURED).unwrap();
    assert_eq!(configured.reason, "OptOutNotAllowed");
    assert!(configured.message.contains("--allow-replication-opt-out"), "{}", configured.message);
    assert!(aws.s3.get_bucket_replication().bucket(&source.name).send().await.is_ok());

    // Allowed: the replication rule goes, with an event; the replica and its key stay.
    let allowing = Settings { allow_replication_opt_out: true, ..settings.clone() };
    let off = provision(&aws.cloud, &t, &allowing, &mut status).await;
    assert!(all_ok(&off), "four conditions, all True: {}", verdicts(&off));
    assert!(
        off.events.iter().any(|e| e.reason == REPAIRED && e.note.contains("removed the replication configuration")),
        "{:?}",
        off.events
    );
    let gone = aws.s3.get_bucket_replication().bucket(&source.name).send().await.unwrap_err();
    assert_eq!(gone.into_service_error().meta().code(), Some("ReplicationConfigurationNotFoundError"));
    let there = replica_clients(moto);
    there.s3.head_bucket().bucket(&replica.bucket.clone().unwrap().name).send().await.expect("the replica is kept");
    let key = there.kms.describe_key().key_id(&replica.key.clone().unwrap().id).send().await.unwrap();
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    assert_eq!(off.ids.replica, status.ids.replica, "status still records the kept replica");
    let quiet = provision(&aws.cloud, &t, &allowing, &mut status).await;
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);
}

#[tokio::test]
async fn retain_keeps_the_replica_tagged_retained() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let t = tenant("dr-retain", json!({}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_six_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let replica = status.ids.replica.clone().unwrap();
    let Retirement::Done { events } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("Retain is never blocked");
    };
    assert_eq!(events.iter().filter(|e| e.reason == RETAINED).count(), 6, "{events:?}");
    let there = replica_clients(moto);
    let tags = there.s3.get_bucket_tagging().bucket(&replica.bucket.unwrap().name).send().await.unwrap();
    assert!(tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/retained" && t.value() == "true"));
    let key = replica.key.unwrap();
    let state = there.kms.describe_key().key_id(&key.id).send().await.unwrap();
    assert_eq!(state.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    let tags = there.kms.list_resource_tags().key_id(&key.id).send().await.unwrap();
    assert!(tags.tags().iter().any(|t| t.tag_key() == "imaging.tenancy.dev/retained"));
    let role = aws.iam.get_role().role_name(&replica.role.unwrap().name).send().await.expect("kept");
    assert!(role.role().unwrap().tags().iter().any(|t| t.key() == "imaging.tenancy.dev/retained"));
}

#[tokio::test]
async fn delete_removes_the_replica_only_when_empty_and_schedules_its_key_after() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let t = tenant("dr-delete", json!({"deletionPolicy": "Delete"}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_six_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let replica = status.ids.replica.clone().unwrap();
    let (bucket, key) = (replica.bucket.clone().unwrap(), replica.key.clone().unwrap());
    let there = replica_clients(moto);

    // An object in the replica (moto does not replicate: written there directly, policy aside).
    there.s3.delete_bucket_policy().bucket(&bucket.name).send().await.unwrap();
    there.s3.put_object().bucket(&bucket.name).key("study/1.dcm").body(b"DICM".to_vec().into()).send().await.unwrap();
    let Retirement::Blocked { verdict, .. } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("a replica holding objects blocks the deletion");
    };
    assert_eq!((verdict.type_, verdict.reason.as_str()), (DELETION_BLOCKED, "ReplicaBucketNotEmpty"));
    let state = there.kms.describe_key().key_id(&key.id).send().await.unwrap();
    assert_eq!(state.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled", "the replica key is kept");
    let versions = there.s3.list_object_versions().bucket(&bucket.name).send().await.unwrap();
    assert_eq!(versions.versions().len(), 1, "the operator never deletes objects");

    // Emptied by a person: the replica goes, then its key is scheduled, then the roles go.
    there
        .s3
        .delete_object()
        .bucket(&bucket.name)
        .key("study/1.dcm")
        .version_id(versions.versions()[0].version_id().unwrap())
        .send()
        .await
        .unwrap();
    let Retirement::Done { events } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("an empty replica is deleted");
    };
    let deleted: Vec<&str> = events.iter().filter(|e| e.reason == DELETED).map(|e| e.note.as_str()).collect();
    let position =
        |what: &str| deleted.iter().position(|n| n.contains(what)).unwrap_or_else(|| panic!("{what}: {deleted:?}"));
    assert!(position(&bucket.name) < position(&key.id), "{deleted:?}");
    assert!(position(&key.id) < position(&replica.role.clone().unwrap().name), "{deleted:?}");
    let state = there.kms.describe_key().key_id(&key.id).send().await.unwrap();
    assert_eq!(state.key_metadata().unwrap().key_state().unwrap().as_str(), "PendingDeletion");
    assert!(there.s3.head_bucket().bucket(&bucket.name).send().await.is_err(), "the replica bucket is gone");
}

#[tokio::test]
async fn a_crash_after_each_aws_write_of_a_replicating_tenant_converges_with_one_of_each() {
    let moto = Moto::shared().await;
    let settings = replicating(settings(None));
    let probe = connect(moto).await;
    let report = provision(&probe.cloud, &tenant("dr-probe", json!({})), &settings, &mut KeepIds::default()).await;
    assert!(all_six_ok(&report), "{}", verdicts(&report));
    let writes = probe.cloud.calls().writes;
    println!("a first provision of a replicating tenant makes {writes} writes");

    for n in 1..=writes {
        let t = tenant("dr-crash", json!({}));
        let crashing = connect_with(moto, Mode::CrashAfterWrites { writes: n }).await;
        let mut status = KeepIds::default();
        provision(&crashing.cloud, &t, &settings, &mut status).await;
        assert!(crashing.proxy.crashed(), "write {n} was made");
        drop(crashing);
        // Every other crash also loses the last status patch: the lookups find what was made.
        if n % 2 == 0 {
            status = KeepIds::default();
        }
        let restarted = connect(moto).await;
        let report = provision(&restarted.cloud, &t, &settings, &mut status).await;
        assert!(all_six_ok(&report), "crash after write {n}: {}", verdicts(&report));
        let here = census(moto, uid(&t)).await;
        let far = census_in(moto, uid(&t), REPLICA_REGION).await;
        assert_eq!(
            (
                here.roles.len(),
                here.keys.len(),
                here.buckets.len(),
                far.keys.len(),
                far.aliases.len(),
                far.buckets.len()
            ),
            (2, 1, 1, 1, 1, 1),
            "crash after write {n}: {here:?} {far:?}"
        );
        assert_eq!(status.ids, report.ids, "crash after write {n}");
        let quiet = provision(&restarted.cloud, &t, &settings, &mut status).await;
        assert!(quiet.events.is_empty(), "crash after write {n}: {:?}", quiet.events);
    }
}
