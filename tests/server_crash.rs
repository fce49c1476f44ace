//! Server crash safety: the reference server, as its own process with its
//! sessions in a durable store (the embedded one in `--data-dir`, the
//! default of `steadfast serve`, or a real Redis), is killed with SIGKILL
//! twice while a reliable client streams messages to it and its echoes
//! stream back, and restarted each time on the same port and store; with
//! Redis, the redis-server process is killed and restarted mid-stream
//! too. Counted at the client by message id: every send is acknowledged,
//! and every echo (what the server's application sent for each message)
//! arrives exactly once, in order, with no resync.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::{Client, ClientEvent, Payload};
use steadfast_core::Rng;
use steadfast_testkit::RedisServer;
use steadfast_tests::{expect_all_acked, fast_backoff, send_paced, ServerProcess};

const SERVER: &str = env!("CARGO_BIN_EXE_steadfast-test-server");
const N: usize = 3_000;
const WAIT: Duration = Duration::from_secs(60);

/// One server process of the test binary.
struct Server(ServerProcess);

impl Server {
    fn start(listen: &str, store: &[String]) -> Server {
        Server(ServerProcess::start(SERVER, listen, store))
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

fn index(payload: &Payload) -> usize {
    match payload {
        Payload::Text(text) => text
            .strip_prefix('c')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {text:?}")),
        Payload::Binary(_) => panic!("unexpected binary message"),
    }
}

fn scratch(seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "steadfast-server-crash-{}-{seed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What happens at a kill point.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL the server, start it again on the same port and store.
    Server,
    /// SIGKILL redis-server, start it again 200 ms later.
    Redis,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_resumes_every_session_from_its_data_dir() {
    let seed = seed();
    let dir = scratch(seed);
    let store = vec!["--data-dir".to_owned(), dir.display().to_string()];
    stream_through(seed, store, None, [Fault::Server, Fault::Server]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_resumes_every_session_from_redis() {
    let seed = seed();
    let redis = RedisServer::start().expect("redis-server");
    let store = vec!["--redis".to_owned(), redis.url()];
    stream_through(seed, store, Some(redis), [Fault::Server, Fault::Server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_loses_nothing_acknowledged() {
    let seed = seed();
    let redis = RedisServer::start().expect("redis-server");
    let store = vec!["--redis".to_owned(), redis.url()];
    stream_through(seed, store, Some(redis), [Fault::Redis, Fault::Server]).await;
}

fn seed() -> u64 {
    std::env::var("STEADFAST_SERVER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

/// Stream N messages each way through `faults`, at seeded points.
async fn stream_through(
    seed: u64,
    store: Vec<String>,
    redis: Option<RedisServer>,
    faults: [Fault; 2],
) {
    let mut rng = Rng::new(seed);
    let first_kill = N / 5 + rng.up_to(N as u64 / 5) as usize;
    let second_kill = first_kill + N / 5 + rng.up_to(N as u64 / 5) as usize;
    eprintln!(
        "server crash seed {seed}: {:?} after {first_kill} and {:?} after {second_kill} echoes \
         (set STEADFAST_SERVER_CRASH_SEED to replay)",
        faults[0], faults[1]
    );
    let first = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || Server::start("127.0.0.1:0", &store))
            .await
            .expect("started")
    };
    let url = first.0.url.clone();
    let listen = first.0.addr().to_string();
    let server = Arc::new(Mutex::new(first));
    let redis = Arc::new(Mutex::new(redis));
    let client = Client::builder(&url)
        .backoff(fast_backoff())
        .seed(seed)
        .connect()
        .await
        .expect("valid options");

    // The reader kills the server when the echoes reach each kill point,
    // and starts it again on the same port and data dir.
    let echoed = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (client, server, redis, echoed) = (
            client.clone(),
            server.clone(),
            redis.clone(),
            echoed.clone(),
        );
        tokio::spawn(async move {
            let mut echoes = Vec::with_capacity(N);
            let mut kills = vec![(second_kill, faults[1]), (first_kill, faults[0])];
            while echoes.len() < N {
                match tokio::time::timeout(WAIT, client.next_event()).await {
                    Ok(Some(ClientEvent::Message(message))) => {
                        echoes.push(index(&message));
                        echoed.store(echoes.len(), Ordering::SeqCst);
                    }
                    Ok(Some(ClientEvent::Skipped(count))) => {
                        panic!("{count} echoes skipped: the server lost them")
                    }
                    Ok(Some(ClientEvent::ResyncRequired)) => {
                        panic!("resync: the restarted server did not know the session")
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the client ended after {} echoes", echoes.len()),
                    Err(_) => panic!("no echo for {WAIT:?} after {}", echoes.len()),
                }
                if kills.last().map(|(at, _)| *at) == Some(echoes.len()) {
                    let Some((_, fault)) = kills.pop() else {
                        continue;
                    };
                    let (server, redis) = (server.clone(), redis.clone());
                    let (listen, store) = (listen.clone(), store.clone());
                    tokio::task::spawn_blocking(move || match fault {
                        Fault::Server => {
                            let mut server = server.lock().expect("not poisoned");
                            server.kill();
                            *server = Server::start(&listen, &store);
                        }
                        Fault::Redis => {
                            let mut redis = redis.lock().expect("not poisoned");
                            let redis = redis.as_mut().expect("a Redis to kill");
                            redis.kill();
                            std::thread::sleep(Duration::from_millis(200));
                            redis.restart().expect("redis-server restarts");
                        }
                    })
                    .await
                    .expect("restarted");
                }
            }
            echoes
        })
    };

    // Paced (10 a millisecond) so the kills land mid-stream both ways.
    let receipts = send_paced(&client, N).await;
    expect_all_acked(receipts, WAIT).await;
    let echoes = tokio::time::timeout(WAIT, reader)
        .await
        .expect("every echo in time")
        .expect("the reader ran");
    let stats = client.stats().engine;
    let first_difference = echoes.iter().enumerate().position(|(i, e)| *e != i);
    assert!(
        echoes.len() == N && first_difference.is_none(),
        "{} echoes, first out of place at {first_difference:?} (seed {seed}); client: {} \
         resumes, {} resyncs, {} resends",
        echoes.len(),
        stats.resumes,
        stats.resyncs,
        stats.resends
    );
    assert_eq!(stats.resyncs, 0, "no resync (seed {seed})");
    // Each server kill cuts the connection; a Redis kill does not (the
    // server holds its ACKs and echoes until the store is back).
    let server_kills = faults.iter().filter(|f| matches!(f, Fault::Server)).count() as u64;
    assert!(
        stats.resumes >= server_kills,
        "resumed after each server kill ({server_kills}): {}",
        stats.resumes
    );
    eprintln!(
        "server crash: {N} sent and acknowledged, {N} echoes once each; {} resumes, {} \
         resends, {} duplicates dropped",
        stats.resumes, stats.resends, stats.duplicates
    );
    // The store's commits show in the last server's /metrics.
    let commits = server
        .lock()
        .expect("not poisoned")
        .0
        .metric("store_commit_seconds_count");
    assert!(
        commits.is_some_and(|n| n > 0),
        "commits observed: {commits:?}"
    );
    // It started with the client's session in the store.
    let stored = server
        .lock()
        .expect("not poisoned")
        .0
        .metric("store_sessions");
    assert!(stored.is_some_and(|n| n >= 1), "stored: {stored:?}");
    let _ = client.close(1000, "done").await;
    drop(server);
}

/// The next JSON text the client receives (a resync fails the test).
async fn next_json(client: &Client) -> serde_json::Value {
    loop {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(Payload::Text(text)))) => {
                return serde_json::from_str(&text).expect("JSON from the rooms handler")
            }
            Ok(Some(ClientEvent::ResyncRequired)) => panic!("resync: the session was lost"),
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

/// Send `request` and return the next reply of `kind`, keeping the
/// messages of other kinds that arrive first.
async fn ask(client: &Client, request: serde_json::Value, kind: &str) -> serde_json::Value {
    drop(client.send(request.to_string()).await.expect("queued"));
    loop {
        let reply = next_json(client).await;
        if reply["type"] == kind {
            return reply;
        }
    }
}

/// `steadfast serve --handler rooms` on its data dir, killed with SIGKILL
/// and restarted: its sessions come back with their peer ids and rooms
/// (restored at start, before their clients return), so a post to a room
/// reaches every member once, and a direct message finds its peer by the
/// id it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_peer_ids_survive_a_sigkill_on_the_data_dir() {
    let dir = scratch(7_000);
    let store = vec![
        "--handler".to_owned(),
        "rooms".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    let first = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || Server::start("127.0.0.1:0", &store))
            .await
            .expect("started")
    };
    let url = first.0.url.clone();
    let listen = first.0.addr().to_string();
    let connect = |seed: u64| {
        Client::builder(&url)
            .backoff(fast_backoff())
            .seed(seed)
            .connect()
    };
    let (a, b, c) = (
        connect(1).await.expect("a"),
        connect(2).await.expect("b"),
        connect(3).await.expect("c"),
    );
    let whoami = serde_json::json!({"type": "whoami"});
    let a_id = ask(&a, whoami.clone(), "whoami").await["peer"].clone();
    let b_id = ask(&b, whoami.clone(), "whoami").await["peer"].clone();
    let join = serde_json::json!({"type": "join", "room": "r"});
    ask(&a, join.clone(), "joined").await;
    ask(&c, join.clone(), "joined").await;
    assert_eq!(ask(&b, join, "joined").await["members"], 3);
    // c goes away (its session stays, detached): only a server that
    // restores every session at start still has it in the room.
    let _ = c.close(1000, "away").await;

    let mut server = first;
    let restarted = tokio::task::spawn_blocking(move || {
        server.kill();
        Server::start(&listen, &store)
    })
    .await
    .expect("restarted");

    // b posts (the server may still be waiting for a to come back).
    let post = serde_json::json!({"type": "room", "room": "r", "data": "after the kill"});
    assert_eq!(
        ask(&b, post, "sent").await["count"],
        2,
        "a and c are still members"
    );
    let got = next_json(&a).await;
    assert_eq!(
        (&got["type"], &got["from"], &got["room"], &got["data"]),
        (
            &serde_json::json!("message"),
            &b_id,
            &serde_json::json!("r"),
            &serde_json::json!("after the kill")
        ),
        "{got}"
    );
    // A direct message by the id b had before the kill reaches b, once.
    let direct = serde_json::json!({"type": "direct", "to": b_id, "data": "hi"});
    assert_eq!(ask(&a, direct, "sent").await["count"], 1);
    let got = next_json(&b).await;
    assert_eq!(
        (&got["from"], &got["data"]),
        (&a_id, &serde_json::json!("hi")),
        "{got}"
    );
    // Same ids; and nothing arrived twice: the next thing a gets is this.
    assert_eq!(ask(&a, whoami.clone(), "whoami").await["peer"], a_id);
    let next = {
        drop(
            b.send(serde_json::json!({"type": "whoami"}).to_string())
                .await
                .expect("queued"),
        );
        next_json(&b).await
    };
    assert_eq!(next["peer"], b_id, "{next}");
    let check = serde_json::json!({"type": "direct", "to": a_id, "data": "last"});
    ask(&b, check, "sent").await;
    let last = next_json(&a).await;
    assert_eq!(last["data"], "last", "the post arrived once: {last}");
    // c comes back and finds the post sent while it was away.
    c.reconnect();
    let got = next_json(&c).await;
    assert_eq!(
        (&got["from"], &got["data"]),
        (&b_id, &serde_json::json!("after the kill"))
    );
    let _ = (a.close(1000, "done").await, b.close(1000, "done").await);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
