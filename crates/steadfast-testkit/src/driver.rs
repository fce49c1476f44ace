//! A minimal native driver for a client [`Engine`] over tokio-tungstenite,
//! for testing servers: it does what `steadfast`'s client does (connect,
//! feed frames and timers, act on outputs) without stores or options, and
//! lets a test cut the connection abruptly.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use steadfast_core::codec::SUBPROTOCOL;
use steadfast_core::{Config, Engine, Event, Output, Payload, Receipt, SendError, State, Stats};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Cmd {
    Send(Payload, oneshot::Sender<Result<Receipt, SendError>>),
    Cut,
    Close,
    Inspect(oneshot::Sender<(State, Stats, usize)>),
}

/// A client engine driven on its own task.
#[derive(Debug)]
pub struct EngineClient {
    commands: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl EngineClient {
    /// Start connecting to `url` (offering `steadfast.v1`).
    pub fn start(url: &str, config: Config, seed: u64) -> EngineClient {
        let engine = Engine::client(config, seed).expect("the test's config is valid");
        let (commands, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(url.to_owned(), engine, rx, events_tx));
        EngineClient {
            commands,
            events,
            task,
        }
    }

    /// Queue a message.
    pub async fn send(&self, payload: Payload) -> Result<Receipt, SendError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Cmd::Send(payload, tx));
        rx.await.expect("the driver task is running")
    }

    /// Drop the TCP connection without a closing handshake.
    pub fn cut(&self) {
        let _ = self.commands.send(Cmd::Cut);
    }

    /// Close for good.
    pub fn close(&self) {
        let _ = self.commands.send(Cmd::Close);
    }

    /// The engine's state, counters and outbox length.
    pub async fn inspect(&self) -> (State, Stats, usize) {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Cmd::Inspect(tx));
        rx.await.expect("the driver task is running")
    }

    /// The next event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Events until `done` returns true for one (returned last), or `Err`
    /// with everything seen if `timeout` passes first.
    pub async fn events_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Result<Vec<Event>, Vec<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    let stop = done(&event);
                    seen.push(event);
                    if stop {
                        return Ok(seen);
                    }
                }
                _ => return Err(seen),
            }
        }
    }
}

impl Drop for EngineClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(url: String, offer: bool) -> Result<(Ws, Option<String>), String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if offer {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, protocol))
}

async fn run(
    url: String,
    mut engine: Engine,
    mut commands: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,
) {
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut ws: Option<Ws> = None;
    let mut connecting: Option<futures::future::BoxFuture<'static, _>> = None;
    engine.connect(now());
    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Timeout(_) => break,
                Output::Connect { offer_reliable } => {
                    ws = None;
                    connecting = Some(Box::pin(connect(url.clone(), offer_reliable)));
                }
                Output::Transmit(t) => {
                    if let Some(socket) = ws.as_mut() {
                        let message = if t.binary {
                            Message::Binary(t.data.into())
                        } else {
                            Message::Text(String::from_utf8_lossy(&t.data).into_owned().into())
                        };
                        let _ = socket.feed(message).await;
                    }
                }
                Output::Disconnect { code, reason } => {
                    if let Some(mut socket) = ws.take() {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        let _ = socket.close(Some(frame)).await;
                    }
                    connecting = None;
                }
                Output::Event(event) => {
                    let message = matches!(event, Event::Message(_));
                    let _ = events.send(event);
                    if message {
                        // Handed to the test: taken.
                        engine.handle_taken(1);
                    }
                }
                Output::Persist(_) => {}
            }
        }
        if let Some(socket) = ws.as_mut() {
            let _ = socket.flush().await;
        }
        let deadline = engine.poll_timeout();
        let wait = deadline.map(|at| at.saturating_sub(now()));
        let sleep = async {
            match wait {
                // Due now: tokio's sleep would wait for its next 1 ms tick
                // (the reference server's connection loop does the same).
                Some(0) => {}
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        let next_message = async {
            match ws.as_mut() {
                Some(socket) => socket.next().await,
                None => std::future::pending().await,
            }
        };
        let connected = async {
            match connecting.as_mut() {
                Some(future) => future.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connected => {
                connecting = None;
                match result {
                    Ok((socket, protocol)) => {
                        ws = Some(socket);
                        engine.handle_open(now(), protocol.as_deref());
                    }
                    Err(_) => engine.handle_close(now(), 1006, "connect failed"),
                }
            }
            // Each message read is a burst of its own: its ACK follows its
            // event (handed over first, in output order).
            message = next_message => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    engine.handle_frame(now(), true, &bytes);
                    engine.handle_read_burst_end();
                }
                Some(Ok(Message::Text(text))) => {
                    engine.handle_frame(now(), false, text.as_bytes());
                    engine.handle_read_burst_end();
                }
                Some(Ok(Message::Close(frame))) => {
                    ws = None;
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    engine.handle_close(now(), code, &reason);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    ws = None;
                    engine.handle_close(now(), 1006, "");
                }
            },
            command = commands.recv() => match command {
                Some(Cmd::Send(payload, reply)) => {
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    let _ = reply.send(engine.send(now(), wall, payload));
                }
                Some(Cmd::Cut) => {
                    if ws.take().is_some() {
                        engine.handle_close(now(), 1006, "cut by the test");
                    }
                }
                Some(Cmd::Close) => engine.close(now()),
                Some(Cmd::Inspect(reply)) => {
                    let _ = reply.send((engine.state().clone(), *engine.stats(), engine.queued()));
                }
                None => return,
            },
            () = sleep => engine.handle_timeout(now()),
        }
    }
}
