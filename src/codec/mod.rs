//! Payload decoding: MQTT topic + payload bytes → readings (key, event time, field values).
//!
//! A [`Decoder`] is compiled once per pipeline from its validated config and then decodes every
//! message of that pipeline into a caller-owned [`ReadingBuf`]. One payload gives zero, one or
//! many readings ([`Decoder::decode_each`] calls back once per reading): a JSON batch, the lines
//! of a CSV payload, the records of a SenML pack. What cannot be decoded yields a
//! [`DecodeError`] whose [`DropReason`] is the metric label under which the drop is counted. A
//! problem with one reading drops that reading only; a problem with the payload as a whole
//! (size, UTF-8, JSON syntax, a pack that breaks RFC 8428) drops it once, before any reading is
//! made from it.
//!
//! # Rules
//!
//! * Checked first: size (`too_large`), then UTF-8 (`not_utf8`), then a key taken from the topic.
//! * `format = "json"`: fields, key and time are read by RFC 6901 pointer. A field must be a JSON
//!   number; a string is `not_a_number` even when it holds digits (`"21.5"`): converting would
//!   hide a sensor that sends the wrong type, and silently accept `"NaN"`. Numbers beyond the
//!   f64 range (`1e400`) are `non_finite`. A key must be a non-empty string or an integer.
//!   Duplicate member names: each occurrence is read, a later valid one overwrites an earlier
//!   value, and any bad occurrence fails the reading.
//!
//!   A payload whose top level is an array is a **batch**: each element is decoded as one
//!   reading with the same pointers, as if it were a payload of its own (so a pointer cannot
//!   address into the top-level array itself: `/0/value` of `[{"value":1}]` is looked for in
//!   the element, `{"value":1}`). The whole array is parsed before any element becomes a
//!   reading, so malformed JSON, or a number beyond the f64 range on a configured path, drops
//!   the batch once; any other problem drops its element only (errors name it: `element [2]`,
//!   0-based as in a pointer). An empty array gives no reading.
//! * `format = "number"`: the payload, trimmed of ASCII whitespace, is one number parsed as f64
//!   (Rust's float syntax, so `+1`, `.5` and `1e3` are accepted); `nan`/`inf`/`infinity` in any
//!   case and overflowing numbers are `non_finite`. Every configured field gets that value
//!   (validation allows exactly one field).
//! * `format = "csv"` (RFC 4180; see `csv.rs` for the syntax): one reading per line (LF or CRLF;
//!   blank lines skipped; with `header = true` a first line equal to the column names is
//!   skipped). A line is an object whose members are the columns: `"/temp"` is column `temp`.
//!   Cells are text: a field is a number in f64 syntax, blanks around it ignored (`nan`/`inf` are
//!   `non_finite`, anything else `not_a_number` quoting the text); an empty cell is a missing
//!   field; a key is the cell's text (quoted cells unescaped), non-empty; a time is a number or
//!   an RFC 3339 text, as `time_unit` says. A line with another number of cells than columns, a
//!   quote not closed, or text after a closing quote is `bad_csv`. Errors name the line
//!   (`line 3`, 1-based).
//! * `format = "senml"` (RFC 8428 JSON; see `senml.rs`): records are resolved (§4.6) with the
//!   caller's "now" for relative times (below 2^28 s), seconds → ms. Then
//!   - `key = "name"`: each record with a value or sum is a reading keyed by its resolved name
//!     (which must be a valid SenML name, else `missing_key`); its one field reads `v`, `vb`
//!     (1/0), `s` or `vs` (a label); a record without that value is `missing_field`.
//!   - `key = "basename"` or a topic key: records with the same resolved base name and time form
//!     one reading (in the order of their first record), keyed by the base name (a valid SenML
//!     name) or the topic; field `"/voltage"` is the record named `voltage` relative to the
//!     base name (the last one, if several), its `v`, `vb` (1/0), `vs` (a label only), or, for a
//!     record with only a sum, `s`. Records no field names are ignored.
//!
//!   Errors name the record (`record 3`, 1-based as RFC 8428 numbers them) or the group.
//! * Event time ([`TimeUnit`]): `s` (fractions allowed, rounded to ms), `ms`, `rfc3339`, or `auto`
//!   (numbers with |v| ≥ 1e11 are ms, smaller ones s; strings are RFC 3339).
//! * The model's target field (`model.target`) follows the model kind:
//!   - `forecast`: a required number, like every other field.
//!   - `regression`: an **optional** number. Missing or `null` gives `NaN` in
//!     [`ReadingBuf::values`]: the reading is predicted but not learnt. Any other non-number is
//!     still `not_a_number`.
//!   - `classification`: a **label**. JSON `true`/`false` are 1.0/0.0; a string or a number is
//!     matched, ignoring ASCII case, by its text against `model.positive` (→ 1.0) and
//!     `model.negative` (→ 0.0); a number's text is its shortest form (`1`, `0`, `1.5`: the
//!     JSON `1.0` matches `"1"`). Missing or `null` gives `NaN` (predict only). Anything else
//!     (an unlisted text, an object, an array) is `bad_label`. With `format = "number"`
//!     (which config validation does not allow for a classification) the bare number is
//!     matched the same way. A CSV cell is matched as a string, then as a number, then as
//!     `true`/`false`; a SenML `vb` is a boolean, `vs` a string, `v` a number.
//!   - `kmeans` has no target: every field is a required number.
//!   - `recommend` has no target either: the key is the user, and its only fields are the item
//!     (`model.item`) and, optionally, the weight (`model.weight`); see `event.rs`.
//!     - The **item** is text, written into [`ReadingBuf::text`] (its slot in `values` is 0.0):
//!       a JSON string of 1 to 64 bytes as is, a JSON integer as its decimal text (`3012` →
//!       `"3012"`, like an integer key). Missing, `null`, `""`, longer than 64 bytes, a
//!       boolean, a non-integer number (`1.5`, also `1.0`), an object or an array is
//!       `bad_event`.
//!     - The **weight** is a JSON number in (0, 1024], or a string looked up in
//!       `model.event_weights`, ignoring ASCII case (`"View"` is `view`) and otherwise exactly
//!       (no trimming): that event type's weight. Missing or `null` gives `NaN` (the runtime
//!       weighs the event 1). A number out of range, an unknown event type (the message lists
//!       the known ones), a boolean, an object or an array is `bad_event`.
//!
//!     A CSV cell is an item as its text, a weight as a number or else an event type (an empty
//!     cell is missing); a SenML `vs` is read as a string, `v` as a number (an integer item).
//!     Config validation only allows JSON for recommend events.
//!
//!   Features stay required numbers (a reading without one is `missing_field`). `NaN` in
//!   `values` therefore only ever means "absent optional target or weight": input never
//!   produces it (JSON has no NaN literal, `NaN`/`Infinity` are `malformed_json`, numbers
//!   beyond the f64 range are `non_finite`, and a number payload or CSV cell of `nan` is
//!   `non_finite`).
//!
//! When several things are wrong, the error reported is, in this order: size, UTF-8, topic key,
//! JSON syntax (SenML structure), then per reading: CSV syntax, key, time, then the first field
//! in config order (a bad label, item or weight counts as a problem of its field).
//!
//! # Allocation
//!
//! The hot path allocates nothing once the `ReadingBuf` is warm: the pointers are compiled
//! into a tree of path segments (`pointer::PathTree`) at construction; the JSON is read by a
//! `DeserializeSeed` that borrows member names from the payload and skips everything off the
//! configured paths with `IgnoredAny` (no `serde_json::Value`, no owned strings); the key is
//! copied (or an integer key formatted) into `out.key`, a recommend event's item likewise into
//! `out.text`, and the values written into `out.values`, reusing their capacity. serde_json allocates its scratch buffer (once per
//! payload, a few bytes) only for a string with escape sequences on a configured path or a
//! member name with escapes, and for containers nested two or more deep inside a skipped
//! member; a `malformed_json` error also allocates. Labels are matched against lists
//! lowercased once at construction, a number label formatted into a stack buffer (only a
//! number whose text exceeds 40 bytes is formatted on the heap). Event types are compared in
//! place (`eq_ignore_ascii_case`); a `bad_event` error shares the pipeline's event types by
//! `Arc` and keeps at most 32 bytes of the offending text inline, so it allocates nothing
//! either.
//!
//! A JSON batch is parsed twice (once to check the whole array, once to make the readings),
//! with the same allocation profile as a single document. CSV lines are read straight from
//! the payload (only a label or event-type cell with `""` escapes is copied). A SenML pack is resolved into
//! a list kept on the stack up to 16 records (strings borrowed from the payload unless they
//! have escapes); a larger pack allocates that list, and grouped packs a list of indices. The
//! tests `warm_decode_does_not_allocate`, `warm_batch_and_csv_decode_does_not_allocate`,
//! `warm_recommend_decode_does_not_allocate` and `senml_allocations_are_bounded` check these.

mod checks;
mod csv;
mod decode_senml;
mod error;
mod event;
mod json;
mod label;
pub mod pointer;
pub mod request;
mod senml;
mod shown;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::de::DeserializeSeed;
use smallvec::SmallVec;

use crate::config::{KeySource, ModelConfig, PayloadFormat, PipelineConfig, TimeUnit};
use csv::{CsvPlan, LineOut, LineProblem, Lines};
pub use error::{DecodeError, DropReason};
use error::{Element, LabelText, Location, Problem, EXPECTED_KEY, EXPECTED_LABEL, EXPECTED_NUMBER};
use event::{
    item_from_float, item_from_text, weight_from_number, weight_from_text, EventProblem,
    EventWeights,
};
use json::{
    BatchSeed, FieldProblem, FieldRole, KeySlot, LabelProblem, NodeSeed, Outcome, Roles, TimeSlot,
    Walk, WalkConfig, MAX_ROLES,
};
use label::{LabelNumber, LabelSet};
use pointer::{parse_pointer, PathTree, Target, ROOT};
use senml::{Pack, Record, RecordValue, SenmlValue};
use shown::{Found, Snippet};

use crate::topic::first_bad_character;

/// The longest key accepted, in bytes (UTF-8). Keys name actors, store entries and a level
/// of every output topic: 1 KiB is far above any sensor id and keeps a topic well inside
/// MQTT's 65,535-byte limit. Longer keys are dropped as `bad_key`.
pub const MAX_KEY_BYTES: usize = 1024;

/// Reusable output buffer: the decoder overwrites it, so the hot path allocates nothing once warm.
///
/// After a failed decode its contents are unspecified (partly written).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadingBuf {
    /// The key (sensor id) of the reading; a recommend pipeline's user.
    pub key: String,
    /// The item of a recommend pipeline's event (a string item as sent, an integer item as its
    /// decimal text); empty otherwise. Like `key`, it is rewritten for every reading, reusing
    /// its capacity.
    pub text: String,
    /// Event time in Unix milliseconds; `None` when the pipeline has no time source.
    pub time_ms: Option<i64>,
    /// One value per configured field, in the pipeline's field order.
    ///
    /// `NaN` means "absent optional field": a regression target or classification label
    /// that was missing or `null` (predict, do not learn), or a recommend event's weight that
    /// was missing or `null` (weight 1). It never comes from input: NaN and infinite inputs
    /// are dropped (`non_finite`, `malformed_json`). A label is 1.0 (positive) or 0.0
    /// (negative). A recommend event's item is 0.0 (its text is in `text`); its weight is in
    /// (0, 1024].
    pub values: Vec<f64>,
}

/// A configured field as the decoder keeps it: names shared with errors without copying.
#[derive(Debug)]
struct FieldPlan {
    name: Arc<str>,
    pointer: Arc<str>,
    pointer_valid: bool,
}

/// Where the key comes from, compiled.
#[derive(Debug)]
enum KeyPlan {
    Topic,
    TopicLevel(usize),
    Pointer { pointer: Arc<str>, valid: bool },
    RecordName,
    BaseName,
}

/// How a field the model kind gives a role is read, instead of as a plain required number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RolePlan {
    /// A regression target: missing or `null` is `NaN`.
    Optional,
    /// A classification label, matched against [`Decoder::labels`].
    Label,
    /// A recommend event's item: text into [`ReadingBuf::text`], required.
    Item,
    /// A recommend event's weight: a number, or an event type of [`Decoder::event_weights`];
    /// missing or `null` is `NaN`.
    Weight,
}

/// Where the time comes from, compiled.
#[derive(Debug)]
struct TimePlan {
    pointer: Arc<str>,
    valid: bool,
    unit: TimeUnit,
}

/// The payload format, compiled.
#[derive(Debug)]
enum Format {
    Json,
    Number,
    Csv(CsvPlan),
    Senml(SenmlPlan),
}

/// How SenML records become readings.
#[derive(Debug)]
enum SenmlPlan {
    /// `key = "name"`: one reading per record; per field, the value it reads (`None`: the
    /// pointer is none of `v`, `vb`, `s`, `vs`).
    PerRecord(Box<[Option<SenmlValue>]>),
    /// Records grouped by base name and time; per field, the record name it reads (`None`: the
    /// pointer is not one record name).
    Grouped(Box<[Option<Box<str>>]>),
}

/// A value found for a field in a SenML record.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Number(f64),
    Bool(bool),
    Text(&'a str),
    /// A value that is never a reading's (`vd`).
    Data,
}

/// A payload decoder compiled once from a validated [`PipelineConfig`].
///
/// (`Debug` is implemented next to `pipeline::Pipeline`, which prints it as `Decoder`.)
pub struct Decoder {
    format: Format,
    max_payload_bytes: usize,
    fields: Vec<FieldPlan>,
    key: KeyPlan,
    /// Not used for `format = "senml"` (records carry their time).
    time: Option<TimePlan>,
    /// The fields with a role and their plans: the regression target, the classification
    /// label, or a recommend pipeline's item and weight. None for forecast and kmeans.
    roles: [Option<(usize, RolePlan)>; MAX_ROLES],
    /// The label lists of a classification pipeline (empty otherwise); shared with errors.
    labels: Arc<LabelSet>,
    /// The event types of a recommend pipeline (empty otherwise); shared with errors.
    event_weights: Arc<EventWeights>,
    /// The JSON pointers (`format = "json"`).
    tree: PathTree,
    /// The configured bounds: field index, min, max (`bounds`).
    bounds: Box<[(usize, f64, f64)]>,
}

impl Decoder {
    /// Compiles the decoder of pipeline `p`; `p.model` decides how its target field (or a
    /// recommend pipeline's item and weight) is read (see the module documentation).
    ///
    /// The config is expected to be validated; nothing here fails. A pointer the format cannot
    /// resolve anyway (not valid RFC 6901, no such CSV column, not a SenML value) makes every
    /// reading fail with the reason of what it points to (`missing_field`, `missing_key` or
    /// `bad_time`) and a message naming the pointer.
    pub fn new(p: &PipelineConfig) -> Decoder {
        let mut tree = PathTree::new();
        let mut csv = match &p.format {
            PayloadFormat::Csv(config) => Some(CsvPlan::new(config)),
            _ => None,
        };
        let senml = matches!(p.format, PayloadFormat::Senml);
        let per_record = senml && p.key == KeySource::RecordName;
        // Pointers are resolved where the format reads them: CSV columns, SenML record names
        // or values (kept in the plan below), or the JSON tree.
        let mut insert = |pointer: &str, target: Target| match &mut csv {
            Some(plan) => plan.insert(pointer, target),
            None if per_record => SenmlValue::parse(pointer).is_some(),
            None if senml => record_name(pointer).is_some(),
            None => tree.insert(pointer, target),
        };
        let fields = p
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldPlan {
                name: Arc::from(f.name.as_str()),
                pointer: Arc::from(f.pointer.as_str()),
                pointer_valid: insert(&f.pointer, Target::Field(i)),
            })
            .collect();
        let key = match &p.key {
            KeySource::Topic => KeyPlan::Topic,
            KeySource::TopicLevel(n) => KeyPlan::TopicLevel(*n),
            KeySource::Pointer(pointer) => KeyPlan::Pointer {
                pointer: Arc::from(pointer.as_str()),
                valid: !senml && insert(pointer, Target::Key),
            },
            KeySource::RecordName => KeyPlan::RecordName,
            KeySource::BaseName => KeyPlan::BaseName,
        };
        let time = p.time.as_ref().map(|t| TimePlan {
            pointer: Arc::from(t.pointer.as_str()),
            valid: !senml && insert(&t.pointer, Target::Time),
            unit: t.unit,
        });
        let format = match &p.format {
            PayloadFormat::Json => Format::Json,
            PayloadFormat::Number => Format::Number,
            PayloadFormat::Csv(config) => Format::Csv(csv.unwrap_or_else(|| CsvPlan::new(config))),
            PayloadFormat::Senml if per_record => Format::Senml(SenmlPlan::PerRecord(
                p.fields
                    .iter()
                    .map(|f| SenmlValue::parse(&f.pointer))
                    .collect(),
            )),
            PayloadFormat::Senml => Format::Senml(SenmlPlan::Grouped(
                p.fields.iter().map(|f| record_name(&f.pointer)).collect(),
            )),
        };
        let index = |name: &str| p.fields.iter().position(|f| f.name == name);
        let target = |plan: RolePlan| {
            let role = p.model.target().and_then(index).map(|i| (i, plan));
            [role, None]
        };
        let no_labels = || LabelSet::new(&[], &[]);
        let (roles, labels, event_weights) = match &p.model {
            ModelConfig::Forecast(_) | ModelConfig::KMeans(_) | ModelConfig::Anomaly(_) => {
                ([None; MAX_ROLES], no_labels(), EventWeights::new(&[]))
            }
            ModelConfig::Regression(_) => (
                target(RolePlan::Optional),
                no_labels(),
                EventWeights::new(&[]),
            ),
            ModelConfig::Classification(c) => (
                target(RolePlan::Label),
                LabelSet::new(&c.positive, &c.negative),
                EventWeights::new(&[]),
            ),
            ModelConfig::Recommend(r) => (
                [
                    index(&r.item).map(|i| (i, RolePlan::Item)),
                    r.weight
                        .as_deref()
                        .and_then(index)
                        .map(|i| (i, RolePlan::Weight)),
                ],
                no_labels(),
                EventWeights::new(&r.event_weights),
            ),
        };
        Decoder {
            format,
            max_payload_bytes: p.max_payload_bytes,
            fields,
            key,
            time,
            roles,
            labels: Arc::new(labels),
            event_weights: Arc::new(event_weights),
            tree,
            bounds: p
                .bounds
                .iter()
                .filter_map(|b| index(&b.field).map(|i| (i, b.min, b.max)))
                .collect(),
        }
    }

    /// The fields with a role, as a walk reads them.
    fn roles(&self) -> Roles<'_> {
        Roles(self.roles.map(|slot| {
            slot.map(|(index, plan)| {
                let role = match plan {
                    RolePlan::Optional => FieldRole::Optional,
                    RolePlan::Label => FieldRole::Label(&self.labels),
                    RolePlan::Item => FieldRole::Item,
                    RolePlan::Weight => FieldRole::Weight(&self.event_weights),
                };
                (index, role)
            })
        }))
    }

    /// The role of field `i`, if it has one.
    fn role(&self, i: usize) -> Option<FieldRole<'_>> {
        self.roles().of(i)
    }

    /// The plan of field `i`, if it has a role.
    fn plan(&self, i: usize) -> Option<RolePlan> {
        self.roles
            .iter()
            .flatten()
            .find(|(index, _)| *index == i)
            .map(|&(_, plan)| plan)
    }

    fn walk_config(&self) -> WalkConfig<'_> {
        WalkConfig {
            tree: &self.tree,
            time_unit: self.time_unit(),
            roles: self.roles(),
        }
    }

    fn time_unit(&self) -> TimeUnit {
        self.time.as_ref().map_or(TimeUnit::Auto, |t| t.unit)
    }

    /// The configured field names, in the order of [`ReadingBuf::values`].
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| &*f.name)
    }

    /// Decodes one payload arriving on `topic`, calling `on_reading` with `out` once per
    /// reading it holds (key, time and values set) and `on_error` once per reading dropped,
    /// or once for a payload dropped as a whole. `now_ms` is the time relative SenML times
    /// count from (Unix ms; the arrival time in `run`).
    ///
    /// See the module documentation for the rules and the order in which problems are
    /// reported.
    pub fn decode_each(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        out: &mut ReadingBuf,
        mut on_reading: impl FnMut(&ReadingBuf),
        mut on_error: impl FnMut(DecodeError),
    ) {
        out.key.clear();
        out.text.clear();
        out.time_ms = None;
        out.values.clear();
        let text = match self.payload_text(topic, payload, &mut out.key) {
            Ok(text) => text,
            Err(e) => return on_error(e),
        };
        // Every reading's key is checked here, once, whichever format and key source produced
        // it. The RefCell lets both callbacks report errors; it is never borrowed twice
        // (`on_error` does not call back into the decoder).
        let on_error = std::cell::RefCell::new(on_error);
        let mut error = |e: DecodeError| (on_error.borrow_mut())(e);
        let mut reading = |out: &ReadingBuf| match self
            .validate_key(&out.key)
            .and_then(|()| self.check_bounds(&out.values))
        {
            Ok(()) => on_reading(out),
            Err(e) => (on_error.borrow_mut())(e),
        };
        match &self.format {
            Format::Json if is_json_array(text) => {
                self.decode_json_batch(text, out, &mut reading, &mut error)
            }
            Format::Json => match self.decode_json(text, out) {
                Ok(()) => reading(out),
                Err(e) => error(e),
            },
            Format::Number => match self.decode_number(text, out) {
                Ok(()) => reading(out),
                Err(e) => error(e),
            },
            Format::Csv(plan) => self.decode_csv(plan, text, out, &mut reading, &mut error),
            Format::Senml(plan) => {
                self.decode_senml(plan, text, now_ms, out, &mut reading, &mut error)
            }
        }
    }

    /// Decodes one payload that is expected to hold one reading (for tests and tools; relative
    /// SenML times count from 0). `Ok(n)`: `n` readings, the last one in `out`.
    ///
    /// # Errors
    /// The first [`DecodeError`] of the payload, whose `reason` says why the reading (or the
    /// payload) is dropped.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        out: &mut ReadingBuf,
    ) -> Result<usize, DecodeError> {
        let mut readings = 0;
        let mut first_error = None;
        self.decode_each(
            topic,
            payload,
            0,
            out,
            |_| readings += 1,
            |e| {
                first_error.get_or_insert(e);
            },
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(readings),
        }
    }

    /// The checks before any format: size, UTF-8 and a key taken from the topic (written into
    /// `key`).
    fn payload_text<'p>(
        &self,
        topic: &str,
        payload: &'p [u8],
        key: &mut String,
    ) -> Result<&'p str, DecodeError> {
        if payload.len() > self.max_payload_bytes {
            return Err(DecodeError::new(
                DropReason::TooLarge,
                Location::Payload,
                Problem::TooLarge {
                    len: payload.len(),
                    limit: self.max_payload_bytes,
                },
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|e| {
            DecodeError::new(
                DropReason::NotUtf8,
                Location::Payload,
                Problem::NotUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            )
        })?;
        self.key_from_topic(topic, key)?;
        Ok(text)
    }

    /// A decoded key that can name an actor and fill a topic level: at most
    /// [`MAX_KEY_BYTES`], no control character, Unicode noncharacter or MQTT wildcard (a
    /// broker refuses such a topic and may drop the connection; a key longer than a topic
    /// can hold would be cut by the encoder).
    fn validate_key(&self, key: &str) -> Result<(), DecodeError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(self.bad_key(Problem::KeyTooLong { len: key.len() }));
        }
        match first_bad_character(key) {
            Some((at, character)) => Err(self.bad_key(Problem::KeyCharacter { character, at })),
            None => Ok(()),
        }
    }

    /// The first decoded value outside its field's bounds, as an `implausible` error. An
    /// absent optional value (`NaN`) is never outside.
    fn check_bounds(&self, values: &[f64]) -> Result<(), DecodeError> {
        for &(i, min, max) in self.bounds.iter() {
            let Some(&value) = values.get(i) else {
                continue;
            };
            if value < min || value > max {
                let problem = Problem::Implausible { value, min, max };
                return Err(self.field_error(i, DropReason::Implausible, problem));
            }
        }
        Ok(())
    }

    fn bad_key(&self, problem: Problem) -> DecodeError {
        let location = match &self.key {
            KeyPlan::Topic => Location::TopicKey(None),
            KeyPlan::TopicLevel(n) => Location::TopicKey(Some(*n)),
            KeyPlan::Pointer { pointer, .. } => Location::PayloadKey {
                pointer: Arc::clone(pointer),
            },
            KeyPlan::RecordName => Location::RecordName,
            KeyPlan::BaseName => Location::BaseName,
        };
        DecodeError::new(DropReason::BadKey, location, problem)
    }

    /// Writes a topic-derived key into `key`; does nothing for a payload key.
    fn key_from_topic(&self, topic: &str, key: &mut String) -> Result<(), DecodeError> {
        match self.key {
            KeyPlan::Topic if topic.is_empty() => Err(DecodeError::new(
                DropReason::MissingKey,
                Location::TopicKey(None),
                Problem::EmptyTopic,
            )),
            KeyPlan::Topic => {
                key.push_str(topic);
                Ok(())
            }
            KeyPlan::TopicLevel(n) => match topic_level(topic, n) {
                Some(level) if !level.is_empty() => {
                    key.push_str(level);
                    Ok(())
                }
                _ => Err(DecodeError::new(
                    DropReason::MissingKey,
                    Location::TopicKey(Some(n)),
                    Problem::NoTopicLevel,
                )),
            },
            KeyPlan::Pointer { .. } | KeyPlan::RecordName | KeyPlan::BaseName => Ok(()),
        }
    }

    fn decode_number(&self, text: &str, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        match &self.key {
            KeyPlan::Pointer { pointer, .. } => {
                return Err(DecodeError::new(
                    DropReason::MissingKey,
                    Location::PayloadKey {
                        pointer: pointer.clone(),
                    },
                    Problem::PointerNeedsJson { format: "number" },
                ))
            }
            KeyPlan::RecordName | KeyPlan::BaseName => {
                return Err(self.key_needs_senml("number"));
            }
            KeyPlan::Topic | KeyPlan::TopicLevel(_) => {}
        }
        if let Some(time) = &self.time {
            return Err(DecodeError::new(
                DropReason::BadTime,
                Location::Time {
                    pointer: time.pointer.clone(),
                },
                Problem::PointerNeedsJson { format: "number" },
            ));
        }
        let trimmed = text.trim_ascii();
        if trimmed.is_empty() {
            return Err(DecodeError::new(
                DropReason::NotANumber,
                Location::Payload,
                Problem::EmptyPayload,
            ));
        }
        let value: f64 = trimmed.parse().map_err(|_| {
            DecodeError::new(
                DropReason::NotANumber,
                Location::Payload,
                Problem::NotANumberText(Snippet::new(trimmed)),
            )
        })?;
        if !value.is_finite() {
            return Err(DecodeError::new(
                DropReason::NonFinite,
                Location::Payload,
                Problem::NonFiniteText(Snippet::new(trimmed)),
            ));
        }
        out.values.resize(self.fields.len(), value);
        for &(index, plan) in self.roles.iter().flatten() {
            out.values[index] = match plan {
                RolePlan::Optional => value,
                RolePlan::Label => match self.labels.classify_number(LabelNumber::Float(value)) {
                    Ok(positive) => f64::from(u8::from(positive)),
                    Err(text) => {
                        let problem = LabelProblem::Unknown(LabelText::Number(text));
                        return Err(self.bad_label(index, problem));
                    }
                },
                // Not a combination the config allows (recommend events are JSON); the number
                // is read as an integer item, or as a weight.
                RolePlan::Item => item_from_float(value, &mut out.text)
                    .map(|()| 0.0)
                    .map_err(|problem| self.bad_event(index, problem))?,
                RolePlan::Weight => {
                    weight_from_number(value).map_err(|problem| self.bad_event(index, problem))?
                }
            };
        }
        Ok(())
    }

    fn decode_json(&self, text: &str, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        // NaN marks "not found yet": a JSON number never decodes to NaN.
        out.values.resize(self.fields.len(), f64::NAN);
        let mut walk = Walk::new(
            self.walk_config(),
            &mut out.values,
            &mut out.key,
            &mut out.text,
        );
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let parsed = NodeSeed {
            walk: &mut walk,
            node: ROOT,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
        if let Err(e) = parsed {
            return Err(json_syntax_error(e));
        }
        let outcome = walk.outcome();
        self.finish(outcome, out)
    }

    /// A top-level JSON array: each element one reading.
    fn decode_json_batch(
        &self,
        text: &str,
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        out.values.resize(self.fields.len(), f64::NAN);
        // The whole array must parse before any element becomes a reading: serde_json stops at
        // the first error, and readings made before it could not be taken back.
        if let Err(e) = self.walk_batch(text, out, |_, _, _| {}) {
            return on_error(json_syntax_error(e));
        }
        let result = self.walk_batch(text, out, |index, out, outcome| {
            match self.finish(outcome, out) {
                Ok(()) => on_reading(out),
                Err(e) => on_error(e.at(Element::batch(index))),
            }
        });
        // The same text walked the same way: it cannot fail now, but a drop is never silent.
        if let Err(e) = result {
            on_error(json_syntax_error(e));
        }
    }

    fn walk_batch(
        &self,
        text: &str,
        out: &mut ReadingBuf,
        each: impl FnMut(usize, &mut ReadingBuf, Outcome),
    ) -> Result<(), serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        BatchSeed {
            config: self.walk_config(),
            out,
            each,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()
    }

    /// Every line of a CSV payload.
    fn decode_csv(
        &self,
        plan: &CsvPlan,
        text: &str,
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        out.values.resize(self.fields.len(), f64::NAN);
        let mut lines = Lines::new(plan, text);
        loop {
            let line_out = LineOut {
                key: &mut out.key,
                text: &mut out.text,
                values: &mut out.values,
            };
            let Some(line) = lines.next_line(line_out, self.time_unit(), |i| self.role(i)) else {
                break;
            };
            let result = match line.outcome {
                Ok(outcome) => self.finish(outcome, out),
                Err(problem) => Err(csv_error(problem)),
            };
            match result {
                Ok(()) => on_reading(out),
                Err(e) => on_error(e.at(Element::line(line.number))),
            }
        }
    }
}

/// Whether a JSON text is an array (a batch): its first non-whitespace byte is `[`.
fn is_json_array(text: &str) -> bool {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| b == b'[')
}

/// The record name a SenML field pointer names (`"/voltage"` → `voltage`): one RFC 6901 token.
fn record_name(pointer: &str) -> Option<Box<str>> {
    let tokens = parse_pointer(pointer).ok()?;
    match <[String; 1]>::try_from(tokens) {
        Ok([token]) => Some(token.into_boxed_str()),
        Err(_) => None,
    }
}

/// The `bad_csv` error of a line's syntax.
fn csv_error(problem: LineProblem) -> DecodeError {
    let problem = match problem {
        LineProblem::UnterminatedQuote => Problem::UnterminatedQuote,
        LineProblem::TextAfterQuote(column) => Problem::TextAfterQuote { column },
        LineProblem::ColumnCount { expected, found } => Problem::ColumnCount { expected, found },
    };
    DecodeError::new(DropReason::BadCsv, Location::Payload, problem)
}

/// The `bad_time` error of a SenML record whose resolved time is out of range.
fn senml_time_error() -> DecodeError {
    DecodeError::new(
        DropReason::BadTime,
        Location::RecordTime,
        Problem::SenmlTimeOutOfRange,
    )
}

/// Level `n` (0-based) of `topic`, as `topic.split('/').nth(n)` but without a `str` searcher
/// (this runs for every message).
fn topic_level(topic: &str, n: usize) -> Option<&str> {
    let bytes = topic.as_bytes();
    let mut start = 0;
    for _ in 0..n {
        start += bytes.get(start..)?.iter().position(|&b| b == b'/')? + 1;
    }
    let end = bytes[start..]
        .iter()
        .position(|&b| b == b'/')
        .map_or(bytes.len(), |i| start + i);
    // `/` is ASCII, so both ends are on character boundaries and `get` always succeeds.
    topic.get(start..end)
}

fn expected_time(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Auto => "a number or an RFC 3339 string",
        TimeUnit::Seconds => "a number of seconds",
        TimeUnit::Milliseconds => "a number of milliseconds",
        TimeUnit::Rfc3339 => "an RFC 3339 string",
    }
}

/// Classifies an error from serde_json. The visitors never fail, so it is a syntax error, except
/// for a number beyond the f64 range (`1e400`), which serde_json reports as a syntax error only
/// when it has to convert the number (on a configured path; skipped numbers are not converted).
/// serde_json offers no error code for it, so the message is matched; the test
/// `overflowing_number_is_non_finite` notices if it ever changes.
fn json_syntax_error(e: serde_json::Error) -> DecodeError {
    use std::fmt::Write as _;

    /// Keeps the first bytes of a message without allocating.
    struct Prefix {
        buf: [u8; 19],
        len: usize,
    }
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }
    const OUT_OF_RANGE: &[u8] = b"number out of range";
    let mut prefix = Prefix {
        buf: [0; 19],
        len: 0,
    };
    let _ = write!(prefix, "{e}");
    if prefix.buf[..prefix.len] == *OUT_OF_RANGE {
        DecodeError::new(
            DropReason::NonFinite,
            Location::Payload,
            Problem::NumberOutOfRange(e),
        )
    } else {
        DecodeError::new(
            DropReason::MalformedJson,
            Location::Payload,
            Problem::Malformed(e),
        )
    }
}
