//! Shared pieces of the property ("fuzz") tests: the case count, and generators of hostile
//! text that several grammars read.
//!
//! Every property test is a module or test named `fuzz…`, so `cargo test --lib fuzz` runs
//! them all; `scripts/fuzz.sh` runs them for a time budget with many cases. Inputs that once
//! broke something are kept as plain regression tests next to the code they broke.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// The proptest configuration of a property test: `default_cases` cases unless
/// `PROPTEST_CASES` says otherwise (which is how `scripts/fuzz.sh` asks for many), no
/// regression files (found inputs become plain tests instead), and shrinking bounded so a
/// failure is reported quickly.
pub(crate) fn config(default_cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config.failure_persistence = None;
    config.max_shrink_iters = 2_000;
    config
}

/// Strings of arbitrary characters, weighted towards the ones grammars give a meaning to.
pub(crate) fn hostile_text(max_len: usize) -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"',
        '\\',
        '/',
        '~',
        '0',
        '1',
        '{',
        '}',
        '[',
        ']',
        ',',
        ':',
        ' ',
        '\n',
        '\r',
        '\t',
        '\0',
        'e',
        'E',
        '-',
        '+',
        '.',
        '=',
        '#',
        '\'',
        '(',
        ')',
        '!',
        '&',
        '|',
        '<',
        '>',
        '*',
        '%',
        'é',
        '\u{feff}',
        '\u{2028}',
        '\u{10ffff}',
        'n',
        't',
        'f',
    ]);
    let ch = prop_oneof![3 => special, 1 => any::<char>()];
    prop::collection::vec(ch, 0..max_len).prop_map(|chars| chars.into_iter().collect())
}

/// Numbers as text, weighted towards the edges of f64 and of number syntax.
pub(crate) fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|x| format!("{x}")),
        any::<f64>().prop_map(|x| format!("{x:e}")),
        any::<i64>().prop_map(|x| x.to_string()),
        prop::sample::select(vec![
            "1e308",
            "1.7976931348623157e308",
            "1.8e308",
            "1e309",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "2.2250738585072014e-308",
            "-0",
            "-0.0",
            "0e0",
            "1E+2",
            "00",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1e99999999999999999999",
            "NaN",
            "Infinity",
            "-Infinity",
            "nan",
            "inf",
            "18446744073709551616",
            "-9223372036854775809",
            "9223372036854775807",
            "0.1e-99999",
            "123456789012345678901234567890",
        ])
        .prop_map(str::to_owned),
    ]
}
