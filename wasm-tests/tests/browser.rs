//! The wasm transport in a headless Chromium page.
#![cfg(target_arch = "wasm32")]

use steadfast::transport::ConnectOptions;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn page_echo_round_trip() {
    steadfast_wasm_tests::echo_round_trip(ConnectOptions::default()).await;
}

#[wasm_bindgen_test]
async fn page_client_close() {
    steadfast_wasm_tests::client_close().await;
}

#[wasm_bindgen_test]
async fn page_refused_connection() {
    steadfast_wasm_tests::refused_connection().await;
}

#[wasm_bindgen_test]
async fn page_invalid_url() {
    steadfast_wasm_tests::invalid_url().await;
}

#[wasm_bindgen_test]
async fn page_reliable_client_round_trip() {
    steadfast_wasm_tests::reliable_client_round_trip().await;
}

#[wasm_bindgen_test]
async fn page_js_store_conformance() {
    steadfast_wasm_tests::js_store_needs_methods();
    steadfast_wasm_tests::js_store_conformance().await;
}

#[wasm_bindgen_test]
async fn page_indexeddb_conformance() {
    steadfast_wasm_tests::indexeddb_conformance().await;
}
