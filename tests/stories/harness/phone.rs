//! A phone or gate tablet: the phone library's `KepuClient` with its own store directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kepu_mobile_ffi::api::{ApiError, KepuClient, Roster, SyncReport};

use super::within;

/// One install of the app.
pub struct Phone {
    /// The library's API, as Kotlin and Swift see it.
    pub app: Arc<KepuClient>,
    dir: PathBuf,
    server_url: String,
}

impl std::ops::Deref for Phone {
    type Target = KepuClient;
    fn deref(&self) -> &KepuClient {
        &self.app
    }
}

impl Phone {
    /// Opens a new install in `dir` for the server at `server_url` and enrolls it with a
    /// one-time code (the server's key comes with the enrollment).
    ///
    /// # Panics
    /// Enrollment fails.
    pub async fn enroll(dir: PathBuf, server_url: &str, code: &str) -> Self {
        let app = KepuClient::open(dir.display().to_string(), server_url.to_owned(), None)
            .expect("open the store");
        within(Duration::from_secs(30), app.enroll(code.to_owned()))
            .await
            .expect("enrollment in time")
            .expect("enrolled");
        Self {
            app,
            dir,
            server_url: server_url.to_owned(),
        }
    }

    /// The app is closed and opened again on the same store (a phone restart).
    ///
    /// # Panics
    /// The store cannot be opened.
    #[must_use]
    pub fn reopen(self) -> Self {
        let Self {
            app,
            dir,
            server_url,
        } = self;
        drop(app);
        let app = KepuClient::open(dir.display().to_string(), server_url.clone(), None)
            .expect("reopen the store");
        Self {
            app,
            dir,
            server_url,
        }
    }

    /// This device's id.
    ///
    /// # Panics
    /// Not enrolled.
    #[must_use]
    pub fn device_id(&self) -> String {
        self.app.identity().expect("enrolled").device_id
    }

    /// `sync_now`, with a deadline.
    ///
    /// # Errors
    /// What `sync_now` returns.
    ///
    /// # Panics
    /// No answer within 30 s.
    pub async fn try_sync(&self) -> Result<SyncReport, ApiError> {
        within(Duration::from_secs(30), self.app.sync_now())
            .await
            .expect("sync_now answered within 30 s")
    }

    /// `sync_now`, which must succeed with nothing refused.
    ///
    /// # Panics
    /// It fails or something is refused.
    pub async fn sync(&self) -> SyncReport {
        let report = self.try_sync().await.expect("sync");
        assert_eq!(
            report.refused,
            0,
            "nothing refused: {:?}",
            self.app.sync_status()
        );
        report
    }

    /// Asks for a shared document and syncs it here.
    ///
    /// # Panics
    /// Malformed id or sync failure.
    pub async fn fetch(&self, doc: &str) {
        self.app.add_document(doc.to_owned()).expect("add document");
        self.sync().await;
    }

    /// The roster of a booking held here.
    ///
    /// # Panics
    /// Not held.
    #[must_use]
    pub fn roster_of(&self, booking: &str) -> Roster {
        self.app.roster(booking.to_owned()).expect("roster")
    }

    /// Local changes the server has not acknowledged.
    ///
    /// # Panics
    /// Storage failure.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.app.sync_status().expect("status").pending_changes
    }

    /// Scans a pupil's pass (offline) and checks them in.
    ///
    /// # Panics
    /// The pass is refused.
    pub fn scan(&self, booking: &str, pass: &str) -> bool {
        self.app
            .scan_pupil_pass(booking.to_owned(), pass.to_owned())
            .expect("pass accepted")
            .already_counted
    }

    /// Checks a pupil out (offline).
    ///
    /// # Panics
    /// Refused.
    pub fn check_out_pupil(&self, booking: &str, pupil: &str) {
        self.app
            .check_out(booking.to_owned(), Some(pupil.to_owned()))
            .expect("checked out");
    }
}
