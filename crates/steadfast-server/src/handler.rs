//! The application hook, and the two built-in handlers.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use steadfast_core::{Payload, SessionId};

use crate::ServerHandle;

/// A peer as the application sees it: a reliable session (which keeps its
/// id across reconnects until it expires, and with a durable session store
/// across server restarts too) or one plain connection. Random (so ids do
/// not repeat after a restart), below 2^53. Opaque and safe to show to
/// other clients — unlike the session id, which is a resume credential
/// and never leaves the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl FromStr for PeerId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix('p')
            .and_then(|n| n.parse().ok())
            .map(PeerId)
            .ok_or(())
    }
}

/// What the server knows about a peer's current connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Stable for the session's life (reliable) or the connection's (plain).
    pub id: PeerId,
    /// The session (reliable mode only). Treat it as a secret.
    pub session: Option<SessionId>,
    /// Where the current connection comes from.
    pub remote: SocketAddr,
    /// The upgrade request's headers.
    pub headers: Arc<[(String, String)]>,
    /// The `sub` claim of the verified token, when authentication is on.
    pub subject: Option<String>,
    /// This connection resumed a session the server already knew.
    pub resumed: bool,
    /// The verified client certificate (DER, leaf), when TLS asked for one
    /// and the client presented it.
    pub client_certificate: Option<Arc<[u8]>>,
}

impl Peer {
    /// A request header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The application: called on the connection's task, in order.
///
/// In reliable mode `on_message` sees each client message exactly once and
/// in order per session, and the client's `send` resolves only after
/// `on_message` has returned (the ACK follows it). The calls are
/// synchronous; work that must not hold up the connection can be spawned,
/// at the price of acknowledging before it is done.
///
/// A callback that panics is contained: the panic is logged and counted
/// (`handler_panics`), the connection is closed 1011 and released, and the
/// server goes on. A message whose `on_message` panicked counts as
/// delivered (the application had it): it is acknowledged, not sent again.
pub trait Handler: Send + Sync + 'static {
    /// A connection is ready (a new session, a resumed one, or plain).
    fn on_connect(&self, server: &ServerHandle, peer: &Peer) {
        let _ = (server, peer);
    }

    /// A message from the peer.
    fn on_message(&self, server: &ServerHandle, peer: &Peer, message: Payload);

    /// The connection ended. A session stays resumable for its TTL.
    fn on_disconnect(&self, server: &ServerHandle, peer: &Peer) {
        let _ = (server, peer);
    }

    /// A session expired (no connection within its TTL) and is gone.
    fn on_session_expired(&self, server: &ServerHandle, peer: PeerId) {
        let _ = (server, peer);
    }
}

/// The subprotocol the echo handler accepts in plain mode (tests use it).
pub const ECHO_PROTOCOL: &str = "steadfast.echo";

/// Prefix of the text command that makes the echo handler close the connection.
pub const CLOSE_COMMAND: &str = "steadfast-echo:close:";

/// Prefix of the text command that asks for a handshake header's value.
pub const HEADER_COMMAND: &str = "steadfast-echo:header:";

/// Sends every message back to its sender.
///
/// Two text commands help test clients: `steadfast-echo:close:<code>:<reason>`
/// closes the connection with that code, and `steadfast-echo:header:<name>`
/// is answered with that upgrade-request header's value (empty if absent).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&self, server: &ServerHandle, peer: &Peer, message: Payload) {
        if let Payload::Text(text) = &message {
            if let Some((code, reason)) = close_command(text) {
                server.close(peer.id, code, reason);
                return;
            }
            if let Some(name) = text.strip_prefix(HEADER_COMMAND) {
                let value = peer.header(name).unwrap_or("").to_owned();
                let _ = server.send(peer.id, Payload::Text(value));
                return;
            }
        }
        // A full outbox (a client that never reads) loses the echo, not the
        // server; the error is counted by the session.
        let _ = server.send(peer.id, message);
    }
}

/// Parse `steadfast-echo:close:<code>:<reason>`.
pub(crate) fn close_command(text: &str) -> Option<(u16, &str)> {
    let rest = text.strip_prefix(CLOSE_COMMAND)?;
    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
    Some((code.parse().ok()?, reason))
}

/// A chat hub: peers join and leave rooms and message a room, one peer, or
/// everyone. JSON text in, JSON text out:
///
/// | request | effect | reply to the sender |
/// |---|---|---|
/// | `{"type":"whoami"}` | — | `{"type":"whoami","peer":"p7"}` |
/// | `{"type":"join","room":"r"}` | join `r` | `{"type":"joined","room":"r","members":N}` |
/// | `{"type":"leave","room":"r"}` | leave `r` | `{"type":"left","room":"r"}` |
/// | `{"type":"room","room":"r","data":…}` | every other member of `r` gets `{"type":"message","from":"p7","room":"r","data":…}` | `{"type":"sent","count":N}` |
/// | `{"type":"direct","to":"p9","data":…}` | `p9` gets `{"type":"message","from":"p7","data":…}` | `{"type":"sent","count":1}` |
/// | `{"type":"broadcast","data":…}` | every other peer gets `{"type":"message","from":"p7","data":…}` | `{"type":"sent","count":N}` |
///
/// Anything else is answered with `{"type":"error","code":"ERR_…","message":…}`,
/// and so is a join past the server's [`RoomLimits`](crate::RoomLimits)
/// (`ERR_ROOM_NAME`, `ERR_TOO_MANY_ROOMS`, `ERR_ROOM_FULL`).
/// Membership belongs to the peer: a session keeps its rooms across
/// reconnects and leaves them when it expires.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rooms;

impl Handler for Rooms {
    fn on_message(&self, server: &ServerHandle, peer: &Peer, message: Payload) {
        let reply = match rooms_request(server, peer.id, &message) {
            Ok(reply) => reply,
            Err((code, message)) => {
                serde_json::json!({ "type": "error", "code": code, "message": message })
            }
        };
        let _ = server.send(peer.id, Payload::Text(reply.to_string()));
    }
}

type Refusal = (&'static str, String);

fn rooms_request(
    server: &ServerHandle,
    me: PeerId,
    message: &Payload,
) -> Result<serde_json::Value, Refusal> {
    use serde_json::{json, Value};
    let Payload::Text(text) = message else {
        return Err(("ERR_BAD_COMMAND", "send JSON text".into()));
    };
    let request: Value =
        serde_json::from_str(text).map_err(|e| ("ERR_BAD_COMMAND", format!("not JSON: {e}")))?;
    let field = |name: &str| -> Result<&str, Refusal> {
        request[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                (
                    "ERR_BAD_COMMAND",
                    format!("`{name}` must be a non-empty string"),
                )
            })
    };
    let from = me.to_string();
    match request["type"].as_str().unwrap_or("") {
        "whoami" => Ok(json!({ "type": "whoami", "peer": from })),
        "join" => {
            let room = field("room")?;
            let members = server
                .join(me, room)
                .map_err(|e| (e.code(), e.to_string()))?;
            Ok(json!({ "type": "joined", "room": room, "members": members }))
        }
        "leave" => {
            let room = field("room")?;
            server.leave(me, room);
            Ok(json!({ "type": "left", "room": room }))
        }
        "room" => {
            let room = field("room")?;
            if !server.is_member(me, room) {
                return Err(("ERR_NOT_A_MEMBER", format!("join `{room}` first")));
            }
            let out =
                json!({ "type": "message", "from": from, "room": room, "data": request["data"] });
            let count = server.send_room(room, Payload::Text(out.to_string()), Some(me));
            Ok(json!({ "type": "sent", "count": count }))
        }
        "direct" => {
            let to: PeerId = field("to")?
                .parse()
                .map_err(|()| ("ERR_UNKNOWN_PEER", "`to` is not a peer id".to_owned()))?;
            let out = json!({ "type": "message", "from": from, "data": request["data"] });
            server
                .send(to, Payload::Text(out.to_string()))
                .map_err(|e| (e.code(), e.to_string()))?;
            Ok(json!({ "type": "sent", "count": 1 }))
        }
        "broadcast" => {
            let out = json!({ "type": "message", "from": from, "data": request["data"] });
            let count = server.broadcast(Payload::Text(out.to_string()), Some(me));
            Ok(json!({ "type": "sent", "count": count }))
        }
        other => Err(("ERR_BAD_COMMAND", format!("unknown type `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_command_parses_code_and_reason() {
        assert_eq!(
            close_command("steadfast-echo:close:4001:auth: expired"),
            Some((4001, "auth: expired"))
        );
        assert_eq!(close_command("steadfast-echo:close:1000"), Some((1000, "")));
        assert_eq!(close_command("steadfast-echo:close:abc:x"), None);
        assert_eq!(close_command("hello"), None);
    }

    #[test]
    fn peer_ids_round_trip_through_text() {
        assert_eq!("p42".parse::<PeerId>(), Ok(PeerId(42)));
        assert_eq!(PeerId(42).to_string(), "p42");
        assert!("42".parse::<PeerId>().is_err());
        assert!("px".parse::<PeerId>().is_err());
    }
}
