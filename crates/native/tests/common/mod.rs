//! Helpers shared by the `qzhou` CLI tests.
#![allow(dead_code)] // each test file uses a subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the built `qzhou` with `args`.
pub fn qzhou(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qzhou"))
        .args(args)
        .output()
        .expect("run qzhou")
}

/// The stdout of a successful run; panics with its stderr otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "qzhou failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
