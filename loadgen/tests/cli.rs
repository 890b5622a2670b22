//! `kepu-loadgen`'s command line: wrong combinations and a server binary that cannot run
//! are refused with a clear message and a failing exit status, without a panic.

use std::process::Command;

fn loadgen(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kepu-loadgen"))
        .args(args)
        .env_remove("KEPU_LOADGEN_ADMIN_CODE")
        .output()
        .expect("kepu-loadgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn chaos_needs_a_server_binary_and_runs_alone() {
    let (code, err) = loadgen(&["--scenario", "chaos", "--data-dir", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --server-bin"), "{err}");

    let (code, err) = loadgen(&["--scenario", "chaos", "--server-bin", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --data-dir"), "{err}");

    let (code, err) = loadgen(&[
        "--scenario",
        "end-of-day,chaos",
        "--server-bin",
        "x",
        "--data-dir",
        "y",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("runs alone"), "{err}");

    let (code, err) = loadgen(&[
        "--scenario",
        "chaos",
        "--target",
        "kepu",
        "--url",
        "ws://127.0.0.1:1/sync",
        "--server-bin",
        "x",
        "--data-dir",
        "y",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not --target/--url"), "{err}");

    let (code, err) = loadgen(&[
        "--scenario",
        "chaos",
        "--server-bin",
        "x",
        "--data-dir",
        "y",
        "--database-url",
        "mysql://h/db",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("postgres://"), "{err}");

    for bad in ["900,100", "100", "1,2,3"] {
        let (code, err) = loadgen(&["--scenario", "chaos", "--up-ms", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("MIN <= MAX"), "{bad}: {err}");
    }
}

#[test]
fn other_scenarios_need_a_target_and_url_and_no_server_binary() {
    let (code, err) = loadgen(&["--scenario", "end-of-day"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--target and --url are required"), "{err}");

    let (code, err) = loadgen(&[
        "--target",
        "kepu",
        "--url",
        "ws://127.0.0.1:1/sync",
        "--server-bin",
        "x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("are for --scenario chaos"), "{err}");
}

#[test]
fn a_server_binary_that_cannot_run_fails_the_chaos_run_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let missing = dir.path().join("no-such-server");
    let (code, err) = loadgen(&[
        "--scenario",
        "chaos",
        "--server-bin",
        missing.to_str().expect("utf-8 path"),
        "--data-dir",
        data,
        "--no-progress",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("scenario chaos") && err.contains("no-such-server"),
        "{err}"
    );

    // A binary that runs but is not kepu-server: its `admin create-user` fails.
    let (code, err) = loadgen(&[
        "--scenario",
        "chaos",
        "--server-bin",
        "false",
        "--data-dir",
        data,
        "--no-progress",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin create-user failed"), "{err}");
}
