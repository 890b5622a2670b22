//! The phone's client core against a real kepu-server (SQLite and PostgreSQL) over real
//! websockets: what happens to local data when the server does not accept the device,
//! and copies of one store syncing under one device.

use std::net::SocketAddr;
use std::sync::Arc;

use kepu_mobile_ffi::client::core::Core;
use kepu_mobile_ffi::client::error::Error;
use kepu_mobile_ffi::client::net::{Until, connect_and_sync};
use kepu_server::accounts::{Accounts, Role};
use kepu_server::store::NewUser;
use kepu_server::{Config, Store};
use kepu_sync_core::doc_id::DocumentId;
use kepu_sync_core::edits::Edit;
use kepu_sync_core::ids::{DeviceId, PupilId, SlotId, VenueId};
use kepu_sync_core::schema::booking::{Booking, ScanMethod};
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

/// A kepu-server on 127.0.0.1:0 over a fresh database with one school and one venue.
struct Server {
    addr: SocketAddr,
    store: Store,
    school: Uuid,
    venue: Uuid,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<kepu_server::Result<()>>>,
    _dir: TempDir,
    pg: Option<(String, String)>,
}

impl Server {
    async fn start(db: Db) -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.path().join("kepu.db").display()),
                None,
            ),
            Db::Postgres => {
                let admin = std::env::var("KEPU_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let name = format!("kepu_phone_{}", kepu_server::ids::new_id().simple());
                let mut conn = sqlx::AnyConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running (see KEPU_TEST_PG_URL)");
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap();
                conn.close().await.ok();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                (format!("{base}/{name}"), Some((admin.clone(), name)))
            }
        };
        let store = Store::open(&url, None).await.unwrap();
        // Places exist before the server starts, so it creates the venue document.
        let new_id = kepu_server::ids::new_id;
        let city = store.create_city(new_id(), "长沙市").await.unwrap().id;
        let county = store
            .create_county(new_id(), city, "岳麓区")
            .await
            .unwrap()
            .id;
        let school = store
            .create_school(new_id(), county, "博才小学")
            .await
            .unwrap()
            .id;
        let venue = store
            .create_venue(new_id(), county, "湖南省科技馆", "science_museum")
            .await
            .unwrap()
            .id;
        let mut config = Config::with_data_dir(dir.path().to_path_buf());
        config.database_url = Some(url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kepu_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            school,
            venue,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            pg,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A one-time enrollment code for a new user of `role` (teachers at the school,
    /// staff at the venue).
    async fn code(&self, role: Role) -> String {
        let user = NewUser {
            id: kepu_server::ids::new_id(),
            role,
            school_id: (role == Role::Teacher).then_some(self.school),
            venue_id: (role == Role::VenueStaff).then_some(self.venue),
            display_name: None,
            external_ref: None,
        };
        self.store
            .create_user(&user, kepu_server::clock::now_ms())
            .await
            .unwrap();
        Accounts::new(self.store.clone())
            .issue_enrollment_code(user.id, 1)
            .await
            .unwrap()
            .code
            .expose()
            .to_owned()
    }

    /// A phone enrolled as `role` with its store in `dir`.
    async fn phone(&self, role: Role, dir: &std::path::Path) -> Arc<Core> {
        let core = Arc::new(Core::open(dir, &self.url(), None).unwrap());
        core.enroll(&self.code(role).await).await.unwrap();
        core
    }

    /// A venue slot published by staff and a booking requested by a teacher for
    /// `roster`; returns the booking document.
    async fn booking(&self, roster: &[PupilId]) -> DocumentId {
        let staff_dir = tempfile::tempdir().unwrap();
        let staff = self.phone(Role::VenueStaff, staff_dir.path()).await;
        let venue_doc = DocumentId::from_bytes(*self.venue.as_bytes());
        sync(&staff).await;
        assert!(
            staff.read(&venue_doc, |_| ()).unwrap().is_some(),
            "venue document"
        );
        let slot = SlotId(new_v7());
        let start = kepu_server::clock::now_ms() + 3_600_000;
        staff
            .edit(
                venue_doc,
                Edit::PutSlot {
                    slot,
                    start,
                    end: start + 7_200_000,
                    capacity: 200,
                    label: "课后".into(),
                },
            )
            .unwrap();
        sync(&staff).await;
        let teacher_dir = tempfile::tempdir().unwrap();
        let teacher = self.phone(Role::Teacher, teacher_dir.path()).await;
        let doc = teacher
            .request_booking(
                &VenueId(self.venue).to_string(),
                &slot.to_string(),
                u32::try_from(roster.len()).unwrap(),
                &roster.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .unwrap();
        sync(&teacher).await;
        assert_eq!(teacher.status().unwrap().pending_changes, 0);
        doc
    }

    /// The check-ins of `doc` as a new teacher's phone fetches them from the server.
    async fn scan_ids_on_server(&self, doc: DocumentId) -> std::collections::BTreeSet<String> {
        let dir = tempfile::tempdir().unwrap();
        let fresh = self.phone(Role::Teacher, dir.path()).await;
        fresh.want(doc).unwrap();
        sync(&fresh).await;
        scan_ids(&fresh, doc)
    }

    async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.store.close().await;
        if let Some((admin, name)) = self.pg.take()
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await
        {
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await
            .ok();
        }
    }
}

async fn sync(core: &Arc<Core>) {
    connect_and_sync(core, Until::Synced, None).await.unwrap();
}

fn new_v7() -> Uuid {
    kepu_sync_core::ids::uuid_v7(
        kepu_mobile_ffi::client::core::now_ms(),
        kepu_mobile_ffi::client::core::random(),
    )
}

fn pupils(n: u128) -> Vec<PupilId> {
    (0..n)
        .map(|i| {
            PupilId(Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_1000 + i,
            ))
        })
        .collect()
}

/// A manual check-in by the teacher; returns its scan id.
fn check_in(core: &Core, doc: DocumentId, pupil: PupilId) -> String {
    let scan_id = new_v7().to_string();
    core.edit(
        doc,
        Edit::CheckIn {
            pupil,
            scan_id: scan_id.clone(),
            method: ScanMethod::Manual,
            proof: None,
        },
    )
    .unwrap();
    scan_id
}

fn scan_ids(core: &Core, doc: DocumentId) -> std::collections::BTreeSet<String> {
    core.read(&doc, |d| {
        Booking::read(d)
            .map(|b| b.check_ins.into_iter().map(|s| s.scan_id).collect())
            .unwrap_or_default()
    })
    .unwrap()
    .unwrap_or_default()
}

/// A teacher's phone in `dir` holding `doc`, with `n` check-ins made offline.
async fn teacher_with_offline_check_ins(
    server: &Server,
    dir: &std::path::Path,
    doc: DocumentId,
    roster: &[PupilId],
) -> (DeviceId, Vec<String>) {
    let core = server.phone(Role::Teacher, dir).await;
    core.want(doc).unwrap();
    sync(&core).await;
    let made: Vec<String> = roster.iter().map(|p| check_in(&core, doc, *p)).collect();
    assert_eq!(core.status().unwrap().pending_changes, roster.len() as u64);
    (core.identity().unwrap().unwrap().device, made)
}

fn assert_kept(core: &Core, doc: DocumentId, made: &[String]) {
    assert!(core.identity().unwrap().is_some(), "the identity is kept");
    assert!(!core.status().unwrap().revoked);
    let held = scan_ids(core, doc);
    assert!(
        made.iter().all(|s| held.contains(s)),
        "every check-in is kept"
    );
    assert_eq!(core.status().unwrap().pending_changes, made.len() as u64);
}

async fn unknown_token_keeps_data_and_revocation_wipes(db: Db) {
    let server = Server::start(db).await;
    let roster = pupils(3);
    let doc = server.booking(&roster).await;
    let dir = tempfile::tempdir().unwrap();
    let (device, made) = teacher_with_offline_check_ins(&server, dir.path(), doc, &roster).await;

    // A second server that never saw this device (restored from an older backup).
    let other = Server::start(db).await;
    let core = Arc::new(Core::open(dir.path(), &other.url(), None).unwrap());
    let err = connect_and_sync(&core, Until::Synced, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Auth(c) if c == "invalid_token"),
        "{err:?}"
    );
    assert_kept(&core, doc, &made);
    drop(core);
    other.finish().await;

    // Back at its own server everything arrives.
    let core = Arc::new(Core::open(dir.path(), &server.url(), None).unwrap());
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
    let on_server = server.scan_ids_on_server(doc).await;
    assert!(made.iter().all(|s| on_server.contains(s)));

    // Revoked for real: the explicit answer wipes the phone.
    assert!(
        Accounts::new(server.store.clone())
            .authenticator()
            .revoke(device)
            .await
            .unwrap()
    );
    let err = connect_and_sync(&core, Until::Synced, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Revoked), "{err:?}");
    assert!(core.identity().unwrap().is_none());
    assert!(core.status().unwrap().revoked);
    assert_eq!(core.store_count("changes").unwrap(), 0);
    drop(core);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_unknown_token_keeps_the_phones_data_and_only_revocation_wipes() {
    unknown_token_keeps_data_and_revocation_wipes(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_unknown_token_keeps_the_phones_data_and_only_revocation_wipes() {
    unknown_token_keeps_data_and_revocation_wipes(Db::Postgres).await;
}

/// Copies the store files of `from` into a new directory (a backup restored elsewhere).
fn copy_store(from: &std::path::Path) -> TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("kepu.sqlite3") && !name.ends_with(".lock") {
            std::fs::copy(entry.path(), to.path().join(&name)).unwrap();
        }
    }
    to
}

async fn copies_of_one_store_lose_nothing(db: Db) {
    let server = Server::start(db).await;
    let roster = pupils(12);
    let doc = server.booking(&roster).await;
    let dir_a = tempfile::tempdir().unwrap();
    // One check-in synced before the copy, so both copies continue one history.
    let (_, mut made) =
        teacher_with_offline_check_ins(&server, dir_a.path(), doc, &roster[..1]).await;
    let url = server.url();
    sync(&Arc::new(Core::open(dir_a.path(), &url, None).unwrap())).await;
    let dir_b = copy_store(dir_a.path());
    let dir_c = copy_store(dir_a.path());
    let a = Arc::new(Core::open(dir_a.path(), &url, None).unwrap());
    let b = Arc::new(Core::open(dir_b.path(), &url, None).unwrap());
    // Offline, each copy checks pupils in; the third copy is reopened between its scans.
    for p in &roster[1..4] {
        made.push(check_in(&a, doc, *p));
    }
    for p in &roster[4..7] {
        made.push(check_in(&b, doc, *p));
    }
    for p in &roster[7..10] {
        let c = Arc::new(Core::open(dir_c.path(), &url, None).unwrap());
        made.push(check_in(&c, doc, *p));
    }
    let c = Arc::new(Core::open(dir_c.path(), &url, None).unwrap());
    for _ in 0..2 {
        for core in [&a, &b, &c] {
            sync(core).await;
        }
    }
    for core in [&a, &b, &c] {
        let status = core.status().unwrap();
        assert_eq!(status.pending_changes, 0, "{status:?}");
        assert!(status.refusals.is_empty(), "{:?}", status.refusals);
        assert_eq!(scan_ids(core, doc).len(), made.len());
    }
    let on_server = server.scan_ids_on_server(doc).await;
    let missing: Vec<&String> = made.iter().filter(|s| !on_server.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} check-ins missing",
        missing.len(),
        made.len()
    );
    drop((a, b, c));
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_copies_of_one_store_scan_offline_and_every_check_in_reaches_the_server() {
    copies_of_one_store_lose_nothing(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_copies_of_one_store_scan_offline_and_every_check_in_reaches_the_server() {
    copies_of_one_store_lose_nothing(Db::Postgres).await;
}

/// A teacher's phone with check-ins made offline meets a minimum app version above its
/// own: refused with `app-too-old` and the minimum, it keeps every check-in, and once
/// the app is updated they all reach the server.
async fn an_old_app_keeps_its_work_and_syncs_it_once_updated(db: Db) {
    let server = Server::start(db).await;
    let roster = pupils(3);
    let doc = server.booking(&roster).await;
    let dir = tempfile::tempdir().unwrap();
    let (device, made) = teacher_with_offline_check_ins(&server, dir.path(), doc, &roster).await;
    let now = kepu_mobile_ffi::client::core::now_ms();
    kepu_server::fleet::set_minimum(&server.store, Role::Teacher, Some("99.0"), now)
        .await
        .unwrap();

    let core = Arc::new(Core::open(dir.path(), &server.url(), None).unwrap());
    for _ in 0..2 {
        let err = connect_and_sync(&core, Until::Synced, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::AppTooOld { minimum } if minimum == "99.0"),
            "{err:?}"
        );
        assert_kept(&core, doc, &made);
    }
    // The server knows what the phone runs and what waits on it, and did not revoke it.
    let seen = server.store.fleet_device(device.0).await.unwrap().unwrap();
    assert_eq!(seen.app_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(seen.pending_changes, Some(made.len() as i64));
    assert_eq!(seen.revoked_at, None);
    // At the FFI it is its own error with the minimum, which touches nothing.
    let api: kepu_mobile_ffi::api::ApiError = Error::AppTooOld {
        minimum: "99.0".into(),
    }
    .into();
    assert!(
        matches!(&api, kepu_mobile_ffi::api::ApiError::AppTooOld { minimum } if minimum == "99.0"),
        "{api:?}"
    );

    // Updated: everything that waited is sent.
    assert!(core.set_app_version("").is_err());
    assert!(core.set_app_version(&"9".repeat(65)).is_err());
    core.set_app_version("99.0.1").unwrap();
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
    sync(&core).await;
    let seen = server.store.fleet_device(device.0).await.unwrap().unwrap();
    assert_eq!(seen.app_version.as_deref(), Some("99.0.1"));
    assert_eq!(seen.pending_changes, Some(0));
    drop(core);
    // A fresh phone to read the server's copy: the teachers' minimum no longer matters.
    kepu_server::fleet::set_minimum(&server.store, Role::Teacher, None, now)
        .await
        .unwrap();
    let on_server = server.scan_ids_on_server(doc).await;
    assert!(made.iter().all(|s| on_server.contains(s)));
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_app_below_the_minimum_keeps_its_check_ins_and_syncs_them_once_updated() {
    an_old_app_keeps_its_work_and_syncs_it_once_updated(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_app_below_the_minimum_keeps_its_check_ins_and_syncs_them_once_updated() {
    an_old_app_keeps_its_work_and_syncs_it_once_updated(Db::Postgres).await;
}

/// Known gap 29, ADR 0172: a teacher's phone whose token was rotated from the fleet page
/// goes on checking pupils in, is refused (and keeps everything), then takes the reconnect
/// code an administrator made for it: the same device, a new token, and every check-in,
/// written under the actor id the server already knows as this device's, lands.
async fn a_rotated_phone_reconnects_with_its_code_and_loses_nothing(db: Db) {
    let server = Server::start(db).await;
    let roster = pupils(4);
    let doc = server.booking(&roster).await;
    let dir = tempfile::tempdir().unwrap();
    let core = server.phone(Role::Teacher, dir.path()).await;
    core.want(doc).unwrap();
    sync(&core).await;
    // One check-in synced while the token worked: the server knows this actor id.
    let mut made = vec![check_in(&core, doc, roster[0])];
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
    let identity = core.identity().unwrap().unwrap();
    let accounts = Accounts::new(server.store.clone());
    assert!(accounts.rotate_token_away(identity.device).await.unwrap());
    // Locked out: more check-ins, kept.
    made.extend(roster[1..].iter().map(|p| check_in(&core, doc, *p)));
    let err = connect_and_sync(&core, Until::Synced, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Auth(c) if c == "invalid_token"),
        "{err:?}"
    );
    assert_eq!(core.status().unwrap().pending_changes, 3);
    // A code that is not this device's changes nothing.
    let err = core
        .reenroll("not-a-code-of-this-device")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected(c) if c == "invalid_enrollment_code"),
        "{err:?}"
    );
    let other_user = server.code(Role::Teacher).await;
    let err = core.reenroll(&other_user).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected(_)),
        "an enrollment code is no reconnect code"
    );
    assert_eq!(core.identity().unwrap().unwrap().token, identity.token);
    // The administrator's reconnect code.
    let code = accounts
        .issue_device_code(identity.device, 7)
        .await
        .unwrap();
    let back = core.reenroll(code.code.expose()).await.unwrap();
    assert_eq!(back.device, identity.device);
    assert_eq!(back.actor, identity.actor);
    assert_ne!(back.token, identity.token);
    sync(&core).await;
    assert_eq!(core.status().unwrap().pending_changes, 0);
    let on_server = server.scan_ids_on_server(doc).await;
    assert!(
        made.iter().all(|s| on_server.contains(s)),
        "every check-in landed"
    );
    // The new token survives a restart of the app.
    drop(core);
    let reopened = Arc::new(Core::open(dir.path(), &server.url(), None).unwrap());
    assert_eq!(reopened.identity().unwrap().unwrap().token, back.token);
    sync(&reopened).await;
    drop(reopened);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rotated_phone_reconnects_with_its_code_and_loses_nothing() {
    a_rotated_phone_reconnects_with_its_code_and_loses_nothing(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rotated_phone_reconnects_with_its_code_and_loses_nothing() {
    a_rotated_phone_reconnects_with_its_code_and_loses_nothing(Db::Postgres).await;
}
