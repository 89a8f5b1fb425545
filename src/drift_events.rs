//! `drift-events`: print the EventBridge rule pattern, the SQS queue policy and the operator's
//! consumer policy of event-driven drift detection (`--drift-events-queue-url`). Offline: the
//! documents come from [`crate::desired::drift_events`].

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::aws_policies::{AwsPoliciesArgs, document_json};
use crate::desired::drift_events;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Create the queue with the queue policy, an EventBridge rule named as printed with the \
    pattern and the queue as target (IAM's events arrive in us-east-1: add the same rule there, targeting the \
    queue), attach the consumer policy to the operator role, and run the operator with \
    --drift-events-queue-url. deploy/aws/ holds the output for placeholder values (`make aws-drift-events`).")]
pub struct DriftEventsArgs {
    #[command(flatten)]
    pub(crate) account: AwsPoliciesArgs,
    /// Name of the SQS queue (its URL is the operator's --drift-events-queue-url).
    #[arg(long, default_value = "imaging-tenant-drift-events")]
    pub(crate) queue_name: String,
    /// Print only this document, as JSON (what `deploy/aws/` holds).
    #[arg(long = "document", value_enum)]
    pub(crate) document: Option<Document>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    RulePattern,
    QueuePolicy,
    ConsumerPolicy,
}

/// `imaging-tenant-operator drift-events ...`.
pub fn main(args: &DriftEventsArgs) -> ExitCode {
    let settings = match args.account.to_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let queue = &args.queue_name;
    if queue.is_empty() || queue.len() > 80 || !queue.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        eprintln!("error: --queue-name {queue:?} is not an SQS queue name (1 to 80 letters, digits, - and _)");
        return ExitCode::from(2);
    }
    let documents: [(Document, String, Value); 3] = [
        (
            Document::RulePattern,
            format!("Event pattern of the EventBridge rule {}", drift_events::rule_name(&settings)),
            drift_events::rule_pattern(&settings),
        ),
        (
            Document::QueuePolicy,
            format!("Policy of the SQS queue {}", drift_events::queue_arn(&settings, queue)),
            drift_events::queue_policy(&settings, queue),
        ),
        (
            Document::ConsumerPolicy,
            format!("Policy to attach to the operator role {}", settings.operator_role_arn),
            drift_events::consumer_policy(&settings, queue),
        ),
    ];
    let out = match args.document {
        Some(only) => {
            documents.iter().find(|(d, _, _)| *d == only).map(|(_, _, v)| document_json(v)).unwrap_or_default()
        }
        None => documents
            .iter()
            .map(|(_, heading, v)| format!("# {heading}\n{}", document_json(v)))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the documents: {e}");
            ExitCode::FAILURE
        }
    }
}
