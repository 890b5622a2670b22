//! The live dashboard in a real headless Chromium: a venue staff member logs in through
//! the form and watches the arrived count change while devices sync check-ins, without
//! reloading; the page switches language and is photographed at phone and desktop sizes.
//! The script is `server/tests/browser/live.mjs` (playwright-core driving the system's
//! Chromium). SQLite only: the server side is covered on both databases in `live.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kepu_server::accounts::Role;
use kepu_sync_core::ids::PupilId;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::live::{Scene, set_last_sync};
use crate::support::{Db, TestServer, user};
use crate::world::check_in;

/// The colour of the arrivals chart's bars (`.chart .bar` in `live.css`).
const BAR_COLOUR: [u8; 3] = [0x3f, 0x51, 0xb5];

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

pub fn chromium() -> PathBuf {
    std::env::var_os("KEPU_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// `None` when the browser test can run; otherwise why not.
pub fn missing_prerequisite() -> Option<String> {
    if !chromium().exists() {
        return Some(format!("no Chromium at {}", chromium().display()));
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("server/tests/browser/node_modules is missing".into());
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    if node.is_none() {
        return Some("node is not installed".into());
    }
    None
}

pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub colours: usize,
    pub bar_pixels: usize,
}

pub fn look_at(path: &Path) -> Picture {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let mut colours = std::collections::HashSet::new();
    let mut bar_pixels = 0;
    for row in buf[..info.buffer_size()].chunks(info.line_size) {
        for px in row.chunks(channels).take(info.width as usize) {
            let rgb = [px[0], px[1], px[2]];
            colours.insert(rgb);
            if rgb.iter().zip(BAR_COLOUR).all(|(a, b)| a.abs_diff(b) <= 2) {
                bar_pixels += 1;
            }
        }
    }
    Picture {
        width: info.width,
        height: info.height,
        colours: colours.len(),
        bar_pixels,
    }
}

/// A TCP relay between the browser and the server whose line can be cut: every open
/// connection is dropped and new ones are closed at once until the line is back.
#[derive(Clone)]
struct Line {
    up: tokio::sync::watch::Sender<bool>,
}

impl Line {
    async fn start(server: std::net::SocketAddr) -> (Self, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let (up, _) = tokio::sync::watch::channel(true);
        let line = Self { up };
        let relay = line.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut up = relay.up.subscribe();
                if !*up.borrow_and_update() {
                    continue; // dropped: the browser sees the connection fail
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        (line, addr)
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_watch_arrivals_live_in_a_real_browser() {
    if std::env::var("KEPU_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("live_browser: skipped (KEPU_SKIP_BROWSER=1)");
        return;
    }
    if let Some(why) = missing_prerequisite() {
        panic!(
            "the browser test cannot run: {why}. Run `bash scripts/test-all.sh` (it installs \
             Chromium, Node.js and the test's npm packages) or set KEPU_SKIP_BROWSER=1."
        );
    }
    let server = TestServer::start(Db::Sqlite).await;
    let mut scene = Scene::new(&server.db.store, server.addr).await;
    scene.scan_first_arrivals(server.addr).await;
    // The teacher's phone went offline 20 minutes ago: the page opens with the band up.
    scene.teacher.disconnect();
    let teacher_id = scene.teacher.engine.config().writer.device.to_string();
    let path = scene.path();
    let mut stale = false;
    for _ in 0..100 {
        set_last_sync(
            &server.db.store,
            &teacher_id,
            kepu_server::clock::now_ms() - 20 * 60_000,
        )
        .await;
        let s = scene.enroller.get_json(&path, &scene.admin_token).await;
        if s["band"]["counts_are_lower_bounds"] == true {
            stale = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stale, "the teacher's device never showed as stale");
    // Keep the premise while the browser runs: on a loaded machine the server may finish
    // handling the phone's disconnect (and stamp its last sync) after the back-dating.
    let keep_silent = {
        let store = server.db.store.clone();
        let teacher_id = teacher_id.clone();
        tokio::spawn(async move {
            loop {
                set_last_sync(
                    &store,
                    &teacher_id,
                    kepu_server::clock::now_ms() - 20 * 60_000,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let staff_user = user(
        &server.db.store,
        Role::VenueStaff,
        None,
        Some(scene.venue),
        None,
    )
    .await;
    let (login, password) = ("gate-browser", "live-browser-pass");
    server
        .accounts
        .set_web_login(staff_user, login, password)
        .await
        .expect("set login");
    // KEPU_LIVE_SCREENSHOTS=<dir> keeps the screenshots for a person to look at.
    let temp = tempfile::tempdir().expect("temp dir");
    let shots_dir = std::env::var_os("KEPU_LIVE_SCREENSHOTS")
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);

    let (line_handle, relay) = Line::start(server.addr).await;
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join("live.mjs"))
        .arg(format!("http://{relay}"))
        .arg(login)
        .arg(password)
        .arg(scene.venue.to_string())
        .arg(&shots_dir)
        .env("KEPU_EXPECT_ARRIVED", "4")
        .env("KEPU_EXPECT_MISSING", crate::live::NAMES[2])
        .env("KEPU_CHROMIUM", chromium())
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut out = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
        }
        out
    });

    let started = Instant::now();
    let mut output = Vec::new();
    let mut synced = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await
    {
        eprintln!("live.mjs: {line}");
        if line.starts_with("READY") && !synced {
            assert_eq!(
                line, "READY arrived=3",
                "the page showed the first arrivals"
            );
            // Pupil 3 is scanned at the gate while the page is open; pupil 2 is missing.
            scene
                .staff
                .edit(scene.booking, check_in(PupilId(scene.pupils[3])).0);
            scene.staff.sync(server.addr).await;
            synced = true;
        }
        if line == "CUT" {
            let line = line_handle.clone();
            tokio::spawn(async move {
                line.set(false);
                tokio::time::sleep(Duration::from_secs(4)).await;
                line.set(true);
            });
        }
        output.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the script ends")
        .expect("exit status");
    keep_silent.abort();
    let stderr = errors.await.unwrap_or_default();
    let all = output.join("\n");
    assert!(
        status.success(),
        "live.mjs failed ({status}):\n{all}\n{stderr}"
    );
    assert!(synced, "the script never said READY:\n{all}");
    assert!(all.lines().any(|l| l == "DONE"), "{all}");
    let arrived = all
        .lines()
        .find_map(|l| l.strip_prefix("ARRIVED 4 "))
        .and_then(|ms| ms.parse::<u64>().ok())
        .expect("the page showed 4 arrived");
    eprintln!(
        "live_browser: page showed the new count {arrived} ms after READY; whole run {:?}",
        started.elapsed()
    );
    for check in [
        "uncertainty band shown",
        "missing pupil listed by name",
        "connection lost shown",
        "reconnected by itself",
        "no reload",
        "switched to English",
        "fits a phone",
        "no errors, no policy violations",
    ] {
        assert!(
            all.lines().any(|l| l == format!("CHECK {check} ok")),
            "missing check {check}:\n{all}"
        );
    }

    for (file, (w, h)) in [
        ("desktop-en.png", (1280, 800)),
        ("phone-en.png", (390, 844)),
        ("phone-zh.png", (390, 844)),
    ] {
        let p = look_at(&shots_dir.join(file));
        eprintln!(
            "live_browser: {file} {}x{}, {} colours, {} chart-bar pixels",
            p.width, p.height, p.colours, p.bar_pixels
        );
        assert_eq!((p.width, p.height), (w, h), "{file} size");
        assert!(p.colours >= 24, "{file} looks blank: {} colours", p.colours);
        assert!(
            p.bar_pixels >= 40,
            "{file}: the arrivals chart is not visible ({} bar pixels)",
            p.bar_pixels
        );
    }
    server.finish().await;
}
