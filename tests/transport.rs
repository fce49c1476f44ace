//! The native transport against the reference server on loopback.

use std::time::Duration;

use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent};
use steadfast::Error;
use steadfast_testkit::TestServer;

/// Generous bound so a hung test fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(20);

async fn next(socket: &mut Socket) -> SocketEvent {
    tokio::time::timeout(LIMIT, socket.next_event())
        .await
        .expect("an event within the time limit")
        .expect("the socket still has events")
}

async fn open(server: &TestServer) -> Socket {
    let options = ConnectOptions::default().protocols(["steadfast.echo"]);
    Socket::connect(&server.url(), &options)
        .await
        .expect("connect to the test server")
}

#[tokio::test]
async fn text_and_binary_messages_are_echoed_in_order() {
    let server = TestServer::start().await.expect("server starts");
    let mut socket = open(&server).await;
    assert_eq!(socket.protocol(), Some("steadfast.echo"));

    let sent = vec![
        Message::Text("hello".into()),
        Message::Binary(vec![0, 1, 2, 255]),
        Message::Text("ünïcödé ✓".into()),
        Message::Binary(Vec::new()),
        Message::Text(String::new()),
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
}

#[tokio::test]
async fn a_message_larger_than_the_read_buffer_round_trips() {
    let server = TestServer::start().await.expect("server starts");
    let mut socket = open(&server).await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(Message::Binary(big.clone())).expect("send");
    assert_eq!(
        next(&mut socket).await,
        SocketEvent::Message(Message::Binary(big))
    );
}

#[tokio::test]
async fn no_subprotocol_is_reported_when_none_was_agreed() {
    let server = TestServer::start().await.expect("server starts");
    let socket = Socket::connect(&server.url(), &ConnectOptions::default())
        .await
        .expect("connect");
    assert_eq!(socket.protocol(), None);
    let socket = Socket::connect(
        &server.url(),
        &ConnectOptions::default().protocols(["other.v9"]),
    )
    .await
    .expect("connect");
    assert_eq!(socket.protocol(), None);
}

#[tokio::test]
async fn a_server_close_reports_its_code_and_reason() {
    let server = TestServer::start().await.expect("server starts");
    let mut socket = open(&server).await;
    socket
        .send(Message::Text(
            "steadfast-echo:close:4001:token expired".into(),
        ))
        .expect("send");
    match next(&mut socket).await {
        SocketEvent::Closed(close) => {
            assert_eq!(close.code, 4001);
            assert_eq!(close.reason, "token expired");
            assert!(close.was_clean);
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(socket.next_event().await, None, "nothing after Closed");
    assert_eq!(
        socket.send(Message::Text("late".into())),
        Err(Error::Closed)
    );
}

#[tokio::test]
async fn a_client_close_completes_the_handshake() {
    let server = TestServer::start().await.expect("server starts");
    let mut socket = open(&server).await;
    assert_eq!(
        socket.close(1001, "bye"),
        Err(Error::InvalidCloseCode(1001))
    );
    socket.close(3001, "bye").expect("valid close");
    assert_eq!(
        socket.send(Message::Text("after close".into())),
        Err(Error::Closed)
    );
    match next(&mut socket).await {
        SocketEvent::Closed(close) => {
            assert_eq!(close.code, 3001, "the server echoes our close code");
            assert!(close.was_clean);
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn server_shutdown_closes_clients_with_going_away() {
    let server = TestServer::start().await.expect("server starts");
    let mut socket = open(&server).await;
    // Make sure the connection is fully served before stopping.
    socket.send(Message::Text("ping".into())).expect("send");
    assert_eq!(
        next(&mut socket).await,
        SocketEvent::Message(Message::Text("ping".into()))
    );
    let stopping = tokio::spawn(server.stop());
    match next(&mut socket).await {
        SocketEvent::Closed(close) => {
            assert_eq!(close.code, steadfast_server::close::GOING_AWAY);
            assert_eq!(close.reason, "server shutting down");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("server stops in time")
        .expect("server task did not panic");
}

#[tokio::test]
async fn an_http_error_instead_of_the_upgrade_is_handshake_rejected_with_its_status() {
    let addr = steadfast_testkit::http_error_server("401 Unauthorized").await;
    let error = Socket::connect(&format!("ws://{addr}"), &ConnectOptions::default())
        .await
        .expect_err("the server answers 401");
    assert!(
        matches!(error, Error::HandshakeRejected { status: 401 }),
        "{error:?}"
    );
    assert_eq!(error.code(), "ERR_HANDSHAKE_REJECTED");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bind and release a port so nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let error = Socket::connect(
        &format!("ws://127.0.0.1:{port}"),
        &ConnectOptions::default(),
    )
    .await
    .expect_err("nothing listens there");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert_eq!(error.code(), "ERR_CONNECT");
}

#[tokio::test]
async fn bad_urls_and_options_are_rejected_with_codes() {
    for url in ["http://127.0.0.1:1/", "not a url", ""] {
        let error = Socket::connect(url, &ConnectOptions::default())
            .await
            .expect_err("invalid URL");
        assert_eq!(error.code(), "ERR_INVALID_URL", "{url:?}: {error}");
    }
    let options = ConnectOptions::default().header("bad header", "x");
    let error = Socket::connect("ws://127.0.0.1:1/", &options)
        .await
        .expect_err("invalid header name");
    assert_eq!(error.code(), "ERR_INVALID_OPTION");
    let options = ConnectOptions::default().protocols(["line\nbreak"]);
    let error = Socket::connect("ws://127.0.0.1:1/", &options)
        .await
        .expect_err("invalid protocol");
    assert_eq!(error.code(), "ERR_INVALID_OPTION");
}

#[tokio::test]
async fn headers_are_sent_with_the_handshake() {
    let server = TestServer::start().await.expect("server starts");
    let options = ConnectOptions::default()
        .header("Authorization", "Bearer abc")
        .header("X-Steadfast-Test", "42");
    let mut socket = Socket::connect(&server.url(), &options)
        .await
        .expect("connect");
    for (name, value) in [
        ("authorization", "Bearer abc"),
        ("x-steadfast-test", "42"),
        ("x-absent", ""),
    ] {
        socket
            .send(Message::Text(format!(
                "{}{name}",
                steadfast_server::HEADER_COMMAND
            )))
            .expect("send");
        assert_eq!(
            next(&mut socket).await,
            SocketEvent::Message(Message::Text(value.into()))
        );
    }
}
