//! Child processes and scratch directories that cannot outlive the test binary.
//!
//! Three mechanisms, because no single one covers every way a test binary ends:
//!
//! - Every child gets `PR_SET_PDEATHSIG(SIGKILL)`. The kernel ties that signal to the *thread*
//!   that forked the child, not to the process, and libtest runs each test on a thread that ends
//!   with the test. So all children are forked by one spawner thread that lives as long as the
//!   process; the signal then fires only when the process itself dies, including by `SIGKILL`.
//! - An `atexit` handler kills and reaps the children and removes the scratch directories. Rust
//!   never drops statics, but both a normal return from `main` and `std::process::exit` (which
//!   libtest uses when a test failed) run `atexit` handlers.
//! - A process killed outright cannot remove its scratch directories, so the first one created
//!   by a later run removes those whose owning process is gone.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Prefix of every scratch directory; the owning process id follows it.
const SCRATCH_PREFIX: &str = "ito-test-";

/// Set to keep scratch directories (logs, certificates, etcd data) after the run for debugging.
pub const KEEP_ENV: &str = "ITO_TEST_KEEP_TMP";

/// Appended to start-up failures, whose messages name log files that are gone after the run.
pub const KEEP_HINT: &str = "(scratch directories are removed at exit; set ITO_TEST_KEEP_TMP=1 to keep them)";

struct SpawnRequest {
    name: String,
    command: Command,
    reply: mpsc::Sender<io::Result<u32>>,
}

struct Registry {
    spawner: mpsc::Sender<SpawnRequest>,
    children: Mutex<HashMap<u32, (String, Child)>>,
    scratch_dirs: Mutex<Vec<PathBuf>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| {
        let (spawner, requests) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ito-test-spawner".into())
            .spawn(move || spawn_loop(requests))
            .expect("start the test process spawner thread");
        // SAFETY: registers a plain `extern "C" fn` with no captured state.
        let registered = unsafe { libc::atexit(cleanup_at_exit) };
        assert_eq!(registered, 0, "register the test cleanup with atexit");
        Registry { spawner, children: Mutex::new(HashMap::new()), scratch_dirs: Mutex::new(Vec::new()) }
    })
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_loop(requests: mpsc::Receiver<SpawnRequest>) {
    for SpawnRequest { name, mut command, reply } in requests {
        let result = command.spawn().map(|child| {
            let pid = child.id();
            // Registered before anyone learns the pid, so no child is ever untracked.
            lock(&registry().children).insert(pid, (name, child));
            pid
        });
        let _ = reply.send(result);
    }
    // The sender lives in a static and is never dropped; should that change, this thread must
    // still not end, or the kernel would kill every child it forked.
    loop {
        std::thread::park();
    }
}

extern "C" fn cleanup_at_exit() {
    let Some(registry) = REGISTRY.get() else {
        return;
    };
    let mut children: Vec<(String, Child)> = lock(&registry.children).drain().map(|(_, c)| c).collect();
    for (_, child) in &mut children {
        let _ = child.kill();
    }
    for (_, child) in &mut children {
        let _ = child.wait();
    }
    let dirs = std::mem::take(&mut *lock(&registry.scratch_dirs));
    if std::env::var_os(KEEP_ENV).is_some() {
        for dir in &dirs {
            eprintln!("kept test scratch directory {}", dir.display());
        }
    } else {
        for dir in &dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A fresh directory under the system temp dir, removed when the test binary exits.
pub fn scratch_dir(label: &str) -> PathBuf {
    static STALE_REMOVED: OnceLock<()> = OnceLock::new();
    STALE_REMOVED.get_or_init(remove_stale_scratch_dirs);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-{label}-", std::process::id()))
        .tempdir()
        .expect("create a test scratch directory")
        .keep();
    lock(&registry().scratch_dirs).push(dir.clone());
    dir
}

/// Removes scratch directories left by test binaries that were killed before their cleanup ran.
fn remove_stale_scratch_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A child process that is killed when this handle is dropped or the test binary exits,
/// whichever comes first. Its stdout and stderr go to a log file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    exited: OnceLock<ExitStatus>,
}

/// Starts `command` with stdout and stderr appended to `log`, tied to the test binary's life.
pub fn spawn_managed(name: &str, mut command: Command, log: &Path) -> io::Result<ManagedProcess> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec, and no allocation.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the line above took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    registry()
        .spawner
        .send(SpawnRequest { name: name.to_owned(), command, reply })
        .expect("the test process spawner thread is running");
    let pid = result.recv().expect("the test process spawner thread answers")?;
    Ok(ManagedProcess { name: name.to_owned(), pid, log: log.to_owned(), exited: OnceLock::new() })
}

impl ManagedProcess {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status once the process has ended, `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        if let Some(status) = self.exited.get() {
            return Some(*status);
        }
        let mut children = lock(&registry().children);
        let (_, child) = children.get_mut(&self.pid)?;
        let status = child.try_wait().ok().flatten()?;
        children.remove(&self.pid);
        Some(*self.exited.get_or_init(|| status))
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Kills the process with SIGKILL and reaps it. Idempotent.
    pub fn kill(&self) {
        let entry = lock(&registry().children).remove(&self.pid);
        if let Some((_, mut child)) = entry {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                let _ = self.exited.set(status);
            }
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file, reading at most its final 64 KiB.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
