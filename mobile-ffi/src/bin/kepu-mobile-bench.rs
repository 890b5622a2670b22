//! Figures for `docs/performance.md`: latency of a durable offline check-in through the
//! Rust API — a pupil's phone scanning the gate's code with 50, 500 and 2,000 scans
//! already in the booking, and a teacher scanning passes — (and through the Python
//! bindings when `KEPU_BINDINGS` points at generated bindings), and the bytes a device
//! sends to sync a day of 250 check-ins.
//!
//! `cargo run --release -p kepu-mobile-ffi --features test-server --bin kepu-mobile-bench`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kepu_mobile_ffi::client::core::{Core, random};
use kepu_mobile_ffi::client::net::{Until, connect_and_sync};
use kepu_mobile_ffi::client::store::Store;
use kepu_mobile_ffi::test_server::{self, TestServer};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::PupilId;
use kepu_sync_core::schema::booking::ScanMethod;
use kepu_sync_core::writer::Role;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn teacher(server: &TestServer, dir: &std::path::Path) -> Result<Arc<Core>, String> {
    let w = server.shared.world();
    let core =
        Arc::new(Core::open(dir, &w.url, Some(&w.server_public_key)).map_err(|e| e.to_string())?);
    core.enroll(&server.shared.issue_code(Role::Teacher, None))
        .await
        .map_err(|e| e.to_string())?;
    let doc: DocumentId = w.booking_doc.parse().map_err(|_| "bad doc id")?;
    core.want(doc).map_err(|e| e.to_string())?;
    connect_and_sync(&core, Until::Synced, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(core)
}

/// A pupil's phone that synced the booking; its store on disk in `dir`, or in memory.
async fn pupil(server: &TestServer, dir: Option<&std::path::Path>) -> Result<Arc<Core>, String> {
    let w = server.shared.world();
    let me: PupilId = w.pupils[0].parse().map_err(|_| "bad pupil id")?;
    let store = match dir {
        Some(dir) => Store::open(dir),
        None => Store::in_memory(),
    }
    .map_err(|e| e.to_string())?;
    let core = Arc::new(
        Core::with_store(store, &w.url, Some(&w.server_public_key)).map_err(|e| e.to_string())?,
    );
    core.enroll(&server.shared.issue_code(Role::Pupil, Some(me)))
        .await
        .map_err(|e| e.to_string())?;
    let doc: DocumentId = w.booking_doc.parse().map_err(|_| "bad doc id")?;
    core.want(doc).map_err(|e| e.to_string())?;
    connect_and_sync(&core, Until::Synced, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(core)
}

fn print_latency(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0)
    );
}

/// A pupil's durable gate-code check-in, on a fresh phone that synced the booking with
/// `sizes` scans in it (the server writes the scans of other pupils first).
async fn gate_code_latency(
    server: &TestServer,
    base: &std::path::Path,
    doc: DocumentId,
    n: usize,
) -> Result<(), String> {
    let mut in_booking = 0usize;
    for size in [50usize, 500, 2_000] {
        while in_booking < size {
            server.shared.server_edit(
                doc,
                Edit::CheckIn {
                    pupil: PupilId(uuid::Uuid::from_bytes(random())),
                    scan_id: kepu_sync_core::ids::EntryId::new_v7(
                        kepu_mobile_ffi::client::core::now_ms(),
                        random(),
                    )
                    .to_string(),
                    method: ScanMethod::Manual,
                    proof: None,
                },
            );
            in_booking += 1;
        }
        let dir = base.join(format!("gate-{size}"));
        for (label, dir) in [("durable", Some(dir.as_path())), ("in-memory store", None)] {
            let phone = pupil(server, dir).await?;
            let held = phone
                .booking(&doc)
                .map_err(|e| e.to_string())?
                .check_ins
                .len();
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                let code = server.shared.gate_code();
                let t = Instant::now();
                phone
                    .check_in_with_gate_code(doc, &code)
                    .map_err(|e| e.to_string())?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            print_latency(
                &format!("rust {label} gate-code check-in, {held} scans in the booking"),
                ms,
            );
        }
    }
    Ok(())
}

/// The floor under a durable check-in on this disk: one small row committed in WAL
/// with `synchronous = FULL`, as the store commits a check-in.
fn bare_commit_latency(dir: &std::path::Path, n: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let conn = rusqlite::Connection::open(dir.join("bare.sqlite3")).map_err(|e| e.to_string())?;
    let setup = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL);";
    conn.execute_batch(setup).map_err(|e| e.to_string())?;
    let row = vec![7u8; 220];
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.execute("INSERT INTO t (bytes) VALUES (?1)", [&row])
            .map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    print_latency("bare SQLite commit of one row (WAL, synchronous=FULL)", ms);
    Ok(())
}

async fn run() -> Result<(), String> {
    let server = test_server::start().await.map_err(|e| e.to_string())?;
    let doc: DocumentId = server
        .shared
        .world()
        .booking_doc
        .parse()
        .map_err(|_| "bad doc id")?;
    let base = std::env::temp_dir().join(format!("kepu-bench-{}", hex::encode(random::<6>())));

    let n = 500;
    bare_commit_latency(&base.join("bare"), n)?;
    gate_code_latency(&server, &base, doc, n).await?;

    // Latency of a durable check-in (pass scan, verified, written, fsynced).
    let core = teacher(&server, &base.join("latency")).await?;
    let passes: Vec<String> = (0..n)
        .map(|_| {
            server
                .shared
                .pass_for(PupilId(uuid::Uuid::from_bytes(random())))
        })
        .collect();
    let mut ms = Vec::with_capacity(n);
    for pass in &passes {
        let t = Instant::now();
        core.scan_pupil_pass(doc, pass).map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    print_latency("rust durable pass-scan check-in (teacher)", ms);

    // Bytes to sync a day of 250 check-ins made offline.
    let day = teacher(&server, &base.join("day")).await?;
    for _ in 0..250 {
        let pass = server
            .shared
            .pass_for(PupilId(uuid::Uuid::from_bytes(random())));
        day.scan_pupil_pass(doc, &pass).map_err(|e| e.to_string())?;
    }
    let sent = day.bytes_sent.load(Ordering::Relaxed);
    let received = day.bytes_received.load(Ordering::Relaxed);
    connect_and_sync(&day, Until::Synced, None)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "sync a day of 250 check-ins: sent {} bytes, received {} bytes, pending after: {}",
        day.bytes_sent.load(Ordering::Relaxed) - sent,
        day.bytes_received.load(Ordering::Relaxed) - received,
        day.status().map_err(|e| e.to_string())?.pending_changes
    );

    if let Ok(bindings) = std::env::var("KEPU_BINDINGS") {
        let w = server.shared.world();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/bench_checkin.py");
        let code = server.shared.issue_code(Role::Teacher, None);
        let passes: Vec<String> = (0..n)
            .map(|_| {
                server
                    .shared
                    .pass_for(PupilId(uuid::Uuid::from_bytes(random())))
            })
            .collect();
        let passes_file = base.join("passes.txt");
        std::fs::write(&passes_file, passes.join("\n")).map_err(|e| e.to_string())?;
        // The Python process talks to this server, so run it beside the runtime.
        let status = tokio::process::Command::new("python3")
            .arg(script)
            .env("KEPU_BINDINGS", bindings)
            .env("KEPU_URL", &w.url)
            .env("KEPU_KEY", &w.server_public_key)
            .env("KEPU_CODE", code)
            .env("KEPU_BOOKING", &w.booking_doc)
            .env("KEPU_PASSES", &passes_file)
            .env("KEPU_DIR", base.join("python"))
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("python benchmark failed".into());
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
