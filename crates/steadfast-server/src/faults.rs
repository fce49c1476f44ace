//! Seeded fault injection, for testing clients. Off by default.
//!
//! Every decision comes from a generator seeded by [`Faults::seed`] and the
//! connection's number (WebSocket upgrades in arrival order), so the same
//! seed and the same client behaviour reproduce the same faults. Drops are
//! decided per received DATA frame (reliable mode) or message (plain mode);
//! delays come from a separate generator so they do not shift the drops.

use std::time::Duration;

use steadfast_core::Rng;

/// What to inject.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// Seed of every decision.
    pub seed: u64,
    /// Chance (parts per million) that a received frame drops the
    /// connection (no closing handshake; the frame is not processed).
    pub drop_ppm: u32,
    /// Drop the connection at every Nth received frame.
    pub drop_every: Option<u64>,
    /// Delay each received frame by a time drawn from this range (ms).
    pub delay_ms: Option<(u64, u64)>,
    /// Chance (parts per million) that an upgrade request is refused (the
    /// TCP connection is closed before the handshake answer).
    pub refuse_ppm: u32,
    /// Drop every session's state this often, as if each had expired
    /// (their records stay: clients resume without duplicates).
    pub forget_sessions_every: Option<Duration>,
    /// With `forget_sessions_every`: drop the sessions' records too, as a
    /// restart of a server with sessions in memory would (clients resync;
    /// messages in flight may reach the application twice).
    pub forget_records: bool,
}

impl Faults {
    /// Whether anything is injected at all.
    pub fn enabled(&self) -> bool {
        self.drop_ppm > 0
            || self.drop_every.is_some()
            || self.delay_ms.is_some()
            || self.refuse_ppm > 0
            || self.forget_sessions_every.is_some()
    }

    pub(crate) fn connection(&self, index: u64) -> ConnFaults {
        let base = self.seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ConnFaults {
            faults: self.clone(),
            index,
            frames: 0,
            drops: Rng::new(base),
            delays: Rng::new(base ^ 0xd1b5_4a32_d192_ed03),
        }
    }
}

/// One injected fault, for the log ([`crate::ServerHandle::fault_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultRecord {
    /// Connection `connection` was dropped at its `frame`th counted frame.
    Drop {
        /// Connection number (upgrade order, from 0).
        connection: u64,
        /// Counted frame, from 1.
        frame: u64,
    },
    /// Connection `connection` was refused.
    Refuse {
        /// Connection number.
        connection: u64,
    },
    /// Every session was forgotten; this many were held.
    ForgetSessions {
        /// Sessions dropped.
        sessions: usize,
    },
}

/// A connection's own fault stream.
#[derive(Debug)]
pub(crate) struct ConnFaults {
    faults: Faults,
    pub(crate) index: u64,
    frames: u64,
    drops: Rng,
    delays: Rng,
}

impl ConnFaults {
    /// Refuse this connection?
    pub(crate) fn refuse(&mut self) -> bool {
        self.faults.refuse_ppm > 0 && self.drops.up_to(999_999) < u64::from(self.faults.refuse_ppm)
    }

    /// A counted frame arrived: drop the connection now (`Some(frame)`)?
    pub(crate) fn on_frame(&mut self) -> Option<u64> {
        if self.faults.drop_ppm == 0 && self.faults.drop_every.is_none() {
            return None;
        }
        self.frames += 1;
        let every = self
            .faults
            .drop_every
            .is_some_and(|n| n > 0 && self.frames.is_multiple_of(n));
        let chance =
            self.faults.drop_ppm > 0 && self.drops.up_to(999_999) < u64::from(self.faults.drop_ppm);
        (every || chance).then_some(self.frames)
    }

    /// How long to hold the next frame.
    pub(crate) fn delay(&mut self) -> Option<Duration> {
        let (lo, hi) = self.faults.delay_ms?;
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        Some(Duration::from_millis(lo + self.delays.up_to(hi - lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(faults: &Faults, connection: u64, frames: u64) -> Vec<u64> {
        let mut conn = faults.connection(connection);
        (0..frames).filter_map(|_| conn.on_frame()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_drops_and_another_seed_others() {
        let faults = Faults {
            seed: 42,
            drop_ppm: 50_000,
            ..Faults::default()
        };
        let a = drops(&faults, 3, 1000);
        assert_eq!(a, drops(&faults, 3, 1000));
        assert!((20..=90).contains(&a.len()), "about 5%: {}", a.len());
        assert_ne!(a, drops(&faults, 4, 1000), "connections differ");
        let other = Faults {
            seed: 43,
            ..faults.clone()
        };
        assert_ne!(a, drops(&other, 3, 1000), "seeds differ");
    }

    #[test]
    fn drop_every_n_and_delays_do_not_disturb_each_other() {
        let faults = Faults {
            drop_every: Some(10),
            delay_ms: Some((5, 9)),
            ..Faults::default()
        };
        let mut conn = faults.connection(0);
        let mut dropped = Vec::new();
        for _ in 0..30 {
            let d = conn.delay().expect("delays on");
            assert!((5..=9).contains(&(d.as_millis() as u64)));
            dropped.extend(conn.on_frame());
        }
        assert_eq!(dropped, vec![10, 20, 30]);
        assert!(!Faults::default().enabled());
        assert!(Faults::default().connection(0).on_frame().is_none());
    }
}
