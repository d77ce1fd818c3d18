//! A device classifier (`[[classifiers]]`): streaming k-means over the profiles of the keys of
//! a source pipeline, one mini-batch per interval, and the class messages that follow.
//!
//! Pure: the daemon's `ClassifierSupervisor` actor and `replay` both drive a [`Classifier`]
//! with the profiles they gathered, and publish what it emits. A key's class is published
//! (retained) only when it changes; the centres are published (retained) after every update.

use std::num::NonZeroUsize;

use compact_str::CompactString;
use lru::LruCache;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::output::{push_f64, push_json_str, JsonObject};
use super::profile::ProfileSpec;
use super::PipelineError;
use crate::config::{ClassifierConfig, PipelineConfig};
use crate::model::{KMeansParams, StreamingKMeans};
use crate::store::{decode_state_since, encode_state, StoreError};
use crate::topic::TopicTemplate;

/// Where a classifier's messages go: `(topic, payload, qos, retain)`.
pub type Publish<'a> = dyn FnMut(&str, &[u8], u8, bool) + 'a;

/// A key's current class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeyClass {
    /// The cluster id (stable across updates and restarts).
    pub class: u32,
    /// Distance to the class centre when it was assigned (standardised units).
    pub distance: f64,
}

/// What one update did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifierUpdate {
    /// Keys in the batch.
    pub profiled: usize,
    /// Keys whose class changed (or that were classified for the first time), with their new
    /// class: what a store must persist.
    pub changed: Vec<(CompactString, KeyClass)>,
    /// Live classes after the update.
    pub classes: usize,
}

/// A classifier: its model, the classes of the keys it has seen, and its output topics.
#[derive(Debug)]
pub struct Classifier {
    /// `name` from config.
    pub name: String,
    /// The pipeline whose keys it classifies.
    pub source: String,
    /// The profile definition.
    pub spec: ProfileSpec,
    model: StreamingKMeans,
    classes: LruCache<CompactString, KeyClass, ahash::RandomState>,
    class_topic: TopicTemplate,
    centres_topic: String,
    qos: u8,
    /// The feature names as JSON strings, escaped once.
    names: Vec<Vec<u8>>,
    rows: Vec<f64>,
    topic: String,
    payload: Vec<u8>,
}

impl Classifier {
    /// Build a classifier from its config and its source pipeline's config.
    ///
    /// # Errors
    /// [`PipelineError::Model`] when the config does not fit (validation catches that first).
    pub fn new(cfg: &ClassifierConfig, source: &PipelineConfig) -> Result<Self, PipelineError> {
        let error = |message: String| PipelineError::Model {
            pipeline: format!("classifier {}", cfg.name),
            message,
        };
        let spec = ProfileSpec::new(cfg, source).map_err(error)?;
        let model =
            StreamingKMeans::new(cfg.params, spec.dim()).map_err(|e| error(e.to_string()))?;
        let class_topic = cfg.output.clone();
        let mut centres_topic = String::new();
        cfg.centres_output
            .render(&cfg.name, "", "", &mut centres_topic);
        let capacity = NonZeroUsize::new(cfg.max_keys).unwrap_or(NonZeroUsize::MIN);
        Ok(Classifier {
            name: cfg.name.clone(),
            source: cfg.source.clone(),
            spec,
            model,
            classes: LruCache::with_hasher(capacity, ahash::RandomState::new()),
            class_topic,
            centres_topic,
            qos: cfg.output_qos,
            names: cfg
                .features
                .iter()
                .map(|f| {
                    let mut name = Vec::new();
                    push_json_str(&mut name, &f.to_string());
                    name
                })
                .collect(),
            rows: Vec::new(),
            topic: String::new(),
            payload: Vec::new(),
        })
    }

    /// The k-means model.
    pub fn model(&self) -> &StreamingKMeans {
        &self.model
    }

    /// The k-means parameters.
    pub fn params(&self) -> &KMeansParams {
        self.model.params()
    }

    /// The class last published for `key`.
    pub fn class_of(&self, key: &str) -> Option<KeyClass> {
        self.classes.peek(key).copied()
    }

    /// Keys whose class is remembered.
    pub fn keys(&self) -> usize {
        self.classes.len()
    }

    /// One mini-batch: `profiles` (key, profile) of the keys profiled in an interval (sorted
    /// here by key, so the result does not depend on the order they were gathered in),
    /// `time_ms` the interval's end. Calls `emit(topic, payload, qos, retain)` for each key
    /// whose class changed and once for the centres.
    pub fn update(
        &mut self,
        profiles: &mut Vec<(CompactString, Vec<f64>)>,
        time_ms: i64,
        emit: &mut Publish<'_>,
    ) -> ClassifierUpdate {
        let dim = self.spec.dim();
        // A profile of another length would be a bug elsewhere: it must not poison the batch.
        profiles.retain(|(_, row)| row.len() == dim);
        profiles.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut report = ClassifierUpdate {
            profiled: profiles.len(),
            ..ClassifierUpdate::default()
        };
        if profiles.is_empty() {
            return report;
        }
        self.rows.clear();
        for (_, row) in profiles.iter() {
            self.rows.extend_from_slice(row);
        }
        let Ok(view) = ArrayView2::from_shape((profiles.len(), dim), &self.rows) else {
            return report;
        };
        let assignments = self.model.update(view).to_vec();
        for ((key, row), assignment) in profiles.iter().zip(assignments) {
            let Some(assignment) = assignment else {
                continue;
            };
            let class = KeyClass {
                class: assignment.id,
                distance: assignment.distance,
            };
            let previous = self.classes.put(key.clone(), class);
            if previous.map(|p| p.class) == Some(class.class) {
                continue;
            }
            self.render_class(key, class, previous, row, time_ms);
            emit(&self.topic, &self.payload, self.qos, true);
            report.changed.push((key.clone(), class));
        }
        report.classes = self.model.ids().len();
        self.render_centres(time_ms, report.profiled);
        emit(&self.centres_topic, &self.payload, self.qos, true);
        report
    }

    fn render_class(
        &mut self,
        key: &str,
        class: KeyClass,
        previous: Option<KeyClass>,
        profile: &[f64],
        time_ms: i64,
    ) {
        self.class_topic
            .render(&self.name, key, "", &mut self.topic);
        self.payload.clear();
        let mut obj = JsonObject::start(&mut self.payload);
        obj.str("classifier", &self.name)
            .str("key", key)
            .i64("time", time_ms)
            .u64("class", u64::from(class.class));
        match previous {
            Some(p) => obj.u64("previous", u64::from(p.class)),
            None => obj.f64("previous", None),
        };
        obj.f64("distance", Some(class.distance));
        obj.end();
        // `profile`: {"mean(temp)": 61.2, …} appended by hand (names are not 'static).
        self.payload.pop();
        self.payload.extend_from_slice(b",\"profile\":");
        push_named_numbers(&mut self.payload, &self.names, profile.iter().copied());
        self.payload.push(b'}');
    }

    fn render_centres(&mut self, time_ms: i64, profiled: usize) {
        self.payload.clear();
        let mut obj = JsonObject::start(&mut self.payload);
        obj.str("classifier", &self.name)
            .i64("time", time_ms)
            .u64("profiled", profiled as u64)
            .u64("keys", self.classes.len() as u64);
        obj.end();
        self.payload.pop();
        self.payload.extend_from_slice(b",\"classes\":[");
        let centres = self.model.centres();
        for (i, (id, weight)) in self
            .model
            .ids()
            .iter()
            .zip(self.model.weights())
            .enumerate()
        {
            if i > 0 {
                self.payload.push(b',');
            }
            let mut class = JsonObject::start(&mut self.payload);
            class
                .u64("class", u64::from(*id))
                .f64("weight", Some(*weight));
            class.end();
            self.payload.pop();
            self.payload.extend_from_slice(b",\"centre\":");
            push_named_numbers(
                &mut self.payload,
                &self.names,
                centres.row(i).iter().copied(),
            );
            self.payload.push(b'}');
        }
        self.payload.extend_from_slice(b"]}");
    }

    /// Encode the model for the store.
    ///
    /// # Errors
    /// [`StoreError::Encode`].
    pub fn encode_model(&self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        encode_state(&self.model, buf)
    }

    /// Encode one key's class for the store.
    ///
    /// # Errors
    /// [`StoreError::Encode`].
    pub fn encode_class(class: &KeyClass, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        encode_state(class, buf)
    }

    /// Continue from a stored model and stored classes. A model made with other parameters
    /// or another profile length is not used (the classifier starts afresh, and the stored
    /// classes with it); unreadable entries are skipped. Returns whether the model was used.
    ///
    /// # Errors
    /// Never for bad data (it is skipped and logged); the signature leaves room for a store
    /// that fails.
    pub fn restore<'a>(
        &mut self,
        model: Option<&[u8]>,
        classes: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> bool {
        let Some(bytes) = model else {
            return false;
        };
        // Unchanged since state version 4.
        let stored: StreamingKMeans = match decode_state_since(bytes, 4) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(classifier = %self.name, "stored k-means model is unreadable ({e}); starting afresh");
                return false;
            }
        };
        if stored.params() != self.model.params() || stored.dim() != self.model.dim() {
            tracing::info!(classifier = %self.name, "stored k-means model was made with other parameters or features; starting afresh");
            return false;
        }
        self.model = stored;
        for (key, bytes) in classes {
            match decode_state_since::<KeyClass>(bytes, 4) {
                Ok(class) => {
                    self.classes.put(CompactString::from(key), class);
                }
                Err(e) => {
                    tracing::warn!(classifier = %self.name, key, "stored class unreadable ({e}); skipped")
                }
            }
        }
        true
    }
}

/// `{"name": value, …}` with the profile's feature names (already JSON strings).
fn push_named_numbers(out: &mut Vec<u8>, names: &[Vec<u8>], values: impl Iterator<Item = f64>) {
    out.push(b'{');
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name);
        out.push(b':');
        push_f64(out, Some(value));
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use crate::model::SplitMix64;

    fn classifier(k: usize) -> Classifier {
        let text = format!(
            r#"
[[pipelines]]
name = "machines"
topics = ["m/+"]
fields = {{ power = "/p", vibration = "/v" }}
[pipelines.model]
kind = "forecast"
target = "power"

[[classifiers]]
name = "modes"
source = "machines"
interval = "1m"
k = {k}
features = ["mean(power)", "mean(vibration)"]
"#
        );
        let config = match parse_str(std::path::Path::new("c.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        Classifier::new(&config.classifiers[0], &config.pipelines[0]).unwrap()
    }

    /// Profiles of `keys` machines in three groups (key i is in group i % 3), with noise.
    fn profiles(keys: usize, rng: &mut SplitMix64) -> Vec<(CompactString, Vec<f64>)> {
        (0..keys)
            .map(|i| {
                let g = (i % 3) as f64;
                (
                    CompactString::from(format!("m{i:03}")),
                    vec![
                        10.0 + 40.0 * g + rng.normal(),
                        1.0 + 2.0 * g + 0.1 * rng.normal(),
                    ],
                )
            })
            .collect()
    }

    type Emitted = Vec<(String, serde_json::Value, bool)>;

    fn update(c: &mut Classifier, batch: &mut Vec<(CompactString, Vec<f64>)>, t: i64) -> Emitted {
        let mut out = Vec::new();
        c.update(batch, t, &mut |topic, payload, _, retain| {
            out.push((
                topic.to_string(),
                serde_json::from_slice(payload).unwrap(),
                retain,
            ))
        });
        out
    }

    #[test]
    fn classes_are_published_once_then_only_when_they_change() {
        let mut c = classifier(3);
        let mut rng = SplitMix64::new(1);
        let first = update(&mut c, &mut profiles(30, &mut rng), 60_000);
        // 30 class messages and one centres message, all retained.
        assert_eq!(first.len(), 31);
        assert!(first.iter().all(|(_, _, retain)| *retain));
        let class_of = |c: &Classifier, i: usize| c.class_of(&format!("m{i:03}")).unwrap().class;
        let groups = [class_of(&c, 0), class_of(&c, 1), class_of(&c, 2)];
        for i in 0..30 {
            assert_eq!(class_of(&c, i), groups[i % 3], "key {i} is with its group");
        }
        assert!(groups[0] != groups[1] && groups[1] != groups[2] && groups[0] != groups[2]);
        let (topic, message, _) = &first[0];
        assert_eq!(topic, "edgeflow/classes/modes/m000");
        assert_eq!(message["class"], groups[0]);
        assert_eq!(message["previous"], serde_json::Value::Null);
        assert!(message["profile"]["mean(power)"].as_f64().unwrap() > 5.0);
        let (topic, centres, _) = first.last().unwrap();
        assert_eq!(topic, "edgeflow/classes/modes");
        assert_eq!(centres["classes"].as_array().unwrap().len(), 3);

        // The same behaviour again: no class changes, only the centres.
        for t in 2..6 {
            let again = update(&mut c, &mut profiles(30, &mut rng), t * 60_000);
            assert_eq!(again.len(), 1, "{again:?}");
            assert_eq!(again[0].0, "edgeflow/classes/modes");
        }

        // Machine 0 starts behaving like group 2: one message, with its previous class.
        let mut batch = profiles(30, &mut rng);
        batch[0].1 = vec![90.0, 5.0];
        let changed = update(&mut c, &mut batch, 360_000);
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(changed[0].1["key"], "m000");
        assert_eq!(changed[0].1["class"], groups[2]);
        assert_eq!(changed[0].1["previous"], groups[0]);
    }

    #[test]
    fn a_restored_classifier_keeps_ids_centres_and_classes() {
        let mut c = classifier(3);
        let mut rng = SplitMix64::new(2);
        let first = update(&mut c, &mut profiles(30, &mut rng), 60_000);
        let mut model = Vec::new();
        c.encode_model(&mut model).unwrap();
        let classes: Vec<(String, Vec<u8>)> = first
            .iter()
            .filter_map(|(_, m, _)| m["key"].as_str().map(str::to_string))
            .map(|key| {
                let mut buf = Vec::new();
                Classifier::encode_class(&c.class_of(&key).unwrap(), &mut buf).unwrap();
                (key, buf)
            })
            .collect();
        let mut restored = classifier(3);
        assert!(restored.restore(
            Some(&model),
            classes.iter().map(|(k, b)| (k.as_str(), b.as_slice()))
        ));
        assert_eq!(restored.model(), c.model());
        assert_eq!(restored.keys(), 30);
        // Both continue identically, and nothing has changed class.
        let mut next = profiles(30, &mut rng);
        let a = update(&mut c, &mut next.clone(), 120_000);
        let b = update(&mut restored, &mut next, 120_000);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);

        // A model stored with other parameters is not used.
        let mut other = classifier(4);
        assert!(!other.restore(Some(&model), std::iter::empty()));
        assert_eq!(other.keys(), 0);
    }

    #[test]
    fn more_classes_than_keys_and_an_empty_interval_are_handled() {
        let mut c = classifier(8);
        let mut rng = SplitMix64::new(3);
        let out = update(&mut c, &mut profiles(3, &mut rng), 60_000);
        assert_eq!(out.len(), 4);
        assert_eq!(c.model().ids().len(), 3);
        assert!(update(&mut c, &mut Vec::new(), 120_000).is_empty());
        // A profile of the wrong length is dropped, not fed to the model.
        let mut bad = vec![(CompactString::from("x"), vec![1.0])];
        assert!(update(&mut c, &mut bad, 180_000).is_empty());
        assert_eq!(c.class_of("x"), None);
    }
}
