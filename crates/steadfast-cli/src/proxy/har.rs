//! `--har FILE`: the record as HAR 1.2, one entry per WebSocket connection
//! with its messages in `_webSocketMessages` (the form Chromium DevTools
//! exports and imports).
//!
//! Written in one pass over the record: a connection's entry is written
//! when its `end` line is read, so memory holds only the messages of the
//! connections open at the same time in the record.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::record::unhex;

/// One connection being gathered.
struct Entry {
    open: Value,
    messages: Vec<Value>,
}

/// ISO 8601 UTC of `unix_ms` (HAR's `startedDateTime`).
fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        unix_ms % 1000
    )
}

fn entry_json(entry: &Entry, start_ms: u64) -> Value {
    let open = &entry.open;
    let t_ms = open["t_ms"].as_u64().unwrap_or(0);
    let headers: Vec<Value> = open["headers"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|pair| json!({ "name": pair[0], "value": pair[1] }))
                .collect()
        })
        .unwrap_or_default();
    let mut response_headers = vec![
        json!({ "name": "Upgrade", "value": "websocket" }),
        json!({ "name": "Connection", "value": "Upgrade" }),
    ];
    if let Some(protocol) = open["protocol"].as_str() {
        response_headers.push(json!({ "name": "Sec-WebSocket-Protocol", "value": protocol }));
    }
    json!({
        "startedDateTime": iso8601(start_ms + t_ms),
        "time": 0,
        "request": {
            "method": "GET", "url": open["url"], "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": headers, "queryString": [],
            "headersSize": -1, "bodySize": 0,
        },
        "response": {
            "status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": response_headers,
            "content": { "size": 0, "mimeType": "" },
            "redirectURL": "", "headersSize": -1, "bodySize": 0,
        },
        "cache": {},
        "timings": { "send": 0, "wait": 0, "receive": 0 },
        "_resourceType": "websocket",
        "_webSocketMessages": entry.messages,
    })
}

/// Convert the record at `record` into a HAR file at `har`.
pub(crate) fn write(record: &Path, har: &Path) -> std::io::Result<()> {
    let input = BufReader::new(File::open(record)?);
    let mut out = BufWriter::new(File::create(har)?);
    write!(
        out,
        "{{\"log\":{{\"version\":\"1.2\",\"creator\":{{\"name\":\"steadfast proxy\",\"version\":\"{}\"}},\"pages\":[],\"entries\":[",
        env!("CARGO_PKG_VERSION")
    )?;
    let mut start_ms = 0u64;
    let mut open: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut first = true;
    let mut finish = |out: &mut BufWriter<File>, entry: Entry, start_ms: u64| {
        let separator = if first { "" } else { "," };
        first = false;
        write!(out, "{separator}{}", entry_json(&entry, start_ms))
    };
    for line in input.lines() {
        let line = line?;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let conn = value["conn"].as_u64();
        match (value["event"].as_str(), conn) {
            (Some("start"), _) => start_ms = value["unix_ms"].as_u64().unwrap_or(0),
            (Some("open"), Some(conn)) => {
                open.insert(
                    conn,
                    Entry {
                        open: value,
                        messages: Vec::new(),
                    },
                );
            }
            (Some("end"), Some(conn)) => {
                if let Some(entry) = open.remove(&conn) {
                    finish(&mut out, entry, start_ms)?;
                }
            }
            (None, Some(conn)) => {
                let Some(entry) = open.get_mut(&conn) else {
                    continue;
                };
                let t_ms = value["t_ms"].as_u64().unwrap_or(0);
                let kind = if value["dir"] == "out" {
                    "send"
                } else {
                    "receive"
                };
                #[allow(clippy::cast_precision_loss)]
                let time = (start_ms + t_ms) as f64 / 1000.0;
                let (opcode, data) = if value["type"] == "binary" {
                    let bytes = value["hex"].as_str().and_then(unhex).unwrap_or_default();
                    (2, base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    (1, value["data"].as_str().unwrap_or_default().to_owned())
                };
                entry.messages.push(json!({
                    "type": kind, "time": time, "opcode": opcode, "data": data,
                }));
            }
            _ => {}
        }
    }
    // Connections still open when the proxy stopped.
    for (_, entry) in std::mem::take(&mut open) {
        finish(&mut out, entry, start_ms)?;
    }
    write!(out, "]}}}}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_582_245_123), "2025-12-01T09:44:05.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
