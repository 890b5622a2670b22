//! The database a story's server runs on: SQLite in the server's data directory, or a
//! fresh PostgreSQL database that is dropped when the story ends, also when it panics.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor};

/// Which database a story runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file under `--data-dir`.
    Sqlite,
    /// A PostgreSQL database of its own (`KEPU_TEST_PG_URL` names the server).
    Postgres,
}

/// A story's database; dropping it drops a PostgreSQL database.
pub struct Database {
    /// `--database-url` for PostgreSQL; `None` for SQLite (the server's data directory).
    pub url: Option<String>,
    postgres: Option<(String, String)>,
}

fn pg_base_url() -> String {
    std::env::var("KEPU_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (without_query, query) = base
        .split_once('?')
        .map_or((base, None), |(a, q)| (a, Some(q)));
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

/// Runs one statement on the PostgreSQL server, on a thread and runtime of its own, so it
/// works from `Drop` inside a test's runtime.
fn pg_execute(admin_url: &str, statement: String) -> Result<(), String> {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .map_err(|e| format!("PostgreSQL must be running (KEPU_TEST_PG_URL): {e}"))?;
            let result = conn.execute(sqlx::AssertSqlSafe(statement)).await;
            conn.close().await.ok();
            result.map(|_| ()).map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the PostgreSQL thread panicked".to_owned())?
}

impl Database {
    /// A fresh, empty database.
    ///
    /// # Panics
    /// PostgreSQL is not reachable.
    #[must_use]
    pub fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self {
                url: None,
                postgres: None,
            },
            Backend::Postgres => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!(
                    "kepu_story_{}_{}_{nanos}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let admin = pg_base_url();
                pg_execute(&admin, format!("CREATE DATABASE {name}")).expect("create database");
                Self {
                    url: Some(with_database(&admin, &name)),
                    postgres: Some((admin, name)),
                }
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take()
            && let Err(e) = pg_execute(
                &admin,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
        {
            eprintln!("could not drop the story's database: {e}");
        }
    }
}
