//! Test databases (SQLite in a temp dir, PostgreSQL as a fresh database per test), a
//! test server bound to 127.0.0.1:0, and `on_both_databases!`, which runs every case of a
//! file on SQLite and on PostgreSQL.

use std::net::SocketAddr;

use kepu_server::accounts::{Accounts, Role};
use kepu_server::clock::now_ms;
use kepu_server::ids::new_id;
use kepu_server::store::NewUser;
use kepu_server::{Config, Store};
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Runs every listed case on SQLite and on PostgreSQL: it makes `mod sqlite` and
/// `mod postgres` with one test per case, named after the case, so a test reads
/// `store_suite::postgres::one_failing_storage_task_fails_only_itself`.
///
/// The word before the colon says what each case takes:
/// - `db`: `&TestDb`, a fresh database, closed after the case;
/// - `server`: `&TestServer`, a running server over a fresh database, stopped after the case;
/// - `kind`: the `Db` itself, for a case that opens its own database or server process.
///
/// Every fixture holds a `TestDb`, whose drop removes the database, so a case that panics
/// leaves no PostgreSQL database behind. `multi_thread` in front runs each case on a
/// two-thread runtime (what a case with a live server and devices needs); `blocking` makes
/// plain `#[test]`s of `fn case(Db)` cases that build their own runtime.
///
/// ```ignore
/// crate::support::on_both_databases!(db: reopening_keeps_the_server_seed, erasing_twice_changes_nothing);
/// crate::support::on_both_databases!(multi_thread server: the_snapshot_shows_what_devices_synced);
/// ```
macro_rules! on_both_databases {
    (multi_thread $fixture:ident: $($case:ident),+ $(,)?) => {
        $crate::support::on_both_databases!(
            @modules [tokio::test(flavor = "multi_thread", worker_threads = 2)] $fixture: $($case),+
        );
    };
    (blocking kind: $($case:ident),+ $(,)?) => {
        $crate::support::on_both_databases!(@modules [test] blocking: $($case),+);
    };
    ($fixture:ident: $($case:ident),+ $(,)?) => {
        $crate::support::on_both_databases!(@modules [tokio::test] $fixture: $($case),+);
    };
    (@modules [$test:meta] $fixture:ident: $($case:ident),+) => {
        mod sqlite {
            $($crate::support::on_both_databases!(@case [$test] Sqlite $fixture $case);)+
        }
        mod postgres {
            $($crate::support::on_both_databases!(@case [$test] Postgres $fixture $case);)+
        }
    };
    (@case [$test:meta] $db:ident db $case:ident) => {
        #[$test]
        async fn $case() {
            let db = $crate::support::TestDb::new($crate::support::Db::$db).await;
            super::$case(&db).await;
            db.finish().await;
        }
    };
    (@case [$test:meta] $db:ident server $case:ident) => {
        #[$test]
        async fn $case() {
            let server = $crate::support::TestServer::start($crate::support::Db::$db).await;
            super::$case(&server).await;
            server.finish().await;
        }
    };
    (@case [$test:meta] $db:ident kind $case:ident) => {
        #[$test]
        async fn $case() {
            super::$case($crate::support::Db::$db).await;
        }
    };
    (@case [$test:meta] $db:ident blocking $case:ident) => {
        #[$test]
        fn $case() {
            super::$case($crate::support::Db::$db);
        }
    };
}
pub(crate) use on_both_databases;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database that is removed when the test finishes.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

fn pg_base_url() -> String {
    std::env::var("KEPU_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `base` with its database name replaced.
fn with_database(base: &str, name: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (base, None),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let path_start = without_query[scheme_end..]
        .find('/')
        .map_or(without_query.len(), |i| i + scheme_end);
    let mut url = format!("{}/{name}", &without_query[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl TestDb {
    pub async fn new(db: Db) -> Self {
        sqlx::any::install_default_drivers();
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("kepu.db").display());
                let store = Store::open(&url, None).await.expect("open sqlite store");
                Self {
                    url,
                    store,
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Db::Postgres => {
                let admin_url = pg_base_url();
                let name = format!("kepu_test_{}", kepu_server::ids::new_id().simple());
                let mut conn = sqlx::AnyConnection::connect(&admin_url)
                    .await
                    .expect("PostgreSQL must be running (see KEPU_TEST_PG_URL)");
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let url = with_database(&admin_url, &name);
                let store = Store::open(&url, None).await.expect("open postgres store");
                Self {
                    url,
                    store,
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }

    /// The data directory of a SQLite database (`kepu.db` inside it), `None` for PostgreSQL.
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        match &self.cleanup {
            Cleanup::Dir(dir) => Some(dir.path().to_path_buf()),
            Cleanup::Postgres { .. } => None,
        }
    }

    /// A configuration that points at this database.
    pub fn config(&self) -> Config {
        let mut config = Config::with_data_dir(std::env::temp_dir());
        config.database_url = Some(self.url.clone());
        // Three engine shards whatever the machine: every test's documents spread over
        // shards, so a connection that syncs several always crosses them.
        config.engine_shards = Some(3);
        config
    }

    /// Closes the store and removes the database (dropping a `TestDb` removes it too, so
    /// a test that panics leaves no database behind).
    pub async fn finish(self) {
        self.store.close().await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A temporary directory removes itself; a PostgreSQL database is dropped from a
        // thread of its own, since this may run while a test unwinds inside a runtime.
        let Self::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .ok();
                    conn.close().await.ok();
                }
            });
        })
        .join();
    }
}

/// A small province: one city, county, school and venue.
pub struct Place {
    pub county: Uuid,
    pub school: Uuid,
    pub venue: Uuid,
}

pub async fn place(store: &Store) -> Place {
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
    Place {
        county,
        school,
        venue,
    }
}

/// A bureau administrator with `n` enrolled devices: the user and the devices' ids.
pub async fn admin_with_devices(store: &Store, n: usize) -> (Uuid, Vec<Uuid>) {
    let accounts = Accounts::new(store.clone());
    let admin = user(store, Role::BureauAdmin, None, None, None).await;
    for _ in 0..n {
        let code = accounts.issue_enrollment_code(admin, 7).await.unwrap();
        accounts.enroll(code.code.expose(), None).await.unwrap();
    }
    let devices = store
        .list_devices(Some(admin))
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    (admin, devices)
}

pub async fn user(
    store: &Store,
    role: Role,
    school: Option<Uuid>,
    venue: Option<Uuid>,
    name: Option<&str>,
) -> Uuid {
    let user = NewUser {
        id: new_id(),
        role,
        school_id: school,
        venue_id: venue,
        display_name: name.map(str::to_owned),
        external_ref: None,
    };
    store.create_user(&user, now_ms()).await.unwrap();
    user.id
}

/// A running server on 127.0.0.1:0 over a test database.
pub struct TestServer {
    pub db: TestDb,
    pub accounts: Accounts,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<kepu_server::Result<()>>>,
}

impl TestServer {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, |_| {}).await
    }

    /// A server whose configuration `configure` adjusts first (limits, metrics options).
    pub async fn start_with(db: Db, configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(db).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = db.config();
        configure(&mut config);
        let task = tokio::spawn(kepu_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let accounts = Accounts::new(db.store.clone());
        Self {
            db,
            accounts,
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Enrolls a device for `user` over HTTP; returns (device id, token).
    pub async fn enroll(&self, user: Uuid) -> (String, String) {
        let code = self.accounts.issue_enrollment_code(user, 7).await.unwrap();
        let response = self
            .http
            .post(self.url("/api/enroll"))
            .json(&serde_json::json!({ "code": code.code.expose(), "app_version": "test/1" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        (
            body["device_id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// A bureau admin's token.
    pub async fn admin_token(&self) -> String {
        let admin = user(&self.db.store, Role::BureauAdmin, None, None, None).await;
        self.enroll(admin).await.1
    }

    /// Stops the server gracefully and removes the database.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
        self.db.finish().await;
    }
}

/// Asserts the standard error shape and returns its code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"].is_string(),
        "error.message in {body}"
    );
    code
}

/// The value of `series` (a metric's name with its labels) in a `/metrics` text; 0 when
/// absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
