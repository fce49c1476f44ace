//! `--record FILE` and `steadfast replay FILE`: messages as JSON lines.
//!
//! One line per message, in the order they happened:
//! `{"t_ms":1200,"dir":"out","type":"text","data":"hello"}`; binary
//! messages carry `"hex"` instead of `"data"`. `t_ms` counts from the
//! start of the session. What is recorded is the application's messages
//! (the payloads), not the protocol frames around them, so a recording
//! replays against any server, reliable or plain.
//!
//! `steadfast proxy --record` writes the same lines with a `"conn"`
//! number, the raw messages of every connection (steadfast.v1 frames
//! included), and `"event"` lines (`start`, `open`, `close`, `fault`,
//! `end`, `stop`); [`load_streams`] turns them back into what each client
//! sent.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steadfast::Payload;
use steadfast_core::codec::{self, Frame, SUBPROTOCOL};

use crate::args::Failed;
use crate::exit;
use crate::output::hex;

/// Writes a recording; each line is flushed, so a crash keeps what happened.
#[derive(Debug)]
pub(crate) struct Recorder {
    out: BufWriter<File>,
    start: Instant,
}

impl Recorder {
    pub(crate) fn create(path: &Path) -> Result<Recorder, Failed> {
        let file = File::create(path).map_err(|e| {
            Failed::new(
                exit::USAGE,
                format!("[ERR_INVALID_OPTION] cannot create {}: {e}", path.display()),
            )
        })?;
        Ok(Recorder {
            out: BufWriter::new(file),
            start: Instant::now(),
        })
    }

    /// Record a message going `dir` ("in" or "out").
    pub(crate) fn record(&mut self, dir: &str, payload: &Payload) -> std::io::Result<()> {
        let t_ms = self.start.elapsed().as_millis();
        let value = match payload {
            Payload::Text(text) => {
                json!({ "t_ms": t_ms, "dir": dir, "type": "text", "data": text })
            }
            Payload::Binary(bytes) => {
                json!({ "t_ms": t_ms, "dir": dir, "type": "binary", "hex": hex(bytes) })
            }
        };
        writeln!(self.out, "{value}")?;
        self.out.flush()
    }
}

/// Where a recorded message belongs when replayed: one client per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StreamKey {
    /// A plain connection (or a `connect --record` recording: connection 0).
    Connection(u64),
    /// Every connection of one steadfast.v1 session (a resume goes on the
    /// same stream).
    Session([u8; 16]),
}

/// A chunked message being put together from a proxy recording.
struct Partial {
    seq: u64,
    binary: bool,
    bytes: Vec<u8>,
}

/// The largest chunked message put back together (the protocol's own
/// default limit); a bigger one is a bad recording.
const MAX_REASSEMBLED: usize = 64 << 20;

/// The outgoing messages of a recording, with when they were sent, one
/// list per stream in the order streams began.
///
/// A `steadfast connect --record` recording is one stream. A `steadfast
/// proxy --record` recording carries `"conn"` and `"event"` lines: each
/// plain connection is a stream of its messages; on steadfast.v1
/// connections the application's messages are taken out of the DATA
/// frames (chunks put back together, resends after a reconnect counted
/// once), and all connections of one session are one stream.
pub(crate) fn load_streams(path: &Path) -> Result<Vec<Vec<(Duration, Payload)>>, Failed> {
    let bad = |line: usize, why: &str| {
        Failed::new(
            exit::USAGE,
            format!(
                "[ERR_INVALID_RECORDING] {} line {line}: {why}",
                path.display()
            ),
        )
    };
    let file = File::open(path).map_err(|e| {
        Failed::new(
            exit::USAGE,
            format!("[ERR_INVALID_OPTION] cannot read {}: {e}", path.display()),
        )
    })?;
    let mut order: Vec<StreamKey> = Vec::new();
    let mut streams: HashMap<StreamKey, Vec<(Duration, Payload)>> = HashMap::new();
    let mut v1: HashMap<u64, Option<[u8; 16]>> = HashMap::new();
    let mut through: HashMap<[u8; 16], u64> = HashMap::new();
    let mut partial: HashMap<u64, Partial> = HashMap::new();
    let mut push = |key: StreamKey, at: Duration, payload: Payload| {
        streams
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((at, payload));
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| bad(number, &e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(number, &e.to_string()))?;
        let conn = value["conn"].as_u64().unwrap_or(0);
        if let Some(event) = value["event"].as_str() {
            if event == "open" && value["protocol"] == SUBPROTOCOL {
                v1.insert(conn, None);
            }
            continue;
        }
        match value["dir"].as_str() {
            Some("out") => {}
            Some("in") => continue,
            _ => return Err(bad(number, "\"dir\" must be \"in\" or \"out\"")),
        }
        let t_ms = value["t_ms"]
            .as_u64()
            .ok_or_else(|| bad(number, "\"t_ms\" must be a whole number"))?;
        let at = Duration::from_millis(t_ms);
        let payload =
            match (value["type"].as_str(), &value["data"], &value["hex"]) {
                (Some("text"), Value::String(text), _) => Payload::Text(text.clone()),
                (Some("binary"), _, Value::String(h)) => {
                    Payload::Binary(unhex(h).ok_or_else(|| bad(number, "\"hex\" is not hex"))?)
                }
                _ => return Err(bad(
                    number,
                    "expected \"type\":\"text\" with \"data\", or \"type\":\"binary\" with \"hex\"",
                )),
            };
        let Some(session) = v1.get_mut(&conn) else {
            push(StreamKey::Connection(conn), at, payload);
            continue;
        };
        // A steadfast.v1 frame from the client.
        let Payload::Binary(bytes) = payload else {
            return Err(bad(number, "a text message on a steadfast.v1 connection"));
        };
        match codec::decode(&bytes, u64::MAX) {
            Ok(Frame::Hello { session: id, .. }) => *session = Some(id.0),
            Ok(Frame::Data {
                seq,
                binary,
                chunk,
                payload,
            }) => {
                let Some(id) = *session else {
                    return Err(bad(
                        number,
                        "DATA before HELLO on a steadfast.v1 connection",
                    ));
                };
                if seq <= through.get(&id).copied().unwrap_or(0) {
                    continue; // sent again after a reconnect
                }
                let whole = match chunk {
                    None => Some((binary, payload.to_vec())),
                    Some(chunk) => {
                        if chunk.index == 0 {
                            partial.insert(
                                conn,
                                Partial {
                                    seq,
                                    binary,
                                    bytes: Vec::new(),
                                },
                            );
                        }
                        match partial.get_mut(&conn) {
                            Some(p) if p.seq == seq => {
                                if p.bytes.len() + payload.len() > MAX_REASSEMBLED {
                                    return Err(bad(number, "a chunked message over 64 MiB"));
                                }
                                p.bytes.extend_from_slice(payload);
                            }
                            // The first chunks went on a connection that was cut.
                            _ => continue,
                        }
                        if chunk.index + 1 == chunk.count {
                            partial.remove(&conn).map(|p| (p.binary, p.bytes))
                        } else {
                            None
                        }
                    }
                };
                if let Some((binary, bytes)) = whole {
                    through.insert(id, seq);
                    let payload =
                        if binary {
                            Payload::Binary(bytes)
                        } else {
                            Payload::Text(String::from_utf8(bytes).map_err(|_| {
                                bad(number, "a text DATA message that is not UTF-8")
                            })?)
                        };
                    push(StreamKey::Session(id), at, payload);
                }
            }
            // ACK, PING, PONG: the protocol's, not the application's.
            Ok(_) => {}
            Err(error) => {
                return Err(bad(number, &format!("not a steadfast.v1 frame: {error}")));
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|key| streams.remove(&key))
        .collect())
}

/// The bytes of a hex string (None: not hex).
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_reads_back_its_outgoing_messages_in_order() {
        let dir = std::env::temp_dir().join(format!("steadfast-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("r.jsonl");
        let mut recorder = Recorder::create(&path).expect("create");
        recorder
            .record("out", &Payload::Text("one".into()))
            .expect("write");
        recorder
            .record("in", &Payload::Text("reply".into()))
            .expect("write");
        recorder
            .record("out", &Payload::Binary(vec![0, 1, 254, 255]))
            .expect("write");
        drop(recorder);
        let mut streams = load_streams(&path).expect("valid recording");
        assert_eq!(streams.len(), 1, "one stream");
        let got = streams.remove(0);
        let payloads: Vec<&Payload> = got.iter().map(|(_, p)| p).collect();
        assert_eq!(
            payloads,
            [
                &Payload::Text("one".into()),
                &Payload::Binary(vec![0, 1, 254, 255])
            ]
        );
        assert!(got[0].0 <= got[1].0, "times are in order");

        std::fs::write(
            &path,
            "{\"t_ms\":1,\"dir\":\"out\",\"type\":\"binary\",\"hex\":\"zz\"}\n",
        )
        .expect("write");
        let error = load_streams(&path).expect_err("bad hex");
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert!(error.message.contains("ERR_INVALID_RECORDING"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_proxy_record_replays_each_session_once_and_each_plain_connection() {
        use steadfast_core::codec::{Chunk, SessionId};
        let dir = std::env::temp_dir().join(format!("steadfast-record-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("proxy.jsonl");
        let frame = |f: Frame<'_>| hex(&f.to_vec());
        let session = SessionId([5; 16]);
        let hello = frame(Frame::Hello {
            new: true,
            session,
            delivered: 0,
            max_message_size: 1 << 20,
            secret: None,
        });
        let data = |seq, text: &'static str| {
            frame(Frame::Data {
                seq,
                binary: false,
                chunk: None,
                payload: text.as_bytes(),
            })
        };
        let chunk = |index, payload: &'static [u8]| {
            frame(Frame::Data {
                seq: 3,
                binary: true,
                chunk: Some(Chunk {
                    index,
                    count: 2,
                    total_len: 4,
                }),
                payload,
            })
        };
        let ack = frame(Frame::Ack { delivered: 1 });
        let out = |t: u64, conn: u64, h: &str| {
            format!("{{\"t_ms\":{t},\"conn\":{conn},\"dir\":\"out\",\"type\":\"binary\",\"hex\":\"{h}\"}}")
        };
        let lines = [
            "{\"event\":\"start\",\"t_ms\":0,\"unix_ms\":1}".to_owned(),
            "{\"t_ms\":1,\"conn\":1,\"event\":\"open\",\"protocol\":\"steadfast.v1\"}".to_owned(),
            out(2, 1, &hello),
            out(3, 1, &data(1, "one")),
            out(4, 1, &data(2, "two")),
            out(5, 1, &chunk(0, b"ab")),
            "{\"t_ms\":6,\"conn\":2,\"event\":\"open\",\"protocol\":null}".to_owned(),
            "{\"t_ms\":7,\"conn\":2,\"dir\":\"out\",\"type\":\"text\",\"data\":\"plain\"}"
                .to_owned(),
            "{\"t_ms\":8,\"conn\":1,\"event\":\"end\",\"how\":\"cut\"}".to_owned(),
            // The session resumes on connection 3: seq 2 and the chunked
            // seq 3 are sent again, whole.
            "{\"t_ms\":9,\"conn\":3,\"event\":\"open\",\"protocol\":\"steadfast.v1\"}".to_owned(),
            out(10, 3, &hello),
            out(11, 3, &ack),
            out(12, 3, &data(2, "two")),
            out(13, 3, &chunk(0, b"ab")),
            out(14, 3, &chunk(1, b"cd")),
        ];
        std::fs::write(&path, lines.join("\n")).expect("write");
        let streams = load_streams(&path).expect("a valid record");
        let payloads: Vec<Vec<Payload>> = streams
            .into_iter()
            .map(|s| s.into_iter().map(|(_, p)| p).collect())
            .collect();
        assert_eq!(
            payloads,
            [
                vec![
                    Payload::Text("one".into()),
                    Payload::Text("two".into()),
                    Payload::Binary(b"abcd".to_vec()),
                ],
                vec![Payload::Text("plain".into())],
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
