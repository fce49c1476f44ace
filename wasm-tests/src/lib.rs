//! Shared test bodies for the wasm suites in `tests/` (browser page,
//! dedicated worker, Node.js). Each suite is its own test binary because
//! wasm-bindgen-test picks the environment per binary.
//!
//! The echo server's URL is baked in at compile time from
//! `STEADFAST_ECHO_URL` (set by `cargo xtask test`, which starts the server).

#![cfg(target_arch = "wasm32")]

use std::future::Future;
use std::pin::pin;

use futures::future::{select, Either};
use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent};

/// The echo server `cargo xtask test` starts.
pub const ECHO_URL: &str = match option_env!("STEADFAST_ECHO_URL") {
    Some(url) => url,
    None => "ws://127.0.0.1:47391",
};

/// A loopback URL nothing listens on (`cargo xtask test` checks it is free).
pub const REFUSED_URL: &str = match option_env!("STEADFAST_REFUSED_URL") {
    Some(url) => url,
    None => "ws://127.0.0.1:47392",
};

/// Fail instead of hanging when an event does not come (generous bound).
const LIMIT_MS: u32 = 20_000;

/// `fut`, or a panic after LIMIT_MS.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let timeout = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout =
            js_sys::Reflect::get(&global, &"setTimeout".into()).expect("setTimeout exists");
        let set_timeout: js_sys::Function = set_timeout.into();
        set_timeout
            .call2(&global, &resolve, &LIMIT_MS.into())
            .expect("setTimeout can be called");
    }));
    match select(pin!(fut), pin!(timeout)).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out after {LIMIT_MS} ms waiting for {what}"),
    }
}

async fn next(socket: &mut Socket) -> SocketEvent {
    within("a socket event", socket.next_event())
        .await
        .expect("the socket still has events")
}

/// Open a socket to the echo server, send text and binary, check the echoed
/// bytes, then have the server close with 4001 and check code and reason.
pub async fn echo_round_trip(options: ConnectOptions) {
    let options = options.protocols(["steadfast.echo"]);
    let mut socket = within("connect", Socket::connect(ECHO_URL, &options))
        .await
        .unwrap_or_else(|e| panic!("connect to {ECHO_URL}: {e}"));
    assert_eq!(socket.protocol(), Some("steadfast.echo"));

    let binary: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let sent = [
        Message::Text("hello from wasm".into()),
        Message::Binary(binary),
        Message::Text("ünïcödé ✓".into()),
        Message::Binary(vec![]),
    ];
    for message in &sent {
        socket.send(message.clone()).expect("send while open");
    }
    for expected in &sent {
        assert_eq!(
            next(&mut socket).await,
            SocketEvent::Message(expected.clone())
        );
    }

    socket
        .send(Message::Text(
            "steadfast-echo:close:4001:token expired".into(),
        ))
        .expect("send");
    match next(&mut socket).await {
        SocketEvent::Closed(close) => {
            assert_eq!(close.code, 4001);
            assert_eq!(close.reason, "token expired");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(
        socket.send(Message::Text("late".into())),
        Err(steadfast::Error::Closed)
    );
}

/// A client close ends with a Closed event carrying the code.
pub async fn client_close() {
    let mut socket = within(
        "connect",
        Socket::connect(ECHO_URL, &ConnectOptions::default()),
    )
    .await
    .expect("connect");
    assert_eq!(socket.protocol(), None);
    assert_eq!(
        socket.close(1001, ""),
        Err(steadfast::Error::InvalidCloseCode(1001))
    );
    socket.close(3000, "done").expect("valid close");
    match next(&mut socket).await {
        SocketEvent::Closed(close) => assert_eq!(close.code, 3000),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// Nothing listens on port 1: the connect fails with a Connect error.
pub async fn refused_connection() {
    let error = within(
        "connect",
        Socket::connect("ws://127.0.0.1:1/", &ConnectOptions::default()),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert_eq!(error.code(), "ERR_CONNECT", "{error}");
}

/// A malformed URL is an InvalidUrl error, not a panic.
pub async fn invalid_url() {
    let error = Socket::connect("not a url", &ConnectOptions::default())
        .await
        .expect_err("malformed URL");
    assert_eq!(error.code(), "ERR_INVALID_URL", "{error}");
}

/// The reliable client on wasm32: 200 messages (text and binary) to the
/// echo server, every receipt acknowledged, every echo back once and in
/// order; then the server closes the connection (close command) and the
/// client resumes the same session and goes on.
pub async fn reliable_client_round_trip() {
    use steadfast::{Client, ClientEvent, ConnectionState, Delivery, Mode, Payload};

    let client = within("client start", Client::builder(ECHO_URL).connect())
        .await
        .expect("the client starts");
    let open = within(
        "open",
        client.wait_for_state(|s| matches!(s, ConnectionState::Open { .. })),
    )
    .await;
    assert_eq!(
        open,
        ConnectionState::Open {
            mode: Mode::Reliable
        }
    );
    let payload = |i: u32| -> Payload {
        if i.is_multiple_of(3) {
            Payload::Binary(i.to_le_bytes().to_vec())
        } else {
            Payload::Text(format!("message {i}"))
        }
    };
    let mut receipts = Vec::new();
    for i in 0..200u32 {
        if i == 100 {
            // The echo server closes this connection; the client resumes.
            let close = client
                .send("steadfast-echo:close:4000:test restart")
                .await
                .expect("queued");
            receipts.push(close);
        }
        receipts.push(client.send(payload(i)).await.expect("queued"));
    }
    for receipt in receipts {
        assert_eq!(
            within("an ack", receipt.acked()).await,
            Ok(Delivery::Acked),
            "every message is acknowledged"
        );
    }
    let mut expected = 0u32;
    let mut reconnected = false;
    while expected < 200 {
        match within("an echo", client.next_event()).await {
            Some(ClientEvent::Message(message)) => {
                assert_eq!(message, payload(expected), "in order, once");
                expected += 1;
            }
            Some(ClientEvent::State(ConnectionState::Reconnecting { .. })) => reconnected = true,
            Some(ClientEvent::ResyncRequired) => panic!("the session should resume"),
            Some(_) => {}
            None => panic!("the client ended"),
        }
    }
    assert!(reconnected, "the server's close made the client reconnect");
    let stats = client.stats();
    assert_eq!(stats.queued, 0, "nothing left in the outbox: {stats:?}");
    assert!(stats.engine.resumes >= 1, "the session resumed: {stats:?}");
    client.close(1000, "done").await.expect("close");
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
const storages = new Map();
export function mapStore(name) {
  if (!storages.has(name)) storages.set(name, { session: null, messages: new Map() });
  const data = storages.get(name);
  return {
    durable: true,
    async load() {
      return { session: data.session, messages: [...data.messages.entries()] };
    },
    async apply(ops) {
      // All or nothing: work on copies, then swap them in.
      let session = data.session;
      const messages = new Map(data.messages);
      for (const op of ops) {
        if (op.op === "session") session = op.value.slice();
        else if (op.op === "put") messages.set(op.seq, op.value.slice());
        else if (op.op === "delete") messages.delete(op.seq);
        else if (op.op === "clear") messages.clear();
        else throw new Error("unknown op " + op.op);
      }
      data.session = session;
      data.messages = messages;
    },
  };
}
"#)]
extern "C" {
    /// A store object written in JS, over a Map kept per name (so a second
    /// handle on the same name is a "reopen").
    #[wasm_bindgen(js_name = mapStore)]
    fn map_store(name: &str) -> wasm_bindgen::JsValue;
}

/// A prefix that keeps this run's storages apart from earlier runs'.
fn run_prefix() -> String {
    format!("conformance-{}-", js_sys::Date::now())
}

/// The store conformance suite against a store object written in JS.
pub async fn js_store_conformance() {
    let prefix = run_prefix();
    steadfast::store::conformance::check(
        |name| {
            steadfast::store::JsStore::new(map_store(&format!("{prefix}{name}")))
                .expect("the map store has load and apply")
        },
        true,
    )
    .await;
}

/// The store conformance suite against IndexedDB (browsers only).
pub async fn indexeddb_conformance() {
    assert!(steadfast::store::IndexedDbStore::is_available());
    let prefix = run_prefix();
    steadfast::store::conformance::check(
        |name| steadfast::store::IndexedDbStore::new(format!("{prefix}{name}")),
        true,
    )
    .await;
}

/// A store object without the methods is refused with a clear error.
pub fn js_store_needs_methods() {
    let error = steadfast::store::JsStore::new(js_sys::Object::new().into())
        .expect_err("an empty object is no store");
    assert!(error.0.contains("load()"), "{error}");
}
