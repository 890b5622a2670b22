#!/usr/bin/env bash
# Builds what Package.swift points at, on macOS with Xcode: the Rust library (`mobile`
# profile, TLS on) for iOS devices and both simulators, one XCFramework from them
# (KepuMobileFFI.xcframework: the static libraries, the C header and its module map), and
# the generated Swift in Sources/KepuMobile.
set -euo pipefail
cd "$(dirname "$0")"
PKG="$PWD"
cd ../..
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BUILD="$(mktemp -d -t kepu-xcframework-XXXXXX)"
trap 'rm -rf "$BUILD"' EXIT

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
    cargo build --locked --profile mobile -p kepu-mobile-ffi --lib --features tls --target "$t"
done
mkdir -p "$BUILD/sim"
lipo -create \
    "$TARGET_DIR/aarch64-apple-ios-sim/mobile/libkepu_mobile_ffi.a" \
    "$TARGET_DIR/x86_64-apple-ios/mobile/libkepu_mobile_ffi.a" \
    -output "$BUILD/sim/libkepu_mobile_ffi.a"

cargo build --locked -p uniffi-bindgen
"$TARGET_DIR/debug/uniffi-bindgen" generate \
    "$TARGET_DIR/aarch64-apple-ios/mobile/libkepu_mobile_ffi.a" -l swift --out-dir "$BUILD/swift"
mkdir -p "$BUILD/headers" "$PKG/Sources/KepuMobile"
cp "$BUILD/swift/KepuMobileFFI.h" "$BUILD/headers/"
cp "$BUILD/swift/KepuMobileFFI.modulemap" "$BUILD/headers/module.modulemap"
cp "$BUILD/swift/KepuMobile.swift" "$PKG/Sources/KepuMobile/"

rm -rf "$PKG/KepuMobileFFI.xcframework"
xcodebuild -create-xcframework \
    -library "$TARGET_DIR/aarch64-apple-ios/mobile/libkepu_mobile_ffi.a" -headers "$BUILD/headers" \
    -library "$BUILD/sim/libkepu_mobile_ffi.a" -headers "$BUILD/headers" \
    -output "$PKG/KepuMobileFFI.xcframework"
echo "built $PKG/KepuMobileFFI.xcframework and $PKG/Sources/KepuMobile/KepuMobile.swift"
