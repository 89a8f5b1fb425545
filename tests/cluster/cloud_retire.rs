//! Invariant 5: no PHI is ever lost by the operator. Retain deletes nothing and tags; Delete
//! removes the role, the bucket only when it is empty, and only then schedules the key.

use std::path::Path;

use crate::cloud_fixtures::*;
use imaging_tenant_operator::api::condition::DELETION_BLOCKED;
use imaging_tenant_operator::cloud::{DELETED, RETAINED, Retirement};
use ito_test_support::Moto;
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
        if pass == 1 {
            assert!(events.iter().any(|e| e.reason == DELETED && e.note.contains("IAM role")), "{events:?}");
        }
    }
    // Both versions are still there, the key is untouched, the role is gone.
    let versions = moto.s3_client().list_object_versions().bucket(&want.bucket.name).send().await.unwrap();
    assert_eq!(versions.versions().len(), 2);
    let key = aws.kms.describe_key().key_id(&want.key.alias).send().await.expect("the key and alias stay");
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "Enabled");
    assert!(aws.iam.get_role().role_name(&want.role.name).send().await.is_err(), "the role is deleted");
}

#[tokio::test]
async fn delete_with_an_empty_bucket_removes_role_and_bucket_then_schedules_the_key() {
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
    assert!(notes[2].contains("in 7 days"), "the key goes last: {notes:?}");

    assert!(aws.iam.get_role().role_name(&want.role.name).send().await.is_err(), "role deleted");
    assert!(aws.s3.head_bucket().bucket(&want.bucket.name).send().await.is_err(), "bucket deleted");
    let key = aws.kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(key.key_metadata().unwrap().key_state().unwrap().as_str(), "PendingDeletion");
    assert!(aws.kms.describe_key().key_id(&want.key.alias).send().await.is_err(), "alias deleted");

    // Idempotent: everything already gone is fine.
    assert_eq!(aws.cloud.retire(&t, &settings, &status.ids).await, Retirement::Done { events: vec![] });
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
    let mut found = Vec::new();
    scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    assert!(found.is_empty(), "object deletion in the operator: {found:#?}");
}
