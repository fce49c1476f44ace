//! Arbitrary bytes as a stored message record (a corrupt or foreign store).
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast_core::record::StoredMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = StoredMessage::decode(data) {
        let again = StoredMessage::decode(&message.encode()).expect("own encoding decodes");
        assert_eq!(again, message);
    }
});
