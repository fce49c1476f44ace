//! The store conformance suite: what every [`Store`] backend must do,
//! run against each of them (memory and durable natively; the wasm
//! backends run it in the browser).
//!
//! `open(name)` must return a handle on the storage called `name`: the same
//! name again after the previous handle was dropped is a reopen (durable
//! backends must show what was applied), another name is a separate,
//! empty storage. The suite panics with the failed check's name.

#![allow(clippy::missing_panics_doc)]

use steadfast_core::record::{StoredMessage, StoredSession};
use steadfast_core::{PersistOp, SessionId};

use super::{Snapshot, Store};

fn message(seq: u64, payload: &[u8], binary: bool) -> StoredMessage {
    StoredMessage {
        seq,
        binary,
        payload: payload.to_vec(),
        enqueued_wall_ms: 1_700_000_000_000 + seq,
        expires_wall_ms: if seq.is_multiple_of(2) {
            0
        } else {
            1_800_000_000_000
        },
    }
}

fn session(byte: u8, next_seq: u64) -> StoredSession {
    StoredSession {
        secret: None,
        session: SessionId([byte; 16]),
        welcomed: byte % 2 == 1,
        inbound_delivered: u64::from(byte) * 1000,
        next_seq,
    }
}

async fn load<S: Store>(store: &mut S, check: &str) -> Snapshot {
    match store.load().await {
        Ok(snapshot) => snapshot,
        Err(error) => panic!("[{check}] load failed: {error}"),
    }
}

async fn apply<S: Store>(store: &mut S, ops: Vec<PersistOp>, check: &str) {
    if let Err(error) = store.apply(ops).await {
        panic!("[{check}] apply failed: {error}");
    }
}

/// Run every check. `durable` says whether reopening must show what was
/// applied (it must agree with [`Store::is_durable`]).
pub async fn check<S: Store>(mut open: impl FnMut(&str) -> S, durable: bool) {
    // A new storage is empty.
    let mut store = open("empty");
    assert_eq!(store.is_durable(), durable, "[is_durable] disagrees");
    assert_eq!(
        load(&mut store, "empty").await,
        Snapshot::default(),
        "[empty]"
    );
    drop(store);

    // Puts, deletes and the session come back as applied, by seq.
    let mut store = open("basic");
    apply(
        &mut store,
        vec![
            PersistOp::Put(message(3, "trois".as_bytes(), false)),
            PersistOp::Put(message(1, b"\x00\x01\xff", true)),
            PersistOp::Put(message(2, "é ✓ 🚀".as_bytes(), false)),
            PersistOp::Session(session(7, 4)),
        ],
        "basic",
    )
    .await;
    apply(&mut store, vec![PersistOp::Delete { seq: 1 }], "basic").await;
    let expected = Snapshot {
        session: Some(session(7, 4)),
        messages: vec![
            message(2, "é ✓ 🚀".as_bytes(), false),
            message(3, "trois".as_bytes(), false),
        ],
        unreadable: 0,
    };
    assert_eq!(load(&mut store, "basic").await, expected, "[basic]");
    // Deleting what is not there is not an error.
    apply(&mut store, vec![PersistOp::Delete { seq: 99 }], "basic").await;
    drop(store);

    // Reopening shows the same (durable) or nothing (not durable).
    let mut store = open("basic");
    let reopened = load(&mut store, "reopen").await;
    if durable {
        assert_eq!(reopened, expected, "[reopen] lost or changed records");
    }

    // Ops in one apply take effect in order; the last session wins.
    apply(
        &mut store,
        vec![
            PersistOp::Put(message(5, b"first", true)),
            PersistOp::Delete { seq: 5 },
            PersistOp::Put(message(5, b"second", true)),
            PersistOp::Session(session(8, 6)),
            PersistOp::Session(session(9, 7)),
        ],
        "order",
    )
    .await;
    let snapshot = load(&mut store, "order").await;
    assert_eq!(snapshot.session, Some(session(9, 7)), "[order] session");
    assert_eq!(
        snapshot.messages.iter().find(|m| m.seq == 5),
        Some(&message(5, b"second", true)),
        "[order] put after delete"
    );

    // Clear drops every message and keeps the session.
    apply(
        &mut store,
        vec![
            PersistOp::Clear,
            PersistOp::Put(message(10, b"after", true)),
        ],
        "clear",
    )
    .await;
    let snapshot = load(&mut store, "clear").await;
    assert_eq!(snapshot.session, Some(session(9, 7)), "[clear] session");
    assert_eq!(
        snapshot.messages,
        vec![message(10, b"after", true)],
        "[clear]"
    );
    drop(store);

    // Many messages in one apply, large ones, and deletes across them.
    let mut store = open("bulk");
    let big = vec![0xa5u8; 1024 * 1024];
    let mut ops: Vec<PersistOp> = (1..=1000)
        .map(|seq| PersistOp::Put(message(seq, &seq.to_le_bytes(), true)))
        .collect();
    ops.push(PersistOp::Put(message(1001, &big, true)));
    apply(&mut store, ops, "bulk").await;
    let deletes = (1..=1000)
        .filter(|seq: &u64| !seq.is_multiple_of(2))
        .map(|seq| PersistOp::Delete { seq })
        .collect();
    apply(&mut store, deletes, "bulk").await;
    drop(store);
    let mut store = open("bulk");
    let snapshot = load(&mut store, "bulk").await;
    if durable {
        let seqs: Vec<u64> = snapshot.messages.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (2..=1000).step_by(2).chain([1001]).collect();
        assert_eq!(seqs, expected, "[bulk] seqs after reopen");
        assert_eq!(
            snapshot.messages.last().map(|m| m.payload.len()),
            Some(big.len())
        );
        assert!(
            snapshot
                .messages
                .iter()
                .filter(|m| m.seq <= 1000)
                .all(|m| m.payload == m.seq.to_le_bytes()),
            "[bulk] payloads"
        );
    }
    drop(store);

    // Storages with different names do not see each other.
    let mut other = open("other");
    assert_eq!(
        load(&mut other, "isolation").await,
        Snapshot::default(),
        "[isolation]"
    );
}
