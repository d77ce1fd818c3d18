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

use toml_span::de_helpers::{expected, TableHelper};
use toml_span::value::{Key, Value, ValueInner};
use toml_span::{DeserError, Deserialize, ErrorKind, Span, Spanned};

use super::error::LineIndex;
use super::rules;
use super::schema::{
    Config, FieldConfig, ForecastConfig, KeySource, ModelConfig, MqttConfig, PayloadFormat,
    PipelineConfig, RuntimeConfig, SimulateConfig, StoreConfig, TimeSource, TimeUnit,
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_OUTPUT,
};

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

/// Reads `text` (already parsed as UTF-8, BOM removed) into a [`Config`].
pub(crate) fn load_text(source: &Path, text: &str) -> Result<Config, Vec<Problem>> {
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
    let config = config(&mut root, source, &mut problems);
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
        let value = self.get::<Number>(key)?;
        if accepts(value.value.0) {
            return Some(value.value.0);
        }
        let message = format!(
            "{}{key} must be {accepted} (got {})",
            self.path, value.value.0
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

/// The root table.
fn config(root: &mut Value<'_>, source: &Path, problems: &mut Problems<'_>) -> Option<Config> {
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
    let mqtt = match top.table("mqtt", "") {
        Some(mut section) => {
            let mqtt = mqtt(&mut section);
            section.finish("[mqtt]", problems);
            mqtt
        }
        None => MqttConfig::default(),
    };
    let store = match top.table("store", "") {
        Some(mut section) => {
            let store = store(&mut section);
            section.finish("[store]", problems);
            store
        }
        None => StoreConfig::default(),
    };
    let runtime = match top.table("runtime", "") {
        Some(mut section) => {
            let runtime = runtime(&mut section);
            section.finish("[runtime]", problems);
            runtime
        }
        None => RuntimeConfig::default(),
    };
    let simulate = top.table("simulate", "").map(|mut section| {
        let simulate = simulate(&mut section);
        section.finish("[simulate]", problems);
        simulate
    });
    let pipelines = pipelines(&mut top, problems);
    top.finish("", problems);
    Some(Config {
        source: source.to_path_buf(),
        mqtt,
        store,
        runtime,
        simulate,
        pipelines: pipelines?,
    })
}

/// `[mqtt]`
fn mqtt(s: &mut Section<'_>) -> MqttConfig {
    let d = MqttConfig::default();
    let embedded = s.bool("embedded").unwrap_or(d.embedded);
    let host = s.string("host");
    // The embedded broker always listens on 127.0.0.1, so `host` does not matter then.
    if let Some(host) = host
        .as_ref()
        .filter(|h| h.value.trim().is_empty() && !embedded)
    {
        s.error(
            host.span,
            "host must not be empty (a host name or IP address of the broker)".into(),
        );
    }
    let port = s.int_as("port", 1..=65_535).unwrap_or(d.port);
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
    MqttConfig {
        embedded,
        host: host.map_or(d.host, |v| v.value),
        port,
        client_id: client_id.map_or(d.client_id, |v| v.value),
        username: username.map(|v| v.value),
        password: password.map(|v| v.value),
        keep_alive: keep_alive.map_or(d.keep_alive, |v| v.value),
        max_packet_bytes,
        subscribe_qos,
        reconnect_min: min,
        reconnect_max: max,
        ingest_queue,
        publish_queue,
    }
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
    StoreConfig {
        // Kept as written: relative paths resolve against the working directory at runtime
        // (systemd sets it to the StateDirectory).
        data_dir: data_dir.map_or(d.data_dir, |v| PathBuf::from(v.value)),
        checkpoint_interval: checkpoint_interval.map_or(d.checkpoint_interval, |v| v.value),
        cache_bytes,
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
    let topic = s.string("topic");
    if let Some(topic) = &topic {
        match rules::template_placeholders(&topic.value, &["sensor"]) {
            Ok(used) if used.contains(&"sensor") => {}
            Ok(_) => s.error(
                topic.span,
                format!(
                    "topic must contain {{sensor}}, replaced by each sensor's id (got \"{}\")",
                    topic.value
                ),
            ),
            Err(reason) => s.error(
                topic.span,
                format!(
                    "topic \"{}\" is not a valid topic template: {reason}",
                    topic.value
                ),
            ),
        }
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
        topic: topic.map_or(d.topic, |v| v.value),
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
        let (pipeline, name) = pipeline(section, index, problems);
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
    complete.then_some(pipelines)
}

/// The model kinds `[pipelines.model] kind` accepts.
const MODEL_KINDS: &[&str] = &["forecast"];

/// `"forecast"` (or `"a" | "b"` once there are several kinds), for messages.
fn accepted_kinds() -> String {
    MODEL_KINDS
        .iter()
        .map(|kind| format!("\"{kind}\""))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One `[[pipelines]]` entry. Also returns its name (when valid) for the uniqueness check.
fn pipeline(
    mut s: Section<'_>,
    index: usize,
    problems: &mut Problems<'_>,
) -> (Option<PipelineConfig>, Option<Spanned<String>>) {
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

    let topics = topics(&mut s);
    let format = match s.string("format") {
        None => Some(PayloadFormat::Json),
        Some(format) => match format.value.as_str() {
            "json" => Some(PayloadFormat::Json),
            "number" => Some(PayloadFormat::Number),
            other => {
                let message = format!("format must be \"json\" or \"number\" (got \"{other}\")");
                s.error(format.span, message);
                None
            }
        },
    };
    let key = key(&mut s, topics.as_deref().unwrap_or(&[]), format);
    let time = time(&mut s, format);
    let fields = fields(&mut s, format);
    let output = s.string("output");
    if let Some(output) = &output {
        let allowed = ["pipeline", "key", "field"];
        if let Err(reason) = rules::template_placeholders(&output.value, &allowed) {
            let message = format!(
                "output \"{}\" is not a valid topic template: {reason}",
                output.value
            );
            s.error(output.span, message);
        }
    }
    let output_qos = s.int_as("output_qos", 0..=1).unwrap_or(0);
    let max_payload_bytes = s
        .int_as("max_payload_bytes", 1..=i64::MAX)
        .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    let model_given = s.helper.contains("model");
    let model = match s.table("model", "model.") {
        Some(section) => model(section, fields.as_deref(), &component, problems),
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
            None
        }
    };
    s.finish(&component, problems);

    let (
        Some(name_value),
        Some(topics),
        Some(format),
        Some(key),
        Some(time),
        Some(fields),
        Some(model),
    ) = (&name, topics, format, key, time, fields, model)
    else {
        return (None, name);
    };
    let pipeline = PipelineConfig {
        name: name_value.value.clone(),
        topics: topics.into_iter().map(|topic| topic.value).collect(),
        format,
        key,
        time,
        fields,
        model,
        output: output.map_or_else(|| DEFAULT_OUTPUT.to_owned(), |v| v.value),
        output_qos,
        max_payload_bytes,
    };
    (Some(pipeline), name)
}

/// `topics`: required, non-empty, every entry a valid MQTT filter.
fn topics(s: &mut Section<'_>) -> Option<Vec<Spanned<String>>> {
    let list = s.require::<StringList>("topics")?;
    let topics = list.value.0;
    if topics.is_empty() {
        let message =
            "topics must list at least one MQTT topic filter, e.g. [\"sensors/+/temperature\"]";
        s.error(list.span, message.into());
        return None;
    }
    let mut valid = true;
    for (index, topic) in topics.iter().enumerate() {
        if let Some(reason) = rules::topic_filter_problem(&topic.value) {
            let message = format!(
                "topics[{index}] \"{}\" is not a valid MQTT topic filter: {reason}",
                topic.value
            );
            s.error(topic.span, message);
            valid = false;
        }
    }
    valid.then_some(topics)
}

/// `key`: where the per-key actor's key comes from; `topic[N]` must exist in every topic.
fn key(
    s: &mut Section<'_>,
    topics: &[Spanned<String>],
    format: Option<PayloadFormat>,
) -> Option<KeySource> {
    let Some(text) = s.string("key") else {
        return Some(KeySource::Topic);
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
    match &source {
        KeySource::TopicLevel(level) => {
            for topic in topics {
                if !rules::filter_has_level(&topic.value, *level) {
                    let count = rules::filter_level_count(&topic.value);
                    let message = format!(
                        "key \"{}\" reads topic level {level} (0-based), but topic filter \"{}\" only matches topics with {count} level(s)",
                        text.value, topic.value
                    );
                    s.error(text.span, message);
                    valid = false;
                }
            }
        }
        KeySource::Pointer(_) if format == Some(PayloadFormat::Number) => {
            let message = format!(
                "key \"{}\" is a JSON pointer, but format = \"number\" payloads are bare numbers (use \"topic\" or \"topic[N]\")",
                text.value
            );
            s.error(text.span, message);
            valid = false;
        }
        KeySource::Topic | KeySource::Pointer(_) => {}
    }
    valid.then_some(source)
}

/// `time` and `time_unit`. `Some(None)` means "no event time": use arrival time.
fn time(s: &mut Section<'_>, format: Option<PayloadFormat>) -> Option<Option<TimeSource>> {
    // Whether `time` was written at all, even with a wrong type: a mistyped `time` must
    // not also cause "time_unit without time".
    let time_given = s.helper.contains("time");
    let pointer = s.string("time");
    let unit = s.string("time_unit");
    let mut valid = !time_given || pointer.is_some();
    if let Some(pointer) = &pointer {
        if let Some(reason) = rules::pointer_problem(&pointer.value) {
            let message = format!("time \"{}\" is not a JSON pointer: {reason}", pointer.value);
            s.error(pointer.span, message);
            valid = false;
        } else if format == Some(PayloadFormat::Number) {
            let message = "time cannot be read when format = \"number\": the payload is a bare number (remove time to use the arrival time)";
            s.error(pointer.span, message.into());
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
        let message = "time_unit is set but time is not (set time to the JSON pointer of the event time, e.g. time = \"/ts\")";
        s.error(unit.span, message.into());
        valid = false;
    }
    let source = pointer.map(|pointer| TimeSource {
        pointer: pointer.value,
        unit: time_unit,
    });
    valid.then_some(source)
}

/// `fields = { name = "/pointer" }`, in file order.
fn fields(s: &mut Section<'_>, format: Option<PayloadFormat>) -> Option<Vec<FieldConfig>> {
    let Some((_, value)) = s.take("fields") else {
        return match format {
            // A bare number is one field; `value` is its conventional name.
            Some(PayloadFormat::Number) => Some(vec![FieldConfig {
                name: "value".into(),
                pointer: String::new(),
            }]),
            Some(PayloadFormat::Json) => {
                let span = s.span;
                let message = "missing required key \"fields\" (format = \"json\" reads each field by JSON pointer, e.g. fields = { temp = \"/value\" })";
                s.error(span, message.into());
                None
            }
            None => None,
        };
    };
    let Some(table) = value.as_table() else {
        let message = format!(
            "fields must be a table of name = \"/json/pointer\" entries (got {})",
            a(value.as_ref().type_str())
        );
        s.error(value.span, message);
        return None;
    };
    // toml-span tables are sorted by name; the key spans give back the order as written,
    // which is the order models and outputs see the fields in.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span.start);
    if entries.is_empty() {
        let message = "fields must have at least one entry, e.g. fields = { temp = \"/value\" }";
        s.error(value.span, message.into());
        return None;
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
        match pointer.as_str() {
            None => {
                let message = format!(
                    "fields.{} must be a JSON pointer string such as \"/value\" (got {})",
                    key.name,
                    a(pointer.as_ref().type_str())
                );
                s.error(pointer.span, message);
                valid = false;
            }
            Some(text) => match rules::pointer_problem(text) {
                Some(reason) => {
                    let message = format!(
                        "fields.{} \"{text}\" is not a JSON pointer: {reason}",
                        key.name
                    );
                    s.error(pointer.span, message);
                    valid = false;
                }
                None => fields.push(FieldConfig {
                    name: key.name.to_string(),
                    pointer: text.to_owned(),
                }),
            },
        }
    }
    if format == Some(PayloadFormat::Number) {
        if let [(key, pointer)] = entries.as_slice() {
            if pointer.as_str().is_some_and(|text| !text.is_empty()) {
                let message = format!(
                    "fields.{} must be \"\" when format = \"number\" (the payload is one bare number)",
                    key.name
                );
                s.error(pointer.span, message);
                valid = false;
            }
        } else {
            let message = format!(
                "fields must have exactly one entry with pointer \"\" when format = \"number\" (got {} entries)",
                entries.len()
            );
            s.error(value.span, message);
            valid = false;
        }
    }
    valid.then_some(fields)
}

/// `[pipelines.model]`: dispatches on `kind`, then reports unknown keys for that kind.
fn model(
    mut m: Section<'_>,
    fields: Option<&[FieldConfig]>,
    component: &str,
    problems: &mut Problems<'_>,
) -> Option<ModelConfig> {
    let kind = m.require::<String>("kind");
    let model = match kind.as_ref().map(|kind| kind.value.as_str()) {
        Some("forecast") => forecast(&mut m, fields).map(ModelConfig::Forecast),
        Some(other) => {
            let accepted = accepted_kinds();
            let span = kind.as_ref().map_or(m.span, |kind| kind.span);
            m.error(
                span,
                format!("model.kind \"{other}\" is not supported (accepted: {accepted})"),
            );
            m.abandon(component, problems);
            return None;
        }
        None => {
            m.abandon(component, problems);
            return None;
        }
    };
    m.finish(component, problems);
    model
}

/// `kind = "forecast"`
fn forecast(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<ForecastConfig> {
    let d = ForecastConfig::default();
    let target = m.require::<String>("target");
    if let (Some(target), Some(fields)) = (&target, fields) {
        if !fields.iter().any(|field| field.name == target.value) {
            let names = fields
                .iter()
                .map(|field| field.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "model.target \"{}\" is not one of the pipeline's fields (fields: {names})",
                target.value
            );
            m.error(target.span, message);
        }
    }
    let lags = m.int_as("lags", 1..=32).unwrap_or(d.lags);
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
    Some(ForecastConfig {
        target: target?.value,
        lags,
        forgetting,
        interval_z,
    })
}
