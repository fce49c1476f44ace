//! The runtime shims the client needs: a monotonic clock, the wall clock,
//! sleeping and spawning. The only target split outside `transport/` and
//! `store/`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A boxed future: `Send` natively (tokio's multi-threaded runtime moves
/// tasks between threads), not on wasm32 (JS values are not `Send`).
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// Milliseconds on a monotonic clock, from an arbitrary start (the first
/// call in this process). The engine's `now`.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (for TTLs that survive restarts).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sleep until `now_ms() >= deadline`.
pub(crate) async fn sleep_until(deadline: u64) {
    let wait = deadline.saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Run `future` in the background on the current tokio runtime.
pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(future);
}

/// Run blocking work (a database commit) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}
