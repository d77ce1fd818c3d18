//! `[[classifiers]]`: device classification by streaming k-means over the profiles of a
//! pipeline's keys. Each feature of the profile is checked against the source pipeline: a
//! field statistic needs one of its decoded fields, a model feature a model that has it.

use std::collections::HashMap;
use std::time::Duration;

use toml_span::value::ValueInner;
use toml_span::Span;

use super::{a, model_validation, topic_template, Problems, Section, StringList};
use crate::config::rules;
use crate::config::schema::{
    ClassifierConfig, FieldStat, PipelineConfig, ProfileFeature, DEFAULT_CLASSIFIER_CENTRES_OUTPUT,
    DEFAULT_CLASSIFIER_HALF_LIFE, DEFAULT_CLASSIFIER_MAX_KEYS, DEFAULT_CLASSIFIER_OUTPUT,
};
use crate::model::{KMeansParams, MAX_CLUSTERS, MAX_FEATURES};
use crate::topic::{Placeholder, TopicTemplate};

/// The accepted feature forms, for messages.
const FEATURES: &str = "mean(field), std(field), min(field), max(field), slope(field), last(field), count, mae, rmse, accuracy, log_loss, forecast, weight(feature), intercept";

/// Shortest classifier interval: profiles are gathered from every resident key each time.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Reads `[[classifiers]]` (absent: none). `pipelines` are the pipelines when they are all
/// valid (sources and fields are checked only then). Returns `None` if any is invalid.
pub(super) fn classifiers(
    top: &mut Section<'_>,
    pipelines: Option<&[PipelineConfig]>,
    problems: &mut Problems<'_>,
) -> Option<Vec<ClassifierConfig>> {
    let Some((_, mut value)) = top.take("classifiers") else {
        return Some(Vec::new());
    };
    let span = value.span;
    let items = match value.take() {
        ValueInner::Array(items) => items,
        other => {
            problems.at(
                span,
                format!(
                    "classifiers must be an array of tables: write [[classifiers]] (got {})",
                    a(other.type_str())
                ),
            );
            return None;
        }
    };
    let mut list = Vec::with_capacity(items.len());
    let mut valid = true;
    let mut names: HashMap<String, Span> = HashMap::new();
    for (index, mut item) in items.into_iter().enumerate() {
        let mut section = match Section::open(&mut item, "") {
            Ok(section) => section,
            Err(found) => {
                problems.at(
                    item.span,
                    format!("classifiers[{index}] must be a table (got {})", a(found)),
                );
                valid = false;
                continue;
            }
        };
        let name = section.require::<String>("name");
        let component = match &name {
            Some(name) => format!("classifier \"{}\"", name.value),
            None => format!("classifier #{}", index + 1),
        };
        if let Some(name) = &name {
            if !rules::is_valid_name(&name.value) {
                let message = format!(
                    "name must match [A-Za-z0-9_-]+ (it is used in topics and state keys) (got \"{}\")",
                    name.value
                );
                section.error(name.span, message);
            } else if let Some(first) = names.get(&name.value) {
                let (line, _) = problems.lines.locate(first.start);
                let message = format!(
                    "name is already used by the classifier at line {line} (classifier names must be unique)"
                );
                section.error(name.span, message);
            } else {
                names.insert(name.value.clone(), name.span);
            }
        }
        let parsed = classifier(&mut section, name.map(|n| n.value), pipelines);
        let before = problems.list.len();
        section.finish(&component, problems);
        match parsed {
            Some(c) if problems.list.len() == before => list.push(c),
            _ => valid = false,
        }
    }
    valid.then_some(list)
}

fn classifier(
    s: &mut Section<'_>,
    name: Option<String>,
    pipelines: Option<&[PipelineConfig]>,
) -> Option<ClassifierConfig> {
    let source_name = s.require::<String>("source");
    let source = match (&source_name, pipelines) {
        (Some(wanted), Some(pipelines)) => {
            let found = pipelines.iter().find(|p| p.name == wanted.value);
            if found.is_none() {
                let known: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
                let message = format!(
                    "source \"{}\" is not a pipeline of this file (pipelines: {})",
                    wanted.value,
                    known.join(", ")
                );
                s.error(wanted.span, message);
            }
            found
        }
        _ => None,
    };
    let interval = s.duration("interval", MIN_INTERVAL);
    if interval.is_none() && !s.helper.contains("interval") {
        s.error(
            s.span,
            "missing required key \"interval\" (how often keys are profiled and classified, e.g. \"1m\")"
                .into(),
        );
    }
    let features = features(s, source);
    let k = s.int_as::<usize>("k", 1..=MAX_CLUSTERS as i64);
    if k.is_none() && !s.helper.contains("k") {
        s.error(
            s.span,
            format!("missing required key \"k\" (the number of classes, 1 to {MAX_CLUSTERS})"),
        );
    }
    let half_life = s
        .range(&crate::model::kmeans::ranges::HALF_LIFE_INTERVALS)
        .map(|v| v.value);
    let seed = s.int_as::<u64>("seed", 0..=i64::MAX);
    let min_readings = s.int_as::<u64>("min_readings", 1..=i64::MAX).unwrap_or(1);
    let max_keys = s
        .int_as::<usize>("max_keys", 1..=i64::MAX)
        .unwrap_or(DEFAULT_CLASSIFIER_MAX_KEYS);
    let output = topic_template(
        s,
        "output",
        "output",
        &[Placeholder::Classifier, Placeholder::Key],
    );
    let centres_output = topic_template(
        s,
        "centres_output",
        "centres_output",
        &[Placeholder::Classifier],
    );
    let output_qos = s.int_as::<u8>("output_qos", 0..=1).unwrap_or(1);
    let k = k?;
    let mut params = KMeansParams::streaming_default(k);
    params.half_life = half_life.unwrap_or(DEFAULT_CLASSIFIER_HALF_LIFE);
    params.seed = seed.unwrap_or(params.seed);
    let features = features?;
    model_validation(s, params.validate());
    Some(ClassifierConfig {
        name: name?,
        source: source_name?.value,
        interval: interval?.value,
        features,
        params,
        min_readings,
        max_keys,
        output: output.map_or_else(
            || TopicTemplate::builtin(DEFAULT_CLASSIFIER_OUTPUT),
            |o| o.value,
        ),
        centres_output: centres_output.map_or_else(
            || TopicTemplate::builtin(DEFAULT_CLASSIFIER_CENTRES_OUTPUT),
            |o| o.value,
        ),
        output_qos,
    })
}

/// Parses one feature as written: `count`, `mae`, `mean(temp)`, `weight(outdoor)`, …
fn parse_feature(text: &str) -> Result<ProfileFeature, String> {
    let text = text.trim();
    let (head, argument) = match text.split_once('(') {
        Some((head, rest)) => match rest.strip_suffix(')') {
            Some(argument) if !argument.trim().is_empty() => (head.trim(), Some(argument.trim())),
            _ => {
                return Err(format!(
                    "\"{text}\" is not a feature (accepted: {FEATURES})"
                ))
            }
        },
        None => (text, None),
    };
    let stat = FieldStat::ALL
        .iter()
        .find(|(_, name)| *name == head)
        .map(|(stat, _)| *stat);
    match (head, argument, stat) {
        (_, Some(field), Some(stat)) => Ok(ProfileFeature::Field {
            stat,
            field: field.to_string(),
        }),
        ("weight", Some(feature), None) => Ok(ProfileFeature::Weight(feature.to_string())),
        ("count", None, _) => Ok(ProfileFeature::Count),
        ("mae", None, _) => Ok(ProfileFeature::Mae),
        ("rmse", None, _) => Ok(ProfileFeature::Rmse),
        ("accuracy", None, _) => Ok(ProfileFeature::Accuracy),
        ("log_loss", None, _) => Ok(ProfileFeature::LogLoss),
        ("forecast", None, _) => Ok(ProfileFeature::Forecast),
        ("intercept", None, _) => Ok(ProfileFeature::Intercept),
        (_, None, Some(_)) => Err(format!(
            "\"{text}\" needs a field: {head}(field), e.g. {head}(temp)"
        )),
        _ => Err(format!(
            "\"{text}\" is not a feature (accepted: {FEATURES})"
        )),
    }
}

/// Why `feature` cannot be computed for keys of `source` (None: it can).
fn feature_problem(feature: &ProfileFeature, source: &PipelineConfig) -> Option<String> {
    let kind = source.model.kind();
    let needs = |kinds: &[&str], what: &str| {
        (!kinds.contains(&kind)).then(|| {
            format!(
                "{what} needs a {} model, and pipeline \"{}\" is {kind}",
                kinds.join(" or "),
                source.name
            )
        })
    };
    match feature {
        ProfileFeature::Field { field, .. } => {
            (!source.fields.iter().any(|f| f.name == *field)).then(|| {
                let names: Vec<&str> = source.fields.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "\"{feature}\": {field} is not a field of pipeline \"{}\" (fields: {})",
                    source.name,
                    names.join(", ")
                )
            })
        }
        ProfileFeature::Count => None,
        ProfileFeature::Mae | ProfileFeature::Rmse => {
            needs(&["forecast", "regression"], &format!("\"{feature}\""))
        }
        ProfileFeature::Forecast => needs(&["forecast"], "\"forecast\""),
        ProfileFeature::Accuracy | ProfileFeature::LogLoss => {
            needs(&["classification"], &format!("\"{feature}\""))
        }
        ProfileFeature::Intercept => needs(&["regression", "classification"], "\"intercept\""),
        ProfileFeature::Weight(name) => {
            needs(&["regression", "classification"], &format!("\"{feature}\"")).or_else(|| {
                (!source.model.features().iter().any(|f| f == name)).then(|| {
                    format!(
                        "\"{feature}\": {name} is not a feature of pipeline \"{}\"'s model (features: {})",
                        source.name,
                        source.model.features().join(", ")
                    )
                })
            })
        }
    }
}

/// `features`: required, 1..=64 distinct, each computable for the source's keys.
fn features(s: &mut Section<'_>, source: Option<&PipelineConfig>) -> Option<Vec<ProfileFeature>> {
    let list = s.require::<StringList>("features")?;
    let entries = list.value.0;
    if entries.is_empty() || entries.len() > MAX_FEATURES {
        let message = format!(
            "features must list 1 to {MAX_FEATURES} profile features (got {}), e.g. [\"mean(temp)\", \"std(temp)\", \"slope(temp)\"]",
            entries.len()
        );
        s.error(list.span, message);
        return None;
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut valid = true;
    for (index, entry) in entries.iter().enumerate() {
        let problem = match parse_feature(&entry.value) {
            Ok(feature) => {
                if let Some(first) = out.iter().position(|f| *f == feature) {
                    Some(format!(
                        "features[{index}] \"{feature}\" is already listed as features[{first}]"
                    ))
                } else if let Some(problem) = source.and_then(|src| feature_problem(&feature, src))
                {
                    Some(format!("features[{index}] {problem}"))
                } else {
                    out.push(feature);
                    None
                }
            }
            Err(problem) => Some(format!("features[{index}] {problem}")),
        };
        if let Some(problem) = problem {
            s.error(entry.span, problem);
            valid = false;
        }
    }
    valid.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_parse_as_written() {
        assert_eq!(
            parse_feature("mean(temp)"),
            Ok(ProfileFeature::Field {
                stat: FieldStat::Mean,
                field: "temp".into()
            })
        );
        assert_eq!(
            parse_feature(" slope( t ) "),
            Ok(ProfileFeature::Field {
                stat: FieldStat::Slope,
                field: "t".into()
            })
        );
        assert_eq!(parse_feature("count"), Ok(ProfileFeature::Count));
        assert_eq!(
            parse_feature("weight(outdoor)"),
            Ok(ProfileFeature::Weight("outdoor".into()))
        );
        for bad in [
            "mean",
            "mean()",
            "median(t)",
            "count(t)",
            "weight",
            "mae(x)",
        ] {
            assert!(parse_feature(bad).is_err(), "{bad}");
        }
        for feature in [
            "mean(t)",
            "std(t)",
            "last(t)",
            "count",
            "log_loss",
            "weight(x)",
        ] {
            assert_eq!(
                parse_feature(feature).map(|f| f.to_string()).as_deref(),
                Ok(feature)
            );
        }
    }
}
