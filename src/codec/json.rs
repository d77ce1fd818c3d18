//! The JSON walk: one pass over the payload that reads only the configured pointers.
//!
//! The payload is never turned into a `serde_json::Value`. A `NodeSeed` deserializes the value
//! at one node of the `PathTree`: objects are walked member by member, a member name is compared
//! (as a borrowed `&str`, or serde_json's unescaped scratch copy when it has escapes) with the
//! node's child segments, and members off every configured path are skipped with
//! `IgnoredAny`, which only scans them. Arrays are walked the same way by index.
//!
//! The visitors never fail: what they find at each target is recorded in `Walk`, and the
//! decoder turns it into an error afterwards, so every error from serde_json is a syntax error.
//!
//! A top-level array is a batch: [`BatchSeed`] walks each element from the root of the tree,
//! as if it were a document of its own, and hands each element's [`Outcome`] to the decoder.
//!
//! This relies on serde_json's default number handling: its `arbitrary_precision` feature (not
//! enabled anywhere in our dependency graph) would hand numbers over as maps, and the tests
//! would fail with `not_a_number`.

use std::fmt::{self, Write as _};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::LabelText;
use super::event::{
    item_from_integer, item_from_text, weight_from_number, weight_from_text, EventProblem,
    EventWeights,
};
use super::label::{LabelNumber, LabelSet};
use super::pointer::{PathTree, Segment, Target, ROOT};
use super::shown::{Found, Snippet};
use super::ReadingBuf;
use crate::config::TimeUnit;

/// What was found at the key pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySlot {
    Missing,
    /// Written to the output key.
    Found,
    Empty,
    Wrong(Found),
}

/// What was found at the time pointer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimeSlot {
    Missing,
    Millis(i64),
    Wrong(Found),
    NonFinite,
    OutOfRange,
    NotRfc3339(time::error::Parse),
    /// A text (a CSV cell) that is not a number, where a number was needed.
    Text(Snippet),
}

/// A problem with one field; the decoder reports the one with the lowest index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldProblem {
    Wrong(Found),
    NonFinite,
    BadLabel(LabelProblem),
    /// A recommend event's item or weight that cannot be used.
    BadEvent(EventProblem),
    /// A text (a CSV cell) that is not a number.
    NotANumberText(Snippet),
    /// A text (a CSV cell) that is `nan`, `inf` or beyond the f64 range.
    NonFiniteText(Snippet),
}

/// Why a label field's value is not a label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LabelProblem {
    /// A string or number in neither list.
    Unknown(LabelText),
    /// An object or an array.
    Wrong(Found),
    /// A SenML record whose value cannot be a label (`vd`).
    SenmlValue(&'static str),
}

/// What one walk found, for the decoder to turn into a reading or an error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub key_slot: KeySlot,
    pub time_slot: TimeSlot,
    pub field_problem: Option<(usize, FieldProblem)>,
}

/// What every walk of one decoder shares.
#[derive(Clone, Copy)]
pub(crate) struct WalkConfig<'a> {
    pub tree: &'a PathTree,
    pub time_unit: TimeUnit,
    pub roles: Roles<'a>,
}

/// How a field the model kind gives a role is read, instead of as a plain required number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldRole<'a> {
    /// A regression target: a number, or missing/`null` (left `NaN`: predict only).
    Optional,
    /// A classification label: `true`/`false` or a listed text, or missing/`null` (`NaN`).
    Label(&'a LabelSet),
    /// A recommend event's item: a string (1 to 64 bytes) or an integer, as text into
    /// [`ReadingBuf::text`]; its value is 0.0. Required.
    Item,
    /// A recommend event's weight: a number in (0, 1024] or an event type of these weights, or
    /// missing/`null` (`NaN`: weight 1).
    Weight(&'a EventWeights),
}

/// Most fields with a role in one pipeline: a recommend pipeline's item and weight (other
/// kinds have at most one, their target).
pub(crate) const MAX_ROLES: usize = 2;

/// The fields with a role, by index: a small fixed array, so a walk copies it for free.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Roles<'a>(pub [Option<(usize, FieldRole<'a>)>; MAX_ROLES]);

impl<'a> Roles<'a> {
    /// The role of field `i`, if it has one.
    pub(crate) fn of(&self, i: usize) -> Option<FieldRole<'a>> {
        self.0
            .iter()
            .flatten()
            .find(|(index, _)| *index == i)
            .map(|&(_, role)| role)
    }
}

/// The state of one walk over one payload.
pub(crate) struct Walk<'a> {
    pub tree: &'a PathTree,
    pub time_unit: TimeUnit,
    /// One slot per field, `NaN` until the field is found (JSON cannot produce NaN); an
    /// optional target, label or weight that is missing or `null` stays `NaN`.
    pub values: &'a mut [f64],
    /// The fields with a role (read otherwise than as a required number).
    pub roles: Roles<'a>,
    /// The lowest-indexed field that had the wrong type.
    pub field_problem: Option<(usize, FieldProblem)>,
    pub key: &'a mut String,
    /// The item of a recommend event (cleared when the walk starts).
    pub text: &'a mut String,
    pub key_slot: KeySlot,
    pub time_slot: TimeSlot,
}

/// A JSON number as serde_json hands it over.
#[derive(Clone, Copy)]
pub(crate) enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Number {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Number::Unsigned(v) => v as f64,
            Number::Signed(v) => v as f64,
            Number::Float(v) => v,
        }
    }

    pub(crate) fn as_label(self) -> LabelNumber {
        match self {
            Number::Unsigned(v) => LabelNumber::Unsigned(v),
            Number::Signed(v) => LabelNumber::Signed(v),
            Number::Float(v) => LabelNumber::Float(v),
        }
    }
}

/// Largest |milliseconds| accepted from a float (just inside the i64 range).
const MAX_FLOAT_MILLIS: f64 = 9.0e18;
/// Numbers at least this large are milliseconds under `time_unit = "auto"` (1e11 s is year 5138;
/// 1e11 ms is March 1973).
const AUTO_MILLIS_THRESHOLD: f64 = 1e11;

impl<'a> Walk<'a> {
    /// A walk writing into `values` (one per field, all `NaN`), `key` and `text` (an item; it
    /// is cleared here, once per reading).
    pub fn new(
        config: WalkConfig<'a>,
        values: &'a mut [f64],
        key: &'a mut String,
        text: &'a mut String,
    ) -> Self {
        text.clear();
        Walk {
            tree: config.tree,
            time_unit: config.time_unit,
            values,
            roles: config.roles,
            field_problem: None,
            key,
            text,
            key_slot: KeySlot::Missing,
            time_slot: TimeSlot::Missing,
        }
    }

    /// What the walk found.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            key_slot: self.key_slot,
            time_slot: self.time_slot,
            field_problem: self.field_problem,
        }
    }

    fn field_problem(&mut self, index: usize, problem: FieldProblem) {
        match self.field_problem {
            Some((first, _)) if first <= index => {}
            _ => self.field_problem = Some((index, problem)),
        }
    }

    /// The role of field `i`, if it has one.
    fn role(&self, i: usize) -> Option<FieldRole<'a>> {
        self.roles.of(i)
    }

    /// Field `i` (the item or the weight) read as `result`: its value, or its problem.
    fn event_value(&mut self, i: usize, result: Result<f64, EventProblem>) {
        match result {
            Ok(value) => self.set_value(i, value),
            Err(problem) => self.field_problem(i, FieldProblem::BadEvent(problem)),
        }
    }

    fn set_value(&mut self, i: usize, value: f64) {
        if let Some(slot) = self.values.get_mut(i) {
            *slot = value;
        }
    }

    /// An object or an array.
    fn other(&mut self, targets: &[Target], found: Found) {
        for &target in targets {
            match target {
                Target::Field(i) => {
                    let problem = match self.role(i) {
                        Some(FieldRole::Label(_)) => {
                            FieldProblem::BadLabel(LabelProblem::Wrong(found))
                        }
                        Some(FieldRole::Item) => {
                            FieldProblem::BadEvent(EventProblem::ItemType(found))
                        }
                        Some(FieldRole::Weight(_)) => {
                            FieldProblem::BadEvent(EventProblem::WeightType(found))
                        }
                        Some(FieldRole::Optional) | None => FieldProblem::Wrong(found),
                    };
                    self.field_problem(i, problem);
                }
                Target::Key => self.key_slot = KeySlot::Wrong(found),
                Target::Time => self.time_slot = TimeSlot::Wrong(found),
            }
        }
    }

    /// `null`: "absent" for the optional target, a label and a weight, wrong everywhere else.
    fn null(&mut self, targets: &[Target]) {
        for &target in targets {
            match target {
                Target::Field(i) if matches!(self.role(i), Some(FieldRole::Item)) => {
                    self.field_problem(
                        i,
                        FieldProblem::BadEvent(EventProblem::ItemType(Found::Null)),
                    );
                }
                // Like a later duplicate member, `null` overwrites an earlier value.
                Target::Field(i) if self.role(i).is_some() => self.set_value(i, f64::NAN),
                Target::Field(i) => self.field_problem(i, FieldProblem::Wrong(Found::Null)),
                Target::Key => self.key_slot = KeySlot::Wrong(Found::Null),
                Target::Time => self.time_slot = TimeSlot::Wrong(Found::Null),
            }
        }
    }

    /// `true`/`false`: a label's value itself, wrong everywhere else.
    fn boolean(&mut self, targets: &[Target], value: bool) {
        for &target in targets {
            match target {
                Target::Field(i) => match self.role(i) {
                    Some(FieldRole::Label(_)) => self.set_value(i, f64::from(u8::from(value))),
                    Some(FieldRole::Item) => {
                        self.event_value(i, Err(EventProblem::ItemType(Found::Bool)));
                    }
                    Some(FieldRole::Weight(_)) => {
                        self.event_value(i, Err(EventProblem::WeightType(Found::Bool)));
                    }
                    Some(FieldRole::Optional) | None => {
                        self.field_problem(i, FieldProblem::Wrong(Found::Bool));
                    }
                },
                Target::Key => self.key_slot = KeySlot::Wrong(Found::Bool),
                Target::Time => self.time_slot = TimeSlot::Wrong(Found::Bool),
            }
        }
    }

    fn number(&mut self, targets: &[Target], number: Number) {
        for &target in targets {
            match target {
                Target::Field(i) => match self.role(i) {
                    Some(FieldRole::Item) => match number {
                        Number::Unsigned(v) => {
                            item_from_integer(v, self.text);
                            self.set_value(i, 0.0);
                        }
                        Number::Signed(v) => {
                            item_from_integer(v, self.text);
                            self.set_value(i, 0.0);
                        }
                        Number::Float(_) => {
                            let problem = EventProblem::ItemType(Found::NonIntegerNumber);
                            self.event_value(i, Err(problem));
                        }
                    },
                    Some(FieldRole::Weight(_)) => {
                        self.event_value(i, weight_from_number(number.as_f64()));
                    }
                    Some(FieldRole::Label(labels)) => {
                        match labels.classify_number(number.as_label()) {
                            Ok(positive) => self.set_value(i, f64::from(u8::from(positive))),
                            Err(text) => self.field_problem(
                                i,
                                FieldProblem::BadLabel(LabelProblem::Unknown(LabelText::Number(
                                    text,
                                ))),
                            ),
                        }
                    }
                    _ => {
                        let value = number.as_f64();
                        if value.is_finite() {
                            self.set_value(i, value);
                        } else {
                            self.field_problem(i, FieldProblem::NonFinite);
                        }
                    }
                },
                Target::Key => {
                    self.key.clear();
                    // `write!` into a String cannot fail (fmt::Write for String is infallible);
                    // it formats in place, reusing the key's capacity.
                    self.key_slot = match number {
                        Number::Unsigned(v) => {
                            let _ = write!(self.key, "{v}");
                            KeySlot::Found
                        }
                        Number::Signed(v) => {
                            let _ = write!(self.key, "{v}");
                            KeySlot::Found
                        }
                        Number::Float(_) => KeySlot::Wrong(Found::NonIntegerNumber),
                    };
                }
                Target::Time => self.time_slot = time_from_number(self.time_unit, number),
            }
        }
    }

    fn string(&mut self, targets: &[Target], s: &str) {
        for &target in targets {
            match target {
                Target::Field(i) => match self.role(i) {
                    Some(FieldRole::Item) => {
                        let item = item_from_text(s, self.text);
                        self.event_value(i, item.map(|()| 0.0));
                    }
                    Some(FieldRole::Weight(weights)) => {
                        self.event_value(i, weight_from_text(weights, s));
                    }
                    Some(FieldRole::Label(labels)) => match labels.classify(s) {
                        Some(positive) => self.set_value(i, f64::from(u8::from(positive))),
                        None => self.field_problem(
                            i,
                            FieldProblem::BadLabel(LabelProblem::Unknown(LabelText::String(
                                Snippet::new(s),
                            ))),
                        ),
                    },
                    _ => self.field_problem(i, FieldProblem::Wrong(Found::String)),
                },
                Target::Key => {
                    self.key.clear();
                    if s.is_empty() {
                        self.key_slot = KeySlot::Empty;
                    } else {
                        self.key.push_str(s);
                        self.key_slot = KeySlot::Found;
                    }
                }
                Target::Time => {
                    self.time_slot = match self.time_unit {
                        TimeUnit::Auto | TimeUnit::Rfc3339 => time_from_rfc3339(s),
                        TimeUnit::Seconds | TimeUnit::Milliseconds => {
                            TimeSlot::Wrong(Found::String)
                        }
                    }
                }
            }
        }
    }
}

/// The time a number gives under `unit`.
pub(crate) fn time_from_number(unit: TimeUnit, number: Number) -> TimeSlot {
    let millis_per_unit: i64 = match unit {
        TimeUnit::Rfc3339 => return TimeSlot::Wrong(Found::Number),
        TimeUnit::Milliseconds => 1,
        TimeUnit::Seconds => 1000,
        TimeUnit::Auto if number.as_f64().abs() >= AUTO_MILLIS_THRESHOLD => 1,
        TimeUnit::Auto => 1000,
    };
    let exact = match number {
        Number::Unsigned(v) => i64::try_from(v).ok(),
        Number::Signed(v) => Some(v),
        Number::Float(v) => {
            if !v.is_finite() {
                return TimeSlot::NonFinite;
            }
            let millis = (v * millis_per_unit as f64).round();
            return if millis.abs() < MAX_FLOAT_MILLIS {
                // In range (checked above) and integral (rounded), so the cast is exact.
                TimeSlot::Millis(millis as i64)
            } else {
                TimeSlot::OutOfRange
            };
        }
    };
    match exact.and_then(|v| v.checked_mul(millis_per_unit)) {
        Some(millis) => TimeSlot::Millis(millis),
        None => TimeSlot::OutOfRange,
    }
}

/// The time of an RFC 3339 string.
pub(crate) fn time_from_rfc3339(s: &str) -> TimeSlot {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
            i64::try_from(millis).map_or(TimeSlot::OutOfRange, TimeSlot::Millis)
        }
        Err(e) => TimeSlot::NotRfc3339(e),
    }
}

/// Deserializes the value at `node` of the tree into the walk.
pub(crate) struct NodeSeed<'w, 'a> {
    pub walk: &'w mut Walk<'a>,
    pub node: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> NodeSeed<'_, 'a> {
    fn targets(&self) -> &'a [Target] {
        let tree: &'a PathTree = self.walk.tree;
        &tree.nodes[self.node].targets
    }

    fn children(&self) -> &'a [(Segment, usize)] {
        let tree: &'a PathTree = self.walk.tree;
        &tree.nodes[self.node].children
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        let targets = self.targets();
        self.walk.boolean(targets, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        let targets = self.targets();
        self.walk.null(targets);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        let targets = self.targets();
        self.walk.null(targets);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let targets = self.targets();
        self.walk.number(targets, Number::Unsigned(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let targets = self.targets();
        self.walk.number(targets, Number::Signed(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        let targets = self.targets();
        self.walk.number(targets, Number::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        let targets = self.targets();
        self.walk.string(targets, v);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let targets = self.targets();
        let children = self.children();
        self.walk.other(targets, Found::Object);
        if children.is_empty() {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while let Some(child) = map.next_key_seed(MemberSeed { children })? {
            match child {
                Some(node) => map.next_value_seed(NodeSeed {
                    walk: &mut *self.walk,
                    node,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let targets = self.targets();
        let children = self.children();
        self.walk.other(targets, Found::Array);
        let mut wanted = children.iter().filter(|(s, _)| s.index.is_some()).count();
        let mut index = 0usize;
        while wanted > 0 {
            let child = children
                .iter()
                .find(|(segment, _)| segment.index == Some(index))
                .map(|&(_, node)| node);
            let more = match child {
                Some(node) => {
                    wanted -= 1;
                    seq.next_element_seed(NodeSeed {
                        walk: &mut *self.walk,
                        node,
                    })?
                    .is_some()
                }
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Walks a top-level array: each element from the root of the tree, into `out`, calling
/// `each(index, out, outcome)` after each element (`out.values` holds its fields; `out.key` its
/// key when the key is read from the payload).
pub(crate) struct BatchSeed<'a, F> {
    pub config: WalkConfig<'a>,
    pub out: &'a mut ReadingBuf,
    pub each: F,
}

impl<'de, F: FnMut(usize, &mut ReadingBuf, Outcome)> DeserializeSeed<'de> for BatchSeed<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(usize, &mut ReadingBuf, Outcome)> Visitor<'de> for BatchSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            // NaN marks "not found yet", as for a single document.
            self.out.values.fill(f64::NAN);
            let mut walk = Walk::new(
                self.config,
                &mut self.out.values,
                &mut self.out.key,
                &mut self.out.text,
            );
            let element = seq.next_element_seed(NodeSeed {
                walk: &mut walk,
                node: ROOT,
            })?;
            if element.is_none() {
                return Ok(());
            }
            let outcome = walk.outcome();
            (self.each)(index, self.out, outcome);
            index += 1;
        }
    }
}

/// Reads one member name and returns the child node it leads to, if any.
struct MemberSeed<'a> {
    children: &'a [(Segment, usize)],
}

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    // serde_json calls `visit_borrowed_str` for names without escapes (a slice of the payload)
    // and `visit_str` with its unescaped scratch copy otherwise; both land here.
    fn visit_str<E>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self
            .children
            .iter()
            .find(|(segment, _)| *segment.name == *name)
            .map(|&(_, node)| node))
    }
}
