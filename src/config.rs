//! Operator configuration shared by the controller, `plan` and the AWS layer.

use std::time::Duration;

/// Settings that shape what a tenant gets. Every field has a flag and an environment variable
/// (see `main.rs`); `plan` uses the same struct with placeholders for what only AWS can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Name of this cluster; part of the hash in bucket, alias and role names and a tag.
    pub cluster_name: String,
    /// AWS region of the tenant buckets and keys.
    pub region: String,
    /// AWS partition, `aws` unless the region says otherwise (`aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// AWS account ID, read from STS at start-up (`plan` prints a placeholder).
    pub account_id: String,
    /// First part of every bucket name.
    pub bucket_prefix: String,
    /// Bucket receiving S3 server access logs, under `<tenant bucket name>/`; none disables access
    /// logging.
    pub audit_log_bucket: Option<String>,
    /// IAM OIDC provider of the cluster, trusted for the tenant roles (IRSA).
    pub oidc_provider_arn: String,
    /// Role the operator runs as; administers keys and buckets.
    pub operator_role_arn: String,
    /// Emergency role allowed to administer keys and buckets.
    pub break_glass_role_arn: Option<String>,
    /// Name of the workload ServiceAccount created in every tenant namespace.
    pub workload_service_account: String,
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub resync_interval: Duration,
    pub concurrency: u16,
    pub max_create_key_per_second: u32,
}

impl Settings {
    /// Settings for offline use (`plan`, unit tests): unknown values are shown as placeholders.
    pub fn placeholder() -> Self {
        Settings {
            cluster_name: "<cluster-name>".into(),
            region: "<aws-region>".into(),
            partition: "aws".into(),
            account_id: "<account-id>".into(),
            bucket_prefix: "imaging".into(),
            audit_log_bucket: None,
            oidc_provider_arn: "arn:aws:iam::<account-id>:oidc-provider/<oidc-issuer>".into(),
            operator_role_arn: "arn:aws:iam::<account-id>:role/<operator-role>".into(),
            break_glass_role_arn: None,
            workload_service_account: "imaging-workload".into(),
        }
    }

    /// The partition a region belongs to.
    pub fn partition_of(region: &str) -> &'static str {
        if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    /// The OIDC issuer host and path as IAM condition keys use it (`oidc.eks...amazonaws.com/id/X`).
    pub fn oidc_issuer(&self) -> &str {
        self.oidc_provider_arn
            .split_once(":oidc-provider/")
            .map(|(_, issuer)| issuer)
            .unwrap_or(&self.oidc_provider_arn)
    }
}
