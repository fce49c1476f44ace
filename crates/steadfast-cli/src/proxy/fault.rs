//! Seeded, reproducible faults: the same seed breaks the same messages
//! of the same connections the same way (connections are numbered in the
//! order they are accepted; each direction draws from its own generator).

use std::time::Duration;

use steadfast_core::Rng;

use super::show::Side;

/// What `--drop`, `--delay`, … asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub(crate) seed: u64,
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) reorder: f64,
    pub(crate) delay: Duration,
    pub(crate) jitter: Duration,
    pub(crate) cut_after: Option<u64>,
    pub(crate) cut_bytes: Option<u64>,
    pub(crate) refuse: f64,
    pub(crate) refuse_for: Duration,
    /// Bytes per second, per connection and direction.
    pub(crate) throttle: Option<u64>,
    /// Only messages from this side (None: both).
    pub(crate) on: Option<Side>,
    /// Only these connections (empty: all).
    pub(crate) conns: Vec<u64>,
}

/// What happens to one data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send it `copies` times (2: duplicated) after `delay`.
    Forward { copies: u8, delay: Duration },
    /// Never send it.
    Drop,
    /// Send it after the next message.
    Hold,
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    // p in 0..=1 (checked when parsed); a million steps is fine-grained enough.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let threshold = (p * 1_000_000.0).round() as u64;
    p > 0.0 && rng.up_to(999_999) < threshold
}

impl Faults {
    /// Whether any fault is asked for.
    pub(crate) fn any(&self) -> bool {
        self.drop > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || !self.delay.is_zero()
            || !self.jitter.is_zero()
            || self.cut_after.is_some()
            || self.cut_bytes.is_some()
            || self.refuse > 0.0
            || self.throttle.is_some()
    }

    /// Whether faults apply to connection `conn` at all.
    pub(crate) fn on_connection(&self, conn: u64) -> bool {
        self.conns.is_empty() || self.conns.contains(&conn)
    }

    /// Whether faults apply to messages from `side` on `conn`.
    pub(crate) fn applies(&self, conn: u64, side: Side) -> bool {
        self.on_connection(conn) && self.on.is_none_or(|s| s == side)
    }

    /// The generator of connection `conn`, for `stream` (0: the
    /// connection itself, 1: from the client, 2: from the server).
    pub(crate) fn rng(&self, conn: u64, stream: u64) -> Rng {
        let mut mix = Rng::new(self.seed ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Rng::new(mix.next_u64() ^ stream.wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    /// The byte budget of connection `conn` under `--cut-bytes MEAN`:
    /// uniform in `1..=2·MEAN`.
    pub(crate) fn budget(&self, conn: u64) -> Option<u64> {
        let mean = self.cut_bytes?.max(1);
        if !self.on_connection(conn) {
            return None;
        }
        Some(1 + self.rng(conn, 0).up_to(2 * mean - 1))
    }

    /// Whether new connection `conn` is refused (`--refuse P`).
    pub(crate) fn refuses(&self, conn: u64) -> bool {
        self.on_connection(conn) && chance(&mut self.rng(conn, 3), self.refuse)
    }

    /// The fate of the next data message, drawn from `rng`.
    pub(crate) fn action(&self, rng: &mut Rng) -> Action {
        // Draw every number every time, so one fault's probability does not
        // shift which messages another fault hits.
        let drop = chance(rng, self.drop);
        let hold = chance(rng, self.reorder);
        let duplicate = chance(rng, self.duplicate);
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms > 0 {
            rng.up_to(jitter_ms)
        } else {
            0
        };
        if drop {
            Action::Drop
        } else if hold {
            Action::Hold
        } else {
            Action::Forward {
                copies: if duplicate { 2 } else { 1 },
                delay: self.delay + Duration::from_millis(extra),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_breaks_the_same_messages() {
        let faults = Faults {
            seed: 42,
            drop: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            jitter: Duration::from_millis(20),
            ..Faults::default()
        };
        let run = |conn| {
            let mut rng = faults.rng(conn, 1);
            (0..1000)
                .map(|_| faults.action(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let actions = run(1);
        let drops = actions.iter().filter(|a| **a == Action::Drop).count();
        assert!((50..=150).contains(&drops), "about 10% dropped: {drops}");
        let dups = actions
            .iter()
            .filter(|a| matches!(a, Action::Forward { copies: 2, .. }))
            .count();
        assert!((40..=130).contains(&dups), "about 9% duplicated: {dups}");
    }

    #[test]
    fn no_fault_asked_means_every_message_goes_once_at_once() {
        let faults = Faults::default();
        assert!(!faults.any());
        let mut rng = faults.rng(1, 1);
        for _ in 0..100 {
            assert_eq!(
                faults.action(&mut rng),
                Action::Forward {
                    copies: 1,
                    delay: Duration::ZERO
                }
            );
        }
        assert_eq!(faults.budget(1), None);
        assert!(!faults.refuses(1));
    }

    #[test]
    fn budgets_are_seeded_and_within_twice_the_mean() {
        let faults = Faults {
            seed: 7,
            cut_bytes: Some(1000),
            ..Faults::default()
        };
        for conn in 0..100 {
            let budget = faults.budget(conn).expect("a budget");
            assert!((1..=2000).contains(&budget), "{budget}");
            assert_eq!(faults.budget(conn), Some(budget));
        }
    }
}
