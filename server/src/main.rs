//! `kepu-server`: parses the configuration, installs the tracing subscriber, and runs the
//! server (or an admin subcommand) with Ctrl-C / SIGTERM as the shutdown signal.

use std::process::ExitCode;

use clap::Parser;
use kepu_server::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let result = match cli.command {
        None | Some(Command::Serve) => serve(cli.config).await,
        Some(Command::Admin(command)) => {
            kepu_server::admin_cli::execute(&cli.config, command, &mut std::io::stdout()).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kepu-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: kepu_server::Config) -> kepu_server::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    kepu_server::run(config, listener, shutdown_signal()).await
}

/// Completes on Ctrl-C or, on unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
