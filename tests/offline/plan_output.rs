//! What `plan` prints for the example tenants, reviewed as a snapshot: a change to any rendered
//! object, policy or the output format shows up here as a diff (`cargo insta review`). group-a
//! replicates by its spec, group-b by the operator's --replication-region.

use std::process::Command;

fn plan(example: &str) -> String {
    plan_with(example, &[])
}

fn plan_with(example: &str, extra: &[&str]) -> String {
    let path = format!("{}/deploy/examples/{example}.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ITO_")) {
        command.env_remove(name);
    }
    let output = command
        .args(["plan", "-f", &path])
        .args(["--cluster-name", "prod-1", "--aws-region", "us-east-1", "--account-id", "123456789012"])
        .args(["--bucket-prefix", "acme-img", "--audit-log-bucket", "acme-audit-logs"])
        .args([
            "--oidc-provider-arn",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
        ])
        .args(["--operator-role-arn", "arn:aws:iam::123456789012:role/imaging-tenant-operator"])
        .args(["--break-glass-role-arn", "arn:aws:iam::123456789012:role/break-glass"])
        .args(extra)
        .output()
        .expect("run imaging-tenant-operator plan");
    assert!(output.status.success(), "plan failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("plan prints UTF-8")
}

#[test]
fn plan_of_group_a() {
    insta::assert_snapshot!(plan("group-a"));
}

#[test]
fn plan_of_group_b() {
    insta::assert_snapshot!(plan("group-b"));
}

/// group-b asks for nothing: the operator's --replication-region gives it a replica.
#[test]
fn plan_of_group_b_with_a_replication_region() {
    insta::assert_snapshot!(plan_with("group-b", &["--replication-region", "us-west-2"]));
}
