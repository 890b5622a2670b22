//! Replays every input in `tests/fuzz_crashers/` through the wire decoder: fuzzer finds and
//! hand-made hostile frames (deep nesting, huge length prefixes, truncation, …).
//!
//! Each input must decode without panicking. Files named `err-*` must be refused; anything
//! that decodes must survive an encode/decode round trip unchanged.

use std::fs;
use std::path::Path;

use kepu_sync_core::wire::decode;

#[test]
fn every_saved_crasher_decodes_to_a_message_or_an_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_crashers");
    let mut replayed = 0;
    for entry in fs::read_dir(&dir).expect("crasher directory") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_owned();
        let bytes = fs::read(&path).expect("crasher file");
        match decode(&bytes) {
            Ok(message) => {
                assert!(
                    !name.starts_with("err-"),
                    "{name} was accepted: {message:?}"
                );
                assert_eq!(decode(&message.encode()), Ok(message), "{name} round trip");
            }
            Err(err) => {
                let text = err.to_string();
                assert!(
                    text.len() < 200,
                    "{name}: error message too long ({} bytes)",
                    text.len()
                );
            }
        }
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} crashers in {}",
        dir.display()
    );
}
