//! wasm32 transport: `web_sys::WebSocket`, in a browser page, a worker or
//! Node.js.
//!
//! The socket is built with `Reflect.construct` on the global `WebSocket`
//! (or the constructor passed in) so the same code works with a browser's
//! socket, Node's built-in one and the `ws` package. web-sys calls its
//! methods structurally, so any object with the WebSocket shape will do.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::{Array, ArrayBuffer, Function, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

use super::{CloseInfo, ConnectOptions, Message, Opened, SocketEvent};
use crate::Error;

/// `WebSocket.OPEN`.
const READY_STATE_OPEN: u16 = 1;

/// The wasm half of a [`Socket`](super::Socket): the JS socket and the
/// handlers it calls (kept alive as long as the socket is).
pub(super) struct Inner {
    socket: WebSocket,
    /// The socket copies what `send` is given before it returns (a
    /// browser's own `WebSocket`), so a view into wasm memory will do.
    copies_on_send: bool,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("url", &self.socket.url())
            .field("ready_state", &self.socket.ready_state())
            .finish()
    }
}

impl Inner {
    pub(super) fn send(&self, message: Message) -> Result<(), Error> {
        if self.socket.ready_state() != READY_STATE_OPEN {
            return Err(Error::Closed);
        }
        let sent = match message {
            Message::Text(text) => self.socket.send_with_str(&text),
            Message::Binary(bytes) => {
                // In a browser, a view of the bytes where they are, in wasm
                // memory: `send` copies them before it returns (the
                // WebSocket standard queues a copy; Chromium, Firefox and
                // Safari do), and nothing runs in wasm while the view is in
                // use. Elsewhere a copy: a view could change under a socket
                // that queues the buffer it is given (the `ws` package).
                let view = self.copies_on_send.then(|| wasm_view(&bytes)).flatten();
                let data = view.unwrap_or_else(|| Uint8Array::from(bytes.as_slice()));
                self.socket.send_with_array_buffer_view(&data)
            }
        };
        sent.map_err(|_| Error::Closed)
    }

    pub(super) fn buffered_amount(&self) -> usize {
        self.socket.buffered_amount() as usize
    }

    /// The browser reports no draining: the caller polls `buffered_amount`.
    pub(super) fn poll_below(
        &self,
        _cx: &mut std::task::Context<'_>,
        _low: usize,
    ) -> Option<std::task::Poll<()>> {
        None
    }

    pub(super) fn close(&self, code: u16, reason: &str) {
        // Throws only for codes and reasons validated away by the caller, or
        // never for an already closing socket.
        let _ = self.socket.close_with_code_and_reason(code, reason);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Detach the handlers before the closures are freed: a JS call into a
        // dropped closure throws.
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onerror(None);
        self.socket.set_onclose(None);
        if self.socket.ready_state() <= READY_STATE_OPEN {
            let _ = self.socket.close_with_code(steadfast_core::close::NORMAL);
        }
    }
}

pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Opened, Error> {
    let socket = construct(url, options)?;
    socket.set_binary_type(BinaryType::Arraybuffer);

    let (event_tx, events) = crate::queue::unbounded();
    let (open_tx, open_rx) = oneshot::channel::<Result<(), CloseInfo>>();
    let open_tx = Rc::new(RefCell::new(Some(open_tx)));

    let on_open = {
        let open_tx = Rc::clone(&open_tx);
        Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        })
    };
    let on_message = {
        let event_tx = event_tx.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let _ = event_tx.send(decode_message(&event.data()));
        })
    };
    let on_error = {
        let event_tx = event_tx.clone();
        let open_tx = Rc::clone(&open_tx);
        Closure::<dyn FnMut(Event)>::new(move |event: Event| {
            // Browsers give no detail on purpose; Node's events carry a message.
            let detail = Reflect::get(&event, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "WebSocket error".to_owned());
            // An error before open fails the connect. Node 20's built-in
            // WebSocket fires only `error` (no `close`) when it cannot
            // connect, so waiting for `close` would hang.
            match open_tx.borrow_mut().take() {
                Some(tx) => {
                    let _ = tx.send(Err(CloseInfo::abnormal(detail)));
                }
                None => {
                    let _ = event_tx.send(SocketEvent::Error(detail));
                }
            }
        })
    };
    let on_close = {
        let open_tx = Rc::clone(&open_tx);
        Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let info = CloseInfo {
                code: event.code(),
                reason: event.reason(),
                was_clean: event.was_clean(),
            };
            match open_tx.borrow_mut().take() {
                Some(tx) => {
                    let _ = tx.send(Err(info));
                }
                None => {
                    let _ = event_tx.send(SocketEvent::Closed(info));
                }
            }
        })
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));

    let inner = Inner {
        socket,
        copies_on_send: options.constructor.is_none() && in_browser(),
        _on_open: on_open,
        _on_message: on_message,
        _on_error: on_error,
        _on_close: on_close,
    };
    match open_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(close)) => {
            return Err(Error::Connect(format!(
                "the connection failed before it opened (code {}{}{})",
                close.code,
                if close.reason.is_empty() { "" } else { ": " },
                close.reason
            )))
        }
        // The sender lives in the handlers owned by `inner`, alive here.
        Err(_) => {
            return Err(Error::Connect(
                "the socket went away before it opened".into(),
            ))
        }
    }
    let protocol = Some(inner.socket.protocol()).filter(|p| !p.is_empty());
    Ok(Opened {
        inner,
        events,
        protocol,
    })
}

/// `new WebSocket(url, protocols)` with the caller's constructor or the global one.
fn construct(url: &str, options: &ConnectOptions) -> Result<WebSocket, Error> {
    let constructor = match &options.constructor {
        Some(constructor) => constructor.clone(),
        None => global_constructor().ok_or(Error::NoWebSocket)?,
    };
    let protocols: Array = options
        .protocols
        .iter()
        .map(|p| JsValue::from_str(p))
        .collect();
    let args = Array::of2(&JsValue::from_str(url), &protocols);
    let socket = Reflect::construct(&constructor, &args).map_err(|e| {
        let message = js_message(&e);
        // The standard constructor throws a SyntaxError for a bad URL or protocol.
        if js_name(&e).as_deref() == Some("SyntaxError") {
            Error::InvalidUrl(message)
        } else {
            Error::Connect(message)
        }
    })?;
    Ok(socket.unchecked_into())
}

/// Browsers cannot set handshake headers; without a `WebSocket` nothing
/// can connect. Both are refused before the first attempt.
pub(super) fn check_options(options: &ConnectOptions, header_auth: bool) -> Result<(), Error> {
    if header_auth || !options.headers.is_empty() {
        return Err(Error::InvalidOption(
            "browsers cannot set handshake headers: put the token in a query parameter or a subprotocol".into(),
        ));
    }
    if options.constructor.is_none() && global_constructor().is_none() {
        return Err(Error::NoWebSocket);
    }
    Ok(())
}

impl crate::ClientBuilder {
    /// The `WebSocket` constructor to use instead of the global one (wasm32:
    /// Node.js before 22 has none; pass the `ws` package's `WebSocket`).
    pub fn websocket(mut self, constructor: Function) -> Self {
        self.connect.constructor = Some(constructor);
        self
    }
}

/// A `Uint8Array` over `bytes` in wasm memory (no copy). Valid until wasm
/// memory grows or `bytes` changes: use it at once. None only where
/// addresses do not fit 32 bits (not wasm32).
fn wasm_view(bytes: &[u8]) -> Option<Uint8Array> {
    let start = u32::try_from(bytes.as_ptr() as usize).ok()?;
    let length = u32::try_from(bytes.len()).ok()?;
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    Some(Uint8Array::new_with_byte_offset_and_length(
        &memory.buffer(),
        start,
        length,
    ))
}

/// A page or a worker (not Node.js, Deno or Bun, whose sockets may keep
/// the buffer they are given).
fn in_browser() -> bool {
    let global = js_sys::global();
    ["document", "WorkerGlobalScope"]
        .iter()
        .any(|name| Reflect::has(&global, &JsValue::from_str(name)).unwrap_or(false))
}

fn global_constructor() -> Option<Function> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("WebSocket"))
        .ok()
        .and_then(|value| value.dyn_into::<Function>().ok())
}

fn decode_message(data: &JsValue) -> SocketEvent {
    if let Some(text) = data.as_string() {
        return SocketEvent::Message(Message::Text(text));
    }
    if let Some(buffer) = data.dyn_ref::<ArrayBuffer>() {
        return SocketEvent::Message(Message::Binary(Uint8Array::new(buffer).to_vec()));
    }
    // Node's `ws` may hand over a Buffer (a Uint8Array) for binary data.
    if let Some(view) = data.dyn_ref::<Uint8Array>() {
        return SocketEvent::Message(Message::Binary(view.to_vec()));
    }
    SocketEvent::Error("received a message of an unsupported type".into())
}

fn js_message(error: &JsValue) -> String {
    Reflect::get(error, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "unknown JavaScript error".into())
}

fn js_name(error: &JsValue) -> Option<String> {
    Reflect::get(error, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string())
}
