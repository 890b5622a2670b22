//! The deployment files (`deploy/`): the systemd unit, its settings example and the
//! container file pass only flags, subcommands and variables that `kepu-server --help`
//! lists, agree with each other and with the server's defaults on ports and paths, and
//! their health check asks a route that answers. Where `systemd-analyze` is installed the
//! unit is verified by systemd itself (with the binary just built).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::TestServer;

crate::support::on_both_databases!(server: the_container_health_check_asks_a_route_that_answers);

fn deploy(file: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    (path, text)
}

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kepu-server"))
        .arg("--help")
        .output()
        .expect("kepu-server --help runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The variables `--help` lists (`[env: NAME=…]`).
fn help_variables(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// `KEY=value` assignments in `text` (a leading `#` allowed: commented examples count),
/// the key being a variable name in capitals.
fn assignments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The systemd directives of the unit, in order (`Key`, `value`).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn directive<'a>(all: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn port_of(bind: &str) -> &str {
    bind.rsplit(':').next().expect("a port")
}

#[test]
fn the_unit_passes_only_what_the_server_knows_and_keeps_its_data_in_its_state_directory() {
    let help = help();
    let known = help_variables(&help);
    let (path, unit) = deploy("kepu-server.service");
    let d = directives(&unit);
    let exec = directive(&d, "ExecStart");
    assert_eq!(exec.len(), 1);
    let mut words = exec[0].split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/kepu-server"));
    for w in words {
        if let Some(flag) = w.strip_prefix("--") {
            assert!(help.contains(&format!("--{flag}")), "unknown flag {w}");
        } else {
            assert!(
                help.contains(&format!("  {w} ")),
                "unknown subcommand {w} in ExecStart"
            );
        }
    }
    let env: Vec<(String, String)> = directive(&d, "Environment")
        .iter()
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, _) in &env {
        assert!(known.contains(k), "{k} is not a kepu-server variable");
    }
    let state = directive(&d, "StateDirectory");
    assert_eq!(state, ["kepu"]);
    assert!(
        env.contains(&("KEPU_DATA_DIR".into(), "/var/lib/kepu".into())),
        "the SQLite data directory is the state directory"
    );
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(directive(&d, key), [want], "{key}");
    }
    let files = directive(&d, "LimitNOFILE");
    let files: u64 = files[0].parse().expect("a number");
    assert!(files >= 65_536, "room for many websockets: {files}");
    assert_eq!(directive(&d, "EnvironmentFile").len(), 1);

    let (_, example) = deploy("kepu-server.env.example");
    let vars = assignments(&example);
    assert!(!vars.is_empty());
    for (k, _) in &vars {
        assert!(
            known.contains(k),
            "{k} in the settings example is not a kepu-server variable"
        );
    }

    // systemd's own check, where it is installed: the unit with the binary just built.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("kepu-server.service");
        std::fs::write(
            &copy,
            unit.replace(
                "/usr/local/bin/kepu-server",
                env!("CARGO_BIN_EXE_kepu-server"),
            ),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs");
        // Warnings about the unit name its file; others (the host's own units) do not
        // concern it.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("kepu-server.service"),
            "systemd-analyze verify {}: {}",
            path.display(),
            stderr
        );
    }
}

/// The container file's instructions: (`INSTRUCTION`, rest), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let joined = std::mem::take(&mut current);
        if let Some((i, rest)) = joined.trim().split_once(' ') {
            out.push((i.to_owned(), rest.trim().to_owned()));
        }
    }
    out
}

/// `(name, value)` pairs: instructions with their arguments, or variables.
type Pairs = Vec<(String, String)>;

/// The container file's instructions and its `ENV` variables.
fn container_settings() -> (Pairs, Pairs) {
    let (_, text) = deploy("Containerfile");
    let ins = instructions(&text);
    let env: Vec<(String, String)> = ins
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    (ins, env)
}

fn one<'a>(ins: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<&str> = ins
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one {name}");
    found[0]
}

#[test]
fn the_container_runs_unprivileged_with_its_data_in_a_volume_on_the_port_it_exposes() {
    let help = help();
    let known = help_variables(&help);
    let (ins, env) = container_settings();
    assert_eq!(
        ins.iter().filter(|(i, _)| i == "FROM").count(),
        2,
        "a build stage and a run stage"
    );
    for (k, _) in &env {
        assert!(known.contains(k), "{k} is not a kepu-server variable");
    }
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("ENV {k}"))
    };
    let user = one(&ins, "USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    let volume = one(&ins, "VOLUME");
    assert!(
        volume.contains(&format!("\"{}\"", get("KEPU_DATA_DIR"))),
        "VOLUME {volume}"
    );
    let bind = get("KEPU_BIND");
    assert!(
        bind.starts_with("0.0.0.0:"),
        "reachable from outside: {bind}"
    );
    let default = help
        .split("--bind <BIND>")
        .nth(1)
        .and_then(|r| r.split("[default: ").nth(1))
        .and_then(|r| r.split(']').next())
        .expect("the default of --bind");
    assert_eq!(port_of(bind), port_of(default), "the server's default port");
    assert_eq!(one(&ins, "EXPOSE"), port_of(bind));
    let health = one(&ins, "HEALTHCHECK");
    assert!(
        health.contains(&format!("http://127.0.0.1:{}/readyz", port_of(bind))),
        "HEALTHCHECK {health}"
    );
    let cmd = one(&ins, "CMD");
    for word in cmd.trim_matches(['[', ']']).split(',') {
        let word = word.trim().trim_matches('"');
        assert!(
            help.contains(&format!("  {word} ")),
            "unknown subcommand {word}"
        );
    }
    assert!(one(&ins, "ENTRYPOINT").contains("/usr/local/bin/kepu-server"));
}

async fn the_container_health_check_asks_a_route_that_answers(server: &TestServer) {
    let (ins, _) = container_settings();
    let health = one(&ins, "HEALTHCHECK");
    let path = health
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_once('/'))
        .map(|(_, p)| format!("/{}", p.split_whitespace().next().unwrap_or_default()))
        .expect("a URL in the health check");
    let r = server.http.get(server.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
}
