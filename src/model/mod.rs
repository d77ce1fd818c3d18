//! Online models: pure numerical code with serde-able state.
//!
//! Nothing here knows about actors, MQTT or the store. A `KeyActor` owns one model per key and
//! drives it *test-then-train* (prequential): for every reading it first calls
//! [`OnlineModel::predict_one`], publishes the prediction, then calls [`OnlineModel::learn_one`]
//! with the reading's target and feeds the pair into a [`RegressionMetrics`]. The store persists
//! a model by serialising it (postcard behind a version tag); a restored model continues bit for
//! bit where the original left off.
//!
//! - [`forecast`]: [`Forecaster`], an online blend of last-value, seasonal naive, damped
//!   trend/Holt–Winters, drift and seasonal RLS autoregressive forecasters (on `y` and `ln y`),
//!   weighted per band of horizon steps by their own errors there, 1..=horizon steps ahead,
//!   with intervals calibrated on the errors seen.
//! - [`anomaly`]: [`AnomalyDetector`], flags readings whose forecast residual exceeds a robust
//!   scale.
//! - [`linear`]: [`LinearRegression`], online linear regression over up to [`MAX_FEATURES`]
//!   features (SGD, Adagrad or recursive least squares) with a prediction interval and
//!   per-feature explanations ([`Contribution`]).
//! - [`logistic`]: [`LogisticRegression`], online binary logistic regression (FTRL-Proximal or
//!   Adagrad).
//! - [`kmeans`]: [`StreamingKMeans`] (mini-batches: device classes from key profiles) and
//!   [`OnlineKMeans`] (one reading at a time) with decay, running standardisation and stable
//!   cluster ids; [`adjusted_rand_index`] scores a clustering against known labels.
//! - [`scaler`]: [`StandardScaler`], running per-feature standardisation; both regressions use
//!   one by default.
//! - [`metrics`]: [`RegressionMetrics`], [`ClassificationMetrics`] and [`ClusteringMetrics`],
//!   prequential aggregates (MAE, RMSE; accuracy, log loss; mean distance) that merge.
//! - [`recommend`]: [`UserHistory`] (one per user) and [`ItemSimilarity`] (one per pipeline),
//!   item-item cosine recommendation over co-occurrence, exact and incremental, in bounded
//!   memory.
//! - [`rng`]: [`SplitMix64`], the platform-independent, serialisable random generator.

pub mod anomaly;
pub mod forecast;
pub mod kmeans;
pub mod linear;
pub mod logistic;
pub mod metrics;
pub mod param;
pub mod recommend;
pub mod rng;
pub mod scaler;

pub use anomaly::{
    AnomalyDetector, AnomalyKind, AnomalyParams, AnomalyVerdict, StateDetector, StateParams,
    StateVerdict, MAX_STATE_FIELDS,
};
pub use forecast::{
    ForecastParams, Forecaster, SeasonSpec, Seasons, MAX_HORIZON, MAX_LAGS, MAX_SEASONS,
    MAX_SEASON_BINS, MAX_SEASON_STEPS, MEMBER_NAMES,
};
pub use kmeans::{
    adjusted_rand_index, Assignment, KMeansParams, OnlineKMeans, StreamingKMeans, MAX_CLUSTERS,
};
pub use linear::{Contribution, LinearAlgorithm, LinearParams, LinearRegression, MAX_FEATURES};
pub use logistic::{LogisticAlgorithm, LogisticParams, LogisticRegression};
pub use metrics::{ClassificationMetrics, ClusteringMetrics, RegressionMetrics};
pub use recommend::{
    HistoryChange, HistoryEntry, ItemSimilarity, RecommendParams, ScoredItem, UserHistory,
    MAX_WEIGHT, WEIGHT_QUANTUM,
};
pub use rng::SplitMix64;
pub use scaler::StandardScaler;

/// A point prediction with an interval.
///
/// `lower <= value <= upper` for every prediction a model returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The point prediction.
    pub value: f64,
    /// Lower end of the prediction interval.
    pub lower: f64,
    /// Upper end of the prediction interval.
    pub upper: f64,
}

/// The small trait every online regression model implements ([`Forecaster`],
/// [`LinearRegression`]). [`LogisticRegression`] has a label, not a real target, and its own
/// `predict_proba`/`learn_one`; the k-means models have no target and their own
/// `update`/`predict_learn`.
pub trait OnlineModel {
    /// Predict the target of the next reading from its inputs `x` (before its target is seen).
    ///
    /// `None` while the model is warming up. For a forecaster `x` is empty: its inputs are its
    /// own past values.
    fn predict_one(&self, x: &[f64]) -> Option<Prediction>;

    /// Learn the reading's target (always called after `predict_one` for the same reading:
    /// test-then-train).
    ///
    /// A non-finite `y` is ignored: the call leaves the model unchanged.
    fn learn_one(&mut self, x: &[f64], y: f64);

    /// Number of `learn_one` calls so far that the model accepted (survives state
    /// round-trips). Ignored calls (non-finite targets) are not counted.
    fn updates(&self) -> u64;
}

/// Errors of the model module.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ModelError {
    /// Model parameters out of range; the message names every offending parameter, its value
    /// and the accepted range.
    #[error("invalid model parameters: {0}")]
    InvalidParams(String),
    /// Parameters outside their [`param::Range`]s, one error each.
    #[error("invalid model parameters: {}", join_errors(.0))]
    OutOfRange(Vec<param::ParamError>),
    /// A serialised model state is inconsistent (corrupt or written by an incompatible
    /// version); the message says what does not fit.
    #[error("invalid model state: {0}")]
    InvalidState(String),
}

/// The messages of `errors`, separated by "; ".
fn join_errors(errors: &[param::ParamError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
