#!/usr/bin/env bash
# Builds kepu-mobile-ffi, generates its Kotlin, Swift and Python bindings with the in-tree
# uniffi-bindgen, and runs the Python and Kotlin (JVM) binding tests: the Python offline
# attendance tests against a real `kepu-server` they start (admin CLI seeding, free port),
# the rest against the in-process test server. Works on a fresh Debian: installs python3, a JRE, npm and JNA with apt-get, and
# the Kotlin compiler (which ships kotlinx-coroutines) from npm.
#
#   mobile-ffi/tests/run-bindings-tests.sh            # everything
#   SKIP_INSTALL=1 mobile-ffi/tests/run-bindings-tests.sh   # tools already installed
#   SKIP_KOTLIN=1 ...                                  # Python only
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT="$PWD"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
TOOLS="${KEPU_TOOLS_DIR:-$TARGET/bindings-tools}"
OUT="$(mktemp -d -t kepu-bindings-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${SKIP_INSTALL:-}" ]; then
    missing=()
    command -v python3 >/dev/null || missing+=(python3)
    if [ -z "${SKIP_KOTLIN:-}" ]; then
        command -v java >/dev/null || missing+=(default-jre-headless)
        command -v npm >/dev/null || missing+=(npm)
        dpkg -s libjna-java >/dev/null 2>&1 || missing+=(libjna-java)
        dpkg -s libjna-jni >/dev/null 2>&1 || missing+=(libjna-jni)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    if [ -z "${SKIP_KOTLIN:-}" ] && [ ! -x "$TOOLS/node_modules/kotlin-compiler/bin/kotlinc" ]; then
        mkdir -p "$TOOLS"
        npm install --prefix "$TOOLS" --no-audit --no-fund kotlin-compiler@2.4.20
    fi
fi

echo "== build"
cargo build --locked -p kepu-mobile-ffi --lib
cp "$TARGET/debug/libkepu_mobile_ffi.so" "$OUT/"
cargo build --locked -p uniffi-bindgen
cargo build --locked -p kepu-mobile-ffi --features test-server --bin kepu-test-server
export KEPU_TEST_SERVER="$TARGET/debug/kepu-test-server"
cargo build --locked -p kepu-server
export KEPU_SERVER="$TARGET/debug/kepu-server"

echo "== generate"
"$TARGET/debug/uniffi-bindgen" generate "$OUT/libkepu_mobile_ffi.so" \
    -l python -l kotlin -l swift --no-format --out-dir "$OUT"

status=0
echo "== python"
KEPU_BINDINGS="$OUT" python3 "$ROOT/mobile-ffi/tests/python/run_tests.py" || status=1

if [ -z "${SKIP_KOTLIN:-}" ]; then
    echo "== kotlin"
    KT="$TOOLS/node_modules/kotlin-compiler"
    JNA_JAR="$(dpkg -L libjna-java | grep '/jna\.jar$' | head -n1)"
    JNI_DIR="$(dirname "$(dpkg -L libjna-jni | grep 'libjnidispatch' | head -n1)")"
    CP="$JNA_JAR:$KT/lib/kotlinx-coroutines-core-jvm.jar"
    "$KT/bin/kotlinc" -nowarn -cp "$CP" \
        "$OUT/org/kepu/mobile/kepu_mobile_ffi.kt" "$ROOT/mobile-ffi/tests/kotlin/TestBindings.kt" \
        -d "$OUT/test.jar"
    java -Djna.nosys=false -Djava.library.path="$JNI_DIR" -Djna.library.path="$OUT" \
        -cp "$OUT/test.jar:$CP:$KT/lib/kotlin-stdlib.jar" TestBindingsKt || status=1
fi

if [ -z "${SKIP_KOTLIN:-}" ]; then
    echo "== android module: Kotlin generated into its source set, compiled against JNA"
    ANDROID_SRC="$ROOT/mobile-ffi/android/src/main/kotlin"
    rm -rf "$ANDROID_SRC"
    "$TARGET/debug/uniffi-bindgen" generate "$OUT/libkepu_mobile_ffi.so" -l kotlin --no-format \
        --config "$ROOT/mobile-ffi/android/uniffi-android.toml" --out-dir "$ANDROID_SRC"
    grep -q 'SystemCleaner' "$ANDROID_SRC/org/kepu/mobile/kepu_mobile_ffi.kt"
    # The three Android APIs it names are compile-only stand-ins (mobile-ffi/android/ci-stubs).
    if "$KT/bin/kotlinc" -nowarn -cp "$CP" "$ANDROID_SRC" "$ROOT/mobile-ffi/android/ci-stubs" \
        -d "$OUT/android-check.jar"; then
        echo "ok: the Android module's Kotlin compiles"
    else
        echo "FAIL: the Android module's Kotlin does not compile"
        status=1
    fi
fi

echo "== swift package: generated into its sources (no Swift toolchain here)"
ls "$OUT"/KepuMobile.swift "$OUT"/KepuMobileFFI.h "$OUT"/KepuMobileFFI.modulemap
cp "$OUT/KepuMobile.swift" "$ROOT/mobile-ffi/swift/Sources/KepuMobile/"
# Package.swift's binary target is the module the generated Swift imports.
grep -q 'canImport(KepuMobileFFI)' "$OUT/KepuMobile.swift"
grep -q 'binaryTarget(name: "KepuMobileFFI"' "$ROOT/mobile-ffi/swift/Package.swift"
grep -q '^module KepuMobileFFI' "$OUT/KepuMobileFFI.modulemap"
echo "ok: Package.swift matches the generated Swift"
exit "$status"
