#!/usr/bin/env bash
# Builds the phone library (`libkepu_mobile_ffi.so`, with the `tls` feature apps ship)
# and prints its stripped size: under the plain `release` profile (before) and the
# `mobile` profile (small over fast; Cargo.toml), for the host (x86_64) and, when a
# cross linker is installed (Debian `gcc-aarch64-linux-gnu`) and `rustup target add
# aarch64-unknown-linux-gnu` was run, for aarch64 Linux: the same code generation as an
# arm64-v8a Android phone, without the NDK.
#
#   mobile-ffi/scripts/size.sh                 # release and mobile, x86_64 and aarch64
#   PROFILES=mobile TARGETS=aarch64-unknown-linux-gnu mobile-ffi/scripts/size.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PROFILES="${PROFILES:-release mobile}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
TARGETS="${TARGETS:-$HOST aarch64-unknown-linux-gnu}"

mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

for target in $TARGETS; do
    strip_tool=strip
    if [ "$target" != "$HOST" ]; then
        prefix="${target%%-*}-linux-gnu"
        if ! command -v "$prefix-gcc" >/dev/null || ! rustup target list --installed | grep -qx "$target"; then
            echo "$target: skipped (needs $prefix-gcc and rustup target add $target)"
            continue
        fi
        upper="$(echo "$target" | tr 'a-z-' 'A-Z_')"
        export "CARGO_TARGET_${upper}_LINKER=$prefix-gcc"
        # 16 KB pages, as the Android build links (mobile-ffi/android/build-android.sh).
        export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-arg=-Wl,-z,max-page-size=16384"
        export "CC_${target//-/_}=$prefix-gcc" "AR_${target//-/_}=$prefix-ar"
        strip_tool="$prefix-strip"
    fi
    for profile in $PROFILES; do
        cargo build --locked -p kepu-mobile-ffi --lib --features tls \
            --profile "$profile" --target "$target" >&2
        dir="$profile"
        lib="$TARGET_DIR/$target/$dir/libkepu_mobile_ffi.so"
        copy="$(mktemp)"
        cp "$lib" "$copy"
        "$strip_tool" --strip-all "$copy"
        bytes=$(stat -c %s "$copy")
        rm -f "$copy"
        align=$(readelf -lW "$lib" | awk '$1 == "LOAD" { print $NF }' | sort -u | paste -sd, -)
        echo "$target $profile: libkepu_mobile_ffi.so stripped $bytes bytes ($(mib "$bytes")), LOAD alignment $align"
    done
done
