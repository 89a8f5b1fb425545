//! Event-driven drift detection, the AWS side: `deploy/aws/` is exactly what `drift-events`
//! prints for the Makefile's placeholder values, and parliament finds nothing above LOW in the
//! queue policy and the operator's consumer policy.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::iam_parliament::{iam_policy_args, parliament};

const BINARY: &str = env!("CARGO_BIN_EXE_imaging-tenant-operator");
const DOCUMENTS: [&str; 3] = ["rule-pattern", "queue-policy", "consumer-policy"];

fn generated(document: &str) -> String {
    let output = Command::new(BINARY)
        .arg("drift-events")
        .args(iam_policy_args())
        .args(["--document", document])
        .output()
        .expect("run drift-events");
    assert!(output.status.success(), "drift-events: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn the_checked_in_drift_event_documents_are_the_generated_ones() {
    for document in DOCUMENTS {
        let file = format!("deploy/aws/drift-events-{document}.json");
        let checked_in = std::fs::read_to_string(ito_test_support::repo_root().join(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}; generate it with `make aws-drift-events`"));
        assert!(
            checked_in == generated(document),
            "{file} differs from `drift-events ... --document {document}`; regenerate it with `make aws-drift-events`"
        );
    }
}

#[test]
fn parliament_finds_nothing_above_low_in_the_drift_event_policies() {
    let policies: BTreeMap<String, Value> = ["queue-policy", "consumer-policy"]
        .iter()
        .map(|d| (format!("drift-events-{d}"), serde_json::from_str(&generated(d)).expect("JSON")))
        .collect();
    let serious: Vec<Value> = parliament(&policies)
        .into_iter()
        .filter(|f| f["suppressed"] == false && !matches!(f["severity"].as_str(), Some("INFO" | "LOW" | "MUTE")))
        .collect();
    assert!(serious.is_empty(), "{}", serde_json::to_string_pretty(&serious).unwrap());
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let output = Command::new(BINARY)
        .arg("drift-events")
        .args(iam_policy_args())
        .args(["--queue-name", "no spaces allowed"])
        .output()
        .expect("run drift-events");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an SQS queue name"));
}
