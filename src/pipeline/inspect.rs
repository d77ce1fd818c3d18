//! Inspection of key states (`edgeflow inspect`, `/keys`): a JSON summary of one key, and the
//! metrics of a pipeline merged over its keys.

use super::{KeyModel, KeyState};
use crate::model::{ClassificationMetrics, ClusteringMetrics, RegressionMetrics};

/// A JSON summary of a key's persisted state (used by `edgeflow inspect` and `/keys`).
///
/// For a clustering: `scored` (readings assigned), `mean_distance` (prequential, since the
/// key started; `null` before the first assignment), `recent_mean_distance` (the same, decayed
/// with the model's half-life), `warming_up`, and the live `clusters`, each with its stable
/// `id`, its decayed `weight` (readings absorbed) and its `centre` in the original units of
/// the features, in the order of `model.features`. For `kind = "anomaly"`: `anomaly` (the
/// key's state now), `warming_up`, and `baselines`: each feature's long-run normal level, in
/// the order of `model.features`.
pub fn describe_state(pipeline: &str, key: &str, state: &KeyState) -> serde_json::Value {
    use crate::model::OnlineModel;

    let mut v = serde_json::json!({
        "pipeline": pipeline,
        "key": key,
        "updates": state.model.updates(),
        "last_time": state.last_time,
    });
    let extra = match &state.model {
        KeyModel::Forecast {
            model,
            anomaly,
            metrics,
        } => {
            let forecast = model.predict_one(&[]);
            // As published: no bounds until the one-step interval is calibrated.
            let bounds = forecast.filter(|_| model.calibrated_steps() > 0);
            serde_json::json!({
                "kind": "forecast",
                "scored": metrics.count,
                "mae": metrics.mae(),
                "rmse": metrics.rmse(),
                "forecast": forecast.map(|p| p.value),
                "lower": bounds.map(|p| p.lower),
                "upper": bounds.map(|p| p.upper),
                "warming_up": model.calibrated_steps() == 0,
                "members": model.member_weights().iter().map(|(n, w)| serde_json::json!({"member": n, "weight": w})).collect::<Vec<_>>(),
                "anomaly_scale": anomaly.as_ref().and_then(|a| a.scale()),
            })
        }
        KeyModel::Regression {
            model,
            anomaly,
            metrics,
        } => serde_json::json!({
            "kind": "regression",
            "scored": metrics.count,
            "mae": metrics.mae(),
            "rmse": metrics.rmse(),
            "weights": model.weights(),
            "intercept": model.intercept(),
            "anomaly_scale": anomaly.as_ref().and_then(|a| a.scale()),
        }),
        KeyModel::Classification { model, metrics } => serde_json::json!({
            "kind": "classification",
            "scored": metrics.count,
            "accuracy": metrics.accuracy(),
            "log_loss": metrics.log_loss(),
            "weights": model.weights(),
            "intercept": model.intercept(),
        }),
        KeyModel::KMeans { model, metrics } => {
            let clusters: Vec<serde_json::Value> = model
                .ids()
                .iter()
                .zip(model.weights())
                .zip(model.centres().rows())
                .map(|((id, weight), centre)| {
                    serde_json::json!({
                        "id": id,
                        "weight": weight,
                        "centre": centre.to_vec(),
                    })
                })
                .collect();
            serde_json::json!({
                "kind": "kmeans",
                "scored": metrics.count,
                "mean_distance": (metrics.count > 0).then(|| metrics.mean_distance()),
                "recent_mean_distance": model.mean_distance(),
                "warming_up": model.is_warming_up(),
                "clusters": clusters,
            })
        }
        KeyModel::Recommend { history, events } => serde_json::json!({
            "kind": "recommend",
            "events": events,
            "history": history
                .items()
                .map(|(item, weight)| serde_json::json!({"item": item, "weight": weight}))
                .collect::<Vec<_>>(),
        }),
        KeyModel::Anomaly { model } => serde_json::json!({
            "kind": "anomaly",
            "anomaly": model.anomalous(),
            "warming_up": model.updates() < model.params().warmup,
            "baselines": model.baselines().collect::<Vec<_>>(),
        }),
    };
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// Merged prequential metrics of a set of keys (for summaries), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MergedMetrics {
    /// Forecast and regression keys.
    pub regression: RegressionMetrics,
    /// Classification keys.
    pub classification: ClassificationMetrics,
    /// Clustering (kmeans) keys.
    pub clustering: ClusteringMetrics,
}

impl MergedMetrics {
    /// Add one key's metrics.
    pub fn add(&mut self, state: &KeyState) {
        match &state.model {
            KeyModel::Forecast { metrics, .. } | KeyModel::Regression { metrics, .. } => {
                self.regression.merge(metrics)
            }
            KeyModel::Classification { metrics, .. } => self.classification.merge(metrics),
            KeyModel::KMeans { metrics, .. } => self.clustering.merge(metrics),
            KeyModel::Recommend { .. } | KeyModel::Anomaly { .. } => {}
        }
    }
}
