//! The runtime shims the client needs: a monotonic clock, the wall clock,
//! sleeping and spawning. The only target split outside `transport/` and
//! `store/`.
//!
//! - native: `std::time` and tokio;
//! - wasm32: `performance.now()`, `Date.now()`, the global `setTimeout`
//!   (through gloo-timers) and `spawn_local`, all of which exist in a page,
//!   a worker and Node.js (`window` is never touched).

/// A boxed future: `Send` natively (tokio's multi-threaded runtime moves
/// tasks between threads), not on wasm32 (JS values are not `Send`).
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
/// A boxed future: `Send` natively (tokio's multi-threaded runtime moves
/// tasks between threads), not on wasm32 (JS values are not `Send`).
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = futures::future::LocalBoxFuture<'a, T>;

/// `Send` natively; nothing on wasm32, where everything runs on one thread
/// and JS values are not `Send`.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` natively; nothing on wasm32, where everything runs on one thread
/// and JS values are not `Send`.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` natively; nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` natively; nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::future::Future;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    pub(crate) fn now_ms() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }

    pub(crate) fn random_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per process and then
        // incremented: mix in the time so two clients differ.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(wall_ms());
        hasher.write_u64(now_ms());
        hasher.finish()
    }

    /// Run blocking work (a database commit) off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        tokio::task::spawn_blocking(work).await.ok()
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::future::Future;

    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        /// `performance.now()`: a page, a worker and Node.js all have it.
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
    }

    // `as` on floats saturates (NaN becomes 0): exactly what a clock wants.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn now_ms() -> u64 {
        performance_now() as u64
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn wall_ms() -> u64 {
        js_sys::Date::now() as u64
    }

    /// `Math.random()` (the OS is out of reach on wasm32-unknown-unknown,
    /// where std's hash keys are constant): 52 bits twice, mixed with the time.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn random_seed() -> u64 {
        let draw = || (js_sys::Math::random() * 4_503_599_627_370_496.0) as u64;
        (draw() << 12) ^ draw() ^ wall_ms().rotate_left(32) ^ now_ms()
    }

    pub(crate) async fn sleep_ms(ms: u64) {
        // setTimeout takes a signed 32-bit delay; longer sleeps wake early
        // and the caller sleeps again.
        let ms = u32::try_from(ms).unwrap_or(u32::MAX).min(0x7fff_ffff);
        gloo_timers::future::TimeoutFuture::new(ms).await;
    }

    pub(crate) fn spawn(future: impl Future<Output = ()> + 'static) {
        wasm_bindgen_futures::spawn_local(future);
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::blocking;
pub(crate) use imp::{now_ms, random_seed, spawn, wall_ms};

/// Sleep until `now_ms() >= deadline` (timers may fire late, e.g. in a
/// background tab; never early).
pub(crate) async fn sleep_until(deadline: u64) {
    loop {
        let now = now_ms();
        if now >= deadline {
            return;
        }
        imp::sleep_ms(deadline - now).await;
    }
}
