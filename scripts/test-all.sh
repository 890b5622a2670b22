#!/usr/bin/env bash
# Runs every test of kepu on a fresh Debian machine: installs what the tests need,
# makes sure PostgreSQL is up, then runs formatting, lints, the dependency rule of
# sync-core, the Rust test suites (SQLite and PostgreSQL) and the binding tests.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        return
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    say "starting PostgreSQL"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -h 127.0.0.1 -p 5432
    # Trust auth for the local test user, as on the development machines.
    psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1 || {
        echo "PostgreSQL is up but user postgres cannot connect over 127.0.0.1 without a password" >&2
        exit 1
    }
}

# Builds go to a target directory outside the clone, so that a rerun on the same machine
# (a second CI run, a developer's rerun) is incremental. Set CARGO_TARGET_DIR to override.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kepu/target}"
mkdir -p "$CARGO_TARGET_DIR"

apt_install build-essential pkg-config python3
ensure_postgres
export KEPU_TEST_PG_URL="${KEPU_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

say "format"
cargo fmt --all --check

say "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "sync-core depends on no runtime, database, socket or filesystem crate"
forbidden='^(tokio|sqlx|sqlx-core|axum|hyper|mio|socket2|tungstenite|tokio-tungstenite|rusqlite|libsqlite3-sys|reqwest|async-std|tempfile|notify) '
if cargo tree -p kepu-sync-core -e normal --prefix none --locked | sort -u | grep -E "$forbidden"; then
    echo "kepu-sync-core must stay sans-IO" >&2
    exit 1
fi
echo "ok"

say "browser test: Chromium, CJK fonts, Node.js and playwright-core (no browser download)"
apt_install chromium chromium-driver fonts-noto-cjk nodejs
# Node.js from other sources ships its own npm; Debian's npm package would conflict with it.
command -v npm >/dev/null 2>&1 || apt_install npm
if [ ! -d server/tests/browser/node_modules ] \
    || [ server/tests/browser/package-lock.json -nt server/tests/browser/node_modules/.package-lock.json ]; then
    (cd server/tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

LOG="$(mktemp -t kepu-tests-XXXXXX)"
trap 'rm -f "$LOG"' EXIT

say "Rust tests (sync-core, server on SQLite and PostgreSQL, mobile core, end-to-end stories)"
cargo test --workspace --locked 2>&1 | tee -a "$LOG"

if [ -x mobile-ffi/tests/run-bindings-tests.sh ]; then
    say "Python and Kotlin binding tests"
    mobile-ffi/tests/run-bindings-tests.sh 2>&1 | tee -a "$LOG"
fi

say "phone library for arm64: aarch64 Linux cross-build (mobile profile), stripped size, 16 KB pages"
apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
if rustup target add aarch64-unknown-linux-gnu; then
    arm64="$(PROFILES=mobile TARGETS=aarch64-unknown-linux-gnu mobile-ffi/scripts/size.sh)"
    echo "$arm64"
    case "$arm64" in
        *"LOAD alignment 0x4000") ;;
        *) echo "the arm64 library is not 16 KB page-aligned" >&2; exit 1 ;;
    esac
else
    echo "skipped: rustup cannot add the aarch64-unknown-linux-gnu standard library here"
fi

# One closing line over every runner above: cargo's "test result" lines and the binding
# runners' "N passed, M failed" lines.
passed=$(grep -Eo '(ok|FAILED)\. [0-9]+ passed|^[^;]*[0-9]+ passed, [0-9]+ failed' "$LOG" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LOG" | awk '{s+=$1} END {print s+0}')
say "all tests passed"
echo "total: ${passed} passed, ${failed} failed"
