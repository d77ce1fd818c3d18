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

/// The JSON output message (field names are part of the public interface: see the README).
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
        let message = OutputMessage {
            pipeline: &self.name,
            key,
            field: &self.target,
            time,
            observed,
            error,
            forecast: forecast.map(|p| p.value),
            lower: forecast.map(|p| p.lower),
            upper: forecast.map(|p| p.upper),
            updates: result.updates,
            mae: result.mae,
            rmse: result.rmse,
        };
        // Serialising plain numbers and strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *payload, &message);
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
