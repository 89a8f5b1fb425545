//! Every IAM policy the operator generates (`aws-policies`: operator policy, permissions
//! boundary, guard-rail SCP, evidence reader) or renders for a tenant (role trust and inline
//! policy, bucket policy, key policy) passes `parliament` with no finding above LOW, except those suppressed,
//! each with its reason, in `deploy/iam/parliament.yaml`. And `deploy/iam/` is exactly what
//! `aws-policies` prints for the Makefile's placeholder values.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::config::Settings;
use imaging_tenant_operator::desired::{account, aws};
use ito_test_support::{PYTHON_ENV, repo_root, test_python as python};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_imaging-tenant-operator");
const PARLIAMENT_CONFIG: &str = "deploy/iam/parliament.yaml";
const DOCUMENTS: [&str; 5] =
    ["operator-policy", "permissions-boundary", "guardrail-scp", "evidence-reader", "restore-drill-policy"];

fn repo(path: &str) -> std::path::PathBuf {
    repo_root().join(path)
}

/// The `IAM_POLICY_ARGS := ...` line of the Makefile: the values `deploy/iam/` is generated for.
pub(crate) fn iam_policy_args() -> Vec<String> {
    let makefile = std::fs::read_to_string(repo("Makefile")).expect("read the Makefile");
    makefile
        .lines()
        .find_map(|l| l.strip_prefix("IAM_POLICY_ARGS := "))
        .expect("an `IAM_POLICY_ARGS := ...` line in the Makefile")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn aws_policies(args: &[String]) -> String {
    let output = Command::new(BINARY).arg("aws-policies").args(args).output().expect("run aws-policies");
    assert!(output.status.success(), "aws-policies {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn the_checked_in_iam_policies_are_the_generated_ones() {
    let args = iam_policy_args();
    for document in DOCUMENTS {
        let file = format!("deploy/iam/{document}.json");
        let checked_in = std::fs::read_to_string(repo(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}; generate it with `make iam-policies`"));
        let mut only = args.clone();
        only.extend(["--only".to_string(), document.to_string()]);
        let generated = aws_policies(&only);
        assert!(
            checked_in == generated,
            "{file} differs from `aws-policies ... --only {document}`; regenerate it with `make iam-policies` \
             and commit it.\nchecked in:\n{checked_in}\ngenerated:\n{generated}"
        );
    }
}

/// Runs parliament's analysis over named policies and returns every finding, with `suppressed`
/// true for those the config's `ignore_locations` mute.
///
/// The muting follows parliament's documented rule (every key of one entry matches the finding's
/// location, case-insensitive regular expressions, a list means any of them) but is done here:
/// parliament 1.6.4's own `is_finding_filtered` passes the values read from a config file through
/// `make_list`, which turns anything that is not a parsed policy node into an empty list, so no
/// `ignore_locations` entry from a file ever matches.
const LINT: &str = r#"
import json, re, sys
try:
    import parliament
    from parliament import analyze_policy_string, enhance_finding, override_config
except ImportError as e:
    print("MISSING: " + str(e))
    sys.exit(3)
def suppressed(finding):
    if finding.severity == "MUTE":
        return True
    for entry in finding.ignore_locations or []:
        def matches(key, patterns):
            value = str(finding.location.get(key, "")).lower()
            patterns = patterns if isinstance(patterns, list) else [patterns]
            return any(re.fullmatch(str(p).lower(), value) for p in patterns)
        if all(matches(key, patterns) for key, patterns in entry.items()):
            return True
    return False

request = json.load(sys.stdin)
override_config(request["config"])
findings = []
for name, policy in request["policies"].items():
    analyzed = analyze_policy_string(json.dumps(policy), name, config=parliament.config)
    for finding in analyzed.findings:
        finding = enhance_finding(finding)
        findings.append({
            "policy": name,
            "issue": finding.issue,
            "severity": finding.severity,
            "title": finding.title,
            "detail": str(finding.detail),
            "location": {k: str(v) for k, v in finding.location.items()},
            "suppressed": suppressed(finding),
        })
json.dump(findings, sys.stdout)
"#;

pub(crate) fn parliament(policies: &BTreeMap<String, Value>) -> Vec<Value> {
    let python = python();
    let request = json!({"config": repo(PARLIAMENT_CONFIG), "policies": policies});
    let install_hint = format!(
        "parliament is not installed for {python}: run `make moto` (it installs tests/tools/moto/requirements.txt, \
         parliament included, into the tests' virtualenv), or set {PYTHON_ENV} to a Python that has parliament==1.6.4"
    );
    let mut child = Command::new(&python)
        .args(["-c", LINT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python}: {e}\n{install_hint}"));
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).expect("write to parliament");
    let output = child.wait_with_output().expect("wait for parliament");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.code() == Some(3) {
        panic!("{stdout}\n{install_hint}");
    }
    assert!(output.status.success(), "parliament failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("parliament's answer is not JSON ({e}): {stdout}"))
}

/// A tenant as production has it: several namespaces, retention, lifecycle, its key created.
fn realistic_tenant_policies(settings: &Settings) -> BTreeMap<String, Value> {
    let tenant: ImagingTenant = serde_json::from_value(json!({
        "apiVersion": "imaging.tenancy.dev/v1alpha1",
        "kind": "ImagingTenant",
        "metadata": {"name": "group-a", "uid": "6f1c3a52-5a3e-4c1e-9d7a-0b6a0c2f1e11"},
        "spec": {
            "namespaces": [{"name": "group-a"}, {"name": "group-a-ai"}],
            "storage": {
                "retention": {"mode": "Governance", "days": 2555},
                "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 365}
            },
            "tags": {"cost-center": "radiology-a"}
        }
    }))
    .expect("a valid tenant");
    let key = format!("arn:aws:kms:us-east-1:{}:key/1234abcd-12ab-34cd-56ef-1234567890ab", settings.account_id);
    let replica_key = format!("arn:aws:kms:us-west-2:{}:key/5678abcd-12ab-34cd-56ef-1234567890ab", settings.account_id);
    let rendered = aws::render_with_keys(&tenant, settings, Some(&key), Some(&replica_key));
    let replication = rendered.replication.expect("the settings replicate");
    BTreeMap::from([
        ("tenant-role-trust-policy".to_string(), rendered.role.trust_policy),
        ("tenant-role-policy".to_string(), rendered.role.inline_policy),
        ("bucket-policy".to_string(), rendered.bucket.policy),
        ("key-policy".to_string(), rendered.key.policy),
        ("replication-role-trust-policy".to_string(), replication.role.trust_policy),
        ("replication-role-policy".to_string(), replication.role.inline_policy),
        ("replica-bucket-policy".to_string(), replication.bucket.policy),
        ("replica-key-policy".to_string(), replication.key.policy),
    ])
}

fn settings() -> Settings {
    Settings {
        cluster_name: "prod-1".into(),
        region: "us-east-1".into(),
        partition: "aws".into(),
        account_id: "111122223333".into(),
        bucket_prefix: "imaging".into(),
        audit_log_bucket: Some("imaging-audit-logs".into()),
        oidc_provider_arn:
            "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
                .into(),
        operator_role_arn: "arn:aws:iam::111122223333:role/imaging-tenant-operator".into(),
        break_glass_role_arn: Some("arn:aws:iam::111122223333:role/imaging-break-glass".into()),
        // The auditors' statements are judged too.
        auditor_role_arns: vec!["arn:aws:iam::111122223333:role/auditors/imaging-evidence".into()],
        permissions_boundary_arn: "arn:aws:iam::111122223333:policy/imaging-tenant-boundary".into(),
        // The perimeter statement is judged too.
        s3_vpc_endpoint_ids: vec!["vpce-0a1b2c3d4e5f67890".into()],
        // The replica's policies are judged too.
        replication_region: Some("us-west-2".into()),
        ..Settings::placeholder()
    }
}

#[test]
fn parliament_finds_nothing_above_low_in_any_policy() {
    let settings = settings();
    let mut policies = realistic_tenant_policies(&settings);
    let generated = account::policies(&settings);
    policies.insert("operator-policy".into(), generated.operator_policy);
    policies.insert("permissions-boundary".into(), generated.permissions_boundary);
    policies.insert("guardrail-scp".into(), generated.guardrail_scp);
    policies.insert("evidence-reader".into(), generated.evidence_reader);
    policies.insert("restore-drill-policy".into(), generated.restore_drill_policy.expect("with a replication region"));
    // The checked-in files too, in case they were edited by hand (the drift test says so as well).
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(repo(&format!("deploy/iam/{document}.json"))).expect("deploy/iam file");
        policies.insert(format!("deploy-iam-{document}"), serde_json::from_str(&text).expect("JSON"));
    }

    let findings = parliament(&policies);
    let serious: Vec<&Value> = findings
        .iter()
        .filter(|f| f["suppressed"] == false && !matches!(f["severity"].as_str(), Some("INFO" | "LOW" | "MUTE")))
        .collect();
    assert!(
        serious.is_empty(),
        "parliament findings above LOW (fix the policy, or suppress in {PARLIAMENT_CONFIG} with the reason it is \
         safe):\n{}",
        serde_json::to_string_pretty(&serious).unwrap()
    );

    // What is suppressed is only what parliament.yaml explains.
    for finding in findings.iter().filter(|f| f["suppressed"] == true) {
        let (issue, policy) = (finding["issue"].as_str().unwrap(), finding["policy"].as_str().unwrap());
        let expected = match issue {
            "RESOURCE_POLICY_PRIVILEGE_ESCALATION" => policy.ends_with("operator-policy"),
            // Alias actions also name the key, whose side the key policy grants.
            "RESOURCE_MISMATCH" => {
                policy.ends_with("operator-policy")
                    && ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
                        .iter()
                        .all(|a| finding["detail"].as_str().unwrap().contains(a))
                    && finding["detail"].as_str().unwrap().matches("'action'").count() == 3
            }
            "UNKNOWN_CONDITION_FOR_ACTION" => {
                matches!(policy, "bucket-policy" | "replica-bucket-policy")
                    && finding["detail"].as_str().unwrap().starts_with("Unknown condition s3:TlsVersion for action")
            }
            "MISMATCHED_TYPE" => {
                matches!(policy, "bucket-policy" | "replica-bucket-policy")
                    && finding["detail"].as_str().unwrap().starts_with("Type mismatch: s3:TlsVersion requires")
            }
            "MALFORMED" => matches!(policy, "tenant-role-trust-policy" | "replication-role-trust-policy"),
            "UNKNOWN_FEDERATION_SOURCE" => policy == "tenant-role-trust-policy",
            _ => false,
        };
        assert!(expected, "suppressed finding outside what {PARLIAMENT_CONFIG} explains: {finding}");
    }
}

#[test]
fn parliament_catches_a_bad_policy() {
    // The check is only as good as parliament's verdict, and the suppressions must stay with
    // the policies they name: the operator policy's bucket-policy finding, in another policy,
    // shows up.
    let bad = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:PutBucketPolicy", "Resource": "arn:aws:s3:::imaging-*"}
    ]});
    let findings = parliament(&BTreeMap::from([("bad".to_string(), bad)]));
    assert!(
        findings.iter().any(|f| f["suppressed"] == false && f["severity"] != "LOW" && f["severity"] != "INFO"),
        "{findings:?}"
    );
}
