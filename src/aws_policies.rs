//! `aws-policies`: print the operator's identity policy, the permissions boundary of the tenant
//! roles, the guard-rail SCP and the read-only policy of `evidence` for one account, partition,
//! region and cluster. Offline: the documents come from [`crate::desired::account`].

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::desired::account::{self, AccountPolicies};
use crate::desired::names::validate_bucket_prefix;

pub(crate) const DEFAULT_OPERATOR_ROLE_NAME: &str = "imaging-tenant-operator";
pub(crate) const DEFAULT_PERMISSIONS_BOUNDARY_NAME: &str = "imaging-tenant-boundary";

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Create the permissions boundary as a customer-managed policy of that name, attach the \
    operator policy to the operator role, run the operator with --permissions-boundary-arn, and attach the \
    guard-rail SCP to the account's organizational unit. deploy/iam/ holds the output for placeholder values \
    (`make iam-policies`).")]
pub struct AwsPoliciesArgs {
    /// AWS account of the tenants (12 digits).
    #[arg(long)]
    pub(crate) account_id: String,
    /// AWS partition of the account; default: the region's (us-gov-* is aws-us-gov, cn-* is
    /// aws-cn, any other aws).
    #[arg(long, value_parser = ["aws", "aws-us-gov", "aws-cn"])]
    pub(crate) partition: Option<String>,
    /// AWS region of the tenant buckets and keys (the operator's --aws-region).
    #[arg(long)]
    pub(crate) region: String,
    /// Name of the cluster (the operator's --cluster-name).
    #[arg(long)]
    pub(crate) cluster_name: String,
    /// First part of every tenant bucket name (the operator's --bucket-prefix). Give each cluster
    /// its own: the operator's S3 permissions are scoped by it.
    #[arg(long, value_parser = bucket_prefix)]
    pub(crate) bucket_prefix: String,
    /// Name (with its path, if any, e.g. platform/imaging-tenant-operator) of the role the
    /// operator runs as.
    #[arg(long, default_value = DEFAULT_OPERATOR_ROLE_NAME)]
    pub(crate) operator_role_name: String,
    /// ARN of the emergency role (the operator's --break-glass-role-arn): the only principal the
    /// SCP lets remove a tenant role's boundary or change the boundary policy.
    #[arg(long)]
    pub(crate) break_glass_role_arn: Option<String>,
    /// The bucket receiving the tenant buckets' access logs (the operator's --audit-log-bucket),
    /// which the operator checks before it logs to it.
    #[arg(long)]
    pub(crate) audit_log_bucket: Option<String>,
    /// The region of the tenants' replicas (the operator's --replication-region): adds what
    /// replication needs to the operator policy and the boundary.
    #[arg(long, value_parser = crate::config::region_name)]
    pub(crate) replication_region: Option<String>,
    /// Name (with its path, if any) of the customer-managed policy used as permissions boundary.
    #[arg(long, default_value = DEFAULT_PERMISSIONS_BOUNDARY_NAME)]
    pub(crate) permissions_boundary_name: String,
    /// Output format: the four documents with a heading each, or one JSON object.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub(crate) output: Format,
    /// Print only this document, as JSON (what `deploy/iam/` holds).
    #[arg(long, value_enum)]
    pub(crate) only: Option<Document>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    OperatorPolicy,
    PermissionsBoundary,
    GuardrailScp,
    EvidenceReader,
    /// Needs --replication-region.
    RestoreDrillPolicy,
}

impl Document {
    pub(crate) fn of(self, policies: &AccountPolicies) -> Option<&Value> {
        match self {
            Document::OperatorPolicy => Some(&policies.operator_policy),
            Document::PermissionsBoundary => Some(&policies.permissions_boundary),
            Document::GuardrailScp => Some(&policies.guardrail_scp),
            Document::EvidenceReader => Some(&policies.evidence_reader),
            Document::RestoreDrillPolicy => policies.restore_drill_policy.as_ref(),
        }
    }
}

fn bucket_prefix(prefix: &str) -> Result<String, String> {
    validate_bucket_prefix(prefix)?;
    Ok(prefix.to_string())
}

/// An IAM name with an optional path: `name` or `path/to/name`, IAM's characters only.
fn iam_path_and_name(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && !value.starts_with('/')
        && !value.ends_with('/')
        && !value.contains("//")
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {value:?} is not an IAM name (letters, digits, +=,.@_- and / between path parts)"))
    }
}

impl AwsPoliciesArgs {
    /// The settings the policies are built from.
    pub(crate) fn to_settings(&self) -> Result<Settings, String> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("--account-id must be 12 digits, not {:?}", self.account_id));
        }
        let region_partition = Settings::partition_of(&self.region);
        let partition = self.partition.as_deref().unwrap_or(region_partition);
        if region_partition != partition {
            return Err(format!(
                "--region {} is in partition {region_partition}, not --partition {partition}",
                self.region
            ));
        }
        if self.region.is_empty()
            || !self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("--region {:?} is not an AWS region name", self.region));
        }
        if self.cluster_name.is_empty() {
            return Err("--cluster-name must not be empty".into());
        }
        iam_path_and_name("--operator-role-name", &self.operator_role_name)?;
        iam_path_and_name("--permissions-boundary-name", &self.permissions_boundary_name)?;
        let iam = format!("arn:{partition}:iam::{}", self.account_id);
        if let Some(arn) = &self.break_glass_role_arn
            && !arn.starts_with(&format!("arn:{partition}:iam::"))
        {
            return Err(format!("--break-glass-role-arn {arn:?} is not an IAM role ARN of partition {partition}"));
        }
        if let Some(replica) = &self.replication_region {
            if *replica == self.region {
                return Err(format!(
                    "--replication-region {replica} is --region itself: a replica lives in another region"
                ));
            }
            if Settings::partition_of(replica) != partition {
                return Err(format!("--replication-region {replica} is not in partition {partition}"));
            }
        }
        Ok(Settings {
            cluster_name: self.cluster_name.clone(),
            region: self.region.clone(),
            partition: partition.to_string(),
            account_id: self.account_id.clone(),
            bucket_prefix: self.bucket_prefix.clone(),
            operator_role_arn: format!("{iam}:role/{}", self.operator_role_name),
            break_glass_role_arn: self.break_glass_role_arn.clone(),
            audit_log_bucket: self.audit_log_bucket.clone(),
            permissions_boundary_arn: format!("{iam}:policy/{}", self.permissions_boundary_name),
            replication_region: self.replication_region.clone(),
            ..Settings::placeholder()
        })
    }
}

/// One document as `deploy/iam/` holds it: pretty JSON and a final newline.
pub(crate) fn document_json(value: &Value) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("policies serialize to JSON");
    out.push('\n');
    out
}

/// What `aws-policies` prints for these settings.
pub(crate) fn render(settings: &Settings, format: Format, only: Option<Document>) -> String {
    let policies = account::policies(settings);
    if let Some(document) = only {
        return document.of(&policies).map(document_json).unwrap_or_default();
    }
    match format {
        Format::Json => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Output<'a> {
                operator_role_arn: &'a str,
                permissions_boundary_arn: &'a str,
                #[serde(flatten)]
                policies: &'a AccountPolicies,
            }
            document_json(
                &serde_json::to_value(Output {
                    operator_role_arn: &settings.operator_role_arn,
                    permissions_boundary_arn: &settings.permissions_boundary_arn,
                    policies: &policies,
                })
                .expect("policies serialize to JSON"),
            )
        }
        Format::Text => {
            let mut sections = vec![
                (
                    format!("Identity policy of the operator role {}", settings.operator_role_arn),
                    &policies.operator_policy,
                ),
                (
                    format!(
                        "Permissions boundary of every tenant role: create it as the customer-managed policy {}\n# and run the operator with --permissions-boundary-arn {}",
                        settings.permissions_boundary_arn, settings.permissions_boundary_arn
                    ),
                    &policies.permissions_boundary,
                ),
                (
                    "Guard-rail service control policy: attach it to the account's organizational unit".to_string(),
                    &policies.guardrail_scp,
                ),
                (
                    "Read-only policy of `evidence`: attach it to an auditor role named with --auditor-role-arn, or use it as\n# the session policy of a break-glass role session that reports"
                        .to_string(),
                    &policies.evidence_reader,
                ),
            ];
            if let Some(drill) = &policies.restore_drill_policy {
                sections.push((
                    "What `restore-drill` uses: the tenant role has all of it (tenant keys admit no one else for data)"
                        .to_string(),
                    drill,
                ));
            }
            let mut out = String::new();
            for (i, (heading, document)) in sections.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&format!("# {heading}\n"));
                out.push_str(&document_json(document));
            }
            out
        }
    }
}

/// `imaging-tenant-operator aws-policies ...`.
pub fn main(args: &AwsPoliciesArgs) -> ExitCode {
    let settings = match args.to_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.only == Some(Document::RestoreDrillPolicy) && settings.replication_region.is_none() {
        eprintln!("error: --only restore-drill-policy needs --replication-region");
        return ExitCode::from(2);
    }
    let rendered = render(&settings, args.output, args.only);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(rendered.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the policies: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AwsPoliciesArgs,
    }

    fn settings(extra: &[&str]) -> Result<Settings, String> {
        let base =
            ["aws-policies", "--account-id", "111122223333", "--cluster-name", "prod-1", "--bucket-prefix", "imaging"];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())?;
        cli.args.to_settings()
    }

    #[test]
    fn the_partition_defaults_to_the_regions() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-central-1", "aws"),
            ("us-gov-west-1", "aws-us-gov"),
            ("cn-northwest-1", "aws-cn"),
        ] {
            let settings = settings(&["--region", region]).unwrap();
            assert_eq!(settings.partition, partition, "{region}");
            assert!(settings.operator_role_arn.starts_with(&format!("arn:{partition}:iam::111122223333:role/")));
            let rendered = render(&settings, Format::Json, None);
            assert!(rendered.contains(&format!("arn:{partition}:")), "{region}: {rendered}");
            if partition != "aws" {
                assert!(!rendered.contains("arn:aws:"), "{region}: an ARN outside {partition}: {rendered}");
            }
        }
    }

    #[test]
    fn a_partition_that_contradicts_the_region_is_refused() {
        assert_eq!(
            settings(&["--region", "us-gov-east-1", "--partition", "aws-us-gov"]).unwrap().partition,
            "aws-us-gov"
        );
        let error = settings(&["--region", "us-east-1", "--partition", "aws-cn"]).unwrap_err();
        assert_eq!(error, "--region us-east-1 is in partition aws, not --partition aws-cn");
        let error = settings(&[
            "--region",
            "us-gov-west-1",
            "--break-glass-role-arn",
            "arn:aws:iam::111122223333:role/break-glass",
        ])
        .unwrap_err();
        assert!(error.contains("is not an IAM role ARN of partition aws-us-gov"), "{error}");
    }
}
