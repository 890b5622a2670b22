//! Every scenario at a tiny scale against an in-process kepu-server (SQLite and
//! PostgreSQL): the devices converge, the server's records hold every check-in exactly
//! once, and bad input is refused with a clear error.

use std::net::SocketAddr;

use kepu_loadgen::{Run, Scale, Scenario, Target, TargetKind};
use kepu_server::accounts::{Accounts, Role};
use kepu_server::store::NewUser;
use kepu_server::{Config, Store};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;

enum Db {
    Sqlite,
    Postgres,
}

/// A kepu-server on 127.0.0.1:0 over a fresh database, with its own admin code.
struct Server {
    addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<kepu_server::Result<()>>>,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Server {
    async fn start(db: Db) -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.path().join("kepu.db").display()),
                None,
            ),
            Db::Postgres => {
                let admin = std::env::var("KEPU_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let name = format!("kepu_loadgen_{}", kepu_server::ids::new_id().simple());
                let mut conn = sqlx::AnyConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running (see KEPU_TEST_PG_URL)");
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                (format!("{base}/{name}"), Some((admin.clone(), name)))
            }
        };
        let store = Store::open(&url, None).await.expect("open store");
        let mut config = Config::with_data_dir(dir.path().to_path_buf());
        config.database_url = Some(url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kepu_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            store,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            pg,
        }
    }

    /// A bureau admin's one-time enrollment code, as `kepu-server admin create-user
    /// --role bureau-admin` prints it.
    async fn admin_code(&self) -> String {
        let user = NewUser {
            id: kepu_server::ids::new_id(),
            role: Role::BureauAdmin,
            school_id: None,
            venue_id: None,
            display_name: None,
            external_ref: None,
        };
        self.store
            .create_user(&user, kepu_server::clock::now_ms())
            .await
            .expect("admin user");
        Accounts::new(self.store.clone())
            .issue_enrollment_code(user.id, 1)
            .await
            .expect("admin code")
            .code
            .expose()
            .to_owned()
    }

    fn target(&self, code: String) -> Target {
        Target {
            kind: TargetKind::Kepu,
            url: format!("ws://{}/sync", self.addr),
            admin_code: Some(code),
            nodes: Vec::new(),
        }
    }

    async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
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

fn tiny() -> Scale {
    Scale {
        venues: 2,
        devices_per_venue: 2,
        check_ins: 5,
        roster: 20,
        live_venues: 2,
        live_devices_per_venue: 2,
        live_rates: vec![10, 20],
        live_step_secs: 1,
        live_sse: true,
        storm_devices: 20,
        storm_venues: 2,
        storm_window_ms: 500,
        chaos_kills: 3,
        chaos_up_ms: (300, 1200),
        chaos_down_ms: 300,
        chaos_rate: 10,
        timeout_secs: 60,
    }
}

fn assert_records(figures: &Value, expected: u64) {
    let r = &figures["records"];
    assert_eq!(r["expected_scans"], expected, "{figures}");
    assert_eq!(
        r["stored_scans"], expected,
        "the server's attendance records hold every check-in: {figures}"
    );
    assert_eq!(r["every_scan_once"], true, "{figures}");
}

async fn every_scenario(db: Db) {
    let server = Server::start(db).await;
    let run = Run {
        target: server.target(server.admin_code().await),
        scenarios: vec![
            Scenario::EndOfDay,
            Scenario::LiveDay,
            Scenario::ReconnectStorm,
        ],
        scale: tiny(),
        server_pid: Some(std::process::id()),
        progress: false,
    };
    let figures = kepu_loadgen::run(&run).await.expect("the run completes");
    let s = &figures["scenarios"];

    let eod = &s["end-of-day"];
    assert_eq!(eod["converged"], true, "end-of-day converges: {eod}");
    assert_eq!(eod["failures"], 0, "{eod}");
    assert_eq!(eod["out_of_sync"], 0, "{eod}");
    assert_eq!(
        eod["reconnects"], 0,
        "no device needed a reconnect to get its acknowledgement: {eod}"
    );
    assert_eq!(eod["check_ins"], 2 * 2 * 5);
    assert!(eod["check_ins_per_s"].as_f64().is_some_and(|r| r > 0.0));
    assert!(eod["bytes_sent"].as_u64().is_some_and(|b| b > 0));
    assert!(
        eod["devices_cpu_s"].as_f64().is_some_and(|c| c >= 0.0),
        "the devices' own CPU is reported: {eod}"
    );
    assert_records(eod, 20);

    let live = &s["live-day"];
    assert_eq!(live["failures"], 0, "{live}");
    assert_eq!(live["reconnects"], 0, "{live}");
    assert_eq!(
        live["unobserved"], 0,
        "the observers saw every check-in: {live}"
    );
    let steps = live["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for (step, sent) in steps.iter().zip([10, 20]) {
        assert_eq!(step["sent"], sent);
        assert_eq!(step["observer"]["count"], sent, "{step}");
        assert!(step["observer"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0));
    }
    assert_records(live, 30);
    // Each venue's dashboard stream shows every arrival.
    assert_eq!(live["sse"]["connected"], 2, "{live}");
    assert_eq!(live["sse"]["unshown"], 0, "{live}");
    for (step, sent) in steps.iter().zip([10, 20]) {
        assert_eq!(step["dashboard_sse"]["count"], sent, "{step}");
    }

    let storm = &s["reconnect-storm"];
    assert_eq!(storm["devices"], 20);
    assert_eq!(
        storm["in_sync"], 20,
        "every device is back in sync: {storm}"
    );
    assert_eq!(storm["failures"], 0, "{storm}");
    assert!(
        storm["server_memory"]["hwm_kb"]
            .as_u64()
            .is_some_and(|k| k > 0)
    );

    assert!(
        kepu_loadgen::failures(&figures).is_empty(),
        "{:?}",
        kepu_loadgen::failures(&figures)
    );
    let table = kepu_loadgen::table(&figures);
    assert!(table.contains("reconnects 0  out of sync 0"), "{table}");
    assert!(table.contains("end-of-day (kepu)") && table.contains("reconnect-storm (kepu)"));
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_converges_and_counts_each_check_in_once_on_sqlite() {
    every_scenario(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_converges_and_counts_each_check_in_once_on_postgres() {
    every_scenario(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_codes_and_urls_are_refused_with_a_clear_error() {
    let server = Server::start(Db::Sqlite).await;
    let run = |target: Target| Run {
        target,
        scenarios: vec![Scenario::EndOfDay],
        scale: tiny(),
        server_pid: None,
        progress: false,
    };
    let wrong = kepu_loadgen::run(&run(server.target("NOTACODE99".into())))
        .await
        .expect_err("an unknown code is refused");
    let text = format!("{wrong:#}");
    assert!(
        text.contains("enrolling the administrator device")
            && text.contains("enrollment code is invalid"),
        "{text}"
    );
    assert!(
        !text.contains("NOTACODE99"),
        "the code is not echoed: {text}"
    );

    let mut no_code = server.target(String::new());
    no_code.admin_code = None;
    let missing = kepu_loadgen::run(&run(no_code)).await.expect_err("no code");
    assert!(format!("{missing:#}").contains("--admin-code is required"));

    // A teacher's code is not an administrator's.
    let store = &server.store;
    let city = store
        .create_city(kepu_server::ids::new_id(), "长沙市")
        .await
        .expect("city");
    let county = store
        .create_county(kepu_server::ids::new_id(), city.id, "岳麓区")
        .await
        .expect("county");
    let school = store
        .create_school(kepu_server::ids::new_id(), county.id, "博才小学")
        .await
        .expect("school");
    let teacher = NewUser {
        id: kepu_server::ids::new_id(),
        role: Role::Teacher,
        school_id: Some(school.id),
        venue_id: None,
        display_name: None,
        external_ref: None,
    };
    store
        .create_user(&teacher, kepu_server::clock::now_ms())
        .await
        .expect("teacher");
    let code = Accounts::new(store.clone())
        .issue_enrollment_code(teacher.id, 1)
        .await
        .expect("code")
        .code
        .expose()
        .to_owned();
    let err = kepu_loadgen::run(&run(server.target(code)))
        .await
        .expect_err("a teacher cannot provision");
    assert!(format!("{err:#}").contains("not a bureau admin"), "{err:#}");

    let mut http = server.target(String::new());
    http.url = format!("http://{}/sync", server.addr);
    assert!(
        http.http_base()
            .expect_err("http:// is not a websocket URL")
            .to_string()
            .contains("ws://")
    );

    // A port nobody listens on: the websocket upgrade fails with a message, no panic.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let js = Target {
        kind: TargetKind::Js,
        url: format!("ws://{closed}"),
        admin_code: None,
        nodes: Vec::new(),
    };
    let err = kepu_loadgen::run(&run(js))
        .await
        .expect_err("nothing listens");
    assert!(
        format!("{err:#}").contains("websocket upgrade failed"),
        "{err:#}"
    );
    server.finish().await;
}
