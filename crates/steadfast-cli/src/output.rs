//! What `connect` and `replay` print: messages on standard output, the
//! connection's story on standard error; or one JSON object per event.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steadfast::{ConnectionState, Delivery, DisconnectReason, Error, Mode, Payload, StopReason};

/// How to print (`connect`, `replay` and `proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Lines for people (`connect`: `< text` for what arrives, the story on
    /// stderr).
    Plain,
    /// As `Plain`, with colours on a terminal (`connect`: JSON messages
    /// pretty-printed).
    Pretty,
    /// One JSON object per event on stdout.
    Json,
    /// `connect`: only the received payloads; `proxy`: nothing per message.
    Quiet,
}

impl Style {
    /// The style the `--json`, `--quiet` and `--pretty` flags ask for.
    pub(crate) fn from_flags(json: bool, quiet: bool, pretty: bool) -> Style {
        if json {
            Style::Json
        } else if quiet {
            Style::Quiet
        } else if pretty {
            Style::Pretty
        } else {
            Style::Plain
        }
    }
}

/// Prints events in one [`Style`].
#[derive(Debug)]
pub(crate) struct Printer {
    style: Style,
    colour: bool,
    start: Instant,
}

/// Binary payloads print as hex, this many bytes at most (outside `--json`
/// and `--quiet`, which print all of it).
const HEX_PREVIEW: usize = 64;

impl Printer {
    pub(crate) fn new(style: Style) -> Printer {
        Printer {
            style,
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            start: Instant::now(),
        }
    }

    pub(crate) fn style(&self) -> Style {
        self.style
    }

    fn ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    fn json(&self, mut value: Value) {
        if let Value::Object(map) = &mut value {
            map.insert("t_ms".into(), json!(self.ms()));
        }
        line(&value.to_string());
    }

    /// A message from the server.
    pub(crate) fn received(&self, payload: &Payload) {
        match (self.style, payload) {
            (Style::Json, _) => self.json(payload_json("message", "in", payload)),
            (Style::Quiet, Payload::Text(text)) => line(text),
            (Style::Quiet, Payload::Binary(bytes)) => line(&hex(bytes)),
            (Style::Pretty, Payload::Text(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => {
                    let mut out = String::from("< ");
                    pretty(&mut out, &value, 1, self.colour);
                    line(&out);
                }
                Err(_) => line(&format!("< {text}")),
            },
            (_, Payload::Text(text)) => line(&format!("< {text}")),
            (_, Payload::Binary(bytes)) => line(&format!("< {}", binary_preview(bytes))),
        }
    }

    /// A message queued to the server (`id` is its receipt number). Typed
    /// lines are not repeated: they are on the screen already.
    pub(crate) fn sent(&self, id: u64, payload: &Payload, typed: bool) {
        match self.style {
            Style::Json => {
                let mut value = payload_json("sent", "out", payload);
                value["id"] = json!(id);
                self.json(value);
            }
            Style::Quiet => {}
            Style::Plain | Style::Pretty if typed => {}
            Style::Plain | Style::Pretty => match payload {
                Payload::Text(text) => line(&format!("> {text}")),
                Payload::Binary(bytes) => line(&format!("> {}", binary_preview(bytes))),
            },
        }
    }

    /// The server acknowledged (reliable) or the socket took (plain) a message.
    pub(crate) fn delivered(&self, id: u64, delivery: Delivery) {
        if self.style == Style::Json {
            let how = match delivery {
                Delivery::Acked => "acked",
                _ => "sent",
            };
            self.json(json!({ "event": "ack", "id": id, "delivery": how }));
        }
    }

    /// The connection state changed.
    pub(crate) fn state(&self, state: &ConnectionState, reconnected: bool) {
        match self.style {
            Style::Json => self.json(state_json(state)),
            Style::Quiet => {}
            Style::Plain | Style::Pretty => {
                if let Some(text) = state_text(state, reconnected) {
                    self.note(&text);
                }
            }
        }
    }

    /// Something went wrong that the client survives (or the reason it stops).
    pub(crate) fn error(&self, error: &Error) {
        if self.style == Style::Json {
            self.json(
                json!({ "event": "error", "code": error.code(), "message": error.to_string() }),
            );
        } else {
            eprintln!("error: [{}] {error}", error.code());
        }
    }

    /// The server lost the session; a new one began.
    pub(crate) fn resync(&self) {
        match self.style {
            Style::Json => self.json(json!({ "event": "resync" })),
            Style::Quiet => {}
            _ => self.note(
                "the server lost the session: a new one began, queued messages were sent again",
            ),
        }
    }

    /// The server skipped messages that expired before it could send them.
    pub(crate) fn skipped(&self, count: u64) {
        match self.style {
            Style::Json => self.json(json!({ "event": "skipped", "count": count })),
            Style::Quiet => {}
            _ => self.note(&format!("the server skipped {count} expired messages")),
        }
    }

    /// The end: why, and the exit code.
    pub(crate) fn exit(&self, code: u8, why: &str) {
        match self.style {
            Style::Json => self.json(json!({ "event": "exit", "code": code, "reason": why })),
            Style::Quiet if code == 0 => {}
            _ => self.note(why),
        }
    }

    /// A line of the connection's story on stderr (not in `--json`/`--quiet`).
    pub(crate) fn note(&self, text: &str) {
        match self.style {
            Style::Json | Style::Quiet => {}
            _ => eprintln!("* {text}"),
        }
    }
}

/// Print one line on stdout; a closed pipe (`| head`) is not an error worth a panic.
fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn payload_json(event: &str, dir: &str, payload: &Payload) -> Value {
    match payload {
        Payload::Text(text) => json!({ "event": event, "dir": dir, "type": "text", "data": text }),
        Payload::Binary(bytes) => {
            json!({ "event": event, "dir": dir, "type": "binary", "hex": hex(bytes) })
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn binary_preview(bytes: &[u8]) -> String {
    if bytes.len() <= HEX_PREVIEW {
        format!("[binary, {} bytes] {}", bytes.len(), hex(bytes))
    } else {
        format!(
            "[binary, {} bytes] {}…",
            bytes.len(),
            hex(&bytes[..HEX_PREVIEW])
        )
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Reliable => "reliable",
        _ => "plain",
    }
}

pub(crate) fn reason_text(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::Closed { code, reason } if reason.is_empty() => format!("closed {code}"),
        DisconnectReason::Closed { code, reason } => format!("closed {code}: {reason}"),
        DisconnectReason::ConnectTimeout => "connect timed out".into(),
        DisconnectReason::DeadPeer => "the server stopped answering".into(),
        DisconnectReason::ProtocolError { code } => format!("protocol error (closed {code})"),
        DisconnectReason::Requested => "reconnect requested".into(),
    }
}

pub(crate) fn stop_text(reason: &StopReason) -> String {
    match reason {
        StopReason::Closed => "closed".into(),
        StopReason::Rejected { code, reason } if reason.is_empty() => {
            format!("closed by the server with {code}")
        }
        StopReason::Rejected { code, reason } => {
            format!("closed by the server with {code}: {reason}")
        }
        StopReason::AuthFailed => "the server refused the credentials".into(),
        StopReason::SubprotocolRefused => {
            "the server does not speak steadfast.v1 (--reliable on)".into()
        }
    }
}

fn state_text(state: &ConnectionState, reconnected: bool) -> Option<String> {
    Some(match state {
        ConnectionState::Connecting { attempt: 0 } => "connecting".into(),
        ConnectionState::Connecting { attempt } => format!("connecting (attempt {})", attempt + 1),
        ConnectionState::Open { mode } if reconnected => {
            format!("reconnected ({}; queued messages resent)", mode_name(*mode))
        }
        ConnectionState::Open { mode } => format!("connected ({})", mode_name(*mode)),
        ConnectionState::Reconnecting {
            retry_in, reason, ..
        } => format!(
            "disconnected ({}); reconnecting in {}",
            reason_text(reason),
            seconds(*retry_in)
        ),
        ConnectionState::Suspended { reason } => format!("waiting: {reason:?}"),
        // The end is reported with the exit.
        _ => return None,
    })
}

fn state_json(state: &ConnectionState) -> Value {
    match state {
        ConnectionState::Idle => json!({ "event": "state", "state": "idle" }),
        ConnectionState::Connecting { attempt } => {
            json!({ "event": "state", "state": "connecting", "attempt": attempt })
        }
        ConnectionState::Open { mode } => {
            json!({ "event": "state", "state": "open", "mode": mode_name(*mode) })
        }
        ConnectionState::Reconnecting {
            attempt,
            retry_in,
            reason,
            ..
        } => json!({
            "event": "state",
            "state": "reconnecting",
            "attempt": attempt,
            "retry_in_ms": retry_in.as_millis(),
            "reason": reason_text(reason),
        }),
        ConnectionState::Suspended { reason } => {
            json!({ "event": "state", "state": "suspended", "reason": format!("{reason:?}") })
        }
        ConnectionState::Closed { reason } => {
            json!({ "event": "state", "state": "closed", "reason": stop_text(reason) })
        }
        other => json!({ "event": "state", "state": format!("{other:?}") }),
    }
}

/// ANSI colours for `--pretty` on a terminal.
const KEY: &str = "\x1b[36m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[33m";
const LITERAL: &str = "\x1b[35m";
const RESET: &str = "\x1b[0m";

/// Pretty-print `value` (two-space indent), coloured if asked.
fn pretty(out: &mut String, value: &Value, depth: usize, colour: bool) {
    let paint = |out: &mut String, colour_code: &str, text: &str| {
        if colour {
            let _ = write!(out, "{colour_code}{text}{RESET}");
        } else {
            out.push_str(text);
        }
    };
    let indent = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth);
                paint(out, KEY, &Value::String(key.clone()).to_string());
                out.push_str(": ");
                pretty(out, item, depth + 1, colour);
            }
            indent(out, depth - 1);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth);
                pretty(out, item, depth + 1, colour);
            }
            indent(out, depth - 1);
            out.push(']');
        }
        Value::String(_) => paint(out, STRING, &value.to_string()),
        Value::Number(_) => paint(out, NUMBER, &value.to_string()),
        Value::Bool(_) | Value::Null => paint(out, LITERAL, &value.to_string()),
        // Empty object or array.
        _ => out.push_str(&value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_is_indented_and_coloured_only_when_asked() {
        let value: Value =
            serde_json::from_str(r#"{"a":1,"b":[true,null,"x"],"c":{}}"#).expect("valid JSON");
        let mut plain = String::new();
        pretty(&mut plain, &value, 1, false);
        assert_eq!(
            plain,
            "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null,\n    \"x\"\n  ],\n  \"c\": {}\n}"
        );
        let mut coloured = String::new();
        pretty(&mut coloured, &value, 1, true);
        assert!(coloured.contains("\x1b[36m\"a\"\x1b[0m: \x1b[33m1\x1b[0m"));
        // Without the colour codes it is the same text.
        let stripped = coloured
            .replace(KEY, "")
            .replace(STRING, "")
            .replace(NUMBER, "")
            .replace(LITERAL, "")
            .replace(RESET, "");
        assert_eq!(stripped, plain);
    }
}
