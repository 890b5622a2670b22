//! Runs the in-process test server on `127.0.0.1:<free port>` and prints its seeded world
//! as one JSON line (URL, server key, ids, pupil passes). Commands on stdin, one per line:
//! `code <role> [pupil]` prints a fresh enrollment code; `gate` prints the gate's current
//! code; `gate-at <unix ms>` the code of a gate whose clock shows that time; `quit` (or
//! end of input) stops it.

use std::io::{BufRead, Write};

use kepu_mobile_ffi::test_server;
use kepu_sync_core::writer::Role;

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = rt.block_on(test_server::start())?;
    let world = server.shared.world();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&world)?)?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("code") => {
                let role = words.next().and_then(Role::parse);
                let pupil = words.next().and_then(|p| p.parse().ok());
                role.map_or_else(
                    || "error unknown role".to_owned(),
                    |r| server.shared.issue_code(r, pupil),
                )
            }
            Some("gate") => server.shared.gate_code(),
            Some("gate-at") => match words.next().and_then(|t| t.parse::<i64>().ok()) {
                Some(at) => server.shared.gate_code_at(at),
                None => "error gate-at needs unix milliseconds".to_owned(),
            },
            Some("quit") => break,
            _ => "error unknown command".to_owned(),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    drop(server);
    Ok(())
}
