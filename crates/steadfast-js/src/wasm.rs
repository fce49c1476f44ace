//! The exports: [`open`] and [`Core`].

use futures::FutureExt;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use steadfast::store::{IndexedDbStore, JsStore};
use steadfast::{
    AuthPlacement, Client, ClientBuilder, ClientEvent, ConnectionState, Delivery, DisconnectReason,
    Error, Hint, Mode, Payload, Reliability, SendOverflow, StopReason, SuspendReason,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{future_to_promise, JsFuture};

/// A JS `Error` with `code` set (the JavaScript side turns it into a
/// `SteadfastError`).
fn js_error(error: &Error) -> JsValue {
    let js = js_sys::Error::new(&error.to_string());
    let _ = Reflect::set(&js, &"code".into(), &error.code().into());
    js.into()
}

fn invalid(option: &str, must: &str) -> JsValue {
    js_error(&Error::InvalidOption(
        ["option ", option, " must be ", must].concat(),
    ))
}

fn get(object: &JsValue, key: &str) -> JsValue {
    if object.is_object() || object.is_function() {
        Reflect::get(object, &key.into()).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// A whole, non-negative number at `key` (`None` when absent).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn number(object: &JsValue, key: &str) -> Result<Option<u64>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => {
            Ok(Some(n as u64))
        }
        _ => Err(invalid(key, "a whole number of at least 0")),
    }
}

fn string(object: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| invalid(key, "a string"))
}

/// Set `target` from `object[key]` if present.
macro_rules! set_number {
    ($object:expr, $key:literal, $target:expr) => {
        if let Some(n) = number($object, $key)? {
            $target = n.try_into().unwrap_or(usize::MAX as _);
        }
    };
}

/// The client, as the JavaScript `Steadfast` class drives it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Core {
    client: Client,
}

/// Everything but the store, from the `Steadfast` constructor's options.
fn builder(url: &str, options: &JsValue) -> Result<ClientBuilder, JsValue> {
    let mut config = steadfast::Config::default();
    let reliable = get(options, "reliable");
    config.reliability = if reliable.is_undefined()
        || reliable.as_string().as_deref() == Some("auto")
    {
        Reliability::Auto
    } else if reliable.as_bool() == Some(true) || reliable.as_string().as_deref() == Some("on") {
        Reliability::Required
    } else if reliable.as_bool() == Some(false) || reliable.as_string().as_deref() == Some("off") {
        Reliability::Off
    } else {
        return Err(invalid("reliable", "\"auto\", \"on\" or \"off\""));
    };
    set_number!(options, "chunkSize", config.chunk_size);
    set_number!(
        options,
        "connectTimeoutMs",
        config.backoff.connect_timeout_ms
    );
    let backoff = get(options, "backoff");
    set_number!(&backoff, "initialMs", config.backoff.initial_ms);
    set_number!(&backoff, "maxMs", config.backoff.max_ms);
    set_number!(&backoff, "fastPhaseMs", config.backoff.fast_phase_ms);
    set_number!(&backoff, "slowMaxMs", config.backoff.slow_max_ms);
    set_number!(&backoff, "fastRetryMs", config.backoff.fast_retry_ms);
    set_number!(&backoff, "healthyAfterMs", config.backoff.healthy_after_ms);
    let queue = get(options, "queue");
    set_number!(&queue, "maxMessages", config.outbox.max_messages);
    set_number!(&queue, "maxBytes", config.outbox.max_bytes);
    set_number!(
        &queue,
        "maxInFlightBytes",
        config.outbox.max_in_flight_bytes
    );
    if let Some(ttl) = number(&queue, "ttlMs")? {
        config.outbox.ttl_ms = Some(ttl);
    }
    let limits = get(options, "limits");
    set_number!(&limits, "maxMessageSize", config.limits.max_message_size);
    set_number!(&limits, "reorderWindow", config.limits.reorder_window);
    set_number!(
        &limits,
        "maxBufferedBytes",
        config.limits.max_buffered_bytes
    );
    set_number!(
        &limits,
        "maxPartialMessages",
        config.limits.max_partial_messages
    );
    set_number!(&limits, "maxPartialAgeMs", config.limits.max_partial_age_ms);
    set_number!(&limits, "gapTimeoutMs", config.limits.gap_timeout_ms);
    set_number!(
        &limits,
        "handshakeTimeoutMs",
        config.limits.handshake_timeout_ms
    );
    let ack = get(options, "ack");
    set_number!(&ack, "delayMs", config.ack.delay_ms);
    set_number!(&ack, "every", config.ack.every);
    set_number!(&ack, "everyBytes", config.ack.every_bytes);
    let heartbeat = get(options, "heartbeat");
    if heartbeat.as_bool() == Some(false) {
        config.heartbeat = None;
    } else if heartbeat.is_object() {
        let mut beat = config.heartbeat.clone().unwrap_or_default();
        set_number!(&heartbeat, "intervalMs", beat.interval_ms);
        set_number!(&heartbeat, "idleMs", beat.idle_ms);
        set_number!(&heartbeat, "probeTimeoutMs", beat.probe_timeout_ms);
        config.heartbeat = Some(beat);
    } else if !heartbeat.is_undefined() {
        return Err(invalid("heartbeat", "false or an object"));
    }

    let mut builder = Client::builder(url).config(config);
    let protocols = get(options, "protocols");
    if !protocols.is_undefined() {
        let list: Array = protocols
            .dyn_into()
            .map_err(|_| invalid("protocols", "an array of strings"))?;
        for protocol in list.iter() {
            let protocol = protocol
                .as_string()
                .ok_or_else(|| invalid("protocols", "an array of strings"))?;
            builder = builder.protocol(protocol);
        }
    }
    if let Some(seed) = number(options, "seed")? {
        builder = builder.seed(seed);
    }
    if let Some(bytes) = number(options, "sendBuffer")? {
        builder = builder.send_buffer(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    builder = match string(options, "overflow")?.as_deref() {
        None | Some("wait") => builder.overflow(SendOverflow::Wait),
        Some("reject") => builder.overflow(SendOverflow::Reject),
        Some("dropOldest") => builder.overflow(SendOverflow::DropOldest),
        Some(_) => {
            return Err(invalid(
                "overflow",
                "\"wait\", \"reject\" or \"dropOldest\"",
            ))
        }
    };
    let websocket = get(options, "WebSocket");
    if !websocket.is_undefined() {
        let constructor: Function = websocket
            .dyn_into()
            .map_err(|_| invalid("WebSocket", "a WebSocket constructor"))?;
        builder = builder.websocket(constructor);
    }
    let auth = get(options, "auth");
    if !auth.is_undefined() {
        let hook: Function = auth
            .dyn_into()
            .map_err(|_| invalid("auth", "a function returning a token"))?;
        let placement = match (
            string(options, "authQuery")?,
            string(options, "authProtocol")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid("authQuery", "left out when authProtocol is set"))
            }
            (_, Some(prefix)) => AuthPlacement::Subprotocol(prefix),
            (query, None) => AuthPlacement::Query(query.unwrap_or_else(|| "token".into())),
        };
        builder = builder.auth(placement, move || {
            let hook = hook.clone();
            async move {
                let token = hook.call0(&JsValue::UNDEFINED).map_err(|e| message(&e))?;
                let token = JsFuture::from(Promise::resolve(&token))
                    .await
                    .map_err(|e| message(&e))?;
                token
                    .as_string()
                    .ok_or_else(|| "the auth function must return a string".to_owned())
            }
        });
    }
    Ok(builder)
}

/// The message of a thrown JS value.
fn message(error: &JsValue) -> String {
    get(error, "message")
        .as_string()
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "the function threw".into())
}

/// Start a client for `url` with the `Steadfast` constructor's options.
/// `on_event(kind, value)` is called for each event, after the client
/// released its state: `("message", data)`, `("state", state)`,
/// `("error", error)` (`ERR_STORE`: the store failed and messages are
/// kept in memory), `("resync")`, `("skipped", count)`, `("restored",
/// [{ id, data }])`, `("sent", id)`, `("settled", { id, acked, durable }
/// or { id, error })`.
#[wasm_bindgen]
pub async fn open(url: String, options: JsValue, on_event: Function) -> Result<Core, JsValue> {
    let persist = get(&options, "persist");
    let builder = builder(&url, &options)?;
    let builder = match persist.as_string().as_deref() {
        Some("memory") => builder,
        None if persist.is_object() => {
            builder.store(JsStore::new(persist).map_err(|e| js_error(&e.into()))?)
        }
        None if !persist.is_undefined() => return Err(invalid("persist", PERSIST)),
        // The default where IndexedDB does not exist (Node.js): memory.
        None if !IndexedDbStore::is_available() => builder,
        // IndexedDB refused (a private mode, blocked, no quota) or, when
        // asked for explicitly, missing: memory, with an ERR_STORE event.
        Some("indexeddb") | None => {
            let name = string(&options, "name")?.unwrap_or_else(|| ["steadfast ", &url].concat());
            builder
                .store(IndexedDbStore::new(name))
                .memory_fallback(true)
        }
        Some(_) => return Err(invalid("persist", PERSIST)),
    };
    // Progress events feed `sent`, `ack` and `failed` for every message,
    // restored ones included.
    let client = builder
        .progress_events(true)
        .connect()
        .await
        .map_err(|e| js_error(&e))?;
    let pump = client.clone();
    wasm_bindgen_futures::spawn_local(async move {
        while let Some(event) = pump.next_event().await {
            let (kind, value) = event_to_js(event, || pump.stats().durable);
            // A throwing listener must not stop the pump (and does not
            // throw here: the JS side dispatches events, which reports
            // listener errors on its own).
            let _ = on_event.call2(&JsValue::UNDEFINED, &kind.into(), &value);
        }
    });
    Ok(Core { client })
}

/// Call `send`'s `onQueued(id, durable)`, if given (a throwing callback
/// changes nothing: the message is queued).
fn tell_queued(on_queued: Option<&Function>, receipt: &steadfast::Receipt) {
    if let Some(on_queued) = on_queued {
        let durable = JsValue::from(receipt.is_durable());
        let _ = on_queued.call2(&JsValue::UNDEFINED, &num(receipt.id()), &durable);
    }
}

const PERSIST: &str = "\"indexeddb\", \"memory\" or a store object";

fn object(entries: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in entries {
        let _ = Reflect::set(&object, &(*key).into(), value);
    }
    object.into()
}

#[allow(clippy::cast_precision_loss)]
fn num(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

fn payload_to_js(payload: Payload) -> JsValue {
    match payload {
        Payload::Text(text) => text.into(),
        Payload::Binary(bytes) => Uint8Array::from(bytes.as_slice()).into(),
    }
}

/// `durable`: whether the client's store is durable now (for `settled`).
fn event_to_js(event: ClientEvent, durable: impl FnOnce() -> bool) -> (&'static str, JsValue) {
    match event {
        ClientEvent::Message(payload) => ("message", payload_to_js(payload)),
        ClientEvent::State(state) => ("state", state_to_js(&state)),
        ClientEvent::ResyncRequired => ("resync", JsValue::UNDEFINED),
        ClientEvent::Skipped(count) => ("skipped", num(count)),
        ClientEvent::Error(error) => ("error", js_error(&error)),
        ClientEvent::Restored(messages) => (
            "restored",
            messages
                .into_iter()
                .map(|m| object(&[("id", num(m.id)), ("data", payload_to_js(m.payload))]))
                .collect::<Array>()
                .into(),
        ),
        ClientEvent::Transmitted(id) => ("sent", num(id)),
        ClientEvent::Settled { id, outcome } => (
            "settled",
            match outcome {
                Ok(delivery) => object(&[
                    ("id", num(id)),
                    ("acked", (delivery == Delivery::Acked).into()),
                    ("durable", durable().into()),
                ]),
                Err(error) => object(&[("id", num(id)), ("error", js_error(&error))]),
            },
        ),
        _ => ("other", JsValue::UNDEFINED),
    }
}

fn state_to_js(state: &ConnectionState) -> JsValue {
    let name = |n: &str| ("state", JsValue::from_str(n));
    match state {
        ConnectionState::Idle => object(&[name("idle")]),
        ConnectionState::Connecting { attempt } => {
            object(&[name("connecting"), ("attempt", (*attempt).into())])
        }
        ConnectionState::Open { mode } => object(&[
            name("open"),
            (
                "mode",
                if *mode == Mode::Reliable {
                    "reliable"
                } else {
                    "plain"
                }
                .into(),
            ),
        ]),
        ConnectionState::Reconnecting {
            attempt,
            retry_in,
            retry_at_unix_ms,
            reason,
        } => {
            let (why, code, text) = match reason {
                DisconnectReason::Closed { code, reason } => {
                    ("closed", Some(*code), reason.as_str())
                }
                DisconnectReason::ConnectTimeout => ("connect-timeout", None, ""),
                DisconnectReason::DeadPeer => ("dead-peer", None, ""),
                DisconnectReason::ProtocolError { code } => ("protocol-error", Some(*code), ""),
                DisconnectReason::Requested => ("requested", None, ""),
            };
            object(&[
                name("reconnecting"),
                ("attempt", (*attempt).into()),
                (
                    "retryInMs",
                    num(u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX)),
                ),
                ("nextRetryAt", num(*retry_at_unix_ms)),
                ("reason", why.into()),
                ("code", code.map_or(JsValue::UNDEFINED, JsValue::from)),
                ("closeReason", text.into()),
            ])
        }
        ConnectionState::Suspended { reason } => object(&[
            name("suspended"),
            (
                "reason",
                match reason {
                    SuspendReason::Offline => "offline",
                    SuspendReason::AwaitingAuth => "awaiting-auth",
                }
                .into(),
            ),
        ]),
        ConnectionState::Closed { reason } => {
            let (why, code, text) = match reason {
                StopReason::Closed => ("closed", None, ""),
                StopReason::Rejected { code, reason } => ("rejected", Some(*code), reason.as_str()),
                StopReason::AuthFailed => ("auth-failed", None, ""),
                StopReason::SubprotocolRefused => ("subprotocol-refused", None, ""),
            };
            object(&[
                name("closed"),
                ("reason", why.into()),
                ("code", code.map_or(JsValue::UNDEFINED, JsValue::from)),
                ("closeReason", text.into()),
            ])
        }
        _ => object(&[name("unknown")]),
    }
}

#[wasm_bindgen]
impl Core {
    /// Queue `data` (a string or a `Uint8Array`). `on_queued(id, durable)`
    /// is called once the message is in the outbox (and, with a durable
    /// store, committed).
    ///
    /// Returns the message's id when it was queued at once (no store to
    /// wait for, room in the outbox): its outcome then comes only as the
    /// `settled` event, which the JS side turns into the promise `send`
    /// returned — no Rust future or promise per message. Otherwise returns
    /// a promise that resolves with `{ id, acked, durable }` when the
    /// server acknowledged it (`acked: false`: plain mode, handed to the
    /// socket). Throws, or rejects, with an error carrying a `code`.
    pub fn send(&self, data: JsValue, on_queued: Option<Function>) -> Result<JsValue, JsValue> {
        let payload = if let Some(text) = data.as_string() {
            Payload::Text(text)
        } else if let Some(bytes) = data.dyn_ref::<Uint8Array>() {
            Payload::Binary(bytes.to_vec())
        } else {
            return Err(invalid("data", "a string or a Uint8Array"));
        };
        let client = self.client.clone();
        let mut queue = Box::pin(async move { client.send(payload).await });
        // Polled once here; if it waits (for the store, or for room) the
        // same future goes on in the promise: dropping it would give the
        // message up.
        if let Some(queued) = queue.as_mut().now_or_never() {
            let receipt = queued.map_err(|e| js_error(&e))?;
            tell_queued(on_queued.as_ref(), &receipt);
            return Ok(num(receipt.id()));
        }
        Ok(future_to_promise(async move {
            let receipt = queue.await.map_err(|e| js_error(&e))?;
            tell_queued(on_queued.as_ref(), &receipt);
            let (id, durable) = (receipt.id(), receipt.is_durable());
            let delivery = receipt.acked().await.map_err(|e| js_error(&e))?;
            Ok(object(&[
                ("id", num(id)),
                ("acked", (delivery == Delivery::Acked).into()),
                ("durable", durable.into()),
            ]))
        })
        .into())
    }

    /// Close with `code` (1000 or 3000–4999) and `reason`; queued messages
    /// stay queued (and stored). Rejects on an invalid code or reason.
    pub fn close(&self, code: u16, reason: String) -> Promise {
        let client = self.client.clone();
        future_to_promise(async move {
            client
                .close(code, &reason)
                .await
                .map(|()| JsValue::UNDEFINED)
                .map_err(|e| js_error(&e))
        })
    }

    /// Connect again now, from any state.
    pub fn reconnect(&self) {
        self.client.reconnect();
    }

    /// `"online"`, `"offline"`, `"visible"`, `"hidden"` or `"pageshow"`.
    pub fn hint(&self, hint: &str) -> Result<(), JsValue> {
        let hint = match hint {
            "online" => Hint::Online,
            "offline" => Hint::Offline,
            "visible" => Hint::Visible,
            "hidden" => Hint::Hidden,
            "pageshow" => Hint::PageShow,
            _ => {
                return Err(invalid(
                    "hint",
                    "online, offline, visible, hidden or pageshow",
                ))
            }
        };
        self.client.hint(hint);
        Ok(())
    }

    /// The current state, as the `state` event carries it.
    pub fn state(&self) -> JsValue {
        state_to_js(&self.client.state())
    }

    /// Counters: `queued`, `queuedBytes`, `waitingSends`, `durable`,
    /// `reconnects`, `resends`, `duplicates`, `messagesIn`, `messagesOut`,
    /// `rttMs`.
    pub fn stats(&self) -> JsValue {
        let stats = self.client.stats();
        let e = stats.engine;
        object(&[
            ("queued", num(stats.queued as u64)),
            ("queuedBytes", num(stats.queued_bytes as u64)),
            ("waitingSends", num(stats.waiting_sends as u64)),
            ("durable", stats.durable.into()),
            ("connects", num(e.connects)),
            ("resumes", num(e.resumes)),
            ("resyncs", num(e.resyncs)),
            ("resends", num(e.resends)),
            ("duplicates", num(e.duplicates)),
            ("messagesIn", num(e.messages_in)),
            ("messagesOut", num(e.messages_out)),
            ("rttMs", e.rtt_ms.map_or(JsValue::NULL, num)),
        ])
    }
}
