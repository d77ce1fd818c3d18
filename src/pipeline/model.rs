//! The per-key model of a pipeline, whatever its kind, and one test-then-train step on it.
//!
//! Every kind follows the same order (prequential evaluation): predict from what was learned
//! so far, score that prediction against the reading's target, flag it if it is anomalous,
//! learn the reading (unless it is an anomaly that must not be learned), then render the output
//! message. The error a key records is therefore always honest. A clustering has no target: it
//! assigns the reading to its nearest cluster and scores the distance to that cluster's centre,
//! both before learning the reading.

use serde::{Deserialize, Serialize};

use super::operators::OperatorState;
use super::output::JsonObject;
use super::stats::PipelineStats;
use crate::config::{HorizonEvery, ModelConfig, PipelineConfig};
use crate::model::{
    AnomalyDetector, AnomalyParams, AnomalyVerdict, ClassificationMetrics, ClusteringMetrics,
    Contribution, Forecaster, LinearRegression, LogisticRegression, ModelError, OnlineKMeans,
    OnlineModel, Prediction, RegressionMetrics, StateDetector, UserHistory, MAX_FEATURES,
    MAX_HORIZON,
};

/// The persisted state of one key: its model, its prequential metrics, the last time seen and
/// the state of its operators (open windows, recent event times).
///
/// Field order is the postcard format (state version 2); version 1 had only `model` and
/// `last_time` and is read by [`KeyStateV1`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// The model, by kind.
    pub model: KeyModel,
    /// Event time of the last reading the model saw (ms, or line number in replay).
    pub last_time: i64,
    /// One entry per stateful operator (window, dedupe), in config order.
    pub operators: Vec<OperatorState>,
    /// The operator configuration `operators` belongs to (a changed configuration starts
    /// the operators afresh and keeps the model).
    pub operators_fingerprint: u64,
}

/// A key's state as stored by state version 1 (before operators existed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyStateV1 {
    pub(crate) model: KeyModel,
    pub(crate) last_time: i64,
}

/// A key's model and metrics, by model kind.
///
/// The variant order is the postcard format (a variant is stored as its index): new kinds are
/// appended at the end, so that stored states of the existing kinds stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyModel {
    /// `kind = "forecast"`.
    Forecast {
        /// The forecaster of the target field (boxed: it is several times larger than the
        /// other kinds' models, and one allocation per key is nothing).
        model: Box<Forecaster>,
        /// Flags readings far from their forecast (when `[pipelines.anomaly]` is set; boxed,
        /// like the models larger than the other kinds').
        anomaly: Option<Box<AnomalyDetector>>,
        /// Prequential error of the one-step forecasts.
        metrics: RegressionMetrics,
    },
    /// `kind = "regression"`.
    Regression {
        /// The linear model (boxed, like every model larger than a few words: a resident key
        /// costs the largest variant, so an unboxed 400-byte model here made every forecast
        /// key 400 bytes larger too).
        model: Box<LinearRegression>,
        /// Flags readings far from their prediction (boxed: see `Forecast`).
        anomaly: Option<Box<AnomalyDetector>>,
        /// Prequential error of the predictions.
        metrics: RegressionMetrics,
    },
    /// `kind = "classification"`.
    Classification {
        /// The logistic model (boxed: see `Regression`).
        model: Box<LogisticRegression>,
        /// Prequential accuracy and log loss on labelled readings.
        metrics: ClassificationMetrics,
    },
    /// `kind = "kmeans"`.
    KMeans {
        /// The online k-means (boxed: see `Regression`).
        model: Box<OnlineKMeans>,
        /// Prequential mean distance of the readings to the cluster they were assigned to.
        metrics: ClusteringMetrics,
    },
    /// `kind = "recommend"`: the key is a user.
    Recommend {
        /// The user's recent items (the pipeline's recommender holds the similarities).
        history: UserHistory,
        /// Events recorded.
        events: u64,
    },
    /// `kind = "anomaly"`.
    Anomaly {
        /// The key's state and change detector over the features.
        model: StateDetector,
    },
}

impl KeyModel {
    /// Readings learned so far.
    pub fn updates(&self) -> u64 {
        match self {
            KeyModel::Forecast { model, .. } => model.updates(),
            KeyModel::Regression { model, .. } => model.updates(),
            KeyModel::Classification { model, .. } => model.updates(),
            KeyModel::KMeans { model, .. } => model.updates(),
            KeyModel::Recommend { events, .. } => *events,
            KeyModel::Anomaly { model } => model.updates(),
        }
    }

    /// Whether `other` was built from the same configuration (kind and parameters): a stored
    /// state that is not is not used.
    pub fn same_config(&self, other: &KeyModel) -> bool {
        let anomaly_params = |a: &Option<Box<AnomalyDetector>>| a.as_ref().map(|d| *d.params());
        match (self, other) {
            (
                KeyModel::Forecast {
                    model: a,
                    anomaly: da,
                    ..
                },
                KeyModel::Forecast {
                    model: b,
                    anomaly: db,
                    ..
                },
            ) => a.params() == b.params() && anomaly_params(da) == anomaly_params(db),
            (
                KeyModel::Regression {
                    model: a,
                    anomaly: da,
                    ..
                },
                KeyModel::Regression {
                    model: b,
                    anomaly: db,
                    ..
                },
            ) => {
                a.params() == b.params()
                    && a.dim() == b.dim()
                    && anomaly_params(da) == anomaly_params(db)
            }
            (
                KeyModel::Classification { model: a, .. },
                KeyModel::Classification { model: b, .. },
            ) => a.params() == b.params() && a.dim() == b.dim(),
            (KeyModel::KMeans { model: a, .. }, KeyModel::KMeans { model: b, .. }) => {
                a.params() == b.params() && a.dim() == b.dim()
            }
            (KeyModel::Recommend { history: a, .. }, KeyModel::Recommend { history: b, .. }) => {
                a.capacity() == b.capacity()
            }
            (KeyModel::Anomaly { model: a }, KeyModel::Anomaly { model: b }) => {
                a.params() == b.params() && a.dim() == b.dim()
            }
            _ => false,
        }
    }
}

/// What a pipeline's model needs besides its state: built once from config.
#[derive(Debug)]
pub(crate) struct ModelSpec {
    /// A fresh model; new keys start from a clone.
    pub prototype: KeyModel,
    /// Index of the target (or label) among the decoded fields; `None` for a clustering.
    pub target: Option<usize>,
    /// Indices of the features among the decoded fields (empty for a forecast).
    pub features: Vec<usize>,
    /// Feature names, for explanations.
    pub feature_names: Vec<String>,
    /// Top-k contributions to report, if explanations are on.
    pub explain: Option<usize>,
    /// Probability from which the predicted label is positive.
    pub threshold: f64,
    /// Forecasts: which messages carry the whole horizon (every one when `None`).
    pub horizon_every: Option<HorizonEvery>,
}

impl ModelSpec {
    /// Build the spec and a prototype model from a pipeline's config.
    /// `fields` are the names of the fields the model sees (after the operators).
    pub(crate) fn new(cfg: &PipelineConfig, fields: &[String]) -> Result<ModelSpec, String> {
        let index = |name: &str| {
            fields
                .iter()
                .position(|f| f == name)
                .ok_or_else(|| format!("{name:?} is not one of the fields"))
        };
        let target = cfg.model.target().map(index).transpose()?;
        let features = cfg
            .model
            .features()
            .iter()
            .map(|f| index(f))
            .collect::<Result<Vec<_>, _>>()?;
        if features.len() > MAX_FEATURES {
            return Err(format!("at most {MAX_FEATURES} features"));
        }
        let anomaly =
            |params: &Option<AnomalyParams>| -> Result<Option<Box<AnomalyDetector>>, ModelError> {
                Ok(params.map(AnomalyDetector::new).transpose()?.map(Box::new))
            };
        let err = |e: ModelError| e.to_string();
        let (prototype, explain, threshold) = match &cfg.model {
            ModelConfig::Forecast(f) => (
                KeyModel::Forecast {
                    model: Box::new(Forecaster::new(f.params).map_err(err)?),
                    anomaly: anomaly(&cfg.anomaly).map_err(err)?,
                    metrics: RegressionMetrics::default(),
                },
                None,
                0.5,
            ),
            ModelConfig::Regression(r) => (
                KeyModel::Regression {
                    model: Box::new(LinearRegression::new(features.len(), r.params).map_err(err)?),
                    anomaly: anomaly(&cfg.anomaly).map_err(err)?,
                    metrics: RegressionMetrics::default(),
                },
                r.explain,
                0.5,
            ),
            ModelConfig::Classification(c) => (
                KeyModel::Classification {
                    model: Box::new(
                        LogisticRegression::new(features.len(), c.params).map_err(err)?,
                    ),
                    metrics: ClassificationMetrics::default(),
                },
                c.explain,
                c.threshold,
            ),
            ModelConfig::KMeans(k) => (
                KeyModel::KMeans {
                    model: Box::new(OnlineKMeans::new(k.params, features.len()).map_err(err)?),
                    metrics: ClusteringMetrics::default(),
                },
                None,
                0.5,
            ),
            ModelConfig::Recommend(r) => (
                KeyModel::Recommend {
                    history: UserHistory::new(r.params.history).map_err(err)?,
                    events: 0,
                },
                None,
                0.5,
            ),
            ModelConfig::Anomaly(a) => (
                KeyModel::Anomaly {
                    model: StateDetector::new(a.params, features.len()).map_err(err)?,
                },
                None,
                0.5,
            ),
        };
        Ok(ModelSpec {
            prototype,
            target,
            features,
            feature_names: cfg.model.features().to_vec(),
            explain,
            threshold,
            horizon_every: match &cfg.model {
                ModelConfig::Forecast(f) => f.horizon_every,
                _ => None,
            },
        })
    }
}

/// Buffers a step writes into, owned by the caller (a key actor, the replayer) and reused, so a
/// step allocates nothing once they have grown.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The output topic of the last step.
    pub topic: String,
    /// The output payload of the last step.
    pub payload: Vec<u8>,
    pub(crate) buffers: StepBuffers,
    /// One per map operator of the pipeline.
    pub(crate) maps: Vec<super::operators::MapBuffers>,
}

/// Working memory of a step besides the output: grown once to the pipeline's sizes, then
/// reused (zeroing fixed-size stack arrays of the largest size on every reading cost more).
#[derive(Debug, Default)]
pub(crate) struct StepBuffers {
    contributions: Vec<Contribution>,
    features: Vec<f64>,
    horizon: Vec<Prediction>,
}

/// What one step produced, for the pipeline's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// A numeric prediction was scored: the error (observed − predicted) as the key's
    /// metrics scored it (winsorised, see [`RegressionMetrics::update_within`]).
    Scored(f64),
    /// A label was scored: whether the predicted label was right, and the log loss.
    Classified {
        /// The predicted label was the observed one.
        correct: bool,
        /// −log p(observed label).
        log_loss: f64,
    },
    /// A reading was assigned to a cluster: its distance to the cluster's centre.
    Clustered(f64),
    /// Nothing to score (warming up, or no target in the reading).
    Unscored,
}

impl ModelSpec {
    /// One test-then-train step; the message body (every field after `time`) is appended to
    /// `obj`. Returns what to count.
    pub(crate) fn step(
        &self,
        state: &mut KeyState,
        time: i64,
        values: &[f64],
        buffers: &mut StepBuffers,
        obj: &mut JsonObject<'_>,
        stats: &PipelineStats,
    ) -> Outcome {
        let target = self
            .target
            .and_then(|i| values.get(i))
            .copied()
            .unwrap_or(f64::NAN);
        let StepBuffers {
            contributions,
            features: x,
            horizon,
        } = buffers;
        x.clear();
        x.extend(
            self.features
                .iter()
                .map(|&i| values.get(i).copied().unwrap_or(f64::NAN)),
        );
        let x = x.as_slice();
        let previous_time = state.last_time;
        state.last_time = time;
        match &mut state.model {
            KeyModel::Forecast {
                model,
                anomaly,
                metrics,
            } => {
                // Only the point forecast is scored: its interval was published with it.
                let before = model.forecast_value();
                let error = before.map(|value| target - value);
                // A reading the model moves past as absurd is scored winsorised at its own
                // scale (floored like its outlier test: a constant series has σ = 0), so it
                // does not dominate the MAE; every other error counts in full, so the MAE
                // follows a real change of regime at once.
                let scored = before.and_then(|value| {
                    let scale = model
                        .is_absurd(target)
                        .then(|| model.residual_std())
                        .flatten()
                        .map(|s| s.max(1e-9 * value.abs()));
                    metrics.update_within(target, value, scale)
                });
                let context = model.seasonal_reference(target);
                let verdict = score_anomaly(anomaly, error, target, context, stats);
                // A flagged reading is learnt winsorised (unless `learn_anomalies`).
                let learnt = match (before, verdict) {
                    (Some(value), Some(v)) => value + v.learn_residual,
                    _ => target,
                };
                let params = model.params();
                let steps = params.horizon.min(MAX_HORIZON);
                let publish_horizon = steps > 1
                    && self.horizon_every.is_none_or(|every| {
                        every.publishes(model.updates() + 1, time, previous_time)
                    });
                let empty = Prediction {
                    value: 0.0,
                    lower: 0.0,
                    upper: 0.0,
                };
                // Only the first step is computed when the horizon is not published.
                horizon.resize(if publish_horizon { steps } else { 1 }, empty);
                let n = model.learn_forecast_at(time, learnt, horizon);
                let calibrated = model.calibrated_steps();
                let next = (n > 0).then_some(horizon[0]);
                let bound = |k: usize, value: f64| (k < calibrated).then_some(value);
                obj.f64("observed", Some(target))
                    .f64("error", error)
                    .f64("forecast", next.map(|p| p.value))
                    .f64("lower", next.and_then(|p| bound(0, p.lower)))
                    .f64("upper", next.and_then(|p| bound(0, p.upper)))
                    .bool("warming_up", Some(calibrated < n.max(1)))
                    .u64("updates", model.updates())
                    .f64("mae", Some(metrics.mae()))
                    .f64("rmse", Some(metrics.rmse()));
                if publish_horizon {
                    obj.array_of_objects("horizon", n, |k, step| {
                        let p = horizon[k];
                        step.u64("step", k as u64 + 1)
                            .f64("forecast", Some(p.value))
                            .f64("lower", bound(k, p.lower))
                            .f64("upper", bound(k, p.upper));
                    });
                }
                write_anomaly(obj, anomaly.is_some(), verdict);
                scored.map_or(Outcome::Unscored, Outcome::Scored)
            }
            KeyModel::Regression {
                model,
                anomaly,
                metrics,
            } => {
                let prediction = (model.updates() > 0).then(|| model.predict_one(x));
                let observed = target.is_finite().then_some(target);
                let error = observed.zip(prediction).map(|(y, p)| y - p.value);
                // The linear model has no notion of an absurd target yet: errors are only
                // capped at `MAX_SCORED_ERROR` (no overflow).
                let scored = observed
                    .zip(prediction)
                    .and_then(|(y, p)| metrics.update(y, p.value));
                let verdict = score_anomaly(anomaly, error, target, None, stats);
                if let Some(y) = observed {
                    // A flagged reading is learnt winsorised (unless `learn_anomalies`).
                    let learnt = match (prediction, verdict) {
                        (Some(p), Some(v)) => p.value + v.learn_residual,
                        _ => y,
                    };
                    model.learn_one(x, learnt);
                }
                obj.f64("observed", observed)
                    .f64("prediction", prediction.map(|p| p.value))
                    .f64("lower", prediction.map(|p| p.lower))
                    .f64("upper", prediction.map(|p| p.upper))
                    .f64("error", error)
                    .u64("updates", model.updates())
                    .f64("mae", Some(metrics.mae()))
                    .f64("rmse", Some(metrics.rmse()));
                write_anomaly(obj, anomaly.is_some(), verdict);
                if let Some(k) = self.explain {
                    model.explain(x, k, contributions);
                    self.write_explanation(obj, contributions);
                }
                scored.map_or(Outcome::Unscored, Outcome::Scored)
            }
            KeyModel::Classification { model, metrics } => {
                let label = target.is_finite().then_some(target >= 0.5);
                // Predicts, then learns from that prediction when the label is known.
                let probability = model.predict_learn(x, label);
                let predicted = probability >= self.threshold;
                let outcome = match label {
                    Some(y) => {
                        metrics.update(y, probability, self.threshold);
                        let p_observed = if y { probability } else { 1.0 - probability };
                        Outcome::Classified {
                            correct: y == predicted,
                            log_loss: -p_observed.clamp(1e-15, 1.0).ln(),
                        }
                    }
                    None => Outcome::Unscored,
                };
                obj.bool("observed", label)
                    .f64("probability", Some(probability))
                    .bool("label", Some(predicted))
                    .u64("updates", model.updates())
                    .f64("accuracy", Some(metrics.accuracy()))
                    .f64("log_loss", Some(metrics.log_loss()));
                if let Some(k) = self.explain {
                    model.explain(x, k, contributions);
                    self.write_explanation(obj, contributions);
                }
                outcome
            }
            KeyModel::KMeans { model, metrics } => {
                // Assigns, then learns: `None` while warming up (the reading is buffered) and
                // for a point the model refuses (a non-finite value an operator produced),
                // which is not learnt either.
                let assignment = model.predict_learn(x);
                if let Some(a) = assignment {
                    metrics.update(a.distance);
                }
                obj.opt_u64("cluster", assignment.map(|a| u64::from(a.id)))
                    .f64("distance", assignment.map(|a| a.distance))
                    .u64("updates", model.updates())
                    .f64(
                        "mean_distance",
                        (metrics.count > 0).then(|| metrics.mean_distance()),
                    );
                assignment.map_or(Outcome::Unscored, |a| Outcome::Clustered(a.distance))
            }
            // Events go through `Pipeline::record_event`, never through the step.
            KeyModel::Recommend { .. } => Outcome::Unscored,
            KeyModel::Anomaly { model } => {
                let verdict = model.observe(x);
                if verdict.anomaly {
                    stats
                        .anomalies
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let field = verdict
                    .field
                    .and_then(|index| self.feature_names.get(index))
                    .map(String::as_str);
                obj.bool("anomaly", Some(verdict.anomaly))
                    .f64("anomaly_score", Some(verdict.score))
                    .f64("anomaly_sigma", Some(verdict.sigma))
                    .opt_str("anomaly_kind", verdict.kind.map(|k| k.name()))
                    .opt_str("anomaly_field", field)
                    .bool("change", Some(verdict.change))
                    .bool("warming_up", Some(verdict.warming_up))
                    .u64("updates", model.updates());
                Outcome::Unscored
            }
        }
    }

    fn write_explanation(&self, obj: &mut JsonObject<'_>, contributions: &[Contribution]) {
        obj.array_of_objects("explain", contributions.len(), |i, item| {
            let c = contributions[i];
            let name = self
                .feature_names
                .get(c.feature)
                .map_or("?", String::as_str);
            item.str("feature", name)
                .f64("contribution", Some(c.scaled))
                .f64("contribution_original", Some(c.original));
        });
    }
}

/// Score a residual (`NaN` when there was no prediction) of a reading with value `value` with
/// the key's anomaly detector, counting flagged readings.
fn score_anomaly(
    detector: &mut Option<Box<AnomalyDetector>>,
    error: Option<f64>,
    value: f64,
    context: Option<f64>,
    stats: &PipelineStats,
) -> Option<AnomalyVerdict> {
    let detector = detector.as_mut()?;
    let verdict = detector.observe(error.unwrap_or(f64::NAN), value, context);
    if verdict.anomaly {
        stats
            .anomalies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    error.is_some().then_some(verdict)
}

/// The anomaly fields of a forecast or regression message.
fn write_anomaly(obj: &mut JsonObject<'_>, enabled: bool, verdict: Option<AnomalyVerdict>) {
    if enabled {
        obj.bool("anomaly", Some(verdict.is_some_and(|v| v.anomaly)))
            .f64("anomaly_score", Some(verdict.map_or(0.0, |v| v.score)))
            .f64("anomaly_sigma", Some(verdict.map_or(0.0, |v| v.sigma)))
            .opt_str(
                "anomaly_kind",
                verdict.and_then(|v| v.kind).map(|k| k.name()),
            )
            .bool("change", Some(verdict.is_some_and(|v| v.change)));
    }
}
