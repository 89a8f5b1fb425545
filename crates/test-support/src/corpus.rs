//! The manifest corpus: `invalid/*.yaml` (one mistake each) and `transitions/<case>.{old,new}.yaml`
//! (an update the cluster must refuse, or accept). Each file's first line is a comment
//! `# <the mistake> | expect: <part of the error message>`; `expect: accepted` marks a transition
//! that must pass. The valid examples are `deploy/examples/*.yaml`.

use std::fs;
use std::path::{Path, PathBuf};

/// `expect:` of a transition that must be accepted.
pub const ACCEPTED: &str = "accepted";

pub struct Case {
    pub name: String,
    pub path: PathBuf,
    pub mistake: String,
    pub expect: String,
    pub text: String,
}

pub struct Transition {
    pub name: String,
    pub mistake: String,
    /// `None`: the update must be accepted.
    pub expect: Option<String>,
    pub old: String,
    pub new: String,
}

/// Every invalid manifest, sorted by name.
pub fn invalid() -> Vec<Case> {
    yaml_files(&crate::repo_root().join("tests/fixtures/invalid"))
        .into_iter()
        .map(|path| {
            let text = read(&path);
            let (mistake, expect) = header(&path, &text);
            Case { name: stem(&path), path, mistake, expect, text }
        })
        .collect()
}

/// Every transition pair, sorted by name.
pub fn transitions() -> Vec<Transition> {
    yaml_files(&crate::repo_root().join("tests/fixtures/transitions"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".new.yaml"))
        .map(|new_path| {
            let name = stem(&new_path).trim_end_matches(".new").to_string();
            let old_path = new_path.with_file_name(format!("{name}.old.yaml"));
            let new = read(&new_path);
            let (mistake, expect) = header(&new_path, &new);
            Transition { name, mistake, expect: (expect != ACCEPTED).then_some(expect), old: read(&old_path), new }
        })
        .collect()
}

/// The examples in `deploy/examples`, which must be valid: (file name, path).
pub fn examples() -> Vec<(String, PathBuf)> {
    yaml_files(&crate::repo_root().join("deploy/examples")).into_iter().map(|p| (stem(&p), p)).collect()
}

fn header(path: &Path, text: &str) -> (String, String) {
    let first = text.lines().next().unwrap_or_default();
    let parsed = first
        .strip_prefix("# ")
        .and_then(|rest| rest.split_once(" | expect: "))
        .map(|(mistake, expect)| (mistake.trim().to_string(), expect.trim().to_string()));
    match parsed {
        Some((mistake, expect)) if !mistake.is_empty() && !expect.is_empty() => (mistake, expect),
        _ => panic!("{}: the first line must be `# <mistake> | expect: <message part>`", path.display()),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().expect("a file name").to_string_lossy().into_owned()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
