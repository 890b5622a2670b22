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
//! - [`sync`]: the websocket endpoint, the hub that drives the sync-core engine, the
//!   storage worker (batched transactions, projections, booking decisions).
//! - [`records`]: the records pipeline: projecting a document into its records (pure),
//!   the capacity decision over a slot's bookings, rebuilding every document's records.
//! - [`reports`]: programme reports per school, county and city (targets and misses).
//! - [`live`]: the live venue dashboard (change feed, snapshots of a venue-day).
//! - [`app_state`]: the state shared by handlers.
//! - [`edge`]: edge boxes at venues: the upstream's roster and relay checks, and the
//!   edge's own link to its upstream (ADR 0150).
//! - [`cluster`]: several nodes on one PostgreSQL: notifications between them and the
//!   leader that runs the work that must happen once.
//! - [`admin_cli`]: `kepu-server admin …`.
//! - [`demo`]: the clearly marked sample province seeded by `--demo`.
//! - [`demo_activity`]: a year of sample school logs, visits and volunteer hours for `--demo`.
//! - [`revocations`]: closing revoked devices' connections, whoever revoked them.
//! - [`limits`]: per-address, per-device and per-user limits (attempts, open connections);
//!   [`serve`]: the HTTP/1 accept loop with its header-read timeout.
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
pub mod cluster;
pub mod config;
pub mod demo;
pub mod demo_activity;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod http;
pub mod ids;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod records;
pub mod reports;
pub mod revocations;
pub mod serve;
pub mod store;
pub mod sync;

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
    Store::open_with(
        &url,
        config.parsed_server_seed()?,
        config.limits.db_connections,
    )
    .await
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
    // Records a crash left behind their documents are recomputed before serving.
    let reprojected = records::reproject_stale(&store).await?;
    if reprojected > 0 {
        tracing::info!(reprojected, "records recomputed after an unclean stop");
    }
    let guards = app_state::Guards::new(&config.limits, config.metrics_token.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut state = AppState::with_guards(store.clone(), guards);
    let mut hub_config = sync::HubConfig::default();
    // An edge box (ADR 0150) enrolls with its upstream first; it never leads: the
    // upstream creates the server's documents and decides capacity.
    let edge = if config.edge {
        let upstream = config
            .upstream
            .as_deref()
            .ok_or_else(|| Error::Config("--edge needs --upstream".into()))?;
        let id = edge::link::enroll(&store, upstream, config.edge_code.as_deref()).await?;
        let key = kepu_sync_core::proof::ServerPublicKey::from_base64(&id.server_key)
            .map_err(|_| Error::Config("the upstream's public key does not parse".into()))?;
        hub_config.proof_key = Some(key);
        let status = edge::state::EdgeStatus::new(id.venue, clock::now_ms());
        if store.edge_state("revoked_at").await?.is_some() {
            tracing::error!(
                "this edge box was revoked upstream: it serves nothing; its data is kept"
            );
            status.revoke();
        }
        state.leader = cluster::Leadership::never();
        Some((id, upstream.to_owned(), status))
    } else {
        // Several nodes on PostgreSQL: one leads (ADR 0120); on SQLite this one does.
        state.leader = cluster::lead(&store, stop_rx.clone());
        None
    };
    let address = listener.local_addr()?;
    if let Some(shards) = config.engine_shards {
        hub_config.engine_shards = shards.max(1);
    }
    let hub = sync::SyncHub::start(&state, &hub_config);
    cluster::listen(&state, &hub, stop_rx.clone());
    cluster::share_presence(&state, stop_rx.clone());
    if config.demo {
        let seeded = demo::seed(&state.accounts).await?;
        demo::print_welcome(&seeded, address);
    }
    // Only the leader creates the server's documents: two nodes creating the same
    // fixed-id document would hide one's map (known gap 17).
    if state.leader.settled().await {
        let created = sync::documents::ensure(&store, &hub, clock::now_ms(), config.demo).await?;
        if config.demo {
            let sample = demo_activity::seed(&store, &hub, clock::now_ms()).await?;
            tracing::info!(sample, "demo programme activity written");
        }
        if created > 0 {
            tracing::info!(created, "server documents created");
        }
    }
    sync::documents::keep_in_step(
        store.clone(),
        hub.clone(),
        state.leader.clone(),
        std::time::Duration::from_secs(2),
    );
    tokio::spawn(revocations::forward(
        state.authenticator().subscribe_revocations(),
        store.clone(),
        hub.clone(),
        revocations::SWEEP_EVERY,
    ));
    // Sync sessions end at shutdown, and on an edge box also when it is revoked.
    let sessions_stop = match &edge {
        Some((id, upstream, status)) => {
            edge::link::start(
                state.clone(),
                hub.clone(),
                id.clone(),
                upstream,
                status.clone(),
                stop_rx.clone(),
            );
            status.end_sessions_with(stop_rx.clone())
        }
        None => stop_rx,
    };
    let ctx = sync::ws::SyncContext {
        hub: hub.clone(),
        limits: sync::ws::Limits {
            bytes_per_second: config.limits.sync_bytes_per_second,
            ..sync::ws::Limits::default()
        },
        shutdown: sessions_stop,
    };
    let header_timeout = std::time::Duration::from_secs(config.limits.header_read_timeout_secs);
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    tracing::info!(%address, backend = store.backend().name(), "serving");
    let mut routes = http::app_routes(metrics_listener.is_none())
        .route("/sync", axum::routing::get(sync::ws::upgrade))
        .merge(edge::upstream::routes());
    if let Some((_, _, status)) = &edge {
        routes = routes
            .merge(edge::status::routes(status.clone()))
            .layer(axum::middleware::from_fn_with_state(
                status.clone(),
                edge::status::edge_only,
            ))
            .layer(axum::Extension(status.clone()));
    }
    let app = http::router_with(routes, state.clone()).layer(axum::Extension(ctx));
    let metrics_task = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics");
        }
        let app = http::router_with(http::metrics_routes(), state.clone());
        let mut stop = stop_tx.subscribe();
        tokio::spawn(serve::serve(listener, app, header_timeout, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    });
    serve::serve(listener, app, header_timeout, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("shutting down");
    // Sessions close on the signal; wait for them to hand back their sync states.
    for _ in 0..100 {
        if hub.connections() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    hub.flush().await;
    hub.flush().await;
    store.close().await;
    Ok(())
}
