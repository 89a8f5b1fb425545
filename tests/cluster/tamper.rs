//! Tamper detection, measured: with one tenant Ready under the operator, each protected setting
//! in turn is changed behind the operator's back (AWS through moto, Kubernetes through the
//! break-glass group). The tenant's ClusterReport, watched so that a short-lived result is not
//! missed, shows the controls judging that setting failing, with what was found, until the
//! operator's repair reads back; then they pass again. Kubernetes objects are found by the
//! operator's watches; AWS settings at the reconcile request (or the resync interval). The test
//! prints the time to detection and to repair of each.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cloud_fixtures::audit_bucket;
use crate::operator::{Operator, create_tenant, events_for, wait_ready};
use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, ServerSideEncryption, VersioningConfiguration,
};
use futures::StreamExt;
use imaging_tenant_operator::cloud::policy;
use imaging_tenant_operator::evidence::controls::CONTROLS;
use ito_test_support::{ControlPlane, Moto, repo_root, unique_name};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Kubernetes drift is found by the operator's watches.
const KUBERNETES_DETECTION: Duration = Duration::from_secs(10);
/// AWS drift is found by the verification the reconcile request asks for.
const AWS_DETECTION: Duration = Duration::from_secs(30);
/// Detection, the repair read back, and the report passing again.
const REPAIR: Duration = Duration::from_secs(60);

/// Every version of the tenant's ClusterReport seen by a watch: when, and each control's result
/// and message.
type Seen = Arc<Mutex<Vec<(Instant, HashMap<String, (String, String)>)>>>;

fn watch_report(api: Api<DynamicObject>, name: &str) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut reports = watcher(api, config).default_backoff().applied_objects().boxed();
        while let Some(report) = reports.next().await {
            let Ok(report) = report else { continue };
            let report = serde_json::to_value(report).unwrap();
            let results = report["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (text("policy"), (text("result"), text("message")))
                })
                .collect();
            log.lock().unwrap().push((Instant::now(), results));
        }
    });
    (seen, task)
}

/// The first version seen at or after `since` for which `check` holds, and when it was seen.
async fn seen_after(
    seen: &Seen,
    since: Instant,
    within: Duration,
    what: &str,
    check: impl Fn(&HashMap<String, (String, String)>) -> bool,
) -> (Instant, HashMap<String, (String, String)>) {
    let deadline = since + within;
    loop {
        let found = seen.lock().unwrap().iter().find(|(at, r)| *at >= since && check(r)).cloned();
        if let Some(found) = found {
            return found;
        }
        let last = seen.lock().unwrap().last().map(|(_, r)| r.clone());
        assert!(Instant::now() < deadline, "{what} not seen within {within:?}; last report: {last:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When `check` first holds, polled every 100 ms.
async fn poll<F, Fut>(within: Duration, what: &str, check: F) -> Instant
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return Instant::now(),
            Err(last) => assert!(Instant::now() < deadline, "{what} not within {within:?}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn result_of<'a>(results: &'a HashMap<String, (String, String)>, control: &str) -> &'a str {
    results.get(control).map_or("", |(r, _)| r.as_str())
}

/// Every control passes, or is skipped as not configured for the tenant (Object Lock: it asks
/// for no retention).
fn all_pass(results: &HashMap<String, (String, String)>) -> bool {
    results.len() == CONTROLS.len() && results.values().all(|(r, _)| r == "pass" || r == "skip")
}

async fn install_report_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for file in [
        "tests/tools/policy-reports/openreports.io_clusterreports.yaml",
        "tests/tools/policy-reports/wgpolicyk8s.io_clusterpolicyreports.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("a CRD");
        ito_test_support::apply_crd(client, &crd, "evidence-tests").await;
    }
}

async fn request_reconcile(client: &kube::Client, name: &str) {
    let api: Api<imaging_tenant_operator::api::ImagingTenant> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {"imaging.tenancy.dev/reconcile-requested-at": unique_name("at")}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("request a reconcile");
}

/// One measured tampering.
struct Row {
    setting: &'static str,
    controls: &'static [&'static str],
    detected: Duration,
    read_back: Duration,
    passing: Duration,
}

struct Bench<'a> {
    client: kube::Client,
    tenant: String,
    seen: Seen,
    rows: Vec<Row>,
    _op: &'a Operator,
}

impl Bench<'_> {
    /// After a tampering with `setting`: for AWS, asks for a reconcile; waits until the report
    /// fails `controls` (saying the setting was restored) and, at the same time, until
    /// `restored` reads the operator's setting back; then until the report passes again.
    async fn measure<F, Fut>(
        &mut self,
        setting: &'static str,
        controls: &'static [&'static str],
        aws: bool,
        restored: F,
    ) where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        if aws {
            request_reconcile(&self.client, &self.tenant).await;
        }
        let since = Instant::now();
        let bound = if aws { AWS_DETECTION } else { KUBERNETES_DETECTION };
        let what = format!("{setting}: {controls:?} failing in the report");
        let failing =
            seen_after(&self.seen, since, bound, &what, |r| controls.iter().all(|c| result_of(r, c) == "fail"));
        let reading = format!("{setting} to read back as the operator's");
        let read_back = poll(REPAIR, &reading, restored);
        let ((detected, results), read_back) = tokio::join!(failing, read_back);
        for control in controls {
            let message = &results[*control].1;
            assert!(message.contains("restored"), "{control} says what was found and that it was restored: {message}");
        }
        eprintln!("{setting}: {} fail: {}", controls[0], results[controls[0]].1);
        let what = format!("{setting}: every control passing again");
        let (passed, _) = seen_after(&self.seen, detected, REPAIR, &what, all_pass).await;
        let events = events_for(&self.client, &self.tenant).await;
        for control in controls {
            let announced =
                events.iter().any(|(r, n)| r == "ControlFailed" && n.starts_with(&format!("{control} fail")));
            assert!(announced, "a ControlFailed Event for {control}: {events:?}");
        }
        self.rows.push(Row {
            setting,
            controls,
            detected: detected - since,
            read_back: read_back - since,
            passing: passed.max(read_back) - since,
        });
    }
}

#[tokio::test]
async fn tampering_with_each_protected_setting_shows_in_the_report_until_the_operator_repairs_it() {
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    let start = Instant::now();
    crate::install_crd(&client).await;
    install_report_crds(&client).await;
    let audit = audit_bucket(moto).await;
    let op = Operator::start_with_env(cp, moto, &[], &[("ITO_AUDIT_LOG_BUCKET", audit.as_str())]).await;
    let name = unique_name("tamper");
    let admins = json!([{"kind": "Group", "name": "oidc:radiology-admins", "apiGroup": "rbac.authorization.k8s.io"}]);
    create_tenant(
        &client,
        &op.tenant(&name, json!({"access": {"admins": [{"kind": "Group", "name": "oidc:radiology-admins"}]}})),
    )
    .await;
    let status = wait_ready(&client, &name).await.status.unwrap();
    let bucket = status.bucket.unwrap().name;
    let key_id = status.key.unwrap().id;
    let role = status.role.unwrap().name;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("openreports.io", "v1alpha1", "ClusterReport"),
        "clusterreports",
    );
    let (seen, watch) = watch_report(Api::all_with(client.clone(), &resource), &format!("imaging-tenant-{name}"));
    seen_after(&seen, start, REPAIR, "every control passing", all_pass).await;
    let mut bench = Bench { client: client.clone(), tenant: name.clone(), seen, rows: Vec::new(), _op: &op };

    let s3 = moto.s3_client();
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config());
    let tampered = |resource: String| {
        json!({"Sid": "Tampered", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
               "Action": "s3:GetObject", "Resource": resource})
    };

    // The bucket policy: an outside account may read.
    let outside = json!({"Version": "2012-10-17", "Statement": [tampered(format!("arn:aws:s3:::{bucket}/*"))]});
    s3.put_bucket_policy().bucket(&bucket).policy(outside.to_string()).send().await.unwrap();
    bench
        .measure("bucket policy", &["ITO-S3-03", "ITO-S3-10", "ITO-S3-11"], true, || async {
            let now = s3.get_bucket_policy().bucket(&bucket).send().await.map_err(|e| e.to_string())?;
            let now = now.policy().unwrap_or_default();
            if now.contains("Tampered") { Err(now.to_string()) } else { Ok(()) }
        })
        .await;

    // Block Public Access turned off.
    let open = PublicAccessBlockConfiguration::builder()
        .block_public_acls(false)
        .ignore_public_acls(false)
        .block_public_policy(false)
        .restrict_public_buckets(false)
        .build();
    s3.put_public_access_block().bucket(&bucket).public_access_block_configuration(open).send().await.unwrap();
    bench
        .measure("public access block", &["ITO-S3-01"], true, || async {
            let now = s3.get_public_access_block().bucket(&bucket).send().await.map_err(|e| e.to_string())?;
            let c = now
                .public_access_block_configuration()
                .cloned()
                .unwrap_or_else(|| PublicAccessBlockConfiguration::builder().build());
            let all =
                [c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()];
            if all.iter().all(|b| *b == Some(true)) { Ok(()) } else { Err(format!("{c:?}")) }
        })
        .await;

    // Default encryption with S3's own keys instead of the tenant's.
    let aes = crate::cloud_fixtures::s3_managed_encryption();
    s3.put_bucket_encryption().bucket(&bucket).server_side_encryption_configuration(aes).send().await.unwrap();
    bench
        .measure("default encryption", &["ITO-S3-04", "ITO-S3-05"], true, || async {
            let now = s3.get_bucket_encryption().bucket(&bucket).send().await.map_err(|e| e.to_string())?;
            let rule = now.server_side_encryption_configuration().and_then(|c| c.rules().first()).cloned();
            let algorithm = rule
                .as_ref()
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().clone());
            if algorithm == Some(ServerSideEncryption::AwsKms) { Ok(()) } else { Err(format!("{rule:?}")) }
        })
        .await;

    // Versioning suspended.
    let suspended = VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build();
    s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(suspended).send().await.unwrap();
    bench
        .measure("versioning", &["ITO-S3-06"], true, || async {
            let now = s3.get_bucket_versioning().bucket(&bucket).send().await.map_err(|e| e.to_string())?;
            if now.status() == Some(&BucketVersioningStatus::Enabled) {
                Ok(())
            } else {
                Err(format!("{:?}", now.status()))
            }
        })
        .await;

    // Key rotation off.
    kms.disable_key_rotation().key_id(&key_id).send().await.unwrap();
    bench
        .measure("key rotation", &["ITO-KMS-03"], true, || async {
            let now = kms.get_key_rotation_status().key_id(&key_id).send().await.map_err(|e| e.to_string())?;
            if now.key_rotation_enabled() { Ok(()) } else { Err("rotation off".into()) }
        })
        .await;

    // The key policy lets an outside account decrypt.
    let key_policy = || async {
        let now =
            kms.get_key_policy().key_id(&key_id).policy_name("default").send().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(now.policy().unwrap_or_default().to_string())
    };
    let mut loosened: Value = serde_json::from_str(&key_policy().await.unwrap()).unwrap();
    let mut decrypt = tampered("*".into());
    decrypt["Action"] = json!("kms:Decrypt");
    loosened["Statement"].as_array_mut().unwrap().push(decrypt);
    kms.put_key_policy().key_id(&key_id).policy_name("default").policy(loosened.to_string()).send().await.unwrap();
    bench
        .measure("key policy", &["ITO-KMS-04"], true, || async {
            let now = key_policy().await?;
            if now.contains("Tampered") { Err(now) } else { Ok(()) }
        })
        .await;

    // The role trusts a ServiceAccount of another namespace too.
    let trust_now = || async {
        let now = iam.get_role().role_name(&role).send().await.map_err(|e| e.to_string())?;
        let doc = now.role().and_then(|r| r.assume_role_policy_document()).unwrap_or_default();
        policy::parse(doc)
    };
    let mut trust = trust_now().await.unwrap();
    trust["Statement"][0]["Condition"]["StringEquals"]
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.ends_with(":sub"))
        .unwrap()
        .1
        .as_array_mut()
        .unwrap()
        .push(json!("system:serviceaccount:intruder:default"));
    iam.update_assume_role_policy().role_name(&role).policy_document(trust.to_string()).send().await.unwrap();
    bench
        .measure("role trust policy", &["ITO-IAM-01"], true, || async {
            let now = trust_now().await?;
            if now.to_string().contains("intruder") { Err(now.to_string()) } else { Ok(()) }
        })
        .await;

    // The role's own policy allows everything in S3.
    let inline = || async {
        let now = iam
            .get_role_policy()
            .role_name(&role)
            .policy_name("imaging-tenant-access")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        policy::parse(now.policy_document())
    };
    let everything = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Tampered", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]});
    iam.put_role_policy()
        .role_name(&role)
        .policy_name("imaging-tenant-access")
        .policy_document(everything.to_string())
        .send()
        .await
        .unwrap();
    bench
        .measure("role inline policy", &["ITO-IAM-03", "ITO-IAM-04"], true, || async {
            let now = inline().await?;
            if now.to_string().contains("Tampered") { Err(now.to_string()) } else { Ok(()) }
        })
        .await;

    // The default deny of a tenant namespace admits all ingress.
    let policies: Api<NetworkPolicy> = Api::namespaced(cp.break_glass_client(), &name);
    policies
        .patch("imaging-default-deny", &PatchParams::default(), &Patch::Merge(json!({"spec": {"ingress": [{}]}})))
        .await
        .expect("widen the default deny");
    bench
        .measure("NetworkPolicy imaging-default-deny", &["ITO-K8S-03"], false, || async {
            let now = policies.get("imaging-default-deny").await.map_err(|e| e.to_string())?;
            let ingress = now.spec.and_then(|s| s.ingress).unwrap_or_default();
            if ingress.is_empty() { Ok(()) } else { Err(format!("{ingress:?}")) }
        })
        .await;

    // An outsider among the tenant's admins.
    let bindings: Api<RoleBinding> = Api::namespaced(cp.break_glass_client(), &name);
    let intruder = json!({"subjects": [{"kind": "User", "name": "intruder@elsewhere.example", "apiGroup": "rbac.authorization.k8s.io"}]});
    bindings
        .patch("imaging-admins", &PatchParams::default(), &Patch::Merge(intruder))
        .await
        .expect("change the admins' subjects");
    bench
        .measure("RoleBinding imaging-admins", &["ITO-K8S-05", "ITO-K8S-06"], false, || async {
            let now = bindings.get("imaging-admins").await.map_err(|e| e.to_string())?;
            let subjects = serde_json::to_value(now.subjects.unwrap_or_default()).unwrap();
            if subjects == admins { Ok(()) } else { Err(subjects.to_string()) }
        })
        .await;
    watch.abort();

    eprintln!("| setting | controls | report fails after | setting reads back after | report passes after |");
    eprintln!("|---|---|---|---|---|");
    for row in &bench.rows {
        eprintln!(
            "| {} | {} | {:.1} s | {:.1} s | {:.1} s |",
            row.setting,
            row.controls.join(", "),
            row.detected.as_secs_f64(),
            row.read_back.as_secs_f64(),
            row.passing.as_secs_f64()
        );
    }
}
