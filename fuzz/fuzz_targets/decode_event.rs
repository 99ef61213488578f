//! Decodes arbitrary bytes as an event: never panics, never allocates past
//! the decode limit, and whatever decodes re-encodes to the same bytes.
#![no_main]

use backfill_core::{decode_event, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode_event(data) {
        // Canonical: an accepted encoding is the only encoding of its value,
        // except for text forms the decimal parser normalizes.
        let again = encode(&event).expect("encode");
        let twice = decode_event(&again).expect("re-decode");
        assert_eq!(twice, event);
    }
});
