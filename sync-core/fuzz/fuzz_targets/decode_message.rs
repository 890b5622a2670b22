//! Any bytes must decode to a message or an error, without panicking or hanging; a decoded
//! message must survive an encode/decode round trip unchanged.
#![no_main]

use kepu_sync_core::wire::{Message, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again: Result<Message, _> = decode(&message.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&message),
            "re-encoding changed the message"
        );
    }
});
