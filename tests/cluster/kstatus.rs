//! The tenant's status as kstatus reads it: tenants in each state are read back from the API
//! server and judged by `kstatus-check` (the kstatus library of sigs.k8s.io/cli-utils, which
//! Flux, kpt and cli-utils use to wait for resources), never by our own reading of the rules;
//! and by the Argo CD health check of deploy/gitops, in the Lua interpreter Argo CD embeds.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use imaging_tenant_operator::api::{ImagingTenant, condition};
use ito_test_support::{ControlPlane, Moto, tool_path, unique_name, wait_for};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::operator::{Operator, create_tenant, wait_condition, wait_ready};

/// kstatus's verdict on one object: `Current`, `InProgress`, `Failed`, ...
struct Kstatus {
    status: String,
    message: String,
}

fn kstatus(object: &Value) -> Kstatus {
    let tool = tool_path("kstatus-check").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", tool.display()));
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).expect("write to kstatus-check");
    let out = child.wait_with_output().expect("run kstatus-check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kstatus-check failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kstatus-check printed {stdout:?}: {e}"));
    Kstatus { status: v["status"].as_str().unwrap().to_string(), message: v["message"].as_str().unwrap().to_string() }
}

/// What Argo CD's health check (deploy/gitops, run in gopher-lua by `lua-health`) makes of it.
fn argocd_health(object: &Value) -> String {
    let tool = tool_path("lua-health").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&tool)
        .arg(ito_test_support::repo_root().join("deploy/gitops/argocd-health-imagingtenant.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", tool.display()));
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).expect("write to lua-health");
    let out = child.wait_with_output().expect("run lua-health");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lua-health failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("lua-health printed {stdout:?}: {e}"));
    v["status"].as_str().unwrap().to_string()
}

/// kstatus and Argo CD agree on a stored tenant: kstatus's `want`, and Argo CD's `health`.
fn assert_judged(object: &Value, want: &str, health: &str) {
    let k = kstatus(object);
    assert_eq!(k.status, want, "kstatus: {}; status: {}", k.message, object["status"]);
    assert_eq!(argocd_health(object), health, "Argo CD health of {}", object["status"]);
}

/// The tenant as the API server returns it, as JSON.
async fn stored(client: &Client, name: &str) -> Value {
    let t = Api::<ImagingTenant>::all(client.clone()).get(name).await.unwrap();
    serde_json::to_value(t).unwrap()
}

fn conditions(tenant: &ImagingTenant) -> Vec<(String, String, String)> {
    let status = tenant.status.clone().unwrap_or_default();
    status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect()
}

/// Reconciling and Stalled are never both True, and every condition is of the status's generation.
fn assert_consistent(tenant: &ImagingTenant) {
    let status = tenant.status.as_ref().expect("a status");
    let reconciling = condition::is_true(&status.conditions, condition::RECONCILING);
    let stalled = condition::is_true(&status.conditions, condition::STALLED);
    assert!(!(reconciling && stalled), "Reconciling and Stalled both True: {:?}", conditions(tenant));
    for c in &status.conditions {
        assert_eq!(c.observed_generation, status.observed_generation, "{} of another generation", c.type_);
    }
}

#[tokio::test]
async fn kstatus_reads_every_state_of_a_tenant_right() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let mut op = Operator::start(cp, moto).await;
    let api: Api<ImagingTenant> = Api::all(client.clone());

    // Before the operator has written anything (no operator has this shard): the API server
    // shows observedGeneration 0, so the tenant is not taken for Current.
    let unseen = unique_name("kst");
    let manifest = json!({
        "apiVersion": "imaging.tenancy.dev/v1alpha1",
        "kind": "ImagingTenant",
        "metadata": {"name": unseen, "labels": {crate::operator::SHARD_LABEL: unique_name("no-operator")}},
        "spec": {},
    });
    create_tenant(&client, &manifest).await;
    let object = stored(&client, &unseen).await;
    assert_eq!(object["status"], json!({"observedGeneration": 0}), "{object}");
    assert_judged(&object, "InProgress", "Progressing");
    api.delete(&unseen, &Default::default()).await.unwrap();

    // Provisioning: every status the tenant goes through, from the watch, until it is Ready.
    let name = unique_name("kst");
    let second = format!("{name}-pacs");
    let spec = json!({"namespaces": [{"name": name}, {"name": second}], "deletionPolicy": "Delete"});
    let created = create_tenant(&client, &op.tenant(&name, spec)).await;
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(120);
    let mut events = api.watch(&params, &created.resource_version().unwrap()).await.unwrap().boxed();
    let mut seen: Vec<ImagingTenant> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.try_next()).await.map(|e| e.unwrap()) {
        let WatchEvent::Modified(t) = event else { continue };
        if t.status.as_ref().is_none_or(|s| s.conditions.is_empty()) {
            continue;
        }
        let ready = condition::is_true(&t.status.as_ref().unwrap().conditions, condition::READY);
        seen.push(t);
        if ready {
            break;
        }
    }
    let first = seen.first().unwrap_or_else(|| panic!("no status was written for {name}"));
    let last = seen.last().unwrap();
    assert!(
        condition::is_true(&last.status.as_ref().unwrap().conditions, condition::READY),
        "{name} did not get Ready: {:?}",
        seen.iter().map(conditions).collect::<Vec<_>>()
    );
    // The first status is written before any namespace or AWS resource exists.
    let first_status = first.status.as_ref().unwrap();
    assert!(first_status.namespaces.is_empty() && first_status.bucket.is_none(), "{first_status:?}");
    assert_eq!(first_status.observed_generation, first.metadata.generation);
    let c = condition::find(&first_status.conditions, condition::RECONCILING).expect("Reconciling");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Provisioning"));
    for t in &seen {
        assert_consistent(t);
        let ready = condition::is_true(&t.status.as_ref().unwrap().conditions, condition::READY);
        let k = kstatus(&serde_json::to_value(t).unwrap());
        let want = if ready { "Current" } else { "InProgress" };
        assert_eq!(k.status, want, "kstatus on {:?}: {}", conditions(t), k.message);
    }

    // Ready: Current, neither Reconciling nor Stalled.
    let ready = wait_ready(&client, &name).await;
    assert_consistent(&ready);
    assert!(!condition::is_true(&ready.status.as_ref().unwrap().conditions, condition::RECONCILING));
    assert_judged(&stored(&client, &name).await, "Current", "Healthy");

    // Work pending on its own: a namespace of the tenant is terminating. Dropped from the spec,
    // the operator deletes it (a finalizer of ours holds it), and it is put back at once.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let hold = json!({"metadata": {"finalizers": ["ito-test/hold"]}});
    ns_api.patch(&second, &PatchParams::default(), &Patch::Merge(&hold)).await.unwrap();
    let only_first = json!({"spec": {"namespaces": [{"name": name}]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&only_first)).await.unwrap();
    wait_for(Duration::from_secs(60), "the dropped namespace to be terminating", || async {
        let ns = ns_api.get(&second).await.map_err(|e| e.to_string())?;
        ns.metadata.deletion_timestamp.map(|_| ()).ok_or_else(|| "not deleted yet".to_string())
    })
    .await;
    let both = json!({"spec": {"namespaces": [{"name": name}, {"name": second}]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&both)).await.unwrap();
    let t = wait_condition(&client, &name, condition::RECONCILING, "True", Duration::from_secs(60)).await;
    assert_consistent(&t);
    let c = condition::find(&t.status.as_ref().unwrap().conditions, condition::RECONCILING).unwrap();
    assert_eq!(c.reason, "NamespaceTerminating", "{}", c.message);
    assert_judged(&stored(&client, &name).await, "InProgress", "Progressing");
    // Released, the namespace goes and is created again, and the tenant is Current again.
    let release = json!({"metadata": {"finalizers": null}});
    ns_api.patch(&second, &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    wait_for(Duration::from_secs(120), "the tenant to be Ready and kstatus Current again", || async {
        let t = api.get(&name).await.map_err(|e| e.to_string())?;
        let k = kstatus(&serde_json::to_value(&t).unwrap());
        if k.status == "Current" { Ok(()) } else { Err(format!("{}: {:?}", k.status, conditions(&t))) }
    })
    .await;

    // A person must act: a namespace of the spec belongs to someone else.
    let conflicted = unique_name("kst");
    let foreign = format!("{conflicted}-legacy");
    ns_api
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": foreign}})).unwrap())
        .await
        .unwrap();
    let spec = json!({"namespaces": [{"name": conflicted}, {"name": foreign}]});
    create_tenant(&client, &op.tenant(&conflicted, spec)).await;
    let t = wait_condition(&client, &conflicted, condition::STALLED, "True", Duration::from_secs(60)).await;
    assert_consistent(&t);
    let c = condition::find(&t.status.as_ref().unwrap().conditions, condition::STALLED).unwrap();
    assert_eq!(c.reason, "NamespaceConflict");
    assert!(c.message.contains(&foreign), "{}", c.message);
    let object = stored(&client, &conflicted).await;
    assert_judged(&object, "Failed", "Degraded");
    let k = kstatus(&object);
    assert!(k.message.contains(&foreign), "kstatus shows Stalled's message: {}", k.message);

    // A spec change the operator has not seen yet (it is stopped): InProgress, whatever the
    // conditions of the older generation say.
    op.stop();
    let quota = json!({"spec": {"quota": {"hard": {"requests.cpu": "4"}}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&quota)).await.unwrap();
    let t = api.get(&name).await.unwrap();
    assert!(t.status.as_ref().unwrap().observed_generation < t.metadata.generation);
    assert_judged(&serde_json::to_value(&t).unwrap(), "InProgress", "Progressing");
    // Back, the operator observes the new generation and the tenant is Current again.
    op.restart(cp, moto).await;
    wait_for(Duration::from_secs(120), "the new generation to be observed and Ready", || async {
        let t = api.get(&name).await.map_err(|e| e.to_string())?;
        let status = t.status.clone().unwrap_or_default();
        let k = kstatus(&serde_json::to_value(&t).unwrap());
        if status.observed_generation == t.metadata.generation && k.status == "Current" {
            assert_consistent(&t);
            Ok(())
        } else {
            Err(format!("{}: {:?}", k.status, conditions(&t)))
        }
    })
    .await;
}

/// Helm 4's `--wait` judges every object of a release with kstatus: a release holding a tenant
/// is deployed only once the tenant is Ready, and one whose tenant is Stalled fails at once with
/// the Stalled message instead of running into its timeout.
#[tokio::test]
async fn helm4_install_wait_waits_for_the_tenant_and_fails_at_once_when_it_is_stalled() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let op = Operator::start(cp, moto).await;
    let api: Api<ImagingTenant> = Api::all(client.clone());
    let namespace = ito_test_support::create_namespace(&client, "helm-wait").await;
    let install = |release: &str, set: String| {
        let mut cmd = ito_test_support::chart::helm4();
        cmd.args(["install", release, "tests/fixtures/charts/tenant", "--namespace", &namespace])
            .args(["--set", &set, "--wait", "--timeout", "3m", "--kubeconfig"])
            .arg(cp.kubeconfig_path());
        cmd
    };

    let name = unique_name("waited");
    let started = std::time::Instant::now();
    let out = ito_test_support::chart::output(install(&name, format!("name={name},shard={}", op.shard)), None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm4 install --wait: {text}");
    let t = api.get(&name).await.unwrap();
    assert!(
        condition::is_true(&t.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(), condition::READY),
        "helm4 returned after {:?} with the tenant not Ready: {:?}",
        started.elapsed(),
        conditions(&t)
    );

    let stalled = unique_name("waited");
    let foreign = format!("{stalled}-legacy");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": foreign}})).unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let set = format!("name={stalled},shard={},namespaces={{{stalled},{foreign}}}", op.shard);
    let out = ito_test_support::chart::output(install(&stalled, set), None);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "helm4 install --wait succeeded with a Stalled tenant: {text}");
    assert!(started.elapsed() < Duration::from_secs(120), "it failed only after {:?}: {text}", started.elapsed());
    assert!(text.contains("Failed") && text.contains(&foreign), "helm4 names the failure: {text}");
}
