//! Leader election as the chart runs it (two replicas, one Lease): only the Lease holder
//! reconciles; when it dies, the standby takes over within the lease duration and reconciles
//! new tenants. And the metrics endpoint serves every family the operator documents.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::operator::{Operator, create_tenant, wait_ready};
use crate::replicas::{Election, LEASE_SECONDS, Replica};
use imaging_tenant_operator::api::ImagingTenant;
use ito_test_support::{ControlPlane, Moto, create_namespace, unique_name, wait_for};
use kube::Api;

const RECONCILIATIONS: &str = "imaging_tenant_operator_reconciliations_total";
const LEADER: &str = "imaging_tenant_operator_leader";

#[tokio::test]
async fn only_the_leader_reconciles_and_the_standby_takes_over_within_the_lease_duration() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    let election = Election {
        namespace: create_namespace(&client, "leader-election").await,
        lease: unique_name("lease"),
        shard: unique_name("shard"),
    };

    let first = Replica::start(cp, moto, &election, &unique_name("replica-a")).await;
    election.wait_holder(&client, &first.identity, Duration::from_secs(30)).await;
    let second = Replica::start(cp, moto, &election, &unique_name("replica-b")).await;
    let mut replicas = [first, second];

    // Both are alive; one holds the Lease and keeps it.
    let leader_id = election.holder(&client).await.expect("a Lease holder");
    let (leader, standby) = if replicas[0].identity == leader_id { (0, 1) } else { (1, 0) };
    for replica in &replicas {
        assert!(matches!(replica.health("/healthz").await, Ok((200, _))), "{} is live", replica.identity);
    }

    let tenant = unique_name("elected");
    create_tenant(&client, &election.tenant(&tenant)).await;
    wait_ready(&client, &tenant).await;
    assert!(
        replicas[leader].metric_sum(RECONCILIATIONS).await > 0.0,
        "the leader reconciled:\n{}",
        replicas[leader].metrics().await
    );
    // Wait past two renewals: the standby still has not reconciled anything.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 2)).await;
    assert_eq!(election.holder(&client).await.as_deref(), Some(leader_id.as_str()), "the leader keeps the Lease");
    assert_eq!(
        replicas[standby].metric_sum(RECONCILIATIONS).await,
        0.0,
        "the standby reconciled nothing:\n{}",
        replicas[standby].metrics().await
    );
    let standby_metrics = replicas[standby].metrics().await;
    assert!(
        !standby_metrics
            .lines()
            .any(|l| l.starts_with("imaging_tenant_operator_aws_calls_total{") && !l.contains("service=\"sts\"")),
        "the standby called no AWS service but STS (its start-up identity check):\n{standby_metrics}"
    );
    assert_eq!(
        replicas[standby].metric_sum("imaging_tenant_operator_aws_writes_total").await,
        0.0,
        "the standby wrote nothing to AWS"
    );
    assert!(!replicas[standby].log_text().contains(&tenant), "the standby's log never mentions the tenant");
    assert_eq!(replicas[leader].metric_sum(LEADER).await, 1.0, "the leader says so");
    assert_eq!(replicas[standby].metric_sum(LEADER).await, 0.0, "the standby says so");

    // The leader dies without a word (SIGKILL): its Lease is not released, it expires.
    let killed = Instant::now();
    replicas[leader].kill();
    let standby_id = replicas[standby].identity.clone();
    // The lease duration, plus the standby's poll and a loaded machine's margin.
    election.wait_holder(&client, &standby_id, Duration::from_secs(LEASE_SECONDS + 15)).await;
    let took = killed.elapsed();
    eprintln!("standby took over {took:.1?} after the leader was killed (lease {LEASE_SECONDS}s)");

    let after = unique_name("after-failover");
    create_tenant(&client, &election.tenant(&after)).await;
    wait_ready(&client, &after).await;
    assert!(replicas[standby].metric_sum(RECONCILIATIONS).await > 0.0, "the new leader reconciles");
    assert_eq!(replicas[standby].metric_sum(LEADER).await, 1.0, "the new leader says so");
    assert!(matches!(replicas[standby].health("/readyz").await, Ok((200, _))), "the new leader is ready");
}

/// Every documented family is there with its `# TYPE` line, once the operator has reconciled a
/// tenant and failed on one (a deletion blocked by a non-empty bucket).
#[tokio::test]
async fn metrics_endpoint_serves_every_family() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;

    let tenant = unique_name("metrics");
    create_tenant(&client, &op.tenant(&tenant, serde_json::json!({"deletionPolicy": "Delete"}))).await;
    let stored = wait_ready(&client, &tenant).await;
    let bucket = stored.status.and_then(|s| s.bucket).expect("the bucket in status").name;
    // The bucket policy admits only the tenant's role; moto's user writes once it is gone.
    let s3 = moto.s3_client();
    s3.delete_bucket_policy().bucket(&bucket).send().await.expect("remove the bucket policy");
    s3.put_object()
        .bucket(&bucket)
        .key("study/1.dcm")
        .body(b"DICM".to_vec().into())
        .send()
        .await
        .expect("put an object");
    Api::<ImagingTenant>::all(client.clone()).delete(&tenant, &Default::default()).await.expect("delete the tenant");
    wait_for(Duration::from_secs(60), "a reconcile error (deletion blocked by a non-empty bucket)", || async {
        let errors = op.metric_sum("imaging_tenant_operator_reconcile_errors_total", "").await;
        if errors > 0.0 { Ok(()) } else { Err(op.metrics().await) }
    })
    .await;

    let text = op.metrics().await;
    // The families served are exactly those README.md's Monitoring table lists.
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (family, kind) = l.split_once(' ').expect("# TYPE <family> <kind>");
            // OpenMetrics names a counter family without its `_total` suffix.
            if kind == "counter" && !family.ends_with("_total") {
                format!("{family}_total")
            } else {
                family.to_string()
            }
        })
        .collect();
    let documented = readme_metric_families();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served by /metrics but not in README.md's Monitoring table"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in README.md's Monitoring table but not served by /metrics:\n{text}"
    );
    let sample = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
    assert!(sample("imaging_tenant_operator_reconciliations_total{outcome="), "reconciliations by outcome:\n{text}");
    assert!(
        sample("imaging_tenant_operator_reconcile_errors_total{category=\"deletion_blocked\"}"),
        "errors by category:\n{text}"
    );
    assert!(sample("imaging_tenant_operator_reconcile_duration_seconds_bucket{le="), "duration buckets:\n{text}");
    assert!(sample("imaging_tenant_operator_tenants{ready=\"true\"}"), "tenants by Ready state:\n{text}");
    let ready = format!("imaging_tenant_condition{{tenant=\"{tenant}\",condition=\"Ready\",status=\"True\"}} 1");
    assert!(text.lines().any(|l| l == ready), "the tenant's conditions ({ready}):\n{text}");
    assert!(text.lines().any(|l| l == "imaging_tenant_operator_leader 1"), "it reconciles:\n{text}");
    let version = format!("imaging_tenant_operator_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l == version), "{version}:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("imaging_tenant_operator_aws_calls_total{service=\"s3\"")
            && l.contains("operation=")
            && l.contains("outcome=")),
        "AWS calls by service, operation and outcome:\n{text}"
    );
    assert!(op.metric_sum("imaging_tenant_operator_aws_writes_total", "").await > 0.0, "AWS writes counted");
    assert!(
        op.metric_sum("imaging_tenant_operator_aws_budget_requests_total", "budget=\"kms:CreateKey\"").await >= 1.0,
        "requests counted against their budget:\n{text}"
    );
    assert!(sample("imaging_tenant_operator_aws_budget_rate{budget=\"kms:CreateKey\"} 4"), "budget rates:\n{text}");

    // Let the deletion finish, so the tenant does not outlive the test blocked.
    let versions = s3.list_object_versions().bucket(&bucket).send().await.expect("list object versions");
    for v in versions.versions() {
        s3.delete_object()
            .bucket(&bucket)
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await
            .unwrap();
    }
}

/// The metric families listed in README.md's Monitoring table.
fn readme_metric_families() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(ito_test_support::repo_root().join("README.md")).expect("read README.md");
    let section = readme.split("\n## Monitoring\n").nth(1).expect("a Monitoring section in README.md");
    section
        .lines()
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}
