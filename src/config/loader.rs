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
mod models;
mod operators;
mod pipeline;
mod recommend;
mod section;
mod settings;

use models::*;
use pipeline::*;
use section::*;
use settings::*;

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
use crate::model::{
    AnomalyParams, ForecastParams, KMeansParams, LinearAlgorithm, LinearParams, LogisticAlgorithm,
    LogisticParams, ModelError, SeasonSpec, Seasons, StateParams, MAX_CLUSTERS, MAX_FEATURES,
    MAX_SEASONS, MAX_STATE_FIELDS,
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
