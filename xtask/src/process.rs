//! Running steps (with test counting) and supervising the echo server.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What one step did.
pub(crate) struct StepOutcome {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

impl StepOutcome {
    pub(crate) fn failed(name: &str) -> Self {
        StepOutcome {
            name: name.into(),
            ok: false,
            passed: 0,
            failed: 0,
        }
    }
}

/// Run `command`, echo its stdout, and count `test result:` lines.
pub(crate) fn run_step(name: &str, mut command: Command) -> StepOutcome {
    println!("\n==> {name}");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let mut child = match command.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("xtask: cannot start {name}: {error}");
            return StepOutcome::failed(name);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    println!(
        "<== {name}: {} in {:.1}s ({passed} passed, {failed} failed)",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    StepOutcome {
        name: name.into(),
        ok,
        passed,
        failed,
    }
}

/// `test result: ok. 5 passed; 0 failed; ...` → (5, 0); node:test's TAP
/// summary lines `# pass 5` → (5, 0) and `# fail 1` → (0, 1).
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    if let Some(n) = line.strip_prefix("# pass ") {
        return Some((n.trim().parse().ok()?, 0));
    }
    if let Some(n) = line.strip_prefix("# fail ") {
        return Some((0, n.trim().parse().ok()?));
    }
    let rest = line.trim().strip_prefix("test result: ")?;
    let number_before = |word: &str| -> Option<u64> {
        let end = rest.find(word)?;
        rest[..end]
            .trim_end()
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((number_before(" passed")?, number_before(" failed")?))
}

/// The echo server, supervised: it exits when this guard drops, when this
/// process dies (its stdin pipe closes: `--exit-on-stdin-eof`), or on a
/// signal. A pid file lets the next run clear a server a previous run left.
pub(crate) struct ServerGuard {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    url: String,
    pid_file: PathBuf,
}

impl ServerGuard {
    pub(crate) fn start(root: &Path, port: u16) -> Result<ServerGuard, String> {
        ServerGuard::start_with(root, port, &[])
    }

    /// [`ServerGuard::start`] with extra server flags.
    pub(crate) fn start_with(
        root: &Path,
        port: u16,
        flags: &[&str],
    ) -> Result<ServerGuard, String> {
        ServerGuard::start_named(root, "echo-server", port, flags)
    }

    /// [`ServerGuard::start_with`] under its own pid file (`name`), so
    /// several run at once.
    pub(crate) fn start_named(
        root: &Path,
        name: &str,
        port: u16,
        flags: &[&str],
    ) -> Result<ServerGuard, String> {
        let target = crate::target_dir(root);
        let pid_file = target.join(format!("xtask-{name}.pid"));
        clear_stale(&pid_file);
        let binary = target.join("debug/steadfast-server");
        let mut child = Command::new(&binary)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--exit-on-stdin-eof",
            ])
            // Sessions in memory unless the caller chooses.
            .args(
                if flags.contains(&"--sessions") || flags.contains(&"--redis") {
                    &[][..]
                } else {
                    &["--sessions", "memory"][..]
                },
            )
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let _ = std::fs::write(&pid_file, child.id().to_string());
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&pid_file);
            return Err(format!(
                "the echo server did not start on 127.0.0.1:{port} (is the port in use? set STEADFAST_TEST_PORT)"
            ));
        };
        println!("xtask: echo server at {url} (pid {})", child.id());
        Ok(ServerGuard {
            child: Some(child),
            stdin,
            url,
            pid_file,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> Option<u16> {
        self.url
            .rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()
    }

    /// SIGKILL, as a crash: nothing flushed, nothing closed.
    pub(crate) fn kill9(mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// Stop gracefully (close stdin → the server shuts down) and report how.
    pub(crate) fn stop(mut self) -> String {
        self.shutdown()
    }

    fn shutdown(&mut self) -> String {
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = loop {
            match child.try_wait() {
                Ok(Some(status)) => break format!("shut down ({status})"),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break "killed after a 5 s grace period".into();
                }
            }
        };
        let _ = std::fs::remove_file(&self.pid_file);
        result
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let how = self.shutdown();
            println!("xtask: echo server {how}");
        }
    }
}

/// Kill a server a previous, killed run left behind (if it is still ours).
fn clear_stale(pid_file: &Path) {
    let Ok(pid) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let pid = pid.trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("steadfast-server") {
        println!("xtask: stopping a stale echo server (pid {pid}) left by an earlier run");
        let _ = Command::new("kill").arg(pid).status();
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn parses_cargo_and_wasm_bindgen_test_result_lines() {
        assert_eq!(
            parse_test_result("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some((12, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }
}
