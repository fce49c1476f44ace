//! Two server nodes on one Redis behind a TCP front that the tests switch
//! between them, as a load balancer would. A client that lands on the
//! other node resumes its session there (the node claims it); the node
//! that had it is fenced: its writes for the session are refused and it
//! lets the session go. Counted at the client by message id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::{Client, ClientEvent, ConnectionState, Delivery, Payload};
use steadfast_core::Rng;
use steadfast_server::{Echo, RedisSessions, Rooms, Server, ServerHandle};
use steadfast_testkit::{eventually, Front, RedisServer};
use steadfast_tests::raw::http_get;
use steadfast_tests::{expect_all_acked, fast_backoff, send_paced, ServerProcess};

const SERVER: &str = env!("CARGO_BIN_EXE_steadfast-test-server");
const WAIT: Duration = Duration::from_secs(30);

fn text(payload: &Payload) -> String {
    match payload {
        Payload::Text(text) => text.clone(),
        Payload::Binary(_) => panic!("unexpected binary message"),
    }
}

/// A node in this process on `redis`: the echo handler, sessions in Redis.
async fn node(redis: &RedisServer) -> (std::net::SocketAddr, ServerHandle) {
    node_with(redis, Echo).await
}

/// A node in this process on `redis` with `handler`.
async fn node_with(
    redis: &RedisServer,
    handler: impl steadfast_server::Handler,
) -> (std::net::SocketAddr, ServerHandle) {
    let store = RedisSessions::open(&redis.url(), "cluster").expect("open the store");
    let server = Server::builder()
        .handler(handler)
        .session_store(store)
        .bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind loopback");
    let (addr, handle) = (server.local_addr(), server.handle());
    tokio::spawn(server.run(std::future::pending()));
    (addr, handle)
}

/// Send `texts` and read their echoes, in order, once each.
async fn round(client: &Client, texts: &[String]) {
    let mut receipts = Vec::new();
    for text in texts {
        receipts.push(client.send(text.clone()).await.expect("queued"));
    }
    for receipt in receipts {
        let delivery = tokio::time::timeout(WAIT, receipt)
            .await
            .expect("an ACK in time");
        assert_eq!(delivery, Ok(Delivery::Acked));
    }
    let mut echoes = Vec::new();
    while echoes.len() < texts.len() {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(message))) => echoes.push(text(&message)),
            Ok(Some(ClientEvent::ResyncRequired)) => panic!("resync: the session was lost"),
            Ok(Some(ClientEvent::Skipped(n))) => panic!("{n} echoes skipped"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client ended"),
            Err(_) => panic!("no echo in {WAIT:?} after {echoes:?}"),
        }
    }
    assert_eq!(echoes, texts, "every echo once, in order");
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_session_was_claimed_elsewhere_is_fenced_and_lets_it_go() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, node_a) = node(&redis).await;
    let (b, node_b) = node(&redis).await;
    let front = Front::start(a).await;
    let client = Client::builder(front.url())
        .backoff(fast_backoff())
        .seed(7)
        .connect()
        .await
        .expect("valid options");
    round(&client, &texts("a", 100)).await;
    let on_a = node_a.peers();
    assert_eq!(on_a.len(), 1, "the session on node A");

    // The load balancer moves the client to node B, which claims the session.
    front.switch(b);
    front.cut();
    round(&client, &texts("b", 100)).await;
    assert_eq!(
        node_b.metrics().get("store_claims"),
        Some(1),
        "B claimed it"
    );
    assert_eq!(client.stats().engine.resyncs, 0, "resumed, not resynced");

    // Node A still holds its copy (detached): its application sends on it.
    // The write is refused (another claim holds the session) and A lets it
    // go; the message, which nobody would send again, is forwarded to the
    // session's inbox and reaches the client through B, once.
    node_a
        .send(on_a[0], Payload::Text("from the old node".into()))
        .expect("queued on A's copy");
    eventually("A is fenced", WAIT, || {
        node_a.metrics().get("store_fenced") == Some(1)
    })
    .await;
    eventually("A lets the session go", WAIT, || node_a.peers().is_empty()).await;
    loop {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(message))) => {
                assert_eq!(text(&message), "from the old node");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("the forwarded message did not arrive: {other:?}"),
        }
    }
    round(&client, &texts("c", 10)).await;
    assert_eq!(node_b.peers().len(), 1, "B keeps it");
}

/// What happens to the node holding the session.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL.
    Kill,
    /// SIGSTOP, and SIGCONT once the client is on the other node.
    Pause,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_stream_the_client_resumes_on_the_other_node() {
    stream_across_nodes(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_paused_mid_stream_is_fenced_when_it_wakes() {
    stream_across_nodes(Fault::Pause).await;
}

async fn stream_across_nodes(fault: Fault) {
    const N: usize = 3_000;
    let seed: u64 = std::env::var("STEADFAST_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let at = N / 5 + Rng::new(seed).up_to(N as u64 / 2) as usize;
    eprintln!("cluster seed {seed}: {fault:?} the owner after {at} echoes");
    let redis = RedisServer::start().expect("redis-server");
    let store = vec!["--redis".to_owned(), redis.url()];
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            ServerProcess::start(SERVER, "127.0.0.1:0", &store),
            ServerProcess::start(SERVER, "127.0.0.1:0", &store),
        )
    })
    .await
    .expect("both started");
    let front = Arc::new(Front::start(a.addr()).await);
    let b_addr = b.addr();
    let a = Arc::new(Mutex::new(a));
    let client = Client::builder(front.url())
        .backoff(fast_backoff())
        .seed(seed)
        .connect()
        .await
        .expect("valid options");
    let echoed = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (client, a, front, echoed) = (client.clone(), a.clone(), front.clone(), echoed.clone());
        tokio::spawn(async move {
            let mut echoes = Vec::with_capacity(N);
            let mut paused = false;
            let mut faulted = false;
            while echoes.len() < N {
                match tokio::time::timeout(WAIT, client.next_event()).await {
                    Ok(Some(ClientEvent::Message(message))) => {
                        let text = text(&message);
                        let i: usize = text[1..].parse().expect("c<number>");
                        echoes.push(i);
                        echoed.store(echoes.len(), Ordering::SeqCst);
                    }
                    Ok(Some(ClientEvent::ResyncRequired)) => panic!("resync: the session was lost"),
                    Ok(Some(ClientEvent::Skipped(n))) => panic!("{n} echoes skipped"),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the client ended after {}", echoes.len()),
                    Err(_) => panic!("no echo in {WAIT:?} after {}", echoes.len()),
                }
                // Once: other events (the reconnect's) come by with the
                // count still at `at`, and cutting again would loop.
                if echoes.len() == at && !faulted {
                    faulted = true;
                    let mut owner = a.lock().expect("not poisoned");
                    match fault {
                        Fault::Kill => owner.kill(),
                        Fault::Pause => {
                            owner.signal("STOP");
                            paused = true;
                        }
                    }
                    drop(owner);
                    front.switch(b_addr);
                    front.cut();
                }
                if paused && echoes.len() == at + 200 {
                    // The client is on B: wake A up.
                    a.lock().expect("not poisoned").signal("CONT");
                    paused = false;
                }
            }
            echoes
        })
    };
    let receipts = send_paced(&client, N).await;
    expect_all_acked(receipts, WAIT).await;
    let echoes = tokio::time::timeout(WAIT, reader)
        .await
        .expect("every echo in time")
        .expect("the reader ran");
    let first_difference = echoes.iter().enumerate().position(|(i, e)| *e != i);
    let stats = client.stats().engine;
    assert!(
        echoes.len() == N && first_difference.is_none(),
        "{} echoes, first out of place at {first_difference:?}: {:?} (seed {seed}); {} resumes, \
         {} resyncs",
        echoes.len(),
        first_difference.map(|i| &echoes[i.saturating_sub(3)..(i + 8).min(echoes.len())]),
        stats.resumes,
        stats.resyncs
    );
    assert_eq!(stats.resyncs, 0);
    eprintln!(
        "cluster ({fault:?}): {N} acknowledged, {N} echoes once each in order; {} resumes, {} \
         resends",
        stats.resumes, stats.resends
    );
    if let Fault::Pause = fault {
        let owner = a.lock().expect("not poisoned");
        eprintln!(
            "cluster (Pause): the woken node had {:?} sessions fenced",
            owner.metric("store_fenced")
        );
    }
    let _ = client.close(1000, "done").await;
}

/// Redis loses everything (`FLUSHALL`) mid-session: the node's next write
/// for the session is refused, it lets the session go, and the client
/// hears `ResyncRequired` at once; nothing is silent, and its messages
/// from then on are delivered in the new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_makes_the_client_resync_explicitly() {
    let redis = RedisServer::start().expect("redis-server");
    let (addr, node) = node(&redis).await;
    let client = Client::builder(format!("ws://{addr}"))
        .backoff(fast_backoff())
        .seed(9)
        .connect()
        .await
        .expect("valid options");
    round(&client, &texts("a", 50)).await;
    let mut connection = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect to redis");
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut connection)
        .expect("flushall");
    // The next message's commit is refused: the node lets the session go.
    let receipt = client.send("b0").await.expect("queued");
    let mut resynced = false;
    let mut echoes = Vec::new();
    while !(resynced && echoes.contains(&"b0".to_owned())) {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::ResyncRequired)) => resynced = true,
            Ok(Some(ClientEvent::Message(message))) => echoes.push(text(&message)),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client ended"),
            Err(_) => panic!("no resync in {WAIT:?} (echoes {echoes:?})"),
        }
    }
    assert_eq!(
        tokio::time::timeout(WAIT, receipt).await.ok(),
        Some(Ok(Delivery::Acked))
    );
    assert_eq!(
        node.metrics().get("store_fenced"),
        Some(1),
        "the write refused"
    );
    assert_eq!(client.stats().engine.resyncs, 1);
    // The new session is stored: messages go on.
    round(&client, &texts("c", 20)).await;
}

/// Redis down: `/healthz` says so (503), the node acknowledges nothing
/// (the client keeps its message), and once Redis is back both recover by
/// themselves: the message is acknowledged and echoed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_holds_acks_and_fails_healthz_until_it_is_back() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (addr, _node) = node(&redis).await;
    assert!(http_get(addr, "/healthz").await.0.contains("200"));
    let client = Client::builder(format!("ws://{addr}"))
        .backoff(fast_backoff())
        .seed(11)
        .connect()
        .await
        .expect("valid options");
    round(&client, &texts("a", 20)).await;
    redis.kill();
    let (status, body) = http_get(addr, "/healthz").await;
    assert!(status.contains("503"), "{status}: {body}");
    assert!(body.contains("[ERR_SESSION_STORE] unavailable"), "{body}");
    let receipt = client.send("during the outage").await.expect("queued");
    let mut receipt = Box::pin(std::future::IntoFuture::into_future(receipt));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut receipt)
            .await
            .is_err(),
        "acknowledged while nothing could store it"
    );
    assert_eq!(client.stats().queued, 1, "the client keeps it");
    // A client arriving now is refused at once (1013: it backs off and
    // retries), not left without an answer.
    let newcomer = Client::builder(format!("ws://{addr}"))
        .backoff(fast_backoff())
        .seed(12)
        .connect()
        .await
        .expect("valid options");
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match newcomer.next_event().await {
                Some(ClientEvent::State(ConnectionState::Reconnecting { reason, .. }))
                    if format!("{reason:?}").contains("1013") =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("the newcomer ended"),
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "refused with 1013 while the store is down");
    let _ = newcomer.close(1000, "done").await;
    redis.restart().expect("redis-server restarts");
    assert_eq!(
        tokio::time::timeout(WAIT, receipt).await.ok(),
        Some(Ok(Delivery::Acked))
    );
    let mut echoes = Vec::new();
    while echoes.is_empty() {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(message))) => echoes.push(text(&message)),
            Ok(Some(ClientEvent::ResyncRequired)) => panic!("resync"),
            Ok(Some(_)) => {}
            other => panic!("no echo: {other:?}"),
        }
    }
    assert_eq!(echoes, vec!["during the outage".to_owned()]);
    let (status, _) = http_get(addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    round(&client, &texts("b", 20)).await;
}

/// The next JSON text `client` receives.
async fn next_json(client: &Client) -> serde_json::Value {
    loop {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(ClientEvent::Message(message))) => {
                return serde_json::from_str(&text(&message)).expect("JSON from the rooms handler")
            }
            Ok(Some(ClientEvent::ResyncRequired)) => panic!("resync"),
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

/// Each client joins room `r` (the rooms handler) and reads the answer.
async fn join_room(clients: &[&Client]) {
    for client in clients {
        let join = serde_json::json!({"type": "join", "room": "r"}).to_string();
        drop(client.send(join).await.expect("queued"));
        assert_eq!(next_json(client).await["type"], "joined");
    }
}

/// `poster` posts 0..count to room `r`, one per millisecond.
fn post_paced(poster: &Client, count: u64) -> tokio::task::JoinHandle<()> {
    let poster = poster.clone();
    tokio::spawn(async move {
        for i in 0..count {
            let post = serde_json::json!({"type": "room", "room": "r", "data": i});
            drop(poster.send(post.to_string()).await.expect("queued"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// A direct message to a peer held by another node reaches it, once each
/// and in order: the sending node posts it to the peer's session inbox in
/// Redis (committed with the sender's delivered mark), and the node that
/// holds the peer takes it into the session's outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_reaches_a_peer_on_another_node_once() {
    const N: usize = 200;
    let redis = RedisServer::start().expect("redis-server");
    let (a, _node_a) = node_with(&redis, Rooms).await;
    let (b, node_b) = node_with(&redis, Rooms).await;
    let connect = |addr: std::net::SocketAddr, seed: u64| {
        Client::builder(format!("ws://{addr}"))
            .backoff(fast_backoff())
            .seed(seed)
            .connect()
    };
    let (x, y) = (
        connect(a, 1).await.expect("x"),
        connect(b, 2).await.expect("y"),
    );
    let whoami = serde_json::json!({"type": "whoami"}).to_string();
    drop(x.send(whoami.clone()).await.expect("queued"));
    let x_id = next_json(&x).await["peer"].clone();
    drop(y.send(whoami).await.expect("queued"));
    let y_id = next_json(&y).await["peer"].clone();
    for i in 0..N {
        let direct = serde_json::json!({"type": "direct", "to": y_id, "data": i});
        drop(x.send(direct.to_string()).await.expect("queued"));
    }
    let mut got = Vec::new();
    while got.len() < N {
        let message = next_json(&y).await;
        assert_eq!(message["from"], x_id, "{message}");
        got.push(message["data"].as_u64().expect("a number"));
    }
    assert_eq!(
        got,
        (0..N as u64).collect::<Vec<_>>(),
        "once each, in order"
    );
    // Announced by hints (the periodic check is the fallback).
    let hints = node_b
        .metrics()
        .mail_hints
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(hints > 0, "node b heard hints for y's inbox");
    // The Pub/Sub connections killed (the hints are lost until the nodes
    // subscribe again): the next messages still arrive, once each.
    let mut connection = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect to redis");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut connection)
        .expect("client kill");
    assert!(killed >= 2, "both nodes' subscriptions: {killed}");
    for i in N..N + 50 {
        let direct = serde_json::json!({"type": "direct", "to": y_id, "data": i});
        drop(x.send(direct.to_string()).await.expect("queued"));
    }
    while got.len() < N + 50 {
        got.push(next_json(&y).await["data"].as_u64().expect("a number"));
    }
    assert_eq!(
        got,
        (0..N as u64 + 50).collect::<Vec<_>>(),
        "after the kill too"
    );
    // And back: y answers x across the nodes too.
    let reply = serde_json::json!({"type": "direct", "to": x_id, "data": "back"});
    drop(y.send(reply.to_string()).await.expect("queued"));
    loop {
        let message = next_json(&x).await;
        if message["type"] == "message" {
            assert_eq!(
                (&message["from"], &message["data"]),
                (&y_id, &serde_json::json!("back"))
            );
            break;
        }
    }
}

/// A room with members on three nodes: every post reaches every other
/// member once, in order, wherever it is held; a broadcast too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_three_nodes_gets_every_post_once() {
    const N: usize = 100;
    let redis = RedisServer::start().expect("redis-server");
    let mut clients = Vec::new();
    for seed in 1..=3 {
        let (addr, _) = node_with(&redis, Rooms).await;
        let client = Client::builder(format!("ws://{addr}"))
            .backoff(fast_backoff())
            .seed(seed)
            .connect()
            .await
            .expect("valid options");
        let join = serde_json::json!({"type": "join", "room": "r"}).to_string();
        drop(client.send(join).await.expect("queued"));
        assert_eq!(next_json(&client).await["type"], "joined");
        clients.push(client);
    }
    let (x, others) = clients.split_first().expect("three");
    for i in 0..N {
        let post = serde_json::json!({"type": "room", "room": "r", "data": i});
        drop(x.send(post.to_string()).await.expect("queued"));
    }
    let everyone = serde_json::json!({"type": "broadcast", "data": "all"}).to_string();
    drop(x.send(everyone).await.expect("queued"));
    for (n, member) in others.iter().enumerate() {
        let mut got = Vec::new();
        while got.len() < N {
            let message = next_json(member).await;
            assert_eq!(message["room"], "r", "member {n}: {message}");
            got.push(message["data"].as_u64().expect("a number"));
        }
        assert_eq!(
            got,
            (0..N as u64).collect::<Vec<_>>(),
            "member {n}: once each, in order"
        );
        let last = next_json(member).await;
        assert_eq!(
            last["data"], "all",
            "member {n}: the broadcast, then nothing twice"
        );
    }
}

/// A room with a member on each of three server processes; the node of
/// one member is killed (SIGKILL) during a burst of posts and its client
/// moves to another node through the front: every member gets every post
/// once, in order (those posted while it was away wait in its inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_node_killed_during_a_burst_loses_and_repeats_nothing() {
    const N: u64 = 300;
    let seed: u64 = std::env::var("STEADFAST_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let at = 50 + Rng::new(seed).up_to(150);
    eprintln!("cluster seed {seed}: the third node killed after {at} posts reached its member");
    let redis = RedisServer::start().expect("redis-server");
    let args = vec![
        "--handler".to_owned(),
        "rooms".to_owned(),
        "--redis".to_owned(),
        redis.url(),
    ];
    let (a, b, c) = tokio::task::spawn_blocking(move || {
        (
            ServerProcess::start(SERVER, "127.0.0.1:0", &args),
            ServerProcess::start(SERVER, "127.0.0.1:0", &args),
            ServerProcess::start(SERVER, "127.0.0.1:0", &args),
        )
    })
    .await
    .expect("three nodes");
    let front = Front::start(c.addr()).await;
    let connect = |url: String, seed: u64| {
        Client::builder(url)
            .backoff(fast_backoff())
            .seed(seed)
            .connect()
    };
    let x = connect(a.url.clone(), 1).await.expect("x");
    let y = connect(b.url.clone(), 2).await.expect("y");
    let z = connect(front.url(), 3).await.expect("z");
    join_room(&[&x, &y, &z]).await;
    let poster = post_paced(&x, N);
    let receive = |member: Client, name: &'static str, count: usize| async move {
        let mut got = Vec::new();
        while got.len() < count {
            let message = next_json(&member).await;
            assert_eq!(message["room"], "r", "{name}: {message}");
            got.push(message["data"].as_u64().expect("a number"));
        }
        (member, got)
    };
    let y_got = tokio::spawn(receive(y, "y", N as usize));
    // z: read until the kill point, kill its node, move it, read the rest.
    let mut z_got = Vec::new();
    while z_got.len() < at as usize {
        z_got.push(next_json(&z).await["data"].as_u64().expect("a number"));
    }
    let mut c = c;
    let b_addr = b.addr();
    let c = tokio::task::spawn_blocking(move || {
        c.kill();
        c
    })
    .await
    .expect("killed");
    front.switch(b_addr);
    front.cut();
    let (z, rest) = receive(z, "z", (N - at) as usize).await;
    z_got.extend(rest);
    poster.await.expect("posted");
    let (_, y_got) = y_got.await.expect("y read");
    let all: Vec<u64> = (0..N).collect();
    assert_eq!(y_got, all, "y: every post once, in order (seed {seed})");
    assert_eq!(
        z_got, all,
        "z: every post once, in order, across the kill (seed {seed})"
    );
    assert_eq!(z.stats().engine.resyncs, 0, "z resumed its session");
    drop((a, b, c));
}

/// A room member moved by the load balancer from one live node to the
/// other during a burst of posts. The poster's node goes on putting posts
/// into its copy of the member's session until the other node's claim
/// fences it: those refused writes are forwarded to the session's inbox,
/// so the member gets every post once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_member_moving_between_live_nodes_gets_every_post_once() {
    const N: u64 = 300;
    let seed: u64 = std::env::var("STEADFAST_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(31);
    let at = 30 + Rng::new(seed).up_to(200);
    eprintln!("cluster seed {seed}: the member moves after {at} posts");
    let redis = RedisServer::start().expect("redis-server");
    let (a, _node_a) = node_with(&redis, Rooms).await;
    let (b, node_b) = node_with(&redis, Rooms).await;
    let front = Front::start(a).await;
    let connect = |url: String, seed: u64| {
        Client::builder(url)
            .backoff(fast_backoff())
            .seed(seed)
            .connect()
    };
    let x = connect(format!("ws://{a}"), 1).await.expect("x");
    let z = connect(front.url(), 3).await.expect("z");
    join_room(&[&x, &z]).await;
    let poster = post_paced(&x, N);
    let mut got = Vec::new();
    while got.len() < N as usize {
        if got.len() == at as usize {
            front.switch(b);
            front.cut();
        }
        let message = next_json(&z).await;
        assert_eq!(message["room"], "r", "{message}");
        got.push(message["data"].as_u64().expect("a number"));
    }
    poster.await.expect("posted");
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every post once, in order, across the move (seed {seed})"
    );
    assert_eq!(z.stats().engine.resyncs, 0, "z resumed its session");
    assert_eq!(
        node_b.metrics().get("store_claims"),
        Some(1),
        "B claimed it"
    );
}

/// A NEW HELLO naming a session another node holds in Redis (someone who
/// learned its id) gets a session of its own: it neither wipes the stored
/// session nor takes it from its node, whose client goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hello_on_another_node_cannot_take_or_wipe_a_session() {
    use futures::SinkExt;
    use steadfast_tests::raw::{self, data, data_until_quiet, welcome};
    let redis = RedisServer::start().expect("redis-server");
    let (a, _) = node(&redis).await;
    let (b, b_handle) = node(&redis).await;
    let (a, b) = (format!("ws://{a}"), format!("ws://{b}"));
    let session = steadfast_server::SessionId([0x3c; 16]);
    let mut owner = raw::hello(&a, session, true, Some([1; 16])).await;
    assert_eq!(welcome(&mut owner).await, (session, false));
    // Its echo: the session is stored (committed before it goes out).
    owner.send(data(1, "one")).await.expect("send");
    assert_eq!(data_until_quiet(&mut owner).await, ["one"]);
    // On node B, NEW HELLOs naming it: without the secret, and with another.
    for secret in [None, Some([2; 16])] {
        let mut thief = raw::hello(&b, session, true, secret).await;
        let (given, resumed) = welcome(&mut thief).await;
        assert!(given != session && !resumed, "{secret:?}: {given:?}");
    }
    assert_eq!(b_handle.metrics().get("resumes_refused"), Some(2));
    // The owner on A: not closed (4909, which `data_until_quiet` would
    // panic on), its session intact.
    owner.send(data(2, "two")).await.expect("send");
    assert_eq!(data_until_quiet(&mut owner).await, ["two"]);
}
