//! A real AWS API emulator, `moto_server`, serving S3, KMS, IAM and STS on one loopback port.
//!
//! It runs through [`LAUNCHER`], which starts moto's server as `python -m moto.server` does and
//! makes CreateBucket apply the tags of its request, as S3 does and moto does not.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use super::net::{free_port, http_request};
use super::process::{ManagedProcess, scratch_dir, spawn_managed};

/// The Python interpreter that has `moto[server]` (set by `make test`).
pub const PYTHON_ENV: &str = "ITO_TEST_PYTHON";

/// The account moto reports for static credentials.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// moto's server with S3's CreateBucket tags, relative to the repository root.
pub const LAUNCHER: &str = "tests/tools/moto/moto_server.py";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: u32 = 3;

pub struct Moto {
    endpoint: String,
    process: ManagedProcess,
}

static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();

impl Moto {
    /// The moto server of this test binary, started by the first caller. Its state is shared
    /// by the binary's tests: use [`super::unique_name`] for buckets, roles and key aliases.
    pub async fn shared() -> &'static Moto {
        super::install_crypto_provider();
        let started = tokio::task::spawn_blocking(|| {
            SHARED.get_or_init(|| start().map_err(|e| format!("{e}\n{}", super::process::KEEP_HINT)))
        })
        .await
        .expect("wait for the moto start-up");
        match started {
            Ok(moto) => moto,
            Err(message) => panic!("{message}"),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration for moto: static credentials `testing`/`testing`, region `us-east-1`.
    /// S3 clients also need path-style addressing: use [`Moto::s3_client`].
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "moto",
            )))
            .endpoint_url(&self.endpoint)
            .build()
    }

    /// An S3 client with path-style addressing, since `<bucket>.127.0.0.1` does not resolve.
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config()).force_path_style(true).build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }
}

/// The Python of the tests' virtualenv (moto, parliament): `$ITO_TEST_PYTHON`, or the
/// virtualenv `make moto` builds.
pub fn test_python() -> String {
    std::env::var(PYTHON_ENV).unwrap_or_else(|_| pinned_python())
}

fn start() -> Result<Moto, String> {
    let python = test_python();
    let launcher = super::repo_root().join(LAUNCHER);
    let dir = scratch_dir("moto");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let mut command = Command::new(&python);
        command.arg(&launcher).args(["-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(&dir);
        let log = dir.join(format!("moto-{port}.log"));
        let process = spawn_managed("moto_server", command, &log).map_err(|e| {
            format!("start `{python} {}`: {e}: run `make moto` (pip install 'moto[server]')", launcher.display())
        })?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // Any HTTP answer means the server is up.
            let last_seen = match http_request("GET", port, "/moto-api/data.json") {
                Ok(_) => {
                    return Ok(Moto { endpoint: format!("http://127.0.0.1:{port}"), process });
                }
                Err(e) => e,
            };
            if let Some(status) = process.exit_status() {
                let tail = process.log_tail(40);
                if tail.contains("No module named") {
                    return Err(format!(
                        "moto is not installed for {python}: run `make moto` (pip install 'moto[server]'); log:\n{tail}"
                    ));
                }
                if tail.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                    break;
                }
                return Err(format!(
                    "moto_server exited with {status} before it answered; log {}:\n{tail}",
                    log.display()
                ));
            }
            if Instant::now() >= deadline {
                process.kill();
                return Err(format!(
                    "moto_server did not answer within {STARTUP_TIMEOUT:?} (last seen: {last_seen}); log {}:\n{}",
                    log.display(),
                    process.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(format!("moto_server found no free port in {PORT_ATTEMPTS} attempts"))
}

/// The Python of the virtualenv `make moto` builds for the version pinned in
/// `tests/tools/moto/requirements.txt`, so that a plain `cargo test` uses the same moto.
fn pinned_python() -> String {
    let requirements = super::repo_root().join("tests/tools/moto/requirements.txt");
    let version = std::fs::read_to_string(&requirements)
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("moto[server]==").map(|v| v.trim().to_string())))
        .unwrap_or_else(|| panic!("{} does not pin moto[server]", requirements.display()));
    let home = std::env::var("HOME").unwrap_or_default();
    let python = format!("{home}/.cache/imaging-tenant-operator/moto-{version}/bin/python");
    if !std::path::Path::new(&python).exists() {
        panic!("moto {version} is not installed at {python}: run `make moto` (or set {PYTHON_ENV})");
    }
    python
}
