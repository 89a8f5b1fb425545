//! imaging-tenant-operator: `run` the controller, `plan` a manifest offline, print the `crd` and
//! the `aws-policies` that fence the operator, report the `evidence` of every control, and prove
//! replication with a `restore-drill`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imaging_tenant_operator::{api, aws_policies, drift_events, drill, evidence, plan, run};

#[derive(Parser)]
#[command(
    name = "imaging-tenant-operator",
    version,
    about = "Isolated namespaces, network policies, RBAC, quotas, IAM role, KMS key and S3 bucket for every healthcare group"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<run::RunArgs>),
    /// Validate tenant manifests offline and print everything the operator would create.
    Plan {
        /// Multi-document YAML file of ImagingTenants, or '-' for standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        settings: Box<plan::PlanSettings>,
    },
    /// Print the ImagingTenant CustomResourceDefinition.
    Crd,
    /// Print the operator's IAM policy, the tenant roles' permissions boundary and a guard-rail SCP.
    AwsPolicies(Box<aws_policies::AwsPoliciesArgs>),
    /// Print the EventBridge rule, SQS queue policy and consumer policy of event-driven drift
    /// detection.
    DriftEvents(Box<drift_events::DriftEventsArgs>),
    /// Report every control of every tenant, read from the cluster and AWS, for auditors
    /// (HIPAA 164.312, AWS Config rule names), with a SHA-256 digest.
    Evidence(Box<evidence::EvidenceArgs>),
    /// Prove a tenant's replication with a canary object: write, wait for the replica, read it
    /// back from the replication region, put delete markers, print the replication time.
    RestoreDrill(Box<drill::DrillArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Plan { file, settings } => plan::main(&file, &settings),
        Command::Run(args) => run::main(*args),
        Command::AwsPolicies(args) => aws_policies::main(&args),
        Command::DriftEvents(args) => drift_events::main(&args),
        Command::Evidence(args) => evidence::main(&args),
        Command::RestoreDrill(args) => drill::main(&args),
    }
}
