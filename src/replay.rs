//! `edgeflow replay`: run the pipelines over recorded messages, with no network and no wall
//! clock. Input is JSON lines `{"topic": "...", "payload": <JSON value or string>}`; every
//! output message is written as a JSON line `{"topic": ..., "payload": {...}}`. Readings
//! without an event time get the line number as their time, so the same input always gives the
//! same output, byte for byte.
//!
//! Keys are processed in one thread, in input order, through the same [`Pipeline::step`] the
//! key actors use: replay is the reference the daemon is tested against.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::{DropReason, ReadingBuf};
use crate::config::Config;
use crate::model::RegressionMetrics;
use crate::pipeline::{KeyState, Pipeline, PipelineError, Pipelines};

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Reading the input or writing the output failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The evaluation summary of a replay (printed to stderr, or written as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Input lines read.
    pub lines: u64,
    /// Lines that were not `{"topic": ..., "payload": ...}` JSON.
    pub bad_lines: u64,
    /// Messages on topics no pipeline reads.
    pub unknown_topic: u64,
    /// Output messages written.
    pub outputs: u64,
    /// Per pipeline, in config order.
    pub pipelines: Vec<PipelineSummary>,
}

/// One pipeline's part of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSummary {
    /// Pipeline name.
    pub name: String,
    /// Readings accepted.
    pub readings: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Decode errors by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Readings that had a forecast to score.
    pub scored: u64,
    /// Prequential MAE over all keys.
    pub mae: f64,
    /// Prequential RMSE over all keys.
    pub rmse: f64,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The replay engine: key states per pipeline, kept in memory.
pub struct Replayer {
    pipelines: Pipelines,
    keys: Vec<HashMap<String, KeyState, ahash::RandomState>>,
    reading: ReadingBuf,
    topic: String,
    payload: Vec<u8>,
    unescaped: String,
    summary_lines: u64,
    bad_lines: u64,
    outputs: u64,
}

impl Replayer {
    /// Build the pipelines of `config`.
    ///
    /// # Errors
    /// [`ReplayError::Pipeline`].
    pub fn new(config: &Config) -> Result<Replayer, ReplayError> {
        let pipelines = Pipelines::new(config)?;
        let keys = pipelines.iter().map(|_| HashMap::default()).collect();
        Ok(Replayer {
            pipelines,
            keys,
            reading: ReadingBuf::default(),
            topic: String::new(),
            payload: Vec::new(),
            unescaped: String::new(),
            summary_lines: 0,
            bad_lines: 0,
            outputs: 0,
        })
    }

    /// Process one input line (without its newline). `line_no` is 1-based.
    ///
    /// # Errors
    /// [`ReplayError::Io`] if writing an output fails.
    pub fn line(
        &mut self,
        line_no: u64,
        line: &[u8],
        out: &mut impl Write,
    ) -> Result<(), ReplayError> {
        self.summary_lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed: Line<'_> = match serde_json::from_slice(line) {
            Ok(l) => l,
            Err(e) => {
                self.bad_lines += 1;
                tracing::warn!(
                    "input line {line_no}: not a {{\"topic\", \"payload\"}} JSON object: {e}"
                );
                return Ok(());
            }
        };
        // A JSON string payload is the message's bytes (e.g. "21.5" for `format = "number"`);
        // anything else is the JSON text itself.
        let raw = parsed.payload.get();
        let payload: &[u8] = if raw.starts_with('"') {
            match serde_json::from_str::<std::borrow::Cow<'_, str>>(raw) {
                Ok(s) => {
                    self.unescaped.clear();
                    self.unescaped.push_str(&s);
                    self.unescaped.as_bytes()
                }
                Err(_) => raw.as_bytes(),
            }
        } else {
            raw.as_bytes()
        };
        let Replayer {
            pipelines,
            keys,
            reading,
            topic,
            payload: out_payload,
            outputs,
            ..
        } = self;
        let mut result = Ok(());
        pipelines.dispatch(&parsed.topic, payload, reading, |p, r| {
            if result.is_err() {
                return;
            }
            let states = &mut keys[p.index];
            let state = match states.get_mut(r.key.as_str()) {
                Some(s) => s,
                None => states.entry(r.key.clone()).or_insert_with(|| p.new_state()),
            };
            let time = r.time_ms.unwrap_or(line_no as i64);
            p.step(state, &r.key, time, &r.values, topic, out_payload);
            *outputs += 1;
            result = write_output(out, topic, out_payload);
        });
        result
    }

    /// Run over a whole input.
    ///
    /// # Errors
    /// [`ReplayError::Io`] on read or write failure.
    pub fn run(
        &mut self,
        mut input: impl BufRead,
        out: &mut impl Write,
    ) -> Result<(), ReplayError> {
        let mut line = Vec::with_capacity(256);
        let mut line_no = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            line_no += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            self.line(line_no, &line, out)?;
        }
        out.flush()?;
        Ok(())
    }

    /// The key states of a pipeline (for tests and tools).
    pub fn states(
        &self,
        pipeline: usize,
    ) -> Option<&HashMap<String, KeyState, ahash::RandomState>> {
        self.keys.get(pipeline)
    }

    /// The summary so far. Metrics are merged in key order, so the numbers are reproducible.
    pub fn summary(&self) -> ReplaySummary {
        let pipelines = self
            .pipelines
            .iter()
            .zip(&self.keys)
            .map(|(p, states)| pipeline_summary(p, states))
            .collect();
        ReplaySummary {
            lines: self.summary_lines,
            bad_lines: self.bad_lines,
            unknown_topic: self.pipelines.unrouted.get(DropReason::UnknownTopic),
            outputs: self.outputs,
            pipelines,
        }
    }
}

fn pipeline_summary(
    p: &Pipeline,
    states: &HashMap<String, KeyState, ahash::RandomState>,
) -> PipelineSummary {
    let mut sorted: Vec<_> = states.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut metrics = RegressionMetrics::default();
    for (_, s) in sorted {
        metrics.merge(&s.metrics);
    }
    PipelineSummary {
        name: p.name.clone(),
        readings: p.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
        keys: states.len() as u64,
        decode_errors: p
            .stats
            .drops
            .nonzero()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect(),
        scored: metrics.count,
        mae: metrics.mae(),
        rmse: metrics.rmse(),
    }
}

fn write_output(out: &mut impl Write, topic: &str, payload: &[u8]) -> Result<(), ReplayError> {
    out.write_all(b"{\"topic\":")?;
    serde_json::to_writer(&mut *out, topic).map_err(io::Error::from)?;
    out.write_all(b",\"payload\":")?;
    out.write_all(payload)?;
    out.write_all(b"}\n")?;
    Ok(())
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replay: {} lines, {} outputs, {} bad lines, {} on unknown topics",
            self.lines, self.outputs, self.bad_lines, self.unknown_topic
        )?;
        for p in &self.pipelines {
            write!(
                f,
                "pipeline {}: {} readings, {} keys, scored {}, MAE {:.6}, RMSE {:.6}",
                p.name, p.readings, p.keys, p.scored, p.mae, p.rmse
            )?;
            if p.decode_errors.is_empty() {
                writeln!(f, ", no decode errors")?;
            } else {
                let errs: Vec<String> = p
                    .decode_errors
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect();
                writeln!(f, ", decode errors: {}", errs.join(" "))?;
            }
        }
        Ok(())
    }
}
