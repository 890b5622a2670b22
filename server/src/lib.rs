//! kepu-server: the offline-first backend of Hunan's "双走进" science-education programme.
//!
//! Modules:
//! - [`config`]: command line and environment (clap), `--help` text.
//! - [`store`]: the relational store over SQLite or PostgreSQL (sqlx `Any`), migrations,
//!   the server signing seed; one file per concept under `store/`.
//! - [`accounts`]: roles, enrollment codes, bearer tokens, the [`Authenticator`] and its
//!   revocation broadcast, pupil CSV import, pupil erasure.
//! - [`http`]: axum routers, one per area (`health`, `prometheus`, `venues`, `enroll`,
//!   `devices`, `admin`), the JSON error shape and extractors.
//! - [`metrics`]: the Prometheus metrics the sync engine feeds.
//! - [`app_state`]: the state shared by handlers.
//! - [`admin_cli`]: `kepu-server admin …`.
//! - [`demo`]: the clearly marked sample province seeded by `--demo`.
//! - [`error`]: the crate's error type; [`clock`]: unix-millisecond time; [`ids`]: new ids.
//!
//! The binary (`main.rs`) parses the configuration, installs the tracing subscriber and
//! passes a shutdown future (Ctrl-C, SIGTERM) into [`run`].
//!
//! [`Authenticator`]: accounts::Authenticator

pub mod accounts;
pub mod admin_cli;
pub mod app_state;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod store;

use std::future::Future;

pub use app_state::AppState;
pub use config::Config;
pub use error::{Error, Result};
pub use store::Store;

/// Opens the store that `config` names: the SQLite file under the data directory unless a
/// database URL is given. Migrations are applied.
///
/// # Errors
/// The data directory, the database or the configured seed cannot be used.
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = config.resolve_database_url()?;
    Store::open(&url, config.parsed_server_seed()?).await
}

/// Serves HTTP on `listener` until `shutdown` completes, then finishes in-flight requests
/// and closes the database. With `config.demo` the sample province is seeded first and
/// its enrollment codes printed.
///
/// # Errors
/// The store cannot be opened, the demo cannot be seeded, or serving fails.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = open_store(&config).await?;
    let state = AppState::new(store.clone());
    let address = listener.local_addr()?;
    if config.demo {
        let seeded = demo::seed(&state.accounts).await?;
        demo::print_welcome(&seeded, address);
    }
    tracing::info!(%address, backend = store.backend().name(), "serving");
    let app = http::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("shutting down");
    store.close().await;
    Ok(())
}
