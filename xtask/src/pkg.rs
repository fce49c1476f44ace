//! `cargo xtask pkg`: build the npm package's wasm into `pkg/wasm/`, and
//! `cargo xtask size`: what a browser downloads for
//! `import { Steadfast } from "steadfast"`, gzipped.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::{cargo, WASM};

/// Build `steadfast-js` with the size-optimised profile, run the pinned
/// wasm-bindgen over it, then wasm-opt (`--target web`: ES modules that Vite, webpack and
/// Node.js load; `pkg/src/node.js` instantiates from the file).
pub(crate) fn build(root: &Path) -> Result<(), String> {
    crate::run(
        "build steadfast-js for wasm32",
        &mut cargo(
            root,
            &[
                "build",
                "--target",
                WASM,
                "-p",
                "steadfast-js",
                "--profile",
                "release-wasm",
            ],
        ),
    )?;
    let wasm = crate::target_dir(root)
        .join(WASM)
        .join("release-wasm/steadfast_js.wasm");
    let out = root.join("pkg/wasm");
    let _ = std::fs::remove_dir_all(&out);
    crate::run(
        "wasm-bindgen (cargo xtask setup installs it)",
        Command::new("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--remove-name-section",
                "--remove-producers-section",
                "--out-name",
                "steadfast",
                "--out-dir",
            ])
            .arg(&out)
            .arg(&wasm),
    )?;
    wasm_opt(root, &out.join("steadfast_bg.wasm"))?;
    println!("xtask pkg: built {}", out.display());
    Ok(())
}

/// `wasm-opt -Oz` in place, from the npm package `binaryen` (a devDependency
/// of `pkg/`, installed by `cargo xtask setup`). Debian's binaryen (108) is
/// too old: it breaks the externref table wasm-bindgen 0.2 emits.
fn wasm_opt(root: &Path, wasm: &Path) -> Result<(), String> {
    let tool = root.join("pkg/node_modules/binaryen/bin/wasm-opt");
    if !tool.exists() {
        return Err(format!(
            "{} is missing: run `cargo xtask setup` (npm ci in pkg/)",
            tool.display()
        ));
    }
    crate::run(
        "wasm-opt -Oz",
        Command::new("node")
            .arg(&tool)
            .args([
                "-Oz",
                // What rustc's wasm32 target emits and every engine we support runs.
                "--enable-reference-types",
                "--enable-bulk-memory",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-nontrapping-float-to-int",
                "--enable-multivalue",
                "-o",
            ])
            .arg(wasm)
            .arg(wasm),
    )
}

/// Gzipped size (level 9) of `bytes`.
fn gzipped(bytes: &[u8]) -> Result<usize, String> {
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("gzip has no stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("gzip failed: {e}"))?;
    let _ = writer.join();
    Ok(output.stdout.len())
}

/// The files a browser loads for `import { Steadfast } from "steadfast"`.
const BROWSER_FILES: &[&str] = &[
    "pkg/wasm/steadfast_bg.wasm",
    "pkg/wasm/steadfast.js",
    "pkg/src/browser.js",
    "pkg/src/steadfast.js",
];

/// One file a browser downloads: path, bytes, gzipped bytes.
pub(crate) type FileSize = (&'static str, usize, usize);

/// Build the package and measure each file a browser downloads.
pub(crate) fn measure(root: &Path) -> Result<Vec<FileSize>, String> {
    build(root)?;
    BROWSER_FILES
        .iter()
        .map(|file| {
            let bytes = std::fs::read(root.join(file)).map_err(|e| format!("{file}: {e}"))?;
            Ok((*file, bytes.len(), gzipped(&bytes)?))
        })
        .collect()
}

/// `cargo xtask size`: print the sizes and the total.
pub(crate) fn size(root: &Path) -> Result<(), String> {
    let files = measure(root)?;
    println!("{:<32} {:>10} {:>10}", "file", "bytes", "gzipped");
    for (file, raw, gz) in &files {
        println!("{file:<32} {raw:>10} {gz:>10}");
    }
    let raw: usize = files.iter().map(|f| f.1).sum();
    let gz: usize = files.iter().map(|f| f.2).sum();
    println!("{:<32} {:>10} {:>10}", "total", raw, gz);
    println!(
        "npm payload: {:.1} KiB gzipped (target: 25 KiB, aiming for 15 KiB)",
        gz as f64 / 1024.0
    );
    Ok(())
}
