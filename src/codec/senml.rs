//! SenML packs in JSON (RFC 8428): records resolved (§4.6), then turned into readings.
//!
//! A pack is read in one pass into a list of resolved records ([`Pack`]): base name, base time,
//! base value and base sum apply to their record and every later one until changed; the name
//! is base name + name; the time is base time + time in seconds, relative to "now" (a time the
//! caller supplies) when below 2^28 s, absolute (Unix) otherwise; the value is `v` (plus the
//! base value), `vb`, `vs` or `vd`, and the sum `s` plus the base sum. A record with neither
//! a value nor a sum (one carrying only base fields, as RFC 8428's actuator example starts)
//! is not a measurement and is skipped.
//!
//! Anything that breaks RFC 8428 — a payload that is not an array of objects, a field of the
//! wrong JSON type, more than one value in a record, a `bver` above 10, an unknown label ending
//! in `_` — drops the whole pack (`bad_senml`) before any reading is made from it. Unknown
//! labels are ignored, as RFC 8428 requires.
//!
//! The records are kept in a `SmallVec` of 16 on the stack: a pack of up to 16 records whose
//! names have no escape sequences is decoded without allocating; a larger one allocates that
//! list (once), and grouping (`key = "basename"` or a topic key) a list of indices.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::error::{Problem, SENML_VERSION};
use super::json::Number;
use super::shown::{Found, Snippet};

/// Resolved times below this many seconds are relative to "now" (RFC 8428: 2^28 s).
const RELATIVE_LIMIT_S: f64 = 268_435_456.0;
/// Largest |milliseconds| kept (just inside the i64 range).
const MAX_MILLIS: f64 = 9.0e18;
/// Records kept on the stack before the list spills to the heap.
const INLINE_RECORDS: usize = 16;

/// Which value of a record a `key = "name"` field reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenmlValue {
    /// The number `v` (plus the base value).
    V,
    /// The boolean `vb`: 1.0 or 0.0.
    Vb,
    /// The sum `s` (plus the base sum).
    S,
    /// The string `vs` (a classification label only).
    Vs,
}

impl SenmlValue {
    /// The value a field pointer selects (`"v"`, `"vb"`, `"s"`, `"vs"`).
    pub(crate) fn parse(pointer: &str) -> Option<Self> {
        match pointer {
            "v" => Some(SenmlValue::V),
            "vb" => Some(SenmlValue::Vb),
            "s" => Some(SenmlValue::S),
            "vs" => Some(SenmlValue::Vs),
            _ => None,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            SenmlValue::V => "v",
            SenmlValue::Vb => "vb",
            SenmlValue::S => "s",
            SenmlValue::Vs => "vs",
        }
    }
}

/// The value of a resolved record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordValue<'de> {
    /// No `v`, `vb`, `vs` or `vd` (and no base value).
    None,
    /// `v` plus the base value (or the base value alone).
    Number(f64),
    /// `vb`.
    Bool(bool),
    /// `vs`.
    String(Cow<'de, str>),
    /// `vd` (base64 data, never a reading's value).
    Data,
}

impl RecordValue<'_> {
    /// The label of the value, for messages.
    pub(crate) fn label(&self) -> Option<&'static str> {
        match self {
            RecordValue::None => None,
            RecordValue::Number(_) => Some("v"),
            RecordValue::Bool(_) => Some("vb"),
            RecordValue::String(_) => Some("vs"),
            RecordValue::Data => Some("vd"),
        }
    }
}

/// One resolved record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record<'de> {
    /// Its position in the pack, 1-based (RFC 8428 numbers records from 1).
    pub number: usize,
    /// Index of its base name in [`Pack::base_names`].
    pub base: usize,
    /// Its own name (`n`), `""` when absent.
    pub name: Cow<'de, str>,
    /// Resolved time in Unix milliseconds; `None` when out of range.
    pub time_ms: Option<i64>,
    pub value: RecordValue<'de>,
    /// `s` plus the base sum, when either is present.
    pub sum: Option<f64>,
}

/// A resolved pack: its records with a value or a sum, in pack order.
#[derive(Debug, Default)]
pub(crate) struct Pack<'de> {
    /// The base names in force, in the order they were set; `[0]` is `""` (none yet).
    pub base_names: SmallVec<[Cow<'de, str>; 4]>,
    pub records: SmallVec<[Record<'de>; INLINE_RECORDS]>,
}

impl Pack<'_> {
    /// The base name of `record`.
    pub(crate) fn base_name(&self, record: &Record<'_>) -> &str {
        self.base_names.get(record.base).map_or("", |name| name)
    }
}

/// Why a pack is not used: the record (1-based; `None` for the pack itself) and the problem.
pub(crate) type PackProblem = (Option<usize>, Problem);

/// Reads and resolves a pack.
///
/// # Errors
/// serde_json's error for malformed JSON (the caller classifies it); `Ok(Err(..))` for a pack
/// that breaks RFC 8428.
pub(crate) fn read_pack(
    text: &str,
    now_ms: i64,
) -> Result<Result<Pack<'_>, PackProblem>, serde_json::Error> {
    let mut reader = PackReader {
        now_ms,
        base: Base::default(),
        pack: Pack::default(),
        problem: None,
    };
    reader.pack.base_names.push(Cow::Borrowed(""));
    let mut deserializer = serde_json::Deserializer::from_str(text);
    PackSeed {
        reader: &mut reader,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(match reader.problem {
        Some(problem) => Err(problem),
        None => Ok(reader.pack),
    })
}

/// Whether `name` is a valid SenML name (RFC 8428): letters, digits, `-`, `:`, `.`, `/`, `_`,
/// starting with a letter or a digit.
pub(crate) fn is_valid_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'/' | b'_'))
}

/// The base values in force.
#[derive(Default)]
struct Base {
    /// Index into [`Pack::base_names`].
    name: usize,
    time: f64,
    value: Option<f64>,
    sum: Option<f64>,
}

struct PackReader<'de> {
    now_ms: i64,
    base: Base,
    pack: Pack<'de>,
    /// The first problem; once set, the rest is only checked for JSON syntax.
    problem: Option<PackProblem>,
}

impl<'de> PackReader<'de> {
    fn resolve(&mut self, number: usize, raw: RawRecord<'de>) -> Result<(), Problem> {
        if let Some(version) = raw.bver {
            let version = match version {
                Number::Unsigned(v) => Some(v),
                // Beyond 1e18 only "larger than 10" matters.
                Number::Float(v) if v.fract() == 0.0 && v >= 1.0 => {
                    Some(if v < 1e18 { v as u64 } else { u64::MAX })
                }
                Number::Float(v) if v.fract() != 0.0 => {
                    return Err(Problem::SenmlFieldType {
                        label: "bver",
                        expected: "a positive integer",
                        found: Found::NonIntegerNumber,
                    })
                }
                _ => None,
            };
            match version {
                Some(0) | None => return Err(Problem::SenmlVersionNotPositive),
                Some(v) if v > SENML_VERSION => return Err(Problem::SenmlVersion(v)),
                Some(_) => {}
            }
        }
        if raw.values > 1 {
            return Err(Problem::SenmlSeveralValues);
        }
        if let Some(name) = raw.bn {
            self.pack.base_names.push(name);
            self.base.name = self.pack.base_names.len() - 1;
        }
        if let Some(time) = raw.bt {
            self.base.time = time;
        }
        if let Some(value) = raw.bv {
            self.base.value = Some(value);
        }
        if let Some(sum) = raw.bs {
            self.base.sum = Some(sum);
        }
        // RFC 8428 §4.6: a missing value or base value counts as zero, so a record with no
        // value field of its own takes the base value, if there is one.
        let value = if let Some(v) = raw.v {
            RecordValue::Number(self.base.value.unwrap_or(0.0) + v)
        } else if let Some(vb) = raw.vb {
            RecordValue::Bool(vb)
        } else if let Some(vs) = raw.vs {
            RecordValue::String(vs)
        } else if raw.vd {
            RecordValue::Data
        } else if let Some(value) = self.base.value {
            RecordValue::Number(value)
        } else {
            RecordValue::None
        };
        let sum = match (raw.s, self.base.sum) {
            (None, None) => None,
            (s, base) => Some(s.unwrap_or(0.0) + base.unwrap_or(0.0)),
        };
        if value == RecordValue::None && sum.is_none() {
            return Ok(());
        }
        let seconds = self.base.time + raw.t.unwrap_or(0.0);
        self.pack.records.push(Record {
            number,
            base: self.base.name,
            name: raw.n.unwrap_or(Cow::Borrowed("")),
            time_ms: resolve_time(seconds, self.now_ms),
            value,
            sum,
        });
        Ok(())
    }
}

/// Seconds (absolute, or relative to `now_ms` below 2^28) to Unix milliseconds.
fn resolve_time(seconds: f64, now_ms: i64) -> Option<i64> {
    let millis = (seconds * 1000.0).round();
    if !millis.is_finite() || millis.abs() >= MAX_MILLIS {
        return None;
    }
    // In range (checked above) and integral (rounded), so the cast is exact.
    let millis = millis as i64;
    if seconds < RELATIVE_LIMIT_S {
        now_ms.checked_add(millis)
    } else {
        Some(millis)
    }
}

/// The fields of one record, as written (before resolution).
#[derive(Default)]
struct RawRecord<'de> {
    bn: Option<Cow<'de, str>>,
    bt: Option<f64>,
    bv: Option<f64>,
    bs: Option<f64>,
    bver: Option<Number>,
    n: Option<Cow<'de, str>>,
    v: Option<f64>,
    vs: Option<Cow<'de, str>>,
    vb: Option<bool>,
    vd: bool,
    s: Option<f64>,
    t: Option<f64>,
    /// How many of `v`, `vs`, `vb`, `vd` are present.
    values: u8,
}

/// The labels of RFC 8428 (JSON), and the others.
#[derive(Clone, Copy)]
enum Label {
    Bn,
    Bt,
    Bu,
    Bv,
    Bs,
    Bver,
    N,
    U,
    V,
    Vs,
    Vb,
    Vd,
    S,
    T,
    Ut,
    /// Not defined by RFC 8428: ignored.
    Other,
    /// Ends in `_`: must be understood, and is not.
    MustUnderstand(Snippet),
}

impl Label {
    fn name(self) -> &'static str {
        match self {
            Label::Bn => "bn",
            Label::Bt => "bt",
            Label::Bu => "bu",
            Label::Bv => "bv",
            Label::Bs => "bs",
            Label::Bver => "bver",
            Label::N => "n",
            Label::U => "u",
            Label::V => "v",
            Label::Vs => "vs",
            Label::Vb => "vb",
            Label::Vd => "vd",
            Label::S => "s",
            Label::T => "t",
            Label::Ut => "ut",
            Label::Other | Label::MustUnderstand(_) => "",
        }
    }
}

/// A JSON value as a SenML field holds it (containers skipped).
enum Scalar<'de> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn found(&self) -> Found {
        match self {
            Scalar::Null => Found::Null,
            Scalar::Bool(_) => Found::Bool,
            Scalar::Number(_) => Found::Number,
            Scalar::String(_) => Found::String,
            Scalar::Array => Found::Array,
            Scalar::Object => Found::Object,
        }
    }
}

/// The top level: an array of records.
struct PackSeed<'r, 'de> {
    reader: &'r mut PackReader<'de>,
}

impl<'de> DeserializeSeed<'de> for PackSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl PackSeed<'_, '_> {
    fn not_a_pack(self, found: Found) {
        self.reader.problem = Some((None, Problem::SenmlNotPack(found)));
    }
}

impl<'de> Visitor<'de> for PackSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = 0;
        loop {
            number += 1;
            let Some(raw) = seq.next_element_seed(RecordSeed)? else {
                return Ok(());
            };
            if self.reader.problem.is_some() {
                continue;
            }
            let result = raw.and_then(|raw| self.reader.resolve(number, raw));
            if let Err(problem) = result {
                self.reader.problem = Some((Some(number), problem));
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.not_a_pack(Found::Object);
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_a_pack(Found::Bool);
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_a_pack(Found::Number);
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_a_pack(Found::Number);
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_a_pack(Found::Number);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_a_pack(Found::String);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_a_pack(Found::Null);
        Ok(())
    }
}

/// One record: a JSON object of SenML fields. Its value is the raw record, or the first
/// problem with it.
struct RecordSeed;

type RecordResult<'de> = Result<RawRecord<'de>, Problem>;

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = RecordResult<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed {
    type Value = RecordResult<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawRecord::default();
        let mut problem = None;
        let mut seen_values = [false; 4];
        while let Some(label) = map.next_key_seed(LabelSeed)? {
            if let Label::Other = label {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let scalar = map.next_value_seed(ScalarSeed)?;
            if problem.is_some() {
                continue;
            }
            if let Err(p) = raw.set(label, scalar, &mut seen_values) {
                problem = Some(p);
            }
        }
        raw.values = seen_values.iter().map(|&seen| u8::from(seen)).sum();
        Ok(match problem {
            Some(problem) => Err(problem),
            None => Ok(raw),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(Problem::SenmlNotRecord(Found::Array)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::Bool)))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::Number)))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::Number)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::Number)))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::String)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Problem::SenmlNotRecord(Found::Null)))
    }
}

impl<'de> RawRecord<'de> {
    /// Records field `label`; a value of the wrong JSON type is a problem.
    fn set(
        &mut self,
        label: Label,
        scalar: Scalar<'de>,
        seen_values: &mut [bool; 4],
    ) -> Result<(), Problem> {
        let wrong = |expected: &'static str, scalar: &Scalar<'_>| Problem::SenmlFieldType {
            label: label.name(),
            expected,
            found: scalar.found(),
        };
        let string = |scalar: Scalar<'de>| match scalar {
            Scalar::String(s) => Ok(s),
            other => Err(wrong("a string", &other)),
        };
        let number = |scalar: Scalar<'de>| match scalar {
            Scalar::Number(n) => Ok(n.as_f64()),
            other => Err(wrong("a number", &other)),
        };
        match label {
            Label::Bn => self.bn = Some(string(scalar)?),
            Label::Bt => self.bt = Some(number(scalar)?),
            Label::Bv => self.bv = Some(number(scalar)?),
            Label::Bs => self.bs = Some(number(scalar)?),
            Label::Bver => match scalar {
                Scalar::Number(n) => self.bver = Some(n),
                other => return Err(wrong("a positive integer", &other)),
            },
            Label::N => self.n = Some(string(scalar)?),
            Label::Bu | Label::U => {
                string(scalar)?;
            }
            Label::V => {
                self.v = Some(number(scalar)?);
                seen_values[0] = true;
            }
            Label::Vs => {
                self.vs = Some(string(scalar)?);
                seen_values[1] = true;
            }
            Label::Vb => match scalar {
                Scalar::Bool(b) => {
                    self.vb = Some(b);
                    seen_values[2] = true;
                }
                other => return Err(wrong("true or false", &other)),
            },
            Label::Vd => {
                string(scalar)?;
                self.vd = true;
                seen_values[3] = true;
            }
            Label::S => self.s = Some(number(scalar)?),
            Label::T => self.t = Some(number(scalar)?),
            Label::Ut => {
                number(scalar)?;
            }
            Label::MustUnderstand(name) => return Err(Problem::SenmlMustUnderstand(name)),
            Label::Other => {}
        }
        Ok(())
    }
}

/// A record's member name, as a [`Label`].
struct LabelSeed;

impl<'de> DeserializeSeed<'de> for LabelSeed {
    type Value = Label;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Label, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for LabelSeed {
    type Value = Label;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML label")
    }

    fn visit_str<E>(self, name: &str) -> Result<Label, E> {
        Ok(match name {
            "bn" => Label::Bn,
            "bt" => Label::Bt,
            "bu" => Label::Bu,
            "bv" => Label::Bv,
            "bs" => Label::Bs,
            "bver" => Label::Bver,
            "n" => Label::N,
            "u" => Label::U,
            "v" => Label::V,
            "vs" => Label::Vs,
            "vb" => Label::Vb,
            "vd" => Label::Vd,
            "s" => Label::S,
            "t" => Label::T,
            "ut" => Label::Ut,
            other if other.ends_with('_') => Label::MustUnderstand(Snippet::new(other)),
            _ => Label::Other,
        })
    }
}

/// A field's value as a [`Scalar`]; strings borrowed from the payload when they have no
/// escapes.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Number::Unsigned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Number::Signed(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Number::Float(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::String(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}
