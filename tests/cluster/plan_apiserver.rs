//! `plan` and the cluster agree. Against a real kube-apiserver with the checked-in CRD: every
//! invalid manifest of the corpus is refused by both with the same message about the same
//! fields, every example is
//! accepted by both with the same defaults, every transition is judged alike, and the
//! Kubernetes objects `plan` prints are accepted by a server-side dry run, as
//! `kubectl apply --dry-run=server -f` would send them (strict field validation).

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use imaging_tenant_operator::api::ImagingTenant;
use imaging_tenant_operator::plan::{TenantRules, parse_documents};
use ito_test_support::{ControlPlane, corpus};
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind};
use kube::{Api, Client, Resource};
use serde_json::Value;

const TENANTS: &str = "/apis/imaging.tenancy.dev/v1alpha1/imagingtenants";
const FIELD_MANAGER: &str = "plan-apiserver-test";

/// POST as `kubectl apply` creates: strict field validation; with `dryRun=All` when asked.
async fn create(client: &Client, collection: &str, object: &Value, dry_run: bool) -> Result<Value, kube::Error> {
    let mut uri = format!("{collection}?fieldValidation=Strict&fieldManager={FIELD_MANAGER}");
    if dry_run {
        uri.push_str("&dryRun=All");
    }
    let request = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object).expect("JSON"))
        .expect("a valid request");
    client.request::<Value>(request).await
}

/// PUT of the whole object, strict, as `kubectl replace` sends it.
async fn replace(client: &Client, name: &str, object: &Value) -> Result<Value, kube::Error> {
    let request = http::Request::put(format!("{TENANTS}/{name}?fieldValidation=Strict&fieldManager={FIELD_MANAGER}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object).expect("JSON"))
        .expect("a valid request");
    client.request::<Value>(request).await
}

fn first_document(text: &str) -> Value {
    parse_documents(text).expect("the fixture is YAML").remove(0).value
}

fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => format!("not an API error: {other}"),
    }
}

fn plan_message(problems: &[imaging_tenant_operator::plan::Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_by_the_apiserver_and_by_plan_alike() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    let rules = TenantRules::new();

    let cases = corpus::invalid();
    let mut failures = Vec::new();
    for case in &cases {
        let manifest = first_document(&case.text);
        let apiserver = create(&client, TENANTS, &manifest, true).await;
        match &apiserver {
            Ok(_) => failures.push(format!("{}: the apiserver accepted it ({})", case.name, case.mistake)),
            Err(e) => {
                let message = api_message(e);
                if !matches!(e, kube::Error::Api(s) if s.code == 400 || s.code == 422) {
                    failures.push(format!("{}: unexpected error {message}", case.name));
                } else if !message.contains(&case.expect) {
                    failures.push(format!("{}: the apiserver's message lacks {:?}: {message}", case.name, case.expect));
                }
            }
        }
        let apiserver_fields = match &apiserver {
            Err(kube::Error::Api(status)) => status.details.as_ref().map(|d| {
                let mut fields: Vec<String> = d.causes.iter().map(|c| c.field.replace("<nil>", "")).collect();
                fields.sort();
                fields
            }),
            _ => None,
        };
        match rules.check_create(&manifest) {
            Ok(_) => failures.push(format!("{}: plan accepted it ({})", case.name, case.mistake)),
            Err(problems) => {
                let message = plan_message(&problems);
                let mut fields: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
                fields.sort();
                if !message.contains(&case.expect) {
                    failures.push(format!("{}: plan's message lacks {:?}: {message}", case.name, case.expect));
                } else if apiserver_fields.as_ref().is_some_and(|a| !a.is_empty() && *a != fields) {
                    failures.push(format!(
                        "{}: plan reports the fields {fields:?}, the apiserver {apiserver_fields:?}",
                        case.name
                    ));
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "plan and the apiserver disagree on {} of {} invalid manifests:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn every_example_is_accepted_by_both_with_the_same_defaults() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    let rules = TenantRules::new();

    for (name, path) in corpus::examples() {
        let manifest = first_document(&std::fs::read_to_string(&path)?);
        let stored = create(&client, TENANTS, &manifest, true)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: the apiserver refused it: {}", api_message(&e)))?;
        let planned = rules
            .check_create(&manifest)
            .map_err(|p| anyhow::anyhow!("{name}: plan refused it: {}", plan_message(&p)))?;
        let stored: ImagingTenant = serde_json::from_value(stored).context("the stored tenant")?;
        ensure!(
            stored.spec == planned.spec,
            "{name}: the apiserver's defaults differ from plan's:\napiserver: {:#?}\nplan: {:#?}",
            stored.spec,
            planned.spec
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_transition_is_judged_by_the_apiserver_as_by_plan() -> Result<()> {
    let cp = ControlPlane::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    let rules = TenantRules::new();
    let tenants: Api<ImagingTenant> = Api::all(client.clone());

    let mut failures = Vec::new();
    for t in corpus::transitions() {
        let old = first_document(&t.old);
        let mut new = first_document(&t.new);
        let name = old["metadata"]["name"].as_str().context("the old manifest has a name")?.to_string();
        let stored = create(&client, TENANTS, &old, false)
            .await
            .map_err(|e| anyhow::anyhow!("{}: create the old tenant: {}", t.name, api_message(&e)))?;
        new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();

        let apiserver = replace(&client, &name, &new).await.map(|_| ()).map_err(|e| api_message(&e));
        let planned = rules.check_update(&new, &old).map(|_| ()).map_err(|p| plan_message(&p));
        for (who, result) in [("apiserver", apiserver), ("plan", planned)] {
            match (&t.expect, result) {
                (None, Err(e)) => failures.push(format!("{} ({who}): must be accepted, got {e}", t.name)),
                (Some(expect), Ok(())) => failures.push(format!("{} ({who}): accepted, expected {expect:?}", t.name)),
                (Some(expect), Err(e)) if !e.contains(expect.as_str()) => {
                    failures.push(format!("{} ({who}): {e} lacks {expect:?}", t.name))
                }
                _ => {}
            }
        }
        tenants.delete(&name, &DeleteParams::default()).await.with_context(|| format!("delete tenant {name}"))?;
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn the_kubernetes_objects_plan_prints_pass_a_server_side_dry_run() -> Result<()> {
    let cp = ControlPlane::shared().await;
    crate::install_crd(&cp.client()).await;
    // Schema and defaults are what is checked here, not who may write: plan's objects carry no
    // tenant UID (there is no tenant yet), so only the break-glass group may write them.
    let client = cp.break_glass_client();

    for (name, path) in corpus::examples() {
        let output = Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"))
            .args([
                "plan",
                "--cluster-name",
                "prod-1",
                "--aws-region",
                "us-east-1",
                "--account-id",
                "123456789012",
                "-f",
            ])
            .arg(&path)
            .output()
            .context("run plan")?;
        ensure!(output.status.success(), "{name}: plan failed: {}", String::from_utf8_lossy(&output.stderr));
        let objects = parse_documents(&String::from_utf8(output.stdout)?).map_err(anyhow::Error::msg)?;
        ensure!(!objects.is_empty(), "{name}: plan printed no objects");

        for object in objects.iter().map(|d| &d.value) {
            let what = format!(
                "{name}: {} {}",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            );
            let (group, version) = match object["apiVersion"].as_str().context("apiVersion")?.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), object["apiVersion"].as_str().unwrap().to_string()),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().context("kind")?);
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .with_context(|| format!("{what}: discover its resource"))?;
            let namespace = object["metadata"]["namespace"].as_str();
            let collection = <DynamicObject as Resource>::url_path(&resource, namespace);
            // Namespaced objects can only be dry-run into namespaces that exist: the namespaces
            // are created for real (plan prints them first), the rest only dry-run.
            let dry_run = gvk.kind != "Namespace";
            match create(&client, &collection, object, dry_run).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if !dry_run && s.code == 409 => {}
                Err(e) => bail!("{what}: refused: {}\n{object:#}", api_message(&e)),
            }
        }
    }
    Ok(())
}
