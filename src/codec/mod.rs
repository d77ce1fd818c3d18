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

mod csv;
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

    /// A SenML pack: resolved first, then turned into readings as the plan says.
    fn decode_senml(
        &self,
        plan: &SenmlPlan,
        text: &str,
        now_ms: i64,
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        let pack = match senml::read_pack(text, now_ms) {
            Ok(Ok(pack)) => pack,
            Ok(Err((record, problem))) => {
                let e = DecodeError::new(DropReason::BadSenml, Location::Payload, problem);
                return on_error(match record {
                    Some(number) => e.at(Element::record(number)),
                    None => e,
                });
            }
            Err(e) => return on_error(json_syntax_error(e)),
        };
        out.values.resize(self.fields.len(), f64::NAN);
        match plan {
            SenmlPlan::PerRecord(values) => {
                for record in &pack.records {
                    match self.senml_record(&pack, record, values, out) {
                        Ok(()) => on_reading(out),
                        Err(e) => on_error(e.at(Element::record(record.number))),
                    }
                }
            }
            SenmlPlan::Grouped(names) => self.senml_groups(&pack, names, out, on_reading, on_error),
        }
    }

    /// One record as one reading (`key = "name"`).
    fn senml_record(
        &self,
        pack: &Pack<'_>,
        record: &Record<'_>,
        values: &[Option<SenmlValue>],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        out.text.clear();
        match &self.key {
            KeyPlan::RecordName => {
                out.key.clear();
                out.key.push_str(pack.base_name(record));
                out.key.push_str(&record.name);
                if !senml::is_valid_name(&out.key) {
                    return Err(DecodeError::new(
                        DropReason::MissingKey,
                        Location::RecordName,
                        Problem::InvalidSenmlName(Snippet::new(&out.key)),
                    ));
                }
            }
            _ => self.senml_other_key()?,
        }
        out.time_ms = Some(record.time_ms.ok_or_else(senml_time_error)?);
        for (i, value) in values.iter().enumerate() {
            let Some(value) = *value else {
                return Err(self.field_error(i, DropReason::MissingField, Problem::NotSenmlValue));
            };
            let found = match (value, &record.value, record.sum) {
                (SenmlValue::V, RecordValue::Number(x), _) => Some(Seen::Number(*x)),
                (SenmlValue::Vb, RecordValue::Bool(b), _) => Some(Seen::Bool(*b)),
                (SenmlValue::Vs, RecordValue::String(s), _) => Some(Seen::Text(s)),
                (SenmlValue::S, _, Some(sum)) => Some(Seen::Number(sum)),
                _ => None,
            };
            out.values[i] = match found {
                Some(found) => self.senml_value(i, found, &mut out.text)?,
                None => self.absent(
                    i,
                    Problem::SenmlNoValue {
                        wanted: value.label(),
                        found: record.value.label(),
                    },
                )?,
            };
        }
        Ok(())
    }

    /// The records some field names, grouped by base name and time, each group one reading.
    fn senml_groups(
        &self,
        pack: &Pack<'_>,
        names: &[Option<Box<str>>],
        out: &mut ReadingBuf,
        on_reading: &mut impl FnMut(&ReadingBuf),
        on_error: &mut impl FnMut(DecodeError),
    ) {
        let named = |record: &Record<'_>| names.iter().flatten().any(|n| **n == *record.name);
        // The records read, in pack order; one whose time is out of range cannot be grouped.
        let mut members: SmallVec<[usize; 16]> = SmallVec::with_capacity(pack.records.len());
        for (index, record) in pack.records.iter().enumerate() {
            if !named(record) {
                continue;
            }
            if record.time_ms.is_none() {
                on_error(senml_time_error().at(Element::record(record.number)));
                continue;
            }
            members.push(index);
        }
        let same_group = |a: &Record<'_>, b: &Record<'_>| {
            pack.base_name(a)
                .cmp(pack.base_name(b))
                .then(a.time_ms.cmp(&b.time_ms))
        };
        // A stable sort keeps pack order inside each group, so a group's first member is its
        // first record.
        members.sort_by(|&a, &b| same_group(&pack.records[a], &pack.records[b]));
        let mut groups: SmallVec<[(usize, usize); 16]> = SmallVec::with_capacity(members.len());
        let mut start = 0;
        while let Some(&first) = members.get(start) {
            let end = members[start..]
                .iter()
                .position(|&m| same_group(&pack.records[first], &pack.records[m]).is_ne())
                .map_or(members.len(), |offset| start + offset);
            groups.push((start, end));
            start = end;
        }
        groups.sort_by_key(|&(start, _)| members[start]);
        for (start, end) in groups {
            let group = &members[start..end];
            let first = &pack.records[group[0]];
            match self.senml_group(pack, names, group, out) {
                Ok(()) => on_reading(out),
                Err(e) => on_error(e.at(Element::group(first.number))),
            }
        }
    }

    /// One group of records as one reading.
    fn senml_group(
        &self,
        pack: &Pack<'_>,
        names: &[Option<Box<str>>],
        group: &[usize],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        let first = &pack.records[group[0]];
        out.text.clear();
        match &self.key {
            KeyPlan::BaseName => {
                let base = pack.base_name(first);
                out.key.clear();
                out.key.push_str(base);
                if !senml::is_valid_name(base) {
                    return Err(DecodeError::new(
                        DropReason::MissingKey,
                        Location::BaseName,
                        Problem::InvalidSenmlName(Snippet::new(base)),
                    ));
                }
            }
            _ => self.senml_other_key()?,
        }
        out.time_ms = first.time_ms;
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else {
                return Err(self.field_error(i, DropReason::MissingField, Problem::NotRecordName));
            };
            // The last record of that name counts.
            let record = group
                .iter()
                .rev()
                .map(|&r| &pack.records[r])
                .find(|r| *r.name == **name);
            let found = record.map(|record| match (&record.value, record.sum) {
                (RecordValue::Number(x), _) => Seen::Number(*x),
                (RecordValue::Bool(b), _) => Seen::Bool(*b),
                (RecordValue::String(s), _) => Seen::Text(s),
                (RecordValue::Data, _) => Seen::Data,
                (RecordValue::None, sum) => Seen::Number(sum.unwrap_or(f64::NAN)),
            });
            out.values[i] = match found {
                Some(found) => self.senml_value(i, found, &mut out.text)?,
                None => self.absent(i, Problem::Missing)?,
            };
        }
        Ok(())
    }

    /// A key that is neither the record name nor the base name: only a topic key works (it is
    /// already in `out.key`).
    fn senml_other_key(&self) -> Result<(), DecodeError> {
        match &self.key {
            KeyPlan::Pointer { pointer, .. } => Err(DecodeError::new(
                DropReason::MissingKey,
                Location::PayloadKey {
                    pointer: pointer.clone(),
                },
                Problem::PointerNeedsJson { format: "senml" },
            )),
            KeyPlan::RecordName => Err(DecodeError::new(
                DropReason::MissingKey,
                Location::RecordName,
                Problem::NotGrouped,
            )),
            KeyPlan::Topic | KeyPlan::TopicLevel(_) | KeyPlan::BaseName => Ok(()),
        }
    }

    /// The value of field `i` from a SenML record, by the field's role (an item is written
    /// into `text`).
    fn senml_value(
        &self,
        i: usize,
        found: Seen<'_>,
        text: &mut String,
    ) -> Result<f64, DecodeError> {
        let one_or_zero = |b: bool| f64::from(u8::from(b));
        let event = |result: Result<f64, EventProblem>| {
            result.map_err(|problem| self.bad_event(i, problem))
        };
        match (self.role(i), found) {
            // Not a combination the config allows (recommend events are JSON): read as JSON
            // would be, a number being an item only when it is an integer.
            (Some(FieldRole::Item), Seen::Text(s)) => event(item_from_text(s, text).map(|()| 0.0)),
            (Some(FieldRole::Item), Seen::Number(x)) => {
                event(item_from_float(x, text).map(|()| 0.0))
            }
            (Some(FieldRole::Item), Seen::Bool(_)) => {
                event(Err(EventProblem::ItemType(Found::Bool)))
            }
            (Some(FieldRole::Item), Seen::Data) => event(Err(EventProblem::ItemSenmlValue("vd"))),
            (Some(FieldRole::Weight(weights)), Seen::Text(s)) => {
                event(weight_from_text(weights, s))
            }
            (Some(FieldRole::Weight(_)), Seen::Number(x)) => event(weight_from_number(x)),
            (Some(FieldRole::Weight(_)), Seen::Bool(_)) => {
                event(Err(EventProblem::WeightType(Found::Bool)))
            }
            (Some(FieldRole::Weight(_)), Seen::Data) => {
                event(Err(EventProblem::WeightSenmlValue("vd")))
            }
            (_, Seen::Number(x)) if !x.is_finite() => {
                Err(self.field_error(i, DropReason::NonFinite, Problem::NonFinite))
            }
            (_, Seen::Bool(b)) => Ok(one_or_zero(b)),
            (Some(FieldRole::Label(labels)), Seen::Number(x)) => {
                match labels.classify_number(LabelNumber::Float(x)) {
                    Ok(positive) => Ok(one_or_zero(positive)),
                    Err(text) => {
                        Err(self.bad_label(i, LabelProblem::Unknown(LabelText::Number(text))))
                    }
                }
            }
            (Some(FieldRole::Label(labels)), Seen::Text(s)) => {
                match labels.classify(s) {
                    Some(positive) => Ok(one_or_zero(positive)),
                    None => Err(self
                        .bad_label(i, LabelProblem::Unknown(LabelText::String(Snippet::new(s))))),
                }
            }
            (Some(FieldRole::Label(_)), Seen::Data) => {
                Err(self.bad_label(i, LabelProblem::SenmlValue("vd")))
            }
            (_, Seen::Number(x)) => Ok(x),
            (_, Seen::Text(_)) => Err(self.field_error(
                i,
                DropReason::NotANumber,
                Problem::SenmlWrongValue {
                    expected: EXPECTED_NUMBER,
                    label: "vs",
                },
            )),
            (_, Seen::Data) => Err(self.field_error(
                i,
                DropReason::NotANumber,
                Problem::SenmlWrongValue {
                    expected: EXPECTED_NUMBER,
                    label: "vd",
                },
            )),
        }
    }

    /// Whether field `i` may be absent (the regression target, a label or a weight).
    fn is_optional(&self, i: usize) -> bool {
        matches!(
            self.plan(i),
            Some(RolePlan::Optional | RolePlan::Label | RolePlan::Weight)
        )
    }

    /// The value of field `i` when a SenML reading lacks it: `NaN` if it is optional, else the
    /// error (`bad_event` for an item, `missing_field` with `problem` for anything else).
    fn absent(&self, i: usize, problem: Problem) -> Result<f64, DecodeError> {
        match self.plan(i) {
            _ if self.is_optional(i) => Ok(f64::NAN),
            Some(RolePlan::Item) => Err(self.bad_event(i, EventProblem::MissingItem)),
            _ => Err(self.field_error(i, DropReason::MissingField, problem)),
        }
    }

    fn field_error(&self, i: usize, reason: DropReason, problem: Problem) -> DecodeError {
        let field = &self.fields[i];
        DecodeError::new(
            reason,
            Location::Field {
                name: field.name.clone(),
                pointer: field.pointer.clone(),
            },
            problem,
        )
    }

    fn key_needs_senml(&self, format: &'static str) -> DecodeError {
        let location = match self.key {
            KeyPlan::BaseName => Location::BaseName,
            _ => Location::RecordName,
        };
        DecodeError::new(
            DropReason::MissingKey,
            location,
            Problem::KeyNeedsSenml { format },
        )
    }

    /// Key, time and fields of one reading, as a walk (or a CSV line) found them; sets
    /// `out.time_ms`.
    fn finish(&self, outcome: Outcome, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        self.check_key(outcome.key_slot)?;
        out.time_ms = self.check_time(outcome.time_slot)?;
        self.check_fields(&out.values, outcome.field_problem)
    }

    /// The problem of a pointer the format does not resolve.
    fn unresolved_pointer(&self) -> Problem {
        match self.format {
            Format::Csv(_) => Problem::NoColumn,
            Format::Json | Format::Number | Format::Senml(_) => Problem::InvalidPointer,
        }
    }

    fn check_key(&self, slot: KeySlot) -> Result<(), DecodeError> {
        let (pointer, valid) = match &self.key {
            KeyPlan::Pointer { pointer, valid } => (pointer, *valid),
            KeyPlan::RecordName | KeyPlan::BaseName => {
                let format = match self.format {
                    Format::Csv(_) => "csv",
                    _ => "json",
                };
                return Err(self.key_needs_senml(format));
            }
            KeyPlan::Topic | KeyPlan::TopicLevel(_) => return Ok(()),
        };
        let problem = match slot {
            KeySlot::Found => return Ok(()),
            KeySlot::Missing if !valid => self.unresolved_pointer(),
            KeySlot::Missing => Problem::Missing,
            KeySlot::Empty => Problem::EmptyKey,
            KeySlot::Wrong(found) => Problem::WrongType {
                expected: EXPECTED_KEY,
                found,
            },
        };
        Err(DecodeError::new(
            DropReason::MissingKey,
            Location::PayloadKey {
                pointer: pointer.clone(),
            },
            problem,
        ))
    }

    fn check_time(&self, slot: TimeSlot) -> Result<Option<i64>, DecodeError> {
        let Some(time) = &self.time else {
            return Ok(None);
        };
        let problem = match slot {
            TimeSlot::Millis(ms) => return Ok(Some(ms)),
            TimeSlot::Missing if !time.valid => self.unresolved_pointer(),
            TimeSlot::Missing => Problem::Missing,
            TimeSlot::Wrong(found) => Problem::WrongType {
                expected: expected_time(time.unit),
                found,
            },
            TimeSlot::NonFinite => Problem::NonFinite,
            TimeSlot::OutOfRange => Problem::TimeOutOfRange,
            TimeSlot::NotRfc3339(e) => Problem::NotRfc3339(e),
            TimeSlot::Text(found) => Problem::TimeText {
                expected: expected_time(time.unit),
                found,
            },
        };
        Err(DecodeError::new(
            DropReason::BadTime,
            Location::Time {
                pointer: time.pointer.clone(),
            },
            problem,
        ))
    }

    fn check_fields(
        &self,
        values: &[f64],
        problem: Option<(usize, FieldProblem)>,
    ) -> Result<(), DecodeError> {
        for (i, (field, value)) in self.fields.iter().zip(values).enumerate() {
            let (reason, problem) = match problem {
                Some((index, problem)) if index == i => match problem {
                    FieldProblem::Wrong(found) => (
                        DropReason::NotANumber,
                        Problem::WrongType {
                            expected: EXPECTED_NUMBER,
                            found,
                        },
                    ),
                    FieldProblem::NonFinite => (DropReason::NonFinite, Problem::NonFinite),
                    FieldProblem::BadLabel(problem) => return Err(self.bad_label(i, problem)),
                    FieldProblem::BadEvent(problem) => return Err(self.bad_event(i, problem)),
                    FieldProblem::NotANumberText(text) => {
                        (DropReason::NotANumber, Problem::NotANumberText(text))
                    }
                    FieldProblem::NonFiniteText(text) => {
                        (DropReason::NonFinite, Problem::NonFiniteText(text))
                    }
                },
                _ if value.is_nan() && !field.pointer_valid => {
                    (DropReason::MissingField, self.unresolved_pointer())
                }
                // The optional target and a label may be absent (predict only), and so may a
                // weight (weight 1).
                _ if value.is_nan() && self.is_optional(i) => continue,
                _ if value.is_nan() && self.plan(i) == Some(RolePlan::Item) => {
                    return Err(self.bad_event(i, EventProblem::MissingItem));
                }
                _ if value.is_nan() => (DropReason::MissingField, Problem::Missing),
                _ => continue,
            };
            return Err(self.field_error(i, reason, problem));
        }
        Ok(())
    }

    /// The `bad_label` error of field `index` (the label field).
    fn bad_label(&self, index: usize, problem: LabelProblem) -> DecodeError {
        let problem = match problem {
            LabelProblem::Wrong(found) => Problem::WrongType {
                expected: EXPECTED_LABEL,
                found,
            },
            LabelProblem::Unknown(text) => Problem::UnknownLabel {
                text,
                labels: self.labels.clone(),
            },
            LabelProblem::SenmlValue(label) => Problem::SenmlWrongValue {
                expected: EXPECTED_LABEL,
                label,
            },
        };
        self.field_error(index, DropReason::BadLabel, problem)
    }

    /// The `bad_event` error of field `index` (a recommend event's item or weight).
    fn bad_event(&self, index: usize, problem: EventProblem) -> DecodeError {
        let problem = Problem::BadEvent {
            problem,
            weights: self.event_weights.clone(),
        };
        self.field_error(index, DropReason::BadEvent, problem)
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
