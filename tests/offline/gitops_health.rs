//! The GitOps health checks read the operator's status contract right. Each recorded status in
//! tests/fixtures/health/ names the health it must get; Argo CD's Lua check
//! (deploy/gitops/argocd-health-imagingtenant.lua) is run in gopher-lua, the interpreter Argo CD
//! embeds (lua-health, built by `make k8s-bin`), and Flux's healthCheckExprs
//! (deploy/gitops/flux-kustomization.yaml) by a CEL interpreter.

use std::path::PathBuf;
use std::process::Command;

use ito_test_support::chart::{documents, kind_of, name_of, output, read};
use ito_test_support::{repo_root, tool_path};
use serde_json::{Value, json};

const LUA_SCRIPT: &str = "deploy/gitops/argocd-health-imagingtenant.lua";
const ARGOCD_CM: &str = "deploy/gitops/argocd-cm-imagingtenant-health.yaml";
const ARGOCD_KEY: &str = "resource.customizations.health.imaging.tenancy.dev_ImagingTenant";

struct Fixture {
    name: String,
    expected: Value,
    object: Value,
}

fn fixtures() -> Vec<Fixture> {
    let dir = repo_root().join("tests/fixtures/health");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let mut doc: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(doc["expected"]["status"].is_string(), "{name}: expected.status");
            assert_eq!(doc["object"]["kind"], "ImagingTenant", "{name}: object");
            Fixture { name, expected: doc["expected"].take(), object: doc["object"].take() }
        })
        .collect();
    for status in ["Healthy", "Progressing", "Degraded"] {
        assert!(fixtures.iter().any(|f| f.expected["status"] == status), "no recorded status is {status}");
    }
    fixtures
}

/// What Argo CD would show for `object`.
fn argocd_health(object: &Value) -> Value {
    // tool_path's error says to run `make k8s-bin`.
    let tool = tool_path("lua-health").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(tool);
    cmd.arg(repo_root().join(LUA_SCRIPT));
    let out = output(cmd, Some(&object.to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lua-health failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("lua-health printed {stdout:?}: {e}"))
}

#[test]
fn argocd_health_check_gives_every_recorded_status_its_health() {
    let mut wrong = Vec::new();
    for fixture in fixtures() {
        let health = argocd_health(&fixture.object);
        let status_matches = health["status"] == fixture.expected["status"];
        let message_matches = fixture.expected.get("message").is_none_or(|m| &health["message"] == m);
        assert!(health["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: a message always", fixture.name);
        if !status_matches || !message_matches {
            wrong.push(format!("{}: expected {}, got {health}", fixture.name, fixture.expected));
        }
    }
    assert!(wrong.is_empty(), "the Argo CD health check is wrong for:\n{}", wrong.join("\n"));
}

#[test]
fn argocd_cm_snippet_installs_the_health_check() {
    let docs = documents(&read(ARGOCD_CM));
    assert_eq!(docs.len(), 1);
    let cm = &docs[0];
    assert_eq!((kind_of(cm), name_of(cm)), ("ConfigMap", "argocd-cm"));
    assert!(
        cm["data"][ARGOCD_KEY].as_str() == Some(read(LUA_SCRIPT).as_str()),
        "{ARGOCD_CM} must hold {LUA_SCRIPT} word for word under {ARGOCD_KEY}"
    );
}

/// The health Flux gives `object` with `check`'s expressions: the first of inProgress, failed and
/// current that holds, and in progress when none does. The object's top-level fields are the
/// variables; a missing status is an empty one.
fn flux_health(check: &Value, object: &Value) -> &'static str {
    let mut context = cel::Context::default();
    for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
        let value = object.get(field).cloned().unwrap_or_else(|| json!({}));
        context.add_variable(field, value).unwrap();
    }
    for (expression, health) in [("inProgress", "Progressing"), ("failed", "Degraded"), ("current", "Healthy")] {
        let Some(source) = check[expression].as_str() else { continue };
        let program = cel::Program::compile(source).unwrap_or_else(|e| panic!("{expression}: {source}: {e:?}"));
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => return health,
            Ok(cel::Value::Bool(false)) => {}
            other => panic!("{expression} must be true or false, got {other:?} for {object}"),
        }
    }
    "Progressing"
}

#[test]
fn flux_health_check_exprs_give_every_recorded_status_its_health() {
    let docs = documents(&read("deploy/gitops/flux-kustomization.yaml"));
    let tenants = docs
        .iter()
        .find(|d| kind_of(d) == "Kustomization" && !d["spec"]["healthCheckExprs"].is_null())
        .expect("a Kustomization with healthCheckExprs in deploy/gitops/flux-kustomization.yaml");
    assert_eq!(tenants["spec"]["wait"], true, "wait: the Kustomization holds until its tenants are healthy");
    let check = tenants["spec"]["healthCheckExprs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "ImagingTenant" && c["apiVersion"] == "imaging.tenancy.dev/v1alpha1")
        .expect("a check for imaging.tenancy.dev/v1alpha1 ImagingTenant");
    let mut wrong = Vec::new();
    for fixture in fixtures() {
        let health = flux_health(check, &fixture.object);
        if fixture.expected["status"] != health {
            wrong.push(format!("{}: expected {}, got {health}", fixture.name, fixture.expected["status"]));
        }
    }
    assert!(wrong.is_empty(), "the Flux health check is wrong for:\n{}", wrong.join("\n"));
}
