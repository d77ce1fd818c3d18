//! Why a reading was dropped ([`DropReason`]) and the detail of a decode failure ([`DecodeError`]).

use std::fmt;
use std::sync::Arc;

use super::event::{EventProblem, EventWeights, ShownEvent};
use super::label::{LabelSet, NumberText};
use super::shown::{Found, Snippet};

/// Why a reading was dropped; each has a stable snake_case name used in logs and metrics.
///
/// The codec produces the reasons from `TooLarge` to `BadTime` and from `BadLabel` to
/// `BadKey` (with `Implausible` checked on the decoded values); `UnknownTopic`,
/// `QueueFull`, `MailboxFull` and `TimeSkew` are produced by the runtime and live here so every drop is
/// counted in one place. New reasons are appended, so an existing reason keeps its `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The topic matched no pipeline.
    UnknownTopic,
    /// The payload is larger than the pipeline's `max_payload_bytes`.
    TooLarge,
    /// The payload is not valid UTF-8.
    NotUtf8,
    /// The payload is not valid JSON.
    MalformedJson,
    /// The key is missing, empty or of the wrong type.
    MissingKey,
    /// A configured field is not in the payload.
    MissingField,
    /// A field (or a `number` payload) is not a number.
    NotANumber,
    /// A number is infinite or NaN (or too large for an f64).
    NonFinite,
    /// The event time is missing, of the wrong type or not a valid time.
    BadTime,
    /// The bounded queue from the MQTT event loop to the actors was full.
    QueueFull,
    /// A shard's or key actor's mailbox was full.
    MailboxFull,
    /// A classification label is neither `true`/`false` nor a listed positive or negative
    /// text (a missing or `null` label is not a drop: the reading is predicted only).
    BadLabel,
    /// A CSV line is not well formed (a wrong number of cells, a quote not closed, text after
    /// a closing quote); only that line is dropped.
    BadCsv,
    /// A SenML pack or record breaks RFC 8428 (not an array of objects, a field of the wrong
    /// type, several values in one record, an unsupported version or must-understand field):
    /// the whole pack is dropped.
    BadSenml,
    /// A recommend event whose item is missing, empty, longer than 64 bytes or not a string
    /// or integer, or whose weight is neither a number in (0, 1024] nor an event type listed
    /// in `event_weights`.
    BadEvent,
    /// A key that cannot name an actor or an output topic: longer than
    /// [`MAX_KEY_BYTES`](super::MAX_KEY_BYTES), or holding a control character (U+0000–U+001F,
    /// U+007F–U+009F), a Unicode noncharacter (U+FFFE, U+FDD0…) or an MQTT wildcard (`+`, `#`).
    BadKey,
    /// The event time is more than the pipeline's `max_skew` ahead of the daemon's clock (a
    /// device clock far off, or a year-9999 time): accepted, it would move the key's window
    /// watermark and model clock there for good. Produced by the runtime, not the codec.
    TimeSkew,
    /// A decoded value outside the plausible range configured for its field
    /// (`bounds = { field = { min, max } }`): a faulty sensor or a unit error, which would
    /// otherwise be learnt. Counted in `edgeflow_dropped_total`, as a decoded reading dropped.
    Implausible,
}

impl DropReason {
    /// Every reason, in `index` order (for metric arrays and exposition).
    pub const ALL: [DropReason; 18] = [
        DropReason::UnknownTopic,
        DropReason::TooLarge,
        DropReason::NotUtf8,
        DropReason::MalformedJson,
        DropReason::MissingKey,
        DropReason::MissingField,
        DropReason::NotANumber,
        DropReason::NonFinite,
        DropReason::BadTime,
        DropReason::QueueFull,
        DropReason::MailboxFull,
        DropReason::BadLabel,
        DropReason::BadCsv,
        DropReason::BadSenml,
        DropReason::BadEvent,
        DropReason::BadKey,
        DropReason::TimeSkew,
        DropReason::Implausible,
    ];

    /// The stable snake_case name (a metric label value; never change one).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownTopic => "unknown_topic",
            DropReason::TooLarge => "too_large",
            DropReason::NotUtf8 => "not_utf8",
            DropReason::MalformedJson => "malformed_json",
            DropReason::MissingKey => "missing_key",
            DropReason::MissingField => "missing_field",
            DropReason::NotANumber => "not_a_number",
            DropReason::NonFinite => "non_finite",
            DropReason::BadTime => "bad_time",
            DropReason::QueueFull => "queue_full",
            DropReason::MailboxFull => "mailbox_full",
            DropReason::BadLabel => "bad_label",
            DropReason::BadCsv => "bad_csv",
            DropReason::BadSenml => "bad_senml",
            DropReason::BadEvent => "bad_event",
            DropReason::BadKey => "bad_key",
            DropReason::TimeSkew => "time_skew",
            DropReason::Implausible => "implausible",
        }
    }

    /// Position in [`DropReason::ALL`]: `0..ALL.len()`, for indexing a counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decode failure: the reason plus enough detail for one log line (which reading of the
/// payload, which field or pointer, what was found), e.g.
/// `field "temp" (/value): expected a number, found a string` or
/// `line 3: expected 4 columns, found 5`.
///
/// Building one does not allocate (names are shared `Arc<str>`s from the decoder), except for
/// `malformed_json`, which carries serde_json's error.
#[derive(thiserror::Error, Debug)]
#[error("{}", Shown(self))]
pub struct DecodeError {
    /// Why the reading is dropped (the metric label).
    pub reason: DropReason,
    element: Option<Element>,
    location: Location,
    problem: Problem,
}

impl DecodeError {
    pub(crate) fn new(reason: DropReason, location: Location, problem: Problem) -> Self {
        Self {
            reason,
            element: None,
            location,
            problem,
        }
    }

    /// The same error, about one reading of a payload that holds several.
    pub(crate) fn at(mut self, element: Element) -> Self {
        self.element = Some(element);
        self
    }
}

/// `[element: ]location: problem`, where a problem of a whole element leaves out the location.
struct Shown<'a>(&'a DecodeError);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        match (&e.element, &e.location) {
            (Some(element), Location::Payload) => write!(f, "{element}: {}", e.problem),
            (Some(element), location) => write!(f, "{element}: {location}: {}", e.problem),
            (None, location) => write!(f, "{location}: {}", e.problem),
        }
    }
}

/// Which reading of a payload holding several an error is about.
///
/// Positions are `u32` (saturating) to keep [`DecodeError`] small: it is returned by value on
/// the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element {
    /// Element `i` of a top-level JSON array, 0-based as in a JSON pointer.
    Batch(u32),
    /// Line `n` of a CSV payload, 1-based as editors count.
    Line(u32),
    /// Record `n` of a SenML pack, 1-based as RFC 8428 numbers records (`#rec=n`).
    Record(u32),
    /// The reading formed by the SenML records with the base name and time of record `n`.
    Group(u32),
}

impl Element {
    pub(crate) fn batch(index: usize) -> Self {
        Element::Batch(saturate(index))
    }

    pub(crate) fn line(number: usize) -> Self {
        Element::Line(saturate(number))
    }

    pub(crate) fn record(number: usize) -> Self {
        Element::Record(saturate(number))
    }

    pub(crate) fn group(first_record: usize) -> Self {
        Element::Group(saturate(first_record))
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Batch(index) => write!(f, "element [{index}]"),
            Element::Line(line) => write!(f, "line {line}"),
            Element::Record(record) => write!(f, "record {record}"),
            Element::Group(record) => {
                write!(f, "records with the base name and time of record {record}")
            }
        }
    }
}

/// Where in the message the problem is.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// The payload as a whole (or, with an [`Element`], that element as a whole).
    Payload,
    /// The key taken from the topic (`None`: the whole topic; `Some(n)`: level n).
    TopicKey(Option<usize>),
    /// A configured field.
    Field { name: Arc<str>, pointer: Arc<str> },
    /// The key taken from the payload.
    PayloadKey { pointer: Arc<str> },
    /// The key taken from a SenML record's resolved name (`key = "name"`).
    RecordName,
    /// The key taken from a SenML record's resolved base name (`key = "basename"`).
    BaseName,
    /// The event time.
    Time { pointer: Arc<str> },
    /// The resolved time of a SenML record.
    RecordTime,
}

/// A JSON pointer for display: `""` reads as "the whole payload".
struct PointerDisplay<'a>(&'a str);

impl fmt::Display for PointerDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the whole payload")
        } else {
            f.write_str(self.0)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Payload => f.write_str("payload"),
            Location::TopicKey(None) => f.write_str("key (the topic)"),
            Location::TopicKey(Some(level)) => write!(f, "key (topic level {level})"),
            Location::Field { name, pointer } => {
                write!(f, "field {name:?} ({})", PointerDisplay(pointer))
            }
            Location::PayloadKey { pointer } => write!(f, "key ({})", PointerDisplay(pointer)),
            Location::RecordName => f.write_str("key (the record name)"),
            Location::BaseName => f.write_str("key (the base name)"),
            Location::Time { pointer } => write!(f, "time ({})", PointerDisplay(pointer)),
            Location::RecordTime => f.write_str("time (bt + t)"),
        }
    }
}

/// What is wrong at the [`Location`].
#[derive(Debug)]
pub(crate) enum Problem {
    TooLarge {
        len: usize,
        limit: usize,
    },
    NotUtf8 {
        valid_up_to: usize,
    },
    Malformed(serde_json::Error),
    /// serde_json refuses numbers beyond the f64 range (`1e400`) while parsing.
    NumberOutOfRange(serde_json::Error),
    Missing,
    /// The topic has fewer levels, or the level is empty.
    NoTopicLevel,
    EmptyTopic,
    EmptyKey,
    /// A key of `len` bytes, more than [`MAX_KEY_BYTES`](super::MAX_KEY_BYTES).
    KeyTooLong {
        len: usize,
    },
    /// A key holding a character no topic level may hold, at byte `at`.
    KeyCharacter {
        character: char,
        at: usize,
    },
    WrongType {
        expected: &'static str,
        found: Found,
    },
    NonFinite,
    NotANumberText(Snippet),
    NonFiniteText(Snippet),
    EmptyPayload,
    TimeOutOfRange,
    NotRfc3339(time::error::Parse),
    /// A pointer is configured for a payload of a format without members (`number`, `senml`).
    PointerNeedsJson {
        format: &'static str,
    },
    /// `key = "name"` or `"basename"` for a payload that is not SenML.
    KeyNeedsSenml {
        format: &'static str,
    },
    /// A `key = "name"` SenML field pointer that is none of `v`, `vb`, `s`, `vs`.
    NotSenmlValue,
    /// `key = "name"` where records are grouped (not a combination the config allows).
    NotGrouped,
    /// The configured pointer is not a valid JSON pointer (config validation should reject it).
    InvalidPointer,
    /// A label string or number in neither label list.
    UnknownLabel {
        text: LabelText,
        labels: Arc<LabelSet>,
    },
    /// A text (a CSV cell) that is not the time expected.
    TimeText {
        expected: &'static str,
        found: Snippet,
    },
    /// A CSV line with another number of cells than there are columns.
    ColumnCount {
        expected: usize,
        found: usize,
    },
    /// A quoted CSV cell without its closing quote.
    UnterminatedQuote,
    /// Text after the closing quote of a CSV cell (column `n`, 1-based).
    TextAfterQuote {
        column: usize,
    },
    /// The configured pointer names no CSV column (config validation should reject it).
    NoColumn,
    /// The configured pointer is not one SenML record name (config validation should reject
    /// it).
    NotRecordName,
    /// The payload is not a JSON array (of SenML records).
    SenmlNotPack(Found),
    /// A SenML record is not a JSON object.
    SenmlNotRecord(Found),
    /// A SenML field of the wrong JSON type.
    SenmlFieldType {
        label: &'static str,
        expected: &'static str,
        found: Found,
    },
    /// `bver` is zero or negative.
    SenmlVersionNotPositive,
    /// `bver` is newer than the version understood.
    SenmlVersion(u64),
    /// A label ending in `_` (must be understood) that is not supported.
    SenmlMustUnderstand(Snippet),
    /// A record with more than one of `v`, `vs`, `vb`, `vd`.
    SenmlSeveralValues,
    /// A record without the value a `key = "name"` field reads (`found`: the value it has).
    SenmlNoValue {
        wanted: &'static str,
        found: Option<&'static str>,
    },
    /// A record whose value is of another kind than the field needs.
    SenmlWrongValue {
        expected: &'static str,
        label: &'static str,
    },
    /// A resolved SenML name (the key) outside RFC 8428's character set.
    InvalidSenmlName(Snippet),
    /// A resolved SenML time beyond the range of milliseconds kept.
    SenmlTimeOutOfRange,
    /// A decoded value outside its field's configured bounds.
    Implausible {
        value: f64,
        min: f64,
        max: f64,
    },
    /// A recommend event's item or weight that cannot be used (`weights`: the pipeline's
    /// event types, listed in messages about the weight).
    BadEvent {
        problem: EventProblem,
        weights: Arc<EventWeights>,
    },
}

/// A number for a log line: as written for everyday magnitudes, in scientific notation for
/// very large or small ones (`1e300`, not 301 digits).
struct Short(f64);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.abs();
        if magnitude != 0.0 && !(1e-4..1e15).contains(&magnitude) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The text of a label that matched no list, as found in the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LabelText {
    String(Snippet),
    Number(NumberText),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooLarge { len, limit } => write!(
                f,
                "{len} bytes exceed the limit of {limit} bytes (max_payload_bytes)"
            ),
            Problem::NotUtf8 { valid_up_to } => {
                write!(f, "not valid UTF-8 (bad byte at offset {valid_up_to})")
            }
            Problem::Malformed(e) => write!(f, "not valid JSON: {e}"),
            Problem::NumberOutOfRange(e) => write!(f, "a number beyond the f64 range: {e}"),
            Problem::Missing => f.write_str("not present"),
            Problem::NoTopicLevel => f.write_str("the topic has no such level, or it is empty"),
            Problem::EmptyTopic => f.write_str("the topic is empty"),
            Problem::EmptyKey => f.write_str("expected a non-empty string, found \"\""),
            Problem::KeyTooLong { len } => write!(
                f,
                "{len} bytes, more than the {} a key may have",
                super::MAX_KEY_BYTES
            ),
            Problem::KeyCharacter { character, at } => {
                let what = if *character == '+' || *character == '#' {
                    "an MQTT wildcard"
                } else if character.is_control() {
                    "a control character"
                } else {
                    "a Unicode noncharacter"
                };
                write!(
                    f,
                    "{what} ({}) at byte {at}: a key must be usable as a topic level",
                    character.escape_unicode()
                )
            }
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")?;
                if *found == Found::String && *expected == EXPECTED_NUMBER {
                    f.write_str(" (numbers inside strings are not converted)")?;
                }
                Ok(())
            }
            Problem::NonFinite => f.write_str("not a finite number"),
            Problem::Implausible { value, min, max } => {
                write!(f, "{} is outside the field's bounds (", Short(*value))?;
                if min.is_finite() {
                    write!(f, "min = {}", Short(*min))?;
                }
                if min.is_finite() && max.is_finite() {
                    f.write_str(", ")?;
                }
                if max.is_finite() {
                    write!(f, "max = {}", Short(*max))?;
                }
                f.write_str(")")
            }
            Problem::NotANumberText(s) => write!(f, "expected a number, found {s}"),
            Problem::NonFiniteText(s) => write!(f, "{s} is not a finite number"),
            Problem::EmptyPayload => f.write_str("expected a number, found an empty payload"),
            Problem::TimeOutOfRange => f.write_str("time out of range"),
            Problem::NotRfc3339(e) => write!(f, "not an RFC 3339 time: {e}"),
            Problem::PointerNeedsJson { format } => write!(
                f,
                "a JSON pointer needs format = \"json\" or \"csv\" (this pipeline reads format = \"{format}\")"
            ),
            Problem::KeyNeedsSenml { format } => write!(
                f,
                "key = \"name\" and \"basename\" need format = \"senml\" (this pipeline reads format = \"{format}\")"
            ),
            Problem::NotSenmlValue => f.write_str(
                "the configured value is none of \"v\", \"vb\", \"s\" and \"vs\"",
            ),
            Problem::NotGrouped => {
                f.write_str("key = \"name\" makes one reading per record, not per group")
            }
            Problem::InvalidPointer => f.write_str(
                "the configured pointer is not a valid JSON pointer (\"\" or starting with '/')",
            ),
            Problem::UnknownLabel { text, labels } => {
                match text {
                    LabelText::String(s) => write!(f, "the string {s}")?,
                    LabelText::Number(n) => write!(f, "the number {n}")?,
                }
                write!(f, " is not a label ({labels}; ASCII case is ignored)")
            }
            Problem::TimeText { expected, found } => write!(f, "expected {expected}, found {found}"),
            Problem::ColumnCount { expected, found } => {
                write!(f, "expected {expected} cells (the columns), found {found}")
            }
            Problem::UnterminatedQuote => f.write_str(
                "a quoted cell has no closing quote (RFC 4180: a quote inside a quoted cell is written \"\")",
            ),
            Problem::TextAfterQuote { column } => write!(
                f,
                "cell {column} has text after its closing quote (RFC 4180: a quoted cell ends at its closing quote)"
            ),
            Problem::NoColumn => f.write_str(
                "the configured pointer names no CSV column (\"/column\", one of columns)",
            ),
            Problem::NotRecordName => f.write_str(
                "the configured pointer is not one SenML record name (\"/name\")",
            ),
            Problem::SenmlNotPack(found) => {
                write!(f, "a SenML pack is a JSON array of records, found {found}")
            }
            Problem::SenmlNotRecord(found) => {
                write!(f, "a SenML record is a JSON object, found {found}")
            }
            Problem::SenmlFieldType {
                label,
                expected,
                found,
            } => write!(f, "\"{label}\" must be {expected}, found {found}"),
            Problem::SenmlVersionNotPositive => f.write_str("\"bver\" must be a positive integer"),
            Problem::SenmlVersion(version) => write!(
                f,
                "bver {version} is newer than SenML version {SENML_VERSION}, the version understood (RFC 8428: such a pack must not be used)"
            ),
            Problem::SenmlMustUnderstand(label) => write!(
                f,
                "the label {label} ends in '_', so it must be understood (RFC 8428), and it is not supported"
            ),
            Problem::SenmlSeveralValues => f.write_str(
                "a record has more than one of \"v\", \"vs\", \"vb\" and \"vd\" (RFC 8428 allows exactly one value)",
            ),
            Problem::SenmlNoValue { wanted, found } => {
                write!(f, "the record has no \"{wanted}\"")?;
                if let Some(found) = found {
                    write!(f, " (it has \"{found}\")")?;
                }
                Ok(())
            }
            Problem::SenmlWrongValue { expected, label } => {
                write!(f, "expected {expected}, found a \"{label}\" value")
            }
            Problem::InvalidSenmlName(name) => write!(
                f,
                "{name} is not a valid SenML name (RFC 8428: letters, digits, '-', ':', '.', '/' and '_', starting with a letter or a digit)"
            ),
            Problem::SenmlTimeOutOfRange => f.write_str("the resolved time is out of range"),
            Problem::BadEvent { problem, weights } => {
                fmt::Display::fmt(&ShownEvent { problem, weights }, f)
            }
        }
    }
}

/// What a field must be.
pub(crate) const EXPECTED_NUMBER: &str = "a number";
/// What a classification label must be.
pub(crate) const EXPECTED_LABEL: &str =
    "a label (true, false, or a string or number listed in positive or negative)";
/// The SenML version understood (RFC 8428's): a pack with a larger `bver` is not used.
pub(crate) const SENML_VERSION: u64 = 10;
/// What a key taken from the payload must be.
pub(crate) const EXPECTED_KEY: &str = "a string or an integer";
