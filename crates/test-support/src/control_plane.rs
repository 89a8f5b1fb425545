//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager, started once per test binary and shared by its tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::certs::{Pki, write_pki};
use super::net::{free_port, http_request};
use super::process::{ManagedProcess, scratch_dir, spawn_managed};

/// Environment variable naming the directory with the pinned binaries (set by `make test`).
pub const BIN_DIR_ENV: &str = "ITO_TEST_BIN_DIR";

/// How long each component may take to become ready; a loaded 2-core machine needs the margin.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// How often a component is restarted on fresh ports when a port turned out to be taken.
const PORT_ATTEMPTS: u32 = 3;

/// Log lines quoted in start-up failure messages.
const LOG_TAIL_LINES: usize = 40;

const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// The group the tests' cluster-wide admission policies let act as the operator in an emergency
/// (chart value `admission.breakGlassGroups`).
pub const BREAK_GLASS_GROUP: &str = "ito-test:break-glass";

pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    config: kube::Config,
    etcd: ManagedProcess,
    apiserver: ManagedProcess,
    controller_manager: ManagedProcess,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started by the first caller.
    ///
    /// Start-up runs on its own thread and runtime, so the processes and the stored
    /// configuration are tied to no test's runtime. A failed start is remembered: every test
    /// of the binary then fails at once with the same message.
    pub async fn shared() -> &'static ControlPlane {
        super::install_crypto_provider();
        let started = tokio::task::spawn_blocking(|| SHARED.get_or_init(start_on_own_thread))
            .await
            .expect("wait for the control plane start-up");
        match started {
            Ok(control_plane) => control_plane,
            Err(message) => panic!("{message}"),
        }
    }

    /// A client with cluster-admin rights (group `system:masters`).
    ///
    /// A `kube::Client` is bound to the runtime it was built on, and each `#[tokio::test]` has
    /// its own runtime: build clients inside the test, never share them between tests.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("build a client for the test control plane")
    }

    /// A client that impersonates `user` with `groups`, so RBAC applies as it would to them.
    /// The API server adds `system:authenticated` to the groups.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
        kube::Client::try_from(config).expect("build an impersonating client for the test control plane")
    }

    /// A cluster admin acting through the break-glass group [`BREAK_GLASS_GROUP`], which the
    /// admission policies let change operator-owned objects (to simulate drift, or to clean up).
    pub fn break_glass_client(&self) -> kube::Client {
        self.client_as("ito-test-break-glass", &["system:masters", BREAK_GLASS_GROUP])
    }

    /// The admin `kube::Config`, for building clients with other settings.
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A kubeconfig file with the admin credentials, for `KUBECONFIG=`, `kubectl` or `helm`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The directory holding certificates, logs and etcd's data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of each component's log, to put into a failing test's message.
    pub fn logs_tail(&self, lines: usize) -> String {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .iter()
            .map(|p| format!("--- {} ({}) ---\n{}", p.name(), p.log_path().display(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The path of a pinned binary (`etcd`, `kube-apiserver`, `kube-controller-manager`, `helm`).
pub fn tool_path(name: &str) -> Result<PathBuf, String> {
    let dir = bin_dir();
    let path = dir.join(name);
    if path.is_file() { Ok(path) } else { Err(format!("{name} not found in {}: run `make k8s-bin`", dir.display())) }
}

/// `$ITO_TEST_BIN_DIR`, or else the cache directory the Makefile uses, named by the versions
/// pinned in `tests/tools/*/go.mod`, so that a plain `cargo test` finds the same binaries.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let pin =
        |tool: &str, module: &str| pinned_version(tool, module).unwrap_or_else(|e| panic!("{e}; or set {BIN_DIR_ENV}"));
    PathBuf::from(home).join(".cache/imaging-tenant-operator/bin").join(format!(
        "k8s-{}-etcd-{}-helm-{}",
        pin("kubernetes", "k8s.io/kubernetes"),
        pin("etcd", "go.etcd.io/etcd/server/v3"),
        pin("helm", "helm.sh/helm/v3"),
    ))
}

pub(crate) fn pinned_version(tool: &str, module: &str) -> Result<String, String> {
    let path = super::repo_root().join("tests/tools").join(tool).join("go.mod");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["require", m, version, ..] | [m, version, ..] if *m == module => Some(version.to_string()),
                _ => None,
            }
        })
        .ok_or_else(|| format!("no `require {module}` in {}", path.display()))
}

fn start_on_own_thread() -> Result<ControlPlane, String> {
    let started = Instant::now();
    let thread = std::thread::Builder::new()
        .name("ito-control-plane-start".into())
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("build a runtime for the control plane start-up: {e}"))?
                .block_on(start())
        })
        .map_err(|e| format!("spawn the control plane start-up thread: {e}"))?;
    let result = thread.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(format!("control plane start-up panicked: {message}"))
    });
    match result {
        Ok(control_plane) => {
            eprintln!("test control plane ready in {:.1?}", started.elapsed());
            Ok(control_plane)
        }
        Err(message) => Err(format!("{message}\n{}", super::process::KEEP_HINT)),
    }
}

async fn start() -> Result<ControlPlane, String> {
    let etcd_bin = tool_path("etcd")?;
    let apiserver_bin = tool_path("kube-apiserver")?;
    let controller_manager_bin = tool_path("kube-controller-manager")?;

    let dir = scratch_dir("control-plane");
    let pki = write_pki(&dir)?;

    let (etcd, etcd_port) = with_fresh_ports("etcd", || start_etcd(&etcd_bin, &dir))?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");

    let mut attempt = 0;
    let (apiserver, server, kubeconfig, config) = loop {
        attempt += 1;
        let port = free_port();
        let process = start_apiserver(&apiserver_bin, &dir, &pki, &etcd_url, port)?;
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = write_kubeconfig(
            &dir.join("kubeconfig"),
            &server,
            &pki,
            "ito-test-admin",
            &pki.admin_cert,
            &pki.admin_key,
        )?;
        let config = load_config(&kubeconfig).await?;
        match wait_apiserver_ready(&process, &config).await {
            Ok(()) => break (process, server, kubeconfig, config),
            Err(Failure::PortInUse(_)) if attempt < PORT_ATTEMPTS => continue,
            Err(failure) => return Err(failure.into_message()),
        }
    };

    let cm_kubeconfig = write_kubeconfig(
        &dir.join("controller-manager.kubeconfig"),
        &server,
        &pki,
        "system:kube-controller-manager",
        &pki.controller_manager_cert,
        &pki.controller_manager_key,
    )?;
    let controller_manager = start_controller_manager(&controller_manager_bin, &dir, &pki, &cm_kubeconfig)?;
    wait_controller_manager_ready(&controller_manager, &config).await?;

    Ok(ControlPlane { dir, kubeconfig, server, config, etcd, apiserver, controller_manager })
}

/// Why a component did not become ready.
enum Failure {
    /// It exited because a port was taken between choosing and binding it: retry.
    PortInUse(String),
    Other(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::PortInUse(message) | Failure::Other(message) => message,
        }
    }
}

fn with_fresh_ports<T>(what: &str, mut start: impl FnMut() -> Result<T, Failure>) -> Result<T, String> {
    for _ in 1..PORT_ATTEMPTS {
        match start() {
            Err(Failure::PortInUse(message)) => {
                eprintln!("{what}: port taken, retrying: {message}")
            }
            other => return other.map_err(Failure::into_message),
        }
    }
    start().map_err(Failure::into_message)
}

/// Explains why `process` is not ready: it exited (with its log), or `last_seen`.
fn check_exited(process: &ManagedProcess, last_seen: &str) -> Result<(), Failure> {
    let Some(status) = process.exit_status() else {
        return Ok(());
    };
    let tail = process.log_tail(LOG_TAIL_LINES);
    let message = format!(
        "{} exited with {status} before it was ready (last seen: {last_seen}); log {}:\n{tail}",
        process.name(),
        process.log_path().display()
    );
    if tail.contains("address already in use") {
        Err(Failure::PortInUse(message))
    } else {
        Err(Failure::Other(message))
    }
}

fn not_ready_in_time(process: &ManagedProcess, last_seen: &str) -> Failure {
    // Kill it now, so a retry or the next test does not race a half-started process.
    process.kill();
    Failure::Other(format!(
        "{} was not ready within {STARTUP_TIMEOUT:?} (last seen: {last_seen}); log {}:\n{}",
        process.name(),
        process.log_path().display(),
        process.log_tail(LOG_TAIL_LINES)
    ))
}

fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Result<ManagedProcess, Failure> {
    let mut command = Command::new(bin);
    command.args(args).current_dir(dir);
    let log = dir.join(format!("{name}.log"));
    spawn_managed(name, command, &log).map_err(|e| Failure::Other(format!("start {}: {e}", bin.display())))
}

fn start_etcd(bin: &Path, dir: &Path) -> Result<(ManagedProcess, u16), Failure> {
    let client_port = free_port();
    let peer_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.join(format!("etcd-data-{client_port}"));
    let args = [
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // Test data is thrown away; fsync would only make every write slow.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ];
    let process = spawn("etcd", bin, &args, dir)?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let last_seen = match http_request("GET", client_port, "/health") {
            Ok((200, body)) if body.contains("\"health\":\"true\"") => {
                return Ok((process, client_port));
            }
            Ok((status, body)) => format!("/health answered {status}: {}", body.trim()),
            Err(e) => e,
        };
        check_exited(&process, &last_seen)?;
        if Instant::now() >= deadline {
            return Err(not_ready_in_time(&process, &last_seen));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_apiserver(bin: &Path, dir: &Path, pki: &Pki, etcd_url: &str, port: u16) -> Result<ManagedProcess, String> {
    let cert_dir = dir.join("apiserver-certs");
    let path = |p: &Path| p.display().to_string();
    let args = [
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        // The `kubernetes` Service's endpoints would point at loopback, which validation
        // rejects; nothing in the tests needs them.
        "--advertise-address=127.0.0.1".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--cert-dir={}", path(&cert_dir)),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-account-key-file={}", path(&pki.service_account_public_key)),
        format!("--service-account-signing-key-file={}", path(&pki.service_account_key)),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
    ];
    spawn("kube-apiserver", bin, &args, dir).map_err(Failure::into_message)
}

fn write_kubeconfig(
    file: &Path,
    server: &str,
    pki: &Pki,
    user: &str,
    cert: &Path,
    key: &Path,
) -> Result<PathBuf, String> {
    let path = |p: &Path| p.display().to_string();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "ito-test",
            "cluster": { "server": server, "certificate-authority": path(&pki.ca_cert) },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate": path(cert),
                "client-key": path(key),
            },
        }],
        "contexts": [{
            "name": "ito-test",
            "context": { "cluster": "ito-test", "user": user, "namespace": "default" },
        }],
        "current-context": "ito-test",
    });
    let file = file.to_path_buf();
    let yaml = serde_yaml::to_string(&kubeconfig).map_err(|e| format!("serialize the kubeconfig: {e}"))?;
    std::fs::write(&file, yaml).map_err(|e| format!("write {}: {e}", file.display()))?;
    Ok(file)
}

async fn load_config(kubeconfig: &Path) -> Result<kube::Config, String> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("read {}: {e}", kubeconfig.display()))?;
    kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("load {}: {e}", kubeconfig.display()))
}

async fn wait_apiserver_ready(process: &ManagedProcess, config: &kube::Config) -> Result<(), Failure> {
    let mut probe_config = config.clone();
    probe_config.read_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(probe_config)
        .map_err(|e| Failure::Other(format!("build a client for the API server: {e}")))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let request = http::Request::get("/readyz?verbose").body(Vec::new()).expect("a valid request");
        let last_seen = match client.request_text(request).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) => {
                // The verbose answer lists every check; keep only the failing ones.
                let failing: Vec<&str> = status.message.lines().filter(|l| l.starts_with("[-]")).collect();
                if failing.is_empty() {
                    format!("/readyz answered {}: {}", status.code, status.message.trim())
                } else {
                    format!("/readyz answered {}: {}", status.code, failing.join(", "))
                }
            }
            Err(e) => e.to_string(),
        };
        check_exited(process, &last_seen)?;
        if Instant::now() >= deadline {
            return Err(not_ready_in_time(process, &last_seen));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_controller_manager(bin: &Path, dir: &Path, pki: &Pki, kubeconfig: &Path) -> Result<ManagedProcess, String> {
    let path = |p: &Path| p.display().to_string();
    let args = [
        format!("--kubeconfig={}", path(kubeconfig)),
        "--controllers=*".into(),
        format!("--service-account-private-key-file={}", path(&pki.service_account_key)),
        format!("--root-ca-file={}", path(&pki.ca_cert)),
        // Each controller acts as its own ServiceAccount (namespace-controller,
        // generic-garbage-collector, ...), the identities the chart's admission policies name.
        "--use-service-account-credentials=true".into(),
        "--leader-elect=false".into(),
        // No serving port: nothing scrapes it, and it would be one more port to race for.
        "--secure-port=0".into(),
    ];
    spawn("kube-controller-manager", bin, &args, dir).map_err(Failure::into_message)
}

/// Ready once its service account controller has created `default/default`: that proves it is
/// connected and running controllers, which is what the tests rely on.
async fn wait_controller_manager_ready(process: &ManagedProcess, config: &kube::Config) -> Result<(), String> {
    let client =
        kube::Client::try_from(config.clone()).map_err(|e| format!("build a client for the API server: {e}"))?;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let last_seen = match service_accounts.get_opt("default").await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => "no service account default/default yet".to_owned(),
            Err(e) => e.to_string(),
        };
        check_exited(process, &last_seen).map_err(Failure::into_message)?;
        if Instant::now() >= deadline {
            return Err(not_ready_in_time(process, &last_seen).into_message());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
