//! `make bench [TENANTS=N]`: time to Ready for N tenants created at once against the floor the
//! request budgets imply, the operator's CPU and memory per tenant, API calls by operation and
//! verb, API calls per reconcile in the steady state, and moto's and the apiserver's own speed
//! for comparable work measured alone. `BENCH_STEADY=1` adds the steady state over two resync
//! intervals (`BENCH_RESYNC`, default 120s): AWS reads per second against the budgets, writes and
//! memory. `BENCH_LOG_LEVEL` sets the operator's log level (default warn); its log is kept in
//! `target/bench-operator.log`. Prints figures; asserts nothing (the tests do that).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use imaging_tenant_operator::api::{ImagingTenant, condition};
use ito_test_support::{ControlPlane, Moto, free_port, http_request, scratch_dir, spawn_managed, wait_for};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;

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

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}

/// Counter families by one label, `name{label="value",...} n` → value → n.
fn by_label(m: &BTreeMap<String, f64>, prefix: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with(prefix)) {
        if let Some(value) = k.split(&format!("{label}=\"")).nth(1).and_then(|r| r.split('"').next()) {
            *out.entry(value.to_string()).or_default() += v;
        }
    }
    out
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
    ito_test_support::guard::install(&client).await;

    let (metrics_port, health_port) = (free_port(), free_port());
    let log = scratch_dir("bench").join("operator.log");
    let mut cmd = Command::new(&binary);
    cmd.arg("run")
        .env("KUBECONFIG", ito_test_support::guard::operator_kubeconfig(cp))
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
        .env("ITO_LOG_LEVEL", std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()))
        .env("ITO_RESYNC_INTERVAL", resync_interval());
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
    let cpu_before = cpu_seconds(operator.pid());
    let metrics_before_create = metrics(metrics_port);

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
    // Ready times from a watch, which costs the apiserver (and this process) far less than
    // listing every tenant again and again while they are provisioned.
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut changes = std::pin::pin!(
        kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default().labels(SHARD))
            .default_backoff()
            .applied_objects()
    );
    // A generous cap: 1,000 tenants at 4 CreateKey/s need 250 s at best.
    let cap = Duration::from_secs(600 + n as u64);
    while ready_at.len() < n {
        let next = tokio::time::timeout(cap.saturating_sub(started.elapsed()), changes.next()).await;
        let t = match next {
            Ok(Some(Ok(t))) => t,
            Ok(Some(Err(e))) => panic!("watching the tenants: {e}"),
            Ok(None) | Err(_) => {
                panic!("only {} of {n} tenants Ready after {cap:?}; operator log: {}", ready_at.len(), log.display())
            }
        };
        let ready = t.status.as_ref().is_some_and(|s| condition::is_true(&s.conditions, condition::READY));
        if ready {
            ready_at.entry(t.name_any()).or_insert_with(|| started.elapsed());
        }
    }
    let all_ready = started.elapsed();
    let mut times: Vec<Duration> = ready_at.values().cloned().collect();
    times.sort();
    let busy_peak = memory_kib(operator.pid(), "VmHWM:");
    let cpu_provisioning = cpu_seconds(operator.pid()) - cpu_before;
    let after_create = metrics(metrics_port);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Steady state: ask every tenant for a full reconcile, AWS included, and count the calls.
    let before = metrics(metrics_port);
    let reconciles_before = sum(&before, "imaging_tenant_operator_reconciliations_total", "");
    let stamp = format!("{:?}", std::time::SystemTime::now());
    // Timed from the first request: tenants start verifying while the others are annotated.
    let full_started = Instant::now();
    for name in &names {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"imaging.tenancy.dev/reconcile-requested-at": stamp}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    }
    // Every tenant re-reads its AWS settings at once, so the read budgets bound how long that
    // takes (iam:read at 15/s for 4 IAM reads per tenant): a second per tenant is ample.
    // Scraped every 2 s: at 1,000 tenants a scrape is some 80,000 series for the operator to write.
    loop {
        let done = sum(&metrics(metrics_port), "imaging_tenant_operator_reconciliations_total", "") - reconciles_before;
        if done >= n as f64 {
            break;
        }
        if full_started.elapsed() > Duration::from_secs(120 + n as u64) {
            panic!("only {done} of {n} tenants reconciled after {:?}", full_started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let full_verification = full_started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metrics(metrics_port);
    let steady_by_op: Vec<(String, f64)> = {
        let (a, b) = (
            by_label(&after, "imaging_tenant_operator_aws_calls_total", "operation"),
            by_label(&before, "imaging_tenant_operator_aws_calls_total", "operation"),
        );
        a.iter().map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect()
    };
    let reconciles = sum(&after, "imaging_tenant_operator_reconciliations_total", "") - reconciles_before;
    let delta = |prefix: &str, filter: &str| sum(&after, prefix, filter) - sum(&before, prefix, filter);
    let kube_reads = delta("imaging_tenant_operator_kubernetes_requests_total", "verb=\"get\"");
    let kube_writes = ["create", "patch", "update", "delete"]
        .iter()
        .map(|v| delta("imaging_tenant_operator_kubernetes_requests_total", &format!("verb=\"{v}\"")))
        .sum::<f64>();
    let aws_calls = delta("imaging_tenant_operator_aws_calls_total", "");
    let aws_writes = delta("imaging_tenant_operator_aws_writes_total", "");

    let end_rss = memory_kib(operator.pid(), "VmRSS:");
    let run_peak = memory_kib(operator.pid(), "VmHWM:");
    // The floor: for each budget, the requests the provisioning made over its rate; the
    // slowest budget bounds the time to Ready.
    let budget_requests: BTreeMap<String, f64> = {
        let (a, b) = (
            by_label(&after_create, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
            by_label(&metrics_before_create, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
        );
        a.iter().map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0))).collect()
    };
    let rates = by_label(&after_create, "imaging_tenant_operator_aws_budget_rate", "budget");
    let (floor_budget, floor) = budget_requests
        .iter()
        .filter_map(|(k, n)| rates.get(k).filter(|r| **r > 0.0).map(|r| (k.clone(), n / r)))
        .fold((String::new(), 0.0f64), |best, (k, f)| if f > best.1 { (k, f) } else { best });
    let calls_by_op = {
        let (a, b) = (
            by_label(&after_create, "imaging_tenant_operator_aws_calls_total", "operation"),
            by_label(&metrics_before_create, "imaging_tenant_operator_aws_calls_total", "operation"),
        );
        a.iter()
            .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect::<Vec<_>>()
    };
    let kube_by_verb = {
        let (a, b) = (
            by_label(&after_create, "imaging_tenant_operator_kubernetes_requests_total", "verb"),
            by_label(&metrics_before_create, "imaging_tenant_operator_kubernetes_requests_total", "verb"),
        );
        a.iter()
            .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect::<Vec<_>>()
    };
    let caches = cache_sizes(&client, n).await;
    let (moto_alone, apiserver_alone) = alone(&client, moto, n).await;

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
    println!(
        "  every tenant verified at once           {:.1} s (floor by the read budgets {:.1} s)",
        full_verification.as_secs_f64(),
        read_floor(&before, &after)
    );
    println!("  AWS writes per reconcile                {:.2}", aws_writes / reconciles);
    println!(
        "  operator RSS idle / peak                {} MiB / {} MiB while provisioning, {} MiB over the run",
        idle_rss / 1024,
        busy_peak / 1024,
        run_peak / 1024
    );
    println!(
        "  floor implied by the request budgets    {floor:.1} s ({floor_budget}); measured / floor {:.2}",
        all_ready.as_secs_f64() / floor.max(f64::EPSILON)
    );
    println!("  time to Ready p99                       {:.2} s", percentile(&times, 0.99).as_secs_f64());
    println!(
        "  operator CPU while provisioning         {cpu_provisioning:.1} s, {:.1} ms per tenant",
        cpu_provisioning * 1000.0 / n as f64
    );
    println!(
        "  operator RSS at the end                 {} MiB, {:.0} KiB per tenant over idle",
        end_rss / 1024,
        end_rss.saturating_sub(idle_rss) as f64 / n as f64
    );
    println!("  AWS calls while provisioning, by operation:");
    for (op, count) in &calls_by_op {
        println!("    {op:<40} {count:.0}");
    }
    println!("  AWS calls per steady-state reconcile, by operation:");
    for (op, count) in &steady_by_op {
        println!("    {op:<40} {:.2}", count / reconciles);
    }
    println!("  Kubernetes requests while provisioning, by verb:");
    for (verb, count) in &kube_by_verb {
        println!("    {verb:<40} {count:.0}");
    }
    println!("  watch caches per tenant (JSON KiB as served / as cached: no managed fields, children no status):");
    for (kind, full, kept) in &caches {
        println!("    {kind:<40} {full:.1} / {kept:.1}");
    }
    println!("  moto alone, a tenant's creates x {n} (8 at a time)       {:.1} s", moto_alone.as_secs_f64());
    println!("  apiserver alone, a tenant's objects x {n} (8 at a time)  {:.1} s", apiserver_alone.as_secs_f64());

    if std::env::var("BENCH_STEADY").is_ok_and(|v| v == "1") {
        steady(metrics_port, operator.pid()).await;
    }
    // The scratch directory goes with this process; the operator's log stays for a look.
    let kept = std::path::Path::new("target/bench-operator.log");
    if std::fs::copy(&log, kept).is_ok() {
        println!("  operator log (warnings and errors)      {}", kept.display());
    }
}

/// The time the reads between two scrapes need at least under the read budgets: the slowest
/// budget's requests over its rate.
fn read_floor(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    let (a, b) = (
        by_label(after, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
        by_label(before, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
    );
    let rates = by_label(after, "imaging_tenant_operator_aws_budget_rate", "budget");
    a.iter()
        .filter_map(|(k, v)| rates.get(k).filter(|r| **r > 0.0).map(|r| (v - b.get(k).copied().unwrap_or(0.0)) / r))
        .fold(0.0, f64::max)
}

/// The operator's resync interval: `BENCH_RESYNC`, else 120s when the steady state is measured
/// and 10m otherwise.
fn resync_interval() -> String {
    let steady = std::env::var("BENCH_STEADY").is_ok_and(|v| v == "1");
    std::env::var("BENCH_RESYNC").unwrap_or_else(|_| if steady { "120s" } else { "10m" }.into())
}

/// What each watch cache holds per tenant: the objects of each kind the operator caches, as the
/// apiserver serializes them (JSON bytes per tenant) and as the cache keeps them (without
/// managed fields; the tenants' own objects without status too, kept as JSON text). A proxy for
/// the caches' share of the operator's memory.
async fn cache_sizes(client: &kube::Client, n: usize) -> Vec<(&'static str, f64, f64)> {
    use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::RoleBinding;

    async fn per_tenant<K>(client: &kube::Client, selector: &str, n: usize, status: bool) -> (&'static str, f64, f64)
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        K: 'static,
    {
        let api: Api<K> = Api::all(client.clone());
        let (mut full, mut kept) = (0usize, 0usize);
        for mut obj in api.list(&ListParams::default().labels(selector)).await.expect("list").items {
            full += serde_json::to_vec(&obj).map(|v| v.len()).unwrap_or(0);
            obj.meta_mut().managed_fields = None;
            let mut value = serde_json::to_value(&obj).unwrap_or_default();
            if !status && let Some(fields) = value.as_object_mut() {
                fields.remove("status");
            }
            kept += value.to_string().len();
        }
        let kind: &'static str = Box::leak(K::kind(&()).into_owned().into_boxed_str());
        (kind, full as f64 / 1024.0 / n as f64, kept as f64 / 1024.0 / n as f64)
    }
    let managed = "app.kubernetes.io/managed-by=imaging-tenant-operator";
    vec![
        per_tenant::<ImagingTenant>(client, SHARD, n, true).await,
        per_tenant::<Namespace>(client, managed, n, false).await,
        per_tenant::<NetworkPolicy>(client, managed, n, false).await,
        per_tenant::<RoleBinding>(client, managed, n, false).await,
        per_tenant::<ResourceQuota>(client, managed, n, false).await,
        per_tenant::<LimitRange>(client, managed, n, false).await,
        per_tenant::<ServiceAccount>(client, managed, n, false).await,
    ]
}

/// What moto and the apiserver take alone for the writes of `n` tenants: each tenant's role, key,
/// alias and bucket created directly in moto, and its 2 namespaces with 10 objects each created
/// directly in the apiserver, 8 tenants at a time, as the operator's default concurrency.
async fn alone(client: &kube::Client, moto: &Moto, n: usize) -> (Duration, Duration) {
    use futures::StreamExt;
    let config = moto.sdk_config();
    let (iam, kms, s3) = (aws_sdk_iam::Client::new(&config), aws_sdk_kms::Client::new(&config), moto.s3_client());
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |i| {
            let (iam, kms, s3) = (iam.clone(), kms.clone(), s3.clone());
            async move {
                let name = format!("alone-{i}-{}", std::process::id());
                let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
                iam.create_role().role_name(&name).assume_role_policy_document(trust).send().await.expect("CreateRole");
                let key = kms.create_key().send().await.expect("CreateKey");
                let id = key.key_metadata().map(|m| m.key_id().to_string()).unwrap_or_default();
                kms.create_alias().alias_name(format!("alias/{name}")).target_key_id(id).send().await.expect("CreateAlias");
                s3.create_bucket().bucket(&name).send().await.expect("CreateBucket");
            }
        })
        .await;
    let moto_alone = started.elapsed();

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |i| {
            let (namespaces, client) = (namespaces.clone(), client.clone());
            async move {
                for ns in [format!("alone-{i}"), format!("alone-{i}-ai")] {
                    let obj = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
                    namespaces.create(&PostParams::default(), &obj).await.expect("create namespace");
                    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
                    for j in 0..10 {
                        let cm =
                            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("o{j}")}})).unwrap();
                        cms.create(&PostParams::default(), &cm).await.expect("create object");
                    }
                }
            }
        })
        .await;
    (moto_alone, started.elapsed())
}

/// The steady state over two resync intervals: AWS reads per second against the budgets, writes,
/// memory. Needs the operator started with `ITO_RESYNC_INTERVAL=$BENCH_RESYNC`.
async fn steady(metrics_port: u16, pid: u32) {
    let resync = resync_interval();
    let secs: u64 = resync.trim_end_matches('s').parse().expect("BENCH_RESYNC in seconds, like 120s");
    let before = metrics(metrics_port);
    let window = Duration::from_secs(2 * secs);
    tokio::time::sleep(window).await;
    let after = metrics(metrics_port);
    let delta = |prefix: &str| sum(&after, prefix, "") - sum(&before, prefix, "");
    let writes = delta("imaging_tenant_operator_aws_writes_total");
    let calls = delta("imaging_tenant_operator_aws_calls_total");
    println!("  steady state over {:.0} s (two resync intervals):", window.as_secs_f64());
    println!("    AWS reads per second                  {:.1}", (calls - writes) / window.as_secs_f64());
    println!("    AWS writes                            {writes:.0}");
    let (a, b) = (
        by_label(&after, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
        by_label(&before, "imaging_tenant_operator_aws_budget_requests_total", "budget"),
    );
    let rates = by_label(&after, "imaging_tenant_operator_aws_budget_rate", "budget");
    for (budget, total) in &a {
        let per_second = (total - b.get(budget).copied().unwrap_or(0.0)) / window.as_secs_f64();
        if per_second > 0.0 {
            println!("    {budget:<38} {per_second:.2}/s of {:.0}/s", rates.get(budget).copied().unwrap_or(0.0));
        }
    }
    println!(
        "    operator RSS                          {} MiB, {} MiB at most over the run",
        memory_kib(pid, "VmRSS:") / 1024,
        memory_kib(pid, "VmHWM:") / 1024
    );
}
