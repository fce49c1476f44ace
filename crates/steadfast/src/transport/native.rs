//! Native transport: tokio-tungstenite.
//!
//! One tokio task owns the stream; the [`Socket`](super::Socket) talks to it
//! through a command channel and hears from it through an event channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self as ts, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use steadfast_core::close;

use super::{CloseInfo, ConnectOptions, Message, Opened, SocketEvent};
use crate::Error;

/// Everything connects natively; nothing to refuse up front.
pub(super) fn check_options(_options: &ConnectOptions, _header_auth: bool) -> Result<(), Error> {
    Ok(())
}

impl crate::ClientBuilder {
    /// TLS for `wss://`: extra CA, client certificate, insecure mode.
    pub fn tls(mut self, tls: super::TlsOptions) -> Self {
        self.connect.tls = tls;
        self
    }

    /// WebSocket read buffer per connection (default 4 KiB; larger
    /// messages still arrive, the buffer grows for them).
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.connect.read_buffer_size = Some(bytes);
        self
    }

    /// How many bytes of frames the writer collects before writing them to
    /// the socket (default 64 KiB; a burst is flushed at its end anyway).
    /// Memory is taken only while writing.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.connect.write_buffer_size = Some(bytes);
        self
    }
}

/// Read buffer per connection. tungstenite's default (128 KiB) makes an idle
/// connection cost ~130 KiB; messages larger than this still arrive, the
/// buffer just grows for them.
const READ_BUFFER: usize = 4 * 1024;

/// Frames collect up to this before a write: a burst of small messages goes
/// out in few syscalls. tungstenite allocates it only as it fills, so an
/// idle connection does not pay for it.
const WRITE_BUFFER: usize = 64 * 1024;

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Command {
    Send(Message),
    Close(u16, String),
}

/// The native half of a [`Socket`](super::Socket).
#[derive(Debug)]
pub(super) struct Inner {
    commands: crate::queue::Sender<Command>,
    /// Bytes sent to the task and not yet written out by it.
    buffered: Arc<AtomicUsize>,
    /// Woken by the task each time it wrote some out.
    drained: Arc<AtomicWaker>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send(_) => f.write_str("Send"),
            Command::Close(code, _) => write!(f, "Close({code})"),
        }
    }
}

impl Inner {
    pub(super) fn send(&self, message: Message) -> Result<(), Error> {
        let len = message.len();
        self.commands
            .send(Command::Send(message))
            .map_err(|_| Error::Closed)?;
        self.buffered.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn buffered_amount(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    pub(super) fn poll_below(&self, cx: &mut Context<'_>, low: usize) -> Option<Poll<()>> {
        if self.buffered_amount() <= low {
            return Some(Poll::Ready(()));
        }
        self.drained.register(cx.waker());
        // Written out between the first look and the registration?
        Some(if self.buffered_amount() <= low {
            Poll::Ready(())
        } else {
            Poll::Pending
        })
    }

    pub(super) fn close(&self, code: u16, reason: &str) {
        // If the task is gone the connection is already closed: nothing to do.
        let _ = self.commands.send(Command::Close(code, reason.to_owned()));
    }
}

pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Opened, Error> {
    let connector = if url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        Connector::Rustls(options.tls.client_config()?)
    } else {
        Connector::Plain
    };
    let offered = request(url, options, true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(options.read_buffer_size.unwrap_or(READ_BUFFER))
        .write_buffer_size(options.write_buffer_size.unwrap_or(WRITE_BUFFER));
    let (stream, protocol) = match handshake(offered, config, connector.clone()).await {
        // tungstenite fails a handshake in which the server picked none of
        // the offered subprotocols; browsers accept it and report "". Match
        // the browsers: connect again without offering any.
        Err(ts::Error::Protocol(ts::error::ProtocolError::SecWebSocketSubProtocolError(
            ts::error::SubProtocolError::NoSubProtocol,
        ))) => handshake(request(url, options, false)?, config, connector).await,
        other => other,
    }
    .map_err(connect_error)?;

    let (commands, command_rx) = crate::queue::unbounded();
    let (event_tx, events) = crate::queue::unbounded();
    let buffered = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicWaker::new());
    tokio::spawn(drive(
        stream,
        command_rx,
        event_tx,
        Written {
            buffered: Arc::clone(&buffered),
            drained: Arc::clone(&drained),
        },
    ));
    Ok(Opened {
        inner: Inner {
            commands,
            buffered,
            drained,
        },
        events,
        protocol,
    })
}

/// The handshake request: URL, offered subprotocols, extra headers.
fn request(url: &str, options: &ConnectOptions, offer_protocols: bool) -> Result<Request, Error> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::InvalidUrl(e.to_string()))?;
    let headers = request.headers_mut();
    if offer_protocols && !options.protocols.is_empty() {
        let value = HeaderValue::from_str(&options.protocols.join(", "))
            .map_err(|_| Error::InvalidOption("subprotocol is not a valid header value".into()))?;
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    for (name, value) in &options.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::InvalidOption(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Error::InvalidOption(format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(request)
}

async fn handshake(
    request: Request,
    config: WebSocketConfig,
    connector: Connector,
) -> Result<(Stream, Option<String>), ts::Error> {
    // Small frames (ACKs, pings) must not wait for Nagle's algorithm.
    let no_delay = true;
    let (stream, response) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        no_delay,
        Some(connector),
    )
    .await?;
    Ok((stream, accepted_protocol(&response)))
}

fn accepted_protocol(response: &Response) -> Option<String> {
    response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn connect_error(error: ts::Error) -> Error {
    match error {
        ts::Error::Url(e) => Error::InvalidUrl(e.to_string()),
        ts::Error::Tls(e) => Error::Tls(e.to_string()),
        // rustls reports handshake failures as I/O errors wrapping its own.
        ts::Error::Io(e)
            if e.get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            Error::Tls(e.to_string())
        }
        ts::Error::Http(response) => Error::HandshakeRejected {
            status: response.status().as_u16(),
        },
        other => Error::Connect(other.to_string()),
    }
}

/// The writer's side of the count of bytes not yet written.
struct Written {
    buffered: Arc<AtomicUsize>,
    drained: Arc<AtomicWaker>,
}

impl Written {
    fn wrote(&self, bytes: usize) {
        self.buffered.fetch_sub(bytes, Ordering::Relaxed);
        self.drained.wake();
    }
}

/// Bytes fed to the stream before it is flushed even with more queued.
const FLUSH_AFTER: usize = 256 * 1024;

/// How long a failed write waits for the reader to report the peer's close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Own the stream until the connection ends; report what happens.
///
/// Reading and writing run side by side: a write waiting on a full socket
/// buffer must not stop the reads, or a peer that likewise stops reading
/// while its own writes to us are stuck (the reference server's plain echo
/// does) deadlocks with us.
async fn drive(
    stream: Stream,
    mut commands: crate::queue::Receiver<Command>,
    events: crate::queue::Sender<SocketEvent>,
    written: Written,
) {
    let (mut sink, mut source) = stream.split();
    let done = &written;
    // Ends after sending a close frame (None), or on a fatal error (its close).
    let writer = async {
        let close = 'commands: loop {
            // Wait for a command, then take every one already queued
            // before flushing: one write for a burst, not one per message.
            let mut next = commands.next().await;
            let mut written = 0;
            loop {
                match next {
                    Some(Command::Send(message)) => {
                        let len = message.len();
                        let fed = sink.feed(to_ws(message)).await;
                        written += len;
                        if let Err(error) = fed {
                            done.wrote(written);
                            if let Some(info) = fail(&events, error) {
                                return Some(info);
                            }
                            written = 0;
                        }
                    }
                    Some(Command::Close(code, reason)) => {
                        break 'commands close_frame(code, reason);
                    }
                    // The Socket was dropped: close politely.
                    None => break 'commands close_frame(close::NORMAL, String::new()),
                }
                if written >= FLUSH_AFTER {
                    break;
                }
                match commands.try_next() {
                    Poll::Ready(Some(command)) => next = Some(command),
                    // Nothing more queued, or the channel ended: flush first
                    // (the next wait sees the end).
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            let flushed = sink.flush().await;
            done.wrote(written);
            if let Err(error) = flushed {
                if let Some(info) = fail(&events, error) {
                    return Some(info);
                }
            }
        };
        match sink.send(WsMessage::Close(Some(close))).await {
            Ok(()) => None,
            Err(error) => fail(&events, error),
        }
    };
    // Ends with the stream; the close the peer sent, or the error that ended it.
    let reader = async {
        let mut close: Option<CloseInfo> = None;
        while let Some(frame) = source.next().await {
            match frame {
                Ok(WsMessage::Text(text)) => {
                    let _ = events.send(SocketEvent::Message(Message::Text(
                        text.as_str().to_owned(),
                    )));
                }
                Ok(WsMessage::Binary(bytes)) => {
                    let _ = events.send(SocketEvent::Message(Message::Binary(bytes.to_vec())));
                }
                Ok(WsMessage::Close(frame)) => {
                    // tungstenite answers the close frame itself; keep reading
                    // until the stream ends so the handshake completes.
                    let info = match frame {
                        Some(frame) => CloseInfo {
                            code: u16::from(frame.code),
                            reason: frame.reason.as_str().to_owned(),
                            was_clean: true,
                        },
                        None => CloseInfo {
                            code: close::NO_STATUS,
                            reason: String::new(),
                            was_clean: true,
                        },
                    };
                    close.get_or_insert(info);
                }
                // Pings are answered by tungstenite; pongs and raw frames carry nothing for us.
                Ok(_) => {}
                Err(error) => {
                    if let Some(info) = fail(&events, error) {
                        close.get_or_insert(info);
                    }
                    break;
                }
            }
        }
        close
    };
    let mut writer = std::pin::pin!(writer);
    let mut reader = std::pin::pin!(reader);
    let mut writing = true;
    let close = loop {
        tokio::select! {
            fatal = &mut writer, if writing => {
                writing = false;
                if let Some(info) = fatal {
                    // A write fails after the peer closed: the close it sent
                    // (4001, say) is what counts, and the reader has it or
                    // is about to.
                    let read = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
                    break read.ok().flatten().or(Some(info));
                }
            }
            closed = &mut reader => break closed,
        }
    };
    let info = close.unwrap_or_else(|| CloseInfo::abnormal("connection lost"));
    let _ = events.send(SocketEvent::Closed(info));
}

/// Report a transport error; returns the close it implies, if it is fatal.
fn fail(events: &crate::queue::Sender<SocketEvent>, error: ts::Error) -> Option<CloseInfo> {
    match error {
        // The closing handshake finished (or we already closed): not an error.
        ts::Error::ConnectionClosed | ts::Error::AlreadyClosed => None,
        other => {
            let text = other.to_string();
            let _ = events.send(SocketEvent::Error(text.clone()));
            Some(CloseInfo::abnormal(text))
        }
    }
}

fn to_ws(message: Message) -> WsMessage {
    match message {
        Message::Text(text) => WsMessage::Text(text.into()),
        Message::Binary(bytes) => WsMessage::Binary(bytes.into()),
    }
}

fn close_frame(code: u16, reason: String) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}
