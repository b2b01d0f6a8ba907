//! Running child processes with useful error messages.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A shell-like rendering of `cmd` for messages.
pub fn describe(cmd: &Command) -> String {
    let line = etcd_standby_testkit::render_command(cmd);
    match cmd.get_current_dir() {
        Some(dir) => format!("{line} (in {})", dir.display()),
        None => line,
    }
}

/// Runs `cmd` with captured output; fails (with its stderr and stdout) unless
/// it exits successfully.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({})\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end(),
        );
    }
    Ok(out)
}

/// Runs `cmd` with inherited stdio; returns whether it succeeded. Errors only
/// if it cannot be started.
pub fn status(cmd: &mut Command) -> Result<bool> {
    let line = describe(cmd);
    eprintln!("xtask: $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        eprintln!("xtask: `{line}` failed ({status})");
    }
    Ok(status.success())
}

/// Runs `cmd` with inherited stdio and fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    if !status(cmd)? {
        bail!("`{}` failed", describe(cmd));
    }
    Ok(())
}

/// The `cargo` that invoked us (or the one on PATH).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Root of the workspace (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    etcd_standby_testkit::workspace_root()
}
