//! `edgeflow replay`: run the pipelines over recorded messages, with no network and no wall
//! clock. Input is JSON lines `{"topic": "...", "payload": <JSON value or string>}`; every
//! output message is written as a JSON line `{"topic": ..., "payload": {...}}`. Readings
//! without an event time get the line number as their time, and the line number is also the
//! "now" that relative SenML times count from (so `{"n":"x","v":1,"t":-5}` on line 7 is at
//! 7 − 5000 ms): the same input always gives the same output, byte for byte.
//!
//! `max_skew` is not applied: replay has no clock to bound event times against, and a bound
//! relative to the data itself (a key's latest event time, or the input's) cannot tell a
//! glitch from a gap in the recording, so it would drop every reading after a sensor's
//! first pause longer than `max_skew`. Recordings of any age replay as they are.
//!
//! Keys are processed in one thread, in input order, through the same [`Pipeline::step`] the
//! key actors use: replay is the reference the daemon is tested against.
//!
//! Memory is bounded like the daemon's: past `[runtime] max_resident_keys` or `max_memory`
//! the least recently used keys are passivated to a temporary store and restored on their
//! next reading, with the same outputs as if every key had stayed in memory ([`keys`]).

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use compact_str::CompactString;

use crate::codec::{DropReason, ReadingBuf};
use crate::config::Config;
use crate::pipeline::classifier::Classifier;
use crate::pipeline::profile::ProfileAccumulator;
use crate::pipeline::recommender::Recommender;
use crate::pipeline::{
    write_json_str, KeyModel, KeyState, MergedMetrics, Pipeline, PipelineError, Pipelines, Request,
    Scratch,
};

use keys::ReplayKeys;
pub use keys::{KeyCounts, KeyStoreError};

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Reading the input or writing the output failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Passivating a key to the temporary store, or restoring it, failed.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
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
    /// Per classifier, in config order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classifiers: Vec<ClassifierSummary>,
    /// Key states passivated to the temporary store (`[runtime] max_resident_keys` or
    /// `max_memory` reached; a key passivated twice counts twice). Absent when none was.
    #[serde(skip_serializing_if = "is_zero")]
    pub passivated: u64,
    /// Of those, passivated because the heap was over `max_memory`'s budget.
    #[serde(skip_serializing_if = "is_zero")]
    pub passivated_for_memory: u64,
    /// Passivated key states read back (the key's next reading).
    #[serde(skip_serializing_if = "is_zero")]
    pub restored: u64,
    /// Most keys resident at once, over all pipelines (when keys were passivated).
    #[serde(skip_serializing_if = "is_zero")]
    pub peak_resident_keys: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One classifier's part of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierSummary {
    /// Classifier name.
    pub name: String,
    /// k-means updates (event-time intervals with at least one key profiled).
    pub updates: u64,
    /// Keys with a class.
    pub keys: u64,
    /// Class messages (first classifications and changes).
    pub changes: u64,
    /// Live classes at the end, with the number of keys in each: `(class, keys)`.
    pub classes: Vec<(u32, u64)>,
}

/// A classifier in replay: the keys' profiles are gathered at the event-time boundaries of
/// its interval (multiples of the interval since the epoch), when the first reading of the
/// source pipeline at or after a boundary arrives, and once more at the end of the input.
struct ReplayClassifier {
    classifier: Classifier,
    source: usize,
    interval_ms: i64,
    /// The boundary that ends the current interval.
    next_due: Option<i64>,
    accumulators: HashMap<String, ProfileAccumulator, ahash::RandomState>,
    batch: Vec<(CompactString, Vec<f64>)>,
    updates: u64,
    changes: u64,
}

impl ReplayClassifier {
    /// Before a reading of the source pipeline `source` at `time`: close the interval if it
    /// ended.
    fn before<W: Write>(
        &mut self,
        time: i64,
        source: &Pipeline,
        keys: &ReplayKeys,
        sink: &mut Sink<'_, W>,
    ) {
        let interval = self.interval_ms;
        let boundary = |t: i64| {
            t.div_euclid(interval)
                .saturating_add(1)
                .saturating_mul(interval)
        };
        let due = *self.next_due.get_or_insert_with(|| boundary(time));
        if time >= due {
            self.collect(due, source, keys, sink);
            self.next_due = Some(boundary(time));
        }
    }

    /// Profile every key with readings in the interval ending at `at`, and update.
    fn collect<W: Write>(
        &mut self,
        at: i64,
        source: &Pipeline,
        keys: &ReplayKeys,
        sink: &mut Sink<'_, W>,
    ) {
        self.batch.clear();
        let spec = &self.classifier.spec;
        for (key, accumulator) in &mut self.accumulators {
            let mut row = Vec::with_capacity(spec.dim());
            // A key without readings in the interval is not profiled and its model is not
            // looked at: it need not be read back if it was passivated.
            let profiled = if accumulator.count() == 0 {
                accumulator.take(spec, source.prototype_model(), &mut row)
            } else {
                let Some(state) = keys.peek(source, key) else {
                    continue;
                };
                accumulator.take(spec, &state.model, &mut row)
            };
            if profiled {
                self.batch.push((CompactString::from(key.as_str()), row));
            }
        }
        let report = self
            .classifier
            .update(&mut self.batch, at, &mut |topic, payload, _, _| {
                sink.emit_plain(topic, payload)
            });
        if report.profiled > 0 {
            self.updates += 1;
        }
        self.changes += report.changed.len() as u64;
    }

    fn summary(&self) -> ClassifierSummary {
        let mut classes: BTreeMap<u32, u64> = self
            .classifier
            .model()
            .ids()
            .iter()
            .map(|&id| (id, 0))
            .collect();
        for key in self.accumulators.keys() {
            if let Some(class) = self.classifier.class_of(key) {
                *classes.entry(class.class).or_default() += 1;
            }
        }
        ClassifierSummary {
            name: self.classifier.name.clone(),
            updates: self.updates,
            keys: self.classifier.keys() as u64,
            changes: self.changes,
            classes: classes.into_iter().collect(),
        }
    }
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
    /// Model kind: `forecast`, `regression`, `classification` or `kmeans`.
    pub kind: &'static str,
    /// Decode errors by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Readings whose prediction could be scored (a target or label was present and the model
    /// had a prediction; for kmeans, readings assigned to a cluster after the warm-up).
    pub scored: u64,
    /// Prequential MAE over all keys (forecast, regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Prequential RMSE over all keys (forecast, regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Prequential accuracy over all keys (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Prequential log loss over all keys (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Prequential mean distance of the readings to the cluster they were assigned before
    /// being learnt, over all keys (kmeans; standardised units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_distance: Option<f64>,
    /// Readings flagged as anomalies.
    pub anomalies: u64,
    /// Readings a `filter` operator stopped.
    pub filtered: u64,
    /// Readings a `window` operator dropped as later than its allowed lateness.
    pub late: u64,
    /// Readings a `dedupe` operator dropped as already seen.
    pub duplicates: u64,
    /// A recommend pipeline's recommender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommender: Option<RecommenderSummary>,
}

/// A recommender's part of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommenderSummary {
    /// History changes applied (events that changed a weight, or repeated an item).
    pub events: u64,
    /// Requests answered.
    pub requests: u64,
    /// Lists published.
    pub lists: u64,
    /// Items tracked at the end.
    pub items: u64,
    /// Heap bytes of the similarities at the end.
    pub memory_bytes: u64,
}

/// An output message a chained pipeline has still to read.
#[derive(Debug, Default)]
struct Pending {
    /// The pipeline that made it.
    from: usize,
    /// Time of the reading that made it (the default time of the chained reading).
    time: i64,
    topic: String,
    payload: Vec<u8>,
}

/// Where the outputs of one input line go: the output writer, the count, and the queue of
/// messages for chained pipelines.
struct Sink<'a, W> {
    out: &'a mut W,
    outputs: &'a mut u64,
    pending: &'a mut Vec<Pending>,
    pending_len: &'a mut usize,
    result: Result<(), ReplayError>,
}

impl<W: Write> Sink<'_, W> {
    /// An output no pipeline reads (a classifier's message).
    fn emit_plain(&mut self, topic: &str, payload: &[u8]) {
        *self.outputs += 1;
        if self.result.is_ok() {
            if let Err(e) = write_output(self.out, topic, payload) {
                self.result = Err(e);
            }
        }
    }

    fn emit(&mut self, pipelines: &Pipelines, from: usize, time: i64, topic: &str, payload: &[u8]) {
        *self.outputs += 1;
        if self.result.is_ok() {
            if let Err(e) = write_output(self.out, topic, payload) {
                self.result = Err(e);
            }
        }
        if pipelines.downstream(from).is_empty() {
            return;
        }
        if *self.pending_len == self.pending.len() {
            self.pending.push(Pending::default());
        }
        if let Some(slot) = self.pending.get_mut(*self.pending_len) {
            slot.from = from;
            slot.time = time;
            topic.clone_into(&mut slot.topic);
            slot.payload.clear();
            slot.payload.extend_from_slice(payload);
            *self.pending_len += 1;
        }
    }
}

/// The supervising parts of a replay: classifiers, and the recommenders of recommend
/// pipelines (by pipeline index).
struct Supervisors {
    classifiers: Vec<ReplayClassifier>,
    recommenders: Vec<Option<Recommender>>,
}

/// Runs one decoded reading of pipeline `p` through its key's state (and the profiles of
/// the classifiers that read `p`); for a recommend pipeline, records the event in the user's
/// history and hands the change to the pipeline's recommender.
#[allow(clippy::too_many_arguments)] // the parts of the replayer one reading touches
fn process<W: Write>(
    p: &Pipeline,
    pipelines: &Pipelines,
    keys: &mut ReplayKeys,
    supervisors: &mut Supervisors,
    scratch: &mut Scratch,
    r: &ReadingBuf,
    default_time: i64,
    sink: &mut Sink<'_, W>,
) {
    let time = r.time_ms.unwrap_or(default_time);
    if p.is_recommend() {
        let change = keys.with_state(pipelines, p, &r.key, |state| {
            p.record_event(state, time, &r.values, &r.text)
        });
        if let (Some(change), Some(Some(recommender))) =
            (change, supervisors.recommenders.get_mut(p.index))
        {
            recommender.on_event(&r.key, &change, time, &mut |topic, payload, _, _| {
                sink.emit_plain(topic, payload)
            });
        }
        return;
    }
    for c in supervisors
        .classifiers
        .iter_mut()
        .filter(|c| c.source == p.index)
    {
        c.before(time, p, keys, sink);
        let spec = &c.classifier.spec;
        match c.accumulators.get_mut(r.key.as_str()) {
            Some(a) => a.record(spec, time, &r.values),
            None => c
                .accumulators
                .entry(r.key.clone())
                .or_default()
                .record(spec, time, &r.values),
        }
    }
    keys.with_state(pipelines, p, &r.key, |state| {
        p.process(
            state,
            &r.key,
            time,
            &r.values,
            scratch,
            &mut |topic, payload| {
                sink.emit(pipelines, p.index, time, topic, payload);
            },
        );
    });
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// The replay engine: key states per pipeline, in memory within the config's bounds (the
/// least recently used passivated to a temporary store beyond them).
pub struct Replayer {
    pipelines: Pipelines,
    keys: ReplayKeys,
    supervisors: Supervisors,
    reading: ReadingBuf,
    scratch: Scratch,
    /// Output messages waiting to be read by chained pipelines (`from`), oldest first; the
    /// first `pending_len` entries are live, the rest keep their buffers for reuse.
    pending: Vec<Pending>,
    pending_len: usize,
    /// Decode buffer of chained messages.
    chain_reading: ReadingBuf,
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
        let slots = pipelines.iter().map(|p| p.index + 1).max().unwrap_or(0);
        let keys = ReplayKeys::new(slots, &config.runtime, config.store.cache_bytes);
        let mut classifiers = Vec::with_capacity(config.classifiers.len());
        for cfg in &config.classifiers {
            let (Some(source), Some(source_cfg)) = (
                pipelines.by_name(&cfg.source),
                config.pipelines.iter().find(|p| p.name == cfg.source),
            ) else {
                return Err(PipelineError::Model {
                    pipeline: format!("classifier {}", cfg.name),
                    message: format!("source {:?} is not a pipeline", cfg.source),
                }
                .into());
            };
            classifiers.push(ReplayClassifier {
                classifier: Classifier::new(cfg, source_cfg)?,
                source: source.index,
                interval_ms: i64::try_from(cfg.interval.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1),
                next_due: None,
                accumulators: HashMap::default(),
                batch: Vec::new(),
                updates: 0,
                changes: 0,
            });
        }
        let mut recommenders: Vec<Option<Recommender>> = Vec::new();
        for p in pipelines.iter().filter(|p| p.is_recommend()) {
            let Some(cfg) = config.pipelines.iter().find(|c| c.name == p.name) else {
                continue;
            };
            if recommenders.len() <= p.index {
                recommenders.resize_with(p.index + 1, || None);
            }
            recommenders[p.index] = Some(Recommender::new(cfg)?);
        }
        Ok(Replayer {
            pipelines,
            keys,
            supervisors: Supervisors {
                classifiers,
                recommenders,
            },
            reading: ReadingBuf::default(),
            scratch: Scratch::default(),
            pending: Vec::new(),
            pending_len: 0,
            chain_reading: ReadingBuf::default(),
            unescaped: String::new(),
            summary_lines: 0,
            bad_lines: 0,
            outputs: 0,
        })
    }

    /// Process one input line (without its newline). `line_no` is 1-based.
    ///
    /// # Errors
    /// [`ReplayError::Io`] if writing an output fails, [`ReplayError::Keys`] if a key could
    /// not be passivated or restored.
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
        let parsed: Line<'_>;
        let (topic_in, raw) = match split_plain_line(line) {
            Some(split) => split,
            None => match serde_json::from_slice(line) {
                Ok(l) => {
                    parsed = l;
                    (&*parsed.topic, parsed.payload.get())
                }
                Err(e) => {
                    self.bad_lines += 1;
                    tracing::warn!(
                        "input line {line_no}: not a {{\"topic\", \"payload\"}} JSON object: {e}"
                    );
                    return Ok(());
                }
            },
        };
        // A JSON string payload is the message's bytes (e.g. "21.5" for `format = "number"`);
        // anything else is the JSON text itself.
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
            supervisors,
            reading,
            scratch,
            outputs,
            pending,
            pending_len,
            chain_reading,
            ..
        } = self;
        let mut sink = Sink {
            out,
            outputs,
            pending,
            pending_len,
            result: Ok(()),
        };
        // The clock of replay is the line number: for readings without an event time, and as
        // the "now" of relative SenML times.
        let now = line_no as i64;
        let request = pipelines.dispatch_request(topic_in, payload, |p, request| {
            let Some(Some(recommender)) = supervisors.recommenders.get_mut(p.index) else {
                return;
            };
            let emit = &mut |topic: &str, payload: &[u8], _, _| sink.emit_plain(topic, payload);
            match request {
                Request::Item(item) => recommender.on_item_request(&item, now, emit),
                Request::User(user) => {
                    let state = keys.peek(p, &user);
                    let history = state.as_deref().and_then(|state| match &state.model {
                        KeyModel::Recommend { history, .. } => Some(history),
                        _ => None,
                    });
                    match history {
                        Some(history) => {
                            recommender.on_user_request(&user, history.items(), now, emit)
                        }
                        None => recommender.on_user_request(&user, std::iter::empty(), now, emit),
                    }
                }
            }
        });
        if request {
            return sink.result;
        }
        pipelines.dispatch(topic_in, payload, now, None, reading, |p, r| {
            process(p, pipelines, keys, supervisors, scratch, r, now, &mut sink);
        });
        // Chained pipelines read the outputs in the order they were made (a chain's own
        // outputs are appended and read in turn).
        let mut next = 0;
        while next < *sink.pending_len {
            let Some(item) = sink.pending.get_mut(next) else {
                break;
            };
            let (from, time) = (item.from, item.time);
            let topic = std::mem::take(&mut item.topic);
            let payload = std::mem::take(&mut item.payload);
            pipelines.dispatch_chained(
                from,
                &topic,
                &payload,
                time,
                None,
                chain_reading,
                |p, r| {
                    process(p, pipelines, keys, supervisors, scratch, r, time, &mut sink);
                },
            );
            if let Some(item) = sink.pending.get_mut(next) {
                (item.topic, item.payload) = (topic, payload);
            }
            next += 1;
        }
        *sink.pending_len = 0;
        sink.result?;
        match keys.take_error() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Run over a whole input.
    ///
    /// Lines are processed in place in the reader's buffer; only a line that straddles the end
    /// of the buffer is copied (into a buffer kept for that). Line ends are `\n`; trailing
    /// `\r`s are dropped, and a last line without a newline is still a line.
    ///
    /// # Errors
    /// [`ReplayError::Io`] on read or write failure, [`ReplayError::Keys`] if a key could not
    /// be passivated or restored.
    pub fn run(
        &mut self,
        mut input: impl BufRead,
        out: &mut impl Write,
    ) -> Result<(), ReplayError> {
        let mut partial = Vec::new();
        let mut line_no = 0u64;
        loop {
            let buf = match input.fill_buf() {
                Ok([]) => break,
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', buf) {
                line_no += 1;
                if partial.is_empty() {
                    self.line(line_no, trim_line_end(&buf[start..end]), out)?;
                } else {
                    partial.extend_from_slice(&buf[start..end]);
                    self.line(line_no, trim_line_end(&partial), out)?;
                    partial.clear();
                }
                start = end + 1;
            }
            partial.extend_from_slice(&buf[start..]);
            let len = buf.len();
            input.consume(len);
        }
        if !partial.is_empty() {
            line_no += 1;
            self.line(line_no, trim_line_end(&partial), out)?;
        }
        self.finish(out)?;
        out.flush()?;
        Ok(())
    }

    /// End of input: every classifier classifies the interval in progress (so a short input
    /// still ends with classes). [`run`](Self::run) calls it; call it yourself after feeding
    /// lines one by one with [`line`](Self::line).
    ///
    /// # Errors
    /// [`ReplayError::Io`] if writing an output fails.
    pub fn finish(&mut self, out: &mut impl Write) -> Result<(), ReplayError> {
        let Replayer {
            pipelines,
            keys,
            supervisors,
            outputs,
            pending,
            pending_len,
            ..
        } = self;
        let mut sink = Sink {
            out,
            outputs,
            pending,
            pending_len,
            result: Ok(()),
        };
        for c in supervisors.classifiers.iter_mut() {
            let (Some(due), Some(source)) = (c.next_due, pipelines.get(c.source)) else {
                continue;
            };
            if c.accumulators.values().any(|a| a.count() > 0) {
                c.collect(due, source, keys, &mut sink);
            }
        }
        sink.result
    }

    /// The state of `key` in pipeline `pipeline` (for tests and tools): resident, or read
    /// back from the temporary store if it was passivated; `None` for a key never seen.
    pub fn state(&self, pipeline: usize, key: &str) -> Option<KeyState> {
        let p = self.pipelines.get(pipeline)?;
        self.keys.peek(p, key).map(std::borrow::Cow::into_owned)
    }

    /// How `[runtime] max_resident_keys` and `max_memory` were applied so far.
    pub fn key_counts(&self) -> KeyCounts {
        self.keys.counts()
    }

    /// The summary so far. Metrics are merged in key order, so the numbers are reproducible.
    pub fn summary(&self) -> ReplaySummary {
        let pipelines = self
            .pipelines
            .iter()
            .map(|p| {
                let mut summary = pipeline_summary(p, &self.keys);
                if let Some(Some(r)) = self.supervisors.recommenders.get(p.index) {
                    summary.recommender = Some(RecommenderSummary {
                        events: r.counts.events,
                        requests: r.counts.requests,
                        lists: r.counts.lists,
                        items: r.similarity().len() as u64,
                        memory_bytes: r.similarity().memory_bytes() as u64,
                    });
                }
                summary
            })
            .collect();
        let counts = self.keys.counts();
        ReplaySummary {
            lines: self.summary_lines,
            bad_lines: self.bad_lines,
            unknown_topic: self.pipelines.unrouted.get(DropReason::UnknownTopic),
            outputs: self.outputs,
            pipelines,
            classifiers: self
                .supervisors
                .classifiers
                .iter()
                .map(ReplayClassifier::summary)
                .collect(),
            passivated: counts.passivated,
            passivated_for_memory: counts.passivated_for_memory,
            restored: counts.restored,
            peak_resident_keys: if counts.passivated > 0 {
                counts.peak_resident
            } else {
                0
            },
        }
    }
}

fn pipeline_summary(p: &Pipeline, states: &ReplayKeys) -> PipelineSummary {
    let mut metrics = MergedMetrics::default();
    let keys = states.for_each_sorted(p, |s| metrics.add(s));
    let classification = p.kind() == "classification";
    let clustering = p.kind() == "kmeans";
    let regression = matches!(p.kind(), "forecast" | "regression");
    let (r, c, k) = (
        metrics.regression,
        metrics.classification,
        metrics.clustering,
    );
    PipelineSummary {
        name: p.name.clone(),
        readings: p.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
        keys,
        decode_errors: p
            .stats
            .drops
            .nonzero()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect(),
        kind: p.kind(),
        scored: if classification {
            c.count
        } else if clustering {
            k.count
        } else {
            r.count
        },
        mae: regression.then(|| r.mae()),
        rmse: regression.then(|| r.rmse()),
        accuracy: classification.then(|| c.accuracy()),
        log_loss: classification.then(|| c.log_loss()),
        mean_distance: clustering.then(|| k.mean_distance()),
        anomalies: p.stats.anomalies.load(std::sync::atomic::Ordering::Relaxed),
        filtered: p.stats.filtered.load(std::sync::atomic::Ordering::Relaxed),
        late: p.stats.late.load(std::sync::atomic::Ordering::Relaxed),
        duplicates: p
            .stats
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        recommender: None,
    }
}

/// Splits a line of the usual shape, `{"topic":"…","payload":…}` with no whitespace around the
/// members, no escapes in the topic and no other member, into topic and payload without
/// serde_json's struct machinery (which took about a sixth of the replay bench's time).
///
/// Returns `None` for every other line; the caller then parses it with serde_json, which
/// decides and reports exactly as for any line. When this returns `Some`, serde_json would
/// have accepted the line and produced the same topic and raw payload: the topic is valid
/// UTF-8 without a byte a JSON string must escape, and the payload is valid UTF-8 and exactly
/// one JSON value by serde_json's own check (the same skipping parser `RawValue` uses, so
/// there is no nesting limit in either).
fn split_plain_line(line: &[u8]) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(b"{\"topic\":\"")?;
    let (topic, rest) = rest.split_at(memchr::memchr(b'"', rest)?);
    if topic.iter().any(|&b| b < 0x20 || b == b'\\') {
        return None;
    }
    let payload = rest.strip_prefix(b"\",\"payload\":")?.strip_suffix(b"}")?;
    // `RawValue` leaves out the whitespace around a value; such lines take the slow path.
    let (first, last) = (payload.first()?, payload.last()?);
    if first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return None;
    }
    let topic = std::str::from_utf8(topic).ok()?;
    let payload = std::str::from_utf8(payload).ok()?;
    serde_json::from_str::<IgnoredAny>(payload).ok()?;
    Some((topic, payload))
}

/// A line without its trailing `\r`s (a `\r\n` file, or stray carriage returns).
fn trim_line_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    &line[..end]
}

fn write_output(out: &mut impl Write, topic: &str, payload: &[u8]) -> Result<(), ReplayError> {
    out.write_all(b"{\"topic\":")?;
    write_json_str(out, topic)?;
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
        if self.passivated > 0 {
            writeln!(
                f,
                "replay: {} key states passivated to a temporary store ({} for max_memory), {} restored, at most {} keys resident",
                self.passivated, self.passivated_for_memory, self.restored, self.peak_resident_keys
            )?;
        }
        for p in &self.pipelines {
            write!(
                f,
                "pipeline {} ({}): {} readings, {} keys, scored {}",
                p.name, p.kind, p.readings, p.keys, p.scored
            )?;
            if let (Some(mae), Some(rmse)) = (p.mae, p.rmse) {
                write!(f, ", MAE {mae:.6}, RMSE {rmse:.6}")?;
            }
            if let (Some(accuracy), Some(log_loss)) = (p.accuracy, p.log_loss) {
                write!(f, ", accuracy {accuracy:.6}, log loss {log_loss:.6}")?;
            }
            if let Some(mean_distance) = p.mean_distance {
                write!(f, ", mean distance {mean_distance:.6}")?;
            }
            if p.anomalies > 0 {
                write!(f, ", {} anomalies", p.anomalies)?;
            }
            if let Some(r) = &p.recommender {
                write!(
                    f,
                    ", {} events, {} requests, {} lists, {} items tracked ({} bytes)",
                    r.events, r.requests, r.lists, r.items, r.memory_bytes
                )?;
            }
            for (count, what) in [
                (p.filtered, "filtered"),
                (p.late, "late"),
                (p.duplicates, "duplicates"),
            ] {
                if count > 0 {
                    write!(f, ", {count} {what}")?;
                }
            }
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
        for c in &self.classifiers {
            let classes: Vec<String> = c
                .classes
                .iter()
                .map(|(class, keys)| format!("{class}:{keys}"))
                .collect();
            writeln!(
                f,
                "classifier {}: {} updates, {} keys classified, {} class messages, classes (class:keys) {}",
                c.name,
                c.updates,
                c.keys,
                c.changes,
                classes.join(" ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
