//! The chaos benchmark (`kepu-loadgen --scenario chaos`, `benchmarks/chaos.sh`) at a tiny
//! scale: the real `kepu-server` binary is killed with SIGKILL three times while the
//! devices of an end-of-day sync and keep scanning, and restarted on the same SQLite file
//! or PostgreSQL database. Every check-in a device saw acknowledged is in the records
//! after each restart, none is stored twice, every device is in sync at the end without
//! a reconnect the kills did not cause.

use kepu_loadgen::Scale;
use kepu_loadgen::chaos::ServerSpec;

use crate::support::{Db, TestDb};

crate::support::on_both_databases!(
    multi_thread kind: three_sigkills_during_end_of_day_lose_no_acknowledged_check_in
);

fn tiny() -> Scale {
    let mut s = Scale::quick();
    s.venues = 2;
    s.devices_per_venue = 3;
    s.check_ins = 20;
    s.roster = 40;
    s.chaos_kills = 3;
    s.chaos_up_ms = (400, 1500);
    s.chaos_down_ms = 300;
    s.chaos_rate = 20;
    s.timeout_secs = 20;
    s
}

async fn three_sigkills_during_end_of_day_lose_no_acknowledged_check_in(kind: Db) {
    let db = TestDb::new(kind).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let spec = ServerSpec {
        bin: env!("CARGO_BIN_EXE_kepu-server").into(),
        data_dir: db
            .data_dir()
            .unwrap_or_else(|| scratch.path().to_path_buf()),
        database_url: (kind == Db::Postgres).then(|| db.url.clone()),
        log: None,
    };
    let figures = kepu_loadgen::chaos::chaos(&spec, &tiny(), false)
        .await
        .expect("the chaos run completes");
    let f = &figures;
    eprintln!("chaos: {f}");
    assert_eq!(
        f["kills_survived"], 3,
        "the server came back after every kill: {f}"
    );
    assert!(
        f["kill_reconnects"].as_u64().is_some_and(|n| n >= 3),
        "the kills dropped connected devices, which reconnected: {f}"
    );
    assert!(
        f["acked"].as_u64().is_some_and(|n| n > 0),
        "devices saw acknowledgements: {f}"
    );
    assert_eq!(f["acked_lost"], 0, "acknowledged check-ins lost: {f}");
    assert_eq!(f["stored_twice"], 0, "check-ins stored twice: {f}");
    assert_eq!(f["failures"], 0, "{f}");
    assert_eq!(f["out_of_sync"], 0, "devices out of sync at the end: {f}");
    assert_eq!(
        f["reconnects"], 0,
        "reconnects the kills did not cause: {f}"
    );
    assert_eq!(
        f["records"]["missing_at_end"], 0,
        "every check-in made is in the records: {f}"
    );
    assert_eq!(f["records"]["not_made_by_the_run"], 0, "{f}");
    assert_eq!(
        f["records"]["stored_scans"], f["check_ins"],
        "the records list each check-in once: {f}"
    );
    assert!(
        f["check_ins"].as_u64() > f["check_ins_offline"].as_u64(),
        "devices scanned while the kills ran: {f}"
    );
    assert!(kepu_loadgen::failures(&serde_json::json!({ "scenarios": { "chaos": f } })).is_empty());
    db.finish().await;
}
