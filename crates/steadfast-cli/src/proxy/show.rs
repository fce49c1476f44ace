//! What `steadfast proxy` prints: one line (or one JSON object) per
//! message, connection and fault, through the filters.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use base64::Engine as _;
use clap::ValueEnum;
use regex::Regex;
use serde_json::{json, Map, Value};
use steadfast_core::codec::{self, Frame};
use tokio_tungstenite::tungstenite::Message;

use crate::output::hex;
pub(crate) use crate::output::Style;

/// Which end a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Side {
    /// The application's client (messages going to the server).
    Client,
    /// The server (messages going to the client).
    Server,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    fn arrow(self) -> &'static str {
        match self {
            Side::Client => "→",
            Side::Server => "←",
        }
    }

    /// The record's direction, as `steadfast connect --record` writes it
    /// (the client's point of view).
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Side::Client => "out",
            Side::Server => "in",
        }
    }
}

/// What to show (the record keeps everything).
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub(crate) from: Option<Side>,
    pub(crate) conns: Vec<u64>,
    /// Lower-case opcode or steadfast frame names.
    pub(crate) types: Vec<String>,
    pub(crate) min_size: Option<usize>,
    pub(crate) max_size: Option<usize>,
    pub(crate) pattern: Option<Regex>,
}

/// Names `--type` accepts.
pub(crate) const TYPES: &[&str] = &[
    "text", "binary", "ping", "pong", "close", "hello", "welcome", "data", "ack", "skip",
];

impl Filter {
    /// Whether a message passes: `kinds` are its opcode name and, on a
    /// steadfast.v1 connection, its frame type; `text` its text (a text
    /// message, or a text DATA frame's payload).
    fn shows(
        &self,
        conn: u64,
        from: Side,
        kinds: &[&str],
        size: usize,
        text: Option<&str>,
    ) -> bool {
        self.shows_connection(conn)
            && self.from.is_none_or(|f| f == from)
            && (self.types.is_empty() || kinds.iter().any(|k| self.types.iter().any(|t| t == k)))
            && self.min_size.is_none_or(|min| size >= min)
            && self.max_size.is_none_or(|max| size <= max)
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| text.is_some_and(|t| p.is_match(t)))
    }

    /// Whether events of connection `conn` show at all.
    fn shows_connection(&self, conn: u64) -> bool {
        self.conns.is_empty() || self.conns.contains(&conn)
    }

    /// Whether only message filters are set (connection events then hide).
    fn message_only(&self) -> bool {
        !self.types.is_empty()
            || self.min_size.is_some()
            || self.max_size.is_some()
            || self.pattern.is_some()
    }
}

/// Prints proxy events.
#[derive(Debug)]
pub(crate) struct Shower {
    pub(crate) style: Style,
    pub(crate) filter: Filter,
    /// Bytes of a payload shown at most.
    pub(crate) preview: usize,
    pub(crate) show_secrets: bool,
    colour: bool,
    start: Instant,
}

const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Shower {
    pub(crate) fn new(style: Style, filter: Filter, preview: usize, show_secrets: bool) -> Shower {
        Shower {
            style,
            filter,
            preview,
            show_secrets,
            colour: style == Style::Pretty
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none(),
            start: Instant::now(),
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn emit(&self, mut value: Value, text: impl FnOnce() -> String) {
        match self.style {
            Style::Quiet => {}
            Style::Json => {
                if let Value::Object(map) = &mut value {
                    map.insert("t_ms".into(), json!(self.elapsed_ms()));
                }
                line(&value.to_string());
            }
            Style::Plain | Style::Pretty => {
                let t = self.start.elapsed().as_secs_f64();
                line(&format!(
                    "{} {}",
                    self.paint(DIM, &format!("{t:9.3}")),
                    text()
                ));
            }
        }
    }

    fn connection_event(&self, conn: u64) -> bool {
        self.style != Style::Quiet
            && self.filter.shows_connection(conn)
            && !self.filter.message_only()
    }

    /// A connection was proxied: the request and what the server chose.
    pub(crate) fn open(&self, conn: u64, remote: &str, head: &Head, protocol: Option<&str>) {
        if !self.connection_event(conn) {
            return;
        }
        let path = redact_query(&head.path, self.show_secrets);
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), redact_header(n, v, self.show_secrets)))
            .collect();
        let value = json!({
            "event": "open", "conn": conn, "remote": remote, "path": path,
            "protocol": protocol,
            "headers": headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        });
        self.emit(value, || {
            let mut text = format!(
                "#{conn} open {remote} GET {path}{}",
                protocol.map(|p| format!(" ({p})")).unwrap_or_default()
            );
            // The handshake's own headers are in the JSON, not here.
            for (name, value) in headers.iter().filter(|(n, _)| !is_handshake_header(n)) {
                let _ = write!(text, "\n            {name}: {value}");
            }
            text
        });
    }

    /// A connection refused before it reached the server: why, and the
    /// HTTP status the client got.
    pub(crate) fn refused(&self, conn: u64, remote: &str, status: u16, why: &str) {
        if !self.connection_event(conn) {
            return;
        }
        self.emit(
            json!({ "event": "refused", "conn": conn, "remote": remote, "status": status, "reason": why }),
            || self.paint(RED, &format!("#{conn} refused {remote}: HTTP {status}, {why}")),
        );
    }

    /// A connection ended: `how` is "closed", "cut" or "gone" (one end
    /// dropped without a close frame).
    pub(crate) fn end(&self, conn: u64, how: &str, messages: [u64; 2]) {
        if !self.connection_event(conn) {
            return;
        }
        self.emit(
            json!({ "event": "end", "conn": conn, "how": how,
                    "from_client": messages[0], "from_server": messages[1] }),
            || {
                format!(
                    "#{conn} end ({how}): {} messages from the client, {} from the server",
                    messages[0], messages[1]
                )
            },
        );
    }

    /// A fault was injected.
    pub(crate) fn fault(&self, conn: u64, from: Option<Side>, kind: &str, detail: &str) {
        if self.style == Style::Quiet || !self.filter.shows_connection(conn) {
            return;
        }
        self.emit(
            json!({ "event": "fault", "conn": conn, "from": from.map(Side::name),
                    "fault": kind, "detail": detail }),
            || {
                let arrow = from.map(|f| format!(" {}", f.arrow())).unwrap_or_default();
                self.paint(RED, &format!("#{conn}{arrow} FAULT {kind} {detail}"))
            },
        )
    }

    /// A message passed (before any fault on it).
    pub(crate) fn message(&self, conn: u64, from: Side, message: &Message, v1: bool) {
        if self.style == Style::Quiet {
            return;
        }
        let (kind, size, text) = match message {
            Message::Text(text) => ("text", text.len(), Some(text.as_str())),
            Message::Binary(bytes) => ("binary", bytes.len(), None),
            Message::Ping(bytes) => ("ping", bytes.len(), None),
            Message::Pong(bytes) => ("pong", bytes.len(), None),
            Message::Close(frame) => (
                "close",
                frame.as_ref().map_or(0, |f| f.reason.len() + 2),
                None,
            ),
            Message::Frame(_) => return,
        };
        let frame = match message {
            Message::Binary(bytes) if v1 => Some(codec::decode(bytes, u64::MAX)),
            _ => None,
        };
        let frame_kind = frame.as_ref().map(|f| match f {
            Ok(frame) => frame_name(frame),
            Err(_) => "invalid",
        });
        // Sizes filter on what the application sent: a DATA frame's payload.
        let size = match &frame {
            Some(Ok(Frame::Data { payload, .. })) => payload.len(),
            _ => size,
        };
        let data_text = match &frame {
            Some(Ok(Frame::Data {
                binary: false,
                payload,
                ..
            })) => std::str::from_utf8(payload).ok(),
            _ => None,
        };
        let lower: Vec<String> = std::iter::once(kind)
            .chain(frame_kind)
            .map(str::to_ascii_lowercase)
            .collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        if !self
            .filter
            .shows(conn, from, &lower, size, text.or(data_text))
        {
            return;
        }
        let mut value = json!({
            "event": "message", "conn": conn, "from": from.name(), "opcode": kind, "size": size,
        });
        let mut words = format!("#{conn} {} {kind} {}", from.arrow(), bytes_text(size));
        let payload_field = |value: &mut Value, words: &mut String, bytes: &[u8], is_text: bool| {
            let (shown, cut) = if bytes.len() > self.preview {
                let mut end = self.preview;
                // Text is cut between characters.
                while is_text && end > 0 && (bytes[end] & 0xc0) == 0x80 {
                    end -= 1;
                }
                (&bytes[..end], true)
            } else {
                (bytes, false)
            };
            if is_text {
                let text = String::from_utf8_lossy(shown);
                value["text"] = json!(text);
                words.push(' ');
                words.push_str(&one_line(&text));
            } else {
                value["base64"] = json!(base64::engine::general_purpose::STANDARD.encode(shown));
                words.push(' ');
                words.push_str(&hex(shown));
            }
            if cut {
                value["truncated"] = json!(true);
                words.push('…');
            }
        };
        match message {
            Message::Text(text) => payload_field(&mut value, &mut words, text.as_bytes(), true),
            Message::Binary(bytes) => match &frame {
                Some(Ok(frame)) => {
                    let (described, fields) = describe(frame, self.show_secrets);
                    words = format!("#{conn} {} {described}", from.arrow());
                    if let Frame::Data {
                        binary, payload, ..
                    } = frame
                    {
                        payload_field(&mut value, &mut words, payload, !binary);
                    }
                    value["frame"] = fields;
                }
                Some(Err(error)) => {
                    value["frame"] = json!({ "type": "invalid", "error": error.to_string() });
                    let _ = write!(words, " (not a steadfast.v1 frame: {error})");
                }
                None => payload_field(&mut value, &mut words, bytes, false),
            },
            Message::Ping(bytes) | Message::Pong(bytes) => {
                if !bytes.is_empty() {
                    payload_field(&mut value, &mut words, bytes, false);
                }
            }
            Message::Close(frame) => {
                if let Some(frame) = frame {
                    let code = u16::from(frame.code);
                    value["code"] = json!(code);
                    value["reason"] = json!(frame.reason.as_str());
                    words = format!("#{conn} {} close {code}", from.arrow());
                    if !frame.reason.is_empty() {
                        let _ = write!(words, " {}", frame.reason.as_str());
                    }
                } else {
                    words = format!("#{conn} {} close (no code)", from.arrow());
                }
            }
            Message::Frame(_) => {}
        }
        self.emit(value, || {
            let colour = match from {
                Side::Client => GREEN,
                Side::Server => CYAN,
            };
            self.paint(colour, &words)
        });
    }
}

/// A message in a few words, for fault lines: `DATA seq 2 (5 B)`,
/// `ACK through 4`, `text 5 B`.
pub(crate) fn label(message: &Message, v1: bool) -> String {
    match message {
        Message::Binary(bytes) if v1 => match codec::decode(bytes, u64::MAX) {
            Ok(Frame::Data { seq, payload, .. }) => {
                format!("DATA seq {seq} ({})", bytes_text(payload.len()))
            }
            Ok(Frame::Ack { delivered }) => format!("ACK through {delivered}"),
            Ok(frame) => frame_name(&frame).to_owned(),
            Err(_) => format!("binary {}", bytes_text(bytes.len())),
        },
        Message::Text(text) => format!("text {}", bytes_text(text.len())),
        Message::Binary(bytes) => format!("binary {}", bytes_text(bytes.len())),
        other => format!("{other:?}"),
    }
}

/// Control characters escaped (a preview stays on one line); the rest as is.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A request head as the proxy read it.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
}

fn frame_name(frame: &Frame<'_>) -> &'static str {
    match frame {
        Frame::Hello { .. } => "HELLO",
        Frame::Welcome { .. } => "WELCOME",
        Frame::Data { .. } => "DATA",
        Frame::Ack { .. } => "ACK",
        Frame::Skip { .. } => "SKIP",
        Frame::Ping { .. } => "PING",
        Frame::Pong { .. } => "PONG",
    }
}

/// A steadfast.v1 frame in words and as JSON fields.
fn describe(frame: &Frame<'_>, show_secrets: bool) -> (String, Value) {
    let name = frame_name(frame);
    let mut fields = Map::new();
    fields.insert("type".into(), json!(name));
    let words = match frame {
        Frame::Hello {
            new,
            session,
            delivered,
            max_message_size,
            secret,
        } => {
            let session = hex(&session.0);
            fields.insert("session".into(), json!(session));
            fields.insert("new".into(), json!(new));
            fields.insert("delivered".into(), json!(delivered));
            fields.insert("max_message_size".into(), json!(max_message_size));
            let secret_text = match secret {
                None => "none".to_owned(),
                Some(s) if show_secrets => hex(s),
                Some(_) => "(redacted)".to_owned(),
            };
            fields.insert("secret".into(), json!(secret_text));
            format!(
                "HELLO session {session}{} delivered {delivered} max {max_message_size} secret {secret_text}",
                if *new { " new" } else { "" }
            )
        }
        Frame::Welcome {
            resumed,
            session,
            delivered,
            max_message_size,
            window,
        } => {
            let session = hex(&session.0);
            fields.insert("session".into(), json!(session));
            fields.insert("resumed".into(), json!(resumed));
            fields.insert("delivered".into(), json!(delivered));
            fields.insert("max_message_size".into(), json!(max_message_size));
            fields.insert("window".into(), json!(window));
            format!(
                "WELCOME session {session} {} delivered {delivered} max {max_message_size}{}",
                if *resumed { "resumed" } else { "new" },
                window.map(|w| format!(" window {w}")).unwrap_or_default()
            )
        }
        Frame::Data {
            seq,
            binary,
            chunk,
            payload,
        } => {
            fields.insert("seq".into(), json!(seq));
            fields.insert("binary".into(), json!(binary));
            let mut words = format!(
                "DATA seq {seq} {} {}",
                if *binary { "binary" } else { "text" },
                bytes_text(payload.len())
            );
            if let Some(chunk) = chunk {
                fields.insert(
                    "chunk".into(),
                    json!({ "index": chunk.index, "count": chunk.count, "total_len": chunk.total_len }),
                );
                let _ = write!(
                    words,
                    " chunk {} of {} ({})",
                    chunk.index + 1,
                    chunk.count,
                    bytes_text(usize::try_from(chunk.total_len).unwrap_or(usize::MAX))
                );
            }
            words
        }
        Frame::Ack { delivered } => {
            fields.insert("delivered".into(), json!(delivered));
            format!("ACK through {delivered}")
        }
        Frame::Skip { first, last } => {
            fields.insert("first".into(), json!(first));
            fields.insert("last".into(), json!(last));
            format!("SKIP {first}..={last}")
        }
        Frame::Ping { id } | Frame::Pong { id } => {
            fields.insert("id".into(), json!(id));
            format!("{name} {id}")
        }
    };
    (words, Value::Object(fields))
}

fn bytes_text(size: usize) -> String {
    format!("{size} B")
}

fn is_handshake_header(name: &str) -> bool {
    [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Header values that carry credentials.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || name.contains("token")
        || name.contains("api-key")
        || name.contains("secret")
}

pub(crate) fn redact_header(name: &str, value: &str, show_secrets: bool) -> String {
    if show_secrets || !is_secret_header(name) {
        return value.to_owned();
    }
    // Keep the scheme of an Authorization header ("Bearer …").
    match value.split_once(' ') {
        Some((scheme, _)) if name.eq_ignore_ascii_case("authorization") => {
            format!("{scheme} (redacted)")
        }
        _ => "(redacted)".into(),
    }
}

/// Query parameters whose names suggest credentials, redacted.
pub(crate) fn redact_query(path: &str, show_secrets: bool) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    if show_secrets {
        return path.to_owned();
    }
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if {
                    let n = name.to_ascii_lowercase();
                    ["token", "auth", "key", "secret", "password", "jwt", "sig"]
                        .iter()
                        .any(|s| n.contains(s))
                } =>
            {
                format!("{name}=(redacted)")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// Whether the summary line is drawn on standard error (a terminal).
static LIVE: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_live(on: bool) {
    LIVE.store(on, Ordering::Relaxed);
}

/// Draw the summary line (on a terminal), over the previous one.
pub(crate) fn live(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
}

/// One JSON object on stdout.
pub(crate) fn emit_json(value: &Value) {
    line(&value.to_string());
}

/// One line on stdout (clearing the summary line first, which the next
/// tick draws again); a closed pipe is not worth a panic.
fn line(text: &str) {
    if LIVE.load(Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_unless_asked() {
        assert_eq!(
            redact_header("Authorization", "Bearer abc.def", false),
            "Bearer (redacted)"
        );
        assert_eq!(redact_header("Cookie", "sid=1", false), "(redacted)");
        assert_eq!(redact_header("Cookie", "sid=1", true), "sid=1");
        assert_eq!(redact_header("User-Agent", "x", false), "x");
        assert_eq!(
            redact_query("/ws?room=a&token=abc&access_key=k", false),
            "/ws?room=a&token=(redacted)&access_key=(redacted)"
        );
        assert_eq!(redact_query("/ws?token=abc", true), "/ws?token=abc");
    }

    #[test]
    fn filters_combine_by_and() {
        let filter = Filter {
            from: Some(Side::Server),
            types: vec!["data".into()],
            min_size: Some(3),
            pattern: Regex::new("^he").ok(),
            ..Filter::default()
        };
        assert!(filter.shows(1, Side::Server, &["binary", "data"], 5, Some("hello")));
        assert!(!filter.shows(1, Side::Client, &["binary", "data"], 5, Some("hello")));
        assert!(!filter.shows(1, Side::Server, &["binary", "ack"], 5, Some("hello")));
        assert!(!filter.shows(1, Side::Server, &["binary", "data"], 2, Some("he")));
        assert!(!filter.shows(1, Side::Server, &["binary", "data"], 5, None));
        assert!(!filter.shows(1, Side::Server, &["binary", "data"], 5, Some("xhello")));
    }

    #[test]
    fn a_hello_hides_its_secret() {
        let hello = Frame::Hello {
            new: true,
            session: codec::SessionId([7; 16]),
            delivered: 3,
            max_message_size: 1024,
            secret: Some([9; 16]),
        };
        let (words, fields) = describe(&hello, false);
        assert!(words.contains("(redacted)"), "{words}");
        assert!(!words.contains("0909"), "{words}");
        assert_eq!(fields["type"], "HELLO");
        let (words, _) = describe(&hello, true);
        assert!(words.contains("0909"), "{words}");
    }
}
