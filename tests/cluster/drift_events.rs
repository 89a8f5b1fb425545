//! Event-driven drift detection against moto's SQS: with a resync interval of six hours, a bucket
//! policy changed behind the operator's back stays changed until a CloudTrail-shaped event naming
//! the bucket arrives on the queue (moto emits no CloudTrail events, so the test sends what
//! EventBridge would), and is repaired within seconds after. Malformed, duplicate and unknown
//! events are counted and dropped, and the consumer keeps going.

use std::time::{Duration, Instant};

use crate::operator::{Operator, create_tenant, wait_event, wait_ready};
use ito_test_support::{ControlPlane, Moto, REGION, unique_name, wait_for};
use serde_json::json;

fn cloudtrail_event(id: &str, source: &str, name: &str, params: serde_json::Value) -> String {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "AWS API Call via CloudTrail",
        "source": format!("aws.{source}"),
        "account": "123456789012",
        "time": "2026-11-30T06:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/someone/intruder",
                             "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::123456789012:role/someone"}}},
            "eventSource": format!("{source}.amazonaws.com"),
            "eventName": name,
            "awsRegion": REGION,
            "requestParameters": params,
            "readOnly": false,
            "eventType": "AwsApiCall",
            "managementEvent": true,
        },
    })
    .to_string()
}

#[tokio::test]
async fn a_tampered_bucket_policy_is_repaired_within_seconds_of_its_cloudtrail_event() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config());
    let queue = sqs.create_queue().queue_name(unique_name("drift")).send().await.expect("create the queue");
    let queue_url = queue.queue_url().expect("queue URL").to_string();
    let op = Operator::start_with(cp, moto, &["--drift-events-queue-url", &queue_url, "--resync-interval", "6h"]).await;
    let name = unique_name("drift");
    create_tenant(&client, &op.tenant(&name, json!({}))).await;
    let tenant = wait_ready(&client, &name).await;
    let bucket = tenant.status.unwrap().bucket.unwrap().name;

    let s3 = moto.s3_client();
    let policy = |s3: aws_sdk_s3::Client, bucket: String| async move {
        s3.get_bucket_policy().bucket(bucket).send().await.map(|o| o.policy.unwrap_or_default()).unwrap_or_default()
    };
    let tampered = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "Tampered", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
        "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/*"),
    }]});
    s3.put_bucket_policy().bucket(&bucket).policy(tampered.to_string()).send().await.expect("tamper with the policy");

    // Noise first: none of it may trigger anything, or stop the consumer.
    let send = |body: String| {
        let (sqs, url) = (sqs.clone(), queue_url.clone());
        async move { sqs.send_message().queue_url(url).message_body(body).send().await.expect("send") }
    };
    send("not json at all".into()).await;
    send(json!({"detail-type": "Scheduled Event", "id": "x"}).to_string()).await;
    let unknown =
        cloudtrail_event(&unique_name("ev"), "s3", "PutBucketPolicy", json!({"bucketName": "someone-elses-bucket"}));
    send(unknown).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        policy(s3.clone(), bucket.clone()).await.contains("Tampered"),
        "without an event naming the bucket, nothing re-reads it before the 6 h resync"
    );

    let event = cloudtrail_event(&unique_name("ev"), "s3", "PutBucketPolicy", json!({"bucketName": bucket}));
    let sent = Instant::now();
    send(event.clone()).await;
    send(event).await; // SQS delivers at least once.
    wait_for(Duration::from_secs(30), "the bucket policy to be repaired", || {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            let now = policy(s3, bucket).await;
            if now.contains("Tampered") { Err(now) } else { Ok(()) }
        }
    })
    .await;
    let repaired_in = sent.elapsed();
    println!("bucket policy repaired {repaired_in:?} after its CloudTrail event (resync interval 6 h)");
    wait_event(&client, &name, "Repaired", "policy").await;

    let metric = |outcome: &'static str| {
        let op = &op;
        async move { op.metric_sum("imaging_tenant_operator_drift_events_total", &format!("outcome=\"{outcome}\"")).await }
    };
    assert!(metric("matched").await >= 1.0);
    assert!(metric("duplicate").await >= 1.0, "the second delivery is dropped");
    assert!(metric("malformed").await >= 2.0, "not JSON, and not a CloudTrail event");
    assert!(metric("unknown").await >= 1.0, "a bucket of no tenant");
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("queue attributes");
    let waiting = left
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(waiting.as_deref(), Some("0"), "every message was deleted once read");
}
