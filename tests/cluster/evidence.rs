//! Invariant 13 end to end: the operator provisions a replicating tenant under the chart's
//! admission guards (installed for every test of the binary, see `guard`);
//! `imaging-tenant-operator evidence`, run as its own process against the same apiserver and
//! moto with the operator's settings, reports every control passing, the replica's read in the
//! replication region among them, in JSON that validates against the committed schema, with a
//! digest that recomputes. It runs as an auditor: a Kubernetes user bound to the chart's auditor
//! ClusterRole, and in AWS a session of an auditor role the operator names with
//! `--auditor-role-arn`. Then, with the operator stopped, AWS settings of the tenant and of its
//! replica and one Kubernetes object are changed behind its back (through the break-glass group):
//! the report fails exactly those controls, and bad usage exits 2. And the operator publishes the same results as policy
//! reports, written only when they change.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::cloud_fixtures::audit_bucket;
use crate::operator::{Operator, create_tenant, wait_ready};
use imaging_tenant_operator::evidence::controls::CONTROLS;
use ito_test_support::chart::{CHART, MINIMAL_VALUES, documents, helm_template, kind_of, name_of};
use ito_test_support::{ControlPlane, Moto, scratch_dir, unique_name, wait_for};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

const SCHEMA: &str = "docs/evidence-report.schema.json";
/// The replication region of the operator `evidence` is compared with.
const REPLICA_REGION: &str = "eu-west-1";
/// The replication controls, skipped for a tenant that does not replicate.
const DR_SKIPPED: [&str; 4] = ["ITO-DR-01=skip", "ITO-DR-02=skip", "ITO-DR-03=skip", "ITO-DR-04=skip"];

/// An auditor: a user bound to the rules of the chart's ClusterRole `imagingtenant-auditor`
/// (copied under a name of this test's own, since the chart's user roles have cluster-wide names
/// that `chart_install` installs), and a kubeconfig that acts as them. Once for the binary.
fn auditor(cp: &ControlPlane) -> &'static (PathBuf, String) {
    static AUDITOR: OnceLock<(PathBuf, String)> = OnceLock::new();
    AUDITOR.get_or_init(|| {
        let user = format!("{}@audit.example", unique_name("auditor"));
        let rendered = helm_template(&[
            "ito",
            CHART,
            "--values",
            MINIMAL_VALUES,
            "--show-only",
            "templates/user-clusterroles.yaml",
        ]);
        let mut role = documents(&rendered)
            .into_iter()
            .find(|d| kind_of(d) == "ClusterRole" && name_of(d) == "imagingtenant-auditor")
            .expect("the chart renders the ClusterRole imagingtenant-auditor");
        let role_name = unique_name("imagingtenant-auditor");
        role["metadata"] = json!({"name": role_name});
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        let config = cp.config();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                        let client = kube::Client::try_from(config).unwrap();
                        let roles: Api<ClusterRole> = Api::all(client.clone());
                        roles.create(&Default::default(), &serde_json::from_value(role).unwrap()).await.unwrap();
                        let bindings: Api<ClusterRoleBinding> = Api::all(client);
                        bindings.create(&Default::default(), &serde_json::from_value(binding).unwrap()).await.unwrap();
                    })
                })
                .join()
                .unwrap()
        });
        let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("read the admin kubeconfig");
        let mut kubeconfig: Value = serde_yaml::from_str(&text).expect("parse the admin kubeconfig");
        kubeconfig["users"][0]["user"]["as"] = json!(user);
        kubeconfig["users"][0]["user"]["as-groups"] = json!(["system:authenticated"]);
        let path = scratch_dir("evidence").join("auditor-kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        (path, user)
    })
}

/// The auditor in AWS: a role of its own under `/auditors/` (`--auditor-role-arn` names it) and
/// credentials of a session of it (STS AssumeRole). Once for the binary.
struct AwsAuditor {
    role_arn: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

fn aws_auditor(moto: &Moto) -> &'static AwsAuditor {
    static AUDITOR: OnceLock<AwsAuditor> = OnceLock::new();
    AUDITOR.get_or_init(|| {
        let config = moto.sdk_config();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                        let trust = json!({
                            "Version": "2012-10-17",
                            "Statement": [{
                                "Effect": "Allow",
                                "Principal": {"AWS": format!("arn:aws:iam::{}:root", ito_test_support::ACCOUNT_ID)},
                                "Action": "sts:AssumeRole",
                            }],
                        });
                        let iam = aws_sdk_iam::Client::new(&config);
                        let role = iam
                            .create_role()
                            .role_name(unique_name("imaging-evidence"))
                            .path("/auditors/")
                            .assume_role_policy_document(trust.to_string())
                            .send()
                            .await
                            .expect("create the auditor role");
                        let role_arn = role.role().unwrap().arn().to_string();
                        let sts = aws_sdk_sts::Client::new(&config);
                        let session = sts
                            .assume_role()
                            .role_arn(&role_arn)
                            .role_session_name("audit")
                            .send()
                            .await
                            .expect("assume the auditor role");
                        let c = session.credentials().unwrap();
                        AwsAuditor {
                            role_arn,
                            access_key_id: c.access_key_id().to_string(),
                            secret_access_key: c.secret_access_key().to_string(),
                            session_token: c.session_token().to_string(),
                        }
                    })
                })
                .join()
                .unwrap()
        })
    })
}

/// `evidence` as the auditor, with the operator's settings and a clean environment; `args`
/// after the command.
fn evidence(cp: &ControlPlane, moto: &Moto, audit: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"));
    cmd.arg("evidence")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", &auditor(cp).0);
    crate::operator::test_settings(&mut cmd, moto);
    let aws = aws_auditor(moto);
    cmd.env("ITO_AUDIT_LOG_BUCKET", audit)
        .env("ITO_REPLICATION_REGION", REPLICA_REGION)
        .env("ITO_AUDITOR_ROLE_ARN", &aws.role_arn)
        .env("AWS_ACCESS_KEY_ID", &aws.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &aws.secret_access_key)
        .env("AWS_SESSION_TOKEN", &aws.session_token)
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
    let mut op = Operator::start_with_env(
        cp,
        moto,
        &[],
        &[
            ("ITO_AUDIT_LOG_BUCKET", audit.as_str()),
            ("ITO_REPLICATION_REGION", REPLICA_REGION),
            ("ITO_AUDITOR_ROLE_ARN", aws_auditor(moto).role_arn.as_str()),
        ],
    )
    .await;
    let name = unique_name("ev");
    let namespaces = [name.clone(), format!("{name}-ai")];
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
                    "lifecycle": {"archiveAfterDays": 90, "expireNoncurrentAfterDays": 60},
                    "replication": {"replicationTimeControl": true}
                }
            }),
        ),
    )
    .await;
    let status = wait_ready(&client, &name).await.status.unwrap();
    let replica = status.replica.clone().expect("status.replica");

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
    assert_eq!(report["readBy"]["kubernetes"]["username"], json!(auditor(cp).1), "read as the auditor");
    assert_eq!(report["readBy"]["aws"]["account"], ito_test_support::ACCOUNT_ID);
    let auditor_role = &aws_auditor(moto).role_arn;
    let role_name = auditor_role.rsplit('/').next().unwrap();
    let session = report["readBy"]["aws"]["arn"].as_str().unwrap();
    assert!(session.contains(&format!(":assumed-role/{role_name}/audit")), "read as the auditor role: {session}");
    let bucket = &status.bucket.unwrap().name;
    let s3_04 = report["tenants"][0]["controls"].as_array().unwrap().iter().find(|c| c["id"] == "ITO-S3-04").unwrap();
    assert_eq!(s3_04["evidence"]["kmsKeyArn"], status.key.as_ref().unwrap().arn, "the evidence is the setting read");
    assert!(s3_04["message"].as_str().unwrap().contains(bucket.as_str()));
    let control = |report: &Value, id: &str| {
        report["tenants"][0]["controls"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone()
    };
    let replica_key = replica.key.as_ref().unwrap();
    assert!(replica_key.arn.contains(&format!(":{REPLICA_REGION}:")), "{replica_key:?}");
    assert_eq!(control(&report, "ITO-DR-03")["evidence"]["keyArn"], replica_key.arn, "read in the replica region");
    assert_eq!(control(&report, "ITO-DR-01")["evidence"]["replicaKmsKeyArn"], replica_key.arn);
    assert_eq!(control(&report, "ITO-DR-01")["evidence"]["replicationTimeControl"], true);
    assert_eq!(control(&report, "ITO-DR-02")["evidence"]["bucket"], replica.bucket.as_ref().unwrap().name);
    // What lets the auditor read, and only read, is in force as the operator writes it. (That
    // it refuses the auditor objects, writes and key use is shown on the documents by
    // `desired::aws`'s `an_auditor_role_reads_bucket_and_key_settings_and_nothing_else`: moto
    // does not evaluate bucket and key policies with a request context, and lets the auditor's
    // session rewrite the bucket policy.)
    let auditors = &control(&report, "ITO-S3-10")["evidence"]["DenyAuditorsAllButReadingSettings"];
    assert_eq!(auditors["Condition"]["ArnEquals"]["aws:PrincipalArn"], json!([auditor_role]), "{auditors}");
    let key_policy = &control(&report, "ITO-KMS-04")["evidence"];
    assert!(key_policy.to_string().contains("AuditorsReadKeySettings"), "{key_policy}");
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

    // Behind the operator's back: rotation off on the key and on the replica key, the bucket's
    // replication configuration removed, an allow-all rule in the default deny.
    op.stop();
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let key_id = &status.key.as_ref().unwrap().id;
    kms.disable_key_rotation().key_id(key_id).send().await.expect("turn key rotation off");
    let far_kms = aws_sdk_kms::Client::new(&crate::cloud_fixtures::in_region(moto, REPLICA_REGION));
    far_kms.disable_key_rotation().key_id(&replica_key.id).send().await.expect("turn replica key rotation off");
    moto.s3_client().delete_bucket_replication().bucket(bucket).send().await.expect("stop replicating");
    let policies: Api<NetworkPolicy> = Api::namespaced(cp.break_glass_client(), &namespaces[1]);
    policies
        .patch("imaging-default-deny", &PatchParams::default(), &Patch::Merge(json!({"spec": {"ingress": [{}]}})))
        .await
        .expect("widen the default deny");

    let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--output", json_file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "a failing control exits 1: {}", stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    check_report(&report);
    assert_eq!(
        failing(&report),
        ["ITO-K8S-03=fail", "ITO-KMS-03=fail", "ITO-DR-01=fail", "ITO-DR-03=fail"],
        "exactly the tampered controls fail"
    );
    let dr_01 = control(&report, "ITO-DR-01");
    assert!(dr_01["message"].as_str().unwrap().contains("no replication configuration"), "{dr_01}");
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

    // Back, the operator restores them all (the rule added to the default deny at once, from its
    // watch; the key's rotation when asked, since a restarted operator verifies a Ready tenant's
    // AWS resources at its slot of the resync interval), and the report passes again.
    op.restart(cp, moto).await;
    request_reconcile(&cp.client(), &name).await;
    let file = json_file.to_str().unwrap().to_string();
    wait_for(Duration::from_secs(60), "the operator to repair both, and the report to pass", || {
        let (audit, name, file) = (audit.clone(), name.clone(), file.clone());
        async move {
            let out = run_evidence(cp, moto, &audit, &["--tenant", &name, "--output", &file]).await;
            if out.status.code() == Some(0) { Ok(()) } else { Err(stderr(&out)) }
        }
    })
    .await;
}

async fn status_uid(client: &kube::Client, name: &str) -> String {
    let api: Api<imaging_tenant_operator::api::ImagingTenant> = Api::all(client.clone());
    api.get(name).await.unwrap().metadata.uid.unwrap()
}

const REPORT_CRDS: [&str; 2] = [
    "tests/tools/policy-reports/openreports.io_clusterreports.yaml",
    "tests/tools/policy-reports/wgpolicyk8s.io_clusterpolicyreports.yaml",
];

async fn install_report_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for file in REPORT_CRDS {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("a CRD");
        ito_test_support::apply_crd(client, &crd, "evidence-tests").await;
    }
}

fn report_api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::all_with(client.clone(), &resource)
}

/// The results of a report as `control=result`, those not passing only, once it has every control.
async fn report_results(api: &Api<DynamicObject>, name: &str) -> Result<(Value, Vec<String>), String> {
    let report = api.get(name).await.map_err(|e| e.to_string())?;
    let report = serde_json::to_value(report).unwrap();
    let results = report["results"].as_array().cloned().unwrap_or_default();
    if results.len() != CONTROLS.len() {
        return Err(format!("{} results", results.len()));
    }
    let not_passing = results
        .iter()
        .filter(|r| r["result"] != "pass")
        .map(|r| format!("{}={}", r["policy"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    Ok((report, not_passing))
}

/// What does not pass for the policy-report test's tenant: Object Lock and replication, skipped.
fn not_passing_here() -> Vec<String> {
    std::iter::once("ITO-S3-07=skip").chain(DR_SKIPPED).map(str::to_string).collect()
}

async fn request_reconcile(client: &kube::Client, name: &str) {
    let api: Api<imaging_tenant_operator::api::ImagingTenant> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {"imaging.tenancy.dev/reconcile-requested-at": unique_name("at")}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("request a reconcile");
}

#[tokio::test]
async fn invariant_13_the_operator_publishes_policy_reports_only_on_change_and_warns_of_failing_controls() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    crate::install_crd(&client).await;
    install_report_crds(&client).await;
    let audit = audit_bucket(moto).await;
    let op = Operator::start_with_env(cp, moto, &[], &[("ITO_AUDIT_LOG_BUCKET", audit.as_str())]).await;
    let name = unique_name("evr");
    create_tenant(
        &client,
        &op.tenant(&name, json!({"access": {"admins": [{"kind": "Group", "name": "oidc:radiology-admins"}]}})),
    )
    .await;
    let status = wait_ready(&client, &name).await.status.unwrap();
    let report_name = format!("imaging-tenant-{name}");
    let open_reports = report_api(&client, "openreports.io", "v1alpha1", "ClusterReport", "clusterreports");
    let wg_policy = report_api(&client, "wgpolicyk8s.io", "v1alpha2", "ClusterPolicyReport", "clusterpolicyreports");

    // Both kinds are served, so both are written; every control passes (Object Lock is skipped:
    // the tenant asks for no retention; so is replication: the operator has no replication region
    // and the spec asks for none).
    let mut reports = Vec::new();
    for api in [&open_reports, &wg_policy] {
        let (report, not_passing) = wait_for(Duration::from_secs(60), "the tenant's policy report", || async {
            report_results(api, &report_name).await
        })
        .await;
        assert_eq!(not_passing, not_passing_here(), "{report:#}");
        assert_eq!(report["scope"]["kind"], "ImagingTenant");
        assert_eq!(report["scope"]["name"], json!(name));
        assert_eq!(report["summary"]["pass"], CONTROLS.len() - not_passing_here().len());
        let s3_09 = report["results"].as_array().unwrap().iter().find(|r| r["policy"] == "ITO-S3-09").unwrap();
        assert_eq!(s3_09["category"], "164.312(b)");
        assert_eq!(s3_09["severity"], "high");
        assert_eq!(s3_09["properties"]["awsConfigRules"], "s3-bucket-logging-enabled");
        assert!(s3_09["properties"]["evidence"].as_str().unwrap().contains(&audit), "{s3_09}");
        assert!(report["metadata"].get("creationTimestamp").is_some());
        reports.push(report);
    }
    let metric = |control: &str, result: &str| format!("tenant=\"{name}\",control=\"{control}\",result=\"{result}\"");
    assert_eq!(op.metric_sum("imaging_tenant_control", &metric("ITO-KMS-08", "pass")).await, 1.0);

    // A full reconcile that finds nothing new writes no report and no Event.
    let versions: Vec<Value> = reports.iter().map(|r| r["metadata"]["resourceVersion"].clone()).collect();
    let reconciles = op.metric_sum("imaging_tenant_operator_reconciliations_total", "").await;
    let aws_calls = op.metric_sum("imaging_tenant_operator_aws_calls_total", "").await;
    let kubernetes_requests = op.metric_sum("imaging_tenant_operator_kubernetes_requests_total", "").await;
    let calls_of = |operation: &str| {
        let filter = format!("operation=\"{operation}\"");
        let op = &op;
        async move { op.metric_sum("imaging_tenant_operator_aws_calls_total", &filter).await }
    };
    const READ_TWICE: [&str; 4] = ["GetBucketPolicy", "GetRole", "GetKeyPolicy", "GetKeyRotationStatus"];
    let mut before_by_operation = Vec::new();
    for operation in READ_TWICE {
        before_by_operation.push(calls_of(operation).await);
    }
    request_reconcile(&client, &name).await;
    wait_for(Duration::from_secs(30), "a reconcile after the request", || async {
        let n = op.metric_sum("imaging_tenant_operator_reconciliations_total", "").await;
        if n > reconciles { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (api, version) in [&open_reports, &wg_policy].into_iter().zip(&versions) {
        let now = serde_json::to_value(api.get(&report_name).await.unwrap()).unwrap();
        assert_eq!(&now["metadata"]["resourceVersion"], version, "an unchanged report was written again");
    }
    eprintln!(
        "a requested reconcile with everything in place: {} AWS calls, {} Kubernetes requests (AWS verification and evidence included)",
        op.metric_sum("imaging_tenant_operator_aws_calls_total", "").await - aws_calls,
        op.metric_sum("imaging_tenant_operator_kubernetes_requests_total", "").await - kubernetes_requests,
    );
    // Converging and judging the controls both read these settings; AWS is asked once.
    for (operation, before) in READ_TWICE.into_iter().zip(before_by_operation) {
        assert_eq!(calls_of(operation).await - before, 1.0, "{operation} sent to AWS once in one verification");
    }
    let warnings = |events: Vec<(String, String)>| events.into_iter().filter(|(r, _)| r == "ControlFailed").count();
    assert_eq!(warnings(crate::operator::events_for(&client, &name).await), 0);

    // Behind the operator's back, two things it does not undo: a RoleBinding of an outsider in a
    // tenant namespace, and a grant on the tenant key.
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(cp.break_glass_client(), &name);
    let outsider: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "contractor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "contractor@elsewhere.example"}],
    }))
    .unwrap();
    bindings.create(&Default::default(), &outsider).await.expect("bind an outsider");
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let key_id = status.key.as_ref().unwrap().id.clone();
    let grant = kms
        .create_grant()
        .key_id(&key_id)
        .grantee_principal("arn:aws:iam::123456789012:role/someone-else")
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .expect("grant the key to someone else");
    request_reconcile(&client, &name).await;
    for api in [&open_reports, &wg_policy] {
        wait_for(Duration::from_secs(60), "the report to show both failing controls", || async {
            let (_, not_passing) = report_results(api, &report_name).await?;
            if not_passing.contains(&"ITO-K8S-05=fail".to_string())
                && not_passing.contains(&"ITO-KMS-08=fail".to_string())
            {
                Ok(())
            } else {
                Err(format!("{not_passing:?}"))
            }
        })
        .await;
    }
    crate::operator::wait_event(&client, &name, "ControlFailed", "ITO-K8S-05 fail").await;
    crate::operator::wait_event(&client, &name, "ControlFailed", "ITO-KMS-08 fail").await;
    assert_eq!(op.metric_sum("imaging_tenant_control", &metric("ITO-KMS-08", "fail")).await, 1.0);
    assert_eq!(op.metric_sum("imaging_tenant_control", &metric("ITO-KMS-08", "pass")).await, 0.0);
    let (report, _) = report_results(&open_reports, &report_name).await.unwrap();
    let k8s_05 = report["results"].as_array().unwrap().iter().find(|r| r["policy"] == "ITO-K8S-05").unwrap();
    assert!(k8s_05["message"].as_str().unwrap().contains("contractor@elsewhere.example"), "{k8s_05}");

    // Undone: the reports pass again.
    bindings.delete("contractor", &Default::default()).await.unwrap();
    kms.revoke_grant().key_id(&key_id).grant_id(grant.grant_id().unwrap()).send().await.unwrap();
    request_reconcile(&client, &name).await;
    wait_for(Duration::from_secs(60), "the report to pass again", || async {
        let (_, not_passing) = report_results(&open_reports, &report_name).await?;
        if not_passing == not_passing_here() { Ok(()) } else { Err(format!("{not_passing:?}")) }
    })
    .await;
}
