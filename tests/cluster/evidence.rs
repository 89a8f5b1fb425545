//! Invariant 13 end to end: the operator provisions a tenant under the chart's admission guards;
//! `imaging-tenant-operator evidence`, run as its own process against the same apiserver and
//! moto with the operator's settings, reports every control passing, in JSON that validates
//! against the committed schema, with a digest that recomputes. Then, with the operator stopped,
//! one AWS setting and one Kubernetes object are changed behind its back: the report fails
//! exactly those controls, and bad usage exits 2.

use std::process::{Command, Output};

use crate::cloud_fixtures::audit_bucket;
use crate::operator::{
    BREAK_GLASS_ROLE_ARN, CLUSTER, OIDC_PROVIDER_ARN, OPERATOR_ROLE_ARN, Operator, PERMISSIONS_BOUNDARY_ARN,
    create_tenant, wait_ready,
};
use imaging_tenant_operator::evidence::controls::{CONTROLS, GUARD_LABEL, GUARDS};
use ito_test_support::chart::{CHART, MINIMAL_VALUES, documents, helm_template, kind_of, name_of};
use ito_test_support::{ControlPlane, Moto, scratch_dir, unique_name};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

const SCHEMA: &str = "docs/evidence-report.schema.json";
/// The admin user of the test control plane, whose client certificate the kubeconfig holds.
const ADMIN_USER: &str = "ito-test-admin";

/// `evidence` with the operator's settings and a clean environment; `args` after the command.
fn evidence(cp: &ControlPlane, moto: &Moto, audit: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"))
        .arg("evidence")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ITO_CLUSTER_NAME", CLUSTER)
        .env("ITO_AWS_REGION", "us-east-1")
        .env("ITO_AWS_ENDPOINT_URL", moto.endpoint_url())
        .env("ITO_OIDC_PROVIDER_ARN", OIDC_PROVIDER_ARN)
        .env("ITO_OPERATOR_ROLE_ARN", OPERATOR_ROLE_ARN)
        .env("ITO_BREAK_GLASS_ROLE_ARN", BREAK_GLASS_ROLE_ARN)
        .env("ITO_PERMISSIONS_BOUNDARY_ARN", PERMISSIONS_BOUNDARY_ARN)
        .env("ITO_AUDIT_LOG_BUCKET", audit)
        .output()
        .expect("run imaging-tenant-operator evidence")
}

async fn run_evidence(cp: &'static ControlPlane, moto: &'static Moto, audit: &str, args: &[&str]) -> Output {
    let audit = audit.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        evidence(cp, moto, &audit, &args)
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The chart's six admission policies and their bindings, labelled as guards, bound only in the
/// tenant's namespaces (the control plane is shared with tests that change operator-owned
/// objects). The operator runs as the cluster admin here (group system:masters), which they
/// let through as break glass.
async fn install_guards(cp: &ControlPlane, namespaces: &[String]) {
    let release = unique_name("evg");
    let values = json!({
        "admission": {
            "breakGlassGroups": ["system:masters"],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces,
            }]},
        },
    });
    let values_file = scratch_dir("evidence").join(format!("{release}-values.yaml"));
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let values_path = values_file.display().to_string();
    let rendered = helm_template(&[
        &release,
        CHART,
        "--namespace",
        "imaging-system",
        "--values",
        MINIMAL_VALUES,
        "--values",
        &values_path,
        "--show-only",
        "templates/admission-policies.yaml",
    ]);
    let client = cp.client();
    let prefix = format!("{release}-imaging-tenant-operator-");
    for mut doc in documents(&rendered) {
        let (kind, plural) = match kind_of(&doc) {
            "ValidatingAdmissionPolicy" => ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
            "ValidatingAdmissionPolicyBinding" => {
                ("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings")
            }
            other => panic!("unexpected kind {other} in the admission policies"),
        };
        if kind == "ValidatingAdmissionPolicy" {
            let guard = name_of(&doc).strip_prefix(&prefix).expect("policies are named after the release").to_string();
            assert!(GUARDS.contains(&guard.as_str()), "{guard} is one of the guards");
            doc["metadata"]["labels"][GUARD_LABEL] = json!(guard);
        }
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        api.patch(name_of(&doc), &PatchParams::apply("evidence-tests").force(), &Patch::Apply(&doc))
            .await
            .unwrap_or_else(|e| panic!("apply {kind} {}: {e}", name_of(&doc)));
    }
}

fn repo(path: &str) -> std::path::PathBuf {
    ito_test_support::repo_root().join(path)
}

/// The report validates against the committed schema, and its digest is the SHA-256 of the
/// report without it, as compact JSON with sorted keys (serde_json's own map order).
fn check_report(report: &Value) {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(repo(SCHEMA)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the committed schema is a valid JSON schema");
    let errors: Vec<String> = validator.iter_errors(report).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "the report does not validate against {SCHEMA}: {errors:#?}");
    let mut without = report.clone();
    let digest = without.as_object_mut().unwrap().remove("digest").unwrap();
    let recomputed = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(serde_json::to_string(&without).unwrap().as_bytes()))
    };
    assert_eq!(digest["value"], recomputed, "the digest recomputes");
}

fn results(report: &Value) -> Vec<(String, String)> {
    report["tenants"][0]["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["result"].as_str().unwrap().to_string()))
        .collect()
}

fn failing(report: &Value) -> Vec<String> {
    results(report).into_iter().filter(|(_, r)| r != "pass").map(|(id, r)| format!("{id}={r}")).collect()
}

#[tokio::test]
async fn invariant_13_evidence_reports_every_control_from_live_state_and_names_what_was_tampered_with() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let audit = audit_bucket(moto).await;
    let mut op = Operator::start_with_env(cp, moto, &[], &[("ITO_AUDIT_LOG_BUCKET", audit.as_str())]).await;
    let name = unique_name("ev");
    let namespaces = vec![name.clone(), format!("{name}-ai")];
    install_guards(cp, &namespaces).await;
    create_tenant(
        &client,
        &op.tenant(
            &name,
            json!({
                "namespaces": [{"name": namespaces[0]}, {"name": namespaces[1]}],
                "access": {
                    "admins": [{"kind": "Group", "name": "oidc:radiology-admins"}],
                    "viewers": [{"kind": "User", "name": "auditor@example.org"}]
                },
                "network": {"allowIngressFrom": [{"namespace": "ingress-nginx"}], "allowEgressTo": [{"cidr": "10.20.0.0/16"}]},
                "storage": {
                    "retention": {"mode": "Governance", "days": 30},
                    "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 60}
                }
            }),
        ),
    )
    .await;
    let status = wait_ready(&client, &name).await.status.unwrap();

    // Everything in place: exit 0, every control passes, the report validates, the digest holds.
    let dir = scratch_dir("evidence");
    let json_file = dir.join(format!("{name}.json"));
    let started = std::time::Instant::now();
    let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--output", json_file.to_str().unwrap()]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "evidence with everything in place: {}", stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    check_report(&report);
    assert!(failing(&report).is_empty(), "every control passes: {:?}", failing(&report));
    assert_eq!(results(&report).len(), CONTROLS.len());
    assert_eq!(report["tenants"][0]["uid"], json!(status_uid(&client, &name).await));
    assert_eq!(report["readBy"]["kubernetes"]["username"], ADMIN_USER);
    assert_eq!(report["readBy"]["aws"]["account"], ito_test_support::ACCOUNT_ID);
    let bucket = &status.bucket.unwrap().name;
    let s3_04 = report["tenants"][0]["controls"].as_array().unwrap().iter().find(|c| c["id"] == "ITO-S3-04").unwrap();
    assert_eq!(s3_04["evidence"]["kmsKeyArn"], status.key.as_ref().unwrap().arn, "the evidence is the setting read");
    assert!(s3_04["message"].as_str().unwrap().contains(bucket.as_str()));
    eprintln!("evidence for one tenant ({} controls) took {:.2} s", CONTROLS.len(), took.as_secs_f64());

    // Markdown: the same results, and a last line that is the digest of every line above it.
    let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--format", "markdown"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let markdown = String::from_utf8(out.stdout).unwrap();
    let (body, last) = markdown.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let digest = last.strip_prefix("SHA-256 of every line above: ").expect("a digest line");
    let recomputed = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(format!("{body}\n").as_bytes()))
    };
    assert_eq!(digest, recomputed);
    assert!(markdown.contains(&format!("## Tenant {name}")) && markdown.contains("ITO-KMS-02"));

    // Behind the operator's back: rotation off on the key, an allow-all rule in the default deny.
    op.stop();
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let key_id = &status.key.as_ref().unwrap().id;
    kms.disable_key_rotation().key_id(key_id).send().await.expect("turn key rotation off");
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespaces[1]);
    policies
        .patch("imaging-default-deny", &PatchParams::default(), &Patch::Merge(json!({"spec": {"ingress": [{}]}})))
        .await
        .expect("widen the default deny");

    let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--output", json_file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "a failing control exits 1: {}", stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    check_report(&report);
    assert_eq!(failing(&report), ["ITO-K8S-03=fail", "ITO-KMS-03=fail"], "exactly the tampered controls fail");
    let err = stderr(&out);
    assert!(err.contains("ITO-KMS-03") && err.contains("ITO-K8S-03"), "stderr names the failing controls: {err}");
    assert!(err.contains(&namespaces[1]), "and where: {err}");

    // Bad usage and access errors exit 2.
    let out = run_evidence(cp, moto, &audit, &["--tenant", "no-such-tenant-anywhere"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no ImagingTenant no-such-tenant-anywhere"), "{}", stderr(&out));
    let out = run_evidence(cp, moto, &audit, &["--format", "yaml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--output", "/nonexistent/dir/report.json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

async fn status_uid(client: &kube::Client, name: &str) -> String {
    let api: Api<imaging_tenant_operator::api::ImagingTenant> = Api::all(client.clone());
    api.get(name).await.unwrap().metadata.uid.unwrap()
}
