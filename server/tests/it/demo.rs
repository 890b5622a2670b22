//! `--demo`, the README's first command: what a newcomer sees must be there. The sample
//! province is seeded, the demo logins work, the venue staff's live dashboard shows today's
//! class half arrived, the bureau's report has every sample school, and a second start adds
//! nothing twice. On SQLite and PostgreSQL.

use std::time::Duration;

use kepu_server::demo::DEMO_PASSWORD;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support::{Db, TestDb};

struct Demo {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<kepu_server::Result<()>>,
}

async fn start(db: &TestDb) -> Demo {
    let mut config = db.config();
    config.demo = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(kepu_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    Demo { addr, stop, task }
}

impl Demo {
    async fn finish(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    /// A client holding the session cookie of a demo login.
    async fn login(&self, login: &str) -> (reqwest::Client, String) {
        let http = reqwest::Client::new();
        let mut last = None;
        for _ in 0..100 {
            match http
                .post(format!("http://{}/api/session", self.addr))
                .json(&json!({ "login": login, "password": DEMO_PASSWORD }))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    let cookie = r.headers()["set-cookie"].to_str().unwrap();
                    let cookie = cookie.split(';').next().unwrap().to_owned();
                    return (http, cookie);
                }
                other => last = Some(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("demo login {login} failed: {last:?}");
    }
}

async fn get(http: &reqwest::Client, cookie: &str, url: String) -> Value {
    let r = http.get(url).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    for _ in 0..150 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn the_demo_shows_a_live_class_and_full_reports(db: Db) {
    let db = TestDb::new(db).await;
    let demo = start(&db).await;
    let (staff, cookie) = demo.login("demo-staff").await;
    let me = get(&staff, &cookie, format!("http://{}/api/session", demo.addr)).await;
    let venue = me["venue_id"].as_str().unwrap().to_owned();
    assert_eq!(me["home"], format!("/venues/{venue}/live"));
    let live_url = format!("http://{}/api/venues/{venue}/live", demo.addr);
    let live = eventually("today's demo class on the dashboard", async || {
        let v = get(&staff, &cookie, live_url.clone()).await;
        (v["totals"]["arrived"] == 6 && v["totals"]["expected"] == 10).then_some(v)
    })
    .await;
    assert_eq!(live["totals"]["inside"], 6, "{live}");

    let (admin, admin_cookie) = demo.login("demo-admin").await;
    let report_url = format!("http://{}/api/reports/schools", demo.addr);
    let report = eventually("every sample school in the report", async || {
        let v = get(&admin, &admin_cookie, report_url.clone()).await;
        let rows = v["rows"].as_array()?;
        (rows.len() == 3 && rows.iter().all(|r| r["sessions"].as_i64() > Some(0))).then_some(v)
    })
    .await;
    let visits: i64 = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["venue_visits"].as_i64().unwrap())
        .sum();
    assert!(visits >= 2, "{report}");
    demo.finish().await;

    // A second start over the same database adds nothing twice.
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT CAST(COUNT(*) AS BIGINT) FROM documents")
            .fetch_one(db.store.pool())
            .await
            .unwrap()
    };
    let before = count().await;
    let demo = start(&db).await;
    let (staff, cookie) = demo.login("demo-staff").await;
    let live_url = format!("http://{}/api/venues/{venue}/live", demo.addr);
    let again = get(&staff, &cookie, live_url).await;
    assert_eq!(
        (&again["totals"]["expected"], &again["totals"]["arrived"]),
        (&json!(10), &json!(6)),
        "{again}"
    );
    demo.finish().await;
    assert_eq!(
        count().await,
        before,
        "a restart of --demo created documents again"
    );
    db.finish().await;
}

crate::support::on_both_databases!(multi_thread kind: the_demo_shows_a_live_class_and_full_reports);
