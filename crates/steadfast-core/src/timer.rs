//! One timer table (quinn-proto style): every deadline the engine keeps, in
//! one array; the earliest is what the driver sleeps until.

/// The engine's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Connect, then handshake, must finish by this.
    Connect,
    /// Next reconnect attempt.
    Retry,
    /// The connection has been up long enough to reset the backoff.
    Healthy,
    /// Send the coalesced ACK.
    Ack,
    /// Send the periodic PING.
    Ping,
    /// Liveness check (idle probe / probe timeout).
    Liveness,
    /// A sequence gap must be filled by this.
    Gap,
    /// The oldest partial message must complete by this.
    Partial,
    /// The next outbox message expires.
    Expiry,
}

const ALL: [Timer; 9] = [
    Timer::Connect,
    Timer::Retry,
    Timer::Healthy,
    Timer::Ack,
    Timer::Ping,
    Timer::Liveness,
    Timer::Gap,
    Timer::Partial,
    Timer::Expiry,
];

/// Deadlines in ms of the driver's monotonic clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timers([Option<u64>; 9]);

impl Timers {
    pub(crate) fn set(&mut self, timer: Timer, at: u64) {
        self.0[timer as usize] = Some(at);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<u64> {
        self.0[timer as usize]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// Arm `timer` at `at` unless it is already armed earlier.
    pub(crate) fn set_min(&mut self, timer: Timer, at: u64) {
        match self.get(timer) {
            Some(existing) if existing <= at => {}
            _ => self.set(timer, at),
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<u64> {
        self.0.iter().flatten().copied().min()
    }

    /// Take the timers due at `now`, earliest first, with their deadlines.
    pub(crate) fn take_due(&mut self, now: u64) -> Vec<(Timer, u64)> {
        let mut due: Vec<(Timer, u64)> = ALL
            .iter()
            .filter_map(|&t| self.get(t).filter(|&at| at <= now).map(|at| (t, at)))
            .collect();
        // Insertion sort: at most nine timers, and ties keep `ALL`'s order
        // (a library sort would cost kilobytes of wasm for this).
        for i in 1..due.len() {
            let mut j = i;
            while j > 0 && due[j - 1].1 > due[j].1 {
                due.swap(j - 1, j);
                j -= 1;
            }
        }
        for (t, _) in &due {
            self.stop(*t);
        }
        due
    }

    pub(crate) fn clear(&mut self) {
        self.0 = [None; 9];
    }
}
