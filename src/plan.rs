//! `plan`: validate ImagingTenant manifests offline with the cluster's rules and print what the
//! operator would create.

use std::path::Path;
use std::process::ExitCode;

/// Settings `plan` renders with; what is not given is shown as a placeholder.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlanSettings {}

pub fn main(_file: &Path, _settings: &PlanSettings) -> ExitCode {
    ExitCode::from(2)
}
