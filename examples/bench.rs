//! `make bench [TENANTS=N]`: time to Ready for N tenants created at once, API calls per
//! reconcile in the steady state, and the operator's memory, against the local control plane and
//! moto. Prints figures; asserts nothing (the tests do that).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use imaging_tenant_operator::api::{ImagingTenant, condition};
use ito_test_support::{ControlPlane, Moto, free_port, http_request, scratch_dir, spawn_managed, wait_for};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const SHARD: &str = "imaging.tenancy.dev/bench";

fn metrics(port: u16) -> BTreeMap<String, f64> {
    let (_, body) = http_request("GET", port, "/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v))))
        .collect()
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str, filter: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(filter)).map(|(_, v)| v).sum()
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TENANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let binary =
        std::env::var("ITO_BENCH_OPERATOR").unwrap_or_else(|_| "target/release/imaging-tenant-operator".into());
    let cp = ControlPlane::shared().await;
    let moto = Moto::shared().await;
    let client = cp.client();
    ito_test_support::apply_crd(&client, &imaging_tenant_operator::api::crd(), "bench").await;

    let (metrics_port, health_port) = (free_port(), free_port());
    let log = scratch_dir("bench").join("operator.log");
    let mut cmd = Command::new(&binary);
    cmd.arg("run")
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ITO_CLUSTER_NAME", "bench")
        .env("ITO_AWS_REGION", "us-east-1")
        .env("ITO_AWS_ENDPOINT_URL", moto.endpoint_url())
        .env(
            "ITO_OIDC_PROVIDER_ARN",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/BENCH",
        )
        .env("ITO_OPERATOR_ROLE_ARN", "arn:aws:iam::123456789012:role/imaging-tenant-operator")
        .env("ITO_BREAK_GLASS_ROLE_ARN", "arn:aws:iam::123456789012:role/imaging-break-glass")
        .env("ITO_PERMISSIONS_BOUNDARY_ARN", "arn:aws:iam::123456789012:policy/imaging-tenant-boundary")
        .env("ITO_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("ITO_HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
        .env("ITO_LOG_LEVEL", "warn");
    let operator =
        spawn_managed("operator", cmd, &log).unwrap_or_else(|e| panic!("start {binary}: {e} (run `make bench`)"));
    wait_for(Duration::from_secs(60), "the operator's /readyz", || async {
        match http_request("GET", health_port, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let idle_rss = memory_kib(operator.pid(), "VmRSS:");

    let api: Api<ImagingTenant> = Api::all(client.clone());
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:03}")).collect();
    let started = Instant::now();
    for name in &names {
        let t: ImagingTenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "imaging.tenancy.dev/v1alpha1", "kind": "ImagingTenant",
            "metadata": {"name": name, "labels": {SHARD: "1"}},
            "spec": {"namespaces": [{"name": name}, {"name": format!("{name}-ai")}]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &t).await.expect("create tenant");
    }
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    while ready_at.len() < n {
        for t in api.list(&ListParams::default().labels(SHARD)).await.expect("list").items {
            let ready = t.status.as_ref().is_some_and(|s| condition::is_true(&s.conditions, condition::READY));
            if ready {
                ready_at.entry(t.name_any()).or_insert_with(|| started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("only {} of {n} tenants Ready after 10 minutes; operator log: {}", ready_at.len(), log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = started.elapsed();
    let mut times: Vec<Duration> = ready_at.values().cloned().collect();
    times.sort();
    let busy_peak = memory_kib(operator.pid(), "VmHWM:");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Steady state: ask every tenant for a full reconcile, AWS included, and count the calls.
    let before = metrics(metrics_port);
    let reconciles_before = sum(&before, "imaging_tenant_operator_reconciliations_total", "");
    let stamp = format!("{:?}", std::time::SystemTime::now());
    for name in &names {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"imaging.tenancy.dev/reconcile-requested-at": stamp}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    }
    wait_for(Duration::from_secs(120), "a reconcile of every tenant", || async {
        let m = metrics(metrics_port);
        let done = sum(&m, "imaging_tenant_operator_reconciliations_total", "") - reconciles_before;
        if done >= n as f64 { Ok(()) } else { Err(format!("{done} reconciles")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metrics(metrics_port);
    let reconciles = sum(&after, "imaging_tenant_operator_reconciliations_total", "") - reconciles_before;
    let delta = |prefix: &str, filter: &str| sum(&after, prefix, filter) - sum(&before, prefix, filter);
    let kube_reads = delta("imaging_tenant_operator_kubernetes_requests_total", "verb=\"get\"");
    let kube_writes = ["create", "patch", "update", "delete"]
        .iter()
        .map(|v| delta("imaging_tenant_operator_kubernetes_requests_total", &format!("verb=\"{v}\"")))
        .sum::<f64>();
    let aws_calls = delta("imaging_tenant_operator_aws_calls_total", "");
    let aws_writes = delta("imaging_tenant_operator_aws_writes_total", "");

    println!("imaging-tenant-operator benchmark ({binary})");
    println!("  tenants created at once                 {n} (2 namespaces each)");
    println!("  time until all Ready                    {:.2} s", all_ready.as_secs_f64());
    println!(
        "  time to Ready per tenant                p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        percentile(&times, 0.5).as_secs_f64(),
        percentile(&times, 0.95).as_secs_f64(),
        times.last().unwrap().as_secs_f64()
    );
    println!("  steady-state reconciles measured        {reconciles}");
    println!("  Kubernetes reads per reconcile          {:.2}", kube_reads / reconciles);
    println!("  Kubernetes writes per reconcile         {:.2} (events included)", kube_writes / reconciles);
    println!("  AWS calls per reconcile                 {:.2}", aws_calls / reconciles);
    println!("  AWS writes per reconcile                {:.2}", aws_writes / reconciles);
    println!("  operator memory idle / peak (RSS)       {} MiB / {} MiB", idle_rss / 1024, busy_peak / 1024);
}
