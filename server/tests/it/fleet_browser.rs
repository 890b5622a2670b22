//! The fleet page in a real headless Chromium at a phone's width: a venue's staff member
//! logs in through the form, filters the devices not synced for a week, and revokes one
//! through its confirmation; the page switches to English and is photographed. The
//! script is `server/tests/browser/fleet.mjs`. SQLite only: the server side is covered
//! on both databases in `fleet.rs`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::fleet::{Fleet, PASSWORD};
use crate::live_browser::{browser_dir, chromium, look_at, missing_prerequisite};
use crate::support::{Db, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_filter_and_revoke_a_gate_device_on_a_phone() {
    if std::env::var("KEPU_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("fleet_browser: skipped (KEPU_SKIP_BROWSER=1)");
        return;
    }
    if let Some(why) = missing_prerequisite() {
        panic!(
            "the browser test cannot run: {why}. Run `bash scripts/test-all.sh` (it installs \
             Chromium, Node.js and the test's npm packages) or set KEPU_SKIP_BROWSER=1."
        );
    }
    let server = TestServer::start(Db::Sqlite).await;
    let fleet = Fleet::new(&server).await;
    // KEPU_FLEET_SCREENSHOTS=<dir> keeps the screenshots for a person to look at.
    let temp = tempfile::tempdir().expect("temp dir");
    let shots_dir = std::env::var_os("KEPU_FLEET_SCREENSHOTS")
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let child = tokio::process::Command::new("node")
        .arg(browser_dir().join("fleet.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg("gate.staff")
        .arg(PASSWORD)
        .arg(&shots_dir)
        .env(
            "KEPU_EXPECT_ALL",
            format!("{},{}", fleet.gate.0, fleet.old_gate.0),
        )
        .env("KEPU_EXPECT_STALE", fleet.old_gate.0.to_string())
        .env("KEPU_CHROMIUM", chromium())
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the script ends within 90 s")
        .expect("the script's output");
    let all = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("fleet.mjs:\n{all}");
    assert!(out.status.success(), "fleet.mjs failed:\n{all}\n{stderr}");
    assert!(all.lines().any(|l| l == "DONE"), "{all}");
    for check in [
        "every device of the venue",
        "fits a phone",
        "filtered to the silent devices",
        "asked to confirm",
        "shown as revoked",
        "switched to English",
        "no errors, no policy violations",
        "nothing loaded from elsewhere",
    ] {
        assert!(
            all.lines().any(|l| l == format!("CHECK {check} ok")),
            "missing check {check}:\n{all}"
        );
    }
    // What the browser did, the server did: the old gate tablet is revoked, the other not.
    let device = |id| {
        let store = server.db.store.clone();
        async move { store.device(id).await.unwrap().unwrap() }
    };
    assert!(device(fleet.old_gate.0).await.revoked_at.is_some());
    assert!(device(fleet.gate.0).await.revoked_at.is_none());
    for (file, (w, h)) in [
        ("phone-zh.png", (390, 844)),
        ("phone-confirm-zh.png", (390, 844)),
        ("phone-en.png", (390, 844)),
        ("desktop-en.png", (1280, 800)),
    ] {
        let p = look_at(&shots_dir.join(file));
        assert_eq!((p.width, p.height), (w, h), "{file} size");
        assert!(p.colours >= 8, "{file} looks blank: {} colours", p.colours);
    }
    server.finish().await;
}
