//! Arbitrary bytes as a stored session record (a corrupt or foreign store).
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast_core::record::StoredSession;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = StoredSession::decode(data) {
        let again = StoredSession::decode(&session.encode()).expect("own encoding decodes");
        assert_eq!(again, session);
    }
});
