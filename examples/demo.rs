//! `make demo`: a local control plane and AWS emulator, the operator, and the example tenants.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager (built by `make k8s-bin`) and moto on
//! loopback, installs the CRD, runs the operator binary against them, applies
//! `deploy/examples/*.yaml`, shows what each tenant received, and keeps everything running until
//! Ctrl-C, when every process is stopped and every scratch file removed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use imaging_tenant_operator::api::{ImagingTenant, condition};
use ito_test_support::{ControlPlane, Moto, free_port, scratch_dir, spawn_managed, wait_for};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

const OPERATOR: &str = "target/debug/imaging-tenant-operator";

#[tokio::main]
async fn main() {
    if !Path::new(OPERATOR).exists() {
        eprintln!("{OPERATOR} is missing: run `make demo`, which builds it first");
        std::process::exit(2);
    }
    println!("Starting etcd, kube-apiserver, kube-controller-manager and moto on loopback...");
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();

    ito_test_support::apply_crd(&client, &imaging_tenant_operator::api::crd(), "imaging-tenant-operator-demo").await;
    println!("Installing the chart's ServiceAccount, ClusterRole and admission policies...");
    ito_test_support::guard::install(&client).await;

    let dir = scratch_dir("demo");
    let log = dir.join("operator.log");
    let (metrics_port, health_port) = (free_port(), free_port());
    let mut cmd = Command::new(OPERATOR);
    // The operator acts as the chart's ServiceAccount, under its ClusterRole and the admission
    // policies, as in a cluster.
    cmd.arg("run")
        .env("KUBECONFIG", ito_test_support::guard::operator_kubeconfig(cp))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ITO_CLUSTER_NAME", "demo")
        .env("ITO_AWS_REGION", "us-east-1")
        .env("ITO_AWS_ENDPOINT_URL", moto.endpoint_url())
        .env("ITO_BUCKET_PREFIX", "acme-img")
        .env(
            "ITO_OIDC_PROVIDER_ARN",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/DEMO",
        )
        .env("ITO_OPERATOR_ROLE_ARN", "arn:aws:iam::123456789012:role/imaging-tenant-operator")
        .env("ITO_BREAK_GLASS_ROLE_ARN", "arn:aws:iam::123456789012:role/imaging-break-glass")
        .env("ITO_PERMISSIONS_BOUNDARY_ARN", "arn:aws:iam::123456789012:policy/imaging-tenant-boundary")
        .env("ITO_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("ITO_HEALTH_ADDR", format!("127.0.0.1:{health_port}"));
    let _operator = spawn_managed("operator", cmd, &log).expect("start the operator");
    println!("Operator running; its log: {}", log.display());

    let api: Api<ImagingTenant> = Api::all(client.clone());
    let mut names = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir("deploy/examples").expect("deploy/examples").flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(doc).expect("example YAML");
            if value.get("kind").and_then(|k| k.as_str()) != Some("ImagingTenant") {
                continue;
            }
            let tenant: ImagingTenant = serde_json::from_value(value).expect("example tenant");
            let name = tenant.name_any();
            api.patch(&name, &PatchParams::apply("kubectl-demo").force(), &Patch::Apply(&tenant))
                .await
                .expect("apply example tenant");
            println!("Applied ImagingTenant {name} from {}", file.display());
            names.push(name);
        }
    }

    for name in &names {
        let api = api.clone();
        wait_for(Duration::from_secs(180), &format!("{name} to be Ready"), || {
            let api = api.clone();
            let log = log.clone();
            async move {
                let t = api.get(name).await.map_err(|e| e.to_string())?;
                let conditions = t.status.map(|s| s.conditions).unwrap_or_default();
                if condition::is_true(&conditions, condition::READY) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}\noperator log:\n{}",
                        conditions
                            .iter()
                            .map(|c| format!("{}={} {}", c.type_, c.status, c.message))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        ito_test_support::log_tail(&log, 10)
                    ))
                }
            }
        })
        .await;
    }

    let kubeconfig = cp.kubeconfig_path().display().to_string();
    println!("\n$ kubectl get imagingtenants");
    let _ = Command::new("kubectl").args(["--kubeconfig", &kubeconfig, "get", "imagingtenants"]).status();
    for name in &names {
        let t = api.get(name).await.expect("tenant");
        let status = t.status.clone().unwrap_or_default();
        println!("\n== {name}: {}", t.spec.display_name.clone().unwrap_or_default());
        for ns in &status.namespaces {
            let policies: Vec<String> = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items.iter().map(|p| p.name_any()).collect())
                .unwrap_or_default();
            let bindings: Vec<String> = Api::<RoleBinding>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items.iter().map(|b| format!("{}->{}", b.name_any(), b.role_ref.name)).collect())
                .unwrap_or_default();
            println!(
                "  namespace {ns}\n    network policies: {}\n    role bindings: {}",
                policies.join(", "),
                bindings.join(", ")
            );
        }
        if let Some(b) = &status.bucket {
            println!("  S3 bucket: {} ({})", b.name, b.arn);
        }
        if let Some(k) = &status.key {
            println!("  KMS key:   {} ({})", k.alias, k.arn);
        }
        if let Some(r) = &status.role {
            println!("  IAM role:  {}", r.arn);
        }
        for c in &status.conditions {
            println!("  {:<16} {:<5} {}", c.type_, c.status, c.reason);
        }
    }
    println!(
        "\nEverything is running. In another terminal:\n  export KUBECONFIG={kubeconfig}\n  kubectl get imagingtenants,namespaces\n  kubectl describe imagingtenant {}\nAWS emulator: {} (credentials testing/testing)\nMetrics: http://127.0.0.1:{metrics_port}/metrics\nPress Ctrl-C to stop everything.",
        names.first().map(String::as_str).unwrap_or(""),
        moto.endpoint_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    println!("\nStopping the operator, the control plane and moto...");
}
