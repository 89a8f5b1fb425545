//! Every relative link of the documentation leads somewhere: README.md, docs/*.md and the charts'
//! READMEs link to files that exist, and to headings that exist in Markdown files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ito_test_support::repo_root;

/// The Markdown files whose links are checked, relative to the repository root.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![PathBuf::from("README.md")];
    for dir in ["docs", "charts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if dir == "docs" && path.extension().is_some_and(|e| e == "md") {
                files.push(path.strip_prefix(root).unwrap().to_owned());
            }
            if dir == "charts" && path.is_dir() {
                for name in ["README.md", "readme.md"] {
                    if path.join(name).is_file() {
                        files.push(path.join(name).strip_prefix(root).unwrap().to_owned());
                    }
                }
            }
        }
    }
    files.sort();
    files
}

/// The Markdown outside fenced code blocks and inline code.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code holds no links: drop what is between backticks.
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                out.push_str(part);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of the inline links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        found.push(target.trim_matches(['<', '>']).to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped but '-' and '_', spaces to '-'.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the headings of a Markdown file, with GitHub's -1, -2 for repeated ones.
fn anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#').replace('`', "").as_str());
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

#[test]
fn every_relative_link_of_the_documentation_resolves() {
    let root = repo_root();
    let docs = documents();
    assert!(docs.len() >= 2, "README.md and docs/*.md: {docs:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for target in links(&prose(&text)) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').map_or((target.as_str(), None), |(p, a)| (p, Some(a)));
            let file = if path.is_empty() { root.join(doc) } else { root.join(doc).parent().unwrap().join(path) };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", doc.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&file).contains(anchor)
            {
                broken.push(format!("{}: {target}: no heading with that anchor", doc.display()));
            }
        }
    }
    assert!(checked > 10, "only {checked} relative links found: is the parser right?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_checker_knows_githubs_anchors() {
    assert_eq!(slug(" What a tenant admin can and cannot do"), "what-a-tenant-admin-can-and-cannot-do");
    assert_eq!(slug(" With GitOps"), "with-gitops");
    assert_eq!(slug(" Tests: real parts"), "tests-real-parts");
    assert_eq!(
        links("see [A](deploy/x.yaml) and [`b`](#b-c), [c](https://e.example)"),
        ["deploy/x.yaml", "#b-c", "https://e.example"]
    );
    assert_eq!(prose("a `[x](nope)` b\n```\n[y](nope)\n```\n"), "a  b\n");
}

/// Comments of the chart, the manifests, the Makefile and the sources cite documents by path
/// (a Markdown file under docs/); each must exist.
#[test]
fn every_cited_document_exists() {
    let root = repo_root();
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = ["charts", "deploy", "src", "crates", "tests"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("snapshots") {
                    dirs.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files.push(root.join("Makefile"));
    let mut missing = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (i, _) in text.match_indices("docs/") {
            let cited: String = text[i..].chars().take_while(|c| c.is_alphanumeric() || "/._-".contains(*c)).collect();
            let cited = cited.trim_end_matches('.');
            if cited.ends_with(".md") && !root.join(cited).is_file() {
                missing.push(format!("{}: {cited}", file.strip_prefix(root).unwrap().display()));
            }
        }
    }
    assert!(missing.is_empty(), "documents cited but missing:\n{}", missing.join("\n"));
}
