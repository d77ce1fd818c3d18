//! Every example in configs/ passes validation, through the library and through
//! `edgeflow check`; a broken config fails `check` with located errors and a non-zero exit.

use std::process::Command;

#[test]
fn every_config_in_configs_dir_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        if let Err(e) = edgeflow::config::load(&path) {
            panic!("{} is invalid:\n{e}", path.display());
        }
        let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "check {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.extend(
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned()),
        );
    }
    for expected in ["gateway.toml", "demo.toml", "senml.toml"] {
        assert!(
            checked.iter().any(|name| name == expected),
            "configs/{expected} was not checked (found {checked:?})"
        );
    }
}

#[test]
fn check_reports_every_error_with_its_location_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[store]\ncheckpoint_interval = \"soon\"\n\n[[pipelines]]\nname = \"p\"\ntopics = [\"a/#/b\"]\nfields = { v = \"/v\" }\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"v\"\nlags = 0\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", path.display())))
        .collect();
    // checkpoint_interval (line 2), the topic filter (line 6), lags (line 11).
    for line in ["2", "6", "11"] {
        assert!(
            located
                .iter()
                .any(|l| l.starts_with(&format!("{}:{line}:", path.display()))),
            "no error located on line {line}:\n{stderr}"
        );
    }
}
