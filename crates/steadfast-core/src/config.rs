//! Configuration: policy as data with sane defaults (rustls: mechanism and
//! policy apart). The engine applies these; it hard-codes none of them.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::close;
use crate::Payload;

/// Whether the engine uses the steadfast protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// Offer `steadfast.v1`; fall back to plain mode when the server declines.
    Auto,
    /// Offer `steadfast.v1`; refuse a server that declines (`ERR_SUBPROTOCOL_REFUSED`).
    Required,
    /// Plain mode only: do not offer the subprotocol.
    Off,
}

/// Reconnect timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Upper bound of the first retry's delay.
    pub initial_ms: u64,
    /// Cap of the exponential bound; jitter is applied *after* the cap.
    pub max_ms: u64,
    /// For this long after the connection was lost, retries stay within
    /// `max_ms` (a server back from an outage this long finds its clients
    /// within about `max_ms`). Beyond it the cap doubles per attempt up to
    /// `slow_max_ms`, easing the load of a long outage.
    pub fast_phase_ms: u64,
    /// The cap once an outage outlasted `fast_phase_ms`.
    pub slow_max_ms: u64,
    /// Upper bound of the first retry after a close the client caused itself
    /// (dead peer, app-requested reconnect): the server is not the problem.
    pub fast_retry_ms: u64,
    /// A connection up this long (or welcomed, in reliable mode) resets the attempt count.
    pub healthy_after_ms: u64,
    /// How long a connect may take before it is abandoned.
    pub connect_timeout_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial_ms: 500,
            max_ms: 1_000,
            fast_phase_ms: 30_000,
            slow_max_ms: 30_000,
            fast_retry_ms: 100,
            healthy_after_ms: 5_000,
            connect_timeout_ms: 10_000,
        }
    }
}

/// What to do after the server closed the connection with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Reconnect with the normal backoff.
    Reconnect,
    /// Reconnect, backing off harder: the attempt count jumps by two extra
    /// doublings (and stays there until the connection proves healthy).
    ReconnectSlow,
    /// Ask the driver to refresh credentials, then reconnect once; a second
    /// rejection before the connection proved healthy stops.
    RefreshAuth,
    /// Stop for good (terminal).
    Stop,
}

/// A user predicate consulted before the rules.
pub type ClosePredicate = Arc<dyn Fn(u16, &str) -> Option<CloseAction> + Send + Sync>;

/// Close-code policy: a predicate, then rules (first match wins), then
/// [`CloseAction::Reconnect`].
#[derive(Clone)]
pub struct ClosePolicy {
    /// Code ranges and their action, first match wins.
    pub rules: Vec<(RangeInclusive<u16>, CloseAction)>,
    /// Consulted first; `None` falls through to the rules.
    pub predicate: Option<ClosePredicate>,
}

impl fmt::Debug for ClosePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosePolicy")
            .field("rules", &self.rules)
            .field("predicate", &self.predicate.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl Default for ClosePolicy {
    fn default() -> Self {
        use CloseAction::*;
        ClosePolicy {
            rules: vec![
                (1008..=1008, Stop),                                      // policy violation
                (close::UNAUTHORIZED..=close::UNAUTHORIZED, RefreshAuth), // refresh once
                (4002..=4099, Stop), // other auth/policy rejections
                (
                    close::UNSUPPORTED_VERSION..=close::UNSUPPORTED_VERSION,
                    Stop,
                ),
                (1002..=1003, ReconnectSlow), // protocol error / unsupported data
                (1007..=1007, ReconnectSlow), // invalid payload
                // Too big (the engine also halves chunk_size).
                (close::TOO_BIG..=close::TOO_BIG, ReconnectSlow),
                (close::OVERLOADED..=close::OVERLOADED, ReconnectSlow), // try again later
                // The server is restarting: every client heard it at once, so
                // spread the herd wider from the first retry.
                (close::GOING_AWAY..=close::GOING_AWAY, ReconnectSlow),
                (1012..=1012, ReconnectSlow), // service restart
                // steadfast protocol trouble
                (
                    close::PROTOCOL_ERROR..=close::PARTIAL_TIMEOUT,
                    ReconnectSlow,
                ),
            ],
            predicate: None,
        }
    }
}

impl ClosePolicy {
    /// The action for a close with `code` and `reason`.
    pub fn decide(&self, code: u16, reason: &str) -> CloseAction {
        if let Some(action) = self.predicate.as_ref().and_then(|p| p(code, reason)) {
            return action;
        }
        self.rules
            .iter()
            .find(|(codes, _)| codes.contains(&code))
            .map(|(_, action)| *action)
            .unwrap_or(CloseAction::Reconnect)
    }
}

/// What `send` does when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the new message (`send` returns an error).
    Reject,
    /// Drop the oldest messages not on the wire (each gets a `Failed` event).
    DropOldest,
}

/// Outbox bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Messages waiting for an ACK, at most.
    pub max_messages: usize,
    /// Payload bytes waiting for an ACK, at most.
    pub max_bytes: usize,
    /// How long a message may wait to be sent (wall-clock ms); `None`: forever.
    pub ttl_ms: Option<u64>,
    /// What to do when full.
    pub overflow: Overflow,
    /// Payload bytes on the wire without an ACK before the engine waits
    /// (in reliable mode, or the server's announced receive window if that
    /// is smaller; one message may cross either).
    pub max_in_flight_bytes: usize,
}

impl OutboxConfig {
    /// Whether an outbox of `messages` holding `bytes` of payload is within
    /// bounds (the engine's test before it queues; a driver's before it
    /// promises room).
    pub fn fits(&self, messages: usize, bytes: usize) -> bool {
        messages <= self.max_messages && bytes <= self.max_bytes
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
            ttl_ms: Some(24 * 60 * 60 * 1000),
            overflow: Overflow::Reject,
            max_in_flight_bytes: 1024 * 1024,
        }
    }
}

/// Receive-side limits. Every allocation driven by the peer is bounded by these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (chunked total or single frame).
    pub max_message_size: u64,
    /// How far ahead of `delivered` a seq may be.
    pub reorder_window: u64,
    /// Bytes held for reordering and reassembly.
    pub max_buffered_bytes: usize,
    /// Incomplete chunked messages held at once.
    pub max_partial_messages: usize,
    /// Age after which an incomplete chunked message is an error.
    pub max_partial_age_ms: u64,
    /// A gap in the sequence not filled within this closes the connection.
    pub gap_timeout_ms: u64,
    /// Time from open to WELCOME (client) before giving up.
    pub handshake_timeout_ms: u64,
    /// Server: the payload bytes a client may have unacknowledged, announced
    /// in WELCOME. A client sends no more than this (or its own
    /// `max_in_flight_bytes`, whichever is less) ahead of the ACKs, so a
    /// server holding its frames back for flow control can bound what it
    /// holds and still read the ACKs behind them. Unused by a client.
    pub receive_window: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 16 * 1024 * 1024,
            reorder_window: 1024,
            max_buffered_bytes: 32 * 1024 * 1024,
            max_partial_messages: 16,
            max_partial_age_ms: 60_000,
            gap_timeout_ms: 5_000,
            handshake_timeout_ms: 10_000,
            receive_window: 8 * 1024 * 1024,
        }
    }
}

/// ACK coalescing. An ACK covers everything delivered in a burst of reads
/// and goes out when the burst ends (see [`Engine::handle_read_burst_end`]);
/// these are the upper bounds for a burst that goes on, or a driver that
/// does not report its ends.
///
/// [`Engine::handle_read_burst_end`]: crate::Engine::handle_read_burst_end
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckConfig {
    /// An ACK goes out at most this long after the first unacknowledged delivery.
    pub delay_ms: u64,
    /// ... or at once when this many deliveries wait.
    pub every: u64,
    /// ... or at once when this many payload bytes were delivered since the
    /// last ACK, so a sender bounded by `max_in_flight_bytes` never stalls
    /// for `delay_ms` on large messages.
    pub every_bytes: u64,
    /// Acknowledge when a read burst ends (on by default). Off, ACKs wait
    /// for the bounds above only: fewer ACK frames for a peer that never
    /// awaits a single message, and `delay_ms` for one that does.
    pub at_read_burst_end: bool,
}

impl Default for AckConfig {
    fn default() -> Self {
        AckConfig {
            delay_ms: 50,
            every: 32,
            every_bytes: 256 * 1024,
            at_read_burst_end: true,
        }
    }
}

/// Application-level heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Send a PING this often while open.
    pub interval_ms: u64,
    /// Probe when nothing arrived for this long.
    pub idle_ms: u64,
    /// The peer is dead when a probe got nothing back within this.
    pub probe_timeout_ms: u64,
    /// In plain mode, the message sent as a probe (any message back counts).
    pub plain_ping: Option<Payload>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_ms: 25_000,
            idle_ms: 30_000,
            probe_timeout_ms: 10_000,
            plain_ping: None,
        }
    }
}

/// Everything the engine is told up front.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reliable, plain, or whichever the server accepts.
    pub reliability: Reliability,
    /// Reconnect timing.
    pub backoff: BackoffConfig,
    /// What server close codes mean.
    pub close_policy: ClosePolicy,
    /// Outbox bounds.
    pub outbox: OutboxConfig,
    /// Receive limits.
    pub limits: Limits,
    /// Messages above this are chunked (≥ 1 KiB).
    pub chunk_size: usize,
    /// ACK coalescing.
    pub ack: AckConfig,
    /// Heartbeat; `None` disables it.
    pub heartbeat: Option<HeartbeatConfig>,
    /// Whether the driver can refresh credentials (`CloseAction::RefreshAuth`
    /// becomes `Stop` without it).
    pub can_refresh_auth: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reliability: Reliability::Auto,
            backoff: BackoffConfig::default(),
            close_policy: ClosePolicy::default(),
            outbox: OutboxConfig::default(),
            limits: Limits::default(),
            chunk_size: 32 * 1024,
            ack: AckConfig::default(),
            heartbeat: Some(HeartbeatConfig::default()),
            can_refresh_auth: false,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub &'static str);

impl ConfigError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "ERR_INVALID_CONFIG"
    }
}

impl Config {
    /// The largest payload `send` accepts: the message size limit, and
    /// never more than the whole outbox.
    pub fn max_send_size(&self) -> u64 {
        self.limits
            .max_message_size
            .min(self.outbox.max_bytes as u64)
    }

    /// Check the configuration for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk_size < crate::codec::MIN_CHUNK_SIZE {
            return Err(ConfigError("chunk_size must be at least 1024"));
        }
        if (self.limits.max_buffered_bytes as u64) < self.limits.max_message_size {
            return Err(ConfigError(
                "max_buffered_bytes must hold one max_message_size message",
            ));
        }
        if self.limits.reorder_window == 0 || self.limits.max_partial_messages == 0 {
            return Err(ConfigError(
                "reorder_window and max_partial_messages must be at least 1",
            ));
        }
        if self.backoff.initial_ms == 0
            || self.backoff.max_ms < self.backoff.initial_ms
            || self.backoff.slow_max_ms < self.backoff.max_ms
        {
            return Err(ConfigError(
                "backoff needs 0 < initial_ms <= max_ms <= slow_max_ms",
            ));
        }
        if self.limits.receive_window == 0 {
            return Err(ConfigError("limits.receive_window must be at least 1"));
        }
        if self.outbox.max_messages == 0 || self.outbox.max_in_flight_bytes == 0 {
            return Err(ConfigError("outbox bounds must be at least 1"));
        }
        if self.ack.every == 0 || self.ack.every_bytes == 0 {
            return Err(ConfigError(
                "ack.every and ack.every_bytes must be at least 1",
            ));
        }
        if let Some(hb) = &self.heartbeat {
            if hb.interval_ms == 0 || hb.probe_timeout_ms == 0 {
                return Err(ConfigError("heartbeat intervals must be positive"));
            }
        }
        Ok(())
    }
}
