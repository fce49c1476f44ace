//! The protocol by hand, for tests that play a client our library would
//! never be (a thief, a hoarder, a peer that does not read): raw
//! WebSockets, HELLO frames, and plain HTTP requests.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use steadfast_core::codec::{self, Frame, SessionId, SUBPROTOCOL};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Generous: every step takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// A client WebSocket over TCP.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url`, offering `steadfast.v1` when `reliable`.
///
/// # Panics
/// If it cannot connect.
pub async fn connect(url: &str, reliable: bool) -> Ws {
    let mut request = url.into_client_request().expect("request");
    if reliable {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            SUBPROTOCOL.parse().expect("header value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
        .0
}

/// A reliable connection to `url` that has said HELLO for `session`,
/// `new` or resuming, with `secret`.
///
/// # Panics
/// If it cannot connect or send.
pub async fn hello(url: &str, session: SessionId, new: bool, secret: Option<[u8; 16]>) -> Ws {
    let mut ws = connect(url, true).await;
    let hello = Frame::Hello {
        secret,
        new,
        session,
        delivered: 0,
        max_message_size: 1 << 24,
    };
    ws.send(Message::Binary(hello.to_vec().into()))
        .await
        .expect("send HELLO");
    ws
}

/// The next protocol frame's bytes (pings and pongs skipped), or `None`
/// if none comes within `wait`.
///
/// # Panics
/// If the connection closes or ends first.
pub async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<Vec<u8>> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => return Some(bytes.to_vec()),
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the connection ended: {other:?}"),
            Err(_) => return None,
        }
    }
}

/// The DATA payloads (as text) that come before the connection has been
/// quiet for half a second.
pub async fn data_until_quiet(ws: &mut Ws) -> Vec<String> {
    let mut payloads = Vec::new();
    while let Some(frame) = next_frame(ws, Duration::from_millis(500)).await {
        if let Ok(Frame::Data { payload, .. }) = codec::decode(&frame, u64::MAX) {
            payloads.push(String::from_utf8_lossy(payload).into_owned());
        }
    }
    payloads
}

/// A WELCOME's session and whether it resumed.
///
/// # Panics
/// If `bytes` is not a WELCOME.
pub fn welcome_of(bytes: &[u8]) -> (SessionId, bool) {
    match codec::decode(bytes, u64::MAX) {
        Ok(Frame::Welcome {
            session, resumed, ..
        }) => (session, resumed),
        other => panic!("not a WELCOME: {other:?}"),
    }
}

/// The next WELCOME on `ws`: its session and whether it resumed.
///
/// # Panics
/// If none comes in time, or another frame comes first.
pub async fn welcome(ws: &mut Ws) -> (SessionId, bool) {
    welcome_of(&next_frame(ws, WAIT).await.expect("a WELCOME"))
}

/// An unchunked text DATA frame.
pub fn data(seq: u64, text: &str) -> Message {
    let frame = Frame::Data {
        seq,
        binary: false,
        chunk: None,
        payload: text.as_bytes(),
    };
    Message::Binary(frame.to_vec().into())
}

/// `GET path` on `addr`: the status line and the body.
///
/// # Panics
/// If it cannot connect, or no answer comes in time.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
