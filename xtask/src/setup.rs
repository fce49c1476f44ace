//! `cargo xtask setup`: install what the tests need; skip what is there.

use std::path::Path;
use std::process::Command;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Folders whose npm packages the tests use.
const NPM_DIRS: &[&str] = &[
    "pkg",
    "wasm-tests/js",
    "js-examples/react",
    "js-examples/vue",
    "js-examples/e2e",
];

pub(crate) fn setup(root: &Path) -> Result<(), String> {
    wasm_target()?;
    wasm_bindgen_cli(root)?;
    cargo_fuzz()?;
    chromium()?;
    redis()?;
    python(root)?;
    npm(root, NPM_DIRS)?;
    Ok(())
}

/// The `websockets` release the foreign-peer tests use.
const WEBSOCKETS: &str = "websockets==15.0.1";

/// A Python venv in `target/pyenv` with `websockets`, for the tests'
/// foreign peers (`crates/steadfast-cli/tests/peers.py`).
pub(crate) fn python(root: &Path) -> Result<(), String> {
    let venv = crate::target_dir(root).join("pyenv");
    let python = venv.join("bin/python");
    let has = Command::new(&python)
        .args([
            "-c",
            "import websockets; assert websockets.__version__ == '15.0.1'",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        println!("xtask setup: python venv with {WEBSOCKETS} present");
        return Ok(());
    }
    crate::run(
        "python3 -m venv target/pyenv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    crate::run(
        "pip install websockets",
        Command::new(venv.join("bin/pip")).args(["install", "-q", WEBSOCKETS]),
    )
}

pub(crate) const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Debian's redis-server, for the Redis session store's tests (each starts
/// its own instance on a free loopback port; the package's service is
/// not used).
pub(crate) fn redis() -> Result<(), String> {
    if Path::new(REDIS_SERVER).exists() {
        println!("xtask setup: redis-server present");
        return Ok(());
    }
    crate::run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    crate::run(
        "apt-get install redis-server",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn wasm_target() -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == crate::WASM) {
        println!("xtask setup: {} target present", crate::WASM);
        return Ok(());
    }
    crate::run(
        "rustup target add wasm32-unknown-unknown",
        Command::new("rustup").args(["target", "add", crate::WASM]),
    )
}

/// The exact wasm-bindgen version pinned in the workspace Cargo.toml.
pub(crate) fn pinned_wasm_bindgen(root: &Path) -> Result<String, String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("read Cargo.toml: {e}"))?;
    manifest
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("wasm-bindgen = \"=")?;
            Some(rest.split('"').next()?.to_owned())
        })
        .ok_or_else(|| "Cargo.toml does not pin wasm-bindgen as `wasm-bindgen = \"=X.Y.Z\"`".into())
}

pub(crate) fn wasm_bindgen_cli(root: &Path) -> Result<(), String> {
    let version = pinned_wasm_bindgen(root)?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasm-bindgen\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_owned());
    if let Some(locked) = locked {
        if locked != version {
            return Err(format!(
                "Cargo.lock has wasm-bindgen {locked} but Cargo.toml pins {version}"
            ));
        }
    }
    cargo_install(
        "wasm-bindgen-cli",
        &version,
        &["wasm-bindgen-test-runner", "--version"],
    )
}

/// Unless `probe` (a command printing `NAME VERSION`) shows `version`:
/// `cargo install KRATE --version V --locked`, and without `--locked` if
/// that fails (a locked dependency version the registry no longer has).
fn cargo_install(krate: &str, version: &str, probe: &[&str]) -> Result<(), String> {
    let have = probe
        .split_first()
        .and_then(|(program, args)| output(program, args))
        .unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(version) {
        println!("xtask setup: {krate} {version} present");
        return Ok(());
    }
    let install = |locked: bool| {
        let mut command = Command::new("cargo");
        command.args(["install", krate, "--version", version, "--force"]);
        if locked {
            command.arg("--locked");
        }
        crate::run(
            &format!("cargo install {krate} --version {version} (locked: {locked})"),
            &mut command,
        )
    };
    install(true).or_else(|_| install(false))
}

/// cargo-fuzz, for `cargo xtask fuzz` and the short fuzz runs in `test`.
const CARGO_FUZZ: &str = "0.13.2";

pub(crate) fn cargo_fuzz() -> Result<(), String> {
    cargo_install("cargo-fuzz", CARGO_FUZZ, &["cargo", "fuzz", "--version"])
}

pub(crate) fn chromium() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        println!("xtask setup: chromium and chromedriver present");
        return Ok(());
    }
    crate::run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    crate::run(
        "apt-get install chromium chromium-driver",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `npm ci` (or `npm install` without a lock) in each of `dirs` whose
/// installed packages are older than its lock file.
pub(crate) fn npm(root: &Path, dirs: &[&str]) -> Result<(), String> {
    for dir in dirs {
        let dir = root.join(dir);
        let manifest = dir.join("package.json");
        if !manifest.exists() {
            continue;
        }
        let lock = dir.join("package-lock.json");
        let stamp = dir.join("node_modules/.package-lock.json");
        let fresh = match (
            modified(&lock).or_else(|| modified(&manifest)),
            modified(&stamp),
        ) {
            (Some(wanted), Some(installed)) => installed >= wanted,
            _ => false,
        };
        if fresh {
            println!("xtask setup: npm packages in {} present", dir.display());
            continue;
        }
        let verb = if lock.exists() { "ci" } else { "install" };
        crate::run(
            &format!("npm {verb} in {}", dir.display()),
            Command::new("npm")
                .args([verb, "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}
