//! Robustness: through a proxy that answers a fifth of all requests with throttling or server
//! errors in each service's wire format, 20 tenants provisioned at once all converge, with one
//! role, key, alias and bucket each.

use std::time::{Duration, Instant};

use crate::cloud_fixtures::*;
use futures::future::join_all;
use ito_test_support::Moto;
use ito_test_support::faults::Mode;
use serde_json::json;

const TENANTS: usize = 20;
const PASSES: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_converge_through_throttling_and_server_errors() {
    let moto = Moto::shared().await;
    let settings = settings(Some(audit_bucket(moto).await));
    let aws = connect_with(moto, Mode::Flaky { percent: 20, max_faults: 3000, seed: 20 }).await;
    let tenants: Vec<_> = (0..TENANTS)
        .map(|i| {
            tenant(
                "flaky",
                json!({"storage": {"lifecycle": {"expireNoncurrentAfterDays": 30 + i}}, "deletionPolicy": "Delete"}),
            )
        })
        .collect();

    let started = Instant::now();
    // As the controller does: reconcile each tenant until it converges, backing off after a
    // failed pass; only retryable failures are expected here.
    let outcomes = join_all(tenants.iter().map(|t| {
        let (cloud, settings) = (&aws.cloud, &settings);
        async move {
            let mut status = KeepIds::default();
            let mut failures = Vec::new();
            for pass in 1..=PASSES {
                let report = provision(cloud, t, settings, &mut status).await;
                if all_ok(&report) {
                    return Ok((pass, failures));
                }
                let error = report.error.clone().expect("a failed pass names its error");
                if !error.is_retryable() {
                    return Err(format!("non-retryable failure: {error}\n{}", verdicts(&report)));
                }
                failures.push(error.code().to_string());
                tokio::time::sleep(Duration::from_millis(100 * u64::from(pass))).await;
            }
            Err(format!("not converged after {PASSES} passes: {failures:?}"))
        }
    }))
    .await;
    let elapsed = started.elapsed();

    let mut passes = Vec::new();
    for (t, outcome) in tenants.iter().zip(&outcomes) {
        match outcome {
            Ok((pass, _)) => passes.push(*pass),
            Err(e) => panic!("{}: {e}", t.metadata.name.as_deref().unwrap()),
        }
    }
    let calls = aws.cloud.calls();
    println!(
        "{TENANTS} tenants converged in {elapsed:?} through {} injected faults out of {} requests; passes per tenant {passes:?}; {} operations, {} HTTP attempts; pass failures {:?}",
        aws.proxy.faults(),
        aws.proxy.requests(),
        calls.total(),
        calls.attempts,
        outcomes.iter().filter_map(|o| o.as_ref().ok()).flat_map(|(_, f)| f.clone()).collect::<Vec<_>>()
    );
    assert!(aws.proxy.faults() > 50, "the proxy injected faults");
    assert!(calls.attempts > calls.total(), "the SDK retried throttling and server errors");
    // CreateKey is rate-limited to 4/s across tenants.
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    // Throttling answers slowed their budgets down (adaptively), and no budget let more requests
    // through than its rate allows over the run.
    let budgets = aws.cloud.budgets();
    let throttled: Vec<_> = budgets.iter().filter(|(_, b)| b.throttled > 0).map(|(name, _)| *name).collect();
    assert!(!throttled.is_empty(), "throttling answers were seen by the budgets: {budgets:?}");
    for (name, b) in &budgets {
        assert!(
            b.requests as f64 <= b.configured * elapsed.as_secs_f64() + 1.0,
            "{name}: {} requests in {elapsed:?} at {}/s",
            b.requests,
            b.configured
        );
    }
    assert!(
        budgets.values().any(|b| b.throttled > 0 && b.waited > Duration::ZERO),
        "a throttled budget made requests wait: {budgets:?}"
    );

    for t in &tenants {
        let found = census(moto, uid(t)).await;
        assert_eq!(
            (found.roles.len(), found.keys.len(), found.aliases.len(), found.buckets.len()),
            (1, 1, 1, 1),
            "{}: {found:?}",
            t.metadata.name.as_deref().unwrap()
        );
    }
}
