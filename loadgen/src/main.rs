//! `kepu-loadgen`: see the library documentation and `docs/performance.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kepu_loadgen::chaos::ServerSpec;
use kepu_loadgen::{Run, Scale, Scenario, Target, TargetKind};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Kepu,
    Js,
}

/// Plays many kepu devices against kepu-server or a JavaScript automerge-repo peer.
#[derive(Debug, Parser)]
#[command(name = "kepu-loadgen", version, about)]
struct Args {
    /// Which server: `kepu` (kepu-server, authenticated) or `js` (automerge-repo).
    /// Not for `chaos`, which starts kepu-server itself.
    #[arg(long)]
    target: Option<TargetArg>,
    /// Websocket URL: `ws://127.0.0.1:PORT/sync` for kepu, `ws://127.0.0.1:PORT` for js.
    /// Not for `chaos`.
    #[arg(long)]
    url: Option<String>,
    /// Another node of the same kepu server (several kepu-server processes on one
    /// PostgreSQL database), as a websocket URL; may be given more than once. Devices
    /// are spread over --url and these; in live-day the observers connect to the last
    /// node and the writers to the others, so the observer figures are the time from a
    /// check-in stored by one node to a device on another.
    #[arg(long = "node-url")]
    node_url: Vec<String>,
    /// A bureau admin's one-time enrollment code (kepu; from
    /// `kepu-server admin create-user --role bureau-admin`).
    #[arg(long, env = "KEPU_LOADGEN_ADMIN_CODE", hide_env_values = true)]
    admin_code: Option<String>,
    /// Scenarios to run, in order (default: end-of-day, live-day, reconnect-storm;
    /// `chaos` runs alone).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Small sizes: the whole run takes well under two minutes.
    #[arg(long)]
    quick: bool,
    /// The server's process id, to report its memory (VmRSS, VmHWM).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// end-of-day: venues.
    #[arg(long)]
    venues: Option<usize>,
    /// end-of-day: staff devices per venue.
    #[arg(long)]
    devices_per_venue: Option<usize>,
    /// end-of-day: offline check-ins per device.
    #[arg(long)]
    check_ins: Option<usize>,
    /// end-of-day: pupils per booking roster.
    #[arg(long)]
    roster: Option<usize>,
    /// live-day: venues.
    #[arg(long)]
    live_venues: Option<usize>,
    /// live-day: writing staff devices per venue.
    #[arg(long)]
    live_devices_per_venue: Option<usize>,
    /// live-day: check-in rates per second, comma-separated (one step each).
    #[arg(long, value_delimiter = ',')]
    live_rates: Vec<u32>,
    /// live-day: seconds per step.
    #[arg(long)]
    live_step_secs: Option<u64>,
    /// live-day: do not time the dashboard's SSE stream.
    #[arg(long)]
    no_sse: bool,
    /// reconnect-storm: devices.
    #[arg(long)]
    storm_devices: Option<usize>,
    /// reconnect-storm: venues.
    #[arg(long)]
    storm_venues: Option<usize>,
    /// reconnect-storm: milliseconds over which all devices reconnect.
    #[arg(long)]
    storm_window_ms: Option<u64>,
    /// Longest wait for convergence per scenario, seconds.
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// chaos: the kepu-server binary to start, kill (SIGKILL) and restart.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// chaos: the server's `--data-dir` (its SQLite database unless --database-url).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// chaos: the server's `--database-url` (PostgreSQL).
    #[arg(long)]
    database_url: Option<String>,
    /// chaos: append the server's log (warnings and errors) to this file.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// chaos: how many times the server is killed.
    #[arg(long)]
    kills: Option<usize>,
    /// chaos: shortest and longest time up before a kill, ms (`MIN,MAX`).
    #[arg(long, value_delimiter = ',')]
    up_ms: Vec<u64>,
    /// chaos: longest extra time down after a kill, ms.
    #[arg(long)]
    down_ms: Option<u64>,
    /// chaos: check-ins per second the connected devices write while the kills run.
    #[arg(long)]
    chaos_rate: Option<u32>,
}

fn scale(a: &Args) -> Result<Scale, String> {
    let mut s = if a.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let set = |slot: &mut usize, v: Option<usize>, name: &str| -> Result<(), String> {
        match v {
            Some(0) => Err(format!("--{name} must be at least 1")),
            Some(v) => {
                *slot = v;
                Ok(())
            }
            None => Ok(()),
        }
    };
    set(&mut s.venues, a.venues, "venues")?;
    set(
        &mut s.devices_per_venue,
        a.devices_per_venue,
        "devices-per-venue",
    )?;
    set(&mut s.check_ins, a.check_ins, "check-ins")?;
    set(&mut s.roster, a.roster, "roster")?;
    set(&mut s.live_venues, a.live_venues, "live-venues")?;
    set(
        &mut s.live_devices_per_venue,
        a.live_devices_per_venue,
        "live-devices-per-venue",
    )?;
    set(&mut s.storm_devices, a.storm_devices, "storm-devices")?;
    set(&mut s.storm_venues, a.storm_venues, "storm-venues")?;
    if !a.live_rates.is_empty() {
        if a.live_rates.contains(&0) {
            return Err("--live-rates must all be at least 1".into());
        }
        s.live_rates.clone_from(&a.live_rates);
    }
    if let Some(v) = a.live_step_secs {
        if v == 0 {
            return Err("--live-step-secs must be at least 1".into());
        }
        s.live_step_secs = v;
    }
    if let Some(v) = a.storm_window_ms {
        s.storm_window_ms = v;
    }
    if let Some(v) = a.timeout_secs {
        if v == 0 {
            return Err("--timeout-secs must be at least 1".into());
        }
        s.timeout_secs = v;
    }
    set(&mut s.chaos_kills, a.kills, "kills")?;
    match a.up_ms[..] {
        [] => {}
        [lo, hi] if lo <= hi => s.chaos_up_ms = (lo, hi),
        _ => return Err("--up-ms wants MIN,MAX with MIN <= MAX".into()),
    }
    if let Some(v) = a.down_ms {
        s.chaos_down_ms = v;
    }
    if let Some(v) = a.chaos_rate {
        if v == 0 {
            return Err("--chaos-rate must be at least 1".into());
        }
        s.chaos_rate = v;
    }
    s.live_sse &= !a.no_sse;
    Ok(s)
}

enum Job {
    Run(Run),
    Chaos(ServerSpec),
}

fn run_of(args: &Args, scale: Scale) -> Result<Run, String> {
    let (Some(target), Some(url)) = (args.target, args.url.clone()) else {
        return Err("--target and --url are required (except for --scenario chaos)".into());
    };
    if args.server_bin.is_some() || args.data_dir.is_some() || args.database_url.is_some() {
        return Err("--server-bin, --data-dir and --database-url are for --scenario chaos".into());
    }
    let kind = match target {
        TargetArg::Kepu => TargetKind::Kepu,
        TargetArg::Js => TargetKind::Js,
    };
    let target = Target {
        kind,
        url: url.clone(),
        admin_code: args.admin_code.clone(),
        nodes: args.node_url.clone(),
    };
    if let Err(e) = target.http_base() {
        return Err(format!("--url {url:?}: {e}"));
    }
    for (i, node) in args.node_url.iter().enumerate() {
        if let Err(e) = target.on_node(i + 1).http_base() {
            return Err(format!("--node-url {node:?}: {e}"));
        }
    }
    Ok(Run {
        target,
        scenarios: if args.scenario.is_empty() {
            vec![
                Scenario::EndOfDay,
                Scenario::LiveDay,
                Scenario::ReconnectStorm,
            ]
        } else {
            args.scenario.clone()
        },
        scale,
        server_pid: args.server_pid,
        progress: !args.no_progress,
    })
}

fn chaos_spec(args: &Args) -> Result<ServerSpec, String> {
    if args.scenario.len() > 1 {
        return Err("--scenario chaos runs alone".into());
    }
    if args.target.is_some() || args.url.is_some() {
        return Err("chaos starts the server itself: give --server-bin, not --target/--url".into());
    }
    let bin = args
        .server_bin
        .clone()
        .ok_or("--scenario chaos needs --server-bin (the kepu-server binary)")?;
    let data_dir = args
        .data_dir
        .clone()
        .ok_or("--scenario chaos needs --data-dir (the server's data directory)")?;
    if let Some(url) = &args.database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err("--database-url wants a postgres:// URL (SQLite: --data-dir alone)".into());
    }
    Ok(ServerSpec {
        bin,
        data_dir,
        database_url: args.database_url.clone(),
        log: args.server_log.clone(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scale = match scale(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kepu-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let chaos = args.scenario.contains(&Scenario::Chaos);
    let job = if chaos {
        match chaos_spec(&args) {
            Ok(spec) => Job::Chaos(spec),
            Err(e) => {
                eprintln!("kepu-loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match run_of(&args, scale.clone()) {
            Ok(run) => Job::Run(run),
            Err(e) => {
                eprintln!("kepu-loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kepu-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let figures = match &job {
        Job::Run(run) => runtime.block_on(kepu_loadgen::run(run)),
        Job::Chaos(spec) => {
            runtime.block_on(kepu_loadgen::run_chaos(spec, &scale, !args.no_progress))
        }
    };
    match figures {
        Ok(figures) => {
            print!("{}", kepu_loadgen::table(&figures));
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&figures).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("kepu-loadgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            let failed = kepu_loadgen::failures(&figures);
            for f in &failed {
                eprintln!("kepu-loadgen: failed: {f}");
            }
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kepu-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
