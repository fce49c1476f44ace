//! The session store conformance suite against a real Redis (memory and
//! embedded run it in `steadfast-server`'s own tests), and what the Redis
//! store refuses.

use steadfast_server::sessions::{conformance, SessionStore};
use steadfast_server::RedisSessions;
use steadfast_testkit::RedisServer;

#[test]
fn redis_sessions_conform() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let mut n = 0;
    // A fresh store: a prefix of its own in the same Redis.
    conformance::check(&mut || -> Box<dyn SessionStore> {
        n += 1;
        Box::new(RedisSessions::open(&url, &format!("conform{n}")).expect("open"))
    });
}

#[test]
fn redis_sessions_survive_a_reopen_and_a_redis_sigkill() {
    let mut redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let open = || -> Box<dyn SessionStore> {
        Box::new(RedisSessions::open(&url, "durable").expect("open"))
    };
    conformance::check_durable(&mut open.clone(), &mut open.clone());
    // What was committed is in the AOF: a Redis killed with SIGKILL and
    // restarted still has it.
    let before = open()
        .load(&steadfast_server::SessionId([1; 16]))
        .expect("load");
    assert!(before.is_some(), "the durable check left session 1");
    redis.restart().expect("restart redis");
    let after = open()
        .load(&steadfast_server::SessionId([1; 16]))
        .expect("load");
    assert_eq!(after, before, "after redis-server was killed and restarted");
}

#[test]
fn a_redis_that_cannot_make_a_commit_durable_is_refused_with_a_code() {
    let redis = RedisServer::start().expect("redis-server");
    // Turn the AOF fsync down to once a second, as many deployments have it.
    let mut connection = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query(&mut connection)
        .expect("config set");
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .expect("info");
    let opened = RedisSessions::open(&redis.url(), "refused");
    if version.contains("redis_version:7.0") || version.contains("redis_version:6") {
        let error = opened.expect_err("no WAITAOF and no appendfsync always");
        assert_eq!(error.code(), "ERR_SESSION_STORE");
        assert!(error.to_string().contains("appendfsync"), "{error}");
    } else {
        // 7.2+: WAITAOF confirms each commit's fsync whatever appendfsync says.
        opened.expect("WAITAOF makes it durable");
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query(&mut connection)
        .expect("config set");
    let error = RedisSessions::open(&redis.url(), "refused").expect_err("no AOF");
    assert!(error.to_string().contains("appendonly"), "{error}");
}

/// A shared store's inbox: a post to a peer lands in its session's inbox
/// (and that session is listed as having mail); the holder's `Consumed`
/// trims it, another claim's is refused; a post to an unknown peer is
/// dropped.
#[test]
fn redis_inboxes_take_posts_for_a_peer_and_trim_under_the_claim() {
    use steadfast_server::sessions::{Change, Claim};
    let redis = RedisServer::start().expect("redis-server");
    let store = RedisSessions::open(&redis.url(), "inbox").expect("open");
    let session = steadfast_server::SessionId([5; 16]);
    let (mine, other) = (Claim(1), Claim(2));
    let post = |payload: &str| Change::Post {
        peer: 77,
        binary: false,
        payload: payload.as_bytes().to_vec(),
        by: None,
    };
    let commit = |changes: Vec<Change>| store.commit(1, &changes).expect("commit");
    commit(vec![
        Change::Open {
            session,
            subject: None,
            claim: mine,
            peer: 77,
        },
        post("a"),
        post("b"),
        Change::Post {
            peer: 78,
            binary: true,
            payload: vec![1],
            by: None,
        },
    ]);
    assert_eq!(store.with_mail().expect("mail"), vec![session]);
    let inbox = store.inbox(&session, 10).expect("inbox");
    assert_eq!(inbox, vec![(false, b"a".to_vec()), (false, b"b".to_vec())]);
    let refused = commit(vec![Change::Consumed {
        session,
        claim: other,
        count: 2,
        ops: Vec::new(),
    }]);
    assert_eq!(refused, vec![session], "another claim cannot trim it");
    assert_eq!(store.inbox(&session, 10).expect("inbox").len(), 2);
    commit(vec![Change::Consumed {
        session,
        claim: mine,
        count: 1,
        ops: Vec::new(),
    }]);
    assert_eq!(
        store.inbox(&session, 10).expect("inbox"),
        vec![(false, b"b".to_vec())]
    );
    commit(vec![Change::Consumed {
        session,
        claim: mine,
        count: 1,
        ops: Vec::new(),
    }]);
    assert!(store.inbox(&session, 10).expect("inbox").is_empty());
    assert!(store.with_mail().expect("mail").is_empty(), "no mail left");
}

/// What a node writes for a session another node has claimed is refused;
/// its messages reach the session through its inbox only if nobody makes
/// them again: the application's own sends (`Always`), and messages made
/// while delivering another session's message whose changes in the same
/// commit were kept (`IfDelivered`). Replies to the session's own messages
/// (`Never`) and messages taken from its inbox (`Consumed`) are not.
#[test]
fn redis_forwards_refused_messages_only_when_nobody_makes_them_again() {
    use steadfast_core::record::StoredMessage;
    use steadfast_core::PersistOp;
    use steadfast_server::sessions::{Change, Claim, Forward};
    let redis = RedisServer::start().expect("redis-server");
    let store = RedisSessions::open(&redis.url(), "forward").expect("open");
    let moved = steadfast_server::SessionId([1; 16]);
    let (sender, refused_sender) = (
        steadfast_server::SessionId([2; 16]),
        steadfast_server::SessionId([3; 16]),
    );
    let (mine, theirs) = (Claim(1), Claim(2));
    let open = |session, claim, peer| Change::Open {
        session,
        subject: None,
        claim,
        peer,
    };
    let put = |seq: u64, text: &str| {
        PersistOp::Put(StoredMessage {
            seq,
            binary: false,
            payload: text.as_bytes().to_vec(),
            enqueued_wall_ms: 1,
            expires_wall_ms: 0,
        })
    };
    let ops = |session, claim, ops, forward| Change::Ops {
        session,
        claim,
        ops,
        forward,
    };
    let commit = |changes: Vec<Change>| store.commit(1, &changes).expect("commit");
    // The moved session and the refused sender are held by the other node.
    commit(vec![
        open(moved, theirs, 10),
        open(sender, mine, 20),
        open(refused_sender, theirs, 30),
    ]);
    let mark = |n: u64| {
        PersistOp::Session(steadfast_core::record::StoredSession {
            secret: None,
            session: sender,
            welcomed: true,
            inbound_delivered: n,
            next_seq: 1,
        })
    };
    let fenced = commit(vec![
        ops(moved, mine, vec![put(1, "reply")], Forward::Never),
        ops(moved, mine, vec![put(2, "app send")], Forward::Always),
        // Made while delivering to `sender`, whose mark comes after it in
        // the same commit (as a unit commits them).
        ops(
            moved,
            mine,
            vec![put(3, "room post")],
            Forward::IfDelivered(sender),
        ),
        ops(sender, mine, vec![mark(1)], Forward::Never),
        ops(
            moved,
            mine,
            vec![put(4, "post from a refused delivery")],
            Forward::IfDelivered(refused_sender),
        ),
        ops(refused_sender, mine, vec![mark(1)], Forward::Never),
        Change::Consumed {
            session: moved,
            claim: mine,
            count: 0,
            ops: vec![put(5, "taken from the inbox")],
        },
        // Posted after them in the same commit: after them in the inbox.
        Change::Post {
            peer: 10,
            binary: false,
            payload: b"posted after".to_vec(),
            by: Some(sender),
        },
        // Sent while delivering a message whose delivery is refused: the
        // sender's new holder makes it again.
        Change::Post {
            peer: 10,
            binary: false,
            payload: b"posted by a refused delivery".to_vec(),
            by: Some(refused_sender),
        },
    ]);
    assert!(fenced.contains(&moved) && fenced.contains(&refused_sender));
    assert!(!fenced.contains(&sender), "{fenced:?}");
    assert_eq!(
        store.inbox(&moved, 10).expect("inbox"),
        vec![
            (false, b"app send".to_vec()),
            (false, b"room post".to_vec()),
            (false, b"posted after".to_vec())
        ],
        "forwarded: the application's send and the kept delivery's post, in order"
    );
    let saved = store.load(&moved).expect("load").expect("the session");
    assert!(
        saved.messages.is_empty(),
        "nothing written under the old claim"
    );
    assert_eq!(store.with_mail().expect("mail"), vec![moved]);
}
