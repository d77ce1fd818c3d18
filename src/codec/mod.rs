//! Payload decoding: MQTT topic + payload bytes → a reading (key, event time, field values).
//!
//! A [`Decoder`] is compiled once per pipeline from its validated config and then decodes every
//! message of that pipeline into a caller-owned [`ReadingBuf`]. A payload that cannot be decoded
//! yields a [`DecodeError`] whose [`DropReason`] is the metric label under which the drop is
//! counted.
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
//! * `format = "number"`: the payload, trimmed of ASCII whitespace, is one number parsed as f64
//!   (Rust's float syntax, so `+1`, `.5` and `1e3` are accepted); `nan`/`inf`/`infinity` in any
//!   case and overflowing numbers are `non_finite`. Every configured field gets that value
//!   (validation allows exactly one field).
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
//!     (which config validation allows for forecasts only) the bare number is matched the
//!     same way.
//!
//!   Features stay required numbers. `NaN` in `values` therefore only ever means "absent
//!   optional target": input never produces it (JSON has no NaN literal, `NaN`/`Infinity` are
//!   `malformed_json`, numbers beyond the f64 range are `non_finite`, and a number payload of
//!   `nan` is `non_finite`).
//!
//! When several things are wrong, the error reported is, in this order: size, UTF-8, topic key,
//! JSON syntax, key, time, then the first field in config order (a bad label counts as a
//! problem of its field).
//!
//! # Allocation
//!
//! The hot path allocates nothing once the `ReadingBuf` is warm: the pointers are compiled
//! into a tree of path segments (`pointer::PathTree`) at construction; the JSON is read by a
//! `DeserializeSeed` that borrows member names from the payload and skips everything off the
//! configured paths with `IgnoredAny` (no `serde_json::Value`, no owned strings); the key is
//! copied (or an integer key formatted) into `out.key` and the values written into
//! `out.values`, reusing their capacity. serde_json allocates its scratch buffer (once per
//! payload, a few bytes) only for a string with escape sequences on a configured path or a
//! member name with escapes, and for containers nested two or more deep inside a skipped
//! member; a `malformed_json` error also allocates. Labels are matched against lists
//! lowercased once at construction, a number label formatted into a stack buffer (only a
//! number whose text exceeds 40 bytes is formatted on the heap). The test
//! `warm_decode_does_not_allocate` checks the common cases.

mod error;
mod json;
mod label;
pub mod pointer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::de::DeserializeSeed;

use crate::config::{KeySource, ModelConfig, PayloadFormat, PipelineConfig, TimeUnit};
pub use error::{DecodeError, DropReason};
use error::{LabelText, Location, Problem, Snippet, EXPECTED_KEY, EXPECTED_LABEL, EXPECTED_NUMBER};
use json::{FieldProblem, KeySlot, LabelProblem, NodeSeed, TargetRole, TimeSlot, Walk};
use label::{LabelNumber, LabelSet};
use pointer::{PathTree, Target, ROOT};

/// Reusable output buffer: the decoder overwrites it, so the hot path allocates nothing once warm.
///
/// After a failed decode its contents are unspecified (partly written).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadingBuf {
    /// The key (sensor id) of the reading.
    pub key: String,
    /// Event time in Unix milliseconds; `None` when the pipeline has no time source.
    pub time_ms: Option<i64>,
    /// One value per configured field, in the pipeline's field order.
    ///
    /// `NaN` means "absent optional field": a regression target or classification label
    /// that was missing or `null` (predict, do not learn). It never comes from input: NaN and
    /// infinite inputs are dropped (`non_finite`, `malformed_json`). A label is 1.0 (positive)
    /// or 0.0 (negative).
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
}

/// How the model's target field is read, when it is not a plain required number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetPlan {
    /// A regression target: missing or `null` is `NaN`.
    Optional,
    /// A classification label, matched against [`Decoder::labels`].
    Label,
}

/// Where the time comes from, compiled.
#[derive(Debug)]
struct TimePlan {
    pointer: Arc<str>,
    valid: bool,
    unit: TimeUnit,
}

/// A payload decoder compiled once from a validated [`PipelineConfig`].
///
/// (`Debug` is implemented next to `pipeline::Pipeline`, which prints it as `Decoder`.)
pub struct Decoder {
    format: PayloadFormat,
    max_payload_bytes: usize,
    fields: Vec<FieldPlan>,
    key: KeyPlan,
    time: Option<TimePlan>,
    /// The target field's index and plan, unless it is a plain required number (forecast).
    target: Option<(usize, TargetPlan)>,
    /// The label lists of a classification pipeline (empty otherwise); shared with errors.
    labels: Arc<LabelSet>,
    tree: PathTree,
}

impl Decoder {
    /// Compiles the decoder of pipeline `p`; `p.model` decides how its target field is read
    /// (see the module documentation).
    ///
    /// The config is expected to be validated; nothing here fails. A pointer that is not valid
    /// RFC 6901 anyway makes every payload fail with the reason of what it points to
    /// (`missing_field`, `missing_key` or `bad_time`) and a message naming the pointer.
    pub fn new(p: &PipelineConfig) -> Decoder {
        let mut tree = PathTree::new();
        let fields = p
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldPlan {
                name: Arc::from(f.name.as_str()),
                pointer: Arc::from(f.pointer.as_str()),
                pointer_valid: tree.insert(&f.pointer, Target::Field(i)),
            })
            .collect();
        let key = match &p.key {
            KeySource::Topic => KeyPlan::Topic,
            KeySource::TopicLevel(n) => KeyPlan::TopicLevel(*n),
            KeySource::Pointer(pointer) => KeyPlan::Pointer {
                pointer: Arc::from(pointer.as_str()),
                valid: tree.insert(pointer, Target::Key),
            },
        };
        let time = p.time.as_ref().map(|t| TimePlan {
            pointer: Arc::from(t.pointer.as_str()),
            valid: tree.insert(&t.pointer, Target::Time),
            unit: t.unit,
        });
        let (plan, labels) = match &p.model {
            ModelConfig::Forecast(_) => (None, LabelSet::new(&[], &[])),
            ModelConfig::Regression(_) => (Some(TargetPlan::Optional), LabelSet::new(&[], &[])),
            ModelConfig::Classification(c) => (
                Some(TargetPlan::Label),
                LabelSet::new(&c.positive, &c.negative),
            ),
        };
        let target_name = p.model.target();
        let target = plan.and_then(|plan| {
            p.fields
                .iter()
                .position(|f| f.name == target_name)
                .map(|index| (index, plan))
        });
        Decoder {
            format: p.format,
            max_payload_bytes: p.max_payload_bytes,
            fields,
            key,
            time,
            target,
            labels: Arc::new(labels),
            tree,
        }
    }

    /// The role of the target field in the JSON walk.
    fn target_role(&self) -> Option<(usize, TargetRole<'_>)> {
        self.target.map(|(index, plan)| {
            let role = match plan {
                TargetPlan::Optional => TargetRole::Optional,
                TargetPlan::Label => TargetRole::Label(&self.labels),
            };
            (index, role)
        })
    }

    /// The configured field names, in the order of [`ReadingBuf::values`].
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| &*f.name)
    }

    /// Decodes one payload arriving on `topic`. On `Ok`, `out` holds key, time and values.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] whose `reason` says why the reading is dropped; see the module
    /// documentation for the rules and the order in which problems are reported.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        out.key.clear();
        out.time_ms = None;
        out.values.clear();
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
        self.key_from_topic(topic, &mut out.key)?;
        match self.format {
            PayloadFormat::Json => self.decode_json(text, out),
            PayloadFormat::Number => self.decode_number(text, out),
        }
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
            KeyPlan::Pointer { .. } => Ok(()),
        }
    }

    fn decode_number(&self, text: &str, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        if let KeyPlan::Pointer { pointer, .. } = &self.key {
            return Err(DecodeError::new(
                DropReason::MissingKey,
                Location::PayloadKey {
                    pointer: pointer.clone(),
                },
                Problem::PointerNeedsJson,
            ));
        }
        if let Some(time) = &self.time {
            return Err(DecodeError::new(
                DropReason::BadTime,
                Location::Time {
                    pointer: time.pointer.clone(),
                },
                Problem::PointerNeedsJson,
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
        if let Some((index, TargetPlan::Label)) = self.target {
            match self.labels.classify_number(LabelNumber::Float(value)) {
                Ok(positive) => out.values[index] = f64::from(u8::from(positive)),
                Err(text) => {
                    let problem = LabelProblem::Unknown(LabelText::Number(text));
                    return Err(self.bad_label(index, problem));
                }
            }
        }
        Ok(())
    }

    fn decode_json(&self, text: &str, out: &mut ReadingBuf) -> Result<(), DecodeError> {
        // NaN marks "not found yet": a JSON number never decodes to NaN.
        out.values.resize(self.fields.len(), f64::NAN);
        let mut walk = Walk {
            tree: &self.tree,
            time_unit: self.time.as_ref().map_or(TimeUnit::Auto, |t| t.unit),
            values: &mut out.values,
            target: self.target_role(),
            field_problem: None,
            key: &mut out.key,
            key_slot: KeySlot::Missing,
            time_slot: TimeSlot::Missing,
        };
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
        let (key_slot, time_slot, field_problem) =
            (walk.key_slot, walk.time_slot, walk.field_problem);
        self.check_key(key_slot)?;
        out.time_ms = self.check_time(time_slot)?;
        self.check_fields(&out.values, field_problem)
    }

    fn check_key(&self, slot: KeySlot) -> Result<(), DecodeError> {
        let KeyPlan::Pointer { pointer, valid } = &self.key else {
            return Ok(());
        };
        let problem = match slot {
            KeySlot::Found => return Ok(()),
            KeySlot::Missing if !valid => Problem::InvalidPointer,
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
            TimeSlot::Missing if !time.valid => Problem::InvalidPointer,
            TimeSlot::Missing => Problem::Missing,
            TimeSlot::Wrong(found) => Problem::WrongType {
                expected: expected_time(time.unit),
                found,
            },
            TimeSlot::NonFinite => Problem::NonFinite,
            TimeSlot::OutOfRange => Problem::TimeOutOfRange,
            TimeSlot::NotRfc3339(e) => Problem::NotRfc3339(e),
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
                Some((index, FieldProblem::Wrong(found))) if index == i => (
                    DropReason::NotANumber,
                    Problem::WrongType {
                        expected: EXPECTED_NUMBER,
                        found,
                    },
                ),
                Some((index, FieldProblem::NonFinite)) if index == i => {
                    (DropReason::NonFinite, Problem::NonFinite)
                }
                Some((index, FieldProblem::BadLabel(problem))) if index == i => {
                    return Err(self.bad_label(i, problem));
                }
                _ if value.is_nan() && !field.pointer_valid => {
                    (DropReason::MissingField, Problem::InvalidPointer)
                }
                // The optional target and a label may be absent (predict only).
                _ if value.is_nan() && self.target.is_some_and(|(target, _)| target == i) => {
                    continue
                }
                _ if value.is_nan() => (DropReason::MissingField, Problem::Missing),
                _ => continue,
            };
            return Err(DecodeError::new(
                reason,
                Location::Field {
                    name: field.name.clone(),
                    pointer: field.pointer.clone(),
                },
                problem,
            ));
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
        };
        let field = &self.fields[index];
        DecodeError::new(
            DropReason::BadLabel,
            Location::Field {
                name: field.name.clone(),
                pointer: field.pointer.clone(),
            },
            problem,
        )
    }
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
