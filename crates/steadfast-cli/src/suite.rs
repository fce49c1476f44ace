//! `steadfast bench --suite`: the native side-by-side benchmarks.
//!
//! Servers run in their own processes (this binary as `steadfast serve`,
//! and as a raw tokio-tungstenite echo server, `--role raw-echo`); the
//! clients run here: steadfast reliable, steadfast plain and raw
//! tokio-tungstenite, interleaved run by run. Idle memory is measured in
//! a fresh child process per client kind (`--role idle`). Results print as
//! a table and, with `--json FILE`, as JSON for `cargo xtask bench`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use steadfast::store::DurableStore;
use steadfast::{Client, ClientEvent, Payload, Reliability};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// How much work each case does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) runs: usize,
    /// Messages per throughput run at 64 B (fewer for larger payloads).
    pub(crate) messages: usize,
    pub(crate) idle_connections: usize,
    pub(crate) latency_ms: u64,
    /// Round trips per sequential run (one message at a time).
    pub(crate) sequential: usize,
    pub(crate) durable_messages: usize,
    /// Members of the room broadcast across three nodes, and its posts.
    pub(crate) room_members: usize,
    pub(crate) room_posts: usize,
    /// Clients in the real reconnect storm.
    pub(crate) storm_clients: usize,
}

impl Scale {
    pub(crate) fn full() -> Scale {
        Scale {
            runs: 5,
            messages: 50_000,
            idle_connections: 10_000,
            latency_ms: 3_000,
            sequential: 2_000,
            durable_messages: 20_000,
            room_members: 1_000,
            room_posts: 100,
            storm_clients: 10_000,
        }
    }

    /// A smoke run: every case once, small.
    pub(crate) fn quick() -> Scale {
        Scale {
            runs: 1,
            messages: 2_000,
            idle_connections: 200,
            latency_ms: 300,
            sequential: 200,
            durable_messages: 1_000,
            room_members: 30,
            room_posts: 10,
            storm_clients: 200,
        }
    }
}

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reliable,
    Plain,
    Raw,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Reliable, Kind::Plain, Kind::Raw];

    fn name(self) -> &'static str {
        match self {
            Kind::Reliable => "steadfast reliable",
            Kind::Plain => "steadfast plain",
            Kind::Raw => "raw tokio-tungstenite",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Reliable => "reliable",
            Kind::Plain => "plain",
            Kind::Raw => "raw",
        }
    }
}

/// A server child process; it exits when this drops (its stdin closes).
struct ServerProcess {
    url: String,
    child: Child,
}

async fn spawn_server(args: &[&str]) -> Result<ServerProcess, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| format!("{args:?} did not start in 30 s"))?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .ok_or_else(|| format!("{args:?} printed {line:?}"))?
        .to_owned();
    Ok(ServerProcess { url, child })
}

/// `steadfast proxy --quiet` in front of `upstream` on a free loopback
/// port, once it accepts connections.
async fn spawn_proxy(upstream: &str) -> Result<ServerProcess, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(exe)
        .args(["proxy", "--quiet", "--listen", &listen, "--to", upstream])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        if Instant::now() > deadline {
            return Err("the proxy did not listen within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(ServerProcess {
        url: format!("ws://{listen}"),
        child,
    })
}

/// A room whose members are spread over three server processes sharing
/// sessions in Redis: one poster posts, one at a time, and every member
/// times each post from its sending to its arrival (one clock: the
/// clients share this process). `None` without a redis-server.
async fn room_broadcast(scale: Scale) -> Result<Option<Value>, String> {
    let dir = std::env::temp_dir().join(format!("steadfast-bench-room-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let redis = match RedisChild::start(&dir).await {
        Ok(redis) => redis,
        Err(why) => {
            println!("\n(no room broadcast over three nodes: {why})");
            return Ok(None);
        }
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            spawn_server(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--exit-on-stdin-eof",
                "--handler",
                "rooms",
                "--redis",
                &redis.url,
            ])
            .await?,
        );
    }
    let join = json!({"type": "join", "room": "bench"}).to_string();
    let mut members = Vec::with_capacity(scale.room_members);
    for i in 0..scale.room_members {
        let client = steadfast_client(Kind::Reliable, &nodes[i % 3].url).await?;
        drop(client.send(join.clone()).await.map_err(|e| e.to_string())?);
        next_message(&client).await?;
        members.push(client);
    }
    // The poster is a member too (the rooms handler wants it); it does not
    // get its own posts.
    let poster = steadfast_client(Kind::Reliable, &nodes[0].url).await?;
    drop(poster.send(join).await.map_err(|e| e.to_string())?);
    next_message(&poster).await?;
    let base = Instant::now();
    let posts = scale.room_posts;
    let readers: Vec<_> = members
        .into_iter()
        .map(|member| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(posts);
                while latencies.len() < posts {
                    let Payload::Text(text) = next_message(&member).await? else {
                        continue;
                    };
                    let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    if let Some(sent) = message["data"].as_u64() {
                        let now = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latencies.push(now.saturating_sub(sent) as f64);
                    }
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    for _ in 0..posts {
        let sent = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
        let post = json!({"type": "room", "room": "bench", "data": sent}).to_string();
        drop(poster.send(post).await.map_err(|e| e.to_string())?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = Vec::with_capacity(posts * scale.room_members);
    for reader in readers {
        all.extend(reader.await.map_err(|e| e.to_string())??);
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "\nroom broadcast, {} members over 3 nodes on Redis, {posts} posts: delivery p50 {:.1} ms, p99 {:.1} ms",
        scale.room_members,
        p50 / 1e3,
        p99 / 1e3
    );
    drop(nodes);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(json!({
        "members": scale.room_members, "nodes": 3, "posts": posts,
        "deliveries": all.len(), "p50_us": p50, "p99_us": p99,
    })))
}

/// A redis-server child for the session-store rows; killed on drop.
struct RedisChild {
    url: String,
    _child: Child,
}

impl RedisChild {
    async fn start(dir: &std::path::Path) -> Result<RedisChild, String> {
        let binary = std::env::var("STEADFAST_REDIS_SERVER")
            .unwrap_or_else(|_| "/usr/bin/redis-server".to_owned());
        if !std::path::Path::new(&binary).exists() {
            return Err(format!("{binary} is not installed"));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(RedisChild {
                    url: format!("redis://{addr}/0"),
                    _child: child,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("{binary} did not listen on {addr} in 5 s"))
    }
}

/// The `/metrics` text of the server at `url` (same host and port).
async fn server_metrics(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url.split_once("://")?.1.split('/').next()?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .ok()?
    .ok()?;
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(body)
}

/// Messages per run for a payload size: about the same bytes above 1 KiB.
fn count_for(scale: Scale, size: usize) -> usize {
    let by_bytes = scale.messages * 1024 / size.max(1);
    by_bytes.clamp(scale.messages / 25, scale.messages).max(10)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A part of the suite, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Section {
    /// Pipelined echo throughput against raw tokio-tungstenite.
    Throughput,
    /// Round trip at a fixed 1,000 messages/s.
    Latency,
    /// Sequential round trips, each awaited.
    Sequential,
    /// A room over three nodes on Redis.
    Rooms,
    /// The server's session stores side by side.
    Stores,
    /// A 16 MiB round trip.
    Big,
    /// Resident memory of idle connections.
    Idle,
    /// The client's durable outbox.
    Durable,
    /// A real reconnect storm: the server killed and restarted under
    /// thousands of reliable clients.
    Storm,
    /// A raw echo through `steadfast proxy` against direct.
    Proxy,
}

/// Run the suite; `sizes` (empty: 64 B, 1 KiB, 4 KiB, 64 KiB) are the
/// throughput payloads (with `only` = stores, the store rows' sizes, default
/// 64 B and 1 KiB); `only` (empty: all) picks sections.
pub(crate) async fn run(
    scale: Scale,
    sizes: &[usize],
    only: &[Section],
    json_out: Option<PathBuf>,
) -> Result<(), String> {
    let want = |section: Section| only.is_empty() || only.contains(&section);
    let store_sizes = if sizes.is_empty() || !only.contains(&Section::Stores) {
        vec![64, 1024]
    } else {
        sizes.to_vec()
    };
    let sizes = if sizes.is_empty() {
        vec![64, 1024, 4096, 65536]
    } else {
        sizes.to_vec()
    };
    let steadfast = spawn_server(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--exit-on-stdin-eof",
        "--sessions",
        "memory",
        "--max-message-size",
        "33554432",
        "--max-buffered-bytes",
        "67108864",
    ])
    .await?;
    let raw = spawn_server(&["bench", "--role", "raw-echo"]).await?;
    let url = |kind: Kind| match kind {
        Kind::Raw => raw.url.as_str(),
        _ => steadfast.url.as_str(),
    };
    println!(
        "native suite: steadfast server {}, raw echo server {}, {} runs per case (interleaved), medians",
        steadfast.url, raw.url, scale.runs
    );
    let mut report = serde_json::Map::new();

    if want(Section::Throughput) {
        // Throughput.
        println!("\npipelined echo throughput (messages/s; ratio to raw)");
        let mut rows = Vec::new();
        for &size in &sizes {
            let count = count_for(scale, size);
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
            for _ in 0..scale.runs {
                for (i, kind) in Kind::ALL.into_iter().enumerate() {
                    let rate = throughput(kind, url(kind), size, count)
                        .await
                        .map_err(|e| format!("{} at {size} B: {e}", kind.name()))?;
                    rates[i].push(rate);
                }
            }
            let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
            let raw_rate = medians[2];
            println!(
                "  {size:>6} B x {count:<6} reliable {:>9.0} ({:.2})  plain {:>9.0} ({:.2})  raw {:>9.0}",
                medians[0],
                medians[0] / raw_rate,
                medians[1],
                medians[1] / raw_rate,
                raw_rate
            );
            rows.push(json!({
                "size": size, "messages": count,
                "reliable": medians[0], "plain": medians[1], "raw": raw_rate,
                "runs": { "reliable": rates[0], "plain": rates[1], "raw": rates[2] },
            }));
        }
        report.insert("throughput".into(), Value::Array(rows));
    }

    if want(Section::Latency) {
        // Latency at a fixed rate.
        println!("\nround trip at 1,000 messages/s, 64 B (µs)");
        let mut rows = Vec::new();
        for kind in Kind::ALL {
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..scale.runs.min(3) {
                let (p50, p99) = latency(kind, url(kind), scale.latency_ms).await?;
                p50s.push(p50);
                p99s.push(p99);
            }
            let (p50, p99) = (median(&mut p50s), median(&mut p99s));
            println!("  {:<22} p50 {p50:>7.0}  p99 {p99:>7.0}", kind.name());
            rows.push(json!({ "client": kind.key(), "p50_us": p50, "p99_us": p99 }));
        }
        report.insert("latency".into(), Value::Array(rows));
    }

    if want(Section::Sequential) {
        // One message at a time: what an application awaiting each send sees.
        println!("\none 64 B message at a time, sequential round trips (µs)");
        let cases = [
            (
                Kind::Reliable,
                Await::Ack,
                "reliable, `await send()` (the ACK)",
            ),
            (Kind::Reliable, Await::Echo, "reliable, send then the echo"),
            (Kind::Raw, Await::Echo, "raw, send then the echo"),
        ];
        let mut runs: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); cases.len()];
        for _ in 0..scale.runs.min(3) {
            for (i, (kind, wait, _)) in cases.iter().enumerate() {
                let (p50, p99) = sequential(*kind, url(*kind), *wait, scale.sequential).await?;
                runs[i].0.push(p50);
                runs[i].1.push(p99);
            }
        }
        let mut rows = Vec::new();
        for ((kind, wait, name), (p50s, p99s)) in cases.iter().zip(&mut runs) {
            let (p50, p99) = (median(p50s), median(p99s));
            println!("  {name:<36} p50 {p50:>7.0}  p99 {p99:>7.0}");
            rows.push(json!({
                "client": kind.key(), "awaits": wait.key(), "messages": scale.sequential,
                "p50_us": p50, "p99_us": p99,
            }));
        }
        report.insert("sequential".into(), Value::Array(rows));
    }

    if want(Section::Rooms) {
        // A room spread over three nodes on Redis.
        match room_broadcast(scale).await {
            Ok(Some(row)) => {
                report.insert("room_broadcast".into(), row);
            }
            Ok(None) => {}
            Err(error) => return Err(format!("room broadcast: {error}")),
        }
    }

    if want(Section::Stores) {
        // The server's session store: memory against the embedded default.
        let data_dir = std::env::temp_dir().join(format!("steadfast-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let data_arg = data_dir.display().to_string();
        let embedded = spawn_server(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--exit-on-stdin-eof",
            "--sessions",
            "embedded",
            "--data-dir",
            &data_arg,
        ])
        .await?;
        // Redis too, if there is a redis-server to start (`cargo xtask setup`
        // installs Debian's): AOF on, fsynced on every write, as the store
        // requires on Redis 7.0.
        let redis = match RedisChild::start(&data_dir.join("redis")).await {
            Ok(redis) => Some(redis),
            Err(why) => {
                println!("\n(no Redis row: {why})");
                None
            }
        };
        let on_redis = match &redis {
            Some(redis) => Some(
                spawn_server(&[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--exit-on-stdin-eof",
                    "--redis",
                    &redis.url,
                ])
                .await?,
            ),
            None => None,
        };
        let mut stores = vec![
            ("memory", steadfast.url.as_str()),
            ("embedded", embedded.url.as_str()),
        ];
        if let Some(server) = &on_redis {
            stores.push(("redis", server.url.as_str()));
        }
        println!(
            "\nreliable echo by the server's session store (every commit fsynced; ratio to memory)"
        );
        let mut rows = Vec::new();
        for &size in &store_sizes {
            let count = count_for(scale, size);
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
            for _ in 0..scale.runs {
                for (i, (_, url)) in stores.iter().enumerate() {
                    rates[i].push(throughput(Kind::Reliable, url, size, count).await?);
                }
            }
            let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
            let mut line = format!("  pipelined {size:>5} B x {count:<6}");
            for ((store, _), rate) in stores.iter().zip(&medians) {
                line += &format!("  {store} {rate:>9.0} ({:.2})", rate / medians[0]);
            }
            println!("{line}");
            for ((store, _), (median, runs)) in stores.iter().zip(medians.iter().zip(&rates)) {
                rows.push(json!({
                    "store": store, "case": "pipelined", "size": size, "messages": count,
                    "per_s": median, "runs": runs,
                }));
            }
        }
        let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
        let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
        for _ in 0..scale.runs.min(3) {
            for (i, (_, url)) in stores.iter().enumerate() {
                let (p50, p99) =
                    sequential(Kind::Reliable, url, Await::Ack, scale.sequential).await?;
                p50s[i].push(p50);
                p99s[i].push(p99);
            }
        }
        for (i, (store, _)) in stores.iter().enumerate() {
            let (p50, p99) = (median(&mut p50s[i]), median(&mut p99s[i]));
            println!(
                "  `await send()` one at a time, {store:<8} p50 {p50:>7.0}  p99 {p99:>7.0} µs"
            );
            rows.push(json!({
                "store": store, "case": "sequential", "size": 64, "messages": scale.sequential,
                "p50_us": p50, "p99_us": p99,
            }));
        }
        for (store, url) in stores.iter().skip_while(|(store, _)| *store == "memory") {
            let Some(metrics) = server_metrics(url).await else {
                continue;
            };
            let get = |name: &str| {
                metrics
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(&format!("steadfast_{name} "))?
                            .parse::<f64>()
                            .ok()
                    })
                    .unwrap_or(f64::NAN)
            };
            let (commits, changes, micros) = (
                get("store_commits"),
                get("store_changes"),
                get("store_commit_micros"),
            );
            println!(
                "  {store} store: {commits:.0} commits, {:.1} changes each, {:.0} µs each (mean)",
                changes / commits,
                micros / commits
            );
            rows.push(json!({
                "store": store, "case": "commits", "commits": commits,
                "changes_per_commit": changes / commits, "commit_us": micros / commits,
            }));
        }
        drop(embedded);
        drop(on_redis);
        drop(redis);
        let _ = std::fs::remove_dir_all(&data_dir);
        report.insert("session_stores".into(), Value::Array(rows));
    }

    if want(Section::Big) {
        // One 16 MiB message.
        println!("\none 16 MiB message, round trip (MB/s of payload one way)");
        let mut rows = Vec::new();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for _ in 0..scale.runs.min(3) {
            for (i, kind) in Kind::ALL.into_iter().enumerate() {
                times[i].push(big_round_trip(kind, url(kind), 16 << 20).await?);
            }
        }
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let seconds = median(&mut times[i]);
            let rate = 16.0 * 1048576.0 / seconds / 1e6;
            println!(
                "  {:<22} {:>7.1} ms  {rate:>7.0} MB/s",
                kind.name(),
                seconds * 1e3
            );
            rows.push(json!({ "client": kind.key(), "seconds": seconds, "mb_per_s": rate }));
        }
        report.insert("big_message".into(), Value::Array(rows));
    }

    if want(Section::Idle) {
        // Idle memory, each in a fresh process.
        println!(
            "\nmemory per idle connection, {} connections from one process (KiB)",
            scale.idle_connections
        );
        let mut rows = Vec::new();
        for kind in [Kind::Reliable, Kind::Raw] {
            let measured = idle_child(kind, url(kind), scale.idle_connections).await?;
            let per = measured["per_connection_bytes"]
                .as_f64()
                .unwrap_or(f64::NAN);
            println!("  {:<22} {:>7.1}", kind.name(), per / 1024.0);
            rows.push(json!({ "client": kind.key(), "measured": measured }));
        }
        report.insert("idle_memory".into(), Value::Array(rows));
    }

    if want(Section::Durable) {
        // The durable outbox.
        println!(
            "\ndurable outbox (redb, each commit fsynced), 64 B messages, median of {}",
            scale.runs.min(3)
        );
        let durable = durable_enqueue(scale.durable_messages, scale.runs.min(3)).await?;
        println!(
            "  64 concurrent senders {:>8.0} msg/s ({:.1} µs each amortised); one sender awaiting each {:>6.0} msg/s",
            durable["concurrent_per_s"].as_f64().unwrap_or(0.0),
            durable["concurrent_us_per_message"].as_f64().unwrap_or(0.0),
            durable["sequential_per_s"].as_f64().unwrap_or(0.0),
        );
        report.insert("durable_enqueue".into(), durable);
    }

    if want(Section::Storm) {
        println!(
            "\nreconnect storm: {} reliable clients, the server (on its data dir) killed with SIGKILL and restarted",
            scale.storm_clients
        );
        let storm = storm(scale.storm_clients).await?;
        println!(
            "  restart {:.0} ms; back after it: first {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, all {:.0} ms; {:.0} accepts/s; listen overflows {}, drops {}; server CPU {:.2} s; {} resumed, {} resynced",
            storm["restart_ms"].as_f64().unwrap_or(f64::NAN),
            storm["first_back_ms"].as_f64().unwrap_or(f64::NAN),
            storm["back_p50_ms"].as_f64().unwrap_or(f64::NAN),
            storm["back_p99_ms"].as_f64().unwrap_or(f64::NAN),
            storm["back_all_ms"].as_f64().unwrap_or(f64::NAN),
            storm["accepts_per_s"].as_f64().unwrap_or(f64::NAN),
            storm["listen_overflows"],
            storm["listen_drops"],
            storm["server_cpu_s"].as_f64().unwrap_or(f64::NAN),
            storm["resumed"],
            storm["resynced"],
        );
        report.insert("storm".into(), storm);
    }

    if want(Section::Proxy) {
        let proxy = spawn_proxy(&raw.url).await?;
        println!(
            "\nraw echo through `steadfast proxy` (no faults, --quiet) against direct, medians of {}",
            scale.runs
        );
        let mut rows = Vec::new();
        for size in [64, 1024, 65536] {
            let count = count_for(scale, size);
            let (mut direct, mut through) = (Vec::new(), Vec::new());
            for _ in 0..scale.runs {
                direct.push(throughput(Kind::Raw, &raw.url, size, count).await?);
                through.push(
                    throughput(Kind::Raw, &proxy.url, size, count)
                        .await
                        .map_err(|e| format!("through the proxy at {size} B: {e}"))?,
                );
            }
            let (direct, through) = (median(&mut direct), median(&mut through));
            println!(
                "  {size:>6} B x {count:<6} direct {direct:>9.0}  proxied {through:>9.0} msg/s ({:.2})",
                through / direct
            );
            rows.push(
                json!({ "size": size, "messages": count, "direct": direct, "proxied": through }),
            );
        }
        let mut latency_rows = Vec::new();
        for (name, target) in [
            ("direct", raw.url.as_str()),
            ("proxied", proxy.url.as_str()),
        ] {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..scale.runs.min(3) {
                let (p50, p99) = latency(Kind::Raw, target, scale.latency_ms).await?;
                p50s.push(p50);
                p99s.push(p99);
            }
            let (p50, p99) = (median(&mut p50s), median(&mut p99s));
            println!(
                "  round trip at 1,000/s, 64 B, {name:<8} p50 {p50:>6.0} µs  p99 {p99:>6.0} µs"
            );
            latency_rows.push(json!({ "path": name, "p50_us": p50, "p99_us": p99 }));
        }
        report.insert(
            "proxy".into(),
            json!({ "throughput": rows, "latency": latency_rows }),
        );
    }

    if let Some(path) = json_out {
        let text =
            serde_json::to_string_pretty(&Value::Object(report)).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

async fn steadfast_client(kind: Kind, url: &str) -> Result<Client, String> {
    let client = Client::builder(url)
        .reliability(if kind == Kind::Plain {
            Reliability::Off
        } else {
            Reliability::Required
        })
        .max_unread(usize::MAX)
        .limits(steadfast::Limits {
            max_message_size: 32 << 20,
            max_buffered_bytes: 64 << 20,
            ..steadfast::Limits::default()
        })
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.wait_for_state(|s| s.is_open()),
    )
    .await
    .map_err(|_| format!("{} did not open in 10 s", kind.name()))?;
    Ok(client)
}

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_client(url: &str) -> Result<Raw, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| format!("raw connect: {e}"))?;
    Ok(ws)
}

/// The next message from a steadfast client.
async fn next_message(client: &Client) -> Result<Payload, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), client.next_event()).await {
            Ok(Some(ClientEvent::Message(payload))) => return Ok(payload),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the client stopped".into()),
            Err(_) => {
                return Err(format!(
                    "no message in 60 s (state {:?}; {:?})",
                    client.state(),
                    client.stats()
                ))
            }
        }
    }
}

/// Pipelined echo through a steadfast server (the quick `steadfast bench`).
pub(crate) async fn echo_rate(
    url: &str,
    plain: bool,
    size: usize,
    count: usize,
) -> Result<f64, String> {
    let kind = if plain { Kind::Plain } else { Kind::Reliable };
    throughput(kind, url, size, count).await
}

/// Send `count` messages of `size` bytes pipelined; messages/s once every echo is back.
async fn throughput(kind: Kind, url: &str, size: usize, count: usize) -> Result<f64, String> {
    let payload = vec![0x5a_u8; size];
    if kind == Kind::Raw {
        let ws = raw_client(url).await?;
        let (mut sink, mut stream) = ws.split();
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..count {
                sink.feed(Message::binary(payload.clone())).await?;
            }
            sink.flush().await?;
            Ok::<_, tokio_tungstenite::tungstenite::Error>(sink)
        });
        let mut received = 0;
        while received < count {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                Ok(Some(Ok(Message::Binary(_)))) => received += 1,
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("raw: after {received} echoes: {other:?}")),
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        if let Ok(Ok(mut sink)) = sender.await {
            let _ = sink.close().await;
        }
        return Ok(count as f64 / elapsed);
    }
    let client = steadfast_client(kind, url).await?;
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..count {
                if client.send(payload.clone()).await.is_err() {
                    return;
                }
            }
        })
    };
    for _ in 0..count {
        next_message(&client).await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = sender.await;
    let _ = client.close(1000, "").await;
    Ok(count as f64 / elapsed)
}

/// One 64 B message per ms for `duration_ms`; each round trip's p50 and p99
/// in µs, from the moment the message was handed to the client (the
/// payload carries it) to the moment its echo is read.
async fn latency(kind: Kind, url: &str, duration_ms: u64) -> Result<(f64, f64), String> {
    let count = duration_ms as usize;
    let start = Instant::now();
    let due = move |i: usize| start + Duration::from_millis(i as u64);
    let stamped = move || {
        let mut p = vec![0u8; 64];
        let sent = start.elapsed().as_nanos() as u64;
        p[..8].copy_from_slice(&sent.to_le_bytes());
        p
    };
    let rtt_us = move |data: &[u8]| -> f64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[..8.min(data.len())]);
        let sent = Duration::from_nanos(u64::from_le_bytes(n));
        start.elapsed().saturating_sub(sent).as_secs_f64() * 1e6
    };
    let mut rtts = Vec::with_capacity(count);
    if kind == Kind::Raw {
        let (mut sink, mut stream) = raw_client(url).await?.split();
        let sender = tokio::spawn(async move {
            for i in 0..count {
                tokio::time::sleep_until(due(i).into()).await;
                sink.send(Message::binary(stamped())).await?;
            }
            Ok::<_, tokio_tungstenite::tungstenite::Error>(sink)
        });
        while rtts.len() < count {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => rtts.push(rtt_us(&data)),
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("raw latency: {other:?}")),
            }
        }
        if let Ok(Ok(mut sink)) = sender.await {
            let _ = sink.close().await;
        }
    } else {
        let client = steadfast_client(kind, url).await?;
        let sender = {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..count {
                    tokio::time::sleep_until(due(i).into()).await;
                    if client.send(stamped()).await.is_err() {
                        return;
                    }
                }
            })
        };
        while rtts.len() < count {
            if let Payload::Binary(data) = next_message(&client).await? {
                rtts.push(rtt_us(&data));
            }
        }
        let _ = sender.await;
        let _ = client.close(1000, "").await;
    }
    rtts.sort_by(f64::total_cmp);
    let at = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    Ok((at(0.5), at(0.99)))
}

/// What a sequential round trip waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    /// The send's receipt: the server acknowledged the message.
    Ack,
    /// The echo of the message.
    Echo,
}

impl Await {
    fn key(self) -> &'static str {
        match self {
            Await::Ack => "ack",
            Await::Echo => "echo",
        }
    }
}

/// `count` 64 B messages, each sent once the last one's `wait` came back;
/// the p50 and p99 of those waits in µs.
async fn sequential(
    kind: Kind,
    url: &str,
    wait: Await,
    count: usize,
) -> Result<(f64, f64), String> {
    let payload = vec![0x5a_u8; 64];
    let mut times = Vec::with_capacity(count);
    if kind == Kind::Raw {
        let mut ws = raw_client(url).await?;
        for _ in 0..count {
            let start = Instant::now();
            ws.send(Message::binary(payload.clone()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Binary(_)))) => break,
                    Ok(Some(Ok(_))) => {}
                    other => return Err(format!("raw sequential: {other:?}")),
                }
            }
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        let _ = ws.close(None).await;
    } else {
        let client = steadfast_client(kind, url).await?;
        for _ in 0..count {
            let start = Instant::now();
            let receipt = client
                .send(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            match wait {
                Await::Ack => {
                    tokio::time::timeout(Duration::from_secs(30), receipt)
                        .await
                        .map_err(|_| "no ACK in 30 s".to_owned())?
                        .map_err(|e| e.to_string())?;
                    times.push(start.elapsed().as_secs_f64() * 1e6);
                    next_message(&client).await?;
                }
                Await::Echo => {
                    next_message(&client).await?;
                    times.push(start.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        let _ = client.close(1000, "").await;
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    Ok((at(0.5), at(0.99)))
}

/// One message of `size` bytes there and back; seconds.
async fn big_round_trip(kind: Kind, url: &str, size: usize) -> Result<f64, String> {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    if kind == Kind::Raw {
        let mut ws = raw_client(url).await?;
        let start = Instant::now();
        ws.send(Message::binary(payload.clone()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) => {
                    let elapsed = start.elapsed().as_secs_f64();
                    if data.len() != size {
                        return Err("raw: the echo differs".into());
                    }
                    let _ = ws.close(None).await;
                    return Ok(elapsed);
                }
                Some(Ok(_)) => {}
                other => return Err(format!("raw big message: {other:?}")),
            }
        }
    }
    let client = steadfast_client(kind, url).await?;
    let start = Instant::now();
    let receipt = client.send(payload).await.map_err(|e| e.to_string())?;
    let echo = next_message(&client).await?;
    let elapsed = start.elapsed().as_secs_f64();
    drop(receipt);
    let _ = client.close(1000, "").await;
    if echo.len() != size {
        return Err(format!("{}: the echo differs", kind.name()));
    }
    Ok(elapsed)
}

async fn idle_child(kind: Kind, url: &str, connections: usize) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let output = Command::new(exe)
        .args([
            "bench",
            "--role",
            "idle",
            "--url",
            url,
            "--client",
            kind.key(),
            "--connections",
            &connections.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| format!("cannot run the idle child: {e}"))?;
    if !output.status.success() {
        return Err(format!("the idle child ({}) failed", kind.name()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("idle child printed {text:?}: {e}"))
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `--role idle`: open `connections` idle connections, print the memory they cost.
pub(crate) async fn idle(url: &str, client: &str, connections: usize) -> Result<(), String> {
    let kind = match client {
        "raw" => Kind::Raw,
        "reliable" => Kind::Reliable,
        "plain" => Kind::Plain,
        other => return Err(format!("unknown client {other}")),
    };
    // Warm the allocator and the runtime with one connection first.
    let mut clients = Vec::new();
    let mut raws = Vec::new();
    let open_one = |url: String| async move {
        if kind == Kind::Raw {
            raw_client(&url).await.map(|ws| (None, Some(ws)))
        } else {
            steadfast_client(kind, &url).await.map(|c| (Some(c), None))
        }
    };
    let (c, r) = open_one(url.to_owned()).await?;
    clients.extend(c);
    raws.extend(r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes().ok_or("no /proc/self/status")?;
    let mut opening = futures::stream::iter((0..connections).map(|_| open_one(url.to_owned())))
        .buffer_unordered(64);
    while let Some(opened) = opening.next().await {
        let (c, r) = opened?;
        clients.extend(c);
        raws.extend(r);
    }
    drop(opening);
    // Let handshakes and first pings settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes().ok_or("no /proc/self/status")?;
    let per = after.saturating_sub(before) as f64 / connections as f64;
    println!(
        "{}",
        json!({
            "connections": connections,
            "rss_before": before,
            "rss_after": after,
            "per_connection_bytes": per,
        })
    );
    drop(clients);
    drop(raws);
    Ok(())
}

/// `--role raw-echo`: a tokio-tungstenite echo server until stdin closes.
pub(crate) async fn raw_echo() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on ws://{addr}");
    let serve = async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(64 << 20))
                    .max_frame_size(Some(64 << 20));
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                // Echo, flushing when nothing more is ready (pipelining).
                while let Some(Ok(message)) = stream.next().await {
                    if !(message.is_binary() || message.is_text()) {
                        continue;
                    }
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                    loop {
                        match futures::FutureExt::now_or_never(stream.next()) {
                            Some(Some(Ok(m))) if m.is_binary() || m.is_text() => {
                                if sink.feed(m).await.is_err() {
                                    return;
                                }
                            }
                            Some(Some(Ok(_))) => {}
                            Some(_) => return,
                            None => break,
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    };
    let stdin_closed = async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    tokio::select! {
        () = serve => {},
        () = stdin_closed => {},
    }
    Ok(())
}

/// Enqueue into a durable outbox with the server unreachable.
async fn durable_enqueue(count: usize, runs: usize) -> Result<Value, String> {
    const SENDERS: usize = 64;
    let dir = std::env::temp_dir().join(format!("steadfast-bench-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Nothing listens on a port we bound and closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let open = |name: &str| {
        let store = DurableStore::open(dir.join(name)).map_err(|e| e.to_string());
        let url = url.clone();
        async move {
            Client::builder(url)
                .store(store?)
                .outbox(steadfast::OutboxConfig {
                    max_messages: count * 2,
                    ..steadfast::OutboxConfig::default()
                })
                .connect()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let payload = vec![0x42_u8; 64];

    // fsync times vary run to run: the median of a few fresh stores.
    let mut concurrent_runs = Vec::new();
    for run in 0..runs {
        let client = open(&format!("concurrent-{run}.redb")).await?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let client = client.clone();
            let payload = payload.clone();
            let share = count / SENDERS + usize::from(s < count % SENDERS);
            tasks.push(tokio::spawn(async move {
                for _ in 0..share {
                    let receipt = client.send(payload.clone()).await?;
                    if !receipt.is_durable() {
                        return Err(steadfast::Error::Store("not durable".into()));
                    }
                }
                Ok(())
            }));
        }
        for task in tasks {
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        concurrent_runs.push(start.elapsed().as_secs_f64());
        if client.stats().queued != count {
            return Err(format!("{} of {count} queued", client.stats().queued));
        }
        let _ = client.close(1000, "").await;
        drop(client);
    }
    let concurrent = median(&mut concurrent_runs.clone());

    let client = open("sequential.redb").await?;
    let sequential_count = (count / 20).max(50);
    let start = Instant::now();
    for _ in 0..sequential_count {
        drop(
            client
                .send(payload.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let sequential = start.elapsed().as_secs_f64();
    let _ = client.close(1000, "").await;
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "messages": count,
        "senders": SENDERS,
        "concurrent_per_s": count as f64 / concurrent,
        "concurrent_runs_us_per_message": concurrent_runs
            .iter()
            .map(|t| t * 1e6 / count as f64)
            .collect::<Vec<_>>(),
        "concurrent_us_per_message": concurrent * 1e6 / count as f64,
        "sequential_messages": sequential_count,
        "sequential_per_s": sequential_count as f64 / sequential,
        "sequential_us_per_message": sequential * 1e6 / sequential_count as f64,
    }))
}

/// `TcpExt` counters from /proc/net/netstat: (ListenOverflows, ListenDrops).
fn listen_counters() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else {
        return (0, 0);
    };
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let field = |name: &str| {
            names
                .split_whitespace()
                .position(|n| n == name)
                .and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        return (field("ListenOverflows"), field("ListenDrops"));
    }
    (0, 0)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    match (ticks(11), ticks(12)) {
        // The kernel's USER_HZ is 100 on every Linux this runs on.
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// The server for the storm: `steadfast serve` on `port` and `dir`.
async fn storm_server(port: u16, dir: &std::path::Path) -> Result<ServerProcess, String> {
    let listen = format!("127.0.0.1:{port}");
    let dir = dir.display().to_string();
    spawn_server(&[
        "serve",
        "--listen",
        &listen,
        "--exit-on-stdin-eof",
        "--data-dir",
        &dir,
    ])
    .await
}

/// A real reconnect storm: `clients` reliable `steadfast::Client`s (the
/// default backoff) on one `steadfast serve` with its data dir; the server
/// is killed with SIGKILL and started again on the same port and dir.
/// Each client times its return (open again, after the server's), then
/// sends one message and waits for its echo. Every client must resume
/// its session (a resync fails the run).
async fn storm(clients: usize) -> Result<Value, String> {
    use std::sync::Arc;
    // This process holds a socket per client.
    let _ = steadfast_server::raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("steadfast-bench-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.port()
    };
    let mut server = storm_server(port, &dir).await?;
    let url = format!("ws://127.0.0.1:{port}");

    // Connect in waves, so the storm measured is the restart's, not ours.
    let killed = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::with_capacity(clients);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(clients.max(1));
    for i in 0..clients {
        let client = Client::builder(url.as_str())
            .seed(i as u64)
            .connect()
            .await
            .map_err(|e| format!("client {i}: {e}"))?;
        let killed = killed.clone();
        let opened_tx = opened_tx.clone();
        tasks.push(tokio::spawn(async move {
            // Open before the kill, then open again after it: its return.
            let mut back = None;
            while back.is_none() {
                match client.next_event().await {
                    Some(ClientEvent::State(steadfast::ConnectionState::Open { .. })) => {
                        let at = *killed.lock().unwrap_or_else(|p| p.into_inner());
                        match at {
                            None => {
                                let _ = opened_tx.send(()).await;
                            }
                            Some(_) => back = Some(Instant::now()),
                        }
                    }
                    Some(ClientEvent::ResyncRequired) => return Err("resync".to_owned()),
                    Some(_) => {}
                    None => return Err("the client ended".to_owned()),
                }
            }
            let receipt = client
                .send(format!("back {i}"))
                .await
                .map_err(|e| e.to_string())?;
            let echoed = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match client.next_event().await {
                        Some(ClientEvent::Message(_)) => return Ok(()),
                        Some(ClientEvent::ResyncRequired) => return Err("resync".to_owned()),
                        Some(_) => {}
                        None => return Err("the client ended".to_owned()),
                    }
                }
            })
            .await
            .map_err(|_| "no echo in 60 s".to_owned())?;
            echoed?;
            let _ = receipt.await;
            let stats = client.stats();
            let _ = client.close(1000, "done").await;
            Ok::<_, String>((back, stats.engine.resumes, stats.engine.resyncs))
        }));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(opened_tx);
    for opened in 0..clients {
        tokio::time::timeout(Duration::from_secs(60), opened_rx.recv())
            .await
            .map_err(|_| format!("only {opened} of {clients} clients connected"))?;
    }
    // Let the sessions' first commits land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (overflows_before, drops_before) = listen_counters();
    *killed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let kill_at = Instant::now();
    server
        .child
        .start_kill()
        .map_err(|e| format!("kill the server: {e}"))?;
    let _ = server.child.wait().await;
    let restarted = storm_server(port, &dir).await?;
    let up_at = Instant::now();
    let pid = restarted.child.id().unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let mut backs = Vec::with_capacity(clients);
    let (mut resumed, mut resynced) = (0u64, 0u64);
    for task in tasks {
        let (back, resumes, resyncs) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .map_err(|_| "a client was not back within 120 s".to_owned())?
            .map_err(|e| format!("a client task failed: {e}"))??;
        if let Some(back) = back {
            backs.push(back.saturating_duration_since(up_at).as_secs_f64() * 1e3);
        }
        resumed += u64::from(resumes > 0);
        resynced += resyncs;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let (overflows, drops) = listen_counters();
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
    if resynced > 0 {
        return Err(format!("{resynced} clients resynced: sessions were lost"));
    }
    backs.sort_by(f64::total_cmp);
    let at = |q: f64| backs[((backs.len() as f64 - 1.0) * q).round() as usize];
    let all = backs.last().copied().unwrap_or(f64::NAN);
    Ok(json!({
        "clients": clients,
        "restart_ms": up_at.duration_since(kill_at).as_secs_f64() * 1e3,
        "first_back_ms": backs.first().copied().unwrap_or(f64::NAN),
        "back_p50_ms": at(0.5),
        "back_p99_ms": at(0.99),
        "back_all_ms": all,
        "accepts_per_s": clients as f64 / (all / 1e3).max(1e-3),
        "listen_overflows": overflows.saturating_sub(overflows_before),
        "listen_drops": drops.saturating_sub(drops_before),
        "server_cpu_s": cpu,
        "resumed": resumed,
        "resynced": resynced,
    }))
}
