//! Command line and environment configuration (clap derive); `kepu-server --help` is
//! generated from these doc comments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result};

/// kepu: the offline-first backend of Hunan's "双走进" science-education programme.
///
/// Without a subcommand it serves (same as `serve`). Data lives in SQLite under
/// `--data-dir` unless `DATABASE_URL` names a PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "kepu-server", version, about, long_about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and sync (the default).
    Serve,
    /// Administer accounts and devices directly in the database.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Server configuration, from flags or environment variables.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "KEPU_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,
    /// Directory for the embedded SQLite database (created on first start).
    #[arg(long, env = "KEPU_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://FILE` or `postgres://USER@HOST/DB`.
    /// Default: the SQLite file `<data-dir>/kepu.db`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The server's signing seed as 64 hex digits. Default: generated on first start and
    /// kept in the database.
    #[arg(long, env = "KEPU_SERVER_SEED", global = true, hide_env_values = true)]
    pub server_seed: Option<String>,
    /// Seed a clearly marked sample province (idempotent) and print demo enrollment codes.
    #[arg(long, env = "KEPU_DEMO", global = true)]
    pub demo: bool,
    /// Require `Authorization: Bearer <this token>` on `GET /metrics`. Default: no token
    /// (anyone who reaches the port reads the metrics).
    #[arg(
        long,
        env = "KEPU_METRICS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Serve `GET /metrics` on this address only (e.g. `127.0.0.1:9090`), not on `--bind`.
    #[arg(long, env = "KEPU_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
    /// Engine shards: tasks that merge documents in parallel, each with its own share of
    /// the documents and of the storage work. Default: one per core, at most 16.
    #[arg(long, env = "KEPU_ENGINE_SHARDS", global = true)]
    pub engine_shards: Option<usize>,
    /// Run as an edge box at a venue: serve the venue's phones and gates on
    /// the local network and sync the venue's documents with `--upstream`, also while the
    /// upstream is unreachable.
    #[arg(long, env = "KEPU_EDGE", global = true, requires = "upstream")]
    pub edge: bool,
    /// The upstream server of an edge box, e.g. `https://kepu.example.org`.
    #[arg(long, env = "KEPU_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// The one-time enrollment code of an edge box (created upstream with `admin
    /// create-edge`); needed at the first start only.
    #[arg(long, env = "KEPU_EDGE_CODE", global = true, hide_env_values = true)]
    pub edge_code: Option<String>,
    /// Connection and attempt limits.
    #[command(flatten)]
    pub limits: ConnectionLimits,
}

/// Limits on connections and attempts per client, device and login, from flags or
/// environment variables (see the operations guide).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConnectionLimits {
    /// Seconds a client has to send a request's headers before its connection is closed.
    #[arg(
        long,
        env = "KEPU_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body, from the start of the request.
    #[arg(
        long,
        env = "KEPU_BODY_READ_TIMEOUT_SECS",
        default_value_t = 60,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub body_read_timeout_secs: u64,
    /// Open `/sync` websocket connections per device at most.
    #[arg(
        long,
        env = "KEPU_SYNC_CONNECTIONS_PER_DEVICE",
        default_value_t = 8,
        global = true
    )]
    pub sync_connections_per_device: usize,
    /// Bytes per second one `/sync` connection may send, sustained (bursts up to the 8 MiB
    /// frame limit).
    #[arg(long, env = "KEPU_SYNC_BYTES_PER_SECOND", default_value_t = 1024 * 1024, global = true)]
    pub sync_bytes_per_second: u64,
    /// Open live-dashboard event streams per user at most.
    #[arg(
        long,
        env = "KEPU_EVENT_STREAMS_PER_USER",
        default_value_t = 8,
        global = true
    )]
    pub event_streams_per_user: usize,
    /// Password checks (Argon2, 19 MiB each) running at once; further logins wait.
    #[arg(
        long,
        env = "KEPU_LOGIN_CONCURRENCY",
        default_value_t = 2,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub login_concurrency: u32,
    /// Failed logins from one client address (an IPv6 /64) before the address is locked
    /// for 5 minutes; 0 turns the per-address lock off. Behind a reverse proxy every client
    /// has the proxy's address.
    #[arg(
        long,
        env = "KEPU_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 30,
        global = true
    )]
    pub login_failures_per_address: u32,
    /// Wrong enrollment codes from one client address before the address must wait 5
    /// minutes; 0 turns the limit off.
    #[arg(
        long,
        env = "KEPU_ENROLL_FAILURES_PER_ADDRESS",
        default_value_t = 30,
        global = true
    )]
    pub enroll_failures_per_address: u32,
    /// PostgreSQL connections in this node's pool. Each node also holds one for the other
    /// nodes' notifications and one for the leader lock: allow this plus 2 per node in the
    /// database's `max_connections`. (SQLite uses 8.)
    #[arg(
        long,
        env = "KEPU_DB_CONNECTIONS",
        default_value_t = 16,
        global = true,
        value_parser = clap::value_parser!(u32).range(2..=1000)
    )]
    pub db_connections: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 60,
            sync_connections_per_device: 8,
            sync_bytes_per_second: 1024 * 1024,
            event_streams_per_user: 8,
            login_concurrency: 2,
            login_failures_per_address: 30,
            enroll_failures_per_address: 30,
            db_connections: 16,
        }
    }
}

impl Config {
    /// A configuration for the given data directory with every other option at its default.
    #[must_use]
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            server_seed: None,
            demo: false,
            metrics_token: None,
            metrics_addr: None,
            engine_shards: None,
            edge: false,
            upstream: None,
            edge_code: None,
            limits: ConnectionLimits::default(),
        }
    }

    /// The database URL to connect to; for SQLite the data directory is created.
    ///
    /// # Errors
    /// The data directory cannot be created or is not valid UTF-8.
    pub fn resolve_database_url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let file = self.data_dir.join("kepu.db");
        let path = file
            .to_str()
            .ok_or_else(|| Error::Config("data directory is not valid UTF-8".into()))?;
        Ok(format!("sqlite://{path}?mode=rwc"))
    }

    /// The configured server seed, if any.
    ///
    /// # Errors
    /// The seed is not 64 hex digits.
    pub fn parsed_server_seed(&self) -> Result<Option<[u8; 32]>> {
        let Some(text) = &self.server_seed else {
            return Ok(None);
        };
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| Error::Config("KEPU_SERVER_SEED must be 64 hex digits".into()))?;
        Ok(Some(seed))
    }
}

/// `kepu-server admin …` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a city or prefecture (市州).
    CreateCity {
        /// Its name, e.g. 长沙市.
        #[arg(long)]
        name: String,
    },
    /// Create a county or district (县市区) in a city.
    CreateCounty {
        /// The city's id.
        #[arg(long)]
        city: String,
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Create a school in a county.
    CreateSchool {
        /// The county's id.
        #[arg(long)]
        county: String,
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Create a science venue in a county.
    CreateVenue {
        /// The county's id.
        #[arg(long)]
        county: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its kind (science_museum, education_base, study_practice_base, university_lab, research_facility).
        #[arg(long, default_value = "science_museum")]
        kind: String,
    },
    /// Create a user; prints the user id and a first enrollment code.
    CreateUser {
        /// pupil, volunteer, teacher, venue-staff or bureau-admin.
        #[arg(long)]
        role: String,
        /// The school (pupils, teachers, volunteers).
        #[arg(long)]
        school: Option<String>,
        /// The venue (venue staff).
        #[arg(long)]
        venue: Option<String>,
        /// A display name (for pupils: the name the school chooses).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Create an edge box for a venue (ADR 0150): a user for it and its one-time
    /// enrollment code, to start `kepu-server --edge --upstream URL --edge-code CODE`
    /// with at the venue.
    CreateEdge {
        /// The venue's id.
        #[arg(long)]
        venue: String,
        /// Days until the code expires.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Issue a one-time enrollment code for a user.
    EnrollCode {
        /// The user's id.
        #[arg(long)]
        user: String,
        /// Days until the code expires.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Give a user (venue staff, bureau admin, teacher, volunteer) a web login for the
    /// dashboard and reports, or change it. The password is read from the environment
    /// variable `KEPU_LOGIN_PASSWORD` or else from the first line of standard input; at
    /// least 10 characters. Ends the user's browser sessions.
    SetLogin {
        /// The user's id.
        #[arg(long)]
        user: String,
        /// The login name: 3-64 characters of a-z, 0-9, '.', '_', '-'.
        #[arg(long)]
        login: String,
    },
    /// Import a school's pupils from a CSV file (`display_name`, optional `external_ref`).
    ImportPupils {
        /// The school's id.
        #[arg(long)]
        school: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// Erase a pupil's personal data (name, pass, link to the school).
    ErasePupil {
        /// The pupil's id.
        #[arg(long)]
        pupil: String,
    },
    /// Revoke a device: its token stops working at once, and a running server closes its
    /// open connections within about 5 seconds.
    RevokeDevice {
        /// The device's id.
        #[arg(long)]
        device: String,
    },
    /// List enrolled devices with their last sync and pending refusals.
    ListDevices {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
    },
    /// Set the lowest app version a role's devices may sync with (e.g. `1.4.0`), or clear
    /// it with `--clear`. A device below it is refused at connect with `app-too-old` and
    /// keeps its data until it is updated. Prints the minimum of every role.
    MinAppVersion {
        /// pupil, volunteer, teacher, venue-staff or bureau-admin.
        #[arg(long)]
        role: String,
        /// The minimum version: one to four dot-separated numbers, e.g. 1.4.0.
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        version: Option<String>,
        /// Remove the role's minimum.
        #[arg(long)]
        clear: bool,
    },
    /// Recompute every projection (bookings, check-ins, anomalies, activities) from the
    /// stored documents. Run it with the server stopped or at a quiet moment.
    RebuildProjections,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn default_limits_match_the_flags_defaults() {
        let cli = Cli::try_parse_from(["kepu-server"]).expect("no flags parse");
        assert_eq!(cli.config.limits, ConnectionLimits::default());
        let cli = Cli::try_parse_from(["kepu-server", "--sync-connections-per-device", "3"])
            .expect("a limit parses");
        assert_eq!(cli.config.limits.sync_connections_per_device, 3);
    }
}
