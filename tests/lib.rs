//! Native integration tests live beside this file (`transport.rs`); run them
//! with `cargo test -p steadfast-tests`.
