//! The real `kepu-server` binary: found or built once, administered with its admin CLI,
//! started on a free port, killed and started again on the same data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::db::{Backend, Database};

/// How long a server may take to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The `kepu-server` binary: `KEPU_SERVER`, else built once per test process with
/// `$CARGO build --locked -p kepu-server` into the target directory.
///
/// # Panics
/// The build fails.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("KEPU_SERVER") {
            return PathBuf::from(path);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the stories crate sits in the workspace")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--locked", "-p", "kepu-server"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p kepu-server failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), PathBuf::from);
        let target = if target.is_relative() {
            workspace.join(target)
        } else {
            target
        };
        target.join("debug").join("kepu-server")
    })
}

/// A free local port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One server: its data directory (SQLite file, CSV files, log), its database and, while
/// it runs, its process. Dropping it kills the process and drops the database.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    process: Option<Child>,
    dir: tempfile::TempDir,
    db: Database,
}

impl Server {
    /// A server over a fresh database, not started yet (seed it with [`Server::admin`]).
    #[must_use]
    pub fn new(backend: Backend) -> Self {
        let port = free_port();
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            process: None,
            dir: tempfile::tempdir().expect("temp dir"),
            db: Database::create(backend),
        }
    }

    /// The data directory (files for the admin CLI go here too).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self) -> Command {
        let mut c = Command::new(binary());
        for var in [
            "DATABASE_URL",
            "KEPU_BIND",
            "KEPU_DATA_DIR",
            "KEPU_DEMO",
            "KEPU_SERVER_SEED",
            "KEPU_LOGIN_PASSWORD",
        ] {
            c.env_remove(var);
        }
        c.arg("--data-dir").arg(self.dir.path());
        if let Some(url) = &self.db.url {
            c.arg("--database-url").arg(url);
        }
        c
    }

    /// Runs `kepu-server admin <args>` on this server's database; returns its stdout.
    ///
    /// # Panics
    /// The command fails.
    pub fn admin(&self, args: &[&str]) -> String {
        self.admin_with_env(args, &[])
    }

    /// As [`Server::admin`] with extra environment variables.
    ///
    /// # Panics
    /// The command fails.
    pub fn admin_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut c = self.command();
        c.arg("admin").args(args).stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run kepu-server admin");
        assert!(
            out.status.success(),
            "admin {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Starts the server on its port and waits until `/readyz` answers 200.
    ///
    /// # Panics
    /// It exits or is not ready in time.
    pub async fn start(&mut self) {
        assert!(self.process.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let child = self
            .command()
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kepu-server");
        self.process = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self
                .process
                .as_mut()
                .and_then(|p| p.try_wait().ok().flatten())
            {
                panic!("kepu-server exited ({status}): {}", self.log_tail());
            }
            let ready = http
                .get(format!("{}/readyz", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kepu-server not ready: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process outright (SIGKILL: no graceful shutdown, nothing flushed).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// The end of the server's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- kepu-server log (end) ---\n{}", self.log_tail());
        }
    }
}
