//! Graceful shutdown: SIGTERM while tenants are being provisioned. The operator finishes its
//! in-flight reconciles, releases the Lease and exits 0 in bounded time; the next replica takes
//! the Lease at once and every tenant ends Ready with exactly one key, bucket and role.

use std::time::{Duration, Instant};

use crate::operator::{create_tenant, wait_ready};
use crate::replicas::{Election, Replica};
use imaging_tenant_operator::api::ImagingTenant;
use ito_test_support::{ControlPlane, Moto, create_namespace, unique_name, wait_for};
use kube::{Api, ResourceExt};

const TENANTS: usize = 6;
/// What the chart gives a pod between SIGTERM and SIGKILL (terminationGracePeriodSeconds).
const GRACE: Duration = Duration::from_secs(60);

/// The KMS keys tagged with `uid` as their tenant.
async fn keys_of(kms: &aws_sdk_kms::Client, uid: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pages = kms.list_keys().into_paginator().items().send();
    while let Some(key) = pages.next().await {
        let key_id = key.expect("list KMS keys").key_id.expect("a key id");
        let tags = kms.list_resource_tags().key_id(&key_id).send().await.expect("list key tags");
        if tags.tags().iter().any(|t| t.tag_key() == "imaging.tenancy.dev/tenant-uid" && t.tag_value() == uid) {
            found.push(key_id);
        }
    }
    found
}

#[tokio::test]
async fn sigterm_during_provisioning_exits_cleanly_releases_the_lease_and_leaves_no_half_applied_tenant() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    let election = Election {
        namespace: create_namespace(&client, "shutdown").await,
        lease: unique_name("lease"),
        shard: unique_name("shard"),
    };
    let first = Replica::start(cp, moto, &election, &unique_name("replica-a")).await;
    election.wait_holder(&client, &first.identity, Duration::from_secs(30)).await;

    let names: Vec<String> = (0..TENANTS).map(|_| unique_name("sigterm")).collect();
    for name in &names {
        create_tenant(&client, &election.tenant(name)).await;
    }
    // Provisioning has begun: the first AWS resources are being created.
    wait_for(Duration::from_secs(60), "the operator to start writing to AWS", || async {
        let writes = first.metric_sum("imaging_tenant_operator_aws_writes_total").await;
        if writes > 0.0 { Ok(()) } else { Err(format!("{writes} AWS writes")) }
    })
    .await;
    let tenants: Api<ImagingTenant> = Api::all(client.clone());
    let ready_before = {
        let mut ready = 0;
        for name in &names {
            let t = tenants.get(name).await.unwrap();
            let conditions = t.status.map(|s| s.conditions).unwrap_or_default();
            ready += conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") as usize;
        }
        ready
    };

    let terminated = Instant::now();
    first.terminate();
    let status = first.wait_exit(GRACE).await;
    let took = terminated.elapsed();
    eprintln!("SIGTERM with {ready_before}/{TENANTS} tenants Ready: exited with {status} after {took:.1?}");
    assert!(status.success(), "the operator exits 0 on SIGTERM, got {status}; log:\n{}", first.log_tail(40));
    assert_eq!(
        election.holder(&client).await,
        None,
        "the Lease is released on the way out; log:\n{}",
        first.log_tail(20)
    );
    let log = first.log_text();
    assert!(log.contains("SIGTERM"), "the operator logs the SIGTERM:\n{}", first.log_tail(20));
    assert!(log.contains("released the Lease"), "the operator logs the Lease release:\n{}", first.log_tail(20));

    // The next replica finds the Lease free and takes it without waiting for it to expire.
    let started = Instant::now();
    let second = Replica::start(cp, moto, &election, &unique_name("replica-b")).await;
    election.wait_holder(&client, &second.identity, Duration::from_secs(crate::replicas::LEASE_SECONDS + 5)).await;
    eprintln!("the next replica held the Lease {:.1?} after it started", started.elapsed());

    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let s3 = moto.s3_client();
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config());
    for name in &names {
        let tenant = wait_ready(&client, name).await;
        let uid = tenant.uid().expect("a stored tenant has a uid");
        let status = tenant.status.expect("a Ready tenant has a status");
        assert_eq!(status.namespaces, std::slice::from_ref(name), "{name}: its one namespace");
        let keys = keys_of(&kms, &uid).await;
        let key = status.key.expect("the key is recorded in status");
        assert_eq!(keys, std::slice::from_ref(&key.id), "{name}: exactly one KMS key, the one in status");
        let bucket = status.bucket.expect("the bucket is recorded in status");
        s3.head_bucket()
            .bucket(&bucket.name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: bucket {}: {e:?}", bucket.name));
        let role = status.role.expect("the role is recorded in status");
        iam.get_role()
            .role_name(&role.name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: role {}: {e:?}", role.name));
    }
    drop(second);
}
