//! The runtime shims the client needs: a monotonic clock, the wall clock,
//! sleeping and spawning. The only target split outside `transport/` and
//! `store/`.
//!
//! - native: `std::time` and tokio;
//! - wasm32: `performance.now()`, `Date.now()`, the global `setTimeout`
//!   (through gloo-timers) and `spawn_local`, all of which exist in a page,
//!   a worker and Node.js (`window` is never touched).

/// Lock `mutex`, also after a panic elsewhere poisoned it. Every lock in
/// this crate guards state that one step updates whole (a push, a take, a
/// flag, a value replaced), and none runs user code while held, so what a
/// panicking holder left behind is still consistent.
pub(crate) fn lock<T: ?Sized>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

/// A shared async callback (the auth hook): `Send + Sync` natively.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type SharedHook<T> = std::sync::Arc<dyn Fn() -> BoxFuture<'static, T> + Send + Sync>;
/// A shared async callback (the auth hook).
#[cfg(target_arch = "wasm32")]
pub(crate) type SharedHook<T> = std::sync::Arc<dyn Fn() -> BoxFuture<'static, T>>;

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

    /// Let every other ready task run before this one goes on.
    pub(crate) async fn yield_now() {
        tokio::task::yield_now().await;
    }

    /// Natively nothing tells the client about the network or visibility
    /// (the application calls `Client::hint`).
    #[derive(Debug)]
    pub(crate) struct Lifecycle;

    pub(crate) fn lifecycle() -> Option<(Lifecycle, super::Hints)> {
        None
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

    /// 16 bytes from the OS CSPRNG: a new session's id (unguessable; the
    /// jitter seed never decides it). `None` if the OS has none to give.
    pub(crate) fn os_random_16() -> Option<[u8; 16]> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).ok().map(|()| bytes)
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

    use js_sys::Reflect;
    use steadfast_core::Hint;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::prelude::wasm_bindgen;
    use wasm_bindgen::JsCast;
    use web_sys::{Event, EventTarget};

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

    /// 16 bytes from `crypto.getRandomValues` (browsers, workers, Node
    /// 19+): a new session's id. `None` where there is no Web Crypto.
    pub(crate) fn os_random_16() -> Option<[u8; 16]> {
        let crypto = Reflect::get(&js_sys::global(), &"crypto".into()).ok()?;
        let fill = Reflect::get(&crypto, &"getRandomValues".into()).ok()?;
        let fill: js_sys::Function = fill.dyn_into().ok()?;
        let array = js_sys::Uint8Array::new_with_length(16);
        fill.call1(&crypto, &array).ok()?;
        let mut bytes = [0u8; 16];
        array.copy_to(&mut bytes);
        Some(bytes)
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

    /// Let what is already queued run first: the continuations of awaited
    /// promises (application code) as well as other tasks.
    pub(crate) async fn yield_now() {
        let resolved = js_sys::Promise::resolve(&wasm_bindgen::JsValue::UNDEFINED);
        let _ = wasm_bindgen_futures::JsFuture::from(resolved).await;
    }

    type Listener = (EventTarget, &'static str, Closure<dyn FnMut(Event)>);

    /// The page's (or worker's) lifecycle events, listened to for as long
    /// as this lives.
    pub(crate) struct Lifecycle {
        listeners: Vec<Listener>,
    }

    impl std::fmt::Debug for Lifecycle {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Lifecycle")
                .field("listeners", &self.listeners.len())
                .finish()
        }
    }

    impl Drop for Lifecycle {
        fn drop(&mut self) {
            for (target, name, listener) in &self.listeners {
                let _ = target
                    .remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
            }
        }
    }

    /// `online`, `offline`, `pageshow`, `pagehide` on the global scope and
    /// `visibilitychange` on the document, where they exist (a page has
    /// all, a worker the first two, Node.js none), as hints.
    pub(crate) fn lifecycle() -> Option<(Lifecycle, super::Hints)> {
        let global = js_sys::global();
        let scope = global.dyn_ref::<EventTarget>()?;
        let (tx, hints) = crate::queue::unbounded();
        let mut listeners = Vec::new();
        let mut listen = |target: &EventTarget, name: &'static str, hint: fn() -> Option<Hint>| {
            let tx = tx.clone();
            let listener = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(hint) = hint() {
                    let _ = tx.send(hint);
                }
            });
            if target
                .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                .is_ok()
            {
                listeners.push((target.clone(), name, listener));
            }
        };
        listen(scope, "online", || Some(Hint::Online));
        listen(scope, "offline", || Some(Hint::Offline));
        listen(scope, "pageshow", || Some(Hint::PageShow));
        listen(scope, "pagehide", || Some(Hint::Hidden));
        let document = Reflect::get(&global, &"document".into()).ok();
        if let Some(document) = document.as_ref().and_then(|d| d.dyn_ref::<EventTarget>()) {
            listen(document, "visibilitychange", || {
                let document = Reflect::get(&js_sys::global(), &"document".into()).ok()?;
                let state = Reflect::get(&document, &"visibilityState".into()).ok()?;
                Some(if state.as_string().as_deref() == Some("hidden") {
                    Hint::Hidden
                } else {
                    Hint::Visible
                })
            });
        }
        // Starting while offline: say so at once rather than failing connects.
        let online = Reflect::get(&global, &"navigator".into())
            .and_then(|n| Reflect::get(&n, &"onLine".into()))
            .ok()
            .and_then(|o| o.as_bool());
        if online == Some(false) {
            let _ = tx.send(Hint::Offline);
        }
        Some((Lifecycle { listeners }, hints))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::blocking;
pub(crate) use imp::{
    lifecycle, now_ms, os_random_16, random_seed, spawn, wall_ms, yield_now, Lifecycle,
};

/// Hints from the environment (see [`lifecycle`]).
pub(crate) type Hints = crate::queue::Receiver<steadfast_core::Hint>;

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
