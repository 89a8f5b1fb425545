//! Operator configuration shared by the controller, `plan` and the AWS layer: the settings that
//! shape what a tenant gets, and the one set of flags that gives them to `run` and `plan`.

use crate::desired::names::validate_bucket_prefix;

pub(crate) const DEFAULT_BUCKET_PREFIX: &str = "imaging";
pub(crate) const DEFAULT_WORKLOAD_SERVICE_ACCOUNT: &str = "imaging-workload";
/// Shown for the permissions boundary's policy name when `--permissions-boundary-arn` is not given.
pub(crate) const PERMISSIONS_BOUNDARY_PLACEHOLDER: &str = "<permissions-boundary>";

/// The flags (each with an environment variable) of the settings that shape what a tenant
/// gets. `run` requires the cluster, region, OIDC provider, operator role and permissions
/// boundary (and the break-glass role unless told to run without one); `plan` shows a
/// placeholder for what is not given.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsArgs {
    /// Name of this cluster: part of every bucket, alias and role name hash, and a tag.
    #[arg(long, env = "ITO_CLUSTER_NAME")]
    pub(crate) cluster_name: Option<String>,
    /// AWS region of the tenant buckets and keys.
    #[arg(long, env = "ITO_AWS_REGION")]
    pub(crate) aws_region: Option<String>,
    /// First part of every bucket name.
    #[arg(long, env = "ITO_BUCKET_PREFIX", default_value = DEFAULT_BUCKET_PREFIX, value_parser = bucket_prefix)]
    pub(crate) bucket_prefix: String,
    /// Bucket receiving S3 server access logs of every tenant bucket, under '<tenant>/'.
    #[arg(long, env = "ITO_AUDIT_LOG_BUCKET")]
    pub audit_log_bucket: Option<String>,
    /// ARN of the cluster's IAM OIDC provider, trusted by tenant roles (IRSA).
    #[arg(long, env = "ITO_OIDC_PROVIDER_ARN")]
    pub(crate) oidc_provider_arn: Option<String>,
    /// ARN of the role the operator runs as; it administers tenant keys and buckets.
    #[arg(long, env = "ITO_OPERATOR_ROLE_ARN")]
    pub(crate) operator_role_arn: Option<String>,
    /// ARN of the emergency role allowed to administer tenant keys and buckets, and to read
    /// tenant objects; `run` requires it unless --allow-no-break-glass-role.
    #[arg(long, env = "ITO_BREAK_GLASS_ROLE_ARN")]
    pub(crate) break_glass_role_arn: Option<String>,
    /// ARN of a role that may read the settings of tenant buckets and keys, never objects, key
    /// material or any write: an auditor's own role for `evidence`. Repeat the flag, or
    /// separate ARNs with commas in the environment variable. None: only the operator and
    /// break-glass roles read them.
    #[arg(long = "auditor-role-arn", env = "ITO_AUDITOR_ROLE_ARN", value_delimiter = ',', value_parser = role_arn)]
    pub(crate) auditor_role_arns: Vec<String>,
    /// ARN of the IAM policy set as permissions boundary of every tenant role (see
    /// `aws-policies`): what a tenant role may ever do, whatever its own policy says.
    #[arg(long, env = "ITO_PERMISSIONS_BOUNDARY_ARN")]
    pub permissions_boundary_arn: Option<String>,
    /// Name of the workload ServiceAccount created in every tenant namespace.
    #[arg(long, env = "ITO_WORKLOAD_SERVICE_ACCOUNT", default_value = DEFAULT_WORKLOAD_SERVICE_ACCOUNT)]
    pub(crate) workload_service_account: String,
    /// S3 VPC endpoint (vpce-...) through which tenant roles must reach their objects; repeat
    /// the flag, or separate IDs with commas in the environment variable. None: no perimeter.
    #[arg(long = "s3-vpc-endpoint-id", env = "ITO_S3_VPC_ENDPOINT_ID", value_delimiter = ',', value_parser = vpc_endpoint_id)]
    pub(crate) s3_vpc_endpoint_ids: Vec<String>,
    /// AWS region of every tenant's replica bucket and key (disaster recovery), unless the
    /// tenant names its own in spec.storage.replication.region. None: tenants replicate only
    /// when their spec asks for it.
    #[arg(long, env = "ITO_REPLICATION_REGION", value_parser = region_name)]
    pub(crate) replication_region: Option<String>,
    /// Let a tenant turn replication off (spec.storage.replication.enabled: false) although
    /// --replication-region is set. Without it such a tenant is replicated anyway, and its
    /// ReplicationConfigured condition says so.
    #[arg(long, env = "ITO_ALLOW_REPLICATION_OPT_OUT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) allow_replication_opt_out: bool,
}

impl Default for SettingsArgs {
    fn default() -> Self {
        SettingsArgs {
            cluster_name: None,
            aws_region: None,
            bucket_prefix: DEFAULT_BUCKET_PREFIX.into(),
            audit_log_bucket: None,
            oidc_provider_arn: None,
            operator_role_arn: None,
            break_glass_role_arn: None,
            auditor_role_arns: Vec::new(),
            permissions_boundary_arn: None,
            workload_service_account: DEFAULT_WORKLOAD_SERVICE_ACCOUNT.into(),
            s3_vpc_endpoint_ids: Vec::new(),
            replication_region: None,
            allow_replication_opt_out: false,
        }
    }
}

/// An AWS region name such as eu-west-1 (the CRD checks spec.storage.replication.region alike).
pub(crate) fn region_name(region: &str) -> Result<String, String> {
    if is_region_name(region) {
        Ok(region.to_string())
    } else {
        Err(format!("{region:?} is not an AWS region name such as eu-west-1"))
    }
}

/// `^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`, as the CRD's rule.
pub(crate) fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let number = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let qualifier = |p: &str| p == "gov" || (p.starts_with("iso") && p.len() <= 4 && lower(p));
    match parts.as_slice() {
        [area, place, n] => area.len() == 2 && lower(area) && lower(place) && number(n),
        [area, q, place, n] => area.len() == 2 && lower(area) && qualifier(q) && lower(place) && number(n),
        _ => false,
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<path and name>`.
fn role_arn(arn: &str) -> Result<String, String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource] => {
            partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_/-".contains(&b))
                })
        }
        _ => false,
    };
    if ok {
        Ok(arn.to_string())
    } else {
        Err(format!("{arn:?} is not an IAM role ARN such as arn:aws:iam::111122223333:role/auditors/imaging-evidence"))
    }
}

fn vpc_endpoint_id(id: &str) -> Result<String, String> {
    let hex = id.strip_prefix("vpce-").unwrap_or_default();
    if hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(id.to_string())
    } else {
        Err(format!("{id:?} is not a VPC endpoint ID such as vpce-0a1b2c3d4e5f67890"))
    }
}

fn bucket_prefix(prefix: &str) -> Result<String, String> {
    validate_bucket_prefix(prefix)?;
    Ok(prefix.to_string())
}

impl SettingsArgs {
    /// The settings these flags describe, for the account `account_id` (12 digits; `run` reads
    /// it from STS). What is not given is a placeholder.
    pub(crate) fn resolve(&self, account_id: Option<&str>) -> Result<Settings, String> {
        let mut settings = Settings::placeholder();
        if let Some(cluster) = &self.cluster_name {
            settings.cluster_name = cluster.clone();
        }
        if let Some(region) = &self.aws_region {
            settings.region = region.clone();
            settings.partition = Settings::partition_of(region).to_string();
        }
        if let Some(account) = account_id {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("the AWS account ID must be 12 digits, not {account:?}"));
            }
            settings.account_id = account.to_string();
        }
        settings.bucket_prefix = bucket_prefix(&self.bucket_prefix)?;
        let iam = format!("arn:{}:iam::{}", settings.partition, settings.account_id);
        settings.oidc_provider_arn =
            self.oidc_provider_arn.clone().unwrap_or_else(|| format!("{iam}:oidc-provider/<oidc-issuer>"));
        settings.operator_role_arn =
            self.operator_role_arn.clone().unwrap_or_else(|| format!("{iam}:role/<operator-role>"));
        settings.permissions_boundary_arn = self
            .permissions_boundary_arn
            .clone()
            .unwrap_or_else(|| format!("{iam}:policy/{PERMISSIONS_BOUNDARY_PLACEHOLDER}"));
        settings.audit_log_bucket = self.audit_log_bucket.clone();
        settings.break_glass_role_arn = self.break_glass_role_arn.clone();
        settings.auditor_role_arns = self.auditor_role_arns.clone();
        settings.workload_service_account = self.workload_service_account.clone();
        settings.s3_vpc_endpoint_ids = self.s3_vpc_endpoint_ids.clone();
        if let Some(replica) = &self.replication_region {
            if self.aws_region.as_deref() == Some(replica.as_str()) {
                return Err(format!(
                    "--replication-region {replica} is the operator's own region: a replica must live in another region to survive the loss of this one"
                ));
            }
            if Settings::partition_of(replica) != settings.partition {
                return Err(format!(
                    "--replication-region {replica} is in another AWS partition than --aws-region: S3 replicates only within a partition"
                ));
            }
        }
        settings.replication_region = self.replication_region.clone();
        settings.allow_replication_opt_out = self.allow_replication_opt_out;
        Ok(settings)
    }
}

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
    /// Emergency role allowed to administer keys and buckets and to read objects.
    pub break_glass_role_arn: Option<String>,
    /// Roles that may read the settings of tenant buckets and keys, and nothing else.
    pub auditor_role_arns: Vec<String>,
    /// IAM policy set as permissions boundary of every tenant role.
    pub permissions_boundary_arn: String,
    /// Name of the workload ServiceAccount created in every tenant namespace.
    pub workload_service_account: String,
    /// S3 VPC endpoints through which tenant roles must reach their objects (none: no perimeter).
    pub s3_vpc_endpoint_ids: Vec<String>,
    /// Region of the tenants' replicas unless a tenant names its own; none: no default.
    pub replication_region: Option<String>,
    /// Whether a tenant may turn replication off although `replication_region` is set.
    pub allow_replication_opt_out: bool,
}

impl Settings {
    /// Settings for offline use (`plan`, unit tests): unknown values are shown as placeholders.
    pub fn placeholder() -> Self {
        Settings {
            cluster_name: "<cluster-name>".into(),
            region: "<aws-region>".into(),
            partition: "aws".into(),
            account_id: "<account-id>".into(),
            bucket_prefix: DEFAULT_BUCKET_PREFIX.into(),
            audit_log_bucket: None,
            oidc_provider_arn: "arn:aws:iam::<account-id>:oidc-provider/<oidc-issuer>".into(),
            operator_role_arn: "arn:aws:iam::<account-id>:role/<operator-role>".into(),
            break_glass_role_arn: None,
            auditor_role_arns: Vec::new(),
            permissions_boundary_arn: format!("arn:aws:iam::<account-id>:policy/{PERMISSIONS_BOUNDARY_PLACEHOLDER}"),
            workload_service_account: DEFAULT_WORKLOAD_SERVICE_ACCOUNT.into(),
            s3_vpc_endpoint_ids: Vec::new(),
            replication_region: None,
            allow_replication_opt_out: false,
        }
    }

    /// The partition a region belongs to.
    pub(crate) fn partition_of(region: &str) -> &'static str {
        if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    /// The OIDC issuer host and path as IAM condition keys use it (`oidc.eks...amazonaws.com/id/X`).
    pub(crate) fn oidc_issuer(&self) -> &str {
        self.oidc_provider_arn
            .split_once(":oidc-provider/")
            .map(|(_, issuer)| issuer)
            .unwrap_or(&self.oidc_provider_arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_follow_the_crds_rule() {
        for good in ["eu-west-1", "us-east-2", "ap-southeast-12", "us-gov-west-1", "us-isob-east-1", "cn-north-1"] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in ["", "eu-west", "EU-west-1", "eu-west-123", "europe-west-1", "eu--1", "eu-west-1a", "us-foo-west-1"]
        {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_replication_region_must_be_another_region_of_the_partition() {
        let args = |replica: &str| SettingsArgs {
            aws_region: Some("eu-central-1".into()),
            replication_region: Some(replica.into()),
            ..SettingsArgs::default()
        };
        assert_eq!(args("eu-west-1").resolve(None).unwrap().replication_region.as_deref(), Some("eu-west-1"));
        assert!(args("eu-central-1").resolve(None).unwrap_err().contains("the operator's own region"));
        assert!(args("cn-north-1").resolve(None).unwrap_err().contains("another AWS partition"));
    }

    #[test]
    fn auditor_roles_are_role_arns_repeated_or_comma_separated() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        let a = "arn:aws:iam::111122223333:role/auditors/imaging-evidence";
        let b = "arn:aws:iam::111122223333:role/external-audit";
        let cli = Cli::try_parse_from(["x", "--auditor-role-arn", &format!("{a},{b}")]).unwrap();
        assert_eq!(cli.settings.resolve(None).unwrap().auditor_role_arns, [a, b]);
        let cli = Cli::try_parse_from(["x", "--auditor-role-arn", a, "--auditor-role-arn", b]).unwrap();
        assert_eq!(cli.settings.auditor_role_arns, [a, b]);
        for bad in ["arn:aws:iam::111122223333:user/alice", "arn:aws:iam::1111:role/x", "*"] {
            assert!(Cli::try_parse_from(["x", "--auditor-role-arn", bad]).is_err(), "{bad}");
        }
    }
}
