//! `connect` and `replay`: one client, fed from the keyboard, a pipe, `-x`,
//! a file or a recording, until there is nothing left to wait for.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::io::{BufRead, IsTerminal, Write};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use steadfast::{
    Client, ClientEvent, ConnectionState, Delivery, DisconnectReason, Error, Payload, Receipt,
    StopReason,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::{seconds, ConnectArgs, ConnectionArgs, Failed, ReplayArgs};
use crate::exit;
use crate::output::{reason_text, stop_text, Printer, Style};
use crate::record::{load_streams, Recorder};

/// Where outgoing messages come from.
enum Source {
    /// Lines typed at a terminal (not echoed back).
    Typed(mpsc::UnboundedReceiver<String>),
    /// Lines from a pipe or a file.
    Piped(mpsc::UnboundedReceiver<String>),
    /// `-x` and `--binary`: all at once.
    Given(VecDeque<Payload>),
    /// A recording: each at its time (already divided by the speed).
    Timed(VecDeque<(Duration, Payload)>),
}

/// `steadfast connect`.
pub(crate) async fn connect(args: ConnectArgs) -> ExitCode {
    let style = Style::from_flags(args.json, args.quiet, args.pretty);
    let printer = Printer::new(style);
    finish(&printer, run_connect(args, &printer).await)
}

/// `steadfast replay`.
pub(crate) async fn replay(args: ReplayArgs) -> ExitCode {
    let style = Style::from_flags(args.json, args.quiet, false);
    let printer = Printer::new(style);
    finish(&printer, run_replay(args, &printer).await)
}

fn finish(printer: &Printer, result: Result<u8, Failed>) -> ExitCode {
    let code = match result {
        Ok(code) => code,
        Err(failed) => {
            if printer.style() == Style::Json {
                printer.exit(failed.code, &failed.message);
            } else {
                eprintln!("steadfast: {}", failed.message);
            }
            failed.code
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

async fn run_connect(args: ConnectArgs, printer: &Printer) -> Result<u8, Failed> {
    let mut given = VecDeque::new();
    for text in &args.execute {
        given.push_back(Payload::Text(text.clone()));
    }
    if let Some(file) = &args.binary {
        let path = file.strip_prefix('@').unwrap_or(file);
        let bytes = std::fs::read(path).map_err(|e| {
            Failed::new(
                exit::USAGE,
                format!("[ERR_INVALID_OPTION] cannot read --binary {path}: {e}"),
            )
        })?;
        given.push_back(Payload::Binary(bytes));
    }
    let interactive = std::io::stdin().is_terminal();
    let (source, default_wait) = if !given.is_empty() {
        (Source::Given(given), 2.0)
    } else if interactive {
        (Source::Typed(read_stdin()), 0.0)
    } else {
        (Source::Piped(read_stdin()), 1.0)
    };
    let wait = seconds("--wait", args.wait.unwrap_or(default_wait))?;
    let recorder = args.record.as_deref().map(Recorder::create).transpose()?;
    run(&args.connection, source, wait, recorder, printer).await
}

async fn run_replay(args: ReplayArgs, printer: &Printer) -> Result<u8, Failed> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(Failed::new(
            exit::USAGE,
            "[ERR_INVALID_OPTION] --speed must be a number above 0",
        ));
    }
    let wait = seconds("--wait", args.wait)?;
    let mut streams = load_streams(&args.file)?;
    if streams.is_empty() {
        // Nothing was sent: connect, wait for replies, close.
        streams.push(Vec::new());
    }
    let plays = streams.into_iter().map(|messages| {
        let messages = messages
            .into_iter()
            .map(|(at, payload)| (at.div_f64(args.speed), payload))
            .collect();
        run(
            &args.connection,
            Source::Timed(messages),
            wait,
            None,
            printer,
        )
    });
    // One client per recorded stream, all at once; the worst exit code wins
    // (none at all: nothing to send, done).
    let mut code = exit::OK;
    for result in futures::future::join_all(plays).await {
        let this = result?;
        if this != exit::OK && (code == exit::OK || this > code) {
            code = this;
        }
    }
    Ok(code)
}

/// Lines of standard input, read on their own thread (a blocking read
/// must not hold up the runtime, and Ctrl-C must still work).
fn read_stdin() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

type Outcome = Pin<Box<dyn Future<Output = (u64, Result<Delivery, Error>)> + Send>>;

/// A large message on its way, for the progress bar.
struct Progress {
    id: u64,
    total: u64,
    bytes_out_at_start: u64,
}

async fn run(
    connection: &ConnectionArgs,
    mut source: Source,
    wait: Duration,
    mut recorder: Option<Recorder>,
    printer: &Printer,
) -> Result<u8, Failed> {
    if connection.tls.insecure {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; \
             anyone on the path can read and change this connection"
        );
    }
    let client = connection
        .builder()?
        .connect()
        .await
        .map_err(|e| Failed::new(code_before_open(&e), format!("[{}] {e}", e.code())))?;
    let start = Instant::now();
    let mut outcomes: FuturesUnordered<Outcome> = FuturesUnordered::new();
    let mut ever_open = false;
    let mut reconnected = false;
    let mut input_done = false;
    let mut failed = false;
    let mut finish_at: Option<Instant> = None;
    let mut progress: Option<Progress> = None;
    let show_progress = std::io::stderr().is_terminal() && printer.style() != Style::Json;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // One message at a time goes to `send`, which waits while the outbox
    // is full; the loop goes on reading events meanwhile (the echoes, and
    // the ACKs behind them that make room). Messages given up front (`-x`)
    // go into the outbox in the first turns, sent once the connection opens.
    let mut sending: Option<Sending> = None;
    loop {
        if input_done && sending.is_none() && outcomes.is_empty() && finish_at.is_none() {
            finish_at = Some(Instant::now() + wait);
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                printer.exit(exit::INTERRUPTED, "interrupted");
                return Ok(exit::INTERRUPTED);
            }
            input = next_input(&mut source, start), if !input_done && sending.is_none() => match input {
                Some((payload, typed)) => {
                    sending = Some(start_send(&client, payload, typed, &mut recorder));
                }
                None => input_done = true,
            },
            result = in_outbox(&mut sending), if sending.is_some() => {
                let Some(done) = sending.take() else { continue };
                match finish_send(done, result, printer) {
                    Some((id, big, outcome)) => {
                        if let (Some(total), true) = (big, show_progress) {
                            progress = Some(Progress {
                                id,
                                total,
                                bytes_out_at_start: client.stats().engine.bytes_out,
                            });
                        }
                        outcomes.push(outcome);
                    }
                    None => failed = true,
                }
            }
            event = client.next_event() => {
                let Some(event) = event else {
                    return Err(Failed::new(exit::FAILURE, "the client stopped unexpectedly"));
                };
                match event {
                    ClientEvent::Message(payload) => {
                        if let Some(recorder) = &mut recorder {
                            record(recorder, "in", &payload);
                        }
                        printer.received(&payload);
                    }
                    ClientEvent::State(state) => {
                        let ending = matches!(state, ConnectionState::Reconnecting { .. })
                            && (!ever_open || connection.no_reconnect);
                        if !ending {
                            printer.state(&state, reconnected);
                        }
                        match &state {
                            ConnectionState::Open { .. } => ever_open = true,
                            ConnectionState::Reconnecting { reason, .. } => {
                                if !ever_open || connection.no_reconnect {
                                    let code = code_of_disconnect(reason, ever_open);
                                    let why = format!("disconnected: {}", reason_text(reason));
                                    printer.exit(code, &why);
                                    return Ok(code);
                                }
                                reconnected = true;
                            }
                            ConnectionState::Closed { reason } => {
                                let code = code_of_stop(reason);
                                printer.exit(code, &stop_text(reason));
                                return Ok(code);
                            }
                            _ => {}
                        }
                    }
                    ClientEvent::Error(error) => {
                        printer.error(&error);
                        if !ever_open {
                            let code = code_before_open(&error);
                            printer.exit(code, &format!("could not connect to {}", connection.url));
                            return Ok(code);
                        }
                    }
                    ClientEvent::ResyncRequired => printer.resync(),
                    ClientEvent::Skipped(count) => printer.skipped(count),
                    _ => {}
                }
            }
            Some((id, result)) = outcomes.next(), if !outcomes.is_empty() => {
                if progress.as_ref().is_some_and(|p| p.id == id) {
                    progress = None;
                    eprintln!();
                }
                match result {
                    Ok(delivery) => printer.delivered(id, delivery),
                    Err(error) => {
                        printer.error(&error);
                        failed = true;
                    }
                }
            }
            _ = tick.tick(), if progress.is_some() => {
                if let Some(p) = &progress {
                    draw_progress(p, client.stats().engine.bytes_out);
                }
            }
            _ = sleep_until(finish_at), if finish_at.is_some() => {
                let _ = client.close(1000, "").await;
                let code = if failed { exit::FAILURE } else { exit::OK };
                printer.exit(code, if failed { "closed; some messages failed" } else { "closed" });
                return Ok(code);
            }
        }
    }
}

/// A message handed to `send`, waiting for room in the outbox.
struct Sending {
    future: Pin<Box<dyn Future<Output = Result<Receipt, Error>> + Send>>,
    shown: Payload,
    size: usize,
    typed: bool,
}

/// The message being sent reached the outbox (or was refused).
async fn in_outbox(sending: &mut Option<Sending>) -> Result<Receipt, Error> {
    match sending {
        Some(sending) => (&mut sending.future).await,
        None => std::future::pending().await,
    }
}

/// Record one message and hand it to the client.
fn start_send(
    client: &Client,
    payload: Payload,
    typed: bool,
    recorder: &mut Option<Recorder>,
) -> Sending {
    if let Some(recorder) = recorder {
        record(recorder, "out", &payload);
    }
    let shown = match &payload {
        Payload::Text(text) => Payload::Text(text.clone()),
        // Binary payloads can be large: show a preview, do not copy it all.
        Payload::Binary(bytes) => Payload::Binary(bytes[..bytes.len().min(64)].to_vec()),
    };
    let size = match &payload {
        Payload::Text(text) => text.len(),
        Payload::Binary(bytes) => bytes.len(),
    };
    let client = client.clone();
    Sending {
        future: Box::pin(async move { client.send(payload).await }),
        shown,
        size,
        typed,
    }
}

/// The message is in the outbox: show it, and return its id, its size if
/// it earns a progress bar, and its outcome; `None` (after printing why)
/// when the client refused it.
fn finish_send(
    sending: Sending,
    result: Result<Receipt, Error>,
    printer: &Printer,
) -> Option<(u64, Option<u64>, Outcome)> {
    let Sending {
        shown, size, typed, ..
    } = sending;
    match result {
        Ok(receipt) => {
            let id = receipt.id();
            let big = match &shown {
                Payload::Binary(_) if size >= 1 << 20 => Some(size as u64),
                _ => None,
            };
            match &shown {
                Payload::Binary(_) if size > 64 => {
                    printer.sent(id, &shown, typed);
                    printer.note(&format!("message {id}: {size} bytes"));
                }
                _ => printer.sent(id, &shown, typed),
            }
            let outcome = receipt.into_future();
            Some((id, big, Box::pin(async move { (id, outcome.await) })))
        }
        Err(error) => {
            printer.error(&error);
            None
        }
    }
}

fn record(recorder: &mut Recorder, dir: &str, payload: &Payload) {
    if let Err(e) = recorder.record(dir, payload) {
        eprintln!("warning: the recording could not be written: {e}");
    }
}

/// The next message to send, and whether it was typed; `None` when the
/// source has no more. Cancel-safe: a message is taken only when returned.
async fn next_input(source: &mut Source, start: Instant) -> Option<(Payload, bool)> {
    match source {
        Source::Typed(lines) => lines.recv().await.map(|l| (Payload::Text(l), true)),
        Source::Piped(lines) => lines.recv().await.map(|l| (Payload::Text(l), false)),
        Source::Given(given) => given.pop_front().map(|p| (p, false)),
        Source::Timed(list) => {
            let at = start + list.front()?.0;
            tokio::time::sleep_until(at).await;
            list.pop_front().map(|(_, p)| (p, false))
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn draw_progress(p: &Progress, bytes_out: u64) {
    let done = bytes_out.saturating_sub(p.bytes_out_at_start).min(p.total);
    let fraction = done as f64 / p.total.max(1) as f64;
    let width = 30;
    let filled = (fraction * width as f64) as usize;
    eprint!(
        "\r[{}{}] {:>5.1}% of {:.1} MiB",
        "#".repeat(filled),
        " ".repeat(width - filled.min(width)),
        fraction * 100.0,
        p.total as f64 / (1024.0 * 1024.0)
    );
    let _ = std::io::stderr().flush();
}

/// The exit code for an error before the first connection opened.
fn code_before_open(error: &Error) -> u8 {
    match error {
        Error::Tls(_) => exit::TLS,
        Error::HandshakeRejected { status: 401 | 403 } | Error::AuthHook(_) => exit::AUTH,
        Error::InvalidUrl(_) | Error::InvalidOption(_) | Error::InvalidConfig(_) => exit::USAGE,
        _ => exit::CONNECT,
    }
}

/// The exit code when the connection dropped and the client will not
/// reconnect (`--no-reconnect`, or it never opened).
fn code_of_disconnect(reason: &DisconnectReason, ever_open: bool) -> u8 {
    match reason {
        DisconnectReason::Closed { code, .. } if exit::is_auth_close(*code) => exit::AUTH,
        // The connection never opened: it was refused or dropped on the way.
        _ if !ever_open => exit::CONNECT,
        DisconnectReason::ConnectTimeout | DisconnectReason::DeadPeer => exit::CONNECT,
        _ => exit::CLOSED,
    }
}

/// The exit code when the client stopped for good.
fn code_of_stop(reason: &StopReason) -> u8 {
    match reason {
        StopReason::Closed => exit::OK,
        StopReason::Rejected { code, .. } if exit::is_auth_close(*code) => exit::AUTH,
        StopReason::Rejected { .. } => exit::CLOSED,
        StopReason::AuthFailed => exit::AUTH,
        StopReason::SubprotocolRefused => exit::CONNECT,
    }
}
