//! The chart's monitoring pack: the PrometheusRule rendered by the chart is checked by
//! `promtool check rules` and its alerts by `promtool test rules` over the synthetic series of
//! tests/fixtures/alerts/; every alert has such a test and a runbook in the README; the Grafana
//! dashboard's queries are valid PromQL over the metrics the README lists.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ito_test_support::chart::*;
use ito_test_support::{repo_root, scratch_dir, tool_path};
use serde_json::Value;

const NAMESPACE: &str = "imaging-tenant-operator";
const PROMETHEUS_RULE_API: &str = "monitoring.coreos.com/v1/PrometheusRule";
const ALERT_TESTS: &str = "tests/fixtures/alerts";
/// Families served by other components that the alerts read (the control results).
const EXTERNAL_FAMILIES: [&str; 1] = ["imaging_tenant_control"];

fn promtool() -> Command {
    Command::new(tool_path("promtool").unwrap_or_else(|e| panic!("{e}")))
}

/// The chart's documents with the monitoring pack on.
fn rendered(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["ito", CHART, "--namespace", NAMESPACE, "--values", MINIMAL_VALUES];
    args.extend(["--api-versions", PROMETHEUS_RULE_API]);
    args.extend(extra);
    documents(&helm_template(&args))
}

fn prometheus_rule() -> Value {
    let docs = rendered(&["--set", "prometheusRule.enabled=true"]);
    one(&docs, "PrometheusRule").clone()
}

fn alerts(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect()
}

/// Writes the rule groups as a Prometheus rule file (what the Prometheus Operator hands Prometheus).
fn write_rule_file(dir: &Path, spec: &Value) {
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(spec).unwrap()).unwrap();
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let mut cmd = promtool();
    cmd.args(args).current_dir(dir);
    let out = output(cmd, None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn alert_test_files() -> Vec<String> {
    let dir = repo_root().join(ALERT_TESTS);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_rendered_alert_rules_pass_promtool_check_and_every_alert_test() {
    let rule = prometheus_rule();
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let dir = scratch_dir("alerts");
    write_rule_file(&dir, &rule["spec"]);
    let checked = run_promtool(&["check", "rules", "rules.yaml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");

    let files = alert_test_files();
    for file in &files {
        std::fs::copy(repo_root().join(ALERT_TESTS).join(file), dir.join(file)).unwrap();
    }
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let tested = run_promtool(&args, &dir);
    assert!(tested.matches("SUCCESS").count() >= files.len(), "{tested}");

    // Each alert fires in some test, and some test holds it back.
    let texts: Vec<String> = files.iter().map(|f| read(&format!("{ALERT_TESTS}/{f}"))).collect();
    for alert in alerts(&rule) {
        let name = alert["alert"].as_str().expect("alerting rules only");
        let tested = texts.iter().any(|t| t.contains(&format!("alertname: {name}\n        exp_alerts:\n          -")));
        let held = texts.iter().any(|t| t.contains(&format!("alertname: {name}\n        exp_alerts: []")));
        assert!(
            tested && held,
            "{name}: no test in {ALERT_TESTS} where it fires ({tested}) and one where it does not ({held})"
        );
    }
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_links_its_runbook_in_the_readme() {
    let readme = read("README.md");
    let anchors: BTreeSet<String> = readme.lines().filter_map(|l| l.strip_prefix("#### ")).map(anchor).collect();
    let rule = prometheus_rule();
    for alert in alerts(&rule) {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let (page, fragment) = url.split_once('#').unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
        assert_eq!(page, "https://github.com/imaging-tenancy/imaging-tenant-operator/blob/main/README.md");
        assert_eq!(fragment, anchor(name), "{name}: the anchor is the alert's name");
        assert!(anchors.contains(fragment), "{name}: README.md has no runbook heading `#### {name}`");
        for key in ["summary", "description"] {
            assert!(alert["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{name}: {key}");
        }
        assert!(["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")), "{name}");
    }
    // And the other way round: every runbook is an alert's.
    let names: BTreeSet<String> = alerts(&rule).iter().map(|a| anchor(a["alert"].as_str().unwrap())).collect();
    let section = readme.split("### Runbooks").nth(1).expect("a Runbooks section").split("\n## ").next().unwrap();
    for heading in section.lines().filter_map(|l| l.strip_prefix("#### ")) {
        assert!(names.contains(&anchor(heading)), "runbook `{heading}` belongs to no alert");
    }
}

#[test]
fn the_runbook_address_follows_the_values() {
    let docs = rendered(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.runbookBaseUrl=https://wiki.example.com/imaging,prometheusRule.labels.release=kube-prometheus-stack",
    ]);
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack");
    for alert in alerts(rule) {
        let url = alert["annotations"]["runbook_url"].as_str().unwrap();
        assert!(url.starts_with("https://wiki.example.com/imaging#"), "{url}");
    }
}

#[test]
fn the_monitoring_pack_is_off_by_default_and_the_rule_needs_its_crd() {
    let docs = rendered(&[]);
    let kinds: BTreeSet<&str> = docs.iter().map(kind_of).collect();
    assert!(!kinds.contains("PrometheusRule"), "{kinds:?}");
    assert!(!docs.iter().any(|d| name_of(d).ends_with("-dashboard")), "no dashboard by default");

    let mut cmd = helm_template_command();
    cmd.args(["ito", CHART, "--namespace", NAMESPACE, "--values", MINIMAL_VALUES]);
    cmd.args(["--set", "prometheusRule.enabled=true"]);
    let out = output(cmd, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered a PrometheusRule without its CRD");
    assert!(stderr.contains("--api-versions monitoring.coreos.com/v1/PrometheusRule"), "{stderr}");
}

/// Metric families listed in the README's Monitoring table.
pub(crate) fn documented_families() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme.split("\n## Monitoring\n").nth(1).expect("a Monitoring section in README.md");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("imaging_tenant"))
        .map(str::to_string)
        .collect()
}

/// The metric names a PromQL expression reads (what looks like one of ours).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("imaging_tenant") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        // `histogram_quantile(... _bucket)` reads the histogram's family.
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        // Inside a description, `imaging_tenant_operator_reconcile_errors_total{category}` is text.
        out.insert(family.to_string());
        i = end;
    }
    out
}

#[test]
fn the_alerts_read_only_documented_metrics() {
    let documented = documented_families();
    let rule = prometheus_rule();
    for alert in alerts(&rule) {
        for name in metrics_in(alert["expr"].as_str().unwrap()) {
            assert!(
                documented.contains(&name) || EXTERNAL_FAMILIES.contains(&name.as_str()),
                "{}: {name} is not in README.md's Monitoring table",
                alert["alert"]
            );
        }
    }
}

#[test]
fn the_grafana_dashboard_queries_documented_metrics_in_valid_promql() {
    let docs = rendered(&["--set", "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring"]);
    let map = docs
        .iter()
        .find(|d| kind_of(d) == "ConfigMap" && name_of(d).ends_with("-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's label by default");
    let json = map["data"]["imaging-tenant-operator.json"].as_str().expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "imaging-tenant-operator");

    let documented = documented_families();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{}: a target without expr", panel["title"]));
            for name in metrics_in(expr) {
                assert!(
                    documented.contains(&name),
                    "panel {}: {name} is not in README.md's Monitoring table",
                    panel["title"]
                );
            }
            queries.push(expr.replace("$namespace", NAMESPACE));
        }
    }
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metrics_in(q)).collect();
    for name in &documented {
        assert!(used.contains(name), "the dashboard shows nothing of {name}");
    }
    // promtool parses every query, as recording rules of a scratch rule file.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": q}))
        .collect();
    let dir = scratch_dir("dashboard-queries");
    write_rule_file(&dir, &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}));
    run_promtool(&["check", "rules", "rules.yaml"], &dir);
}
