//! `cargo xtask fuzz [SECONDS]`: run every cargo-fuzz target in `fuzz/`.
//!
//! Runs on the stable toolchain with `--sanitizer none` (the core forbids
//! `unsafe`, so AddressSanitizer has nothing of ours to check; debug
//! assertions and overflow checks stay on). The corpus grows under
//! `fuzz/corpus/` (git-ignored); a crash lands in `fuzz/artifacts/`.

use std::path::Path;
use std::process::Command;

/// The targets in fuzz/Cargo.toml.
pub(crate) const TARGETS: &[&str] = &["frame", "stored_session", "stored_message", "engine"];

/// The command that fuzzes `target` for `seconds`.
pub(crate) fn command(root: &Path, target: &str, seconds: u64) -> Command {
    let mut command = crate::cargo(
        root,
        &["fuzz", "run", "--sanitizer", "none", "--target-dir"],
    );
    command
        .current_dir(root.join("fuzz"))
        .arg(crate::target_dir(root).join("fuzz"))
        .args([
            target,
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ]);
    command
}

pub(crate) fn fuzz(root: &Path, seconds: u64) -> Result<(), String> {
    crate::setup::cargo_fuzz()?;
    for target in TARGETS {
        println!("xtask fuzz: {target} for {seconds} s");
        let status = command(root, target, seconds)
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        if !status.success() {
            return Err(format!(
                "fuzz target {target} failed; the input is in fuzz/artifacts/{target}/"
            ));
        }
    }
    Ok(())
}
