//! systemd: the unit file passes `systemd-analyze verify` and has the settings the README
//! promises; the binary speaks the sd_notify protocol (READY=1 after the subscriptions,
//! WATCHDOG=1 while the actors answer, RELOADING=1 … READY=1 around a SIGHUP, STOPPING=1).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn unit_text() -> String {
    std::fs::read_to_string(repo("systemd/edgeflow.service")).expect("systemd/edgeflow.service")
}

/// The values of `key=` in the unit, in order (a key may repeat).
fn settings<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn one<'a>(unit: &'a str, key: &str) -> &'a str {
    match settings(unit, key).as_slice() {
        [v] => v,
        other => panic!("{key}= appears {} times: {other:?}", other.len()),
    }
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !in_ci,
            "systemd-analyze is missing in CI (.ci/run installs systemd)"
        );
        eprintln!("SKIP: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    // verify checks that the commands exist: point them at this build and an example config.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_text()
        .replace("/usr/local/bin/edgeflow", env!("CARGO_BIN_EXE_edgeflow"))
        .replace(
            "/etc/edgeflow/edgeflow.toml",
            &repo("configs/gateway.toml").display().to_string(),
        );
    let path = dir.path().join("edgeflow.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // systemd-analyze exits 0 for unknown keys and unparsable values, printing a line
    // for each: any output is a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unit_file_has_the_promised_settings() {
    let unit = unit_text();
    assert_eq!(one(&unit, "Type"), "notify");
    assert_eq!(one(&unit, "Restart"), "on-failure");
    assert!(one(&unit, "ExecStartPre").contains("edgeflow check --config"));
    assert!(one(&unit, "ExecStart").contains("edgeflow run --config"));
    assert!(one(&unit, "ExecReload").contains("-HUP $MAINPID"));
    assert!(settings(&unit, "DynamicUser") == ["yes"] || !settings(&unit, "User").is_empty());
    assert_eq!(one(&unit, "StateDirectory"), "edgeflow");
    assert_eq!(one(&unit, "ProtectSystem"), "strict");
    assert_eq!(one(&unit, "NoNewPrivileges"), "yes");
    assert!(!one(&unit, "MemoryMax").is_empty());
    let watchdog = humantime::parse_duration(one(&unit, "WatchdogSec")).expect("WatchdogSec");
    assert!(watchdog >= Duration::from_secs(5), "{watchdog:?}");
    // TimeoutStopSec must outlast the shutdown deadline of the default and of every example.
    let stop = humantime::parse_duration(one(&unit, "TimeoutStopSec")).expect("TimeoutStopSec");
    let mut deadlines = vec![edgeflow::config::RuntimeConfig::default().shutdown_deadline];
    for entry in std::fs::read_dir(repo("configs")).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            deadlines.push(load(&path).runtime.shutdown_deadline);
        }
    }
    for deadline in deadlines {
        assert!(
            stop > deadline + Duration::from_secs(5),
            "TimeoutStopSec {stop:?} vs shutdown_deadline {deadline:?}"
        );
    }
}

/// The notifications the daemon sends, one datagram each.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(EVENT_TIMEOUT))
            .expect("timeout");
        NotifySocket { socket, path }
    }

    /// The next datagram's lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification before the timeout");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Skip datagrams until one contains `line`; returns the lines seen before it.
    fn wait_for(&self, line: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let lines = self.next();
            if lines.iter().any(|l| l == line) {
                return before;
            }
            before.extend(lines);
        }
    }
}

fn embedded_config(dir: &Path) -> PathBuf {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    write_config(
        dir,
        &format!(
            r#"
[mqtt]
embedded = true
port = {port}

[store]
data_dir = "{data}"

[http]
enabled = false

[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature"]
key = "topic[1]"
fields = {{ temp = "/value" }}

[pipelines.model]
kind = "forecast"
target = "temp"
"#,
            data = dir.join("data").display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_notifies_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = embedded_config(dir.path());
    let notify = NotifySocket::bind(dir.path());
    let mut daemon = BinaryDaemon::spawn_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().expect("utf-8 path")),
            // 200 ms: a ping every 100 ms while the actors answer.
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let before_ready = notify.wait_for("READY=1");
    assert!(
        !before_ready.iter().any(|l| l == "STOPPING=1"),
        "{before_ready:?}"
    );
    daemon.wait_for("ready: subscribed").await;
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
    // A reload is bracketed by RELOADING=1 (with MONOTONIC_USEC) and READY=1.
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success());
    let reloading = loop {
        let lines = notify.next();
        if lines.iter().any(|l| l == "RELOADING=1") {
            break lines;
        }
    };
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notify.wait_for("READY=1");
    daemon.wait_for("reloaded:").await;
    let status = daemon.sigterm();
    assert!(status.success(), "{status:?}");
    notify.wait_for("STOPPING=1");
}
