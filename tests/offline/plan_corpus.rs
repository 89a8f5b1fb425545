//! `plan` judges the manifest corpus as the cluster does, without a cluster: every invalid
//! manifest is refused with its message, every example is planned, and every transition is
//! judged by the CRD's transition rules. `tests/cluster/plan_apiserver.rs` proves the cluster agrees.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::plan::{TenantRules, parse_documents};
use ito_test_support::{corpus, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_imaging-tenant-operator");

fn plan(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    // The tests must not depend on the operator settings of the environment they run in.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ITO_")) {
        command.env_remove(name);
    }
    let mut child = command
        .arg("plan")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imaging-tenant-operator plan");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("write the manifest to plan's standard input");
    drop(input);
    child.wait_with_output().expect("wait for plan")
}

fn plan_file(path: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["-f", path.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    plan(&args, None)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_corpus_has_a_case_for_each_common_mistake() {
    let cases = corpus::invalid();
    assert!(cases.len() >= 25, "only {} invalid manifests", cases.len());
    let mut seen = BTreeMap::new();
    for case in &cases {
        if let Some(other) = seen.insert(case.mistake.clone(), case.name.clone()) {
            panic!("{} and {} describe the same mistake: {}", other, case.name, case.mistake);
        }
    }
    let transitions = corpus::transitions();
    assert!(transitions.iter().filter(|t| t.expect.is_some()).count() >= 4);
    assert!(transitions.iter().any(|t| t.expect.is_none()), "a transition that must be accepted");
}

#[test]
fn every_invalid_manifest_is_refused_with_its_message() {
    let mut failures = Vec::new();
    for case in corpus::invalid() {
        let output = plan_file(&case.path, &[]);
        let err = stderr(&output);
        let problem = if output.status.code() != Some(1) {
            Some(format!("exit status {:?}, expected 1", output.status.code()))
        } else if !err.contains(&case.expect) {
            Some(format!("the message lacks {:?}", case.expect))
        } else if !err.starts_with("document 1") {
            Some("errors must start with the document they are about".to_string())
        } else if !output.stdout.is_empty() {
            Some("an invalid plan must print nothing to stdout".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            failures.push(format!("{} ({}): {problem}\n  stderr: {}", case.name, case.mistake, err.trim_end()));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_document_of_a_stream_is_judged_and_named() {
    let cases = corpus::invalid();
    let (group_b, _) = &corpus::examples()[1];
    let valid = std::fs::read_to_string(repo_root().join("deploy/examples").join(format!("{group_b}.yaml"))).unwrap();
    let stream: String =
        std::iter::once(valid).chain(cases.iter().map(|c| c.text.clone())).collect::<Vec<_>>().join("---\n");
    let output = plan(&["-f", "-"], Some(&stream));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(output.stdout.is_empty(), "nothing is planned when any document is invalid");
    for (i, case) in cases.iter().enumerate() {
        let number = i + 2;
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("document {number} ")) || l.starts_with(&format!("document {number}:")))
            .collect();
        assert!(
            lines.iter().any(|l| l.contains(&case.expect)),
            "document {number} ({}) is not reported with {:?}; its lines: {lines:#?}",
            case.name,
            case.expect
        );
    }
    assert!(!err.contains("document 1 "), "the valid first document is not reported: {err}");
    assert!(err.contains(&format!("{} of {} documents in standard input are invalid", cases.len(), cases.len() + 1)));
}

#[test]
fn every_example_is_planned_as_kubernetes_objects_and_aws_resources() {
    let examples = corpus::examples();
    assert_eq!(examples.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["group-a", "group-b"]);
    for (name, path) in examples {
        let output = plan_file(&path, &[]);
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        let documents = parse_documents(&stdout(&output)).expect("plan prints YAML");
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for doc in &documents {
            let object = &doc.value;
            assert!(object["apiVersion"].is_string(), "{name}: {object}");
            assert!(object["metadata"]["name"].is_string(), "{name}: {object}");
            assert_eq!(object["metadata"]["labels"]["imaging.tenancy.dev/tenant"], name.as_str(), "{object}");
            assert!(
                object["metadata"].get("ownerReferences").is_none(),
                "{name}: no owner reference offline, the tenant has no UID: {object}"
            );
            *kinds.entry(object["kind"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let namespaces = if name == "group-a" { 2 } else { 1 };
        assert_eq!(kinds["Namespace"], namespaces, "{name}: {kinds:?}");
        for kind in ["ServiceAccount", "ResourceQuota", "LimitRange"] {
            assert_eq!(kinds[kind], namespaces, "{name} {kind}: {kinds:?}");
        }
        assert!(kinds["NetworkPolicy"] >= 3 * namespaces, "{name}: {kinds:?}");
        assert!(kinds["RoleBinding"] >= namespaces, "{name}: {kinds:?}");
        assert_eq!(documents[0].value["kind"], "Namespace", "namespaces come first");
        let text = stdout(&output);
        assert!(text.contains(&format!("# tenant {name}: AWS resources")), "{text}");
    }
}

#[test]
fn json_output_holds_every_aws_resource_with_its_policies() {
    let (_, path) = &corpus::examples()[0];
    let output = plan_file(path, &["-o", "json", "--aws-region", "eu-central-1", "--cluster-name", "prod-1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan -o json prints JSON");
    let tenant = &plan["tenants"][0];
    assert_eq!(tenant["name"], "group-a");
    assert_eq!(tenant["document"], 1);
    assert!(tenant["kubernetes"].as_array().is_some_and(|k| !k.is_empty()));
    let aws = &tenant["aws"];
    for policy in [&aws["role"]["trustPolicy"], &aws["key"]["policy"], &aws["bucket"]["policy"]] {
        assert!(policy["Statement"].is_array(), "a policy document: {policy}");
    }
    assert_eq!(aws["bucket"]["region"], "eu-central-1");
}

#[test]
fn unreadable_input_is_exit_status_2() {
    let missing = plan(&["-f", "/nonexistent/tenant.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/tenant.yaml"), "{}", stderr(&missing));

    let syntax = plan(&["-f", "-"], Some("apiVersion: imaging.tenancy.dev/v1alpha1\nmetadata: {name: [a\n"));
    assert_eq!(syntax.status.code(), Some(2));
    assert!(stderr(&syntax).contains("YAML syntax error"), "{}", stderr(&syntax));

    let empty = plan(&["-f", "-"], Some("---\n# nothing here\n"));
    assert_eq!(empty.status.code(), Some(2));

    let bad_flag = plan(&["-f", "-", "--account-id", "12"], Some(""));
    assert_eq!(bad_flag.status.code(), Some(2));
}

#[test]
fn a_manifest_of_another_kind_is_refused() {
    let output = plan(&["-f", "-"], Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: group-a}\n"));
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("document 1 (group-a): apiVersion: must be imaging.tenancy.dev/v1alpha1"), "{err}");
    assert!(err.contains("document 1 (group-a): kind: must be ImagingTenant"), "{err}");
}

/// Transition rules, through the library: plan's checks and the generated `validate_cel_update`.
#[test]
fn every_transition_is_judged_by_the_crd_rules() {
    let rules = TenantRules::new();
    let value = |text: &str| parse_documents(text).expect("valid YAML").remove(0).value;
    let mut failures = Vec::new();
    for t in corpus::transitions() {
        let (old, new) = (value(&t.old), value(&t.new));
        let old_tenant: ImagingTenant =
            rules.check_create(&old).unwrap_or_else(|p| panic!("{}: the old manifest must be valid: {p:?}", t.name));
        let new_tenant: ImagingTenant = rules
            .check_create(&new)
            .unwrap_or_else(|p| panic!("{}: the new manifest must be valid on its own: {p:?}", t.name));

        let generated = new_tenant.validate_cel_update(&old_tenant).map_err(|e| e.to_string());
        let planned = rules
            .check_update(&new, &old)
            .map(|_| ())
            .map_err(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        for (how, result) in [("validate_cel_update", generated), ("plan", planned)] {
            match (&t.expect, result) {
                (None, Err(e)) => failures.push(format!("{} via {how}: must be accepted, got {e}", t.name)),
                (Some(expect), Ok(())) => failures.push(format!("{} via {how}: accepted, expected {expect:?}", t.name)),
                (Some(expect), Err(e)) if !e.contains(expect.as_str()) => {
                    failures.push(format!("{} via {how}: {e:?} lacks {expect:?}", t.name))
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
