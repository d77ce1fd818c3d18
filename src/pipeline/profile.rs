//! Key profiles for the classifiers (`[[classifiers]]`): what a key did during one interval,
//! as a fixed-length vector of numbers.
//!
//! A [`ProfileSpec`] is compiled once from a classifier's `features` and its source pipeline.
//! Each key keeps a [`ProfileAccumulator`] per classifier of its pipeline and feeds it every
//! reading ([`ProfileAccumulator::record`]: a few flops, no allocation); at the end of the
//! interval [`ProfileAccumulator::take`] turns it into the profile and starts the next
//! interval. Field statistics come from the decoded fields (before operators); model features
//! (error, forecast, coefficients) from the key's model as it is at that moment.

use smallvec::SmallVec;

use super::model::KeyModel;
use crate::config::{ClassifierConfig, FieldStat, PipelineConfig, ProfileFeature};
use crate::model::{OnlineModel, MAX_FEATURES};

/// What one feature of a profile is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// A statistic of tracked field `slot` (an index into the accumulator's fields).
    Field(FieldStat, usize),
    Count,
    Mae,
    Rmse,
    Accuracy,
    LogLoss,
    Forecast,
    /// Coefficient of model feature `index`.
    Weight(usize),
    Intercept,
}

/// A classifier's profile definition, compiled against its source pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    /// The features as written (names of the profile's numbers, in order).
    pub features: Vec<ProfileFeature>,
    sources: Vec<Source>,
    /// Positions (in the pipeline's decoded fields) of the fields with statistics.
    tracked: Vec<usize>,
    /// Readings a key needs in an interval to be profiled.
    pub min_readings: u64,
}

impl ProfileSpec {
    /// Compile `classifier`'s features for keys of `source` (its source pipeline).
    ///
    /// # Errors
    /// A message naming the feature when it does not fit the pipeline (config validation
    /// normally rejects that first).
    pub fn new(classifier: &ClassifierConfig, source: &PipelineConfig) -> Result<Self, String> {
        let mut tracked: Vec<usize> = Vec::new();
        let mut sources = Vec::with_capacity(classifier.features.len());
        for feature in &classifier.features {
            let source_of = match feature {
                ProfileFeature::Field { stat, field } => {
                    let position = source
                        .fields
                        .iter()
                        .position(|f| f.name == *field)
                        .ok_or_else(|| format!("{feature}: no field {field}"))?;
                    let slot = match tracked.iter().position(|&p| p == position) {
                        Some(slot) => slot,
                        None => {
                            tracked.push(position);
                            tracked.len() - 1
                        }
                    };
                    Source::Field(*stat, slot)
                }
                ProfileFeature::Count => Source::Count,
                ProfileFeature::Mae => Source::Mae,
                ProfileFeature::Rmse => Source::Rmse,
                ProfileFeature::Accuracy => Source::Accuracy,
                ProfileFeature::LogLoss => Source::LogLoss,
                ProfileFeature::Forecast => Source::Forecast,
                ProfileFeature::Intercept => Source::Intercept,
                ProfileFeature::Weight(name) => Source::Weight(
                    source
                        .model
                        .features()
                        .iter()
                        .position(|f| f == name)
                        .ok_or_else(|| format!("{feature}: no model feature {name}"))?,
                ),
            };
            sources.push(source_of);
        }
        Ok(ProfileSpec {
            features: classifier.features.clone(),
            sources,
            tracked,
            min_readings: classifier.min_readings,
        })
    }

    /// Numbers in a profile.
    pub fn dim(&self) -> usize {
        self.sources.len()
    }
}

/// Running statistics of one field over an interval (Welford; the slope from the running
/// covariance of time and value, with times in seconds from the interval's first reading so
/// epoch milliseconds lose no precision).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FieldStats {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    last: f64,
    t0_ms: i64,
    mean_t: f64,
    m2_t: f64,
    c_tx: f64,
}

impl Default for FieldStats {
    fn default() -> Self {
        FieldStats {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NAN,
            t0_ms: 0,
            mean_t: 0.0,
            m2_t: 0.0,
            c_tx: 0.0,
        }
    }
}

impl FieldStats {
    fn record(&mut self, time_ms: i64, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.n == 0 {
            self.t0_ms = time_ms;
        }
        self.n += 1;
        let n = self.n as f64;
        let t = time_ms.saturating_sub(self.t0_ms) as f64 / 1000.0;
        let dt = t - self.mean_t;
        self.mean_t += dt / n;
        let dx = x - self.mean;
        self.mean += dx / n;
        self.m2 += dx * (x - self.mean);
        self.c_tx += dt * (x - self.mean);
        self.m2_t += dt * (t - self.mean_t);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.last = x;
    }

    fn get(&self, stat: FieldStat) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match stat {
            FieldStat::Mean => self.mean,
            FieldStat::Std => (self.m2 / self.n as f64).max(0.0).sqrt(),
            FieldStat::Min => self.min,
            FieldStat::Max => self.max,
            FieldStat::Last => self.last,
            // One reading, or all at one time: no trend to speak of.
            FieldStat::Slope if self.m2_t > 0.0 => self.c_tx / self.m2_t,
            FieldStat::Slope => 0.0,
        })
    }
}

/// What a key has done in the current interval, for one classifier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileAccumulator {
    count: u64,
    fields: SmallVec<[FieldStats; 2]>,
}

impl ProfileAccumulator {
    /// Account for one reading (`values` in the pipeline's decoded field order; non-finite
    /// values, such as a missing optional field, are left out of that field's statistics).
    pub fn record(&mut self, spec: &ProfileSpec, time_ms: i64, values: &[f64]) {
        if self.fields.len() != spec.tracked.len() {
            self.fields
                .resize(spec.tracked.len(), FieldStats::default());
        }
        self.count += 1;
        for (stats, &position) in self.fields.iter_mut().zip(&spec.tracked) {
            if let Some(&x) = values.get(position) {
                stats.record(time_ms, x);
            }
        }
    }

    /// Readings recorded in this interval.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Write the interval's profile into `out` (cleared first) and start a new interval.
    /// Returns false, writing nothing usable, when the key had fewer than `min_readings`
    /// readings or a feature has no value yet (a field never seen in the interval, an error
    /// before anything was scored, a forecast during warm-up).
    pub fn take(&mut self, spec: &ProfileSpec, model: &KeyModel, out: &mut Vec<f64>) -> bool {
        out.clear();
        let enough = self.count >= spec.min_readings.max(1);
        let complete = enough && {
            let mut coefficients = [0.0; MAX_FEATURES];
            let mut intercept = None;
            spec.sources.iter().all(|source| {
                let value = match *source {
                    Source::Field(stat, slot) => self.fields.get(slot).and_then(|f| f.get(stat)),
                    Source::Count => Some(self.count as f64),
                    Source::Weight(index) => {
                        let b = *intercept
                            .get_or_insert_with(|| original_coefficients(model, &mut coefficients));
                        b.and(coefficients.get(index).copied())
                    }
                    Source::Intercept => *intercept
                        .get_or_insert_with(|| original_coefficients(model, &mut coefficients)),
                    other => model_value(model, other),
                };
                match value {
                    Some(v) if v.is_finite() => {
                        out.push(v);
                        true
                    }
                    _ => false,
                }
            })
        };
        *self = ProfileAccumulator {
            count: 0,
            fields: std::mem::take(&mut self.fields),
        };
        self.fields.fill(FieldStats::default());
        complete
    }
}

/// A linear model's coefficients in original units (into `out`) and intercept; `None` for
/// other kinds or before the model has learnt anything.
fn original_coefficients(model: &KeyModel, out: &mut [f64]) -> Option<f64> {
    match model {
        KeyModel::Regression { model, .. } if model.updates() > 0 => {
            Some(model.original_coefficients(out))
        }
        KeyModel::Classification { model, .. } if model.updates() > 0 => {
            Some(model.original_coefficients(out))
        }
        _ => None,
    }
}

/// A model feature's value for this key (None while it does not exist yet).
fn model_value(model: &KeyModel, source: Source) -> Option<f64> {
    match (source, model) {
        (
            Source::Mae,
            KeyModel::Forecast { metrics, .. } | KeyModel::Regression { metrics, .. },
        ) if metrics.count > 0 => Some(metrics.mae()),
        (
            Source::Rmse,
            KeyModel::Forecast { metrics, .. } | KeyModel::Regression { metrics, .. },
        ) if metrics.count > 0 => Some(metrics.rmse()),
        (Source::Accuracy, KeyModel::Classification { metrics, .. }) if metrics.count > 0 => {
            Some(metrics.accuracy())
        }
        (Source::LogLoss, KeyModel::Classification { metrics, .. }) if metrics.count > 0 => {
            Some(metrics.log_loss())
        }
        (Source::Forecast, KeyModel::Forecast { model, .. }) => {
            model.predict_one(&[]).map(|p| p.value)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn setup(features: &str, kind: &str) -> (ProfileSpec, crate::pipeline::Pipeline) {
        let model = match kind {
            "forecast" => "kind = \"forecast\"\ntarget = \"t\"",
            // Unscaled RLS: the exact least-squares fit, so the coefficient is known.
            _ => "kind = \"regression\"\ntarget = \"t\"\nfeatures = [\"u\"]\nalgorithm = \"rls\"\nscale = false\nforgetting = 1",
        };
        let text = format!(
            "[[pipelines]]\nname = \"p\"\ntopics = [\"x/+\"]\nfields = {{ t = \"/t\", u = \"/u\" }}\n[pipelines.model]\n{model}\n\n[[classifiers]]\nname = \"c\"\nsource = \"p\"\ninterval = \"1m\"\nk = 2\nfeatures = {features}\n"
        );
        let config = match parse_str(std::path::Path::new("t.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let spec = ProfileSpec::new(&config.classifiers[0], &config.pipelines[0]).unwrap();
        let pipeline = crate::pipeline::Pipeline::new(0, &config.pipelines[0]).unwrap();
        (spec, pipeline)
    }

    #[test]
    fn field_statistics_match_their_definitions() {
        let (spec, pipeline) = setup(
            r#"["mean(t)", "std(t)", "min(t)", "max(t)", "slope(t)", "last(t)", "count", "mean(u)"]"#,
            "forecast",
        );
        let state = pipeline.new_state();
        let mut acc = ProfileAccumulator::default();
        // t = 10 + 2/s · seconds, u constant; one u missing.
        let readings = [(0, 10.0, 1.0), (1000, 12.0, f64::NAN), (3000, 16.0, 1.0)];
        for (time, t, u) in readings {
            acc.record(&spec, 1_700_000_000_000 + time, &[t, u]);
        }
        let mut out = Vec::new();
        assert!(acc.take(&spec, &state.model, &mut out));
        let mean: f64 = 38.0 / 3.0;
        let variance = [10.0f64, 12.0, 16.0]
            .iter()
            .map(|t| (t - mean).powi(2))
            .sum::<f64>()
            / 3.0;
        let expected = [mean, variance.sqrt(), 10.0, 16.0, 2.0, 16.0, 3.0, 1.0];
        assert_eq!(out.len(), expected.len());
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{out:?} vs {expected:?}");
        }
        // The next interval starts empty: no readings, no profile.
        assert!(!acc.take(&spec, &state.model, &mut out));
        assert_eq!(acc.count(), 0);
    }

    #[test]
    fn min_readings_and_unavailable_model_features_skip_the_key() {
        let (mut spec, pipeline) = setup(r#"["mean(t)", "mae"]"#, "forecast");
        let mut state = pipeline.new_state();
        let mut acc = ProfileAccumulator::default();
        acc.record(&spec, 0, &[1.0, 0.0]);
        let mut out = Vec::new();
        // Nothing scored yet: no MAE, no profile.
        assert!(!acc.take(&spec, &state.model, &mut out));
        let mut scratch = crate::pipeline::Scratch::default();
        for (i, t) in [1.0, 2.0, 3.0].into_iter().enumerate() {
            pipeline.process(
                &mut state,
                "k",
                i as i64,
                &[t, 0.0],
                &mut scratch,
                &mut |_, _| {},
            );
            acc.record(&spec, i as i64, &[t, 0.0]);
        }
        assert!(acc.take(&spec, &state.model, &mut out));
        assert_eq!(out[0], 2.0);
        assert!(out[1] > 0.0);
        spec.min_readings = 2;
        acc.record(&spec, 0, &[1.0, 0.0]);
        assert!(!acc.take(&spec, &state.model, &mut out), "one reading < 2");
    }

    #[test]
    fn weights_are_in_original_units() {
        let (spec, pipeline) = setup(r#"["weight(u)", "intercept"]"#, "regression");
        let mut state = pipeline.new_state();
        let mut scratch = crate::pipeline::Scratch::default();
        let mut acc = ProfileAccumulator::default();
        // t = 3·u + 5 exactly; RLS recovers it.
        for i in 0..200 {
            let u = (i % 17) as f64 * 10.0;
            let t = 3.0 * u + 5.0;
            pipeline.process(&mut state, "k", i, &[t, u], &mut scratch, &mut |_, _| {});
            acc.record(&spec, i, &[t, u]);
        }
        let mut out = Vec::new();
        assert!(acc.take(&spec, &state.model, &mut out));
        assert!((out[0] - 3.0).abs() < 1e-3, "{out:?}");
        assert!((out[1] - 5.0).abs() < 1e-2, "{out:?}");
    }
}
