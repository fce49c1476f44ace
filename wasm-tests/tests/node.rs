//! The wasm transport in Node.js: with the global `WebSocket` (Node 20 is
//! started with --experimental-websocket by `cargo xtask test`), with an
//! injected constructor, and with neither.
#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Reflect};
use steadfast::transport::{ConnectOptions, Socket};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

fn global_websocket() -> Option<Function> {
    Reflect::get(&js_sys::global(), &"WebSocket".into())
        .ok()
        .and_then(|v| wasm_bindgen::JsCast::dyn_into::<Function>(v).ok())
}

/// Remove the global `WebSocket` for the duration of `body`, then put it back.
async fn without_global<F: std::future::Future<Output = ()>>(body: impl FnOnce(Function) -> F) {
    let global = js_sys::global();
    let ctor =
        global_websocket().expect("node runs with a global WebSocket (--experimental-websocket)");
    let descriptor =
        Reflect::get_own_property_descriptor(&global, &"WebSocket".into()).expect("descriptor");
    assert!(Reflect::delete_property(&global, &"WebSocket".into()).expect("delete"));
    assert!(global_websocket().is_none(), "the global WebSocket is gone");
    body(ctor).await;
    let restore = if descriptor.is_undefined() {
        Reflect::set(&global, &"WebSocket".into(), &JsValue::UNDEFINED)
    } else {
        js_sys::Object::define_property(&global, &"WebSocket".into(), &descriptor.into());
        Ok(true)
    };
    restore.expect("restore the global WebSocket");
}

#[wasm_bindgen_test]
async fn node_echo_round_trip_with_global_websocket() {
    steadfast_wasm_tests::echo_round_trip(ConnectOptions::default()).await;
}

#[wasm_bindgen_test]
async fn node_client_close() {
    steadfast_wasm_tests::client_close().await;
}

#[wasm_bindgen_test]
async fn node_refused_connection() {
    steadfast_wasm_tests::refused_connection().await;
}

#[wasm_bindgen_test]
async fn node_without_websocket_is_a_clear_error_then_an_injected_constructor_works() {
    without_global(|ctor| async move {
        let error = Socket::connect(steadfast_wasm_tests::ECHO_URL, &ConnectOptions::default())
            .await
            .expect_err("no WebSocket anywhere");
        assert_eq!(error, steadfast::Error::NoWebSocket);
        assert_eq!(error.code(), "ERR_NO_WEBSOCKET");
        assert!(
            error.to_string().contains("--experimental-websocket"),
            "{error}"
        );

        steadfast_wasm_tests::echo_round_trip(ConnectOptions::default().constructor(ctor)).await;
    })
    .await;
    assert!(global_websocket().is_some(), "restored");
}

#[wasm_bindgen_test]
async fn node_invalid_url() {
    steadfast_wasm_tests::invalid_url().await;
}

#[wasm_bindgen_test]
async fn node_reliable_client_round_trip() {
    steadfast_wasm_tests::reliable_client_round_trip().await;
}

#[wasm_bindgen_test]
async fn node_js_store_conformance() {
    steadfast_wasm_tests::js_store_needs_methods();
    steadfast_wasm_tests::js_store_conformance().await;
}

#[wasm_bindgen_test]
fn node_has_no_indexeddb() {
    assert!(!steadfast::store::IndexedDbStore::is_available());
}
