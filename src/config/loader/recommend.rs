//! `kind = "recommend"`: the model's keys, and the rules the kind puts on the rest of its
//! pipeline.
//!
//! A recommend pipeline reads events: the key is the user, `model.item` names the field holding
//! the item and `model.weight` (optional) the field holding the event's weight, a number or an
//! event type looked up in `model.event_weights`. It reads nothing else, so other fields,
//! operators, anomaly detection, a `target` and `features` are reported, each where it is
//! written, and events must be JSON.

use std::time::Duration;

use toml_span::value::ValueInner;
use toml_span::{Span, Spanned};

use super::{a, field_names, model_validation, topic_template, Section, StringList};
use crate::config::schema::{
    FieldConfig, PayloadFormat, RecommendConfig, DEFAULT_SIMILAR_OUTPUT, DEFAULT_SNAPSHOT_INTERVAL,
};
use crate::model::recommend::ranges;
use crate::model::{RecommendParams, MAX_WEIGHT};
use crate::topic::{Placeholder, TopicFilter, TopicTemplate};

/// The keys of `[pipelines.model]` besides `kind` that `kind = "recommend"` reads.
pub(super) const PARAMETERS: &[&str] = &[
    "item",
    "weight",
    "event_weights",
    "history",
    "max_items",
    "max_neighbours",
    "top_n",
    "requests",
    "publish",
    "similar_output",
    "snapshot_interval",
];

/// Shortest `snapshot_interval`: a snapshot writes the whole similarity model (megabytes).
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// What a weight must be, for messages.
const WEIGHT_RANGE: &str = "greater than 0 and at most 1024";

/// The parts of a pipeline table, as written, that [`pipeline_rules`] checks; read before the
/// loader consumes them.
pub(super) struct Written<'a> {
    /// The payload format, with the span of the `format` value (`None`: not written, or not a
    /// valid format, which was reported).
    pub format: Option<(&'a PayloadFormat, Span)>,
    /// The span of `operators`, when written.
    pub operators: Option<Span>,
    /// The names in `fields`, with the span of each key.
    pub field_keys: &'a [Spanned<String>],
}

/// `[pipelines.model] kind = "recommend"`. `fields` are the pipeline's fields (`None` when they
/// are invalid: references are then not checked), `topics` its topic filters, which request
/// topics must not overlap. `None` when `item` or `weight` is unusable (reported).
pub(super) fn recommend(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
    topics: &[Spanned<TopicFilter>],
) -> Option<RecommendConfig> {
    // Taken from the table directly, so that they are not listed among the accepted keys.
    for (key, what) in [
        ("target", "there is no target"),
        ("features", "there is no target and there are no features"),
    ] {
        if let Some((written, _)) = m.helper.table.remove_entry(key) {
            let message = format!(
                "model.{key} does not apply to kind \"recommend\": {what}, the key is the user and model.item names the field holding the item (remove {key})"
            );
            m.error(written.span, message);
        }
    }
    let item = item(m, fields);
    let weight_given = m.helper.contains("weight");
    let weight = weight(m, fields, item.as_ref());
    let event_weights = event_weights(m);
    if let (Some(list), false) = (&event_weights, weight_given) {
        let message = "model.event_weights is set but model.weight is not (event types are read from the weight field: set weight to the field holding them, e.g. weight = \"type\")";
        m.error(list.span, message.into());
    }
    let d = RecommendParams::default();
    let params = RecommendParams {
        history: m.int_range(&ranges::HISTORY).unwrap_or(d.history),
        max_items: m.int_range(&ranges::MAX_ITEMS).unwrap_or(d.max_items),
        max_neighbours: m
            .int_range(&ranges::MAX_NEIGHBOURS)
            .unwrap_or(d.max_neighbours),
        top_n: m.int_range(&ranges::TOP_N).unwrap_or(d.top_n),
    };
    model_validation(m, params.validate());
    // Absent or `[]` (a mistyped value is reported as such).
    let no_request_topics = m
        .helper
        .table
        .get("requests")
        .is_none_or(|value| value.as_array().is_some_and(|list| list.is_empty()));
    let requests = requests(m, topics);
    let publish_on_event = match m.string("publish") {
        None => true,
        Some(publish) => match publish.value.as_str() {
            "event" => true,
            "request" => {
                if no_request_topics {
                    let message = "model.publish = \"request\" publishes lists only when asked, but model.requests gives no topic to ask on (add e.g. requests = [\"shop/requests\"], or publish = \"event\")";
                    m.error(publish.span, message.into());
                }
                false
            }
            other => {
                let message = format!(
                    "model.publish must be \"event\" (a user's list after each of their events, and on request) or \"request\" (only on request) (got \"{other}\")"
                );
                m.error(publish.span, message);
                true
            }
        },
    };
    let similar_output = topic_template(
        m,
        "similar_output",
        "model.similar_output",
        &[Placeholder::Pipeline, Placeholder::Key],
    );
    let snapshot_interval = m
        .duration("snapshot_interval", MIN_SNAPSHOT_INTERVAL)
        .map_or(DEFAULT_SNAPSHOT_INTERVAL, |v| v.value);
    let weight = match weight {
        Weight::None => None,
        Weight::Field(field) => Some(field),
        Weight::Unusable => return None,
    };
    Some(RecommendConfig {
        item: item?,
        weight,
        event_weights: event_weights.map_or_else(Vec::new, |list| list.value),
        params,
        requests,
        publish_on_event,
        similar_output: similar_output.map_or_else(
            || TopicTemplate::builtin(DEFAULT_SIMILAR_OUTPUT),
            |v| v.value,
        ),
        snapshot_interval,
    })
}

/// `item`: required, one of the pipeline's fields.
fn item(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<String> {
    let given = m.helper.contains("item");
    let Some(item) = m.string("item") else {
        if !given {
            let span = m.span;
            let example = fields
                .and_then(|fields| fields.first())
                .map_or("item", |field| field.name.as_str());
            let message = format!(
                "missing required key \"model.item\" (the field holding the item of each event, e.g. item = \"{example}\")"
            );
            m.error(span, message);
        }
        return None;
    };
    if let Some(fields) = fields {
        if !fields.iter().any(|field| field.name == item.value) {
            let message = format!(
                "model.item \"{}\" is not one of the pipeline's fields (fields: {})",
                item.value,
                field_names(fields)
            );
            m.error(item.span, message);
            return None;
        }
    }
    Some(item.value)
}

/// What `weight` gave.
enum Weight {
    /// Not written: every event weighs 1.
    None,
    /// The field holding the weight.
    Field(String),
    /// Written but wrong (reported).
    Unusable,
}

/// `weight`: optional, one of the pipeline's fields, not the item's.
fn weight(m: &mut Section<'_>, fields: Option<&[FieldConfig]>, item: Option<&String>) -> Weight {
    let given = m.helper.contains("weight");
    let Some(weight) = m.string("weight") else {
        return if given {
            Weight::Unusable
        } else {
            Weight::None
        };
    };
    let problem = if item == Some(&weight.value) {
        Some(format!(
            "model.weight \"{}\" is also model.item (the weight must be read from another field, or left out: every event then weighs 1)",
            weight.value
        ))
    } else {
        fields
            .filter(|fields| !fields.iter().any(|field| field.name == weight.value))
            .map(|fields| {
                format!(
                    "model.weight \"{}\" is not one of the pipeline's fields (fields: {})",
                    weight.value,
                    field_names(fields)
                )
            })
    };
    match problem {
        Some(message) => {
            m.error(weight.span, message);
            Weight::Unusable
        }
        None => Weight::Field(weight.value),
    }
}

/// `event_weights = { view = 1, cart = 3 }`: at least one entry, each a number in
/// (0, [`MAX_WEIGHT`]], no two names equal ignoring ASCII case; kept in file order. `None` when
/// absent or not a table (reported); the valid entries otherwise, with the table's span.
fn event_weights(m: &mut Section<'_>) -> Option<Spanned<Vec<(String, f64)>>> {
    const EXAMPLE: &str = "e.g. event_weights = { view = 1, cart = 3, purchase = 5 }";
    let (_, mut value) = m.take("event_weights")?;
    let span = value.span;
    let table = match value.take() {
        ValueInner::Table(table) => table,
        other => {
            let message = format!(
                "model.event_weights must be a table of event type = weight, {EXAMPLE} (got {})",
                a(other.type_str())
            );
            m.error(span, message);
            return None;
        }
    };
    if table.is_empty() {
        let message = format!(
            "model.event_weights must list at least one event type, {EXAMPLE} (or remove it when the weight field holds numbers)"
        );
        m.error(span, message);
        return Some(Spanned::with_span(Vec::new(), span));
    }
    // toml-span tables are sorted by name; the key spans give back the order as written,
    // which is the order messages list the event types in.
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span.start);
    let mut weights: Vec<(String, f64)> = Vec::with_capacity(entries.len());
    // Every name so far, valid or not: a duplicate is one whatever its first entry's value.
    let mut names: Vec<String> = Vec::with_capacity(entries.len());
    for (key, mut value) in entries {
        let name = key.name.to_string();
        let shown = dotted(&name);
        if let Some(first) = names.iter().find(|other| other.eq_ignore_ascii_case(&name)) {
            let message = format!(
                "model.event_weights.{shown} is the same event type as model.event_weights.{} (event types are matched ignoring ASCII case)",
                dotted(first)
            );
            m.error(key.span, message);
            continue;
        }
        names.push(name.clone());
        let weight = match value.take() {
            ValueInner::Integer(integer) => integer as f64,
            ValueInner::Float(float) => float,
            other => {
                let message = format!(
                    "model.event_weights.{shown} must be a number {WEIGHT_RANGE} (got {})",
                    a(other.type_str())
                );
                m.error(value.span, message);
                continue;
            }
        };
        // `!(… > 0)` also rejects NaN.
        let message = if name.is_empty() {
            Some("model.event_weights has an empty event type (\"\"), which no event can carry (an empty or missing weight field weighs 1)".to_owned())
        } else if !(weight > 0.0 && weight <= MAX_WEIGHT) {
            Some(format!(
                "model.event_weights.{shown} must be {WEIGHT_RANGE} (got {weight})"
            ))
        } else {
            None
        };
        match message {
            Some(message) => {
                let at = if name.is_empty() {
                    key.span
                } else {
                    value.span
                };
                m.error(at, message);
            }
            None => weights.push((name, weight)),
        }
    }
    Some(Spanned::with_span(weights, span))
}

/// A TOML key as written after a dot: bare when it can be, quoted otherwise.
fn dotted(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// `requests`: MQTT topic filters of request messages (default none), none overlapping the
/// pipeline's event `topics` (a message both match would be read as an event too).
fn requests(m: &mut Section<'_>, topics: &[Spanned<TopicFilter>]) -> Vec<TopicFilter> {
    let Some(list) = m.get::<StringList>("requests") else {
        return Vec::new();
    };
    let mut requests = Vec::with_capacity(list.value.0.len());
    for (index, request) in list.value.0.into_iter().enumerate() {
        let message = match TopicFilter::parse(&request.value) {
            Err(reason) => format!(
                "model.requests[{index}] \"{}\" is not a valid MQTT topic filter: {reason}",
                request.value
            ),
            Ok(filter) => match topics
                .iter()
                .enumerate()
                .find(|(_, topic)| topic.value.overlaps(&filter))
            {
                Some((events, topic)) => format!(
                    "model.requests[{index}] \"{}\" overlaps topics[{events}] \"{}\": a request on a topic both match would also be read as an event (give requests a topic of their own, outside the event topics)",
                    request.value, topic.value
                ),
                None => {
                    requests.push(filter);
                    continue;
                }
            },
        };
        m.error(request.span, message);
    }
    requests
}

/// The rules a recommend model puts on its pipeline: JSON events, no operators, and no field
/// but the item and the weight (checked when `model` is known: its `item` and `weight` are
/// valid).
pub(super) fn pipeline_rules(
    s: &mut Section<'_>,
    written: &Written<'_>,
    model: Option<&RecommendConfig>,
) {
    if let Some((format, span)) = written.format {
        if *format != PayloadFormat::Json {
            let message = format!(
                "format = \"{}\" cannot carry the events of model.kind \"recommend\": they are JSON objects with the item and the weight (use format = \"json\", the default)",
                format.name()
            );
            s.error(span, message);
        }
    }
    if let Some(span) = written.operators {
        let message = "[[pipelines.operators]] cannot be used with model.kind \"recommend\": each event goes to its user's history as decoded (remove the operators)";
        s.error(span, message.into());
    }
    let Some(model) = model else {
        return;
    };
    for field in written.field_keys {
        let name = &field.value;
        if *name == model.item || model.weight.as_ref() == Some(name) {
            continue;
        }
        let shown = dotted(name);
        let message = match &model.weight {
            Some(weight) => format!(
                "fields.{shown} is not read: a recommend pipeline reads only the item (model.item = \"{}\") and the weight (model.weight = \"{weight}\") of each event (remove fields.{shown})",
                model.item
            ),
            None => format!(
                "fields.{shown} is not read: a recommend pipeline reads only the item (model.item = \"{}\") and an optional weight (model.weight) of each event (remove fields.{shown}, or set model.weight = \"{name}\" if it holds the event's weight)",
                model.item
            ),
        };
        s.error(field.span, message);
    }
}
