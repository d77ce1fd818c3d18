//! `bounds = { field = { min = a, max = b } }` of a pipeline: the plausible range of its fields.

use toml_span::value::{Value, ValueInner};
use toml_span::{Span, Spanned};

use super::{a, Section};
use crate::config::schema::{FieldBounds, FieldConfig};

/// `bounds`: optional; each entry names one of the pipeline's `fields` (when they are valid;
/// `None` skips that check) and has a finite `min`, a finite `max` or both, `min < max`.
/// Returns the entries in file order, each with the span of its name, or `None` when one is
/// wrong (every problem is recorded).
pub(super) fn bounds(
    s: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
) -> Option<Vec<Spanned<FieldBounds>>> {
    let Some((_, mut value)) = s.take("bounds") else {
        return Some(Vec::new());
    };
    let span = value.span;
    let mut entries: Vec<_> = match value.take() {
        ValueInner::Table(table) => table
            .into_iter()
            .map(|(k, v)| (k.name.to_string(), k.span, v))
            .collect(),
        other => {
            let message = format!(
                "bounds must be a table of field = {{ min = a, max = b }} entries, e.g. bounds = {{ temp = {{ min = -50, max = 150 }} }} (got {})",
                a(other.type_str())
            );
            s.error(span, message);
            return None;
        }
    };
    entries.sort_by_key(|(_, span, _)| span.start);
    let mut valid = true;
    let mut list = Vec::with_capacity(entries.len());
    for (name, name_span, entry) in entries {
        if let Some(fields) = fields {
            if !fields.iter().any(|field| field.name == name) {
                let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                let message = format!(
                    "bounds.{name}: \"{name}\" is not one of the pipeline's fields (fields: {})",
                    names.join(", ")
                );
                s.error(name_span, message);
                valid = false;
            }
        }
        match range(&entry) {
            Ok((min, max)) => list.push(Spanned::with_span(
                FieldBounds {
                    field: name,
                    min,
                    max,
                },
                name_span,
            )),
            Err((span, message)) => {
                s.error(span, format!("bounds.{name}: {message}"));
                valid = false;
            }
        }
    }
    valid.then_some(list)
}

/// `{ min = a, max = b }`, either omitted (infinite) but not both, finite, `a < b`; on error
/// the span to point at and the message.
fn range(value: &Value<'_>) -> Result<(f64, f64), (Span, String)> {
    let Some(table) = value.as_table() else {
        return Err((
            value.span,
            format!(
                "must be {{ min = a, max = b }} (got {})",
                a(value.as_ref().type_str())
            ),
        ));
    };
    let (mut min, mut max) = (None, None);
    for (k, v) in table {
        let number = match v.as_ref() {
            ValueInner::Float(f) => *f,
            ValueInner::Integer(i) => *i as f64,
            other => {
                let message = format!("{} must be a number (got {})", k.name, a(other.type_str()));
                return Err((v.span, message));
            }
        };
        if !number.is_finite() {
            return Err((v.span, format!("{} must be finite (got {number})", k.name)));
        }
        match k.name.as_ref() {
            "min" => min = Some(number),
            "max" => max = Some(number),
            other => {
                let message = format!("unknown key \"{other}\" (accepted: min, max)");
                return Err((k.span, message));
            }
        }
    }
    match (min, max) {
        (None, None) => Err((
            value.span,
            "needs min, max or both, e.g. { min = -50, max = 150 }".to_owned(),
        )),
        (Some(min), Some(max)) if min >= max => Err((
            value.span,
            format!("min must be less than max (got min = {min}, max = {max})"),
        )),
        (min, max) => Ok((
            min.unwrap_or(f64::NEG_INFINITY),
            max.unwrap_or(f64::INFINITY),
        )),
    }
}
