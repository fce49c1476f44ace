//! `cargo xtask <command>`: the project's entry points. CI calls these and
//! nothing else.
//!
//! - `setup`: install what the tests need, skipping what is already there
//!   (the wasm32 target, wasm-bindgen-cli at the pinned version, Debian's
//!   chromium and chromium-driver, npm packages).
//! - `test`: setup, then fmt, clippy (native and wasm32), native tests, the
//!   wasm tests in Node.js, a headless Chromium page and a worker (against
//!   an echo server started here and stopped afterwards), then the npm
//!   package: built, type-checked, and its JS suite run in Node.js; then
//!   the React and Vue examples, built with Vite and driven in headless
//!   Chromium by playwright-core (screenshots in target/e2e-screenshots/).
//! - `demo`: start the reference server and a native client; show what
//!   happens; then build the React example and serve it next to the
//!   server on loopback (in a terminal, until Ctrl-C).
//! - `pkg`: build the npm package's wasm into `pkg/wasm/` (release-wasm
//!   profile, the pinned wasm-bindgen).
//! - `size`: `pkg`, then the gzipped bytes a browser downloads.
//! - `bench`: run the benchmarks and regenerate docs/BENCHMARKS.md
//!   (`--quick`: run each once, as `test` does, to prove they still work).
//! - `fuzz [SECONDS]`: run every fuzz target (default 60 s each; `test` runs
//!   each for 10 s).

#![allow(clippy::print_stdout)]

mod bench;
mod front;
mod fuzz;
mod pkg;
mod process;
mod serve;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use process::{run_step, ServerGuard, StepOutcome};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::setup(&root),
        Some("test") => test(&root),
        Some("demo") => demo(&root),
        Some("pkg") => pkg::build(&root),
        Some("size") => pkg::size(&root),
        Some("bench") => bench::bench(&root, args.iter().any(|a| a == "--quick")),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => fuzz::fuzz(&root, 60),
            Some(Ok(seconds)) => fuzz::fuzz(&root, seconds),
            Some(Err(_)) => {
                eprintln!("usage: cargo xtask fuzz [SECONDS]");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|test|demo|pkg|size|bench [--quick]|fuzz [SECONDS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // xtask/ sits directly in the workspace root.
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Run `command` to completion (`what` says what it is, in progress lines
/// and errors); an error unless it started and exited with success.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<(), String> {
    let started = Instant::now();
    println!("xtask: {what} ...");
    let status = command
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        println!(
            "xtask: {what} done in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root).args(args);
    command
}

/// Loopback port of the echo server the wasm tests talk to.
fn test_port() -> u16 {
    std::env::var("STEADFAST_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(47391)
}

/// A loopback port above `port` that nothing listens on right now.
fn free_port_after(port: u16) -> u16 {
    (port.saturating_add(1)..u16::MAX)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or(1)
}

const WASM: &str = "wasm32-unknown-unknown";

fn test(root: &Path) -> Result<(), String> {
    let started = Instant::now();
    setup::setup(root)?;
    println!(
        "xtask: setup done in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut outcomes: Vec<StepOutcome> = Vec::new();
    let mut step = |name: &str, command: Command| -> bool {
        let outcome = run_step(name, command);
        let ok = outcome.ok;
        outcomes.push(outcome);
        ok
    };

    // Static checks: keep going after a failure so one run shows everything.
    step("fmt", cargo(root, &["fmt", "--all", "--check"]));
    step(
        "fmt fuzz",
        cargo(
            root,
            &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"],
        ),
    );
    step(
        "clippy native",
        cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
    );
    // Libraries for wasm32, and the wasm test suites (which include the
    // core's own test files).
    step(
        "clippy wasm32",
        cargo(
            root,
            &[
                "clippy",
                "--target",
                WASM,
                "--lib",
                "-p",
                "steadfast-core",
                "-p",
                "steadfast",
                "-p",
                "steadfast-js",
                "-p",
                "steadfast-testkit",
                "--",
                "-D",
                "warnings",
            ],
        ),
    );
    step(
        "clippy wasm32 tests",
        cargo(
            root,
            &[
                "clippy",
                "--target",
                WASM,
                "--tests",
                "-p",
                "steadfast-wasm-tests",
                "--",
                "-D",
                "warnings",
            ],
        ),
    );
    step("native tests", cargo(root, &["test", "--workspace"]));
    // Every benchmark once, small (their own checks hold): `cargo xtask
    // bench --quick`. Figures come from `cargo xtask bench`.
    match std::env::current_exe() {
        Ok(xtask) => {
            let mut smoke = Command::new(xtask);
            smoke.args(["bench", "--quick"]).current_dir(root);
            step("bench smoke", smoke);
        }
        Err(error) => println!("xtask: cannot find itself to run the benchmarks: {error}"),
    }
    for target in fuzz::TARGETS {
        step(
            &format!("fuzz {target} 10s"),
            fuzz::command(root, target, 10),
        );
    }
    // The README's other command must keep working: run it.
    match std::env::current_exe() {
        Ok(xtask) => {
            let mut demo = Command::new(xtask);
            demo.arg("demo").current_dir(root);
            step("demo", demo);
        }
        Err(error) => println!("xtask: cannot find itself to run the demo: {error}"),
    }

    // The wasm suites need the echo server; build it, start it, and make
    // sure it stops however this run ends.
    let built = step(
        "build echo server",
        cargo(
            root,
            &[
                "build",
                "-p",
                "steadfast-server",
                "--bin",
                "steadfast-server",
            ],
        ),
    );
    if built {
        let port = test_port();
        match ServerGuard::start(root, port) {
            Ok(server) => {
                let url = server.url().to_owned();
                let refused = format!("ws://127.0.0.1:{}", free_port_after(port));
                let wasm_test = |suite: &str| {
                    let mut command = cargo(
                        root,
                        &[
                            "test",
                            "--target",
                            WASM,
                            "-p",
                            "steadfast-wasm-tests",
                            "--test",
                            suite,
                        ],
                    );
                    command
                        .env("STEADFAST_ECHO_URL", &url)
                        .env("STEADFAST_REFUSED_URL", &refused)
                        .env("NODE_ARGS", "--experimental-websocket")
                        .env("CHROMEDRIVER", setup::CHROMEDRIVER)
                        .env("WASM_BINDGEN_TEST_TIMEOUT", "120");
                    command
                };
                step("wasm tests: node", wasm_test("node"));
                step("wasm tests: core in node", wasm_test("core"));
                step("wasm tests: chromium page", wasm_test("browser"));
                step("wasm tests: chromium worker", wasm_test("worker"));
                drop(server);
                if js_tests(root, &mut step) {
                    example_tests(root, &mut step);
                }
            }
            Err(message) => {
                eprintln!("xtask: {message}");
                outcomes.push(StepOutcome::failed("start echo server"));
            }
        }
    }

    println!();
    println!(
        "xtask test summary ({:.0}s):",
        started.elapsed().as_secs_f64()
    );
    let (mut passed, mut failed) = (0, 0);
    let mut steps_failed = 0;
    for outcome in &outcomes {
        println!(
            "  {:<28} {:<4} {:>4} passed {:>3} failed",
            outcome.name,
            if outcome.ok { "ok" } else { "FAIL" },
            outcome.passed,
            outcome.failed
        );
        passed += outcome.passed;
        failed += outcome.failed;
        if !outcome.ok {
            steps_failed += 1;
        }
    }
    if steps_failed > 0 && failed == 0 {
        // A failed step without failed tests (fmt, clippy, a build) still fails the run.
        failed = steps_failed;
    }
    println!("summary: {passed} passed, {failed} failed");
    if steps_failed == 0 {
        Ok(())
    } else {
        Err(format!("{steps_failed} step(s) failed"))
    }
}

/// The npm package: build it, type-check the declarations against a file
/// using every option, and run the JS suite (node:test) against the
/// reference server (each test file starts its own on loopback). False
/// when the package did not build.
fn js_tests(root: &Path, step: &mut impl FnMut(&str, Command) -> bool) -> bool {
    let xtask = match std::env::current_exe() {
        Ok(xtask) => xtask,
        Err(error) => {
            println!("xtask: cannot find itself to build the package: {error}");
            return false;
        }
    };
    let mut build = Command::new(xtask);
    build.arg("pkg").current_dir(root);
    if !step("build npm package", build) {
        return false;
    }
    let pkg = root.join("pkg");
    let mut typecheck = Command::new("npx");
    typecheck
        .args(["--no-install", "tsc", "-p", "test/tsconfig.json"])
        .current_dir(&pkg);
    step("npm package: tsc --noEmit", typecheck);
    // `timeout`: a leaked timer or socket keeps Node alive after the last
    // test; fail the step instead of hanging CI.
    let mut node = Command::new("timeout");
    node.args([
        "600",
        "node",
        "--experimental-websocket",
        "--no-warnings=ExperimentalWarning",
        "--test",
        "--test-reporter=tap",
        "test/",
    ])
    .env(
        "STEADFAST_SERVER",
        target_dir(root).join("debug/steadfast-server"),
    )
    .current_dir(&pkg);
    step("npm package: node tests", node);
    true
}

/// `vite build` of one example app (after `cargo xtask pkg`).
fn vite_build(root: &Path, app: &str) -> Command {
    let mut build = Command::new("npx");
    build
        .args(["--no-install", "vite", "build", "--logLevel", "warn"])
        .current_dir(root.join("js-examples").join(app));
    build
}

/// The React and Vue examples: built, then driven in headless Chromium by
/// playwright-core (js-examples/e2e) against the reference server, which
/// the suite starts, kills and restarts. Screenshots go to
/// target/e2e-screenshots/.
fn example_tests(root: &Path, step: &mut impl FnMut(&str, Command) -> bool) {
    let react = step("react example: vite build", vite_build(root, "react"));
    let vue = step("vue example: vite build", vite_build(root, "vue"));
    if !(react && vue) {
        return;
    }
    let target = target_dir(root);
    let mut e2e = Command::new("timeout");
    e2e.args([
        "900",
        "node",
        "--test",
        "--test-reporter=tap",
        "e2e.test.js",
    ])
    .env("STEADFAST_SERVER", target.join("debug/steadfast-server"))
    .env("STEADFAST_SCREENSHOTS", target.join("e2e-screenshots"))
    .env("CHROMIUM", setup::CHROMIUM)
    .current_dir(root.join("js-examples/e2e"));
    step("examples in chromium (playwright)", e2e);
}

fn demo(root: &Path) -> Result<(), String> {
    run(
        "build the demo",
        &mut cargo(
            root,
            &[
                "build",
                "--quiet",
                "-p",
                "steadfast-server",
                "-p",
                "steadfast-cli",
                "--bin",
                "steadfast-server",
                "--example",
                "echo_demo",
                "-p",
                "steadfast",
                "--example",
                "exactly_once",
            ],
        ),
    )?;
    // Port 0: the server picks a free port and tells us.
    let server = ServerGuard::start(root, 0)?;
    println!("demo: reference server listening on {}", server.url());
    let demo = target_dir(root).join("debug/examples/echo_demo");
    let status = Command::new(&demo)
        .arg(server.url())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", demo.display()))?;
    let stop = server.stop();
    println!("demo: server {stop}");
    if !status.success() {
        return Err("the demo client failed".into());
    }

    // Part two: the reliable client through a server that drops
    // connections (seeded: the same drops every run).
    let faults = ["--fault-seed", "7", "--fault-drop", "0.003"];
    let server = ServerGuard::start_with(root, 0, &faults)?;
    println!(
        "\ndemo: reference server at {} dropping connections ({})",
        server.url(),
        faults.join(" ")
    );
    let demo = target_dir(root).join("debug/examples/exactly_once");
    let status = Command::new(&demo)
        .args([server.url(), "3000"])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", demo.display()))?;
    let stop = server.stop();
    println!("demo: server {stop}");
    if !status.success() {
        return Err("the exactly-once demo failed".into());
    }
    crash_demo(root)?;
    cluster_demo(root)?;
    react_demo(root)
}

/// Part two and a half: the server on its default embedded session store,
/// killed with SIGKILL while the client streams, restarted on the same
/// port and data dir: the client resumes, nothing lost or duplicated.
fn crash_demo(root: &Path) -> Result<(), String> {
    let data = target_dir(root).join("demo-data");
    let _ = std::fs::remove_dir_all(&data);
    let data_arg = data.display().to_string();
    let flags = ["--sessions", "embedded", "--data-dir", data_arg.as_str()];
    let server = ServerGuard::start_with(root, 0, &flags)?;
    let port = server.port().ok_or("the server printed no port")?;
    println!(
        "\ndemo: reference server at {} with its sessions in {}",
        server.url(),
        data.display()
    );
    let demo = target_dir(root).join("debug/examples/exactly_once");
    // 2 a millisecond: a stream of about 1.5 s.
    let mut client = Command::new(&demo)
        .args([server.url(), "3000", "2"])
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", demo.display()))?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    server.kill9();
    println!("demo: server killed with SIGKILL mid-stream; restarting it on its data dir");
    let server = ServerGuard::start_with(root, port, &flags)?;
    let status = client
        .wait()
        .map_err(|e| format!("the client did not finish: {e}"))?;
    let stop = server.stop();
    println!("demo: server {stop}");
    let _ = std::fs::remove_dir_all(&data);
    if !status.success() {
        return Err("the server-crash demo failed".into());
    }
    Ok(())
}

/// Part two and three quarters: two nodes sharing their sessions in Redis
/// behind a TCP front (a load balancer); the node the client is on is
/// killed with SIGKILL mid-stream, the front sends it to the other node,
/// which resumes the session. Without a redis-server, says so and skips.
fn cluster_demo(root: &Path) -> Result<(), String> {
    let binary = Path::new(setup::REDIS_SERVER);
    if !binary.exists() {
        println!(
            "\ndemo: no {} here (`cargo xtask setup` installs it as root): \
             skipping the two-node part",
            binary.display()
        );
        return Ok(());
    }
    let dir = target_dir(root).join("demo-redis");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let mut redis = Command::new(binary)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let result = two_nodes(root, &format!("redis://127.0.0.1:{port}/0"));
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn two_nodes(root: &Path, redis: &str) -> Result<(), String> {
    // redis-server takes a moment to listen.
    let addr = redis.trim_start_matches("redis://").trim_end_matches("/0");
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("redis-server did not listen on {addr}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let flags = ["--redis", redis];
    let a = ServerGuard::start_named(root, "node-a", 0, &flags)?;
    let b = ServerGuard::start_named(root, "node-b", 0, &flags)?;
    let node = |guard: &ServerGuard| -> Result<std::net::SocketAddr, String> {
        let port = guard.port().ok_or("a node printed no port")?;
        Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let front = front::Front::start(node(&a)?)?;
    println!(
        "\ndemo: two nodes ({} and {}) sharing sessions in {redis}, behind a front at {}",
        a.url(),
        b.url(),
        front.url()
    );
    let demo = target_dir(root).join("debug/examples/exactly_once");
    let mut client = Command::new(&demo)
        .args([front.url().as_str(), "3000", "2"])
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", demo.display()))?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    front.switch(node(&b)?);
    a.kill9();
    println!("demo: node A killed with SIGKILL mid-stream; the front now sends clients to node B");
    let status = client
        .wait()
        .map_err(|e| format!("the client did not finish: {e}"))?;
    println!("demo: node B {}", b.stop());
    if !status.success() {
        return Err("the two-node demo failed".into());
    }
    Ok(())
}

/// Part three: the React example, built and served next to the reference
/// server on loopback. In a terminal, it runs until Ctrl-C (Enter stops
/// and restarts the server, to watch the page ride it out); otherwise it
/// checks the page and its wasm are served, and ends.
fn react_demo(root: &Path) -> Result<(), String> {
    use std::io::{BufRead, IsTerminal};

    println!("\ndemo: building the React example (js-examples/react) ...");
    setup::wasm_target()?;
    setup::wasm_bindgen_cli(root)?;
    setup::npm(root, &["pkg", "js-examples/react"])?;
    pkg::build(root)?;
    run(
        "vite build of js-examples/react",
        &mut vite_build(root, "react"),
    )?;
    let site = serve::serve_dir(&root.join("js-examples/react/dist"))?;
    let server = ServerGuard::start(root, 0)?;
    let ws = server.url().to_owned();
    let port: u16 = ws
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| format!("no port in {ws}"))?;
    let page = format!("{site}?server={ws}/");
    println!("demo: reference server at {ws}");
    println!("demo: open {page}");

    if !std::io::stdin().is_terminal() {
        // Not interactive (CI, a pipe): prove the page would load, then stop.
        let (status, body) = serve::get(&page)?;
        let html = String::from_utf8_lossy(&body);
        let script = html
            .split("src=\"./")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or("the page names no script")?;
        let (script_status, script_body) = serve::get(&format!("{site}{script}"))?;
        let assets = root.join("js-examples/react/dist/assets");
        let wasm = std::fs::read_dir(&assets)
            .map_err(|e| format!("{}: {e}", assets.display()))?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .find(|name| name.ends_with(".wasm"))
            .ok_or("the build has no .wasm")?;
        let (wasm_status, wasm_body) = serve::get(&format!("{site}assets/{wasm}"))?;
        let ok = [&status, &script_status, &wasm_status]
            .iter()
            .all(|s| s.ends_with("200 OK"))
            && wasm_body.starts_with(b"\0asm");
        println!(
            "demo: served the page ({}), its script ({} bytes) and wasm ({} bytes); \
             not a terminal, so not waiting",
            status,
            script_body.len(),
            wasm_body.len()
        );
        println!("demo: server {}", server.stop());
        return if ok {
            Ok(())
        } else {
            Err("the React example is not served correctly".into())
        };
    }

    println!(
        "demo: Enter stops the server (the page shows reconnecting and queues what you send); \
         Enter again starts it (the queue is delivered once). Ctrl-C ends the demo."
    );
    let mut running = Some(server);
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        running = match running.take() {
            Some(server) => {
                println!("demo: server {}; Enter starts it again", server.stop());
                None
            }
            None => {
                let server = ServerGuard::start(root, port)?;
                println!("demo: server back at {}", server.url());
                Some(server)
            }
        };
    }
    drop(running);
    Ok(())
}
