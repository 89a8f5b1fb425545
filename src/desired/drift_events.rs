//! Event-driven drift detection, the AWS side: an EventBridge rule that forwards CloudTrail
//! management events changing the tenants' buckets, keys and roles to an SQS queue, the queue's
//! policy (only that rule may send), and the policy the operator role needs to consume it. Pure:
//! `drift-events` prints them, `deploy/aws/` holds them for placeholder values.

use serde_json::{Value, json};

use crate::config::Settings;

/// The CloudTrail events that change what the operator verifies, by service.
pub const WATCHED_EVENTS: [(&str, &[&str]); 3] = [
    (
        "s3.amazonaws.com",
        &[
            "PutBucketPolicy",
            "DeleteBucketPolicy",
            "PutBucketPublicAccessBlock",
            "DeleteBucketPublicAccessBlock",
            "PutBucketEncryption",
            "DeleteBucketEncryption",
            "PutBucketVersioning",
            "PutBucketLifecycle",
            "DeleteBucketLifecycle",
            "PutBucketLogging",
            "PutBucketOwnershipControls",
            "DeleteBucketOwnershipControls",
            "PutBucketAcl",
            "PutBucketTagging",
            "DeleteBucketTagging",
            "PutObjectLockConfiguration",
            "PutBucketReplication",
            "DeleteBucketReplication",
        ],
    ),
    (
        "kms.amazonaws.com",
        &[
            "PutKeyPolicy",
            "DisableKeyRotation",
            "EnableKeyRotation",
            "DisableKey",
            "EnableKey",
            "ScheduleKeyDeletion",
            "CancelKeyDeletion",
            "CreateGrant",
            "TagResource",
            "UntagResource",
            "DeleteAlias",
            "UpdateAlias",
        ],
    ),
    (
        "iam.amazonaws.com",
        &[
            "UpdateAssumeRolePolicy",
            "PutRolePolicy",
            "DeleteRolePolicy",
            "AttachRolePolicy",
            "DetachRolePolicy",
            "PutRolePermissionsBoundary",
            "DeleteRolePermissionsBoundary",
            "TagRole",
            "UntagRole",
            "DeleteRole",
        ],
    ),
];

/// The rule's name for this cluster.
pub fn rule_name(settings: &Settings) -> String {
    format!("imaging-tenant-drift-{}", settings.cluster_name)
}

/// The SQS queue's ARN from its name.
pub fn queue_arn(settings: &Settings, queue_name: &str) -> String {
    format!("arn:{}:sqs:{}:{}:{queue_name}", settings.partition, settings.region, settings.account_id)
}

/// The EventBridge event pattern: write events of the watched names, for resources named like
/// the tenants' (bucket prefix, the `imaging-` role names and this account's keys).
pub fn rule_pattern(settings: &Settings) -> Value {
    let sources: Vec<String> =
        WATCHED_EVENTS.iter().map(|(source, _)| format!("aws.{}", source.trim_end_matches(".amazonaws.com"))).collect();
    let names: Vec<&str> = WATCHED_EVENTS.iter().flat_map(|(_, names)| names.iter().copied()).collect();
    json!({
        "source": sources,
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": WATCHED_EVENTS.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            "eventName": names,
            "$or": [
                {"requestParameters": {"bucketName": [{"prefix": format!("{}-", settings.bucket_prefix)}]}},
                {"requestParameters": {"roleName": [{"prefix": "imaging-"}]}},
                {"resources": {"ARN": [{"prefix": format!("arn:{}:kms:{}:{}:key/", settings.partition, settings.region, settings.account_id)}]}},
                {"requestParameters": {"aliasName": [{"prefix": "alias/imaging/"}]}},
            ],
        },
    })
}

/// The queue's policy: only this rule may send; nothing over plain HTTP.
pub fn queue_policy(settings: &Settings, queue_name: &str) -> Value {
    let queue = queue_arn(settings, queue_name);
    let rule = format!(
        "arn:{}:events:{}:{}:rule/{}",
        settings.partition,
        settings.region,
        settings.account_id,
        rule_name(settings)
    );
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventBridgeRuleSends",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule}},
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    })
}

/// What the operator role needs to consume the queue, to attach beside its identity policy.
pub fn consumer_policy(settings: &Settings, queue_name: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ConsumeDriftEvents",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": queue_arn(settings, queue_name),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_takes_only_the_rules_events() {
        let s = Settings::placeholder();
        let policy = queue_policy(&s, "drift");
        let allow = &policy["Statement"][0];
        assert_eq!(allow["Principal"]["Service"], "events.amazonaws.com");
        assert_eq!(
            allow["Condition"]["ArnEquals"]["aws:SourceArn"],
            format!("arn:aws:events:{}:{}:rule/imaging-tenant-drift-{}", s.region, s.account_id, s.cluster_name)
        );
        let pattern = rule_pattern(&s);
        assert!(pattern["detail"]["eventName"].as_array().unwrap().contains(&json!("PutBucketPolicy")));
        assert_eq!(pattern["source"], json!(["aws.s3", "aws.kms", "aws.iam"]));
        let consumer = consumer_policy(&s, "drift");
        assert_eq!(consumer["Statement"][0]["Resource"], queue_arn(&s, "drift"));
    }
}
