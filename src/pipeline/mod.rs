//! Pipelines built from config: topic matching, decoding, the per-key model step and the
//! output message. Shared by every driver (`run`, `replay`, tests), so they all behave alike.
//!
//! A [`Pipeline`] is compiled once from its [`PipelineConfig`] and then only read. The state
//! of one key is a [`KeyState`]; [`Pipeline::step`] runs test-then-train on it and renders the
//! output message into caller-owned buffers, so the hot path allocates nothing once warm.

pub mod stats;
pub mod topic;

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Decoder, DropReason, ReadingBuf};
use crate::config::{Config, ModelConfig, PipelineConfig};
use crate::model::{ForecastParams, Forecaster, OnlineModel, Prediction, RegressionMetrics};
use crate::store::{decode_state, encode_state, StoreError};
pub use stats::{DropCounters, LogLimiter, PipelineStats};
use topic::{TopicFilter, TopicTemplate};

/// Errors building a pipeline from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A topic filter the config validation should have rejected.
    #[error("pipeline {pipeline:?}: invalid topic filter {filter:?}")]
    Filter {
        /// Pipeline name.
        pipeline: String,
        /// The filter.
        filter: String,
    },
    /// An output template the config validation should have rejected.
    #[error("pipeline {pipeline:?}: invalid output template: {message}")]
    Template {
        /// Pipeline name.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
    /// The model target is not one of the fields.
    #[error("pipeline {pipeline:?}: model target {target:?} is not one of the fields")]
    Target {
        /// Pipeline name.
        pipeline: String,
        /// The target.
        target: String,
    },
    /// Model parameters out of range.
    #[error("pipeline {pipeline:?}: {message}")]
    Model {
        /// Pipeline name.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
}

/// The persisted state of one key: its model and its prequential metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// The forecaster of the key's target field.
    pub model: Forecaster,
    /// Prequential error of the forecasts made before each value was learned.
    pub metrics: RegressionMetrics,
    /// Event time of the last reading learned (ms, or line number in replay).
    pub last_time: i64,
}

/// What one model step produced (also rendered as the output message).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    /// The value observed.
    pub observed: f64,
    /// `observed − forecast made before it was seen`, when there was one.
    pub error: Option<f64>,
    /// Forecast of the next value, with its interval.
    pub forecast: Option<Prediction>,
    /// Values learned so far by this key's model.
    pub updates: u64,
    /// Running prequential MAE of this key.
    pub mae: f64,
    /// Running prequential RMSE of this key.
    pub rmse: f64,
}

/// The JSON output message as `serde_json` would render it. The hot path renders it by hand
/// ([`OutputRenderer`]); this is the reference the tests compare the two against.
#[cfg(test)]
#[derive(Serialize)]
struct OutputMessage<'a> {
    pipeline: &'a str,
    key: &'a str,
    field: &'a str,
    time: i64,
    observed: f64,
    error: Option<f64>,
    forecast: Option<f64>,
    lower: Option<f64>,
    upper: Option<f64>,
    updates: u64,
    mae: f64,
    rmse: f64,
}

/// Renders the output message (field names are part of the public interface: see the
/// README), byte for byte as `serde_json::to_writer` renders the same struct, but about twice
/// as fast: the parts that only depend on the pipeline are escaped once, here, and numbers go
/// straight to serde_json's own formatters (`CompactFormatter`, so floats are printed by the
/// same shortest-round-trip code serde_json uses, whichever version is linked).
#[derive(Debug)]
struct OutputRenderer {
    /// `{"pipeline":<name>,"key":`
    head: Vec<u8>,
    /// `,"field":<target>,"time":`
    field: Vec<u8>,
}

impl OutputRenderer {
    fn new(pipeline: &str, field: &str) -> OutputRenderer {
        let mut head = b"{\"pipeline\":".to_vec();
        push_json_str(&mut head, pipeline);
        head.extend_from_slice(b",\"key\":");
        let mut field_part = b",\"field\":".to_vec();
        push_json_str(&mut field_part, field);
        field_part.extend_from_slice(b",\"time\":");
        OutputRenderer {
            head,
            field: field_part,
        }
    }

    /// Appends the message for one step of `key` to `out`.
    fn render(&self, out: &mut Vec<u8>, key: &str, time: i64, result: &StepResult) {
        use serde_json::ser::{CompactFormatter, Formatter as _};

        out.extend_from_slice(&self.head);
        push_json_str(out, key);
        out.extend_from_slice(&self.field);
        // Writing into a Vec<u8> cannot fail.
        let _ = CompactFormatter.write_i64(out, time);
        out.extend_from_slice(b",\"observed\":");
        push_f64(out, Some(result.observed));
        out.extend_from_slice(b",\"error\":");
        push_f64(out, result.error);
        out.extend_from_slice(b",\"forecast\":");
        push_f64(out, result.forecast.map(|p| p.value));
        out.extend_from_slice(b",\"lower\":");
        push_f64(out, result.forecast.map(|p| p.lower));
        out.extend_from_slice(b",\"upper\":");
        push_f64(out, result.forecast.map(|p| p.upper));
        out.extend_from_slice(b",\"updates\":");
        let _ = CompactFormatter.write_u64(out, result.updates);
        out.extend_from_slice(b",\"mae\":");
        push_f64(out, Some(result.mae));
        out.extend_from_slice(b",\"rmse\":");
        push_f64(out, Some(result.rmse));
        out.push(b'}');
    }
}

/// Appends `value` as serde_json renders an `Option<f64>`: `null` for `None` and for NaN and
/// infinities (JSON has no such numbers), otherwise serde_json's own float formatting.
fn push_f64(out: &mut Vec<u8>, value: Option<f64>) {
    use serde_json::ser::{CompactFormatter, Formatter as _};

    match value {
        // Writing into a Vec<u8> cannot fail.
        Some(v) if v.is_finite() => {
            let _ = CompactFormatter.write_f64(out, v);
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// Writes `s` as a JSON string, exactly as serde_json does.
///
/// Keys and topics almost never need escaping, so they are checked for the bytes serde_json
/// escapes (control characters, `"` and `\`; everything else, including non-ASCII, is written
/// as is) and copied in one piece; the rare string that has one goes through serde_json.
///
/// # Errors
/// Those of `out`.
pub(crate) fn write_json_str(out: &mut impl std::io::Write, s: &str) -> std::io::Result<()> {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return serde_json::to_writer(out, s).map_err(std::io::Error::from);
    }
    out.write_all(b"\"")?;
    out.write_all(s.as_bytes())?;
    out.write_all(b"\"")
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec<u8> cannot fail.
    let _ = write_json_str(out, s);
}

/// One pipeline, compiled from its config.
#[derive(Debug)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// Its position in the config (stable id within one process).
    pub index: usize,
    filters: Vec<TopicFilter>,
    decoder: Decoder,
    template: TopicTemplate,
    target: String,
    target_index: usize,
    /// A fresh model, built (and its parameters checked) once; new keys start from a clone.
    prototype: Forecaster,
    /// QoS of output messages.
    pub output_qos: u8,
    /// Counters for metrics and the stats line.
    pub stats: PipelineStats,
    /// The output message's constant parts, escaped once.
    output: OutputRenderer,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Pipeline {
    /// Compile a pipeline. The config is expected to be validated already; anything wrong is
    /// still reported as an error rather than a panic.
    ///
    /// # Errors
    /// [`PipelineError`] naming the pipeline and the problem.
    pub fn new(index: usize, cfg: &PipelineConfig) -> Result<Pipeline, PipelineError> {
        let filters = cfg
            .topics
            .iter()
            .map(|f| {
                TopicFilter::parse(f).ok_or_else(|| PipelineError::Filter {
                    pipeline: cfg.name.clone(),
                    filter: f.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let template =
            TopicTemplate::parse(&cfg.output).map_err(|message| PipelineError::Template {
                pipeline: cfg.name.clone(),
                message,
            })?;
        let ModelConfig::Forecast(model) = &cfg.model;
        let target_index = cfg
            .fields
            .iter()
            .position(|f| f.name == model.target)
            .ok_or_else(|| PipelineError::Target {
                pipeline: cfg.name.clone(),
                target: model.target.clone(),
            })?;
        let params = ForecastParams {
            lags: model.lags,
            forgetting: model.forgetting,
            interval_z: model.interval_z,
            ..ForecastParams::default()
        };
        let prototype = Forecaster::new(params).map_err(|e| PipelineError::Model {
            pipeline: cfg.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Pipeline {
            name: cfg.name.clone(),
            index,
            filters,
            decoder: Decoder::new(cfg),
            template,
            target: model.target.clone(),
            target_index,
            prototype,
            output_qos: cfg.output_qos,
            stats: PipelineStats::default(),
            output: OutputRenderer::new(&cfg.name, &model.target),
        })
    }

    /// Whether a message on `topic` belongs to this pipeline.
    pub fn matches(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| f.matches(topic))
    }

    /// The topic filters to subscribe to.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|f| f.as_str())
    }

    /// The field the model forecasts.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Decode a payload with this pipeline's decoder.
    ///
    /// # Errors
    /// The [`DecodeError`] saying why the reading is dropped.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        out: &mut ReadingBuf,
    ) -> Result<(), DecodeError> {
        self.decoder.decode(topic, payload, out)
    }

    /// A fresh state for a key seen for the first time.
    pub fn new_state(&self) -> KeyState {
        KeyState {
            model: self.prototype.clone(),
            metrics: RegressionMetrics::default(),
            last_time: i64::MIN,
        }
    }

    /// Decode a stored state. A state whose model parameters differ from the configured ones
    /// (the config changed) is not used: `Ok(None)` tells the caller to start the key afresh.
    ///
    /// # Errors
    /// [`StoreError`] when the bytes are not a state of this version.
    pub fn restore_state(&self, bytes: &[u8]) -> Result<Option<KeyState>, StoreError> {
        let state: KeyState = decode_state(bytes)?;
        Ok((state.model.params() == self.prototype.params()).then_some(state))
    }

    /// Encode a key's state for the store.
    ///
    /// # Errors
    /// [`StoreError::Encode`].
    pub fn encode_state(&self, state: &KeyState, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        encode_state(state, buf)
    }

    /// One test-then-train step for `key` on a decoded reading: score the forecast made before
    /// this value, learn the value, forecast the next one, then render the output message
    /// (`topic`, `payload`: cleared and overwritten, capacity reused).
    pub fn step(
        &self,
        state: &mut KeyState,
        key: &str,
        time: i64,
        values: &[f64],
        topic: &mut String,
        payload: &mut Vec<u8>,
    ) -> StepResult {
        let observed = values.get(self.target_index).copied().unwrap_or(f64::NAN);
        let before = state.model.predict_one(&[]);
        let error = before.map(|p| observed - p.value);
        if let Some(p) = before {
            state.metrics.update(observed, p.value);
            self.stats.record_error(observed - p.value);
        }
        state.model.learn_one(&[], observed);
        state.last_time = time;
        let forecast = state.model.predict_one(&[]);
        let result = StepResult {
            observed,
            error,
            forecast,
            updates: state.model.updates(),
            mae: state.metrics.mae(),
            rmse: state.metrics.rmse(),
        };
        self.template.render(&self.name, key, &self.target, topic);
        payload.clear();
        self.output.render(payload, key, time, &result);
        self.stats
            .outputs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }
}

/// All pipelines of a config, plus the counters of readings no pipeline took.
#[derive(Debug)]
pub struct Pipelines {
    list: Vec<Pipeline>,
    /// Drops that belong to no pipeline (unknown topic, full ingest queue).
    pub unrouted: DropCounters,
}

impl Pipelines {
    /// Compile every pipeline of a config.
    ///
    /// # Errors
    /// The first [`PipelineError`] (config validation normally catches them all first).
    pub fn new(config: &Config) -> Result<Pipelines, PipelineError> {
        let list = config
            .pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| Pipeline::new(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipelines {
            list,
            unrouted: DropCounters::default(),
        })
    }

    /// The pipelines, in config order.
    pub fn iter(&self) -> std::slice::Iter<'_, Pipeline> {
        self.list.iter()
    }

    /// The pipeline at `index`.
    pub fn get(&self, index: usize) -> Option<&Pipeline> {
        self.list.get(index)
    }

    /// Number of pipelines.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every `(filter, qos)` to subscribe to, without duplicates.
    pub fn subscriptions(&self, qos: u8) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = Vec::new();
        for f in self.list.iter().flat_map(|p| p.filters()) {
            if !out.iter().any(|(g, _)| g == f) {
                out.push((f.to_string(), qos));
            }
        }
        out
    }

    /// Decode one message for every pipeline whose filters match `topic`, calling `f` with each
    /// decoded reading. Bad input is counted per pipeline and reason and logged (rate-limited);
    /// a topic no pipeline takes is counted as `unknown_topic`. Returns the readings accepted.
    pub fn dispatch(
        &self,
        topic: &str,
        payload: &[u8],
        buf: &mut ReadingBuf,
        mut f: impl FnMut(&Pipeline, &ReadingBuf),
    ) -> usize {
        let mut matched = false;
        let mut accepted = 0;
        for p in &self.list {
            if !p.matches(topic) {
                continue;
            }
            matched = true;
            match p.decode(topic, payload, buf) {
                Ok(()) => {
                    p.stats
                        .readings
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    accepted += 1;
                    f(p, buf);
                }
                Err(e) => p.stats.drops.record(e.reason, |suppressed| {
                    tracing::warn!(
                        pipeline = %p.name,
                        reason = e.reason.as_str(),
                        suppressed,
                        "dropped a reading on {topic}: {e}"
                    )
                }),
            }
        }
        if !matched {
            self.unrouted
                .record(DropReason::UnknownTopic, |suppressed| {
                    tracing::warn!(
                        reason = DropReason::UnknownTopic.as_str(),
                        suppressed,
                        "dropped a message on {topic}: no pipeline's topic filter matches it"
                    )
                });
        }
        accepted
    }
}

/// A JSON summary of a key's persisted state (used by `edgeflow inspect`).
pub fn describe_state(pipeline: &str, key: &str, state: &KeyState) -> serde_json::Value {
    let forecast = state.model.predict_one(&[]);
    serde_json::json!({
        "pipeline": pipeline,
        "key": key,
        "updates": state.model.updates(),
        "last_time": state.last_time,
        "scored": state.metrics.count,
        "mae": state.metrics.mae(),
        "rmse": state.metrics.rmse(),
        "forecast": forecast.map(|p| p.value),
        "lower": forecast.map(|p| p.lower),
        "upper": forecast.map(|p| p.upper),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_exactly_as_serde_json_does() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(
            [
                "",
                "s0001",
                "a\"b",
                "back\\slash",
                "uni\u{fc}",
                "\u{2028}",
                "😀",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut ours = Vec::new();
            push_json_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn rendered_output_matches_serde_json() {
        let floats = [
            0.0,
            -0.0,
            1.0,
            -13.698,
            0.1 + 0.2,
            1e-7,
            1.5e300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let renderer = OutputRenderer::new("temperature", "temp");
        let escaped = OutputRenderer::new("p\"q", "f\\\u{1}");
        let mut out = Vec::new();
        for (i, &a) in floats.iter().enumerate() {
            let b = floats[(i + 3) % floats.len()];
            let c = floats[(i + 7) % floats.len()];
            for forecast in [
                None,
                Some(Prediction {
                    value: a,
                    lower: b,
                    upper: c,
                }),
            ] {
                let result = StepResult {
                    observed: a,
                    error: (i % 2 == 0).then_some(b),
                    forecast,
                    updates: [0, 1, u64::MAX][i % 3],
                    mae: b,
                    rmse: c,
                };
                let time = [0, -1, i64::MIN, i64::MAX, 1_700_000_000_000][i % 5];
                for (r, pipeline, field) in [
                    (&renderer, "temperature", "temp"),
                    (&escaped, "p\"q", "f\\\u{1}"),
                ] {
                    for key in ["s0001", "ctl\u{1}x", "a\"b", "ü😀"] {
                        out.clear();
                        r.render(&mut out, key, time, &result);
                        let expected = serde_json::to_vec(&OutputMessage {
                            pipeline,
                            key,
                            field,
                            time,
                            observed: result.observed,
                            error: result.error,
                            forecast: forecast.map(|p| p.value),
                            lower: forecast.map(|p| p.lower),
                            upper: forecast.map(|p| p.upper),
                            updates: result.updates,
                            mae: result.mae,
                            rmse: result.rmse,
                        })
                        .unwrap();
                        assert_eq!(
                            String::from_utf8_lossy(&out),
                            String::from_utf8_lossy(&expected)
                        );
                    }
                }
            }
        }
    }
}
