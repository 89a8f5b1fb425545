//! deploy/Dockerfile cannot rot silently although CI has no Docker engine: this test runs the
//! `RUN cargo build ...` of the build stage of this machine's platform word for word, on a copy
//! of exactly the files the stage copies, and checks that the result is the static executable
//! the final stage copies; it checks that there is a build stage for linux/amd64 and one for
//! linux/arm64, each building its own musl target; and that the final stage is a distroless (or
//! scratch) image with a non-root user and nothing to run at build time.
//!
//! It is a release build of the whole tree: slow. Needs `make image-build-deps` (the musl
//! target and musl-gcc).

use std::path::{Path, PathBuf};
use std::process::Command;

const DOCKERFILE: &str = "deploy/Dockerfile";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One `FROM` stage: its image, its name, and its instructions (continuations joined).
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions.iter().filter(move |(k, _)| k == keyword).map(|(_, v)| v.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in joined {
        let (keyword, rest) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_uppercase();
        let rest = rest.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage { image: words[0].to_owned(), name, instructions: Vec::new() });
        } else {
            stages.last_mut().expect("an instruction before the first FROM").instructions.push((keyword, rest));
        }
    }
    stages
}

/// Copies `source` (a file or a directory) to `target`, and records every file copied. A file
/// whose content is already there is left alone, so its modification time, and with it cargo's
/// fingerprint, stays: an unchanged tree is not rebuilt.
fn copy(source: &Path, target: &Path, copied: &mut Vec<PathBuf>) {
    if source.is_dir() {
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &target.join(entry.file_name()), copied);
        }
    } else {
        let bytes = std::fs::read(source).unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        if std::fs::read(target).ok().as_ref() != Some(&bytes) {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(target, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
        }
        copied.push(target.to_owned());
    }
}

/// Removes every file under `dir` that is not in `keep`.
fn remove_others(dir: &Path, keep: &[PathBuf]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            remove_others(&path, keep);
            if std::fs::read_dir(&path).unwrap().next().is_none() {
                std::fs::remove_dir(&path).unwrap();
            }
        } else if !keep.contains(&path) {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Where a path of the build stage lands in `context`, given the stage's WORKDIR.
fn in_context(context: &Path, workdir: &str, path: &str) -> PathBuf {
    let relative = match path.strip_prefix(workdir) {
        Some(rest) => rest.trim_start_matches('/'),
        None if path.starts_with('/') => panic!("{path} is outside the build stage's WORKDIR {workdir}"),
        None => path,
    };
    context.join(relative.trim_start_matches("./"))
}

/// The ELF program headers' types, and the shared libraries named in the dynamic section.
fn elf_interp_and_needed(binary: &[u8]) -> (bool, usize) {
    assert!(binary.len() > 64 && &binary[..4] == b"\x7fELF", "not an ELF file");
    assert_eq!(binary[4], 2, "not a 64-bit ELF file");
    assert_eq!(binary[5], 1, "not a little-endian ELF file");
    let u16_at = |o: usize| u16::from_le_bytes(binary[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(binary[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(binary[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: usize = 1;
    let mut interp = false;
    let mut needed = 0;
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        match u32_at(header) {
            PT_INTERP => interp = true,
            PT_DYNAMIC => {
                let (offset, size) = (u64_at(header + 0x08), u64_at(header + 0x20));
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry) {
                        0 => break,
                        DT_NEEDED => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn final_stage_is_distroless_non_root_and_runs_nothing() {
    let stages = stages(&std::fs::read_to_string(repo().join(DOCKERFILE)).unwrap());
    assert!(stages.len() >= 2, "{DOCKERFILE} is multi-stage");
    let last = stages.last().unwrap();
    assert!(
        last.image.starts_with("gcr.io/distroless/static") || last.image == "scratch",
        "the final image is distroless static or scratch, not {}",
        last.image
    );
    assert!(last.all("RUN").next().is_none(), "the final stage runs nothing (it has no shell)");
    let user = last.last("USER").expect("the final stage sets USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("USER is numeric, so runAsNonRoot can verify it");
    assert_ne!(uid, 0, "USER is not root");
    assert_eq!(uid, 65532, "USER matches the chart's runAsUser");
    let entrypoint = last.last("ENTRYPOINT").expect("an ENTRYPOINT");
    assert!(entrypoint.starts_with('['), "ENTRYPOINT in exec form (no shell): {entrypoint}");
    assert!(last.all("COPY").all(|c| c.starts_with("--from=")), "the final stage only copies from the build stage");
}

/// The musl target of each platform the image is built for, by `TARGETARCH`.
const PLATFORMS: [(&str, &str); 2] = [("amd64", "x86_64-unknown-linux-musl"), ("arm64", "aarch64-unknown-linux-musl")];

/// `stage` and the stages it is built on (`FROM <stage>`), the stage itself first.
fn lineage<'a>(stages: &'a [Stage], stage: &'a Stage) -> Vec<&'a Stage> {
    let mut chain = vec![stage];
    while let Some(parent) = stages.iter().find(|s| s.name.as_deref() == Some(chain.last().unwrap().image.as_str())) {
        chain.push(parent);
    }
    chain
}

/// The instructions `keyword` of a stage and of those it is built on, in build order.
fn inherited<'a>(chain: &[&'a Stage], keyword: &str) -> Vec<&'a str> {
    chain.iter().rev().flat_map(|s| s.all(keyword).collect::<Vec<_>>()).collect()
}

/// The `cargo build` command of `stage`, split into words, and its `--target`.
fn cargo_build(stage: &Stage) -> (&str, Vec<&str>, &str) {
    let command = stage
        .all("RUN")
        .find(|r| r.starts_with("cargo build"))
        .unwrap_or_else(|| panic!("a `RUN cargo build ...` line in stage {:?}", stage.name));
    let argv: Vec<&str> = command.split_whitespace().collect();
    let target = argv.iter().position(|a| *a == "--target").map(|i| argv[i + 1]).expect("cargo build --target");
    (command, argv, target)
}

#[test]
fn every_platform_has_a_build_stage_for_its_musl_target() {
    let stages = stages(&std::fs::read_to_string(repo().join(DOCKERFILE)).unwrap());
    for (arch, expected) in PLATFORMS {
        let name = format!("build-{arch}");
        let stage = stages.iter().find(|s| s.name.as_deref() == Some(name.as_str())).unwrap_or_else(|| {
            panic!("a build stage for linux/{arch} (FROM ... AS {name})");
        });
        let (_, argv, target) = cargo_build(stage);
        assert_eq!(target, expected, "{name} builds for its own platform");
        for flag in ["--release", "--locked"] {
            assert!(argv.contains(&flag), "{name}: cargo build {flag}");
        }
        let chain = lineage(&stages, stage);
        assert!(
            inherited(&chain, "RUN").iter().any(|r| r.contains(&format!("rustup target add {target}"))),
            "{name} installs the target it builds for"
        );
    }
    let alias = stages.iter().find(|s| s.name.as_deref() == Some("build")).expect("a stage named build");
    assert_eq!(alias.image, "build-${TARGETARCH}", "the build stage is the one of the platform being built");
    assert!(alias.instructions.is_empty(), "the build stage only selects: {:?}", alias.instructions);
}

#[test]
fn build_stage_builds_a_static_binary() {
    let dockerfile = std::fs::read_to_string(repo().join(DOCKERFILE)).unwrap();
    let stages = stages(&dockerfile);
    let build_name = "build";
    // The build stage of this machine's platform.
    let (arch, host_target) = PLATFORMS
        .iter()
        .find(|(_, target)| target.starts_with(&format!("{}-", std::env::consts::ARCH)))
        .unwrap_or_else(|| panic!("the image is built for amd64 and arm64, not {}", std::env::consts::ARCH));
    let stage_name = format!("build-{arch}");
    let stage =
        stages.iter().find(|s| s.name.as_deref() == Some(stage_name.as_str())).expect("the platform's build stage");
    let chain = lineage(&stages, stage);
    let build = *chain.last().unwrap();

    // The Rust image is new enough for the crate.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let required = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("rust-version in Cargo.toml");
    let version = |v: &str| -> Vec<u32> { v.split(['.', '-']).map_while(|p| p.parse().ok()).collect() };
    let image_version = build.image.strip_prefix("rust:").expect("the build stage is FROM rust:<version>");
    assert!(version(image_version) >= version(&required), "{} is older than rust-version {required}", build.image);

    let (command, argv, target) = cargo_build(stage);
    assert_eq!(target, *host_target, "{stage_name} builds for its own platform");

    // A build context holding exactly what the build stage copies. Cargo's output goes beside
    // it and stays between runs, so the dependencies are not rebuilt every time.
    let workdir = *inherited(&chain, "WORKDIR").last().expect("the build stage sets WORKDIR");
    // `make test` points this into its cache directory, which outlives checkouts (CI clones the
    // repository afresh): the release build of the dependencies is then done once per machine.
    let target_dir =
        std::env::var_os("ITO_IMAGE_BUILD_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target/image-build"));
    let context = target_dir.join("context");
    std::fs::create_dir_all(&context).unwrap();
    let mut copied = Vec::new();
    for instruction in inherited(&chain, "COPY") {
        let words: Vec<&str> = instruction.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let (destination, sources) = words.split_last().expect("COPY <sources> <destination>");
        let into_dir = sources.len() > 1 || destination.ends_with('/') || *destination == ".";
        for source in sources {
            let from = repo().join(source);
            let to = in_context(&context, workdir, destination);
            let to = if into_dir { to.join(Path::new(source).file_name().unwrap()) } else { to };
            copy(&from, &to, &mut copied);
        }
    }
    remove_others(&context, &copied);

    let started = std::time::Instant::now();
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(in_context(&context, workdir, workdir))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo");
    eprintln!("`{command}` took {:.0?}", started.elapsed());
    assert!(
        status.success(),
        "`{command}` from {DOCKERFILE} failed ({status}); for the musl target and musl-gcc run `make image-build-deps`"
    );

    // The binary the final stage copies is there, static and runnable.
    let last = stages.last().unwrap();
    let copy_binary = last
        .all("COPY")
        .find(|c| c.starts_with(&format!("--from={build_name} ")))
        .expect("the final stage copies from the build stage");
    let built = copy_binary.split_whitespace().nth(1).expect("COPY --from=build <path> <destination>");
    let in_target = built
        .strip_prefix(&format!("{}/target/", workdir.trim_end_matches('/')))
        .expect("the final stage copies from the build stage's <WORKDIR>/target");
    // `*-unknown-linux-musl`: the one target directory of the platform's build.
    let in_target: String = in_target
        .split('/')
        .map(|part| {
            if part.contains('*') {
                let (head, tail) = part.split_once('*').unwrap();
                assert!(host_target.starts_with(head) && host_target.ends_with(tail), "{built} matches {host_target}");
                host_target.to_string()
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let binary = target_dir.join(in_target);
    let bytes =
        std::fs::read(&binary).unwrap_or_else(|e| panic!("{} (copied by the final stage): {e}", binary.display()));
    let (interp, needed) = elf_interp_and_needed(&bytes);
    assert!(!interp, "{} asks for a dynamic loader (PT_INTERP): not static", binary.display());
    assert_eq!(needed, 0, "{} needs shared libraries (DT_NEEDED): not static", binary.display());
    let out = Command::new(&binary).arg("--help").output().expect("run the static binary");
    assert!(out.status.success(), "{} --help: {out:?}", binary.display());
    assert!(String::from_utf8_lossy(&out.stdout).contains("run"), "the binary has the run command");
}
