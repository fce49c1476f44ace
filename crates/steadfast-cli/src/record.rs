//! `--record FILE` and `steadfast replay FILE`: messages as JSON lines.
//!
//! One line per message, in the order they happened:
//! `{"t_ms":1200,"dir":"out","type":"text","data":"hello"}`; binary
//! messages carry `"hex"` instead of `"data"`. `t_ms` counts from the
//! start of the session. What is recorded is the application's messages
//! (the payloads), not the protocol frames around them, so a recording
//! replays against any server, reliable or plain.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steadfast::Payload;

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

/// The outgoing messages of a recording, with when they were sent.
pub(crate) fn load_outgoing(path: &Path) -> Result<Vec<(Duration, Payload)>, Failed> {
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
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| bad(number, &e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(number, &e.to_string()))?;
        match value["dir"].as_str() {
            Some("out") => {}
            Some("in") => continue,
            _ => return Err(bad(number, "\"dir\" must be \"in\" or \"out\"")),
        }
        let t_ms = value["t_ms"]
            .as_u64()
            .ok_or_else(|| bad(number, "\"t_ms\" must be a whole number"))?;
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
        out.push((Duration::from_millis(t_ms), payload));
    }
    Ok(out)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
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
        let got = load_outgoing(&path).expect("valid recording");
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
        let error = load_outgoing(&path).expect_err("bad hex");
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert!(error.message.contains("ERR_INVALID_RECORDING"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
