//! The stories' harness: a real `kepu-server` seeded through its admin CLI, phones that run
//! the phone library, web logins and the bureau's admin device.

pub mod db;
pub mod phone;
pub mod server;
pub mod web;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kepu_mobile_ffi::api::{BookingStatus, DocumentKind};
use kepu_sync_core::calendar::{china_day, china_day_start, format_date};

pub use db::Backend;
pub use phone::Phone;
pub use server::Server;
pub use web::{AdminDevice, WebLogin};

/// Password every web login in the stories gets.
pub const PASSWORD: &str = "correct horse battery";

/// `future`'s output, or `None` after `limit`.
pub async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, future).await.ok()
}

/// Polls `check` (every 100 ms) until it returns `Some`; fails naming `what` after 20 s.
///
/// # Panics
/// Nothing within 20 s.
pub async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Unix milliseconds now.
#[must_use]
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit")
}

/// A province with two schools and one science museum, its people, and a running server.
pub struct World {
    /// The server (dropped last: it kills the process and drops the database).
    pub server: Server,
    /// 博才小学, the school the stories follow.
    pub school: String,
    /// A second school that books the same slot.
    pub other_school: String,
    /// The science museum.
    pub venue: String,
    /// The county everything is in.
    pub county: String,
    /// Pupils of `school` (user ids = pseudonymous pupil ids), named `Pupil A<i>`.
    pub pupils: Vec<String>,
    /// Pupils of `other_school`.
    pub other_pupils: Vec<String>,
    /// Two teachers of `school`.
    pub teachers: [String; 2],
    /// The teacher of `other_school`.
    pub other_teacher: String,
    /// The museum's staff (the gate tablet and the dashboard).
    pub staff: String,
    /// A junior science volunteer of `school`.
    pub volunteer: String,
    /// A bureau administrator.
    pub bureau: String,
    phones: tempfile::TempDir,
}

/// Pupils seeded for `school`.
pub const PUPILS: usize = 6;

impl World {
    /// Seeds a fresh database with the admin CLI and starts the server.
    ///
    /// # Panics
    /// Any step fails.
    pub async fn start(backend: Backend) -> Self {
        let mut server = Server::new(backend);
        let admin = |args: &[&str]| server.admin(args).trim().to_owned();
        let city = admin(&["create-city", "--name", "长沙市"]);
        let county = admin(&["create-county", "--city", &city, "--name", "岳麓区"]);
        let school = admin(&["create-school", "--county", &county, "--name", "博才小学"]);
        let other_school = admin(&["create-school", "--county", &county, "--name", "第二小学"]);
        let venue = admin(&[
            "create-venue",
            "--county",
            &county,
            "--name",
            "湖南省科技馆",
        ]);
        let pupils = import_pupils(&server, &school, "A", PUPILS);
        let other_pupils = import_pupils(&server, &other_school, "B", 3);
        let user = |args: &[&str]| -> String {
            let mut full = vec!["create-user"];
            full.extend_from_slice(args);
            let out = server.admin(&full);
            out.lines()
                .find_map(|l| l.strip_prefix("user "))
                .expect("a user id")
                .trim()
                .to_owned()
        };
        let teachers = [
            user(&["--role", "teacher", "--school", &school]),
            user(&["--role", "teacher", "--school", &school]),
        ];
        let other_teacher = user(&["--role", "teacher", "--school", &other_school]);
        let staff = user(&["--role", "venue-staff", "--venue", &venue]);
        let volunteer = user(&["--role", "volunteer", "--school", &school]);
        let bureau = user(&["--role", "bureau-admin"]);
        server.start().await;
        Self {
            server,
            school,
            other_school,
            venue,
            county,
            pupils,
            other_pupils,
            teachers,
            other_teacher,
            staff,
            volunteer,
            bureau,
            phones: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A fresh one-time enrollment code for `user`.
    #[must_use]
    pub fn code(&self, user: &str) -> String {
        self.server
            .admin(&["enroll-code", "--user", user])
            .trim()
            .to_owned()
    }

    /// A new phone enrolled as `user`.
    pub async fn phone(&self, user: &str) -> Phone {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = self
            .phones
            .path()
            .join(format!("phone-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        Phone::enroll(dir, &self.server.url, &self.code(user)).await
    }

    /// Gives `user` a web login (admin CLI) and logs in with it.
    pub async fn web_login(&self, user: &str, login: &str) -> WebLogin {
        self.server.admin_with_env(
            &["set-login", "--user", user, "--login", login],
            &[("KEPU_LOGIN_PASSWORD", PASSWORD)],
        );
        WebLogin::log_in(&self.server.url, login, PASSWORD).await
    }

    /// The bureau administrator's device, enrolled over HTTP.
    pub async fn bureau_device(&self) -> AdminDevice {
        AdminDevice::enroll(&self.server.url, &self.code(&self.bureau)).await
    }

    /// The museum's gate tablet, enrolled and holding the venue's document.
    pub async fn gate(&self) -> Phone {
        let gate = self.phone(&self.staff).await;
        let venue_doc = gate
            .identity()
            .and_then(|i| i.venue_doc)
            .expect("venue doc");
        until("the venue's document on the gate", || {
            let (gate, venue_doc) = (&gate, &venue_doc);
            async move {
                gate.sync().await;
                let docs = gate.documents().expect("documents");
                docs.iter()
                    .any(|d| d.doc_id == *venue_doc && d.kind == Some(DocumentKind::Venue))
                    .then_some(())
            }
        })
        .await;
        gate
    }

    /// The gate publishes a slot of `capacity` places running now (within today, China
    /// time); returns the slot id.
    pub async fn publish_slot(&self, gate: &Phone, capacity: u32) -> String {
        let now = now_ms();
        let today = china_day_start(china_day(now));
        let start = (now - 30 * 60_000).max(today);
        let slot = gate
            .publish_slot(start, start + 4 * 3_600_000, capacity, "上午场".to_owned())
            .expect("slot published");
        gate.sync().await;
        slot
    }

    /// A teacher's booking for the first `party` pupils of `school`, confirmed by the
    /// server, with the pupils' passes; the gate holds the booking too.
    pub async fn confirmed_visit(&self, party: usize) -> Visit {
        let gate = self.gate().await;
        let slot = self.publish_slot(&gate, 40).await;
        let teacher = self.phone(&self.teachers[0]).await;
        let pupils = self.pupils[..party].to_vec();
        let booking = teacher
            .request_booking(
                self.venue.clone(),
                slot.clone(),
                u32::try_from(party).expect("small"),
                pupils.clone(),
            )
            .expect("booking requested");
        wait_for_status(&teacher, &booking, BookingStatus::Confirmed).await;
        let mut passes = Vec::new();
        for p in &pupils {
            passes.push(
                within(
                    Duration::from_secs(20),
                    teacher.fetch_pupil_pass(Some(p.clone())),
                )
                .await
                .expect("pass in time")
                .expect("pass"),
            );
        }
        gate.fetch(&booking).await;
        Visit {
            gate,
            teacher,
            booking,
            pupils,
            passes,
            day: format_date(china_day(now_ms())),
        }
    }
}

/// Syncs `phone` until `booking` has `status`.
pub async fn wait_for_status(phone: &Phone, booking: &str, status: BookingStatus) {
    until(&format!("the booking {status:?}"), || async move {
        phone.sync().await;
        (phone.booking(booking.to_owned()).expect("booking").status == status).then_some(())
    })
    .await;
}

fn import_pupils(server: &Server, school: &str, tag: &str, n: usize) -> Vec<String> {
    let csv = server.dir().join(format!("pupils-{tag}.csv"));
    let rows: String = (0..n).map(|i| format!("Pupil {tag}{i}\n")).collect();
    std::fs::write(&csv, format!("display_name\n{rows}")).expect("write CSV");
    let out = server.admin(&[
        "import-pupils",
        "--school",
        school,
        csv.to_str().expect("utf-8 path"),
    ]);
    let pupils: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" pupil "))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    assert_eq!(pupils.len(), n, "{out}");
    pupils
}

/// A confirmed visit of `school` to the museum today.
pub struct Visit {
    /// The museum's gate tablet (holds the booking).
    pub gate: Phone,
    /// The teacher's phone that booked it.
    pub teacher: Phone,
    /// The booking document.
    pub booking: String,
    /// The pupils on the roster.
    pub pupils: Vec<String>,
    /// Their passes, in roster order.
    pub passes: Vec<String>,
    /// Today, China time (`YYYY-MM-DD`).
    pub day: String,
}
