//! `[[pipelines.operators]]`: the per-key operators between decoding and the model.
//!
//! Operators change the fields a reading has (a map renames, derives and drops; a window's
//! aggregates replace them), so they are read in order while tracking the field names each
//! operator sees; the model's `target` and `features` are then checked against the names
//! after the last operator.

use std::time::Duration;

use toml_span::value::{Value, ValueInner};
use toml_span::Span;

use super::{a, Section};
use crate::config::rules;
use crate::config::schema::{
    AggregateConfig, FieldConfig, MapConfig, OperatorConfig, WindowConfig, DEFAULT_DEDUPE_CAPACITY,
    MAX_DEDUPE_CAPACITY, MAX_WINDOWS_PER_READING,
};
use crate::ops::expr::{CompiledExpr, Expr, ExprType};
use crate::ops::window::{AggFn, AggSpec, WindowSpec};

/// The operator kinds, for messages.
const OPS: &str = "\"filter\" | \"map\" | \"window\" | \"dedupe\"";

/// Reads `operators` (absent: none). `decoded` are the pipeline's decoded fields (`None`
/// when they are invalid: then references are not checked). Returns the operators (`None`
/// if any is invalid) and the fields the model sees after them (`None` when unknown).
pub(super) fn operators(
    s: &mut Section<'_>,
    decoded: Option<&[FieldConfig]>,
) -> (Option<Vec<OperatorConfig>>, Option<Vec<FieldConfig>>) {
    let Some((_, mut value)) = s.take("operators") else {
        return (Some(Vec::new()), decoded.map(<[FieldConfig]>::to_vec));
    };
    let span = value.span;
    let items = match value.take() {
        ValueInner::Array(items) => items,
        other => {
            let message = format!(
                "operators must be an array of tables ([[pipelines.operators]] with op = {OPS}) (got {})",
                a(other.type_str())
            );
            s.error(span, message);
            return (None, None);
        }
    };
    let mut names: Option<Vec<String>> =
        decoded.map(|fields| fields.iter().map(|f| f.name.clone()).collect());
    let mut list = Vec::with_capacity(items.len());
    let mut valid = true;
    for (index, mut item) in items.into_iter().enumerate() {
        let mut op = match Section::open(&mut item, "operators.") {
            Ok(op) => op,
            Err(found) => {
                let message = format!("operators[{index}] must be a table (got {})", a(found));
                s.error(item.span, message);
                valid = false;
                names = None;
                continue;
            }
        };
        let parsed = operator(&mut op, names.as_deref());
        // The operator's problems (unknown keys included) go to the pipeline's list.
        op.report_into(s);
        match parsed {
            Ok((config, after)) => {
                list.push(config);
                names = after.or(names);
            }
            Err(fields_changed) => {
                valid = false;
                // After a broken map or window the fields are unknown: later references
                // are not checked (their errors would only be noise). A filter or a
                // dedupe never changes them.
                if fields_changed {
                    names = None;
                }
            }
        }
    }
    let fields = names.map(|names| {
        names
            .into_iter()
            .map(|name| {
                // Decoded fields keep their pointer; derived ones have none.
                let pointer = decoded
                    .and_then(|d| d.iter().find(|f| f.name == name))
                    .map(|f| f.pointer.clone())
                    .unwrap_or_default();
                FieldConfig { name, pointer }
            })
            .collect()
    });
    (valid.then_some(list), fields)
}

/// One operator table. Returns it and the field names after it (`None` if they did not
/// change or are unknown), or, when it is invalid, whether it is one that changes the fields
/// (or one whose kind is unknown).
fn operator(
    op: &mut Section<'_>,
    names: Option<&[String]>,
) -> Result<(OperatorConfig, Option<Vec<String>>), bool> {
    let Some(kind) = op.require::<String>("op") else {
        return Err(true);
    };
    match kind.value.as_str() {
        "filter" => filter(op, names)
            .map(|expr| (OperatorConfig::Filter { expr }, None))
            .ok_or(false),
        "map" => map(op, names)
            .map(|(map, after)| (OperatorConfig::Map(map), after))
            .ok_or(true),
        "window" => window(op, names)
            .map(|(window, after)| (OperatorConfig::Window(window), Some(after)))
            .ok_or(true),
        "dedupe" => {
            let capacity = op
                .int_as("capacity", 1..=MAX_DEDUPE_CAPACITY as i64)
                .unwrap_or(DEFAULT_DEDUPE_CAPACITY);
            Ok((OperatorConfig::Dedupe { capacity }, None))
        }
        other => {
            let message = format!("operators.op \"{other}\" is not an operator (accepted: {OPS})");
            op.error(kind.span, message);
            Err(true)
        }
    }
}

/// `op = "filter"`: `expr`, a boolean expression.
fn filter(op: &mut Section<'_>, names: Option<&[String]>) -> Option<CompiledExpr> {
    let expr = op.require::<String>("expr")?;
    let names = names?;
    let compiled = compile(op, "expr", &expr.value, expr.span, names)?;
    if compiled.ty() != ExprType::Bool {
        let message = format!(
            "operators.expr \"{}\" is a number, but a filter needs a condition (e.g. `temp > -40 && temp < 125`)",
            expr.value
        );
        op.error(expr.span, message);
        return None;
    }
    Some(CompiledExpr::new(expr.value, compiled))
}

/// Compiles an expression, reporting a parse error at its place inside the string.
fn compile(
    op: &mut Section<'_>,
    key: &str,
    text: &str,
    span: Span,
    names: &[String],
) -> Option<Expr> {
    let fields: Vec<&str> = names.iter().map(String::as_str).collect();
    match Expr::parse(text, &fields) {
        Ok(expr) => Some(expr),
        Err(e) => {
            // toml-span's span of a string starts after its opening quote, so the offset
            // inside the expression is exact for strings without escape sequences.
            let start = (span.start + e.offset).min(span.end);
            let end = (start + e.len.max(1)).min(span.end.max(start));
            op.error(
                Span::new(start, end),
                format!("operators.{key} \"{text}\": {}", e.message),
            );
            None
        }
    }
}

/// `op = "map"`: `convert`, `derive`, `rename`, `drop`; at least one.
fn map(op: &mut Section<'_>, names: Option<&[String]>) -> Option<(MapConfig, Option<Vec<String>>)> {
    let mut map = MapConfig::default();
    let mut valid = true;
    let known = |name: &str| names.is_none_or(|names| names.iter().any(|n| n == name));
    let listing = || names.map(|n| n.join(", ")).unwrap_or_default();

    for (name, span, value) in entries(op, "convert") {
        let (scale, offset) = match convert_entry(&value) {
            Ok(pair) => pair,
            Err(message) => {
                op.error(span, format!("operators.convert.{name}: {message}"));
                valid = false;
                continue;
            }
        };
        if !known(&name) {
            let message = format!(
                "operators.convert.{name}: \"{name}\" is not a field here (fields: {})",
                listing()
            );
            op.error(span, message);
            valid = false;
        }
        map.convert.push((name, scale, offset));
    }
    // Every derived name written, compiled or not (rename and drop may name them).
    let mut derived: Vec<String> = Vec::new();
    for (name, span, value) in entries(op, "derive") {
        let Some(text) = value.as_str() else {
            let message = format!(
                "operators.derive.{name} must be an expression string such as \"temp * 1.8 + 32\" (got {})",
                a(value.as_ref().type_str())
            );
            op.error(span, message);
            valid = false;
            continue;
        };
        if !rules::is_valid_field_name(&name) {
            let message = format!("operators.derive.{name}: \"{name}\" is not a usable field name (non-empty, without '/', '+', '#', '{{' or '}}')");
            op.error(span, message);
            valid = false;
        }
        derived.push(name.clone());
        // Without `names` (an earlier problem left the fields unknown) the file is rejected
        // anyway; the expression cannot be compiled.
        let Some(names) = names else {
            valid = false;
            continue;
        };
        match compile(op, "derive", text, value.span, names) {
            Some(expr) if expr.ty() == ExprType::Number => {
                map.derive.push((name, CompiledExpr::new(text, expr)));
            }
            Some(_) => {
                let message = format!(
                    "operators.derive.{name} \"{text}\" is a condition; a derived field needs a number (use if(cond, a, b) to choose one)"
                );
                op.error(value.span, message);
                valid = false;
            }
            None => valid = false,
        }
    }
    for (old, span, value) in entries(op, "rename") {
        let Some(new) = value.as_str() else {
            let message = format!(
                "operators.rename.{old} must be the new name as a string (got {})",
                a(value.as_ref().type_str())
            );
            op.error(span, message);
            valid = false;
            continue;
        };
        if !known(&old) && !derived.contains(&old) {
            let message = format!(
                "operators.rename.{old}: \"{old}\" is not a field here (fields: {})",
                listing()
            );
            op.error(span, message);
            valid = false;
        }
        if !rules::is_valid_field_name(new) {
            let message = format!("operators.rename.{old}: \"{new}\" is not a usable field name (non-empty, without '/', '+', '#', '{{' or '}}')");
            op.error(value.span, message);
            valid = false;
        }
        map.rename.push((old, new.to_owned()));
    }
    if let Some(drop) = op.get::<super::StringList>("drop") {
        for field in drop.value.0 {
            let is_derived = derived.contains(&field.value);
            if !known(&field.value) && !is_derived {
                let message = format!(
                    "operators.drop: \"{}\" is not a field here (fields: {})",
                    field.value,
                    listing()
                );
                op.error(field.span, message);
                valid = false;
            }
            map.drop.push(field.value);
        }
    }
    if map.convert.is_empty() && derived.is_empty() && map.rename.is_empty() && map.drop.is_empty()
    {
        let span = op.span;
        op.error(
            span,
            "a map operator needs at least one of convert, derive, rename or drop".into(),
        );
        valid = false;
    }
    if !valid {
        return None;
    }
    let after = names.map(|names| {
        map.outputs(names)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    });
    if let Some(after) = &after {
        if after.is_empty() {
            let span = op.span;
            op.error(span, "this map drops every field".into());
            return None;
        }
        if let Some(duplicate) = first_duplicate(after) {
            let span = op.span;
            op.error(
                span,
                format!("after this map two fields are named \"{duplicate}\" (rename one)"),
            );
            return None;
        }
    }
    Some((map, after))
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    names
        .iter()
        .enumerate()
        .find(|(i, name)| names[..*i].contains(name))
        .map(|(_, name)| name.as_str())
}

/// The entries of an inline table `key = { name = value, ... }` in the order written, with the
/// span of each name. A value that is not a table is reported.
fn entries<'de>(op: &mut Section<'de>, key: &'static str) -> Vec<(String, Span, Value<'de>)> {
    let Some((_, mut value)) = op.take(key) else {
        return Vec::new();
    };
    let span = value.span;
    match value.take() {
        ValueInner::Table(table) => {
            let mut list: Vec<_> = table
                .into_iter()
                .map(|(k, v)| (k.name.to_string(), k.span, v))
                .collect();
            list.sort_by_key(|(_, span, _)| span.start);
            list
        }
        other => {
            let message = format!(
                "operators.{key} must be a table (e.g. {key} = {{ ... }}) (got {})",
                a(other.type_str())
            );
            op.error(span, message);
            Vec::new()
        }
    }
}

/// `{ scale = a, offset = b }` (either may be omitted: 1 and 0).
fn convert_entry(value: &Value<'_>) -> Result<(f64, f64), String> {
    let Some(table) = value.as_table() else {
        return Err(format!(
            "must be {{ scale = a, offset = b }} (got {})",
            a(value.as_ref().type_str())
        ));
    };
    let mut scale = 1.0;
    let mut offset = 0.0;
    for (k, v) in table {
        let number = match v.as_ref() {
            ValueInner::Float(f) => *f,
            ValueInner::Integer(i) => *i as f64,
            other => {
                return Err(format!(
                    "{} must be a number (got {})",
                    k.name,
                    a(other.type_str())
                ))
            }
        };
        if !number.is_finite() {
            return Err(format!("{} must be finite", k.name));
        }
        match k.name.as_ref() {
            "scale" => scale = number,
            "offset" => offset = number,
            other => return Err(format!("unknown key \"{other}\" (accepted: scale, offset)")),
        }
    }
    Ok((scale, offset))
}

/// `op = "window"`: `size`, `slide`, `lateness`, `aggregates`.
fn window(op: &mut Section<'_>, names: Option<&[String]>) -> Option<(WindowConfig, Vec<String>)> {
    let size = op.duration("size", Duration::from_millis(1));
    let slide = op.duration("slide", Duration::from_millis(1));
    let lateness = op
        .duration("lateness", Duration::ZERO)
        .map_or(Duration::ZERO, |l| l.value);
    let mut valid = size.is_some();
    let size_value = size.as_ref().map(|s| s.value);
    let slide_value = match (&slide, size_value) {
        (Some(slide), Some(size)) => {
            let (size_ms, slide_ms) = (size.as_millis(), slide.value.as_millis());
            let problem = if slide.value > size {
                Some("at most size (a slide longer than the window would skip readings)".to_owned())
            } else if size.subsec_nanos() % 1_000_000 != 0
                || slide.value.subsec_nanos() % 1_000_000 != 0
            {
                Some("whole milliseconds, like size".to_owned())
            } else if size_ms % slide_ms != 0 {
                Some(format!(
                    "a divisor of size ({}), so every reading is in the same number of windows",
                    humantime::format_duration(size)
                ))
            } else if size_ms / slide_ms > MAX_WINDOWS_PER_READING as u128 {
                Some(format!(
                    "at least size/{MAX_WINDOWS_PER_READING} (each reading updates size/slide windows)"
                ))
            } else {
                None
            };
            if let Some(accepted) = problem {
                let message = format!(
                    "operators.slide must be {accepted} (got {})",
                    humantime::format_duration(slide.value)
                );
                op.error(slide.span, message);
                valid = false;
            }
            Some(slide.value)
        }
        (None, size) => size,
        (Some(_), None) => None,
    };
    if let Some(size) = &size {
        if size.value.subsec_nanos() % 1_000_000 != 0 {
            let message = format!(
                "operators.size must be whole milliseconds (got {})",
                humantime::format_duration(size.value)
            );
            op.error(size.span, message);
            valid = false;
        }
    }
    let aggregates = aggregates(op, names);
    let (Some(size), Some(slide), Some(aggregates)) = (size_value, slide_value, aggregates) else {
        return None;
    };
    if !valid {
        return None;
    }
    // The compiled window: its own limits (e.g. lateness in slides) checked, each aggregate
    // reading its input by position. Without `names` (an earlier problem: the file is
    // rejected anyway) the positions are unknown and 0 stands in.
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let specs = aggregates
        .iter()
        .filter_map(|agg| {
            let func = AggFn::from_name(&agg.function)?;
            let input = names
                .and_then(|names| names.iter().position(|n| *n == agg.input))
                .unwrap_or(0);
            Some(AggSpec { input, func })
        })
        .collect();
    let spec = match WindowSpec::new(millis(size), millis(slide), millis(lateness), specs) {
        Ok(spec) => spec,
        Err(e) => {
            let span = op.span;
            op.error(span, format!("this window is not usable: {e}"));
            return None;
        }
    };
    let after = aggregates.iter().map(|agg| agg.name.clone()).collect();
    Some((
        WindowConfig {
            size,
            slide,
            lateness,
            aggregates,
            spec,
        },
        after,
    ))
}

/// `aggregates = { out = "fn(field)" | "fn" }`: `fn` alone aggregates the field named `out`.
fn aggregates(op: &mut Section<'_>, names: Option<&[String]>) -> Option<Vec<AggregateConfig>> {
    if !op.helper.contains("aggregates") {
        let span = op.span;
        op.error(
            span,
            "missing required key \"aggregates\" (e.g. aggregates = { temp = \"mean\", temp_max = \"max(temp)\" })".into(),
        );
        return None;
    }
    let list = entries(op, "aggregates");
    let mut out = Vec::with_capacity(list.len());
    let mut valid = true;
    for (name, span, value) in list {
        let Some(text) = value.as_str() else {
            let message = format!(
                "operators.aggregates.{name} must be a string like \"mean\" or \"max(temp)\" (got {})",
                a(value.as_ref().type_str())
            );
            op.error(span, message);
            valid = false;
            continue;
        };
        let (function, input) = match text.split_once('(') {
            Some((function, rest)) => match rest.strip_suffix(')') {
                Some(input) => (function.trim(), input.trim()),
                None => {
                    let message = format!("operators.aggregates.{name} \"{text}\": missing ')'");
                    op.error(value.span, message);
                    valid = false;
                    continue;
                }
            },
            None => (text.trim(), name.as_str()),
        };
        if AggFn::from_name(function).is_none() {
            let accepted: Vec<&str> = AggFn::ALL.iter().map(|f| f.name()).collect();
            let message = format!(
                "operators.aggregates.{name} \"{text}\": unknown aggregate \"{function}\" (accepted: {})",
                accepted.join(", ")
            );
            op.error(value.span, message);
            valid = false;
            continue;
        }
        if let Some(names) = names {
            if !names.iter().any(|n| n == input) {
                let message = format!(
                    "operators.aggregates.{name} \"{text}\": \"{input}\" is not a field here (fields: {})",
                    names.join(", ")
                );
                op.error(value.span, message);
                valid = false;
                continue;
            }
        }
        if !rules::is_valid_field_name(&name) {
            let message = format!("operators.aggregates.{name}: \"{name}\" is not a usable field name (non-empty, without '/', '+', '#', '{{' or '}}')");
            op.error(span, message);
            valid = false;
            continue;
        }
        let (input, function) = (input.to_owned(), function.to_owned());
        out.push(AggregateConfig {
            name,
            input,
            function,
        });
    }
    if out.is_empty() && valid {
        let span = op.span;
        op.error(
            span,
            "operators.aggregates must have at least one entry".into(),
        );
        valid = false;
    }
    valid.then_some(out)
}
