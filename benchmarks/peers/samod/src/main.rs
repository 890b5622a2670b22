//! A plain samod 0.16 sync server for the kepu benchmarks:
//!   kepu-bench-samod-peer <port> <storage dir>
//!
//! The same set-up as the JavaScript peer beside it (`../server.mjs`): every peer that
//! connects to `ws://127.0.0.1:<port>/` may read and write every document, nothing is
//! authenticated or validated, and no document is announced on its own. Documents are
//! kept in samod's filesystem storage (the layout of automerge-repo's NodeFS adapter).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use samod::storage::TokioFilesystemStorage;
use samod::{AcceptorHandle, PeerId, Repo, ShareConfig};

/// Frames up to this size are accepted (a device's end-of-day sync message can be large).
const MAX_FRAME: usize = 64 << 20;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(dir), None) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.get(1),
        args.get(2),
    ) else {
        eprintln!("usage: kepu-bench-samod-peer <port> <storage dir>");
        std::process::exit(2);
    };
    std::fs::create_dir_all(dir).expect("create the storage directory");

    let repo = Repo::build_tokio()
        .with_storage(TokioFilesystemStorage::new(dir))
        .with_peer_id(PeerId::from(format!("samod-peer-{}", std::process::id())))
        .with_share_policy(ShareConfig::read_write().with_announce(false))
        .load()
        .await;
    let url = url::Url::parse(&format!("ws://127.0.0.1:{port}/")).expect("url");
    let acceptor = repo.make_acceptor(url).expect("acceptor");

    let app = Router::new().route("/", get(upgrade)).with_state(acceptor);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    println!("samod listening on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .expect("serve");
    repo.stop().await;
}

async fn upgrade(ws: WebSocketUpgrade, State(acceptor): State<AcceptorHandle>) -> Response {
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            // The peer's claimed id is trusted, as with the JS peer. The repo drives the
            // connection from here on; the handle is only for observing it.
            let _ = acceptor.accept_axum(socket, None);
        })
}
