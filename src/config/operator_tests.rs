//! Loader tests of `[[pipelines.operators]]` and `from`: one per rule, with exact locations.

use std::time::Duration;

use super::tests::{errors, valid};
use super::*;
use crate::ops::window::{AggFn, AggSpec};

/// A pipeline reading `t` and `rh`, with `ops` (TOML text) before a forecast of `target`.
fn pipeline(ops: &str, target: &str) -> String {
    format!(
        r#"[[pipelines]]
name = "p"
topics = ["s/+"]
fields = {{ t = "/t", rh = "/rh" }}
{ops}
[pipelines.model]
kind = "forecast"
target = "{target}"
"#
    )
}

#[test]
fn operators_parse_in_order_and_the_model_sees_their_output_fields() {
    let ops = r#"
[[pipelines.operators]]
op = "filter"
expr = "t > -40 && rh <= 100"
[[pipelines.operators]]
op = "map"
convert = { t = { scale = 1.8, offset = 32 } }
derive = { dew = "t - (100 - rh) / 5" }
rename = { t = "temp_f" }
drop = ["rh"]
[[pipelines.operators]]
op = "dedupe"
[[pipelines.operators]]
op = "window"
size = "1m"
slide = "30s"
lateness = "5s"
aggregates = { temp_f = "mean", hi = "max(temp_f)", dew = "last" }
"#;
    let config = valid(&pipeline(ops, "hi"));
    let p = &config.pipelines[0];
    assert_eq!(
        p.operators,
        [
            OperatorConfig::Filter {
                expr: compiled("t > -40 && rh <= 100", &["t", "rh"])
            },
            OperatorConfig::Map(MapConfig {
                convert: vec![("t".into(), 1.8, 32.0)],
                derive: vec![("dew".into(), compiled("t - (100 - rh) / 5", &["t", "rh"]))],
                rename: vec![("t".into(), "temp_f".into())],
                drop: vec!["rh".into()],
            }),
            OperatorConfig::Dedupe {
                capacity: DEFAULT_DEDUPE_CAPACITY
            },
            OperatorConfig::Window(WindowConfig {
                size: Duration::from_secs(60),
                slide: Duration::from_secs(30),
                lateness: Duration::from_secs(5),
                aggregates: vec![
                    AggregateConfig {
                        name: "temp_f".into(),
                        input: "temp_f".into(),
                        function: "mean".into()
                    },
                    AggregateConfig {
                        name: "hi".into(),
                        input: "temp_f".into(),
                        function: "max".into()
                    },
                    AggregateConfig {
                        name: "dew".into(),
                        input: "dew".into(),
                        function: "last".into()
                    },
                ],
                // After the map and the dedupe the fields are [temp_f, dew].
                spec: crate::ops::window::WindowSpec::new(
                    60_000,
                    30_000,
                    5_000,
                    [(0, AggFn::Mean), (0, AggFn::Max), (1, AggFn::Last)]
                        .map(|(input, func)| AggSpec { input, func })
                        .to_vec()
                )
                .unwrap(),
            }),
        ]
    );
}

#[test]
fn the_model_target_must_be_a_field_after_the_operators() {
    let ops = "[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\naggregates = { mean_t = \"mean(t)\" }\n";
    assert_eq!(
        errors(&pipeline(ops, "t")),
        ["12:10: pipeline \"p\": model.target \"t\" is not one of the pipeline's fields (fields: mean_t)"]
    );
}

#[test]
fn expression_errors_point_into_the_expression() {
    let ops = "[[pipelines.operators]]\nop = \"filter\"\nexpr = \"t > -40 && tmp < 125\"\n";
    let errs = errors(&pipeline(ops, "t"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    // `tmp` starts at column 20 of line 7 (`expr = "` is 8 columns, then 11 characters).
    assert!(
        errs[0].starts_with("7:20: pipeline \"p\": operators.expr \"t > -40 && tmp < 125\": "),
        "{errs:?}"
    );
    assert!(errs[0].contains("tmp"), "{errs:?}");
}

#[test]
fn a_filter_needs_a_condition_and_a_derive_a_number() {
    let ops = "[[pipelines.operators]]\nop = \"filter\"\nexpr = \"t * 2\"\n[[pipelines.operators]]\nop = \"map\"\nderive = { hot = \"t > 30\" }\n";
    let errs = errors(&pipeline(ops, "t"));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("7:8: pipeline \"p\": operators.expr \"t * 2\" is a number, but a filter needs a condition"), "{errs:?}");
    assert!(
        errs[1]
            .starts_with("10:18: pipeline \"p\": operators.derive.hot \"t > 30\" is a condition"),
        "{errs:?}"
    );
}

#[test]
fn unknown_operator_and_unknown_keys_are_reported() {
    let ops = "[[pipelines.operators]]\nop = \"sort\"\n[[pipelines.operators]]\nop = \"dedupe\"\ncapcity = 4\n";
    assert_eq!(
        errors(&pipeline(ops, "t")),
        [
            "6:6: pipeline \"p\": operators.op \"sort\" is not an operator (accepted: \"filter\" | \"map\" | \"window\" | \"dedupe\")",
            "9:1: pipeline \"p\": unknown key \"operators.capcity\" (accepted keys: op, capacity)",
        ]
    );
}

#[test]
fn map_references_must_be_fields_and_names_stay_unique() {
    let ops = "[[pipelines.operators]]\nop = \"map\"\nconvert = { x = { scale = 2 } }\nrename = { rh = \"t\" }\ndrop = [\"nope\"]\n";
    let errs = errors(&pipeline(ops, "t"));
    assert_eq!(
        errs,
        [
            "7:13: pipeline \"p\": operators.convert.x: \"x\" is not a field here (fields: t, rh)",
            "9:9: pipeline \"p\": operators.drop: \"nope\" is not a field here (fields: t, rh)",
        ]
    );
    let ops = "[[pipelines.operators]]\nop = \"map\"\nrename = { rh = \"t\" }\n";
    assert_eq!(
        errors(&pipeline(ops, "t")),
        ["5:1: pipeline \"p\": after this map two fields are named \"t\" (rename one)"]
    );
}

#[test]
fn window_limits_are_checked_with_their_locations() {
    let ops = "[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\nslide = \"7s\"\naggregates = { t = \"median\", u = \"max(x)\" }\n";
    assert_eq!(
        errors(&pipeline(ops, "t")),
        [
            "8:9: pipeline \"p\": operators.slide must be a divisor of size (1m), so every reading is in the same number of windows (got 7s)",
            "9:20: pipeline \"p\": operators.aggregates.t \"median\": unknown aggregate \"median\" (accepted: mean, min, max, sum, count, std, first, last, rate)",
            "9:34: pipeline \"p\": operators.aggregates.u \"max(x)\": \"x\" is not a field here (fields: t, rh)",
        ]
    );
    let ops = "[[pipelines.operators]]\nop = \"window\"\nsize = \"1m\"\n";
    assert_eq!(
        errors(&pipeline(ops, "t")),
        ["5:1: pipeline \"p\": missing required key \"aggregates\" (e.g. aggregates = { temp = \"mean\", temp_max = \"max(temp)\" })"]
    );
}

#[test]
fn from_must_name_another_pipeline_without_loops() {
    let text = format!(
        "{}{}{}",
        pipeline("", "t"),
        "[[pipelines]]\nname = \"a\"\nfrom = \"b\"\nfields = { e = \"/error\" }\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"e\"\n",
        "[[pipelines]]\nname = \"b\"\nfrom = \"a\"\nfields = { e = \"/error\" }\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"e\"\n",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("11:8: pipeline \"a\": from makes a loop (a ← b ← a)"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("18:8: pipeline \"b\": from makes a loop (b ← a ← b)"),
        "{errs:?}"
    );
    let text = format!(
        "{}{}",
        pipeline("", "t"),
        "[[pipelines]]\nname = \"c\"\nfrom = \"nope\"\ntopics = [\"x\"]\nfields = { e = \"/error\" }\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"e\"\n",
    );
    assert_eq!(
        errors(&text),
        [
            "11:8: pipeline \"c\": a pipeline reads either MQTT topics or another pipeline's output: remove topics, or from = \"nope\"",
            "11:8: pipeline \"c\": from = \"nope\" is not a pipeline of this file (pipelines: c, p)",
        ]
    );
}

#[test]
fn a_chained_pipeline_defaults_to_the_output_key_and_time() {
    let text = format!(
        "{}{}",
        pipeline("", "t"),
        "[[pipelines]]\nname = \"c\"\nfrom = \"p\"\nfields = { e = \"/error\" }\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"e\"\n",
    );
    let config = valid(&text);
    let c = &config.pipelines[1];
    assert_eq!(c.from.as_deref(), Some("p"));
    assert!(c.topics.is_empty());
    assert_eq!(c.key, KeySource::Pointer("/key".into()));
    assert_eq!(
        c.time,
        Some(TimeSource {
            pointer: "/time".into(),
            unit: TimeUnit::Milliseconds
        })
    );
}

/// An expression as the loader compiles it (equality compares the text).
fn compiled(text: &str, fields: &[&str]) -> crate::ops::expr::CompiledExpr {
    crate::ops::expr::CompiledExpr::new(text, crate::ops::expr::Expr::parse(text, fields).unwrap())
}
