//! The configuration table of README.md says the truth: one row per value of the chart's
//! values.schema.json and no other, each default as in values.yaml, and a row for every flag of
//! `imaging-tenant-operator run` with the environment variable the binary and the chart use.

use std::collections::{BTreeMap, BTreeSet};

use ito_test_support::chart::{CHART, read};
use serde_json::Value;

struct Row {
    flag: String,
    env: String,
    default: String,
}

/// The rows of the table under "## Configuration", by value path.
fn table() -> BTreeMap<String, Row> {
    let doc = read("README.md");
    let section = doc.split_once("\n## Configuration\n").expect("a `## Configuration` section in README.md").1;
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<String> =
            line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_owned()).collect();
        assert_eq!(cells.len(), 5, "five columns (value, flag, environment, default, description): {line}");
        let previous = rows
            .insert(cells[0].clone(), Row { flag: cells[1].clone(), env: cells[2].clone(), default: cells[3].clone() });
        assert!(previous.is_none(), "{} has two rows", cells[0]);
        assert!(!cells[4].is_empty(), "{} has a description", cells[0]);
    }
    assert!(!rows.is_empty(), "no table rows found");
    rows
}

fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let path = reference.strip_prefix("#/").expect("local $ref");
            path.split('/').fold(schema, |n, key| &n[key])
        }
        None => node,
    }
}

/// Every leaf value path of the schema: a property without properties of its own.
fn schema_leaves(schema: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let node = resolve(schema, node);
    let Some(properties) = node["properties"].as_object() else {
        out.insert(prefix.to_owned());
        return;
    };
    assert_eq!(
        node["additionalProperties"], false,
        "{prefix:?} must reject unknown keys (additionalProperties: false)"
    );
    for (key, child) in properties {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        schema_leaves(schema, child, &path, out);
    }
}

fn schema() -> Value {
    serde_json::from_str(&read(&format!("{CHART}/values.schema.json"))).expect("values.schema.json is JSON")
}

#[test]
fn every_schema_value_has_a_row_and_every_row_a_schema_value() {
    let schema = schema();
    let mut leaves = BTreeSet::new();
    schema_leaves(&schema, &schema, "", &mut leaves);
    let documented: BTreeSet<String> = table().into_keys().collect();
    let undocumented: Vec<&String> = leaves.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&leaves).collect();
    assert!(undocumented.is_empty(), "values in values.schema.json without a row in README.md: {undocumented:?}");
    assert!(unknown.is_empty(), "rows in README.md that values.schema.json does not know: {unknown:?}");
}

#[test]
fn defaults_in_the_table_are_those_of_values_yaml() {
    let values: Value = serde_yaml::from_str(&read(&format!("{CHART}/values.yaml"))).expect("values.yaml is YAML");
    let required: BTreeSet<String> =
        schema()["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    for (path, row) in table() {
        let actual = path.split('.').fold(&values, |v, key| &v[key]);
        if row.default == "required" {
            assert!(required.contains(&path), "{path} is documented as required but the schema does not require it");
            assert!(actual.is_null(), "{path} is required, so values.yaml must not give it a default");
            continue;
        }
        let documented: Value = serde_yaml::from_str(&row.default)
            .unwrap_or_else(|e| panic!("default of {path}, {:?}, is not YAML: {e}", row.default));
        assert_eq!(&documented, actual, "default of {path}: README.md says {:?}", row.default);
    }
}

#[test]
fn every_flag_of_run_has_a_row_with_its_environment_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"))
        .args(["run", "--help"])
        .output()
        .expect("run the operator binary");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run --help: {help}");
    let flags: BTreeSet<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(',').split(['=', '<']).next().unwrap().to_owned())
        .filter(|f| f != "--help")
        .collect();
    assert!(flags.contains("--cluster-name"), "flags parsed from run --help: {flags:?}");
    let rows = table();
    let documented: BTreeMap<&str, &Row> =
        rows.values().filter(|r| !r.flag.is_empty()).map(|r| (r.flag.as_str(), r)).collect();
    let missing: Vec<&String> = flags.iter().filter(|f| !documented.contains_key(f.as_str())).collect();
    assert!(missing.is_empty(), "flags of `run` without a value in the chart and README.md: {missing:?}");
    let configmap = read(&format!("{CHART}/templates/configmap.yaml"));
    for (flag, row) in documented {
        assert!(flags.contains(flag), "README.md documents {flag}, which `run` does not have");
        let env = format!("ITO_{}", flag.trim_start_matches("--").to_uppercase().replace('-', "_"));
        assert_eq!(row.env, env, "environment variable of {flag}");
        assert!(help.contains(&format!("[env: {env}")), "`run --help` names {env} for {flag}");
        assert!(configmap.contains(&format!("  {env}:")), "the chart's ConfigMap sets {env}");
    }
}
