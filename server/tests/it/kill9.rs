//! The real `kepu-server` binary as a child process, killed with SIGKILL while devices
//! sync their check-ins, then restarted on the same data: no change that a device saw
//! acknowledged is lost, and after a resync every device and the server agree.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kepu_server::accounts::Role;
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::ids::{PupilId, SchoolId, VenueId};
use kepu_sync_core::rules::attendance::attendance;
use kepu_sync_core::schema::booking::Booking;

use crate::support::{Db, TestDb, place};
use crate::sync_client::Device;
use crate::world::{Enroller, check_in, create_booking, new_doc, publish_slot, pupils, scan_ids};

crate::support::on_both_databases!(
    multi_thread kind: acknowledged_check_ins_survive_sigkill_mid_sync_and_devices_converge
);

/// A `kepu-server` child process; killed when dropped.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    // Keeps the unused data directory of a PostgreSQL run alive.
    _scratch: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl ServerProcess {
    /// Starts the binary on `db` (SQLite: `--data-dir` with the default database file;
    /// PostgreSQL: `DATABASE_URL`) and waits until `/readyz` answers.
    pub(crate) async fn start(db: &TestDb) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kepu-server"));
        for var in [
            "DATABASE_URL",
            "KEPU_DATA_DIR",
            "KEPU_BIND",
            "KEPU_DEMO",
            "KEPU_SERVER_SEED",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--bind")
            .arg(addr.to_string())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let scratch = match db.data_dir() {
            Some(dir) => {
                cmd.arg("--data-dir").arg(dir);
                None
            }
            None => {
                let dir = tempfile::tempdir().expect("scratch dir");
                cmd.arg("--data-dir")
                    .arg(dir.path())
                    .env("DATABASE_URL", &db.url);
                Some(dir)
            }
        };
        let child = cmd.spawn().expect("kepu-server starts");
        let mut server = Self {
            child,
            addr,
            _scratch: scratch,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
                && r.status() == 200
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kepu-server exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "kepu-server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no flush, no graceful close.
    pub(crate) fn kill9(&mut self) {
        // `Child::kill` sends SIGKILL on unix.
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reaped");
        assert!(!status.success(), "the server was killed, not stopped");
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) async fn stop_gracefully(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "graceful shutdown exits cleanly: {status}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one device did while the server was killed under it.
struct Run {
    device: Device,
    /// Scan ids in the order the device wrote them.
    made: Vec<String>,
    /// How many of `made` (a prefix) the device saw acknowledged.
    acked: usize,
}

/// Online rounds of check-ins; the server is killed while they run.
/// Devices keep scanning until the server goes away, so that the kill lands while some
/// scans are not yet acknowledged however fast the server is; this only bounds a run in
/// which the kill never comes.
const ROUNDS: usize = 400;
const PER_ROUND: usize = 3;
const OFFLINE: usize = 25;

async fn online(
    mut device: Device,
    mut made: Vec<String>,
    booking: DocumentId,
    roster: Vec<PupilId>,
    addr: SocketAddr,
    acked_total: Arc<AtomicUsize>,
) -> Run {
    let mut acked = 0;
    device.connect(addr).await;
    let note = |device: &Device, made: &[String], acked: &mut usize| {
        if device.server_has_all(&booking) && made.len() > *acked {
            acked_total.fetch_add(made.len() - *acked, Ordering::SeqCst);
            *acked = made.len();
        }
    };
    for round in 0..ROUNDS {
        if !device.online() {
            break;
        }
        for k in 0..PER_ROUND {
            let pupil = roster[(round * 7 + k * 13 + made.len()) % roster.len()];
            let (edit, id) = check_in(pupil);
            device.edit(booking, edit);
            made.push(id);
        }
        // Wait for this round's acknowledgement (a loaded machine may take a while),
        // then scan again: the scans never stop while the server lives.
        for _ in 0..10 {
            device.pump(Duration::from_millis(30)).await;
            note(&device, &made, &mut acked);
            if acked == made.len() {
                break;
            }
        }
    }
    // Keep listening until the server goes away (the kill) or everything is acknowledged.
    for _ in 0..50 {
        if !device.online() || acked == made.len() {
            break;
        }
        device.pump(Duration::from_millis(50)).await;
        note(&device, &made, &mut acked);
    }
    Run {
        device,
        made,
        acked,
    }
}

async fn acknowledged_check_ins_survive_sigkill_mid_sync_and_devices_converge(kind: Db) {
    let db = TestDb::new(kind).await;
    // Places exist before the first start, so the server creates the venue document.
    let p = place(&db.store).await;
    let (venue, school) = (VenueId(p.venue), SchoolId(p.school));
    let mut server = ServerProcess::start(&db).await;
    let enroller = Enroller::new(&db.store, server.addr);

    let mut staff = enroller
        .device(Role::VenueStaff, None, Some(p.venue), 200)
        .await;
    let slot = publish_slot(&mut staff, server.addr, venue, 500).await;
    let roster = pupils(9_000, 60);
    let booking = new_doc();
    let mut devices = vec![
        enroller
            .device(Role::Teacher, Some(p.school), None, 1)
            .await,
    ];
    devices[0].edit(booking, create_booking(venue, slot, school, roster.clone()));
    for seed in 2..4 {
        devices.push(
            enroller
                .device(Role::Teacher, Some(p.school), None, seed)
                .await,
        );
    }
    for seed in 10..13 {
        devices.push(
            enroller
                .device(Role::VenueStaff, None, Some(p.venue), seed)
                .await,
        );
    }
    for d in &mut devices {
        d.want(booking);
        d.sync(server.addr).await;
        d.sync(server.addr).await;
        assert!(
            d.doc(&booking).is_some_and(|b| Booking::read(b).is_some()),
            "every device holds the booking before going offline"
        );
        d.disconnect();
    }

    // Offline: each device scans pupils; the sets overlap, so many pupils are scanned twice.
    let mut made: Vec<Vec<String>> = Vec::new();
    for (i, d) in devices.iter_mut().enumerate() {
        let mut ids = Vec::new();
        for k in 0..OFFLINE {
            let (edit, id) = check_in(roster[(i * 9 + k) % roster.len()]);
            d.edit(booking, edit);
            ids.push(id);
        }
        made.push(ids);
    }

    // Online all at once, with more scans as they go; SIGKILL once acknowledgements flow.
    let acked_total = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = devices
        .into_iter()
        .zip(made)
        .map(|(d, m)| {
            tokio::spawn(online(
                d,
                m,
                booking,
                roster.clone(),
                server.addr,
                acked_total.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_total.load(Ordering::SeqCst) < OFFLINE * 2 {
        assert!(
            Instant::now() < deadline,
            "no device saw an acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.expect("device task"));
    }
    let acked: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.made[..r.acked].iter().cloned())
        .collect();
    let all: BTreeSet<String> = runs.iter().flat_map(|r| r.made.iter().cloned()).collect();
    assert!(!acked.is_empty());
    assert!(
        runs.iter().any(|r| r.acked < r.made.len()),
        "the kill landed in the middle of the sync (some changes were not yet acknowledged)"
    );

    // Restart on the same data. Before any device is back, every acknowledged scan is in
    // the stored document and in the records.
    let server = ServerProcess::start(&db).await;
    let stored = kepu_server::records::load(&db.store, booking)
        .await
        .expect("load the stored booking");
    let stored_ids = scan_ids(&stored);
    let lost: Vec<&String> = acked.difference(&stored_ids).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged check-ins lost by the kill (of {} acknowledged)",
        lost.len(),
        acked.len()
    );
    let recorded = recorded_scan_ids(&db, booking).await;
    let missing: Vec<&String> = acked.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged check-ins missing from the records after the restart",
        missing.len()
    );

    // Resync: every device and the server end with the same booking.
    let mut devices: Vec<Device> = runs.into_iter().map(|r| r.device).collect();
    for _ in 0..4 {
        for d in &mut devices {
            d.sync(server.addr).await;
        }
        let done = devices
            .iter()
            .all(|d| d.doc(&booking).is_some_and(|b| scan_ids(b) == all));
        if done {
            break;
        }
    }
    for d in &devices {
        let doc = d.doc(&booking).expect("booking on device");
        assert_eq!(scan_ids(doc), all, "a device holds every scan after resync");
    }
    let first = Booking::read(devices[0].doc(&booking).unwrap()).unwrap();
    for d in &devices[1..] {
        assert_eq!(
            Booking::read(d.doc(&booking).unwrap()).unwrap(),
            first,
            "all devices hold the same merged booking"
        );
    }
    let stored = kepu_server::records::load(&db.store, booking)
        .await
        .unwrap();
    assert_eq!(
        scan_ids(&stored),
        all,
        "the server stored every scan of every device"
    );
    let expected = attendance(&first, None);
    let scanned: BTreeSet<PupilId> = first.check_ins.iter().map(|s| s.pupil).collect();
    assert_eq!(expected.arrived, scanned.len(), "each pupil counted once");
    let admin = Enroller::new(&db.store, server.addr).admin_token().await;
    let path = format!("/api/bookings/{booking}/attendance");
    let mut v = serde_json::Value::Null;
    for _ in 0..100 {
        v = Enroller::new(&db.store, server.addr)
            .get_json(&path, &admin)
            .await;
        if v["scans"].as_array().map(Vec::len) == Some(all.len()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        v["scans"].as_array().map(Vec::len),
        Some(all.len()),
        "every scan is in the records"
    );
    assert_eq!(
        v["booking"]["arrived"].as_u64(),
        Some(scanned.len() as u64),
        "the records count each pupil once"
    );
    assert_eq!(
        v["scans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["counted"] == true)
            .count(),
        scanned.len()
    );
    for d in &mut devices {
        d.disconnect();
    }
    server.stop_gracefully().await;
    db.finish().await;
}

async fn recorded_scan_ids(db: &TestDb, booking: DocumentId) -> BTreeSet<String> {
    db.store
        .booking_scans(&booking.to_string())
        .await
        .expect("records")
        .into_iter()
        .map(|s| s.scan_id)
        .collect()
}
