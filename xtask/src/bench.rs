//! `cargo xtask bench`: run the benchmarks, then write docs/BENCHMARKS.md
//! and docs/benchmarks.json from criterion's estimates.
//!
//! The engine alone (criterion, `steadfast-core/benches/engine.rs`),
//! reconnect spread and recovery (`steadfast-core/benches/reconnect.rs`),
//! the native side-by-side suite (`steadfast bench --suite`), the browser
//! comparison (`js-examples/e2e/browser-bench.js`) and the npm payload.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// One criterion result.
struct Estimate {
    id: String,
    median_ns: f64,
    low_ns: f64,
    high_ns: f64,
    /// ("messages" | "bytes", count per iteration)
    throughput: Option<(&'static str, f64)>,
}

pub(crate) fn bench(root: &Path, quick: bool) -> Result<(), String> {
    let mut args = vec!["bench", "-p", "steadfast-core", "--bench", "engine"];
    if quick {
        // A smoke run: every benchmark once, no statistics.
        args.extend(["--", "--test"]);
    }
    crate::run("cargo bench (engine)", &mut crate::cargo(root, &args))?;
    let reconnect = reconnect_spread(root, quick)?;
    if quick {
        // The native side-by-side suite, every case once and small.
        crate::run(
            "steadfast bench --suite --quick",
            &mut crate::cargo(
                root,
                &[
                    "run",
                    "-q",
                    "-p",
                    "steadfast-cli",
                    "--bin",
                    "steadfast",
                    "--",
                    "bench",
                    "--suite",
                    "--quick",
                ],
            ),
        )?;
        browser_suite(root, true)?;
        return Ok(());
    }
    let native = native_suite(root)?;
    let browser = browser_suite(root, false)?;
    let criterion = crate::target_dir(root).join("criterion");
    let results = read_group(&criterion.join("engine_pair"))?;
    let sizes = crate::pkg::measure(root)?;
    write_report(root, &results, &reconnect, &native, &browser, &sizes)
}

/// The npm package against the raw browser `WebSocket` in headless
/// Chromium (js-examples/e2e/browser-bench.js, which starts Chromium on its
/// bench page), against the reference server; `quick`: every case once,
/// small, with the debug server.
fn browser_suite(root: &Path, quick: bool) -> Result<Value, String> {
    crate::setup::chromium()?;
    crate::setup::npm(root, &["pkg", "js-examples/e2e"])?;
    crate::pkg::build(root)?;
    let mut build = vec![
        "build",
        "-p",
        "steadfast-server",
        "--bin",
        "steadfast-server",
    ];
    if !quick {
        build.insert(1, "--release");
    }
    crate::run("build steadfast-server", &mut crate::cargo(root, &build))?;
    let target = crate::target_dir(root);
    let profile = if quick { "debug" } else { "release" };
    let json = target.join(if quick {
        "bench-browser-quick.json"
    } else {
        "bench-browser.json"
    });
    let mut node = std::process::Command::new("timeout");
    node.args(["900", "node", "browser-bench.js"])
        .arg(&json)
        .env(
            "STEADFAST_SERVER",
            target.join(profile).join("steadfast-server"),
        )
        .env("CHROMIUM", crate::setup::CHROMIUM)
        .current_dir(root.join("js-examples/e2e"));
    if quick {
        node.env("BENCH_QUICK", "1");
    }
    crate::run("the browser benchmark", &mut node)?;
    read_json(&json)
}

/// A JSON file a benchmark wrote.
fn read_json(path: &Path) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// `steadfast bench --suite` from a release build: the native side-by-side
/// figures (servers in their own processes).
fn native_suite(root: &Path) -> Result<Value, String> {
    crate::run(
        "release build of steadfast",
        &mut crate::cargo(
            root,
            &[
                "build",
                "--release",
                "-p",
                "steadfast-cli",
                "--bin",
                "steadfast",
            ],
        ),
    )?;
    let target = crate::target_dir(root);
    let json = target.join("bench-native.json");
    crate::run(
        "steadfast bench --suite",
        std::process::Command::new(target.join("release/steadfast"))
            .args(["bench", "--suite", "--json"])
            .arg(&json),
    )?;
    read_json(&json)
}

/// The one-message-at-a-time table (native and browser rows alike:
/// `client`, `awaits`, `p50_us`, `p99_us`), with each row against raw's.
fn sequential_table(md: &mut String, rows: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "Each message is sent once the previous one came back: what an \
         application that awaits each send (a form, a request and its \
         reply) waits. `await send()` resolves on the server's ACK. \
         Target: its p50 ≤ 1.5 × raw's echo round trip, p99 ≤ 2 ×.\n\n\
         | client | waits for | p50 | p99 | p50 / raw | p99 / raw |\n|---|---|---|---|---|---|"
    );
    let rows: Vec<&Value> = rows.as_array().into_iter().flatten().collect();
    let raw = rows
        .iter()
        .find(|row| row["client"] == "raw")
        .map_or((f64::NAN, f64::NAN), |row| {
            (num(&row["p50_us"]), num(&row["p99_us"]))
        });
    for row in rows {
        let (p50, p99) = (num(&row["p50_us"]), num(&row["p99_us"]));
        let _ = writeln!(
            md,
            "| {} | {} | {p50:.0} | {p99:.0} | {:.2} | {:.2} |",
            row["client"].as_str().unwrap_or("?"),
            row["awaits"].as_str().unwrap_or("?"),
            p50 / raw.0,
            p99 / raw.1,
        );
    }
}

fn session_stores_table(md: &mut String, rows: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let rows: Vec<&Value> = rows.as_array().into_iter().flatten().collect();
    if rows.is_empty() {
        return;
    }
    let mut stores: Vec<&str> = Vec::new();
    for row in &rows {
        let store = row["store"].as_str().unwrap_or("?");
        if !stores.contains(&store) {
            stores.push(store);
        }
    }
    let _ = writeln!(
        md,
        "\n### The server's session store\n\n\
         Reliable echo against one server process per store, side by side: \
         `--sessions memory`; the default `--sessions embedded` (redb in a \
         data dir, one fsync per commit); and `--redis` (Debian's Redis 7.0 \
         on loopback, AOF with `appendfsync always`), when a redis-server is \
         installed. With a durable store every ACK and every echo waits for \
         the commit that covers it, so a `kill -9` loses nothing. Targets at \
         64 B pipelined: embedded ≥ 0.75 × memory, Redis ≥ 0.5 ×. In \
         brackets: the ratio to memory.\n\n| case | {} |\n|---|{}",
        stores.join(" | "),
        "---|".repeat(stores.len())
    );
    let find = |store: &str, case: &str, size: u64| {
        rows.iter().copied().find(|row| {
            row["store"] == store && row["case"] == case && row["size"].as_u64() == Some(size)
        })
    };
    let line = |label: String, key: &str, case: &str, size: u64, md: &mut String| {
        let base = find("memory", case, size).map_or(f64::NAN, |row| num(&row[key]));
        let cells: Vec<String> = stores
            .iter()
            .map(|store| match find(store, case, size) {
                Some(row) => format!("{:.0} ({:.2})", num(&row[key]), num(&row[key]) / base),
                None => "—".to_owned(),
            })
            .collect();
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    };
    for size in [64u64, 1024] {
        line(
            format!("pipelined {size} B, messages/s"),
            "per_s",
            "pipelined",
            size,
            md,
        );
    }
    for (label, key) in [("p50", "p50_us"), ("p99", "p99_us")] {
        line(
            format!("`await send()` one at a time, {label} µs"),
            key,
            "sequential",
            64,
            md,
        );
    }
    let _ = writeln!(
        md,
        "\nWhat limits the durable stores: every commit is one fsync, and a \
         connection's echoes and ACKs wait for the commit that covers them \
         (held in order while the connection goes on reading, so the next \
         commit carries what arrived meanwhile). One committer thread writes \
         for every connection, one commit at a time. The round that tuned \
         the stores took embedded from 0.39 to 0.68 of memory at 64 B pipelined and Redis from \
         0.23 to 0.63 (at 1 KiB: 0.32 to 0.51, 0.20 to 0.37), while memory \
         itself went from 538k to 582k msg/s. The server's session outbox now \
         holds 100,000 messages by default, not 10,000: the server stops \
         reading a client at half, a durable store's replies wait longer for \
         their ACK, and a fifth of both cores sat idle (memory mode gained \
         too). A commit writes a session's messages as segments (one redb \
         insert for up to 512, one Redis HSET for up to 64, where each \
         message was a write and its acknowledgement another; an \
         acknowledgement drops the segments it empties and rewrites the one \
         it splits). The handler's sends for a read burst reach the \
         committer as one change per session, not one per send. redb keys \
         compare with one memcmp (its `[u8; N]` compared byte by byte: a \
         quarter of the commit thread). The committer is woken only when it \
         waits (a futex call per change before). What remains: per commit, \
         redb's own work and the fsync, and for Redis the script's round \
         trip with its AOF fsync, one commit at a time, on two cores shared \
         with both processes; at 1 KiB, copying the payload into the \
         segment, the page or the AOF. Tried and left out: mimalloc (within \
         the spread here, and it raised both clients' memory per idle \
         connection). Not yet tried: a second Redis commit in flight while \
         the first fsyncs."
    );
    for commits in rows.iter().filter(|row| row["case"] == "commits") {
        let _ = writeln!(
            md,
            "\nThe {} store over these runs: {:.0} commits, {:.1} changes each, \
             {:.0} µs each on average (one fsync each).",
            commits["store"].as_str().unwrap_or("?"),
            num(&commits["commits"]),
            num(&commits["changes_per_commit"]),
            num(&commits["commit_us"])
        );
    }
}

fn room_broadcast_table(md: &mut String, row: &Value) {
    if row.is_null() {
        return;
    }
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\n### A room over three nodes\n\n\
         Three server processes (`--handler rooms --redis`) share sessions \
         in one Redis on loopback; {} reliable members of one room are \
         spread over them, and a poster on the first node posts {} times, \
         20 ms apart. Each member times each post from its sending to its \
         arrival (all clients in one process, one clock): a third arrive \
         directly, the rest through their inboxes in Redis (a commit on \
         the sender's node, a hint, a commit on the member's).\n\n\
         | members | nodes | deliveries | p50 | p99 |\n|---|---|---|---|---|\n\
         | {} | {} | {} | {:.1} ms | {:.1} ms |\n\n\
         What limits it: a remote member gets a post through its inbox in \
         Redis: a commit on the sender's node, a hint, then on the member's \
         node one pipelined read of every announced inbox and one commit \
         for all of them (reading them one session at a time, before, gave \
         p50 264 ms and p99 1,043 ms), on two cores shared by three \
         servers, Redis and 1,000 clients. Not yet tried: a path that \
         skips the inbox for members whose node is alive.",
        row["members"],
        row["posts"],
        row["members"],
        row["nodes"],
        row["deliveries"],
        num(&row["p50_us"]) / 1e3,
        num(&row["p99_us"]) / 1e3
    );
}

fn browser_section(md: &mut String, browser: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\n## Browser: the npm package and the raw `WebSocket`\n\n\
         Headless Chromium ({}), started directly on a bench page with no \
         DevTools client attached (playwright's instrumentation reports every \
         WebSocket frame to its driver: here 30–65 µs of CPU per message and \
         the raw socket's 64 B rate cut from ~27,000 to ~11,000/s, a cost that \
         grows with the number of frames and no user's browser pays; the \
         page POSTs its figures back instead). The page imports \
         the npm package as a browser does (`pkg/src/browser.js`, the wasm \
         fetched beside its glue) and runs every case against the same \
         reference server (release build): the raw `WebSocket` and steadfast \
         plain get its plain echo, steadfast reliable its steadfast.v1 \
         sessions. Each run sends its messages (binary, `Uint8Array`) all at \
         once and times until every echo is back; steadfast keeps its outbox \
         in memory. The three kinds are interleaved, their order rotating \
         run by run; medians of {} runs. Source: \
         `js-examples/e2e/browser-bench.js` and `js-examples/e2e/bench-page/`.\n\n\
         Target: the package ≥ 0.95 × the raw `WebSocket` up to 16 KiB, \
         ≥ 0.85 × at 1 MiB.\n\n\
         | payload | messages | raw msg/s (MB/s) | reliable msg/s (MB/s) | plain msg/s (MB/s) | reliable / raw | plain / raw | target |\n\
         |---|---|---|---|---|---|---|---|",
        browser["browser"].as_str().unwrap_or("?"),
        browser["runs"]
    );
    let cell = |v: &Value| {
        format!(
            "{:.0} ({:.1})",
            num(&v["messages_per_s"]),
            num(&v["mb_per_s"])
        )
    };
    for row in browser["throughput"].as_array().into_iter().flatten() {
        let size = row["size"].as_u64().unwrap_or(0);
        let (r, p, w) = (
            num(&row["reliable"]["messages_per_s"]),
            num(&row["plain"]["messages_per_s"]),
            num(&row["raw"]["messages_per_s"]),
        );
        let target = match size {
            0..=16384 => Some(0.95),
            1_048_576.. => Some(0.85),
            _ => None,
        };
        let verdict = ratio_verdict(r / w, target);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {verdict} |",
            human_size(size),
            row["messages"],
            cell(&row["raw"]),
            cell(&row["reliable"]),
            cell(&row["plain"]),
            ratio(r, w),
            ratio(p, w)
        );
    }
    let _ = writeln!(md, "\n### One message at a time, 64 B (µs)\n");
    sequential_table(md, &browser["sequential"]);
    let _ = writeln!(
        md,
        "\nThe page's clock (`performance.now()`, no cross-origin \
         isolation) ticks in 100 µs steps: these figures are multiples of it."
    );
    let d = &browser["indexeddb"];
    let concurrent = num(&d["concurrent_us_per_message"]);
    let _ = writeln!(
        md,
        "\n### IndexedDB outbox, 64 B messages\n\n\
         `persist: \"indexeddb\"`, nothing listening, so everything stays \
         queued; a message counts once its `onQueued` reports it committed \
         and durable. Target: ≤ 100 µs amortised ({}).\n\n\
         | senders | messages | µs each |\n|---|---|---|\n\
         | all at once | {} | {concurrent:.1} |\n\
         | one, awaiting each `onQueued` | {} | {:.0} |",
        if concurrent <= 100.0 { "met" } else { "missed" },
        d["messages"],
        d["sequential_messages"],
        num(&d["sequential_us_per_message"]),
    );
    let _ = writeln!(
        md,
        "\nWhat limits the package in the browser (CPU per message of each \
         process from /proc, and the DevTools profiler attached to the \
         Profiler domain only). At 64 B the raw socket costs the page ~23 µs \
         per round trip and Chromium's network process ~17 µs; the package \
         ~36 µs (plain) and ~44 µs (reliable) in the page: each message \
         crosses into wasm and back out, `send` makes a promise and the \
         reader an `Event`, and reliable mode adds ACK frames, each another \
         WebSocket message through the network process. At 16 KiB and above \
         it is bytes and frames: reliable mode sends 32 KiB chunks (proxies \
         and gateways cap frames; one 1 MiB message is 32 frames each way \
         instead of one), the server reassembles and re-chunks on the same \
         two cores (about twice plain's server CPU per 64 KiB message), and \
         the payload is copied into wasm memory on `send` (the outbox owns \
         it), framed, copied into wasm again on receipt, reassembled and \
         copied out to the application's `Uint8Array`. Cut so far: frames go \
         to `WebSocket.send` as views of wasm memory instead of fresh copies \
         (reliable / raw 0.62 → 0.75 at 16 KiB, 0.41 → 0.53 at 1 MiB); a \
         `send` queued at once returns its id from wasm and its promise \
         settles from the `settled` event, where it had been a Rust future \
         turned into a promise per message (an A/B of two rounds at 64 B: \
         reliable / raw 0.75 and 0.77 before, 0.82 and 0.89 after; plain \
         within the noise, the raw socket alone varying 19–24k msg/s \
         between runs). Still \
         ours: handing received `ArrayBuffer`s to the application without the \
         round trip through wasm memory in plain mode, and fewer chunks where \
         the server accepts larger frames."
    );
}

/// 64 B, 16 KiB, 1 MiB.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// "≥ 0.85: met" (or missed) for a ratio against its target; "—" without one.
fn ratio_verdict(ratio: f64, target: Option<f64>) -> String {
    target.map_or("—".to_owned(), |t| {
        format!("≥ {t}: {}", if ratio >= t { "met" } else { "missed" })
    })
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn native_section(md: &mut String, native: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\n## Native, loopback: steadfast and raw tokio-tungstenite\n\n\
         `steadfast bench --suite` (release build): the reference server and a \
         raw tokio-tungstenite echo server each run in their own process; the \
         clients run in the bench process, the three kinds interleaved run by \
         run; medians. Raw: tokio-tungstenite client to the raw echo server. \
         Reliable and plain: `steadfast::Client` to the reference server.\n\n\
         ### Pipelined echo throughput (messages/s)\n\n\
         Target: reliable ≥ 0.85 × raw for 64 B–1 KiB, ≥ 0.95 × at 64 KiB.\n\n\
         | payload | messages | reliable | plain | raw | reliable / raw | plain / raw | target |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for row in native["throughput"].as_array().into_iter().flatten() {
        let (r, p, w) = (num(&row["reliable"]), num(&row["plain"]), num(&row["raw"]));
        let size = row["size"].as_u64().unwrap_or(0);
        let target = match size {
            0..=1024 => Some(0.85),
            65536.. => Some(0.95),
            _ => None,
        };
        let verdict = ratio_verdict(r / w, target);
        let _ = writeln!(
            md,
            "| {size} B | {} | {r:.0} | {p:.0} | {w:.0} | {} | {} | {verdict} |",
            row["messages"],
            ratio(r, w),
            ratio(p, w)
        );
    }
    let _ = writeln!(
        md,
        "\nWhat limits reliable mode (perf and strace on this machine, \
         `steadfast bench --suite` at 64 B–64 KiB). The floor is the \
         protocol itself: the two engines alone, with no sockets (the \
         engine table above), take about as long per 64 B message as raw \
         takes for its whole round trip — sequence numbers, the outbox, \
         ACK frames, dedup and the reorder window at both ends — so 0.85 × \
         raw at 64 B–1 KiB is out of reach for a reliable protocol built \
         this way. Above that floor, each message crosses tasks (the \
         application's `send`, the client's driver, its socket task, the \
         server's connection task and handler, and back); with both \
         processes' worker threads on two cores, the wake-ups between them \
         cost about a tenth of the CPU in the scheduler. Raw \
         tokio-tungstenite is one task writing into one buffer. The figures \
         here are the server with its sessions in memory. The work on the \
         durable stores (the table further down) moved them too: \
         the server's session outbox default went from 10,000 to 100,000 \
         messages (it stopped reading a pipelining client at 5,000 \
         unacknowledged replies). The round that added the stores left the \
         memory path as it was; the one before cut latency, not \
         throughput: a read burst is acknowledged when it ends, so `await \
         send()` went from the 50 ms ACK delay to one round trip (the table \
         below), and ACKs cover only what the application took; an A/B in \
         one run against `--ack-delay-only` showed no throughput change \
         beyond run-to-run spread. Cut three rounds before, \
         each measured at 64 B reliable: when an ACK was due at once \
         (after `ack.every` messages) the server's connection slept until \
         tokio's next 1 ms timer tick, and both processes sat idle a fifth \
         of the time; it now acts at once (about 0.6 to 0.7–1.0 M msg/s). \
         The server read the clock per frame and per send and added the \
         engine's counters to its metrics per message (11% of its CPU; \
         about 500k to 580k msg/s); receipts were a oneshot channel and a \
         map entry each (15% of the client's CPU), now slots in one ledger \
         (to about 615k). Cut before: the server's plain echo flushed after \
         every answer; the client's outbox binary-searched its first \
         unsent message on every transmit; the driver read two clocks per \
         message; futures' unbounded channels allocated and woke per item; \
         `next_event` sent the driver a command per message read; plain \
         mode copied each payload on its way to the socket and into the \
         engine. What is still ours to cut: the socket task (merging it \
         into the driver removes a hop each way), and at 64 KiB the copies \
         (each payload is copied into its 32 KiB chunk frames, masked, \
         unframed and reassembled, at each end)."
    );
    let _ = writeln!(
        md,
        "\n### Round trip at a fixed 1,000 messages/s, 64 B (µs)\n\n\
         | client | p50 | p99 |\n|---|---|---|"
    );
    for row in native["latency"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} |",
            row["client"].as_str().unwrap_or("?"),
            num(&row["p50_us"]),
            num(&row["p99_us"])
        );
    }
    let _ = writeln!(md, "\n### One message at a time, 64 B (µs)\n");
    sequential_table(md, &native["sequential"]);
    session_stores_table(md, &native["session_stores"]);
    room_broadcast_table(md, &native["room_broadcast"]);
    let _ = writeln!(
        md,
        "\n### One 16 MiB message there and back\n\n\
         Reliable mode sends it in 32 KiB chunks, reassembled at each end; \
         raw and plain send one WebSocket message. MB/s: 16 MiB over the \
         round trip. Targets: reliable ≥ 0.9 × raw, and ≥ 1 GB/s.\n\n\
         | client | round trip | MB/s |\n|---|---|---|"
    );
    let mut big = (f64::NAN, f64::NAN);
    for row in native["big_message"].as_array().into_iter().flatten() {
        let client = row["client"].as_str().unwrap_or("?");
        let _ = writeln!(
            md,
            "| {client} | {:.1} ms | {:.0} |",
            num(&row["seconds"]) * 1e3,
            num(&row["mb_per_s"])
        );
        match client {
            "reliable" => big.0 = num(&row["mb_per_s"]),
            "raw" => big.1 = num(&row["mb_per_s"]),
            _ => {}
        }
    }
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let _ = writeln!(
        md,
        "\nReliable / raw: {:.2} (≥ 0.9: {}); ≥ 1 GB/s: {}. Reliable mode \
         pipelines its 32 KiB chunks (each end reassembles while the next \
         arrives), which is why it can beat one 16 MiB WebSocket message. \
         What keeps it under 1 GB/s is copying: the payload is copied into \
         the outbox, each chunk framed and masked, unmasked and reassembled \
         at the server, then the same again for the echo, on two cores \
         shared by both processes.",
        big.0 / big.1,
        verdict(big.0 / big.1 >= 0.9),
        verdict(big.0 >= 1000.0)
    );
    let _ = writeln!(
        md,
        "\n### Memory per idle connection\n\n\
         One fresh process opens the connections (plain ws, no TLS) and \
         reports its resident memory growth divided by their number. \
         Target: ≤ 16 KiB for steadfast.\n\n\
         | client | connections | KiB each |\n|---|---|---|"
    );
    for row in native["idle_memory"].as_array().into_iter().flatten() {
        let m = &row["measured"];
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} |",
            row["client"].as_str().unwrap_or("?"),
            m["connections"],
            num(&m["per_connection_bytes"]) / 1024.0
        );
    }
    let d = &native["durable_enqueue"];
    let _ = writeln!(
        md,
        "\n### Durable outbox (redb, fsync per commit), 64 B messages\n\n\
         The server unreachable, so everything stays queued; 64 senders, \
         the median of three fresh stores (fsync times vary). Target: ≤ 10 µs \
         amortised per message ({}). Concurrent sends share one commit (the \
         driver takes every waiting command before it writes, and after a \
         commit that released several senders it yields a few times so they \
         make the next batch: without that, batches alternated at half the \
         senders, 13.5 µs); one sender awaiting each send pays a whole fsync \
         per message.\n\n\
         | senders | messages | messages/s | µs each |\n|---|---|---|---|\n\
         | {} concurrent | {} | {:.0} | {:.1} |\n\
         | 1, awaiting each | {} | {:.0} | {:.1} |",
        if num(&d["concurrent_us_per_message"]) <= 10.0 {
            "met"
        } else {
            "missed"
        },
        d["senders"],
        d["messages"],
        num(&d["concurrent_per_s"]),
        num(&d["concurrent_us_per_message"]),
        d["sequential_messages"],
        num(&d["sequential_per_s"]),
        num(&d["sequential_us_per_message"]),
    );
}

/// `steadfast proxy` in front of the raw echo server, against direct.
fn proxy_section(md: &mut String, proxy: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\n### Through `steadfast proxy`\n\n\
         The raw tokio-tungstenite echo, directly and through `steadfast proxy \
         --quiet` (no faults, no record) in its own process, interleaved in \
         one run. The proxy reads whole messages (tungstenite), shows, \
         records and faults them, and writes what is queued with one flush; \
         on this 2-core machine client, proxy and server share the cores.\n\n\
         | pipelined | direct, messages/s | proxied, messages/s | ratio |\n|---|---|---|---|"
    );
    for row in proxy["throughput"].as_array().into_iter().flatten() {
        let (direct, proxied) = (num(&row["direct"]), num(&row["proxied"]));
        let _ = writeln!(
            md,
            "| {} × {} | {direct:.0} | {proxied:.0} | {:.2} |",
            human_size(row["size"].as_u64().unwrap_or(0)),
            row["messages"],
            proxied / direct
        );
    }
    let _ = writeln!(
        md,
        "\n| round trip at 1,000 messages/s, 64 B | p50 µs | p99 µs |\n|---|---|---|"
    );
    for row in proxy["latency"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} |",
            row["path"].as_str().unwrap_or("?"),
            num(&row["p50_us"]),
            num(&row["p99_us"])
        );
    }
}

/// `benches/reconnect.rs`: 10,000 simulated clients through outages; one
/// JSON object per outage length.
fn reconnect_spread(root: &Path, quick: bool) -> Result<Vec<Value>, String> {
    let mut args = vec!["bench", "-p", "steadfast-core", "--bench", "reconnect"];
    if quick {
        args.extend(["--", "--quick"]);
    }
    let output = crate::cargo(root, &args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo bench: {e}"))?;
    if !output.status.success() {
        return Err("the reconnect benchmark failed".into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("reconnect bench output {l}: {e}")))
        .collect::<Result<_, _>>()?;
    for row in &rows {
        println!("xtask bench: reconnect {row}");
    }
    if rows.is_empty() {
        return Err("the reconnect benchmark printed no results".into());
    }
    Ok(rows)
}

fn reconnect_section(md: &mut String, rows: &[Value], storm: &Value) {
    let clients = rows
        .first()
        .and_then(|r| r["clients"].as_u64())
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "\n## Reconnect after an outage\n\n\
         {clients} simulated clients, each the real engine with its own seed and \
         the default backoff, lose their server at the same instant; it \
         refuses every attempt until it is back. Virtual time. \"Back\": how \
         long after the server's return each client is connected again (its \
         first message follows one round trip later). \"Busiest window\": the \
         most attempts in any 100 ms of the outage against the mean; a \
         stampede shows as a high ratio. Targets: back within p50 500 ms / \
         p99 2 s for outages up to 30 s; no window above 3× the mean. Source: \
         `crates/steadfast-core/benches/reconnect.rs`.\n\n\
         | outage | back p50 | back p99 | last back | attempts/s (all clients) | busiest window / mean |\n\
         |---|---|---|---|---|---|"
    );
    for r in rows {
        let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {:.0} s | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} | {:.2}× |",
            n("outage_ms") / 1000.0,
            n("p50_ms"),
            n("p99_ms"),
            n("max_ms"),
            n("attempts_per_s"),
            n("busiest_over_mean")
        );
    }
    let _ = writeln!(
        md,
        "\nRetries stay within 1 s for the first 30 s of an outage (about two \
         attempts per second per client: the price of being back within a \
         second), then ease off to a 30 s cap; hence the 60 s row."
    );
    storm_section(md, rows, storm);
}

/// The real storm (`steadfast bench --suite`, section `storm`) beside the
/// simulated 1 s outage.
fn storm_section(md: &mut String, rows: &[Value], storm: &Value) {
    if storm.is_null() {
        return;
    }
    let n = |k: &str| storm[k].as_f64().unwrap_or(f64::NAN);
    let simulated_p99 = rows
        .iter()
        .find(|r| r["outage_ms"].as_f64() == Some(1000.0))
        .and_then(|r| r["p99_ms"].as_f64())
        .unwrap_or(f64::NAN);
    let clients = n("clients");
    let _ = writeln!(
        md,
        "\n### A real storm\n\n\
         {clients:.0} reliable `steadfast::Client`s in one process (the default \
         backoff, each its own seed) on one `steadfast serve` with its data \
         dir, all on this machine's cores; the server is killed with SIGKILL \
         and started again on the same port and data dir. Each client times \
         its return, then sends one message and waits for its echo; every \
         one must resume its session (a resync fails the run). \"Back\": from \
         the restarted server's `listening` line to the client's open \
         connection. Listen overflows and drops: the kernel's `TcpExt` \
         counters (`/proc/net/netstat`) over the storm. Target: p99 within 2× \
         the simulated p99 of a 1 s outage ({simulated_p99:.0} ms), and no \
         listen overflow. Source: `crates/steadfast-cli/src/suite.rs` \
         (`storm`).\n\n\
         | clients | restart | first back | back p50 | back p99 | all back | accepts/s | listen overflows / drops | server CPU | resumed / resynced |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {clients:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} | {} / {} | {:.2} s | {} / {} |",
        n("restart_ms"),
        n("first_back_ms"),
        n("back_p50_ms"),
        n("back_p99_ms"),
        n("back_all_ms"),
        n("accepts_per_s"),
        storm["listen_overflows"],
        storm["listen_drops"],
        n("server_cpu_s"),
        storm["resumed"],
        storm["resynced"],
    );
    let within = n("back_p99_ms") <= 2.0 * simulated_p99;
    let no_overflow = storm["listen_overflows"].as_u64() == Some(0);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let _ = writeln!(
        md,
        "\np99 within 2× the simulation: {}; no listen overflow: {}. What \
         limits it: the simulation's server accepts at once, this one admits \
         about {:.0} clients a second, {:.0} µs of server CPU each (the TCP \
         accept, the HTTP upgrade, the session's HELLO and the commit of its \
         WELCOME), on the two cores the clients share; the clients come back \
         within about a second, so the last wait for the ones before them. \
         Cut so far: the restart's restore claimed each stored session in its \
         own write transaction, one fsync each (10,000 took about three \
         seconds, during which the server accepted nobody; the kernel's \
         accept queue, 4,096 under `somaxconn`, overflowed about 11,700 \
         times and clients waited for SYN retransmits: back p50 2.7 s, p99 \
         3.4 s); it now claims a thousand per write.",
        verdict(within),
        verdict(no_overflow),
        n("accepts_per_s"),
        n("server_cpu_s") / clients * 1e6,
    );
}

fn read_group(dir: &Path) -> Result<Vec<Estimate>, String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("new/estimates.json").exists())
        .collect();
    entries.sort();
    let mut results = Vec::new();
    for path in entries {
        let read = |name: &str| -> Result<Value, String> {
            let file = path.join("new").join(name);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("read {}: {e}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", file.display()))
        };
        let meta = read("benchmark.json")?;
        let est = read("estimates.json")?;
        let median = &est["median"];
        let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        let throughput = match &meta["throughput"] {
            Value::Object(map) => map.iter().next().map(|(kind, n)| {
                let kind = if kind == "Bytes" { "bytes" } else { "messages" };
                (kind, num(n))
            }),
            _ => None,
        };
        results.push(Estimate {
            id: meta["full_id"].as_str().unwrap_or("?").to_owned(),
            median_ns: num(&median["point_estimate"]),
            low_ns: num(&median["confidence_interval"]["lower_bound"]),
            high_ns: num(&median["confidence_interval"]["upper_bound"]),
            throughput,
        });
    }
    // Smallest first (64 B, 4 KiB, 1 MiB).
    results.sort_by(|a, b| a.median_ns.total_cmp(&b.median_ns));
    if results.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()));
    }
    Ok(results)
}

fn rate(r: &Estimate) -> String {
    match r.throughput {
        Some(("bytes", n)) => format!("{:.2} GB/s", n / r.median_ns),
        // One DATA frame per message below the chunk size.
        Some((_, n)) => format!("{:.2} M msg/s (frames/s)", n / r.median_ns * 1e3),
        None => "—".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores available, {rustc}, {}",
        std::env::consts::OS
    )
}

fn write_report(
    root: &Path,
    results: &[Estimate],
    reconnect: &[Value],
    native: &Value,
    browser: &Value,
    sizes: &[crate::pkg::FileSize],
) -> Result<(), String> {
    let machine = machine();
    let mut md = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Generated by `cargo xtask bench`; do not edit by hand. Raw figures: \
         [benchmarks.json](benchmarks.json).\n\n\
         Machine: {machine}.\n\n\
         ## The engine alone\n\n\
         A client and a server `Engine` wired back to back (no sockets, no \
         latency): each iteration sends a batch from the client, delivers \
         every frame, flushes the coalesced ACKs back and checks that every \
         message arrived and every receipt resolved. Source: \
         `crates/steadfast-core/benches/engine.rs`. Medians of criterion's \
         samples, 95% confidence interval of the median in brackets.\n\n\
         | case | per iteration | rate |\n|---|---|---|"
    );
    let mut raw = Vec::new();
    for r in results {
        let _ = writeln!(
            md,
            "| `{}` | {:.1} µs [{:.1}, {:.1}] | {} |",
            r.id,
            r.median_ns / 1e3,
            r.low_ns / 1e3,
            r.high_ns / 1e3,
            rate(r)
        );
        raw.push(json!({
            "id": r.id,
            "median_ns": r.median_ns,
            "median_ci95_ns": [r.low_ns, r.high_ns],
            "throughput": r.throughput.map(|(k, n)| json!({ k: n })),
        }));
    }
    let _ = writeln!(
        md,
        "\nBatches: 256 messages of 64 B or 4 KiB; 4 messages of 1 MiB (each \
         chunked into 32 KiB frames and reassembled)."
    );
    reconnect_section(&mut md, reconnect, &native["storm"]);
    native_section(&mut md, native);
    proxy_section(&mut md, &native["proxy"]);
    browser_section(&mut md, browser);
    let _ = writeln!(
        md,
        "\n## npm payload\n\n\
         What a browser downloads for `import {{ Steadfast }} from \"steadfast\"` \
         (the same figures as `cargo xtask size`; gzip -9). Target: 25 KiB, \
         aiming for 15 KiB.\n\n\
         | file | bytes | gzipped |\n|---|---|---|"
    );
    let mut size_raw = Vec::new();
    for (file, bytes, gz) in sizes {
        let _ = writeln!(md, "| `{file}` | {bytes} | {gz} |");
        size_raw.push(json!({ "file": file, "bytes": bytes, "gzipped": gz }));
    }
    let total: usize = sizes.iter().map(|s| s.2).sum();
    let _ = writeln!(
        md,
        "| total | {} | {total} ({:.1} KiB) |\n\n\
         Over the target. The wasm is built with `opt-level = \"z\"`, LTO and \
         `panic = \"abort\"`, then `wasm-opt -Oz` (binaryen 132, from npm). \
         Where its bytes go (twiggy, before wasm-opt): the engine and the \
         driver about 55 KB; js-sys, web-sys and wasm-bindgen glue about \
         25 KB; futures' channels 10 KB (the mpsc ones since replaced by \
         `queue.rs`, 0.8 KiB gzipped less); VecDeque and Vec code for each \
         element type about 15 KB; panic and error strings 18 KB; the \
         allocator 7 KB. BTreeMap (21 KB) and the library sorts (12 KB) are \
         already gone. The send fast path and the receipt ledger added \
         2 KiB gzipped for their throughput. What limits it: the engine \
         alone — steadfast-core behind a minimal wasm-bindgen facade, built \
         and optimised the same way — is 24 KiB gzipped with its JS glue \
         2.7 KiB, already the target; everything else is the Rust driver \
         (an async state machine of about 48 KB), the IndexedDB store, the \
         WebSocket transport and futures' executor glue. Reaching 25 KiB \
         would take a much smaller engine or moving the driver out of \
         wasm; neither is done.",
        sizes.iter().map(|s| s.1).sum::<usize>(),
        total as f64 / 1024.0
    );
    let docs = root.join("docs");
    std::fs::write(docs.join("BENCHMARKS.md"), md)
        .map_err(|e| format!("write BENCHMARKS.md: {e}"))?;
    let report = json!({
        "machine": machine,
        "command": "cargo xtask bench",
        "engine_pair": raw,
        "reconnect": reconnect,
        "native": native,
        "browser": browser,
        "npm_payload": size_raw,
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(docs.join("benchmarks.json"), text + "\n")
        .map_err(|e| format!("write benchmarks.json: {e}"))?;
    println!("xtask bench: wrote docs/BENCHMARKS.md and docs/benchmarks.json");
    Ok(())
}
