//! Helpers of the chart and manifest tests: the pinned helm, kubectl, and YAML documents.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{repo_root, scratch_dir, tool_path};

pub const CHART: &str = "charts/imaging-tenant-operator";
pub const CRD_FILE: &str = "imagingtenants.imaging.tenancy.dev.yaml";
pub const MINIMAL_VALUES: &str = "charts/imaging-tenant-operator/ci/minimal-values.yaml";
pub const FULL_VALUES: &str = "charts/imaging-tenant-operator/ci/full-values.yaml";
/// The full values enable a ServiceMonitor, whose kind a plain `helm template` does not know.
pub const SERVICE_MONITOR_API: &str = "monitoring.coreos.com/v1/ServiceMonitor";

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The two Helm majors the chart supports, as the binaries `make k8s-bin` builds: Helm 3 and
/// Helm 4.
pub const HELMS: [&str; 2] = ["helm", "helm4"];

/// The pinned Helm 3 (`make k8s-bin`), with its cache and configuration in a scratch directory so
/// tests never read or write the user's.
pub fn helm() -> Command {
    helm_named("helm")
}

/// The pinned Helm 4 (`make k8s-bin`), likewise.
pub fn helm4() -> Command {
    helm_named("helm4")
}

/// One of [`HELMS`], with a scratch home of its own.
pub fn helm_named(binary: &str) -> Command {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| scratch_dir("helm-home")).join(binary);
    let mut cmd = Command::new(tool_path(binary).unwrap_or_else(|e| panic!("{e}")));
    cmd.current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// kubectl from `ITO_TEST_KUBECTL` or the PATH (only its `kustomize` and `apply` are used).
pub fn kubectl() -> Command {
    let path = std::env::var_os("ITO_TEST_KUBECTL").unwrap_or_else(|| "kubectl".into());
    let mut cmd = Command::new(path);
    cmd.current_dir(repo_root());
    cmd
}

/// Runs `cmd` (with `stdin` if given) and returns its output, whatever its exit status.
pub fn output(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        let input = input.to_owned();
        // Written from a thread, so a child that fills its stdout pipe first cannot deadlock us.
        std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait for {what}: {e}"))
}

/// Runs `cmd` and returns its stdout; panics with stderr when it fails.
pub fn run(cmd: Command, stdin: Option<&str>) -> String {
    let what = format!("{cmd:?}");
    let out = output(cmd, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed with {}:\n{stderr}\n{stdout}", out.status);
    stdout
}

/// The Kubernetes version of the pinned control plane (`v1.37.2`). `helm template` renders for
/// it: a helm built from source assumes v1.20 unless told, and the chart needs 1.30 or newer.
pub fn kube_version() -> String {
    crate::control_plane::pinned_version("kubernetes", "k8s.io/kubernetes").unwrap_or_else(|e| panic!("{e}"))
}

/// `helm template --kube-version <pinned>`, to which the caller adds its arguments.
pub fn helm_template_command() -> Command {
    helm_template_command_of("helm")
}

/// The same with one of [`HELMS`].
pub fn helm_template_command_of(binary: &str) -> Command {
    let mut cmd = helm_named(binary);
    cmd.args(["template", "--kube-version", &kube_version()]);
    cmd
}

/// `helm template <args>`.
pub fn helm_template(args: &[&str]) -> String {
    let mut cmd = helm_template_command();
    cmd.args(args);
    run(cmd, None)
}

/// Every non-empty document of a YAML stream, as JSON.
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("parse YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn kind_of(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one object of `kind` (panics unless there is exactly one).
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind_of(d) == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

/// The object of `kind` named `name` (panics if there is none).
pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| kind_of(d) == kind && name_of(d) == name).unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// The `args` of the `DEPLOY_TEMPLATE_ARGS := ...` line of the Makefile: how `make
/// deploy-manifests` renders deploy/manifests/operator.yaml (`$(K8S_VERSION)` is the pinned
/// Kubernetes version).
pub fn deploy_template_args() -> Vec<String> {
    let makefile = read("Makefile");
    let line = makefile
        .lines()
        .find_map(|l| l.strip_prefix("DEPLOY_TEMPLATE_ARGS :="))
        .expect("a `DEPLOY_TEMPLATE_ARGS := ...` line in the Makefile");
    let kube_version = kube_version();
    line.split_whitespace().map(|arg| arg.replace("$(K8S_VERSION)", &kube_version)).collect()
}

/// A YAML stream without the comment lines that precede its first document.
pub fn without_leading_comments(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with('#') {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest
}
