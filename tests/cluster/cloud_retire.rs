//! Invariants 5 and 12: no PHI is ever lost by the operator. Retain deletes nothing and tags;
//! Delete removes the bucket only when it is empty, then schedules the key, and removes the role
//! last; a bucket that cannot be confirmed gone keeps the key.

use std::path::Path;

use crate::cloud_fixtures::*;
use imaging_tenant_operator::api::condition::DELETION_BLOCKED;
use imaging_tenant_operator::cloud::{ACCESS_REVOKED, DELETED, RETAINED, Retirement, policy};
use ito_test_support::Moto;
use ito_test_support::faults::Mode;
use serde_json::json;

#[tokio::test]
async fn retain_deletes_nothing_and_tags_every_resource_retained() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("retain", json!({}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let want = desired(&t, &settings, &status.ids);

    let Retirement::Done { events } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("Retain is never blocked");
    };
    assert_eq!(events.iter().filter(|e| e.reason == RETAINED).count(), 3, "{events:?}");

    let role = aws.iam.get_role().role_name(&want.role.name).send().await.expect("the role is kept");
    assert!(
        role.role().unwrap().tags().iter().any(|t| t.key() == "imaging.tenancy.dev/retained" && t.value() == "true")
    );
    // Offboarding revokes access: nobody may assume the kept role.
    let trust = policy::parse(role.role().unwrap().assume_role_policy_document().unwrap()).unwrap();
    let statements = trust["Statement"].as_array().unwrap();
    assert!(statements.iter().all(|s| s["Effect"] == "Deny"), "only denies remain: {trust}");
    assert!(statements.iter().any(|s| s["Principal"]["AWS"] == "*"), "{trust}");
    assert!(events.iter().any(|e| e.reason == ACCESS_REVOKED && e.note.contains("deny-all")), "{events:?}");
    let key_id = &status.ids.key.as_ref().unwrap().id;
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the alias is kept");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    let tags = aws.kms.list_resource_tags().key_id(key_id).send().await.unwrap();
    assert!(tags.tags().iter().any(|t| t.tag_key() == "imaging.tenancy.dev/retained" && t.tag_value() == "true"));
    let tags = aws.s3.get_bucket_tagging().bucket(&want.bucket.name).send().await.expect("the bucket is kept");
    assert!(tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/retained" && t.value() == "true"));
    assert!(tags.tag_set().iter().any(|t| t.key() == "imaging.tenancy.dev/tenant-uid"), "other tags stay");

    // Idempotent: the second retirement writes nothing.
    let before = aws.cloud.calls();
    assert_eq!(aws.cloud.retire(&t, &settings, &status.ids).await, Retirement::Done { events: vec![] });
    assert_eq!(aws.cloud.calls().since(&before).writes, 0);
}

#[tokio::test]
async fn delete_with_objects_is_blocked_and_leaves_every_object_version() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("blocked", json!({"deletionPolicy": "Delete"}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let want = desired(&t, &settings, &status.ids);
    put_object_without_policy(moto, &want.bucket.name, "study-1/image.dcm").await;
    put_object_without_policy(moto, &want.bucket.name, "study-1/image.dcm").await;

    for pass in 1..=2 {
        let Retirement::Blocked { verdict, events } = aws.cloud.retire(&t, &settings, &status.ids).await else {
            panic!("pass {pass}: a bucket with objects blocks deletion");
        };
        assert_eq!(verdict.type_, DELETION_BLOCKED);
        assert!(verdict.ok, "DeletionBlocked=True while blocked");
        assert_eq!(verdict.reason, "BucketNotEmpty");
        assert!(verdict.message.contains("holds 2 object versions"), "{}", verdict.message);
        assert!(verdict.message.contains(&want.bucket.name));
        assert!(events.iter().any(|e| e.reason == "DeletionBlocked"), "{events:?}");
        assert!(!events.iter().any(|e| e.reason == DELETED), "nothing is deleted while blocked: {events:?}");
    }
    // Both versions are still there, the key is untouched, the role goes last.
    let versions = moto.s3_client().list_object_versions().bucket(&want.bucket.name).send().await.unwrap();
    assert_eq!(versions.versions().len(), 2);
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the key and alias stay");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    assert!(aws.iam.get_role().role_name(&want.role.name).send().await.is_ok(), "the role is kept until the end");
}

#[tokio::test]
async fn delete_with_an_empty_bucket_removes_the_bucket_then_schedules_the_key_then_removes_the_role() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("delete", json!({"deletionPolicy": "Delete", "encryption": {"deletionWindowDays": 7}}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let want = desired(&t, &settings, &status.ids);
    let key_id = status.ids.key.clone().unwrap().id;

    let Retirement::Done { events } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("an empty bucket does not block deletion");
    };
    let notes: Vec<&str> = events.iter().filter(|e| e.reason == DELETED).map(|e| e.note.as_str()).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes[0].contains("S3 bucket"), "the bucket goes first: {notes:?}");
    assert!(notes[1].contains("in 7 days"), "then the key: {notes:?}");
    assert!(notes[2].contains("IAM role"), "the role goes last: {notes:?}");

    assert!(aws.iam.get_role().role_name(&want.role.name).send().await.is_err(), "role deleted");
    assert!(aws.s3.head_bucket().bucket(&want.bucket.name).send().await.is_err(), "bucket deleted");
    let key = aws.kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "PendingDeletion");
    assert!(aws.kms.describe_key().key_id(&want.key.alias).send().await.is_err(), "alias deleted");

    // Idempotent: everything already gone is fine.
    assert_eq!(aws.cloud.retire(&t, &settings, &status.ids).await, Retirement::Done { events: vec![] });
}

/// A 403 on HeadBucket (the operator lost s3:ListBucket) is not "gone": the key stays enabled.
#[tokio::test]
async fn delete_with_an_unreadable_bucket_keeps_the_key() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("denied", json!({"deletionPolicy": "Delete"}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let want = desired(&t, &settings, &status.ids);

    let denied = connect_with(moto, Mode::DenyS3Heads).await;
    let Retirement::Blocked { verdict, .. } = denied.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("a bucket that answers 403 blocks deletion");
    };
    assert_eq!(verdict.reason, "BucketNotConfirmedGone");
    assert!(verdict.message.contains("KMS key") && verdict.message.contains("is kept"), "{}", verdict.message);
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the key and alias stay");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    assert!(aws.iam.get_role().role_name(&want.role.name).send().await.is_ok(), "the role stays");
    assert!(aws.s3.head_bucket().bucket(&want.bucket.name).send().await.is_ok(), "the bucket stays");
}

/// A bucket of the tenant's name whose tenant tag is someone else's is not "gone" either.
#[tokio::test]
async fn delete_with_a_bucket_that_is_not_the_tenants_keeps_the_key() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    let t = tenant("retagged", json!({"deletionPolicy": "Delete"}));
    let aws = connect(moto).await;
    let mut status = KeepIds::default();
    assert!(all_ok(&provision(&aws.cloud, &t, &settings, &mut status).await));
    let want = desired(&t, &settings, &status.ids);
    let tagging = aws_sdk_s3::types::Tagging::builder()
        .tag_set(
            aws_sdk_s3::types::Tag::builder()
                .key("imaging.tenancy.dev/tenant-uid")
                .value("00000000-0000-0000-0000-000000000000")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    aws.s3.put_bucket_tagging().bucket(&want.bucket.name).tagging(tagging).send().await.unwrap();

    let Retirement::Blocked { verdict, .. } = aws.cloud.retire(&t, &settings, &status.ids).await else {
        panic!("a bucket that is not the tenant's blocks deletion");
    };
    assert_eq!(verdict.reason, "BucketNotConfirmedGone");
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the key and alias stay");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
}

#[test]
fn the_operator_never_deletes_objects() {
    fn scan(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    // The SDK calls DeleteObject, DeleteObjects, DeleteObjectTagging: none may appear.
                    if line.contains("delete_object") {
                        found.push(format!("{}:{}: {line}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let drill = src.join("drill.rs");
    let mut found = Vec::new();
    scan(&src, &mut found);
    // `restore-drill`, run by a person as the tenant role, puts delete markers on its own canary
    // (DeleteObject without a version ID, which keeps every version): that one call, nothing more.
    let drill_text = std::fs::read_to_string(&drill).unwrap();
    assert!(!drill_text.contains("version_id(") && !drill_text.contains("delete_objects"), "{}", drill.display());
    found.retain(|line| !(line.starts_with(&drill.display().to_string()) && line.contains(".delete_object()")));
    assert!(found.is_empty(), "object deletion in the operator: {found:#?}");
}
