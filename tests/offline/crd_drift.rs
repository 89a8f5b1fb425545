//! The checked-in CRD is exactly what `imaging-tenant-operator crd` prints, so what is installed
//! from `crds/` (and what `plan_apiserver` tests against) is what the code defines.

use std::path::Path;
use std::process::Command;

const CRD_FILE: &str = "crds/imagingtenants.imaging.tenancy.dev.yaml";

#[test]
fn the_checked_in_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE);
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; generate it with `make crds`", path.display()));
    let output = Command::new(env!("CARGO_BIN_EXE_imaging-tenant-operator"))
        .arg("crd")
        .output()
        .expect("run imaging-tenant-operator crd");
    assert!(output.status.success(), "imaging-tenant-operator crd failed");
    let generated = String::from_utf8(output.stdout).expect("the CRD is UTF-8");
    if checked_in != generated {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n  checked in: {a}\n  generated:  {b}", i + 1))
            .unwrap_or_else(|| {
                format!(
                    "one is a prefix of the other ({} and {} lines)",
                    checked_in.lines().count(),
                    generated.lines().count()
                )
            });
        panic!(
            "{CRD_FILE} differs from `imaging-tenant-operator crd`; regenerate it with `make crds` and commit it.\nFirst difference at {first_difference}"
        );
    }
}
