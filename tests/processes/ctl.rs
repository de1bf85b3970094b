//! `rainkv-ctl` as a user runs it, for the process tests that drive a cluster with it
//! (included with `#[path]` by those alone).

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `rainkv-ctl --config CONFIG --timeout SECS ARGS...` to completion.
pub fn ctl(config: &Path, timeout_secs: u32, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rainkv-ctl"))
        .arg("--config")
        .arg(config)
        .args(["--timeout", &timeout_secs.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rainkv-ctl")
}

/// Bytes a child printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
