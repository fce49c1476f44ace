//! One TCP (or TLS) connection: HTTP routes, the upgrade, then a reliable
//! session or a plain WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use steadfast_core::codec::{self, SUBPROTOCOL};
use steadfast_core::inflow::{self, Inflow};
use steadfast_core::{EngineError, Event, Output, Payload};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{self, AuthError, Claims};
use crate::debug::{ConnView, Tally};
use crate::faults::{ConnFaults, FaultRecord};
use crate::handler::{Peer, PeerId, ECHO_PROTOCOL};
use crate::http::{self, Head, HeadError, Rewind};
use crate::registry::{lock, AttachError, Attached, PlainCmd, Shared, Slot};
use steadfast_core::close;
use steadfast_core::SessionId;

type Ws<S> = WebSocketStream<Rewind<S>>;

/// One accepted socket, counted in `sockets_open` until dropped (also when
/// its task is aborted or panics).
pub(crate) struct Socket(Arc<Shared>);

impl Socket {
    pub(crate) fn counted(shared: Arc<Shared>) -> Socket {
        shared
            .metrics
            .sockets_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Socket(shared)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.0.metrics.dec(&self.0.metrics.sockets_open);
    }
}

/// Serve one accepted TCP connection: the TLS handshake first if TLS is
/// on, then [`serve`].
pub(crate) async fn accept(
    shared: Arc<Shared>,
    stream: TcpStream,
    (id, remote): (u64, SocketAddr),
    stop: watch::Receiver<bool>,
) {
    let Some(tls) = shared.config.tls.clone() else {
        return serve(shared, stream, (id, remote), None, stop).await;
    };
    let handshake =
        tokio::time::timeout(shared.config.handshake_timeout, tls.acceptor.accept(stream)).await;
    match handshake {
        Ok(Ok(stream)) => {
            let client_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::from(leaf.as_ref()));
            serve(shared, stream, (id, remote), client_certificate, stop).await;
        }
        Ok(Err(error)) => {
            shared.metrics.inc(&shared.metrics.tls_handshake_failures);
            tracing::debug!(%remote, %error, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.inc(&shared.metrics.tls_handshake_failures);
            tracing::debug!(%remote, "TLS handshake timed out");
        }
    }
}

/// Serve one stream (TCP or TLS) until it closes or the server stops.
async fn serve<S>(
    shared: Arc<Shared>,
    mut stream: S,
    (id, remote): (u64, SocketAddr),
    client_certificate: Option<Arc<[u8]>>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let head = match tokio::time::timeout(
        config.handshake_timeout,
        http::read_head(&mut stream, config.max_head_bytes),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::TooLarge)) => {
            return http::respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await
        }
        Ok(Err(HeadError::Malformed)) => {
            return http::respond(&mut stream, "400 Bad Request", "text/plain", "").await
        }
        Ok(Err(HeadError::Io(_) | HeadError::Eof)) | Err(_) => return,
    };
    if !head.is_websocket() {
        return http_request(&shared, &head, &mut stream, false).await;
    }
    let caller = Caller {
        id,
        remote,
        headers: head.headers.clone().into(),
        subject: None,
        client_certificate,
    };
    upgrade(shared, head, stream, caller, stop).await;
}

/// The admin listener: `/metrics` and `/healthz` over plain HTTP, one
/// request per connection, at most [`ADMIN_CONNECTIONS`] at once.
pub(crate) async fn admin(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let head = tokio::time::timeout(
                shared.config.handshake_timeout,
                http::read_head(&mut stream, shared.config.max_head_bytes),
            )
            .await;
            if let Ok(Ok(head)) = head {
                http_request(&shared, &head, &mut stream, true).await;
            }
            drop(slot);
        });
    }
}

/// Admin requests served at once; more are closed unanswered.
const ADMIN_CONNECTIONS: usize = 64;

/// A plain HTTP request: `/healthz`, and `/metrics` on the admin listener
/// (`admin`) or on the public port when there is none.
async fn http_request<S>(shared: &Arc<Shared>, head: &Head, stream: &mut S, admin: bool)
where
    S: AsyncWrite + Unpin,
{
    shared.metrics.inc(&shared.metrics.http_requests);
    let metrics_here = admin || shared.config.admin_listen.is_none();
    {
        let (status, kind, body) = match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/healthz") => match shared.store_health().await {
                Ok(()) => ("200 OK", "text/plain", "ok\n".to_owned()),
                Err(error) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("[ERR_SESSION_STORE] unavailable: {error}\n"),
                ),
            },
            ("GET", "/metrics") if metrics_here => (
                "200 OK",
                "text/plain; version=0.0.4",
                shared.fresh_metrics().render(),
            ),
            ("GET", "/debug/connections") if admin => {
                let only = head.query_param("id").and_then(|id| id.parse().ok());
                match shared.views.render(only) {
                    Some(json) => ("200 OK", "application/json", json),
                    None => (
                        "404 Not Found",
                        "text/plain",
                        "no such connection\n".to_owned(),
                    ),
                }
            }
            _ if admin => (
                "404 Not Found",
                "text/plain",
                "/metrics, /healthz or /debug/connections[?id=N]\n".to_owned(),
            ),
            _ => (
                "426 Upgrade Required",
                "text/plain",
                "a steadfast server: connect with a WebSocket client\n".to_owned(),
            ),
        };
        http::respond(stream, status, kind, &body).await;
    }
}

/// What is known of a connection before it is a peer (a session's peer id
/// is the session's own, known only once it attaches).
struct Caller {
    /// The connection's number on this node (its log lines' `conn{id}`).
    id: u64,
    remote: SocketAddr,
    headers: Arc<[(String, String)]>,
    subject: Option<String>,
    client_certificate: Option<Arc<[u8]>>,
}

impl Caller {
    fn into_peer(self, id: PeerId, session: Option<SessionId>, resumed: bool) -> Peer {
        Peer {
            id,
            session,
            remote: self.remote,
            headers: self.headers,
            subject: self.subject,
            resumed,
            client_certificate: self.client_certificate,
        }
    }
}

/// Which kind of connection the client asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reliable,
    Plain,
}

async fn upgrade<S>(
    shared: Arc<Shared>,
    head: Head,
    stream: S,
    mut caller: Caller,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = caller.remote;
    let offered: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(SEC_WEBSOCKET_PROTOCOL.as_str()))
        .flat_map(|(_, v)| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let kind = if offered.iter().any(|p| p == SUBPROTOCOL) {
        Kind::Reliable
    } else {
        Kind::Plain
    };
    let selected = match kind {
        Kind::Reliable => Some(SUBPROTOCOL),
        Kind::Plain => offered
            .iter()
            .any(|p| p == ECHO_PROTOCOL)
            .then_some(ECHO_PROTOCOL),
    };
    // What one WebSocket message may hold, and so what tungstenite buffers
    // for it: in reliable mode a chunk plus its header (larger messages
    // come in chunks, reassembled under the engine's limits; a client
    // whose chunks are larger is told 1009 and halves them); in plain mode
    // the message size limit.
    let max_message = match kind {
        Kind::Reliable => shared.config.engine.chunk_size.saturating_add(FRAME_HEADER),
        Kind::Plain => usize::try_from(shared.config.engine.limits.max_message_size)
            .unwrap_or(usize::MAX)
            .saturating_add(FRAME_HEADER),
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(shared.config.read_buffer_size)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    #[allow(clippy::result_large_err)] // tungstenite's callback type
    let callback = |_: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if let Some(protocol) = selected {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
        }
        Ok(response)
    };
    let mut faults = shared.config.faults.connection(shared.next_upgrade());
    if faults.refuse() {
        shared.log_fault(FaultRecord::Refuse {
            connection: faults.index,
        });
        shared.metrics.inc(&shared.metrics.connections_refused);
        return;
    }
    let token = auth::offered_token(head.query_param("token"), &offered);
    let stream = Rewind::new(head.bytes, stream);
    let accepted = tokio::time::timeout(
        shared.config.handshake_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config)),
    )
    .await;
    let mut ws = match accepted {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "websocket handshake failed");
            return;
        }
        Err(_) => return,
    };
    let metrics = &shared.metrics;
    metrics.inc(&metrics.connections_total);
    metrics
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let claims = match &shared.config.auth {
        None => Ok(Claims { subject: None }),
        Some(auth) => {
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            token
                .ok_or(AuthError::Missing)
                .and_then(|t| auth.verify(&t, now_s))
        }
    };
    if let Err(error) = claims {
        metrics.inc(&metrics.connections_refused);
        tracing::debug!(%remote, code = error.code(), "token refused");
        close(&mut ws, close::UNAUTHORIZED, &error.to_string()).await;
    } else {
        caller.subject = claims.ok().and_then(|c| c.subject);
        let shown = shared
            .views
            .register(caller.id, caller.remote, kind == Kind::Reliable);
        let view = &shown.view;
        match kind {
            Kind::Reliable => reliable(&shared, &mut ws, caller, (faults, view), stop).await,
            Kind::Plain => {
                let peer = caller.into_peer(shared.new_peer_id(), None, false);
                plain(&shared, &mut ws, peer, (faults, view), stop).await;
            }
        }
    }
    metrics.dec(&metrics.connections_open);
}

/// Room for a DATA frame's header (kind, flags, seq and chunk varints)
/// above its payload.
const FRAME_HEADER: usize = 64;

/// Close after a message over the limit: the client gets the close frame
/// and its reason, not a reset. Nothing more is read as WebSocket frames
/// (the rest of the oversized one would be parsed as garbage): the socket
/// is shut for writing and what the client still sends is read and
/// dropped, for a second at most, so the close is not lost to a reset.
async fn close_over_limit<S>(ws: &mut Ws<S>, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = CloseFrame {
        code: CloseCode::from(close::TOO_BIG),
        reason: reason.to_owned().into(),
    };
    let sent = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame))));
    if !matches!(sent.await, Ok(Ok(()))) {
        return;
    }
    let stream = ws.get_mut();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// The close reason for a message over the limit.
fn over_limit(error: &tokio_tungstenite::tungstenite::error::CapacityError) -> String {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match error {
        CapacityError::MessageTooLong { size, max_size } => {
            format!("message of {size} bytes over the limit of {max_size}")
        }
        other => other.to_string(),
    }
}

async fn close<S>(ws: &mut Ws<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    // A client that does not read would hold the close (and the
    // connection) forever.
    if tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame)))
        .await
        .is_err()
    {
        return;
    }
    // Let the client answer the close, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn close_of(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> (u16, String) {
    match message {
        Some(Ok(Message::Close(Some(frame)))) => (u16::from(frame.code), frame.reason.to_string()),
        Some(Ok(Message::Close(None))) => (1005, String::new()),
        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => (1009, String::new()),
        _ => (1006, String::new()),
    }
}

/// Reliable mode: wait for HELLO, attach to the session, then drive its engine.
async fn reliable<S>(
    shared: &Arc<Shared>,
    ws: &mut Ws<S>,
    caller: Caller,
    (mut faults, view): (ConnFaults, &ConnView),
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handle = Shared::handle(shared);
    let metrics = &shared.metrics;
    let hello = tokio::time::timeout(shared.config.handshake_timeout, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => return Some(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let first = match hello {
        Ok(Some(hello)) => codec::read_hello(&hello).map(|found| (hello, found)),
        _ => Err(EngineError::ConnectTimeout),
    };
    let (hello, found) = match first {
        Ok(first) => first,
        Err(error) => {
            metrics.inc(&metrics.protocol_errors);
            return close(ws, error.close_code(), &error.to_string()).await;
        }
    };
    // A store that is down: refused at once (1013, the client backs off
    // and keeps its outbox), not left waiting for a WELCOME.
    if let Some(error) = shared.committer.as_ref().and_then(|c| c.failing()) {
        tracing::warn!(%error, "refused a reliable client: the session store fails");
        metrics.inc(&metrics.connections_refused);
        return close(ws, close::OVERLOADED, "session store unavailable").await;
    }
    let Attached {
        slot,
        peer: id,
        generation,
        waker,
        resumed,
    } = match shared.attach(
        found,
        caller.subject.as_deref(),
        crate::registry::Origin::of(caller.remote.ip()),
        &hello,
        shared.preload(found.session, found.new).await,
    ) {
        Ok(attached) => attached,
        Err(AttachError::Overloaded) => {
            metrics.inc(&metrics.connections_refused);
            return close(ws, close::OVERLOADED, "too many sessions").await;
        }
        Err(AttachError::Store(error)) => {
            // Try again later: the client keeps its outbox and backs off.
            tracing::warn!(%error, "cannot read the session store");
            metrics.inc(&metrics.connections_refused);
            return close(ws, close::OVERLOADED, "session store unavailable").await;
        }
        Err(AttachError::Engine(error)) => {
            tracing::error!(%error, "the session engine refused the server's configuration");
            return close(ws, close::INTERNAL_ERROR, "server configuration error").await;
        }
    };
    let session = lock(&slot).engine.session();
    if shared.committer.is_some() && shared.store.shared() {
        // What other servers posted while the session was elsewhere.
        let shared = shared.clone();
        tokio::spawn(async move { shared.pull(session).await });
    }
    let peer = caller.into_peer(id, Some(session), resumed);
    view.identify(id.0, Some(session));
    let mut tally = Tally::default();
    tally.read(view, true, &hello);
    // A handler that panics ends the connection 1011 (`End::Handler`).
    let mut handler_ok = shared.guarded("on_connect", peer.id, || {
        shared.handler.on_connect(&handle, &peer);
    });

    // Flow control (steadfast_core::inflow): while this session's outbox
    // is half full, the client's DATA and SKIP frames wait; its ACKs go
    // through and make room.
    let outbox = &shared.config.engine.outbox;
    let busy = |slot: &Slot| {
        let (mut messages, mut bytes) = (slot.engine.queued(), slot.engine.queued_bytes());
        for output in &slot.pending {
            if let Output::Event(Event::Message(payload)) = output {
                messages += 1;
                bytes += payload.len();
            }
        }
        inflow::busy(messages, bytes, outbox)
    };
    let mut parked: Inflow<Bytes> = Inflow::new(&shared.config.engine.limits);

    // The loop: act on pending outputs (letting parked frames in as room
    // allows), flush once, then wait for the socket, a timer, a wake-up
    // (the application sent something) or shutdown.
    let handover = lock(&slot).handover.clone();
    // Outputs waiting for their store writes to commit, by the ticket.
    let mut held: VecDeque<(u64, Vec<Output>)> = VecDeque::new();
    // The session shed (over the memory budget) ends the connection
    // whatever it waits for, a write to a client that does not read too.
    let kill = lock(&slot).kill.clone();
    let body = async {
        'conn: loop {
            if !handler_ok {
                break End::Handler;
            }
            let deadline = loop {
                // Take the pending outputs and hand their messages to the
                // application in one go, under the session's hand-over lock;
                // what goes to the socket is written after, without it.
                // `again`: a parked frame went in, or messages were handed
                // over; either may have queued more (look before waiting).
                let (outputs, deadline, again, barrier) = {
                    let _order = lock(&handover);
                    let (outputs, deadline, unparked, barrier) = {
                        let mut guard = lock(&slot);
                        if guard.generation != generation {
                            break 'conn End::Superseded;
                        }
                        guard.absorb(metrics);
                        // One parked frame at a time, once what the last one
                        // delivered was handed over (its answer is then queued).
                        let mut unparked = false;
                        if guard.pending.is_empty() {
                            if let Some(frame) = parked.release(busy(&guard)) {
                                guard.engine.handle_frame(shared.now_ms(), true, &frame);
                                guard.drain(metrics);
                                unparked = true;
                            }
                        }
                        // Store writes of sends still in another instant:
                        // pushed now, so `barrier` covers what is taken.
                        guard.flush_deferred();
                        let outputs = std::mem::take(&mut guard.pending);
                        guard.handing_over = delivered_in(&outputs);
                        (
                            outputs,
                            guard.engine.poll_timeout(),
                            unparked,
                            guard.barrier,
                        )
                    };
                    // Every delivered message reaches the application, also
                    // when the connection ends partway: the engine counts it
                    // delivered.
                    let mut rest = Vec::with_capacity(outputs.len());
                    let mut taken = 0;
                    // A durable store commits what the handler does for these
                    // messages together with the mark that they were delivered
                    // (no messages, no unit: most turns carry only transmits).
                    let delivering = outputs
                        .iter()
                        .any(|output| matches!(output, Output::Event(Event::Message(_))));
                    let unit = shared
                        .committer
                        .as_ref()
                        .filter(|_| delivering)
                        .map(|c| c.begin());
                    shared.at_one_instant(session, || {
                        for output in outputs {
                            match output {
                                Output::Event(Event::Message(payload)) => {
                                    // It reached the application, panic or not
                                    // (counted taken: it is not delivered again).
                                    handler_ok &= shared.guarded("on_message", peer.id, || {
                                        shared.handler.on_message(&handle, &peer, payload);
                                    });
                                    taken += 1;
                                }
                                output => rest.push(output),
                            }
                        }
                    });
                    if taken > 0 {
                        // The application has them: now an ACK may say so
                        // (taken next time round, with what the handler sent).
                        // Counted for the session even if another connection
                        // took it over meanwhile: it is the session's mark.
                        let mut guard = lock(&slot);
                        guard.handed_over(taken, metrics);
                        drop(unit);
                        if guard.generation != generation {
                            break 'conn End::Superseded;
                        }
                    }
                    if !handler_ok {
                        break 'conn End::Handler;
                    }
                    (rest, deadline, unparked || taken > 0, barrier)
                };
                if outputs.is_empty() && !again {
                    break deadline;
                }
                // A durable store: nothing goes out before the store writes
                // made ahead of it are committed (the ACK after the delivered
                // mark and the handler's sends; a message after its record).
                // Held in order meanwhile; the connection goes on reading, so
                // the next commit carries all that arrived during this one.
                if let Some(committer) = &shared.committer {
                    if !held.is_empty() || barrier > committer.committed() {
                        held.push_back((barrier, outputs));
                        continue;
                    }
                }
                if let Some(end) = write_outputs(ws, outputs, (&mut tally, view)).await {
                    break 'conn end;
                }
            };
            if let Some(committer) = &shared.committer {
                let committed = committer.committed();
                let released = |held: &VecDeque<(u64, Vec<Output>)>| {
                    held.front()
                        .is_some_and(|(barrier, _)| *barrier <= committed)
                };
                // A session another node claimed is let go before the commit
                // that refused its writes counts as done: its outputs stay.
                if released(&held) && lock(&slot).generation != generation {
                    break End::Superseded;
                }
                while released(&held) {
                    if let Some((_, outputs)) = held.pop_front() {
                        if let Some(end) = write_outputs(ws, outputs, (&mut tally, view)).await {
                            break 'conn end;
                        }
                    }
                }
            }
            if ws.flush().await.is_err() {
                break End::Lost(1006, String::new());
            }
            let wait = deadline.map(|at| at.saturating_sub(shared.now_ms()));
            let sleep = async {
                match wait {
                    // Due now (an ACK after `every` messages): tokio's timer
                    // would round it up to its next 1 ms tick, and with
                    // nothing else to do the connection sat idle that long.
                    Some(0) => {}
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => std::future::pending().await,
                }
            };
            // What the session holds now, for the memory budget (its
            // parked frames too).
            let holds = {
                let mut guard = lock(&slot);
                guard.parked_bytes = parked.bytes();
                guard.recount(&shared.memory)
            };
            view.report(&mut tally);
            shared.counted();
            // A client that ignores the announced window is not read further
            // until room is made (its heartbeat may then time out: it
            // resumes); nor is a heavy session while the server is near its
            // memory budget (until the check sheds someone).
            let may_read = parked.may_read() && !shared.memory_bound(holds);
            let commit = async {
                match (&shared.committer, held.front()) {
                    (Some(committer), Some((barrier, _))) => committer.wait(*barrier).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = commit => {}
                message = ws.next(), if may_read => {
                    // This frame and those already buffered behind it (up to a
                    // batch): one flush answers them all.
                    let mut message = message;
                    // One clock read for the batch (it takes microseconds).
                    let now = shared.now_ms();
                    for taken in 1.. {
                        let frame = match frame_of(message) {
                            Ok(frame) => frame,
                            Err(end) => break 'conn end,
                        };
                        if let Some((binary, data)) = frame {
                            tally.read(view, binary, &data);
                            if binary && codec::is_data(&data) && inject(shared, &mut faults).await {
                                break 'conn End::Lost(1006, "fault injected".into());
                            }
                            let mut guard = lock(&slot);
                            if guard.generation != generation {
                                break 'conn End::Superseded;
                            }
                            let full = busy(&guard);
                            if let Some(data) = parked.admit(binary, data, full) {
                                guard.engine.handle_frame(now, binary, &data);
                                guard.drain(metrics);
                            }
                        }
                        if taken == READ_BATCH || !parked.may_read() {
                            break;
                        }
                        match ws.next().now_or_never() {
                            Some(next) => message = next,
                            None => {
                                // Nothing more to read: the burst ends. Its ACK
                                // covers what the application already has; the
                                // messages just read are acknowledged once the
                                // loop above has handed them over (handed_over).
                                let mut guard = lock(&slot);
                                if guard.generation != generation {
                                    break 'conn End::Superseded;
                                }
                                guard.engine.handle_read_burst_end();
                                guard.drain(metrics);
                                break;
                            }
                        }
                    }
                }
                () = sleep => {
                    let mut guard = lock(&slot);
                    if guard.generation == generation {
                        guard.engine.handle_timeout(shared.now_ms());
                        guard.drain(metrics);
                    }
                }
                () = waker.notified() => {}
                _ = stop.changed() => break End::Shutdown,
            }
        }
    };
    let ended = tokio::select! {
        biased;
        () = kill.notified() => End::Shed,
        ended = body => ended,
    };

    tracing::debug!(?session, ?ended, "reliable connection ended");
    // Detach (unless another connection took the session over).
    {
        let _order = lock(&handover);
        let mut guard = lock(&slot);
        if guard.generation == generation {
            match &ended {
                End::Lost(code, reason) => {
                    guard.engine.handle_close(shared.now_ms(), *code, reason);
                }
                End::OverLimit(reason) => {
                    guard
                        .engine
                        .handle_close(shared.now_ms(), close::TOO_BIG, reason);
                }
                End::Handler => {
                    guard.engine.handle_close(
                        shared.now_ms(),
                        close::INTERNAL_ERROR,
                        HANDLER_FAILED,
                    );
                }
                End::Shutdown => {
                    guard
                        .engine
                        .handle_close(shared.now_ms(), close::GOING_AWAY, "");
                }
                // The engine asked for this close (or was told of it); a
                // shed session is gone (its generation moved on).
                End::Engine(..) | End::Superseded | End::Shed => {}
            }
            guard.waker = None;
            guard.detached_at = Some(std::time::Instant::now());
            // Its parked frames go with it (the client sends them again).
            guard.parked_bytes = 0;
            guard.recount(&shared.memory);
            guard.drain(metrics);
            // Messages delivered by the engine but not yet handed over.
            let delivered: Vec<Payload> = std::mem::take(&mut guard.pending)
                .into_iter()
                .filter_map(|output| match output {
                    Output::Event(Event::Message(payload)) => Some(payload),
                    _ => None,
                })
                .collect();
            guard.handing_over = delivered.len();
            drop(guard);
            let taken = delivered.len();
            let unit = shared.committer.as_ref().map(|c| c.begin());
            // In an instant: what the handler sends is marked as made by
            // these deliveries (see `Forward`).
            shared.at_one_instant(session, || {
                for payload in delivered {
                    shared.guarded("on_message", peer.id, || {
                        shared.handler.on_message(&handle, &peer, payload);
                    });
                }
            });
            if taken > 0 {
                // Counted for the session, whichever connection has it now.
                lock(&slot).handed_over(taken, metrics);
            }
            drop(unit);
            drop(_order);
        }
    }
    match ended {
        End::Superseded => close(ws, close::SUPERSEDED, "session taken over").await,
        End::Engine(code, reason) => close(ws, code, &reason).await,
        End::Shutdown => close(ws, close::GOING_AWAY, "server shutting down").await,
        End::OverLimit(reason) => close_over_limit(ws, &reason).await,
        End::Handler => close(ws, close::INTERNAL_ERROR, HANDLER_FAILED).await,
        End::Shed => close(ws, close::OVERLOADED, "server over its memory budget").await,
        // The client closed: tungstenite queued the answering close frame;
        // send it, so the client's close handshake completes.
        End::Lost(code, _) if code != close::ABNORMAL => {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
        }
        End::Lost(..) => {}
    }
    shared.guarded("on_disconnect", peer.id, || {
        shared.handler.on_disconnect(&handle, &peer);
    });
}

/// The close reason when the application's handler panicked.
const HANDLER_FAILED: &str = "internal error";

/// Put the transmits on the socket (fed, not flushed) until one fails or
/// the engine asks to close.
async fn write_outputs<S>(
    ws: &mut Ws<S>,
    outputs: Vec<Output>,
    (tally, view): (&mut Tally, &ConnView),
) -> Option<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for output in outputs {
        match output {
            Output::Transmit(t) => {
                tally.wrote(view, t.binary, &t.data);
                let message = if t.binary {
                    Message::Binary(t.data.into())
                } else {
                    // The engine only transmits text it built from a String.
                    Message::Text(String::from_utf8_lossy(&t.data).into_owned().into())
                };
                if ws.feed(message).await.is_err() {
                    return Some(End::Lost(1006, String::new()));
                }
            }
            Output::Disconnect { code, reason } => return Some(End::Engine(code, reason)),
            _ => {}
        }
    }
    None
}

/// How many of `outputs` are messages for the application.
fn delivered_in(outputs: &VecDeque<Output>) -> usize {
    outputs
        .iter()
        .filter(|output| matches!(output, Output::Event(Event::Message(_))))
        .count()
}

/// A counted frame arrived: apply the fault plan's delay, and say whether
/// the connection is to be dropped now (logged).
async fn inject(shared: &Shared, faults: &mut ConnFaults) -> bool {
    if let Some(delay) = faults.delay() {
        tokio::time::sleep(delay).await;
    }
    match faults.on_frame() {
        Some(frame) => {
            shared.log_fault(FaultRecord::Drop {
                connection: faults.index,
                frame,
            });
            true
        }
        None => false,
    }
}

/// Frames read in one go (those already buffered) before acting on them.
const READ_BATCH: usize = 64;

/// What a reliable connection makes of a WebSocket message: a frame
/// (binary?, bytes), nothing (ping, pong), or the end.
fn frame_of(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<(bool, Bytes)>, End> {
    match message {
        // As tungstenite read it: no copy, also when parked.
        Some(Ok(Message::Binary(bytes))) => Ok(Some((true, bytes))),
        Some(Ok(Message::Text(text))) => Ok(Some((false, Bytes::from(text)))),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(error))) => {
            Err(End::OverLimit(over_limit(&error)))
        }
        other => {
            let (code, reason) = close_of(other);
            Err(End::Lost(code, reason))
        }
    }
}

#[derive(Debug)]
enum End {
    /// Another connection attached to the session.
    Superseded,
    /// The engine closed it (protocol error, limit, or `ServerHandle::close`).
    Engine(u16, String),
    /// The socket closed or failed.
    Lost(u16, String),
    /// The client sent a message over the limit (1009, with this reason).
    OverLimit(String),
    /// The application's handler panicked (1011).
    Handler,
    /// The server shed the session (over its memory budget; 1013).
    Shed,
    /// The server is stopping.
    Shutdown,
}

/// Plain mode: no framing; messages go to the handler as they come.
async fn plain<S>(
    shared: &Arc<Shared>,
    ws: &mut Ws<S>,
    peer: Peer,
    (mut faults, view): (ConnFaults, &ConnView),
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handle = Shared::handle(shared);
    let metrics = &shared.metrics;
    let capacity = shared.config.plain_queue.max(1);
    let (tx, mut rx) = mpsc::channel(capacity);
    shared.register_plain(peer.id, tx);
    view.identify(peer.id.0, None);
    let mut tally = Tally::default();
    let mut handler_ok = shared.guarded("on_connect", peer.id, || {
        shared.handler.on_connect(&handle, &peer);
    });
    // Backpressure: while this connection's outgoing queue is over half
    // full, stop reading, so what the handler answers (an echo) finds room
    // instead of being dropped as busy.
    let may_read = |rx: &mpsc::Receiver<PlainCmd>| rx.len() <= capacity / 2;
    // Liveness: a ping every `ping_every`; the connection is closed when
    // nothing was heard for `idle_after` (a message, a pong, a ping).
    let (ping_every, idle_after) = (
        shared.config.plain_ping_interval,
        shared.config.plain_idle_timeout,
    );
    let far = Duration::from_secs(365 * 24 * 3600);
    let or_far = |d: Duration| if d.is_zero() { far } else { d };
    let mut heard = tokio::time::Instant::now();
    let mut next_ping = heard + or_far(ping_every);
    // Each wake-up takes what is ready (up to a batch of reads), lets the
    // handler answer, writes every answer queued and flushes once: a burst
    // of small messages costs one write, not one per message.
    'conn: loop {
        if !handler_ok {
            close(ws, close::INTERNAL_ERROR, HANDLER_FAILED).await;
            break;
        }
        if !may_read(&rx) {
            // Not read by choice (its answers wait): not its silence.
            heard = tokio::time::Instant::now();
        }
        let idle_at = heard + or_far(idle_after);
        // The command that woke us, if one did; the rest are taken below.
        let first = tokio::select! {
            biased;
            _ = stop.changed() => {
                close(ws, close::GOING_AWAY, "server shutting down").await;
                break;
            }
            () = tokio::time::sleep_until(idle_at.min(next_ping)) => {
                let now = tokio::time::Instant::now();
                if now >= idle_at {
                    metrics.inc(&metrics.plain_idle_closed);
                    let reason = format!("idle: nothing heard for {idle_after:?}");
                    close(ws, close::GOING_AWAY, &reason).await;
                    break;
                }
                next_ping = now + or_far(ping_every);
                Some(PlainCmd::Ping)
            }
            message = ws.next(), if may_read(&rx) => {
                heard = tokio::time::Instant::now();
                let mut message = message;
                for taken in 1.. {
                    let payload = match message {
                        Some(Ok(Message::Text(text))) => {
                            tally.read(view, false, text.as_bytes());
                            Some(Payload::Text(text.as_str().to_owned()))
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            tally.read(view, true, &bytes);
                            Some(Payload::Binary(bytes.to_vec()))
                        }
                        // Pings are answered by tungstenite.
                        Some(Ok(_)) => None,
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(error))) => {
                            close_over_limit(ws, &over_limit(&error)).await;
                            break 'conn;
                        }
                        _ => break 'conn,
                    };
                    if let Some(payload) = payload {
                        if inject(shared, &mut faults).await {
                            break 'conn;
                        }
                        metrics.inc(&metrics.frames_in);
                        metrics.add(&metrics.bytes_in, payload.len() as u64);
                        metrics.inc(&metrics.messages_in);
                        handler_ok &= shared.guarded("on_message", peer.id, || {
                            shared.handler.on_message(&handle, &peer, payload);
                        });
                    }
                    if taken == READ_BATCH || !may_read(&rx) || !handler_ok {
                        break;
                    }
                    match ws.next().now_or_never() {
                        Some(next) => message = next,
                        None => break,
                    }
                }
                None
            }
            command = rx.recv() => match command {
                Some(command) => Some(command),
                // The registry dropped us (cannot happen while registered).
                None => break,
            },
        };
        // A client that takes nothing it is sent stalls the write: closed
        // like a silent one.
        let written = write_plain(shared, ws, &mut rx, first, (&mut tally, view));
        let done = tokio::time::timeout(or_far(idle_after), written).await;
        view.report(&mut tally);
        match done {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                metrics.inc(&metrics.plain_idle_closed);
                break;
            }
        }
    }
    shared.unregister_plain(peer.id);
    shared.guarded("on_disconnect", peer.id, || {
        shared.handler.on_disconnect(&handle, &peer);
    });
}

/// Write `first` and every command queued behind it for a plain
/// connection, then flush once. False: the connection is over (closed as
/// asked, or the write failed).
async fn write_plain<S>(
    shared: &Shared,
    ws: &mut Ws<S>,
    rx: &mut mpsc::Receiver<PlainCmd>,
    first: Option<PlainCmd>,
    (tally, view): (&mut Tally, &ConnView),
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &shared.metrics;
    let mut fed = false;
    let mut next = first.or_else(|| rx.try_recv().ok());
    while let Some(command) = next {
        match command {
            PlainCmd::Send(payload) => {
                metrics.inc(&metrics.frames_out);
                metrics.add(&metrics.bytes_out, payload.len() as u64);
                metrics.inc(&metrics.messages_out);
                let message = match payload {
                    Payload::Text(text) => {
                        tally.wrote(view, false, text.as_bytes());
                        Message::Text(text.into())
                    }
                    Payload::Binary(bytes) => {
                        tally.wrote(view, true, &bytes);
                        Message::Binary(bytes.into())
                    }
                };
                if ws.feed(message).await.is_err() {
                    return false;
                }
                fed = true;
            }
            PlainCmd::Ping => {
                if ws.feed(Message::Ping(Bytes::new())).await.is_err() {
                    return false;
                }
                fed = true;
            }
            PlainCmd::Close(code, reason) => {
                if fed && ws.flush().await.is_err() {
                    return false;
                }
                close(ws, code, &reason).await;
                return false;
            }
        }
        next = rx.try_recv().ok();
    }
    !fed || ws.flush().await.is_ok()
}
