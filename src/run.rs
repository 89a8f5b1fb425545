//! `run`: the controller process.

use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {}

pub fn main(_args: RunArgs) -> ExitCode {
    ExitCode::from(2)
}
