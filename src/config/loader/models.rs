//! `[pipelines.model]` by kind (forecast, regression, classification, kmeans, anomaly; recommend
//! is in `recommend`), and `[pipelines.anomaly]`.

use super::*;
use crate::model::anomaly::ranges as anomaly_ranges;
use crate::model::forecast::ranges as forecast_ranges;
use crate::model::kmeans::ranges as kmeans_ranges;
use crate::model::linear::ranges as linear_ranges;
use crate::model::logistic::ranges as logistic_ranges;

/// `"forecast" | "regression" | "classification" | "kmeans" | "recommend"`, for messages.
pub(super) fn accepted_kinds() -> String {
    Kind::ALL
        .iter()
        .map(|kind| format!("\"{}\"", kind.name()))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A payload format whose readings have exactly one value, so only forecasts (and a
/// clustering of that one value) fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OneValue {
    /// `format = "number"`.
    Number,
    /// `format = "senml"` with `key = "name"`.
    SenmlRecord,
}

/// The model kinds `[pipelines.model] kind` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Forecast,
    Regression,
    Classification,
    KMeans,
    Recommend,
    Anomaly,
}

impl Kind {
    /// Every kind, in the order messages list them.
    pub(super) const ALL: [Kind; 6] = [
        Kind::Forecast,
        Kind::Regression,
        Kind::Classification,
        Kind::KMeans,
        Kind::Recommend,
        Kind::Anomaly,
    ];

    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn parameters(self) -> &'static [&'static str] {
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
pub(super) fn model(
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
pub(super) fn reject_other_kinds(m: &mut Section<'_>, kind: Kind) {
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
pub(super) fn target(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
) -> Option<Spanned<String>> {
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
pub(super) fn field_names(fields: &[FieldConfig]) -> String {
    fields
        .iter()
        .map(|field| field.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `features`: required, 1..=64 distinct fields of the pipeline, none the target. `fields`
/// and `target` are `None` when they are invalid or the checks do not apply; `purpose` says
/// what the features are for in messages ("to predict from", "to cluster").
pub(super) fn features(
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
pub(super) fn explain(m: &mut Section<'_>) -> Option<usize> {
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
pub(super) fn model_validation(m: &mut Section<'_>, result: Result<(), ModelError>) {
    if let Err(error) = result {
        let span = m.span;
        m.error(span, format!("model parameters are rejected: {error}"));
    }
}

/// `kind = "forecast"`
pub(super) fn forecast(
    m: &mut Section<'_>,
    fields: Option<&[FieldConfig]>,
) -> Option<ForecastConfig> {
    let d = ForecastParams::default();
    let target = target(m, fields);
    let lags = m.int_range(&forecast_ranges::LAGS).unwrap_or(d.lags);
    let forgetting = m.range_or(&forecast_ranges::FORGETTING, d.forgetting);
    let interval_z = m.range_or(&forecast_ranges::INTERVAL_Z, d.interval_z);
    let horizon = m.int_range(&forecast_ranges::HORIZON).unwrap_or(d.horizon);
    let damping = m.range_or(&forecast_ranges::DAMPING, d.damping);
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
pub(super) fn horizon_every(m: &mut Section<'_>, horizon: usize) -> Option<HorizonEvery> {
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
pub(super) fn season(m: &mut Section<'_>) -> Seasons {
    // A mistyped `season` must not also cause "season_bins without season".
    let season_given = m.helper.contains("season");
    let season = m.get::<SeasonValues>("season");
    let range = forecast_ranges::SEASON_BINS;
    let bins = m.int(range.key, range.min..=range.max);
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
pub(super) fn season_spec(
    m: &mut Section<'_>,
    value: &Spanned<SeasonValue>,
    bins: usize,
) -> Option<SeasonSpec> {
    match value.value {
        SeasonValue::Steps(steps) => match usize::try_from(steps) {
            Ok(steps) if forecast_ranges::SEASON_STEPS.check(steps).is_ok() => {
                Some(SeasonSpec::Steps(steps))
            }
            _ => {
                let range = forecast_ranges::SEASON_STEPS;
                let message = format!(
                    "model.season must be {} readings, or a duration such as \"1d\" (got {steps})",
                    crate::model::param::int_words(range.min, range.max)
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
pub(super) fn season_text(values: &[Spanned<SeasonValue>]) -> String {
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
pub(super) fn anomaly_model(
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
    let threshold = m.range_or(&anomaly_ranges::THRESHOLD, d.threshold);
    let warmup = m.int_as("warmup", 0..=i64::MAX).unwrap_or(d.warmup);
    let smoothing = m
        .int_range(&anomaly_ranges::SMOOTHING)
        .unwrap_or(d.smoothing);
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
pub(super) fn regression(
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
    let learning_rate = m.range(&linear_ranges::LEARNING_RATE);
    let power_t = m.range_or(&linear_ranges::POWER_T, d.power_t);
    let l2 = m.range_or(&linear_ranges::L2, d.l2);
    let forgetting = m.range_or(&linear_ranges::FORGETTING, d.forgetting);
    let scale = m.bool("scale").unwrap_or(d.scale);
    let interval_z = m.range_or(&linear_ranges::INTERVAL_Z, d.interval_z);
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
pub(super) fn classification(
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
    let alpha = m.range_or(&logistic_ranges::ALPHA, p.alpha);
    let beta = m.range_or(&logistic_ranges::BETA, p.beta);
    let l1 = m.range_or(&logistic_ranges::L1, p.l1);
    let l2 = m.range_or(&logistic_ranges::L2, p.l2);
    let learning_rate = m
        .range(&logistic_ranges::LEARNING_RATE)
        .map(|v| v.value)
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
pub(super) fn kmeans(m: &mut Section<'_>, fields: Option<&[FieldConfig]>) -> Option<KMeansConfig> {
    // Taken from the table directly, so that it is not listed among the accepted keys.
    if let Some((written, _)) = m.helper.table.remove_entry("target") {
        let message = "model.target does not apply to kind \"kmeans\": a clustering has no target, it groups readings by their features (remove target, and list the fields to cluster in features)";
        m.error(written.span, message.into());
    }
    let features = features(m, fields, None, "to cluster");
    let k_given = m.helper.contains("k");
    let k = m.int_range::<usize>(&kmeans_ranges::K);
    if !k_given {
        let span = m.span;
        let message = format!(
            "missing required key \"model.k\" (the number of clusters, between 1 and {MAX_CLUSTERS}, e.g. k = 4)"
        );
        m.error(span, message);
    }
    let d = KMeansParams::online_default(k.unwrap_or(1));
    let half_life = m.range_or(&kmeans_ranges::HALF_LIFE_READINGS, d.half_life);
    let seed = m.int_as("seed", 0..=i64::MAX).unwrap_or(d.seed);
    let scale = m.bool("scale").unwrap_or(d.scale);
    let lloyd_iterations = m
        .int_range(&kmeans_ranges::LLOYD_ITERATIONS)
        .unwrap_or(d.lloyd_iterations);
    let dying_fraction = m.range_or(&kmeans_ranges::DYING_FRACTION, d.dying_fraction);
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
pub(super) fn labels(m: &mut Section<'_>, key: &'static str) -> Option<Vec<Spanned<String>>> {
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

/// `[pipelines.anomaly]`; `kind` is the model's kind when it is known, `season` the longest
/// season of a forecast in readings (the default warm-up is at least two of it).
pub(super) fn anomaly(
    a: &mut Section<'_>,
    kind: Option<Kind>,
    season: Option<u64>,
) -> AnomalyParams {
    let d = AnomalyParams::default();
    let threshold_given = a.number_s("threshold", |t| t.is_finite(), "a number");
    let threshold = match threshold_given {
        Some(t) if anomaly_ranges::THRESHOLD.accepts(t.value) => t.value,
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
pub(super) enum ExplainValue {
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
pub(super) enum SeasonValue {
    Steps(i64),
    Period(Duration),
}

impl SeasonValue {
    pub(super) fn parse(inner: ValueInner<'_>, span: Span) -> Result<Self, toml_span::Error> {
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
pub(super) struct SeasonValues(pub(super) Vec<Spanned<SeasonValue>>);

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
