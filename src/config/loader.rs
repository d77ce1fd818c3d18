//! Walks the parsed TOML tree into [`Config`], collecting every problem instead of stopping
//! at the first: a user fixing a gateway config over SSH should see all of them at once.
//!
//! Each TOML table is read through a [`Section`], which wraps toml-span's `TableHelper`
//! and turns its errors into messages that name the key and what it accepts. Values that
//! fail a check fall back to their default so that later checks still run; the caller
//! only gets a [`Config`] when no problem at all was found.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::ServerName;
use toml_span::de_helpers::{expected, TableHelper};
use toml_span::value::{Key, Value, ValueInner};
use toml_span::{DeserError, Deserialize, ErrorKind, Span, Spanned};

mod bounds;
mod classifiers;
mod operators;
mod recommend;

use super::error::LineIndex;
use super::rules;
use super::schema::{
    default_client_id, default_output, AnomalyModelConfig, ClassificationConfig, ClientAuthConfig,
    Config, CsvConfig, FieldConfig, ForecastConfig, HorizonEvery, HttpConfig, KMeansConfig,
    KeySource, ModelConfig, MqttConfig, PayloadFormat, PipelineConfig, RegressionConfig,
    RuntimeConfig, SimulateConfig, StoreConfig, TimeSource, TimeUnit, TlsConfig,
    DEFAULT_CSV_DELIMITER, DEFAULT_EXPLAIN_TOP, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_SKEW,
    DEFAULT_SEASON_BINS, DEFAULT_SENML_VALUE, DEFAULT_TLS_PORT, MIN_MAX_MEMORY, SENML_VALUES,
};
use crate::model::kmeans::{MAX_DYING_FRACTION, MAX_LLOYD_ITERATIONS};
use crate::model::{
    AnomalyParams, ForecastParams, KMeansParams, LinearAlgorithm, LinearParams, LogisticAlgorithm,
    LogisticParams, ModelError, SeasonSpec, Seasons, StateParams, MAX_CLUSTERS, MAX_FEATURES,
    MAX_HORIZON, MAX_LAGS, MAX_SEASONS, MAX_SEASON_BINS, MAX_SEASON_STEPS, MAX_STATE_FIELDS,
};
use crate::pointer::parse_pointer;
use crate::tls::{TlsError, TlsSetting};
use crate::topic::{Placeholder, TopicFilter, TopicTemplate};

/// Longest accepted duration. Durations end up in `Instant + Duration` arithmetic and
/// timers, which panic or misbehave near `Duration::MAX`; a year is beyond any sane setting.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// "> 0" for durations.
const POSITIVE: Duration = Duration::from_nanos(1);
/// MQTT keep-alive travels as a 16-bit number of seconds.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
/// rumqttc rejects (panics on) keep-alive values under 5 s.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The largest packet MQTT can encode (remaining length of 268 435 455 bytes).
const MAX_MQTT_PACKET: i64 = 268_435_455;

/// A problem: byte offset in the source and the complete message (component included).
pub(crate) struct Problem {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Whether the loader opens the files a configuration names (the PEM files of `[mqtt.tls]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Files {
    /// Read and parse them, reporting a missing or malformed file at its key.
    Check,
    /// Leave them alone (commands that never connect to the broker: replay, inspect).
    Skip,
}

/// What the table readers need to know besides the table.
struct Context<'a> {
    /// Relative paths in the file are relative to this directory (the config file's).
    dir: &'a Path,
    files: Files,
}

impl Context<'_> {
    fn resolve(&self, written: &str) -> PathBuf {
        // `join` keeps an absolute path as it is.
        self.dir.join(written)
    }
}

/// Reads `text` (already parsed as UTF-8, BOM removed) into a [`Config`].
pub(crate) fn load_text(source: &Path, text: &str, files: Files) -> Result<Config, Vec<Problem>> {
    let lines = LineIndex::new(text);
    let mut root = match toml_span::parse(text) {
        Ok(root) => root,
        Err(error) => return Err(vec![syntax_problem(&error, &lines)]),
    };
    let mut problems = Problems {
        text,
        lines,
        list: Vec::new(),
    };
    let context = Context {
        dir: source.parent().unwrap_or(Path::new("")),
        files,
    };
    let config = config(&mut root, source, &context, &mut problems);
    let mut list = problems.list;
    match config {
        Some(config) if list.is_empty() => Ok(config),
        _ => {
            if list.is_empty() {
                // Every path that yields no config records why; this is a safety net so a
                // bug here can never turn into an "invalid config" without a message.
                list.push(Problem {
                    offset: 0,
                    message: "the configuration is incomplete (internal error: no reason recorded)"
                        .into(),
                });
            }
            // File order reads best; stable, so problems at one place keep their order.
            list.sort_by_key(|problem| problem.offset);
            Err(list)
        }
    }
}

/// A TOML syntax error: the parser stops at the first one, so there is exactly one.
fn syntax_problem(error: &toml_span::Error, lines: &LineIndex<'_>) -> Problem {
    let first = match &error.kind {
        ErrorKind::DuplicateKey { first, .. } | ErrorKind::DuplicateTable { first, .. } => {
            Some(*first)
        }
        _ => None,
    };
    let mut message = format!("TOML syntax error: {error}");
    if let Some(first) = first {
        let (line, col) = lines.locate(first.start);
        message.push_str(&format!(" (first defined at {line}:{col})"));
    }
    Problem {
        offset: error.span.start,
        message,
    }
}

/// Where problems are collected while walking the tree.
struct Problems<'s> {
    text: &'s str,
    lines: LineIndex<'s>,
    list: Vec<Problem>,
}

impl Problems<'_> {
    /// Records `message` (already prefixed with its component) at the value in `span`.
    fn at(&mut self, span: Span, message: String) {
        self.list.push(Problem {
            offset: value_start(self.text, span.start),
            message,
        });
    }
}

/// toml-span's string spans exclude the opening quote; point at the quote instead, where
/// the value visibly starts (also for quoted keys).
fn value_start(text: &str, start: usize) -> usize {
    let before = text.get(..start).unwrap_or("");
    // Longest delimiters first: a multi-line string's span starts after `"""` and the
    // newline that TOML trims right after it.
    for delimiter in [
        "\"\"\"\r\n",
        "'''\r\n",
        "\"\"\"\n",
        "'''\n",
        "\"\"\"",
        "'''",
        "\"",
        "'",
    ] {
        if before.ends_with(delimiter) {
            return start - delimiter.len();
        }
    }
    start
}

/// One TOML table being read. Its problems are kept without the component name, which is
/// added in [`Section::finish`] (a pipeline's name is only known once `name` was read).
struct Section<'de> {
    helper: TableHelper<'de>,
    /// The table's span: missing keys are reported at the table (its `[header]`).
    span: Span,
    /// Prefix of key names in messages, e.g. `model.`.
    path: &'static str,
    problems: Vec<(Span, String)>,
}

impl<'de> Section<'de> {
    /// Opens `value` as a table; on failure returns the TOML type found instead.
    fn open(value: &mut Value<'de>, path: &'static str) -> Result<Self, &'static str> {
        let span = value.span;
        if value.as_table().is_none() {
            return Err(value.as_ref().type_str());
        }
        let helper = TableHelper::new(value).map_err(|_| "table")?;
        Ok(Self {
            helper,
            span,
            path,
            problems: Vec::new(),
        })
    }

    /// Records a problem about this table's content.
    fn error(&mut self, span: Span, message: String) {
        self.problems.push((span, message));
    }

    /// Moves the errors toml-span recorded for `key` since `before` into `problems`.
    fn drain(&mut self, before: usize, key: &str) {
        let new: Vec<_> = self.helper.errors.drain(before..).collect();
        for error in new {
            let converted = convert(error, self.path, key);
            self.problems.extend(converted);
        }
    }

    /// An optional key; a value of the wrong type is recorded and read as absent.
    fn get<T: Deserialize<'de>>(&mut self, key: &'static str) -> Option<Spanned<T>> {
        let before = self.helper.errors.len();
        let value = self.helper.optional_s(key);
        self.drain(before, key);
        value
    }

    /// A required key; a missing key is recorded at the table.
    fn require<T: Deserialize<'de>>(&mut self, key: &'static str) -> Option<Spanned<T>> {
        let before = self.helper.errors.len();
        let value = self.helper.required_s(key).ok();
        self.drain(before, key);
        value
    }

    /// Takes a key's raw value (for tables and arrays read by hand).
    fn take(&mut self, key: &'static str) -> Option<(Key<'de>, Value<'de>)> {
        self.helper.take(key)
    }

    /// Opens the sub-table `key`, recording a problem if it is something else.
    fn table(&mut self, key: &'static str, path: &'static str) -> Option<Section<'de>> {
        let (_, mut value) = self.take(key)?;
        match Section::open(&mut value, path) {
            Ok(section) => Some(section),
            Err(found) => {
                let message = format!("{}{key} must be a table (got {})", self.path, a(found));
                self.error(value.span, message);
                None
            }
        }
    }

    fn string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        self.get(key)
    }

    fn bool(&mut self, key: &'static str) -> Option<bool> {
        self.get::<bool>(key).map(|v| v.value)
    }

    /// An integer in `range`.
    fn int(&mut self, key: &'static str, range: RangeInclusive<i64>) -> Option<Spanned<i64>> {
        let value = self.get::<i64>(key)?;
        if range.contains(&value.value) {
            return Some(value);
        }
        let accepted = if *range.end() == i64::MAX {
            format!("at least {}", range.start())
        } else if range.end() - range.start() == 1 {
            format!("{} or {}", range.start(), range.end())
        } else {
            format!("between {} and {}", range.start(), range.end())
        };
        let message = format!(
            "{}{key} must be {accepted} (got {})",
            self.path, value.value
        );
        self.error(value.span, message);
        None
    }

    /// An integer in `range`, converted to the field's type. The conversion only fails
    /// where `usize` is 32 bits (armv7 gateways) and the value is beyond it.
    fn int_as<T: TryFrom<i64>>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let value = self.int(key, range)?;
        match T::try_from(value.value) {
            Ok(converted) => Some(converted),
            Err(_) => {
                let message = format!(
                    "{}{key} is too large for this platform (got {})",
                    self.path, value.value
                );
                self.error(value.span, message);
                None
            }
        }
    }

    /// A number (integer or float) for which `accepts` holds; `accepted` says which.
    fn number(
        &mut self,
        key: &'static str,
        accepts: impl Fn(f64) -> bool,
        accepted: &str,
    ) -> Option<f64> {
        self.number_s(key, accepts, accepted).map(|v| v.value)
    }

    /// [`Section::number`] with the value's span.
    fn number_s(
        &mut self,
        key: &'static str,
        accepts: impl Fn(f64) -> bool,
        accepted: &str,
    ) -> Option<Spanned<f64>> {
        let value = self.get::<Number>(key)?;
        if accepts(value.value.0) {
            return Some(Spanned::with_span(value.value.0, value.span));
        }
        let message = format!(
            "{}{key} must be {accepted} (got {})",
            self.path, value.value.0
        );
        self.error(value.span, message);
        None
    }

    /// A size in bytes of at least `min`: an integer, or a string such as `"192MiB"` or
    /// `"1.5GB"` (units as the `bytesize` crate reads them: KB = 1000, KiB = 1024).
    fn byte_size(&mut self, key: &'static str, min: u64) -> Option<u64> {
        let value = self.get::<ByteSizeValue>(key)?;
        if value.value.0 >= min {
            return Some(value.value.0);
        }
        let message = format!(
            "{}{key} must be at least {} (got {})",
            self.path,
            bytesize::ByteSize(min).display().iec(),
            bytesize::ByteSize(value.value.0).display().iec()
        );
        self.error(value.span, message);
        None
    }

    /// A duration string of at least `min` (at most [`MAX_DURATION`]).
    fn duration(&mut self, key: &'static str, min: Duration) -> Option<Spanned<Duration>> {
        self.duration_within(key, min, MAX_DURATION)
    }

    fn duration_within(
        &mut self,
        key: &'static str,
        min: Duration,
        max: Duration,
    ) -> Option<Spanned<Duration>> {
        let value = self.get::<DurationValue>(key)?;
        let duration = value.value.0;
        let problem = if duration < min {
            if min == POSITIVE {
                Some("greater than 0".to_owned())
            } else {
                Some(format!("at least {}", humantime::format_duration(min)))
            }
        } else if duration > max {
            Some(format!("at most {}", humantime::format_duration(max)))
        } else {
            None
        };
        match problem {
            None => Some(Spanned::with_span(duration, value.span)),
            Some(accepted) => {
                let message = format!(
                    "{}{key} must be {accepted} (got {})",
                    self.path,
                    humantime::format_duration(duration)
                );
                self.error(value.span, message);
                None
            }
        }
    }

    /// Reports keys nobody asked for (typos must not be silently ignored) and hands every
    /// problem of this table to `problems`, prefixed with `component`.
    fn finish(mut self, component: &str, problems: &mut Problems<'_>) {
        if let Err(error) = self.helper.finalize(None) {
            for error in error.errors {
                self.problems.extend(convert(error, self.path, ""));
            }
        }
        for (span, message) in self.problems {
            problems.at(span, prefixed(component, message));
        }
    }

    /// Like [`Section::finish`] for a table nested in `parent` (an array item): hands its
    /// problems, unknown keys included, to `parent`, which names the component.
    fn report_into(mut self, parent: &mut Section<'_>) {
        if let Err(error) = self.helper.finalize(None) {
            for error in error.errors {
                self.problems.extend(convert(error, self.path, ""));
            }
        }
        parent.problems.extend(self.problems);
    }

    /// Like [`Section::finish`] without the unknown-key check: used when the accepted keys
    /// depend on a value that is itself wrong (an unsupported model `kind`).
    fn abandon(self, component: &str, problems: &mut Problems<'_>) {
        for (span, message) in self.problems {
            problems.at(span, prefixed(component, message));
        }
    }
}

fn prefixed(component: &str, message: String) -> String {
    if component.is_empty() {
        message
    } else {
        format!("{component}: {message}")
    }
}

/// Turns a toml-span error about `key` into messages that name the key and what it accepts.
fn convert(error: toml_span::Error, path: &str, key: &str) -> Vec<(Span, String)> {
    let described = error.to_string();
    let message = match error.kind {
        ErrorKind::Wanted { expected, found } => {
            format!(
                "{path}{key} must be {} (got {})",
                wanted(expected),
                a(found)
            )
        }
        // Our own `Deserialize` impls word their messages to follow the key: either
        // "must be …" or an index such as "[2] must be …".
        ErrorKind::Custom(text) if text.starts_with('[') => format!("{path}{key}{text}"),
        ErrorKind::Custom(text) => format!("{path}{key} {text}"),
        ErrorKind::MissingField(name) => format!("missing required key \"{path}{name}\""),
        ErrorKind::UnexpectedKeys { keys, expected } => {
            let accepted = expected.join(", ");
            return keys
                .into_iter()
                .map(|(name, span)| {
                    let message =
                        format!("unknown key \"{path}{name}\" (accepted keys: {accepted})");
                    (span, message)
                })
                .collect();
        }
        _ => format!("{path}{key}: {described}"),
    };
    vec![(error.span, message)]
}

/// toml-span names integer targets by Rust type (`i64`); users think "an integer".
fn wanted(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "isize" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            "an integer"
        }
        "a bool" => "true or false",
        other => other,
    }
}

/// A TOML type name with its article: "an integer", "a string".
fn a(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// A number written as a TOML integer or float (`rate = 50` and `rate = 50.0` both work).
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        match value.take() {
            ValueInner::Float(float) => Ok(Number(float)),
            // Precision loss above 2^53 is irrelevant for the settings read as numbers.
            ValueInner::Integer(integer) => Ok(Number(integer as f64)),
            other => Err(expected("a number", other, value.span).into()),
        }
    }
}

/// A duration written as a humantime string: `"500ms"`, `"30s"`, `"10m"`, `"1h 30m"`.
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::String(text) => match humantime::parse_duration(&text) {
                Ok(duration) => Ok(DurationValue(duration)),
                Err(error) => Err(custom(
                    span,
                    format!(
                        "must be a duration such as \"500ms\", \"30s\" or \"10m\" (got \"{text}\": {error})"
                    ),
                )),
            },
            other => Err(expected("a duration string such as \"30s\"", other, span).into()),
        }
    }
}

/// A size in bytes: an integer, or a string with a unit (`"192MiB"`, `"512 MB"`).
struct ByteSizeValue(u64);

impl<'de> Deserialize<'de> for ByteSizeValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Integer(n) => u64::try_from(n).map(ByteSizeValue).map_err(|_| {
                custom(span, format!("must be a size in bytes, not negative (got {n})"))
            }),
            ValueInner::String(text) => match text.trim().parse::<bytesize::ByteSize>() {
                Ok(size) => Ok(ByteSizeValue(size.as_u64())),
                Err(error) => Err(custom(
                    span,
                    format!(
                        "must be a size such as \"192MiB\", \"512MB\" or a number of bytes (got \"{text}\": {error})"
                    ),
                )),
            },
            other => Err(expected("a size such as \"192MiB\" or a number of bytes", other, span).into()),
        }
    }
}

/// `clean_session = true | false | "auto"`: `None` for `"auto"`.
struct CleanSessionValue(Option<bool>);

impl<'de> Deserialize<'de> for CleanSessionValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Boolean(clean) => Ok(CleanSessionValue(Some(clean))),
            ValueInner::String(text) if text == "auto" => Ok(CleanSessionValue(None)),
            ValueInner::String(text) => Err(custom(
                span,
                format!("must be true, false or \"auto\" (got \"{text}\")"),
            )),
            other => Err(expected("true, false or \"auto\"", other, span).into()),
        }
    }
}

/// An array of strings, each with its span, so that a bad entry is reported where it is.
struct StringList(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Array(items) => {
                let mut strings = Vec::with_capacity(items.len());
                let mut errors = Vec::new();
                for (index, mut item) in items.into_iter().enumerate() {
                    let item_span = item.span;
                    match item.take() {
                        ValueInner::String(text) => {
                            strings.push(Spanned::with_span(text.into_owned(), item_span));
                        }
                        other => errors.push(custom_error(
                            item_span,
                            format!("[{index}] must be a string (got {})", a(other.type_str())),
                        )),
                    }
                }
                if errors.is_empty() {
                    Ok(StringList(strings))
                } else {
                    Err(DeserError { errors })
                }
            }
            other => Err(expected("an array of strings", other, span).into()),
        }
    }
}

fn custom_error(span: Span, message: String) -> toml_span::Error {
    toml_span::Error {
        kind: ErrorKind::Custom(message.into()),
        span,
        line_info: None,
    }
}

fn custom(span: Span, message: String) -> DeserError {
    custom_error(span, message).into()
}

/// Parse the top-level table `[name]` with `parse`, if present, reporting its leftover keys as
/// component `[name]`.
fn optional_table<'de, T>(
    top: &mut Section<'de>,
    name: &'static str,
    problems: &mut Problems<'_>,
    parse: impl FnOnce(&mut Section<'de>) -> T,
) -> Option<T> {
    let mut section = top.table(name, "")?;
    let value = parse(&mut section);
    section.finish(&format!("[{name}]"), problems);
    Some(value)
}

/// The root table.
fn config(
    root: &mut Value<'_>,
    source: &Path,
    context: &Context<'_>,
    problems: &mut Problems<'_>,
) -> Option<Config> {
    let mut top = match Section::open(root, "") {
        Ok(top) => top,
        Err(found) => {
            // toml-span always returns a table for a document; kept for robustness.
            problems.at(
                root.span,
                format!("the file must be a TOML table (got {})", a(found)),
            );
            return None;
        }
    };
    let (mut mqtt, client_id_written) =
        optional_table(&mut top, "mqtt", problems, |s| mqtt(s, context)).unwrap_or_default();
    if !client_id_written {
        mqtt.client_id = default_client_id(source);
    }
    let store = optional_table(&mut top, "store", problems, store).unwrap_or_default();
    let runtime = optional_table(&mut top, "runtime", problems, runtime).unwrap_or_default();
    let http = optional_table(&mut top, "http", problems, http).unwrap_or_default();
    let simulate = optional_table(&mut top, "simulate", problems, simulate);
    let pipelines = pipelines(&mut top, problems);
    let classifiers = classifiers::classifiers(&mut top, pipelines.as_deref(), problems);
    top.finish("", problems);
    Some(Config {
        source: source.to_path_buf(),
        mqtt,
        store,
        runtime,
        http,
        simulate,
        pipelines: pipelines?,
        classifiers: classifiers?,
    })
}

/// `[mqtt]`, and whether `client_id` was written (else the caller fills in
/// [`default_client_id`], which needs the file's path).
fn mqtt(s: &mut Section<'_>, context: &Context<'_>) -> (MqttConfig, bool) {
    let d = MqttConfig::default();
    let embedded = s.bool("embedded").unwrap_or(d.embedded);
    let host = s.string("host"); // The embedded broker always listens on 127.0.0.1, so `host` does not matter then.
    if let Some(host) = host
        .as_ref()
        .filter(|h| h.value.trim().is_empty() && !embedded)
    {
        s.error(
            host.span,
            "host must not be empty (a host name or IP address of the broker)".into(),
        );
    }
    let port = s.int_as::<u16>("port", 1..=65_535);
    let client_id = s.string("client_id");
    if let Some(id) = client_id.as_ref().filter(|id| id.value.is_empty()) {
        s.error(
            id.span,
            "client_id must not be empty (brokers use it to tell clients apart)".into(),
        );
    }
    let username = s.string("username");
    let password = s.string("password");
    if let (Some(password), None) = (&password, &username) {
        s.error(
            password.span,
            "password is set but username is not (MQTT sends a password only with a user name)"
                .into(),
        );
    }
    let keep_alive = s.duration_within("keep_alive", MIN_KEEP_ALIVE, MAX_KEEP_ALIVE);
    let max_packet_bytes = s
        .int_as("max_packet_bytes", 1024..=MAX_MQTT_PACKET)
        .unwrap_or(d.max_packet_bytes);
    let subscribe_qos = s.int_as("subscribe_qos", 0..=1).unwrap_or(d.subscribe_qos);
    let clean_session = s
        .get::<CleanSessionValue>("clean_session")
        .map_or(d.clean_session, |v| v.value.0);
    let reconnect_min = s.duration("reconnect_min", POSITIVE);
    let reconnect_max = s.duration("reconnect_max", POSITIVE);
    let min = reconnect_min.as_ref().map_or(d.reconnect_min, |v| v.value);
    let max = reconnect_max.as_ref().map_or(d.reconnect_max, |v| v.value);
    if max < min {
        // Point at whichever of the two the user wrote; `max` if both.
        let (span, message) = match (&reconnect_max, &reconnect_min) {
            (Some(given), _) => (
                given.span,
                format!(
                    "reconnect_max must be at least reconnect_min ({}) (got {})",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ),
            (None, Some(given)) => (
                given.span,
                format!(
                    "reconnect_min must be at most reconnect_max ({}) (got {})",
                    humantime::format_duration(max),
                    humantime::format_duration(min)
                ),
            ),
            (None, None) => (s.span, "reconnect_min must be at most reconnect_max".into()),
        };
        s.error(span, message);
    }
    let ingest_queue = s
        .int_as("ingest_queue", 1..=i64::MAX)
        .unwrap_or(d.ingest_queue);
    let publish_queue = s
        .int_as("publish_queue", 1..=i64::MAX)
        .unwrap_or(d.publish_queue);
    let tls = s.table("tls", "tls.").and_then(|mut section| {
        let tls = tls(&mut section, embedded, context);
        let span = section.span;
        section.report_into(s);
        tls.map(|tls| (tls, span))
    });
    if let Some((_, span)) = tls.as_ref().filter(|_| embedded) {
        s.error(
            *span,
            "tls cannot be used with embedded = true: the embedded broker listens without TLS \
             on 127.0.0.1 (remove [mqtt.tls] or set tls.enabled = false)"
                .into(),
        );
    }
    // rumqttc verifies the broker's certificate for the host it connects to (unless
    // tls.server_name says otherwise), and needs it as a DNS name or IP address even then.
    if let Some(host) = host
        .as_ref()
        .filter(|h| tls.is_some() && !embedded && !h.value.trim().is_empty())
        .filter(|h| ServerName::try_from(h.value.as_str()).is_err())
    {
        s.error(
            host.span,
            format!(
                "host \"{}\" cannot be used with TLS: it must be a DNS name or an IP address \
                 (the broker's certificate is checked against it)",
                host.value
            ),
        );
    }
    let default_port = if tls.is_some() && !embedded {
        DEFAULT_TLS_PORT
    } else {
        d.port
    };
    let client_id_written = client_id.is_some();
    let config = MqttConfig {
        embedded,
        host: host.map_or(d.host, |v| v.value),
        port: port.unwrap_or(default_port),
        client_id: client_id.map_or(d.client_id, |v| v.value),
        username: username.map(|v| v.value),
        password: password.map(|v| v.value),
        keep_alive: keep_alive.map_or(d.keep_alive, |v| v.value),
        max_packet_bytes,
        subscribe_qos,
        clean_session,
        reconnect_min: min,
        reconnect_max: max,
        ingest_queue,
        publish_queue,
        tls: tls.map(|(tls, _)| tls),
    };
    (config, client_id_written)
}

/// `[mqtt.tls]`: `None` when `enabled = false`. With [`Files::Check`] (and no other problem in
/// the table) the PEM files are read and the TLS client configuration is built, so that a
/// missing or malformed file is reported at its key by `edgeflow check`.
fn tls(s: &mut Section<'_>, embedded: bool, context: &Context<'_>) -> Option<TlsConfig> {
    let enabled = s.bool("enabled").unwrap_or(true);
    let path = |s: &mut Section<'_>, key: &'static str| {
        let written = s.string(key)?;
        if written.value.is_empty() {
            s.error(
                written.span,
                format!("tls.{key} must not be empty (the path of a PEM file)"),
            );
            return None;
        }
        Some(Spanned::with_span(
            context.resolve(&written.value),
            written.span,
        ))
    };
    // Written but unusable (wrong type, empty): already reported, and not to be replaced by
    // the system trust store when the files are checked.
    let ca_written = s.helper.contains("ca_file");
    let ca_file = path(s, "ca_file");
    let client_cert = path(s, "client_cert");
    let client_key = path(s, "client_key");
    let mut server_name = s.string("server_name");
    if let Some(name) = server_name.take() {
        if let Err(error) = ServerName::try_from(name.value.as_str()) {
            s.error(
                name.span,
                format!(
                    "tls.server_name must be a DNS name or an IP address (got \"{}\": {error})",
                    name.value
                ),
            );
        } else {
            server_name = Some(name);
        }
    }
    let client_auth = match (&client_cert, &client_key) {
        (Some(cert), Some(key)) => Some(ClientAuthConfig {
            cert_file: cert.value.clone(),
            key_file: key.value.clone(),
        }),
        (Some(cert), None) => {
            s.error(
                cert.span,
                "tls.client_cert is set but tls.client_key is not (a client certificate needs \
                 its private key: set both or neither)"
                    .into(),
            );
            None
        }
        (None, Some(key)) => {
            s.error(
                key.span,
                "tls.client_key is set but tls.client_cert is not (a client key needs its \
                 certificate: set both or neither)"
                    .into(),
            );
            None
        }
        (None, None) => None,
    };
    if !enabled {
        return None;
    }
    let config = TlsConfig {
        ca_file: ca_file.as_ref().map(|v| v.value.clone()),
        client_auth,
        server_name: server_name.as_ref().map(|v| v.value.clone()),
    };
    // Each file is checked unless its own key already has a problem: a user fixing the
    // config should see a bad `ca_file` and an unpaired `client_cert` in one run.
    if context.files == Files::Check && !embedded && (config.ca_file.is_some() || !ca_written) {
        match crate::tls::client_config(&config) {
            Ok(_) => {}
            Err(TlsError::Setting {
                setting,
                path,
                reason,
            }) => {
                let span = match setting {
                    TlsSetting::CaFile => ca_file.as_ref().map(|v| v.span),
                    TlsSetting::ClientCert => client_cert.as_ref().map(|v| v.span),
                    TlsSetting::ClientKey => client_key.as_ref().map(|v| v.span),
                    TlsSetting::ServerName => server_name.as_ref().map(|v| v.span),
                }
                .unwrap_or(s.span);
                let file = path
                    .map(|p| format!(" \"{}\"", p.display()))
                    .unwrap_or_default();
                s.error(span, format!("tls.{setting}{file}: {reason}"));
            }
            Err(other) => s.error(s.span, other.to_string()),
        }
    }
    Some(config)
}

/// `[store]`
fn store(s: &mut Section<'_>) -> StoreConfig {
    let d = StoreConfig::default();
    let data_dir = s.string("data_dir");
    if let Some(dir) = data_dir.as_ref().filter(|dir| dir.value.is_empty()) {
        s.error(
            dir.span,
            "data_dir must not be empty (a directory path, e.g. \"data\" or \"/var/lib/edgeflow\")"
                .into(),
        );
    }
    let checkpoint_interval = s.duration("checkpoint_interval", Duration::from_millis(10));
    let cache_bytes = s
        .int_as("cache_bytes", 65_536..=i64::MAX)
        .unwrap_or(d.cache_bytes);
    // Store time counts whole seconds.
    let state_ttl = s.duration("state_ttl", Duration::from_secs(1));
    StoreConfig {
        // Kept as written: relative paths resolve against the working directory at runtime
        // (systemd sets it to the StateDirectory).
        data_dir: data_dir.map_or(d.data_dir, |v| PathBuf::from(v.value)),
        checkpoint_interval: checkpoint_interval.map_or(d.checkpoint_interval, |v| v.value),
        cache_bytes,
        state_ttl: state_ttl.map_or(d.state_ttl, |v| Some(v.value)),
    }
}

/// `[runtime]`
fn runtime(s: &mut Section<'_>) -> RuntimeConfig {
    let d = RuntimeConfig::default();
    RuntimeConfig {
        shards: s.int_as("shards", 0..=256).unwrap_or(d.shards),
        max_resident_keys: s
            .int_as("max_resident_keys", 1..=i64::MAX)
            .unwrap_or(d.max_resident_keys),
        max_memory: s
            .byte_size("max_memory", MIN_MAX_MEMORY)
            .unwrap_or(d.max_memory),
        idle_timeout: s
            .duration("idle_timeout", POSITIVE)
            .map_or(d.idle_timeout, |v| v.value),
        mailbox_capacity: s
            .int_as("mailbox_capacity", 1..=i64::MAX)
            .unwrap_or(d.mailbox_capacity),
        stats_interval: s
            .duration("stats_interval", POSITIVE)
            .map_or(d.stats_interval, |v| v.value),
        shutdown_deadline: s
            .duration("shutdown_deadline", POSITIVE)
            .map_or(d.shutdown_deadline, |v| v.value),
    }
}

/// `[http]`
fn http(s: &mut Section<'_>) -> HttpConfig {
    let d = HttpConfig::default();
    let enabled = s.bool("enabled").unwrap_or(d.enabled);
    let listen = s.string("listen").and_then(|listen| {
        match listen.value.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                s.error(
                    listen.span,
                    format!(
                        "listen must be an IP address and port such as \"127.0.0.1:9883\" or \"[::1]:9883\" (got \"{}\")",
                        listen.value
                    ),
                );
                None
            }
        }
    });
    HttpConfig {
        enabled,
        listen: listen.unwrap_or(d.listen),
    }
}

/// `[simulate]`
fn simulate(s: &mut Section<'_>) -> SimulateConfig {
    let d = SimulateConfig::default();
    let sensors = s.int_as("sensors", 1..=1_000_000).unwrap_or(d.sensors);
    let rate = s
        .number(
            "rate",
            |r| r.is_finite() && r > 0.0,
            "a number of readings per second greater than 0",
        )
        .unwrap_or(d.rate);
    let topic = topic_template(s, "topic", "topic", &[Placeholder::Sensor]);
    if let Some(topic) = topic
        .as_ref()
        .filter(|t| !t.value.uses(Placeholder::Sensor))
    {
        let message = format!(
            "topic must contain {{sensor}}, replaced by each sensor's id (got \"{}\")",
            topic.value
        );
        s.error(topic.span, message);
    }
    let seed = s.int_as("seed", 0..=i64::MAX).unwrap_or(d.seed);
    let spike_probability = s
        .number(
            "spike_probability",
            |p| (0.0..=1.0).contains(&p),
            "between 0 and 1",
        )
        .unwrap_or(d.spike_probability);
    SimulateConfig {
        sensors,
        rate,
        topic: topic.map_or(d.topic, |v| v.value.as_str().to_owned()),
        seed,
        spike_probability,
    }
}

/// `[[pipelines]]`: at least one, names unique.
fn pipelines(top: &mut Section<'_>, problems: &mut Problems<'_>) -> Option<Vec<PipelineConfig>> {
    const NONE: &str =
        "[[pipelines]]: at least one pipeline is required (add a [[pipelines]] table)";
    let Some((_, mut value)) = top.take("pipelines") else {
        problems.at(Span::new(0, 0), NONE.into());
        return None;
    };
    let span = value.span;
    let items = match value.take() {
        ValueInner::Array(items) => items,
        ValueInner::Table(_) => {
            problems.at(
                span,
                "pipelines must be an array of tables: write [[pipelines]], not [pipelines]".into(),
            );
            return None;
        }
        other => {
            problems.at(
                span,
                format!(
                    "pipelines must be an array of tables ([[pipelines]]) (got {})",
                    a(other.type_str())
                ),
            );
            return None;
        }
    };
    if items.is_empty() {
        problems.at(span, NONE.into());
        return None;
    }
    let mut pipelines = Vec::with_capacity(items.len());
    let mut complete = true;
    let mut names: HashMap<String, Span> = HashMap::new();
    // (pipeline, its `from`), checked once every name is known.
    let mut chains: Vec<(String, Spanned<String>)> = Vec::new();
    for (index, mut item) in items.into_iter().enumerate() {
        let section = match Section::open(&mut item, "") {
            Ok(section) => section,
            Err(found) => {
                problems.at(
                    item.span,
                    format!("pipelines[{index}] must be a table (got {})", a(found)),
                );
                complete = false;
                continue;
            }
        };
        let (pipeline, name, from) = pipeline(section, index, problems);
        if let (Some(name), Some(from)) = (&name, from) {
            chains.push((name.value.clone(), from));
        }
        if let Some(name) = name {
            if let Some(first) = names.get(&name.value) {
                let (line, _) = problems.lines.locate(first.start);
                let message = format!(
                    "pipeline \"{}\": name is already used by the pipeline at line {line} (pipeline names must be unique)",
                    name.value
                );
                problems.at(name.span, message);
            } else {
                names.insert(name.value, name.span);
            }
        }
        match pipeline {
            Some(pipeline) => pipelines.push(pipeline),
            None => complete = false,
        }
    }
    if !chain_problems(&chains, &names, problems) {
        complete = false;
    }
    complete.then_some(pipelines)
}

/// Checks every `from`: it names another pipeline, and following `from` never loops (a
/// reading would circulate for ever). Returns whether all are valid.
fn chain_problems(
    chains: &[(String, Spanned<String>)],
    names: &HashMap<String, Span>,
    problems: &mut Problems<'_>,
) -> bool {
    let mut valid = true;
    let upstream = |name: &str| {
        chains
            .iter()
            .find(|(pipeline, _)| pipeline == name)
            .map(|(_, from)| from.value.as_str())
    };
    for (pipeline, from) in chains {
        let message = if !names.contains_key(&from.value) {
            let mut known: Vec<&str> = names.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!(
                "pipeline \"{pipeline}\": from = \"{}\" is not a pipeline of this file (pipelines: {})",
                from.value,
                known.join(", ")
            )
        } else if from.value == *pipeline {
            format!("pipeline \"{pipeline}\": from names the pipeline itself")
        } else {
            // Walk upstream; the chain is at most as long as the number of pipelines.
            let mut path = vec![pipeline.as_str(), from.value.as_str()];
            let mut current = from.value.as_str();
            let mut looped = false;
            while let Some(next) = upstream(current) {
                if next == pipeline {
                    path.push(next);
                    looped = true;
                    break;
                }
                if path.contains(&next) || path.len() > chains.len() + 1 {
                    break;
                }
                path.push(next);
                current = next;
            }
            if !looped {
                continue;
            }
            format!(
                "pipeline \"{pipeline}\": from makes a loop ({}): a reading would circulate for ever",
                path.join(" ← ")
            )
        };
        problems.at(from.span, message);
        valid = false;
    }
    valid
}

/// `"forecast" | "regression" | "classification" | "kmeans" | "recommend"`, for messages.
fn accepted_kinds() -> String {
    Kind::ALL
        .iter()
        .map(|kind| format!("\"{}\"", kind.name()))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The span of the value of `key` in `s`, before it is read (`None`: not written).
/// The placeholders of a pipeline's `output`.
const OUTPUT_PLACEHOLDERS: [Placeholder; 3] =
    [Placeholder::Pipeline, Placeholder::Key, Placeholder::Field];

/// The topic template of setting `key`, with placeholders from `allowed`; what is wrong with
/// it is reported at its span, naming it `label` (`None`: not written, or invalid).
fn topic_template(
    s: &mut Section<'_>,
    key: &'static str,
    label: &str,
    allowed: &[Placeholder],
) -> Option<Spanned<TopicTemplate>> {
    let text = s.string(key)?;
    match TopicTemplate::parse(&text.value, allowed) {
        Ok(template) => Some(Spanned {
            value: template,
            span: text.span,
        }),
        Err(reason) => {
            let message = format!(
                "{label} \"{}\" is not a valid topic template: {reason}",
                text.value
            );
            s.error(text.span, message);
            None
        }
    }
}

fn written_span(s: &Section<'_>, key: &str) -> Option<Span> {
    s.helper.table.get(key).map(|value| value.span)
}

/// The keys of the sub-table `key` of `s` as written, in file order, with their spans, before
/// it is read (empty when `key` is absent or not a table).
fn written_keys(s: &Section<'_>, key: &str) -> Vec<Spanned<String>> {
    let mut keys: Vec<Spanned<String>> = s
        .helper
        .table
        .get(key)
        .and_then(|value| value.as_table())
        .map(|table| {
            table
                .keys()
                .map(|name| Spanned::with_span(name.name.to_string(), name.span))
                .collect()
        })
        .unwrap_or_default();
    keys.sort_by_key(|name| name.span.start);
    keys
}

/// One `[[pipelines]]` entry. Also returns its name (when valid) for the uniqueness check and
/// its `from` for the chaining checks.
fn pipeline(
    mut s: Section<'_>,
    index: usize,
    problems: &mut Problems<'_>,
) -> (
    Option<PipelineConfig>,
    Option<Spanned<String>>,
    Option<Spanned<String>>,
) {
    let name = match s.require::<String>("name") {
        Some(name) if rules::is_valid_name(&name.value) => Some(name),
        Some(name) => {
            let message = format!(
                "name must match [A-Za-z0-9_-]+ (it is used in topics and state keys) (got \"{}\")",
                name.value
            );
            s.error(name.span, message);
            None
        }
        None => None,
    };
    // Messages name the pipeline the way the user wrote it when possible.
    let component = match &name {
        Some(name) => format!("pipeline \"{}\"", name.value),
        None => format!("pipeline #{}", index + 1),
    };

    let from = s.string("from");
    let topics = match &from {
        Some(from) => {
            if s.take("topics").is_some() {
                let message = format!(
                    "a pipeline reads either MQTT topics or another pipeline's output: remove topics, or from = \"{}\"",
                    from.value
                );
                s.error(from.span, message);
            }
            Some(Vec::new())
        }
        None => topics(&mut s),
    };
    // Read before `format` and `operators` take them: a recommend model rejects them there.
    let format_span = written_span(&s, "format");
    let format = format(&mut s);
    // A chained pipeline reads another pipeline's output messages, whose `key` and `time`
    // members are the natural defaults.
    let chained = from.is_some();
    let key = if chained && !s.helper.contains("key") {
        Some(KeySource::Pointer("/key".into()))
    } else {
        key(&mut s, topics.as_deref().unwrap_or(&[]), format.as_ref())
    };
    let time = if chained && !s.helper.contains("time") {
        Some(Some(TimeSource {
            pointer: "/time".into(),
            unit: TimeUnit::Milliseconds,
        }))
    } else {
        time(&mut s, format.as_ref())
    };
    let max_skew = max_skew(&mut s, time.as_ref(), format.as_ref());
    if let (Some(from), Some(format)) = (&from, &format) {
        if *format != PayloadFormat::Json {
            let message = format!(
                "from = \"{}\" reads JSON output messages: format must be \"json\"",
                from.value
            );
            s.error(from.span, message);
        }
    }
    let one_value = match (&format, &key) {
        (Some(PayloadFormat::Number), _) => Some(OneValue::Number),
        (Some(PayloadFormat::Senml), Some(KeySource::RecordName)) => Some(OneValue::SenmlRecord),
        _ => None,
    };
    let field_keys = written_keys(&s, "fields");
    let (fields, string_fields) = fields(&mut s, format.as_ref(), key.as_ref());
    let bounds = bounds::bounds(&mut s, fields.as_deref());
    let operators_span = written_span(&s, "operators");
    let (operators, model_fields) = operators::operators(&mut s, fields.as_deref());
    let output = topic_template(&mut s, "output", "output", &OUTPUT_PLACEHOLDERS);
    let output_qos = s.int_as("output_qos", 0..=1).unwrap_or(0);
    let max_payload_bytes = s
        .int_as("max_payload_bytes", 1..=i64::MAX)
        .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    let model_given = s.helper.contains("model");
    let (model, kind) = match s.table("model", "model.") {
        Some(section) => model(
            section,
            model_fields.as_deref(),
            one_value,
            topics.as_deref().unwrap_or(&[]),
            &component,
            problems,
        ),
        None => {
            // Present but not a table was already reported by `table`.
            if !model_given {
                let span = s.span;
                let message = format!(
                    "missing required key \"model\" (a [pipelines.model] table with kind = {})",
                    accepted_kinds()
                );
                s.error(span, message);
            }
            (None, None)
        }
    };
    if kind == Some(Kind::Recommend) {
        let recommend = match &model {
            Some(ModelConfig::Recommend(r)) => Some(r),
            _ => None,
        };
        let written = recommend::Written {
            format: format.as_ref().zip(format_span),
            operators: operators_span,
            field_keys: &field_keys,
        };
        recommend::pipeline_rules(&mut s, &written, recommend);
    }
    // With a season of n readings the detector learns two seasons before it flags: what is
    // normal for each phase is not known before.
    let longest_season = match &model {
        Some(ModelConfig::Forecast(f)) => f
            .params
            .seasons
            .as_slice()
            .iter()
            .filter_map(|spec| match spec {
                SeasonSpec::Steps(m) => Some(*m as u64),
                SeasonSpec::Duration { .. } => None,
            })
            .max(),
        _ => None,
    };
    let anomaly = s.table("anomaly", "anomaly.").map(|mut section| {
        let params = anomaly(&mut section, kind, longest_season);
        section.finish(&component, problems);
        params
    });
    // A SenML string value (`vs`) can only be a classification label.
    let label = match &model {
        Some(ModelConfig::Classification(c)) => Some(c.target.as_str()),
        _ => None,
    };
    // A label or a recommend item is not a measured number: bounds cannot say what is
    // plausible for it.
    let not_numeric = match &model {
        Some(ModelConfig::Classification(c)) => Some(("a classification label", c.target.as_str())),
        Some(ModelConfig::Recommend(r)) => Some(("a recommend event's item", r.item.as_str())),
        _ => None,
    };
    if let (Some((what, name)), Some(bounds)) = (not_numeric, &bounds) {
        for entry in bounds.iter().filter(|b| b.value.field == name) {
            let message =
                format!("bounds.{name}: \"{name}\" is {what}, not a number a range applies to");
            s.error(entry.span, message);
        }
    }
    for field in string_fields {
        if label != Some(field.value.as_str()) {
            let message = format!(
                "fields.{} = \"vs\" reads a SenML string value, which only the target of kind = \"classification\" (a label) can use (use \"v\", \"vb\" or \"s\")",
                field.value
            );
            s.error(field.span, message);
        }
    }
    s.finish(&component, problems);

    let (
        Some(name_value),
        Some(topics),
        Some(format),
        Some(key),
        Some(time),
        Some(fields),
        Some(bounds),
        Some(operators),
        Some(model),
    ) = (
        &name, topics, format, key, time, fields, bounds, operators, model,
    )
    else {
        return (None, name, from);
    };
    let pipeline = PipelineConfig {
        name: name_value.value.clone(),
        topics: topics.into_iter().map(|topic| topic.value).collect(),
        format,
        key,
        time,
        max_skew,
        fields,
        bounds: bounds.into_iter().map(|b| b.value).collect(),
        from: from.as_ref().map(|from| from.value.clone()),
        operators,
        anomaly,
        output: output.map_or_else(
            || TopicTemplate::builtin(default_output(&model)),
            |v| v.value,
        ),
        model,
        output_qos,
        max_payload_bytes,
    };
    (Some(pipeline), name, from)
}

/// `topics`: required, non-empty, every entry a valid MQTT filter.
fn topics(s: &mut Section<'_>) -> Option<Vec<Spanned<TopicFilter>>> {
    let list = s.require::<StringList>("topics")?;
    let topics = list.value.0;
    if topics.is_empty() {
        let message =
            "topics must list at least one MQTT topic filter, e.g. [\"sensors/+/temperature\"]";
        s.error(list.span, message.into());
        return None;
    }
    let mut filters = Vec::with_capacity(topics.len());
    let mut valid = true;
    for (index, topic) in topics.into_iter().enumerate() {
        match TopicFilter::parse(&topic.value) {
            Ok(filter) => filters.push(Spanned {
                value: filter,
                span: topic.span,
            }),
            Err(reason) => {
                let message = format!(
                    "topics[{index}] \"{}\" is not a valid MQTT topic filter: {reason}",
                    topic.value
                );
                s.error(topic.span, message);
                valid = false;
            }
        }
    }
    valid.then_some(filters)
}

/// `format`, and `columns`, `delimiter` and `header` for `format = "csv"` (reported for any
/// other format). `None` when something is wrong.
fn format(s: &mut Section<'_>) -> Option<PayloadFormat> {
    let given = s.helper.contains("format");
    let columns_given = s.helper.contains("columns");
    let format = s.string("format");
    let columns = s.get::<StringList>("columns");
    let delimiter = s.string("delimiter");
    let header = s.get::<bool>("header");
    let name = match &format {
        Some(format) => format.value.as_str(),
        // A mistyped `format` was reported; the CSV keys cannot be judged.
        None if given => return None,
        None => "json",
    };
    let simple = match name {
        "json" => PayloadFormat::Json,
        "number" => PayloadFormat::Number,
        "senml" => PayloadFormat::Senml,
        "csv" => return csv_format(s, columns, columns_given, delimiter, header),
        other => {
            let message = format!(
                "format must be \"json\", \"number\", \"csv\" or \"senml\" (got \"{other}\")"
            );
            if let Some(format) = &format {
                s.error(format.span, message);
            }
            return None;
        }
    };
    let spans = [
        ("columns", columns.map(|v| v.span)),
        ("delimiter", delimiter.map(|v| v.span)),
        ("header", header.map(|v| v.span)),
    ];
    let mut valid = true;
    for (key, span) in spans {
        if let Some(span) = span {
            let message = format!(
                "{key} only applies to format = \"csv\" (this pipeline has format = \"{name}\")"
            );
            s.error(span, message);
            valid = false;
        }
    }
    valid.then_some(simple)
}

/// `format = "csv"`: `columns` required, non-empty, distinct; `delimiter` one ASCII character.
fn csv_format(
    s: &mut Section<'_>,
    columns: Option<Spanned<StringList>>,
    columns_given: bool,
    delimiter: Option<Spanned<String>>,
    header: Option<Spanned<bool>>,
) -> Option<PayloadFormat> {
    let mut valid = true;
    let delimiter = match delimiter {
        None => DEFAULT_CSV_DELIMITER,
        Some(text) => match text.value.as_bytes() {
            [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\r' | b'\n') => *byte,
            _ => {
                let message = format!(
                    "delimiter must be one ASCII character other than '\"' and line breaks, e.g. \";\" or \"\\t\" (got {:?})",
                    text.value
                );
                s.error(text.span, message);
                valid = false;
                DEFAULT_CSV_DELIMITER
            }
        },
    };
    let Some(list) = columns else {
        // A mistyped `columns` was reported by `get`.
        if !columns_given {
            let span = s.span;
            let message = "missing required key \"columns\" (format = \"csv\" names the cells of a line, e.g. columns = [\"ts\", \"sensor\", \"temp\"])";
            s.error(span, message.into());
        }
        return None;
    };
    let entries = list.value.0;
    if entries.is_empty() {
        let message =
            "columns must name at least one column, e.g. columns = [\"ts\", \"sensor\", \"temp\"]";
        s.error(list.span, message.into());
        return None;
    }
    for (index, column) in entries.iter().enumerate() {
        if column.value.is_empty() {
            s.error(column.span, format!("columns[{index}] must not be empty"));
            valid = false;
        } else if let Some(first) = entries[..index]
            .iter()
            .position(|other| other.value == column.value)
        {
            let message = format!(
                "columns[{index}] \"{}\" is already columns[{first}] (column names must be distinct)",
                column.value
            );
            s.error(column.span, message);
            valid = false;
        }
    }
    valid.then(|| {
        PayloadFormat::Csv(CsvConfig {
            columns: entries.into_iter().map(|column| column.value).collect(),
            delimiter,
            header: header.is_some_and(|h| h.value),
        })
    })
}

/// `key`: where the per-key actor's key comes from; `topic[N]` must exist in every topic, a
/// pointer must fit the format, `name` and `basename` are SenML's. SenML's default is `name`.
fn key(
    s: &mut Section<'_>,
    topics: &[Spanned<TopicFilter>],
    format: Option<&PayloadFormat>,
) -> Option<KeySource> {
    let Some(text) = s.string("key") else {
        return Some(match format {
            Some(PayloadFormat::Senml) => KeySource::RecordName,
            _ => KeySource::Topic,
        });
    };
    let source = match rules::parse_key_source(&text.value) {
        Ok(source) => source,
        Err(reason) => {
            let message = format!("key \"{}\" is not a valid key source: {reason}", text.value);
            s.error(text.span, message);
            return None;
        }
    };
    let mut valid = true;
    let mut error = |s: &mut Section<'_>, message: String| {
        s.error(text.span, message);
        valid = false;
    };
    match (&source, format) {
        (KeySource::TopicLevel(level), _) => {
            for topic in topics {
                if !topic.value.has_level(*level) {
                    let count = topic.value.level_count();
                    let message = format!(
                        "key \"{}\" reads topic level {level} (0-based), but topic filter \"{}\" only matches topics with {count} level(s)",
                        text.value, topic.value
                    );
                    error(s, message);
                }
            }
        }
        (KeySource::Pointer(_), Some(PayloadFormat::Number)) => {
            let message = format!(
                "key \"{}\" is a JSON pointer, but format = \"number\" payloads are bare numbers (use \"topic\" or \"topic[N]\")",
                text.value
            );
            error(s, message);
        }
        (KeySource::Pointer(_), Some(PayloadFormat::Senml)) => {
            let message = format!(
                "key \"{}\" is a JSON pointer, but a SenML pack is read record by record (use \"name\", \"basename\", \"topic\" or \"topic[N]\")",
                text.value
            );
            error(s, message);
        }
        (KeySource::Pointer(pointer), Some(PayloadFormat::Csv(csv))) => {
            if let Some(reason) = rules::csv_column_problem(pointer, &csv.columns) {
                error(s, format!("key \"{pointer}\" {reason}"));
            }
        }
        (KeySource::RecordName | KeySource::BaseName, Some(other))
            if *other != PayloadFormat::Senml =>
        {
            let message = format!(
                "key \"{}\" names a SenML record, so it needs format = \"senml\" (this pipeline has format = \"{}\")",
                text.value,
                other.name()
            );
            error(s, message);
        }
        _ => {}
    }
    valid.then_some(source)
}

/// `time` and `time_unit`. `Some(None)` means "no event time": use arrival time.
fn time(s: &mut Section<'_>, format: Option<&PayloadFormat>) -> Option<Option<TimeSource>> {
    // Whether `time` was written at all, even with a wrong type: a mistyped `time` must
    // not also cause "time_unit without time".
    let time_given = s.helper.contains("time");
    let pointer = s.string("time");
    let unit = s.string("time_unit");
    let mut valid = !time_given || pointer.is_some();
    if let Some(pointer) = &pointer {
        if let Some(reason) = parse_pointer(&pointer.value).err() {
            let message = format!("time \"{}\" is not a JSON pointer: {reason}", pointer.value);
            s.error(pointer.span, message);
            valid = false;
        } else if let Some(message) = match format {
            Some(PayloadFormat::Number) => Some("time cannot be read when format = \"number\": the payload is a bare number (remove time to use the arrival time)".to_owned()),
            Some(PayloadFormat::Senml) => Some("time cannot be set when format = \"senml\": each SenML record carries its own time (bt + t, RFC 8428; remove time)".to_owned()),
            Some(PayloadFormat::Csv(csv)) => rules::csv_column_problem(&pointer.value, &csv.columns)
                .map(|reason| format!("time \"{}\" {reason}", pointer.value)),
            _ => None,
        } {
            s.error(pointer.span, message);
            valid = false;
        }
    }
    let time_unit = match &unit {
        None => TimeUnit::Auto,
        Some(unit) => match unit.value.as_str() {
            "auto" => TimeUnit::Auto,
            "s" => TimeUnit::Seconds,
            "ms" => TimeUnit::Milliseconds,
            "rfc3339" => TimeUnit::Rfc3339,
            other => {
                let message = format!(
                    "time_unit must be \"auto\", \"s\", \"ms\" or \"rfc3339\" (got \"{other}\")"
                );
                s.error(unit.span, message);
                valid = false;
                TimeUnit::Auto
            }
        },
    };
    if let (Some(unit), false) = (&unit, time_given) {
        let message = if format == Some(&PayloadFormat::Senml) {
            "time_unit does not apply to format = \"senml\" (SenML times are seconds, RFC 8428)"
        } else {
            "time_unit is set but time is not (set time to the JSON pointer of the event time, e.g. time = \"/ts\")"
        };
        s.error(unit.span, message.into());
        valid = false;
    }
    let source = pointer.map(|pointer| TimeSource {
        pointer: pointer.value,
        unit: time_unit,
    });
    valid.then_some(source)
}

/// `max_skew`: how far an event time may be ahead of the daemon's clock (default
/// [`DEFAULT_MAX_SKEW`]). Only for a pipeline with event times: one with `time`, a chained
/// one (`/time` by default) or SenML.
fn max_skew(
    s: &mut Section<'_>,
    time: Option<&Option<TimeSource>>,
    format: Option<&PayloadFormat>,
) -> Duration {
    let Some(max_skew) = s.duration("max_skew", Duration::from_secs(1)) else {
        return DEFAULT_MAX_SKEW;
    };
    // A mistyped `time` or `format` was reported already: no second error about it here.
    let no_event_time =
        matches!(time, Some(None)) && format.is_some_and(|f| *f != PayloadFormat::Senml);
    if no_event_time {
        s.error(
            max_skew.span,
            "max_skew is set but the pipeline has no event time: readings take their arrival time, which is never skewed (set time to the JSON pointer of the event time, or remove max_skew)".into(),
        );
    }
    max_skew.value
}

/// How a format reads field pointers, for [`fields`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldSyntax<'a> {
    /// JSON pointers.
    Json,
    /// One field with pointer `""`.
    Number,
    /// `"/column"`.
    Csv(&'a [String]),
    /// `key = "name"`: one field, the value each record gives (`"v"`, `"vb"`, `"s"`, `"vs"`).
    SenmlValue,
    /// Grouped records: `"/name"`, one record name relative to the base name.
    SenmlRecord,
    /// Unknown (the format or the SenML key is wrong): only JSON pointer syntax is checked.
    Unknown,
}

/// `fields = { name = "/pointer" }`, in file order, checked as the format reads them. Also
/// returns the fields that read a SenML string value (`"vs"`), with the pointer's span, to be
/// checked against the model.
fn fields(
    s: &mut Section<'_>,
    format: Option<&PayloadFormat>,
    key: Option<&KeySource>,
) -> (Option<Vec<FieldConfig>>, Vec<Spanned<String>>) {
    let syntax = match (format, key) {
        (Some(PayloadFormat::Json), _) => FieldSyntax::Json,
        (Some(PayloadFormat::Number), _) => FieldSyntax::Number,
        (Some(PayloadFormat::Csv(csv)), _) => FieldSyntax::Csv(&csv.columns),
        (Some(PayloadFormat::Senml), Some(KeySource::RecordName)) => FieldSyntax::SenmlValue,
        (Some(PayloadFormat::Senml), Some(_)) => FieldSyntax::SenmlRecord,
        (Some(PayloadFormat::Senml), None) | (None, _) => FieldSyntax::Unknown,
    };
    let mut string_fields = Vec::new();
    let Some((_, value)) = s.take("fields") else {
        let example = match syntax {
            // A bare number is one field; `value` is its conventional name.
            FieldSyntax::Number => {
                let field = FieldConfig {
                    name: "value".into(),
                    pointer: String::new(),
                };
                return (Some(vec![field]), string_fields);
            }
            FieldSyntax::SenmlValue => {
                let field = FieldConfig {
                    name: "value".into(),
                    pointer: DEFAULT_SENML_VALUE.into(),
                };
                return (Some(vec![field]), string_fields);
            }
            FieldSyntax::Unknown => return (None, string_fields),
            FieldSyntax::Json => "format = \"json\" reads each field by JSON pointer, e.g. fields = { temp = \"/value\" }",
            FieldSyntax::Csv(_) => "format = \"csv\" reads each field from a column, e.g. fields = { temp = \"/temp\" }",
            FieldSyntax::SenmlRecord => "with key = \"basename\" or a topic key, each field names a SenML record relative to the base name, e.g. fields = { voltage = \"/voltage\" }",
        };
        let span = s.span;
        s.error(span, format!("missing required key \"fields\" ({example})"));
        return (None, string_fields);
    };
    let Some(table) = value.as_table() else {
        let message = format!(
            "fields must be a table of name = \"/json/pointer\" entries (got {})",
            a(value.as_ref().type_str())
        );
        s.error(value.span, message);
        return (None, string_fields);
    };
    // toml-span tables are sorted by name; the key spans give back the order as written,
    // which is the order models and outputs see the fields in.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span.start);
    if entries.is_empty() {
        let message = "fields must have at least one entry, e.g. fields = { temp = \"/value\" }";
        s.error(value.span, message.into());
        return (None, string_fields);
    }
    let mut valid = true;
    let mut fields = Vec::with_capacity(entries.len());
    for (key, pointer) in &entries {
        if !rules::is_valid_field_name(&key.name) {
            let message = format!(
                "field name \"{}\" is not usable: it becomes a level of output topics, so it must be non-empty and without '/', '+', '#', '{{' or '}}'",
                key.name
            );
            s.error(key.span, message);
            valid = false;
        }
        let Some(text) = pointer.as_str() else {
            let message = format!(
                "fields.{} must be a JSON pointer string such as \"/value\" (got {})",
                key.name,
                a(pointer.as_ref().type_str())
            );
            s.error(pointer.span, message);
            valid = false;
            continue;
        };
        let problem = match syntax {
            FieldSyntax::SenmlValue if !SENML_VALUES.contains(&text) => Some(format!(
                "fields.{} \"{text}\" must be \"v\", \"vb\", \"s\" or \"vs\": with key = \"name\" each SenML record is a reading and its field reads one of these values (to read records by name, \"/voltage\", use key = \"basename\" or a topic key)",
                key.name
            )),
            FieldSyntax::SenmlValue => {
                if text == "vs" {
                    string_fields.push(Spanned::with_span(key.name.to_string(), pointer.span));
                }
                None
            }
            FieldSyntax::SenmlRecord if SENML_VALUES.contains(&text) => Some(format!(
                "fields.{} \"{text}\" selects a record's value, which only key = \"name\" does; with key = \"basename\" or a topic key each field names a SenML record relative to the base name, e.g. \"/temperature\"",
                key.name
            )),
            _ => match parse_pointer(text).err() {
                Some(reason) => Some(format!(
                    "fields.{} \"{text}\" is not a JSON pointer: {reason}",
                    key.name
                )),
                None => match syntax {
                    FieldSyntax::Csv(columns) => rules::csv_column_problem(text, columns)
                        .map(|reason| format!("fields.{} \"{text}\" {reason}", key.name)),
                    FieldSyntax::SenmlRecord => rules::senml_record_problem(text)
                        .map(|reason| format!("fields.{} \"{text}\" {reason}", key.name)),
                    _ => None,
                },
            },
        };
        match problem {
            Some(message) => {
                s.error(pointer.span, message);
                valid = false;
            }
            None => fields.push(FieldConfig {
                name: key.name.to_string(),
                pointer: text.to_owned(),
            }),
        }
    }
    let single = match syntax {
        FieldSyntax::Number => Some("with pointer \"\" when format = \"number\""),
        FieldSyntax::SenmlValue => Some(
            "when format = \"senml\" and key = \"name\" (each record is a reading with one value)",
        ),
        _ => None,
    };
    if let Some(rule) = single {
        if let [(key, pointer)] = entries.as_slice() {
            if syntax == FieldSyntax::Number
                && pointer.as_str().is_some_and(|text| !text.is_empty())
            {
                let message = format!(
                    "fields.{} must be \"\" when format = \"number\" (the payload is one bare number)",
                    key.name
                );
                s.error(pointer.span, message);
                valid = false;
            }
        } else {
            let message = format!(
                "fields must have exactly one entry {rule} (got {} entries)",
                entries.len()
            );
            s.error(value.span, message);
            valid = false;
        }
    }
    (valid.then_some(fields), string_fields)
}

/// A payload format whose readings have exactly one value, so only forecasts (and a
/// clustering of that one value) fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OneValue {
    /// `format = "number"`.
    Number,
    /// `format = "senml"` with `key = "name"`.
    SenmlRecord,
}

/// The model kinds `[pipelines.model] kind` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Forecast,
    Regression,
    Classification,
    KMeans,
    Recommend,
    Anomaly,
}

impl Kind {
    /// Every kind, in the order messages list them.
    const ALL: [Kind; 6] = [
        Kind::Forecast,
        Kind::Regression,
        Kind::Classification,
        Kind::KMeans,
        Kind::Recommend,
        Kind::Anomaly,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Forecast => "forecast",
            Kind::Regression => "regression",
            Kind::Classification => "classification",
            Kind::KMeans => "kmeans",
            Kind::Recommend => "recommend",
            Kind::Anomaly => "anomaly",
        }
    }

    /// The keys of `[pipelines.model]` besides `kind` and `target` this kind reads (every kind
    /// but `kmeans` and `recommend` reads `target`; those two reject it with a message of
    /// their own).
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Kind::Forecast => &[
                "lags",
                "forgetting",
                "interval_z",
                "horizon",
                "damping",
                "season",
                "season_bins",
                "min",
                "max",
                "horizon_every",
            ],
            Kind::Regression => &[
                "features",
                "algorithm",
                "learning_rate",
                "power_t",
                "l2",
                "forgetting",
                "scale",
                "interval_z",
                "explain",
            ],
            Kind::Classification => &[
                "features",
                "algorithm",
                "alpha",
                "beta",
                "l1",
                "l2",
                "learning_rate",
                "scale",
                "threshold",
                "positive",
                "negative",
                "explain",
            ],
            Kind::KMeans => &[
                "features",
                "k",
                "half_life",
                "seed",
                "scale",
                "lloyd_iterations",
                "dying_fraction",
            ],
            Kind::Recommend => recommend::PARAMETERS,
            Kind::Anomaly => &["features", "threshold", "warmup", "smoothing"],
        }
    }
}

/// `[pipelines.model]`: dispatches on `kind`, then reports keys of other kinds and unknown
/// keys. Also returns the kind when it is a known one, even if a parameter is wrong (the
/// `[pipelines.anomaly]` check depends on it).
fn model(
    mut m: Section<'_>,
    fields: Option<&[FieldConfig]>,
    one_value: Option<OneValue>,
    topics: &[Spanned<TopicFilter>],
    component: &str,
    problems: &mut Problems<'_>,
) -> (Option<ModelConfig>, Option<Kind>) {
    let Some(kind_text) = m.require::<String>("kind") else {
        m.abandon(component, problems);
        return (None, None);
    };
    let Some(kind) = Kind::ALL
        .into_iter()
        .find(|kind| kind.name() == kind_text.value)
    else {
        let message = format!(
            "model.kind \"{}\" is not supported (accepted: {})",
            kind_text.value,
            accepted_kinds()
        );
        m.error(kind_text.span, message);
        m.abandon(component, problems);
        return (None, None);
    };
    // A bare number (or a SenML record read by name) is one field, the target: a regression or
    // classification would have no features. Reported once, at `kind`; the feature checks that
    // would only repeat it in other words are skipped. A clustering has no target, so its one
    // feature can be that field (the levels of one meter's power, say).
    let number_payload = one_value.is_some();
    let needs_features = matches!(kind, Kind::Regression | Kind::Classification);
    if let (Some(one_value), true) = (one_value, needs_features) {
        let message = match one_value {
            OneValue::Number => format!(
                "model.kind \"{}\" needs format = \"json\": a format = \"number\" payload is one bare number, so there are no features to predict it from (use kind = \"forecast\", or send JSON)",
                kind.name()
            ),
            OneValue::SenmlRecord => format!(
                "model.kind \"{}\" needs several fields: with format = \"senml\" and key = \"name\" each record is a reading with one value, so there are no features to predict it from (use key = \"basename\" to make one reading of the records of one base name and time, or kind = \"forecast\")",
                kind.name()
            ),
        };
        m.error(kind_text.span, message);
    }
    let feature_fields = if number_payload { None } else { fields };
    let model = match kind {
        Kind::Forecast => forecast(&mut m, fields).map(ModelConfig::Forecast),
        Kind::Regression => {
            regression(&mut m, fields, feature_fields, number_payload).map(ModelConfig::Regression)
        }
        Kind::Classification => classification(&mut m, fields, feature_fields, number_payload)
            .map(ModelConfig::Classification),
        Kind::KMeans => kmeans(&mut m, fields).map(ModelConfig::KMeans),
        Kind::Recommend => recommend::recommend(&mut m, fields, topics).map(ModelConfig::Recommend),
        Kind::Anomaly => anomaly_model(&mut m, fields).map(ModelConfig::Anomaly),
    };
    reject_other_kinds(&mut m, kind);
    m.finish(component, problems);
    (model, Some(kind))
}

/// Keys that are parameters of another kind get a message saying so (instead of "unknown
/// key"): switching `kind` and forgetting a parameter is the likely mistake.
fn reject_other_kinds(m: &mut Section<'_>, kind: Kind) {
    let mut seen: Vec<&str> = Vec::new();
    for other in Kind::ALL.into_iter().filter(|&other| other != kind) {
        for &key in other.parameters() {
            if kind.parameters().contains(&key) || seen.contains(&key) {
                continue;
            }
            seen.push(key);
            // Taken from the table directly: `TableHelper::take` would add the key to the
            // accepted keys listed for unknown ones.
            let Some((written, _)) = m.helper.table.remove_entry(key) else {
                continue;
            };
            let owners: Vec<String> = Kind::ALL
                .into_iter()
                .filter(|owner| owner.parameters().contains(&key))
                .map(|owner| format!("\"{}\"", owner.name()))
                .collect();
            let owners = match owners.as_slice() {
                [one] => format!("kind {one}"),
                [first @ .., last] => format!("kinds {} and {last}", first.join(", ")),
                [] => "another kind".to_owned(),
            };
            let message = format!(
                "model.{key} is not a parameter of kind \"{}\" (it belongs to {owners})",
                kind.name()
            );
            m.error(written.span, message);
        }
    }
}

/// `target`: required, one of the pipeline's fields (checked when the fields are valid).
fn target(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<Spanned<String>> {
    let target = m.require::<String>("target")?;
    if let Some(fields) = fields {
        if !fields.iter().any(|field| field.name == target.value) {
            let message = format!(
                "model.target \"{}\" is not one of the pipeline's fields (fields: {})",
                target.value,
                field_names(fields)
            );
            m.error(target.span, message);
        }
    }
    Some(target)
}

/// The pipeline's field names as a list for messages: `temp, humidity`.
fn field_names(fields: &[FieldConfig]) -> String {
    fields
        .iter()
        .map(|field| field.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `features`: required, 1..=64 distinct fields of the pipeline, none the target. `fields`
/// and `target` are `None` when they are invalid or the checks do not apply; `purpose` says
/// what the features are for in messages ("to predict from", "to cluster").
fn features(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
    target: Option<&str>,
    purpose: &str,
) -> Option<Vec<String>> {
    let list = m.require::<StringList>("features")?;
    let entries = list.value.0;
    if entries.is_empty() {
        let message = format!(
            "model.features must list at least one of the pipeline's fields {purpose}, e.g. features = [\"humidity\"]"
        );
        m.error(list.span, message);
        return None;
    }
    if entries.len() > MAX_FEATURES {
        let message = format!(
            "model.features must list at most {MAX_FEATURES} fields (got {})",
            entries.len()
        );
        m.error(list.span, message);
        return None;
    }
    let mut valid = true;
    for (index, entry) in entries.iter().enumerate() {
        let name = &entry.value;
        let message = if let Some(first) = entries[..index].iter().position(|e| e.value == *name) {
            format!(
                "model.features[{index}] \"{name}\" is already listed as model.features[{first}] (list each feature once)"
            )
        } else if target == Some(name.as_str()) {
            format!(
                "model.features[{index}] \"{name}\" is the model's target (a model cannot predict a field from itself)"
            )
        } else if let Some(fields) = fields.filter(|f| !f.iter().any(|field| field.name == *name)) {
            format!(
                "model.features[{index}] \"{name}\" is not one of the pipeline's fields (fields: {})",
                field_names(fields)
            )
        } else {
            continue;
        };
        m.error(entry.span, message);
        valid = false;
    }
    valid.then(|| entries.into_iter().map(|entry| entry.value).collect())
}

/// `explain = true | false | k`: `true` is the top [`DEFAULT_EXPLAIN_TOP`].
fn explain(m: &mut Section<'_>) -> Option<usize> {
    let value = m.get::<ExplainValue>("explain")?;
    match value.value {
        ExplainValue::Flag(false) => None,
        ExplainValue::Flag(true) => Some(DEFAULT_EXPLAIN_TOP),
        ExplainValue::Top(k) => match usize::try_from(k) {
            Ok(k) if (1..=MAX_FEATURES).contains(&k) => Some(k),
            _ => {
                let message = format!(
                    "model.explain must be true (top {DEFAULT_EXPLAIN_TOP}), false (off) or a number of features between 1 and {MAX_FEATURES} (got {k})"
                );
                m.error(value.span, message);
                None
            }
        },
    }
}

/// Reports parameters the model itself still rejects. The loader checks every key with its
/// location first, so this only fires if the two disagree (a bug): it keeps a config that
/// passed `edgeflow check` from failing when the pipeline is built.
fn model_validation(m: &mut Section<'_>, result: Result<(), ModelError>) {
    if let Err(error) = result {
        let span = m.span;
        m.error(span, format!("model parameters are rejected: {error}"));
    }
}

/// `kind = "forecast"`
fn forecast(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<ForecastConfig> {
    let d = ForecastParams::default();
    let target = target(m, fields);
    let lags = m.int_as("lags", 1..=MAX_LAGS as i64).unwrap_or(d.lags);
    let forgetting = m
        .number(
            "forgetting",
            |f| (0.9..=1.0).contains(&f),
            "between 0.9 and 1.0",
        )
        .unwrap_or(d.forgetting);
    let interval_z = m
        .number(
            "interval_z",
            |z| z > 0.0 && z <= 10.0,
            "greater than 0 and at most 10",
        )
        .unwrap_or(d.interval_z);
    let horizon = m
        .int_as("horizon", 1..=MAX_HORIZON as i64)
        .unwrap_or(d.horizon);
    let damping = m
        .number(
            "damping",
            |phi| phi > 0.0 && phi <= 1.0,
            "greater than 0 and at most 1",
        )
        .unwrap_or(d.damping);
    let seasons = season(m);
    let min = m.number_s("min", f64::is_finite, "a finite number");
    let max = m.number_s("max", f64::is_finite, "a finite number");
    if let (Some(low), Some(high)) = (&min, &max) {
        if low.value >= high.value {
            let message = format!(
                "model.max must be above model.min (got min = {} and max = {})",
                low.value, high.value
            );
            m.error(high.span, message);
        }
    }
    let (min, max) = (min.map(|v| v.value), max.map(|v| v.value));
    let horizon_every = horizon_every(m, horizon);
    let params = ForecastParams {
        lags,
        forgetting,
        interval_z,
        seasons,
        horizon,
        damping,
        min,
        max,
    };
    model_validation(m, params.validate());
    Some(ForecastConfig {
        target: target?.value,
        params,
        horizon_every,
    })
}

/// `horizon_every`: a number of readings or a duration of event time between the messages
/// that carry the whole horizon (forecasts with `horizon > 1` only).
fn horizon_every(m: &mut Section<'_>, horizon: usize) -> Option<HorizonEvery> {
    let given = m.take("horizon_every")?;
    let (_, mut value) = given;
    let span = value.span;
    let every = match value.take() {
        ValueInner::Integer(readings) if readings >= 1 => {
            Some(HorizonEvery::Readings(readings.unsigned_abs()))
        }
        ValueInner::String(text) => match humantime::parse_duration(&text) {
            Ok(interval) if interval >= Duration::from_millis(1) && interval <= MAX_DURATION => {
                Some(HorizonEvery::Interval(interval))
            }
            _ => None,
        },
        _ => None,
    };
    if every.is_none() {
        let message = "model.horizon_every must be a number of readings (≥ 1) such as 10 or a duration of event time such as \"15m\" (at least 1ms, at most a year)".to_owned();
        m.error(span, message);
    } else if horizon == 1 {
        let message = "model.horizon_every only applies with horizon > 1 (the one-step forecast is in every message)".to_owned();
        m.error(span, message);
        return None;
    }
    every
}

/// `season` (a number of readings, a duration, or a list of up to three of one kind) and
/// `season_bins` (duration seasons only).
fn season(m: &mut Section<'_>) -> Seasons {
    // A mistyped `season` must not also cause "season_bins without season".
    let season_given = m.helper.contains("season");
    let season = m.get::<SeasonValues>("season");
    let bins = m.int("season_bins", 2..=MAX_SEASON_BINS as i64);
    let Some(season) = season else {
        if let (Some(bins), false) = (&bins, season_given) {
            let message = "model.season_bins is set but season is not (season_bins divides a duration season such as season = \"1d\" into phase bins)";
            m.error(bins.span, message.into());
        }
        return Seasons::NONE;
    };
    let values = &season.value.0;
    if values.len() > MAX_SEASONS || values.is_empty() {
        let message = format!(
            "model.season takes 1 to {MAX_SEASONS} seasons, such as 24, \"1d\" or [24, 168] (got {})",
            values.len()
        );
        m.error(season.span, message);
        return Seasons::NONE;
    }
    let steps = values
        .iter()
        .filter(|v| matches!(v.value, SeasonValue::Steps(_)))
        .count();
    if steps != 0 && steps != values.len() {
        let message = "model.season must list numbers of readings ([24, 168]) or durations ([\"1d\", \"7d\"]), not a mix".to_owned();
        m.error(season.span, message);
        return Seasons::NONE;
    }
    if let (Some(bins), true) = (&bins, steps > 0) {
        let message = format!(
            "model.season_bins only applies to a duration season such as season = \"1d\" (season = {} counts readings and has no bins)",
            season_text(values)
        );
        m.error(bins.span, message);
    }
    let bins = bins
        .and_then(|bins| usize::try_from(bins.value).ok())
        .unwrap_or(DEFAULT_SEASON_BINS);
    let mut specs = Vec::with_capacity(values.len());
    for value in values {
        if let Some(spec) = season_spec(m, value, bins) {
            specs.push(spec);
        }
    }
    if specs.len() != values.len() {
        return Seasons::NONE;
    }
    match Seasons::new(&specs) {
        Ok(seasons) => seasons,
        Err(problem) => {
            m.error(season.span, format!("model.season: {problem}"));
            Seasons::NONE
        }
    }
}

/// One season of the `season` key, range-checked.
fn season_spec(
    m: &mut Section<'_>,
    value: &Spanned<SeasonValue>,
    bins: usize,
) -> Option<SeasonSpec> {
    match value.value {
        SeasonValue::Steps(steps) => match usize::try_from(steps) {
            Ok(steps) if (2..=MAX_SEASON_STEPS).contains(&steps) => Some(SeasonSpec::Steps(steps)),
            _ => {
                let message = format!(
                    "model.season must be between 2 and {MAX_SEASON_STEPS} readings, or a duration such as \"1d\" (got {steps})"
                );
                m.error(value.span, message);
                None
            }
        },
        SeasonValue::Period(period) => {
            let shown = humantime::format_duration(period);
            let problem = if period < Duration::from_millis(1) {
                Some(format!("at least 1ms (got {shown})"))
            } else if period > MAX_DURATION {
                Some(format!("at most a year (got {shown})"))
            } else if period.subsec_nanos() % 1_000_000 != 0 {
                Some(format!("a whole number of milliseconds (got {shown})"))
            } else {
                None
            };
            if let Some(problem) = problem {
                m.error(value.span, format!("model.season must be {problem}"));
                return None;
            }
            // At most a year of milliseconds (checked above): far inside u64.
            let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
            Some(SeasonSpec::Duration { period_ms, bins })
        }
    }
}

/// The seasons as written, for messages: `24` or `[24, 168]`.
fn season_text(values: &[Spanned<SeasonValue>]) -> String {
    let one = |value: &SeasonValue| match value {
        SeasonValue::Steps(steps) => steps.to_string(),
        SeasonValue::Period(period) => format!("\"{}\"", humantime::format_duration(*period)),
    };
    match values {
        [single] => one(&single.value),
        _ => format!(
            "[{}]",
            values
                .iter()
                .map(|v| one(&v.value))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `kind = "anomaly"`
fn anomaly_model(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
) -> Option<AnomalyModelConfig> {
    // Taken from the table directly, so that it is not listed among the accepted keys.
    if let Some((written, _)) = m.helper.table.remove_entry("target") {
        let message = "model.target does not apply to kind \"anomaly\": it watches the state of several fields, listed in features (remove target; for the anomalies of one forecast field use kind = \"forecast\" with [pipelines.anomaly])";
        m.error(written.span, message.into());
    }
    let features = features(m, fields, None, "to watch");
    if let Some(list) = &features {
        if list.len() > MAX_STATE_FIELDS {
            let span = m.span;
            m.error(
                span,
                format!("model.features must list at most {MAX_STATE_FIELDS} fields"),
            );
        }
    }
    let d = StateParams::default();
    let threshold = m
        .number(
            "threshold",
            |t| t > 0.0 && t < 1.0,
            "between 0 and 1, exclusive: a rarity such as 0.9999",
        )
        .unwrap_or(d.threshold);
    let warmup = m.int_as("warmup", 0..=i64::MAX).unwrap_or(d.warmup);
    let smoothing = m.int_as("smoothing", 1..=10_000).unwrap_or(d.smoothing);
    let params = StateParams {
        threshold,
        warmup,
        smoothing,
    };
    model_validation(m, params.validate());
    Some(AnomalyModelConfig {
        features: features?,
        params,
    })
}

/// `kind = "regression"`. `feature_fields` is `None` when the feature checks do not apply.
fn regression(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
    feature_fields: Option<&[FieldConfig]>,
    number_payload: bool,
) -> Option<RegressionConfig> {
    let d = LinearParams::default();
    let target = target(m, fields);
    let target_name = target.as_ref().filter(|_| !number_payload);
    let features = features(
        m,
        feature_fields,
        target_name.map(|t| t.value.as_str()),
        "to predict from",
    );
    let algorithm_text = m.string("algorithm");
    let algorithm = match algorithm_text.as_ref().map(|a| a.value.as_str()) {
        None => Some(d.algorithm),
        Some("adagrad") => Some(LinearAlgorithm::Adagrad),
        Some("sgd") => Some(LinearAlgorithm::Sgd),
        Some("rls") => Some(LinearAlgorithm::Rls),
        Some(other) => {
            let message = format!(
                "model.algorithm must be \"adagrad\", \"sgd\" or \"rls\" for kind \"regression\" (got \"{other}\")"
            );
            let span = algorithm_text.as_ref().map_or(m.span, |a| a.span);
            m.error(span, message);
            None
        }
    };
    let learning_rate_given = m.helper.contains("learning_rate");
    let learning_rate = m.number_s(
        "learning_rate",
        |rate| rate > 0.0 && rate <= 10.0,
        "greater than 0 and at most 10",
    );
    let power_t = m
        .number("power_t", |p| (0.0..=1.0).contains(&p), "between 0 and 1")
        .unwrap_or(d.power_t);
    let l2 = non_negative(m, "l2").unwrap_or(d.l2);
    let forgetting = m
        .number(
            "forgetting",
            |f| (0.9..=1.0).contains(&f),
            "between 0.9 and 1.0",
        )
        .unwrap_or(d.forgetting);
    let scale = m.bool("scale").unwrap_or(d.scale);
    let interval_z = m
        .number(
            "interval_z",
            |z| z > 0.0 && z <= 10.0,
            "greater than 0 and at most 10",
        )
        .unwrap_or(d.interval_z);
    let explain = explain(m);
    let params = LinearParams {
        algorithm: algorithm.unwrap_or(d.algorithm),
        learning_rate: learning_rate.as_ref().map_or(d.learning_rate, |v| v.value),
        power_t,
        l2,
        forgetting,
        scale,
        interval_z,
    };
    model_validation(m, params.validate());
    // SGD on standardised features diverges at steps ≥ 2/(dim + 1) (`LinearRegression::new`
    // refuses them). Checked only when every input of the rule is valid.
    let sgd = algorithm == Some(LinearAlgorithm::Sgd) && scale;
    let rate_usable = learning_rate.is_some() || !learning_rate_given;
    if let (true, true, Some(features)) = (sgd, rate_usable, &features) {
        let dim = features.len();
        if params.learning_rate >= 2.0 / (dim as f64 + 1.0) {
            let limit = format!("2/(1 + {dim} features) = 2/{}", dim + 1);
            let (span, message) = match &learning_rate {
                Some(rate) => (
                    rate.span,
                    format!(
                        "model.learning_rate must be less than {limit} with algorithm = \"sgd\" on scaled features (got {}); larger steps diverge",
                        rate.value
                    ),
                ),
                None => (
                    algorithm_text.as_ref().map_or(m.span, |a| a.span),
                    format!(
                        "model.algorithm \"sgd\" on scaled features needs learning_rate < {limit}, and the default is {} (set a smaller learning_rate, or use algorithm = \"adagrad\")",
                        d.learning_rate
                    ),
                ),
            };
            m.error(span, message);
        }
    }
    Some(RegressionConfig {
        target: target?.value,
        features: features?,
        params,
        explain,
    })
}

/// `kind = "classification"`. `feature_fields` is `None` when the feature checks do not apply.
fn classification(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
    feature_fields: Option<&[FieldConfig]>,
    number_payload: bool,
) -> Option<ClassificationConfig> {
    let d = ClassificationConfig::default();
    let p = d.params;
    let target = target(m, fields);
    let target_name = target.as_ref().filter(|_| !number_payload);
    let features = features(
        m,
        feature_fields,
        target_name.map(|t| t.value.as_str()),
        "to predict from",
    );
    let algorithm = match m.string("algorithm") {
        None => p.algorithm,
        Some(text) => match text.value.as_str() {
            "ftrl" => LogisticAlgorithm::Ftrl,
            "adagrad" => LogisticAlgorithm::Adagrad,
            other => {
                let message = format!(
                    "model.algorithm must be \"ftrl\" or \"adagrad\" for kind \"classification\" (got \"{other}\")"
                );
                m.error(text.span, message);
                p.algorithm
            }
        },
    };
    let alpha = m
        .number(
            "alpha",
            |alpha| alpha > 0.0 && alpha <= 10.0,
            "greater than 0 and at most 10",
        )
        .unwrap_or(p.alpha);
    let beta = non_negative(m, "beta").unwrap_or(p.beta);
    let l1 = non_negative(m, "l1").unwrap_or(p.l1);
    let l2 = non_negative(m, "l2").unwrap_or(p.l2);
    let learning_rate = m
        .number(
            "learning_rate",
            |rate| rate > 0.0 && rate <= 10.0,
            "greater than 0 and at most 10",
        )
        .unwrap_or(p.learning_rate);
    let scale = m.bool("scale").unwrap_or(p.scale);
    let threshold = m
        .number(
            "threshold",
            |t| t > 0.0 && t < 1.0,
            "greater than 0 and less than 1",
        )
        .unwrap_or(d.threshold);
    let positive = labels(m, "positive");
    let negative = labels(m, "negative");
    let explain = explain(m);
    if let (Some(positive), Some(negative)) = (&positive, &negative) {
        for (index, label) in negative.iter().enumerate() {
            let same = |p: &Spanned<String>| p.value.eq_ignore_ascii_case(&label.value);
            if let Some(first) = positive.iter().position(same) {
                let message = format!(
                    "model.negative[{index}] \"{}\" is also a positive label (model.positive[{first}] \"{}\"; labels are compared ignoring ASCII case)",
                    label.value, positive[first].value
                );
                m.error(label.span, message);
            }
        }
    }
    let params = LogisticParams {
        algorithm,
        alpha,
        beta,
        l1,
        l2,
        learning_rate,
        scale,
    };
    model_validation(m, params.validate());
    let written = |list: Option<Vec<Spanned<String>>>, default: Vec<String>| {
        list.map_or(default, |list| list.into_iter().map(|l| l.value).collect())
    };
    Some(ClassificationConfig {
        target: target?.value,
        features: features?,
        params,
        threshold,
        positive: written(positive, d.positive),
        negative: written(negative, d.negative),
        explain,
    })
}

/// `kind = "kmeans"`: `features` and `k` required; `half_life` (readings), `seed`, `scale`,
/// `lloyd_iterations` and `dying_fraction` default to [`KMeansParams::online_default`]. A
/// `target` is reported: a clustering has none.
fn kmeans(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<KMeansConfig> {
    // Taken from the table directly, so that it is not listed among the accepted keys.
    if let Some((written, _)) = m.helper.table.remove_entry("target") {
        let message = "model.target does not apply to kind \"kmeans\": a clustering has no target, it groups readings by their features (remove target, and list the fields to cluster in features)";
        m.error(written.span, message.into());
    }
    let features = features(m, fields, None, "to cluster");
    let k_given = m.helper.contains("k");
    let k = m.int_as::<usize>("k", 1..=MAX_CLUSTERS as i64);
    if !k_given {
        let span = m.span;
        let message = format!(
            "missing required key \"model.k\" (the number of clusters, between 1 and {MAX_CLUSTERS}, e.g. k = 4)"
        );
        m.error(span, message);
    }
    let d = KMeansParams::online_default(k.unwrap_or(1));
    let half_life = m
        .number(
            "half_life",
            |h| h.is_finite() && h >= 1.0,
            "a finite number of readings, at least 1",
        )
        .unwrap_or(d.half_life);
    let seed = m.int_as("seed", 0..=i64::MAX).unwrap_or(d.seed);
    let scale = m.bool("scale").unwrap_or(d.scale);
    let lloyd_iterations = m
        .int_as("lloyd_iterations", 0..=MAX_LLOYD_ITERATIONS as i64)
        .unwrap_or(d.lloyd_iterations);
    let dying_fraction = m
        .number(
            "dying_fraction",
            |f| (0.0..=MAX_DYING_FRACTION).contains(&f),
            &format!("between 0 and {MAX_DYING_FRACTION}"),
        )
        .unwrap_or(d.dying_fraction);
    let params = KMeansParams {
        half_life,
        seed,
        scale,
        lloyd_iterations,
        dying_fraction,
        ..d
    };
    if k.is_some() {
        model_validation(m, params.validate());
    }
    Some(KMeansConfig {
        features: features?,
        params: KMeansParams { k: k?, ..params },
    })
}

/// `positive` / `negative`: a non-empty list of non-empty label texts. `None` when absent
/// (the default applies) or invalid (already reported).
fn labels(m: &mut Section<'_>, key: &'static str) -> Option<Vec<Spanned<String>>> {
    let list = m.get::<StringList>(key)?;
    let labels = list.value.0;
    if labels.is_empty() {
        let message = format!(
            "model.{key} must list at least one label text, e.g. {key} = [\"{}\"]",
            if key == "positive" { "yes" } else { "no" }
        );
        m.error(list.span, message);
        return None;
    }
    let mut valid = true;
    for (index, label) in labels.iter().enumerate() {
        if label.value.is_empty() {
            let message = format!(
                "model.{key}[{index}] must not be empty (a missing or null label already means \"no label\")"
            );
            m.error(label.span, message);
            valid = false;
        }
    }
    valid.then_some(labels)
}

/// A finite number ≥ 0 (penalties and FTRL's β).
fn non_negative(m: &mut Section<'_>, key: &'static str) -> Option<f64> {
    m.number(key, |v| v.is_finite() && v >= 0.0, "finite and at least 0")
}

/// `[pipelines.anomaly]`; `kind` is the model's kind when it is known, `season` the longest
/// season of a forecast in readings (the default warm-up is at least two of it).
fn anomaly(a: &mut Section<'_>, kind: Option<Kind>, season: Option<u64>) -> AnomalyParams {
    let d = AnomalyParams::default();
    let threshold_given = a.number_s("threshold", |t| t.is_finite(), "a number");
    let threshold = match threshold_given {
        Some(t) if t.value > 0.0 && t.value < 1.0 => t.value,
        Some(t) => {
            // The scale of earlier versions was robust σ (default 4): say how to convert.
            let hint = if t.value >= 1.0 {
                format!(
                    "; σ thresholds of earlier versions are written as rarities now: {} σ is {:.6}",
                    t.value,
                    1.0 - crate::model::anomaly::gaussian_tail(t.value)
                )
            } else {
                String::new()
            };
            let message = format!(
                "anomaly.threshold must be between 0 and 1, exclusive: the rarity of a flagged reading, such as 0.9999 for one in ten thousand (got {}){hint}",
                t.value
            );
            a.error(t.span, message);
            d.threshold
        }
        None => d.threshold,
    };
    let learn_anomalies = a.bool("learn_anomalies").unwrap_or(d.learn_anomalies);
    let default_warmup = season.map_or(d.warmup, |m| d.warmup.max(2 * m));
    let warmup = a.int_as("warmup", 0..=i64::MAX).unwrap_or(default_warmup);
    if let Some(kind @ (Kind::Classification | Kind::KMeans | Kind::Recommend | Kind::Anomaly)) =
        kind
    {
        let span = a.span;
        let instead = match kind {
            Kind::KMeans => {
                "; a clustering publishes each reading's distance to its cluster instead"
            }
            Kind::Recommend => "; a recommender predicts no value of an event",
            Kind::Anomaly => "; kind \"anomaly\" is itself a detector: set threshold, warmup and smoothing in [pipelines.model]",
            _ => "",
        };
        let message = format!(
            "anomaly detection is not available with model.kind \"{}\" (only with \"forecast\" or \"regression\": it flags readings far from the predicted value{instead}; remove [pipelines.anomaly])",
            kind.name()
        );
        a.error(span, message);
    }
    let params = AnomalyParams {
        threshold,
        learn_anomalies,
        warmup,
    };
    if let Err(error) = params.validate() {
        let span = a.span;
        a.error(span, format!("anomaly parameters are rejected: {error}"));
    }
    params
}

/// `explain = true | false | k`, before its range check.
enum ExplainValue {
    Flag(bool),
    Top(i64),
}

impl<'de> Deserialize<'de> for ExplainValue {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        match value.take() {
            ValueInner::Boolean(flag) => Ok(ExplainValue::Flag(flag)),
            ValueInner::Integer(k) => Ok(ExplainValue::Top(k)),
            other => Err(expected(
                "true, false or a number of features such as 3",
                other,
                value.span,
            )
            .into()),
        }
    }
}

/// `season = 48` (readings) or `season = "1d"` (a duration), before range checks.
enum SeasonValue {
    Steps(i64),
    Period(Duration),
}

impl SeasonValue {
    fn parse(inner: ValueInner<'_>, span: Span) -> Result<Self, toml_span::Error> {
        match inner {
            ValueInner::Integer(steps) => Ok(SeasonValue::Steps(steps)),
            ValueInner::String(text) => match humantime::parse_duration(&text) {
                Ok(period) => Ok(SeasonValue::Period(period)),
                Err(error) => Err(custom_error(
                    span,
                    format!(
                        "must be a number of readings such as 48 or a duration such as \"1d\" (got \"{text}\": {error})"
                    ),
                )),
            },
            other => Err(custom_error(
                span,
                format!(
                    "must be a number of readings such as 48, a duration string such as \"1d\", or a list of them such as [24, 168] (got {})",
                    a(other.type_str())
                ),
            )),
        }
    }
}

/// `season = 48`, `"1d"` or a list of such, each with its span, before range checks.
struct SeasonValues(Vec<Spanned<SeasonValue>>);

impl<'de> Deserialize<'de> for SeasonValues {
    fn deserialize(value: &mut Value<'de>) -> Result<Self, DeserError> {
        let span = value.span;
        match value.take() {
            ValueInner::Array(items) => {
                let mut seasons = Vec::with_capacity(items.len());
                let mut errors = Vec::new();
                for mut item in items {
                    let item_span = item.span;
                    match SeasonValue::parse(item.take(), item_span) {
                        Ok(season) => seasons.push(Spanned::with_span(season, item_span)),
                        Err(error) => errors.push(error),
                    }
                }
                if errors.is_empty() {
                    Ok(SeasonValues(seasons))
                } else {
                    Err(DeserError { errors })
                }
            }
            other => {
                let season = SeasonValue::parse(other, span).map_err(DeserError::from)?;
                Ok(SeasonValues(vec![Spanned::with_span(season, span)]))
            }
        }
    }
}
