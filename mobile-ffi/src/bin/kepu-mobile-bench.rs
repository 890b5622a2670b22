//! Figures for `docs/performance.md`: latency of a durable offline check-in through the
//! Rust API (and through the Python bindings when `KEPU_BINDINGS` points at generated
//! bindings), and the bytes a device sends to sync a day of 250 check-ins.
//!
//! `cargo run --release -p kepu-mobile-ffi --features test-server --bin kepu-mobile-bench`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kepu_mobile_ffi::client::core::{Core, random};
use kepu_mobile_ffi::client::net::{Until, connect_and_sync};
use kepu_mobile_ffi::test_server::{self, TestServer};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::PupilId;
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

async fn run() -> Result<(), String> {
    let server = test_server::start().await.map_err(|e| e.to_string())?;
    let doc: DocumentId = server
        .shared
        .world()
        .booking_doc
        .parse()
        .map_err(|_| "bad doc id")?;
    let base = std::env::temp_dir().join(format!("kepu-bench-{}", hex::encode(random::<6>())));

    // Latency of a durable check-in (pass scan, verified, written, fsynced).
    let core = teacher(&server, &base.join("latency")).await?;
    let n = 500;
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
    ms.sort_by(f64::total_cmp);
    println!(
        "rust durable check-in: n={n} p50={:.2} ms p99={:.2} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99)
    );

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
