//! `restore-drill` end to end: the operator (with --replication-region) makes a tenant Ready with
//! its replica, then the drill binary reads the tenant from the apiserver and drills against
//! moto. moto stores a bucket's replication configuration but copies no object (its S3 has no
//! replication engine), so for the success path this test copies the canary into the replica
//! itself, as S3 replication would, encrypted with the replica key; the timeout path is real.

use std::process::{Command, Output};
use std::time::Duration;

use imaging_tenant_operator::api::condition::{READY, REPLICA_READY, REPLICATION_CONFIGURED, is_true};
use imaging_tenant_operator::drill::CANARY_PREFIX;
use ito_test_support::{ControlPlane, Moto, unique_name};
use serde_json::json;

use crate::cloud_fixtures::in_region;
use crate::operator::{Operator, create_tenant, wait_ready};

const REPLICA_REGION: &str = "eu-west-1";

fn drill(cp: &ControlPlane, moto: &Moto, tenant: &str, timeout: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"))
        .args(["restore-drill", "--tenant", tenant, "--timeout", timeout, "--poll-interval", "1s"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ITO_AWS_ENDPOINT_URL", moto.endpoint_url())
        .output()
        .expect("run restore-drill")
}

fn s3_in(moto: &Moto, region: &str) -> aws_sdk_s3::Client {
    let config = in_region(moto, region);
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
}

/// Versions and delete markers of the canaries in a bucket.
async fn canary_versions(s3: &aws_sdk_s3::Client, bucket: &str) -> (usize, usize) {
    let out = s3.list_object_versions().bucket(bucket).prefix(CANARY_PREFIX).send().await.unwrap();
    (out.versions().len(), out.delete_markers().len())
}

#[tokio::test]
async fn the_restore_drill_passes_when_the_canary_replicates_and_fails_when_it_does_not() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let operator = Operator::start_with(cp, moto, &["--replication-region", REPLICA_REGION]).await;
    let client = cp.client();
    let name = unique_name("drill");
    create_tenant(&client, &operator.tenant(&name, json!({}))).await;
    let tenant = wait_ready(&client, &name).await;
    let status = tenant.status.clone().unwrap();
    for type_ in [REPLICA_READY, REPLICATION_CONFIGURED, READY] {
        assert!(is_true(&status.conditions, type_), "{type_}: {:?}", status.conditions);
    }
    let replica = status.replica.clone().expect("status.replica");
    let (bucket, replica_bucket, replica_key) =
        (status.bucket.unwrap().name, replica.bucket.unwrap(), replica.key.unwrap());
    assert_eq!(replica_bucket.region, REPLICA_REGION);

    // The CRD sees the bucket's region in status: a replica there is refused at admission.
    let api: kube::Api<imaging_tenant_operator::api::ImagingTenant> = kube::Api::all(client.clone());
    let same_region = json!({"spec": {"storage": {"replication": {"region": "us-east-1"}}}});
    let refused = api
        .patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&same_region))
        .await
        .expect_err("a replica in the bucket's own region is refused");
    assert!(refused.to_string().contains("must differ from the region of the tenant's bucket"), "{refused}");

    let source = s3_in(moto, "us-east-1");
    let far = s3_in(moto, REPLICA_REGION);
    // moto applies the Deny statements of a bucket policy to object requests without the request
    // context they test (TLS, principal ARN), so it would refuse the canary: the policies go for
    // the drill (the operator restores them at its next resync).
    source.delete_bucket_policy().bucket(&bucket).send().await.unwrap();
    far.delete_bucket_policy().bucket(&replica_bucket.name).send().await.unwrap();

    // What S3 replication would do: copy each new canary into the replica with the replica key.
    let replicator = {
        let (source, far, bucket, replica_bucket, key_arn) =
            (source.clone(), far.clone(), bucket.clone(), replica_bucket.name.clone(), replica_key.arn.clone());
        tokio::spawn(async move {
            loop {
                let listed = source.list_objects_v2().bucket(&bucket).prefix(CANARY_PREFIX).send().await.unwrap();
                if let Some(object) = listed.contents().first() {
                    let key = object.key().unwrap().to_string();
                    let body = source.get_object().bucket(&bucket).key(&key).send().await.unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes();
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    far.put_object()
                        .bucket(&replica_bucket)
                        .key(&key)
                        .body(bytes.to_vec().into())
                        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                        .ssekms_key_id(&key_arn)
                        .send()
                        .await
                        .unwrap();
                    return key;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let passed = tokio::task::spawn_blocking({
        let name = name.clone();
        move || drill(cp, moto, &name, "60s")
    })
    .await
    .unwrap();
    let copied = replicator.await.unwrap();
    let stdout = String::from_utf8_lossy(&passed.stdout);
    let stderr = String::from_utf8_lossy(&passed.stderr);
    assert_eq!(passed.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&format!("restore drill passed: {copied} replicated in ")), "{stdout}");
    println!("{stdout}");
    // Delete markers on both sides, and every version kept.
    assert_eq!(canary_versions(&source, &bucket).await, (1, 1));
    assert_eq!(canary_versions(&far, &replica_bucket.name).await, (1, 1));

    // Nothing copies the next canary: not replicated within the timeout, exit status 1.
    let failed = tokio::task::spawn_blocking({
        let name = name.clone();
        move || drill(cp, moto, &name, "3s")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not reach") && stderr.contains("within 3s"), "{stderr}");
    assert_eq!(canary_versions(&source, &bucket).await, (2, 2), "the second canary is marked deleted, kept");

    // A tenant without a replica: exit status 2, saying why.
    let plain = unique_name("drill-none");
    create_tenant(
        &client,
        &json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1",
            "kind": "ImagingTenant",
            "metadata": {"name": plain},
            "spec": {},
        }),
    )
    .await;
    let unusable = tokio::task::spawn_blocking(move || drill(cp, moto, &plain, "3s")).await.unwrap();
    let stderr = String::from_utf8_lossy(&unusable.stderr);
    assert_eq!(unusable.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no bucket in its status"), "{stderr}");
}
