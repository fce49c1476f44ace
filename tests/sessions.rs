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
