//! Arbitrary bytes into the wire decoder: never panics, allocates within
//! the limit, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast_core::codec;

fuzz_target!(|data: &[u8]| {
    // A small limit so the size checks are exercised too.
    for limit in [64 * 1024, u64::MAX] {
        if let Ok(frame) = codec::decode(data, limit) {
            let mut out = Vec::new();
            frame.encode(&mut out);
            // Encoding is canonical (minimal varints), so a decoded frame
            // round-trips to the bytes it came from.
            assert_eq!(out, data, "{frame:?}");
        }
    }
});
