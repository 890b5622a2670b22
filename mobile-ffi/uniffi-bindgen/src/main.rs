//! `uniffi-bindgen generate <library> -l kotlin -l swift -l python --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main();
}
