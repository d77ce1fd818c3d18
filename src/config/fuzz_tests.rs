//! Property tests of the config loader: arbitrary text, and the shipped configs in
//! `configs/*.toml` mutated line by line (lines deleted, duplicated, swapped, values replaced
//! by hostile ones, text cut short). The loader never panics, and every error it reports
//! points inside the text: a byte offset on a character boundary, at most the text's length,
//! which becomes a `line:col` on an existing line.
//!
//! Run with many cases by `scripts/fuzz.sh`; `cargo test` runs a few.

use std::path::Path;

use proptest::prelude::*;

use super::loader::{self, Files};
use super::parse_with;
use crate::fuzz_support::{config, hostile_text, number_text};

/// The shipped example configs, as the loader's tests read them (compiled in: the property
/// tests do not depend on the working directory).
const SHIPPED: &[(&str, &str)] = &[
    ("anomaly.toml", include_str!("../../configs/anomaly.toml")),
    (
        "classification.toml",
        include_str!("../../configs/classification.toml"),
    ),
    (
        "classifier.toml",
        include_str!("../../configs/classifier.toml"),
    ),
    ("demo.toml", include_str!("../../configs/demo.toml")),
    ("gateway.toml", include_str!("../../configs/gateway.toml")),
    ("kmeans.toml", include_str!("../../configs/kmeans.toml")),
    (
        "operators.toml",
        include_str!("../../configs/operators.toml"),
    ),
    (
        "recommend.toml",
        include_str!("../../configs/recommend.toml"),
    ),
    (
        "regression.toml",
        include_str!("../../configs/regression.toml"),
    ),
    ("senml.toml", include_str!("../../configs/senml.toml")),
];

/// Loads `text` and checks where every error points. Returns whether it loaded.
fn check(text: &str) -> Result<bool, TestCaseError> {
    // The raw offsets first: `LineIndex::locate` clamps, which would hide an offset past the
    // end behind a plausible line:col.
    let text_without_bom = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Err(problems) = loader::load_text(Path::new("fuzz.toml"), text_without_bom, Files::Skip)
    {
        prop_assert!(!problems.is_empty(), "an error without a problem");
        for problem in &problems {
            prop_assert!(
                problem.offset <= text_without_bom.len()
                    && text_without_bom.is_char_boundary(problem.offset),
                "offset {} of {:?} is outside the text ({} bytes)",
                problem.offset,
                problem.message,
                text_without_bom.len()
            );
            prop_assert!(!problem.message.is_empty());
        }
    }
    match parse_with(Path::new("fuzz.toml"), text, Files::Skip) {
        Ok(_) => Ok(true),
        Err(errors) => {
            let lines: Vec<&str> = text_without_bom.split('\n').collect();
            for error in &errors.errors {
                let line = error.line.checked_sub(1).and_then(|i| lines.get(i));
                let Some(line) = line else {
                    return Err(TestCaseError::fail(format!(
                        "{error}: line {} of {}",
                        error.line,
                        lines.len()
                    )));
                };
                prop_assert!(
                    (1..=line.chars().count() + 1).contains(&error.col),
                    "{}: column past the end of {:?}",
                    error,
                    line
                );
            }
            Ok(false)
        }
    }
}

/// One edit of a config's lines.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Replace what follows the first `=` on a line.
    Value(usize, String),
    /// Insert a line.
    Insert(usize, String),
    /// Cut the whole text after this many characters.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        number_text(),
        hostile_text(12),
        hostile_text(12).prop_map(|s| format!("\"{}\"", s.replace(['"', '\\'], ""))),
        prop::sample::select(vec![
            "\"\"",
            "\"0s\"",
            "\"-1s\"",
            "\"1y\"",
            "\"99999999999999999999h\"",
            "\"1.5ms\"",
            "[]",
            "{}",
            "[1, \"a\"]",
            "{ x = 1 }",
            "true",
            "\"#\"",
            "\"+/#\"",
            "\"/a~2\"",
            "\"mean(\"",
            "\"temp > \"",
            "-9223372036854775808",
            "9223372036854775808",
            "1e400",
            "nan",
            "inf",
            "\"{key}/{nope}\"",
            "\"edgeflow/+\"",
            "0",
            "-1",
            "65536",
        ])
        .prop_map(str::to_owned),
    ];
    let line = prop_oneof![
        prop::sample::select(vec![
            "[[pipeline]]",
            "[mqtt]",
            "[runtime]",
            "[store]",
            "[http]",
            "[simulate]",
            "[pipeline.model]",
            "[[pipeline.operators]]",
            "[[classifier]]",
            "[mqtt.tls]",
            "[[pipeline.fields]]",
            "[pipeline",
            "name = \"x\"",
            "topics = [\"a/+\"]",
            "kind = \"window\"",
            "max_skew = \"1h\"",
            "x = ",
            "= 1",
            "\"\"\"",
        ])
        .prop_map(str::to_owned),
        hostile_text(20),
    ];
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
        3 => (any::<usize>(), value).prop_map(|(i, v)| Mutation::Value(i, v)),
        1 => (any::<usize>(), line).prop_map(|(i, l)| Mutation::Insert(i, l)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut truncate = None;
    for m in mutations {
        let n = lines.len().max(1);
        match m {
            Mutation::Delete(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) if !lines.is_empty() => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::Swap(i, j) if !lines.is_empty() => lines.swap(i % n, j % n),
            Mutation::Value(i, value) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                if let Some(eq) = line.find('=') {
                    line.truncate(eq + 1);
                    line.push(' ');
                    line.push_str(value);
                }
            }
            Mutation::Insert(i, new) => lines.insert(i % (lines.len() + 1), new.clone()),
            Mutation::Truncate(at) => truncate = Some(*at),
            _ => {}
        }
    }
    let text = lines.join("\n");
    match truncate {
        Some(at) if !text.is_empty() => text.chars().take(at % text.chars().count()).collect(),
        _ => text,
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn fuzz_config_text_never_panics_and_errors_point_inside_it(text in hostile_text(300)) {
        check(&text)?;
    }

    #[test]
    fn fuzz_mutated_shipped_configs_never_panic_and_errors_point_inside_them(
        file in prop::sample::select(SHIPPED.to_vec()),
        mutations in prop::collection::vec(mutation(), 1..6),
        bom in prop::bool::weighted(0.1),
    ) {
        let mut text = apply(file.1, &mutations);
        if bom {
            text.insert(0, '\u{feff}');
        }
        check(&text).map_err(|e| TestCaseError::fail(format!("{}: {e}\n{text}", file.0)))?;
    }
}

/// The shipped configs load as they are, and all of them are mutated: the mutations start
/// from valid text.
#[test]
fn fuzz_shipped_configs_load_unmutated() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = SHIPPED.iter().map(|(name, _)| *name).collect();
    assert_eq!(on_disk, listed, "SHIPPED must list every file in configs/");
    for (name, text) in SHIPPED {
        match check(text) {
            Ok(true) => {}
            Ok(false) => panic!(
                "{name} does not load: {:?}",
                parse_with(Path::new(name), text, Files::Skip)
            ),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
