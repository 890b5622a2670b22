#!/usr/bin/env bash
# Builds what this Android library module packs: the Rust library for arm64-v8a,
# armeabi-v7a and x86_64 (cargo-ndk, `mobile` profile, TLS on, 16 KB page alignment) into
# src/main/jniLibs, and the Kotlin bindings (Android flavour) into src/main/kotlin. Then
# `gradle assembleRelease` makes the AAR (build/outputs/aar/).
# Needs the Android NDK r27+ (ANDROID_NDK_HOME) and `cargo install cargo-ndk`.
set -euo pipefail
cd "$(dirname "$0")"
MODULE="$PWD"
cd ../..
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
# 16 KB pages (Android 15+ devices): every LOAD segment aligned to 16 KiB.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o "$MODULE/src/main/jniLibs" \
    build --locked --profile mobile -p kepu-mobile-ffi --lib --features tls
cargo build --locked -p uniffi-bindgen
rm -rf "$MODULE/src/main/kotlin"
"$TARGET_DIR/debug/uniffi-bindgen" generate \
    "$TARGET_DIR/aarch64-linux-android/mobile/libkepu_mobile_ffi.so" \
    -l kotlin --config "$MODULE/uniffi-android.toml" --out-dir "$MODULE/src/main/kotlin"
for abi in arm64-v8a armeabi-v7a x86_64; do
    ls -l "$MODULE/src/main/jniLibs/$abi/libkepu_mobile_ffi.so"
done
