//! Invariant 7, crash safety: stopped after any AWS write, or unable to record an ID in status,
//! the operator converges on the next run with exactly one role, key, alias and bucket.

use crate::cloud_fixtures::*;
use async_trait::async_trait;
use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::cloud::{CloudIds, Progress};
use imaging_tenant_operator::config::Settings;
use ito_test_support::Moto;
use ito_test_support::faults::Mode;
use serde_json::json;

fn spec() -> serde_json::Value {
    json!({
        "storage": {"retention": {"mode": "Governance", "days": 7}, "lifecycle": {"archiveAfterDays": 30, "expireNoncurrentAfterDays": 60}},
        "tags": {"cost-center": "crash"},
    })
}

/// The next run, by a freshly started operator, converges and leaves one of everything.
async fn assert_converges(moto: &Moto, tenant: &ImagingTenant, settings: &Settings, status: &mut KeepIds, what: &str) {
    let restarted = connect(moto).await;
    let report = provision(&restarted.cloud, tenant, settings, status).await;
    assert!(all_ok(&report), "{what}: the next run did not converge:\n{}", verdicts(&report));
    // A bucket whose CreateBucket was the last write already carries the tenant's tags: it is
    // adopted as it is (an untagged one would be refused).
    let retagged: Vec<_> = report.events.iter().filter(|e| e.note.starts_with("restored tags")).collect();
    assert!(retagged.is_empty(), "{what}: {retagged:?}");
    let found = census(moto, uid(tenant)).await;
    assert_eq!(
        (found.roles.len(), found.keys.len(), found.aliases.len(), found.buckets.len()),
        (1, 1, 1, 1),
        "{what}: {found:?}"
    );
    assert_eq!(status.ids, report.ids, "{what}: status holds the live IDs");
    assert_eq!(found.keys, [report.ids.key.clone().unwrap().id], "{what}");
    let before = restarted.cloud.calls();
    let quiet = provision(&restarted.cloud, tenant, settings, status).await;
    assert!(all_ok(&quiet) && quiet.events.is_empty(), "{what}: {:?}", quiet.events);
    assert_eq!(restarted.cloud.calls().since(&before).writes, 0, "{what}");
}

#[tokio::test]
async fn a_crash_after_each_aws_write_converges_with_nothing_duplicated() {
    let moto = Moto::shared().await;
    let settings = settings(Some(audit_bucket(moto).await));

    // How many writes a first provision makes.
    let probe = connect(moto).await;
    let report = provision(&probe.cloud, &tenant("crash-probe", spec()), &settings, &mut KeepIds::default()).await;
    assert!(all_ok(&report), "{}", verdicts(&report));
    let calls = probe.cloud.calls();
    let writes = calls.writes;
    println!("a first provision makes {writes} writes: {:?}", calls.write_operations());
    assert!(writes >= 10, "{:?}", calls.write_operations());
    assert!(
        !calls.write_operations().iter().any(|w| w.starts_with("s3:PutBucketTagging")),
        "the bucket's tags go with CreateBucket: {:?}",
        calls.write_operations()
    );

    for n in 1..=writes {
        // The status patch after each new ID either landed (kept) or was lost with the process.
        for status_kept in [true, false] {
            let t = tenant("crash", spec());
            let crashing = connect_with(moto, Mode::CrashAfterWrites { writes: n }).await;
            let mut status = KeepIds::default();
            let report = provision(&crashing.cloud, &t, &settings, &mut status).await;
            assert!(crashing.proxy.crashed(), "write {n} was made");
            if n < writes {
                assert!(!all_ok(&report), "stopped after write {n}, nothing should be verified");
            }
            drop(crashing);
            if !status_kept {
                status = KeepIds::default();
            }
            let what =
                format!("crash after write {n} of {writes}, status {}", if status_kept { "kept" } else { "lost" });
            assert_converges(moto, &t, &settings, &mut status, &what).await;
        }
    }
}

/// A status patch that fails on its `fail_at`-th call (1-based), as when the apiserver is away.
struct FailingStatus {
    inner: KeepIds,
    calls: usize,
    fail_at: usize,
}

#[async_trait]
impl Progress for FailingStatus {
    async fn record(&mut self, ids: &CloudIds) -> Result<(), String> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err("the apiserver is unavailable".into());
        }
        self.inner.record(ids).await
    }
}

#[tokio::test]
async fn a_failed_status_record_stops_creation_and_the_next_run_converges() {
    let moto = Moto::shared().await;
    let settings = settings(None);
    // Role, key and bucket are recorded one after the other: fail each in turn.
    for fail_at in 1..=3 {
        let t = tenant("status", spec());
        let aws = connect(moto).await;
        let mut status = FailingStatus { inner: KeepIds::default(), calls: 0, fail_at };
        let known = CloudIds::default();
        let report = aws.cloud.provision(&t, &settings, &known, &mut status).await;
        let error = report.error.as_ref().expect("the failed record is reported");
        assert_eq!(error.code(), "StatusNotRecorded", "{}", verdicts(&report));
        assert!(error.is_retryable());
        let created = census(moto, uid(&t)).await;
        assert!(created.buckets.is_empty() || fail_at == 3, "nothing is created after a failed record: {created:?}");
        if fail_at < 3 {
            assert!(created.buckets.is_empty());
        }
        let mut status = status.inner;
        assert_converges(moto, &t, &settings, &mut status, &format!("status record {fail_at} failed")).await;
    }
}
