//! The human summary `edgeflow check` prints for a valid configuration.

use std::fmt::Write as _;

use humantime::format_duration;

use super::schema::{Config, KeySource, ModelConfig, PayloadFormat, TimeUnit};
use crate::model::{LinearAlgorithm, LogisticAlgorithm, SeasonSpec, MAX_WEIGHT};

impl Config {
    /// A multi-line, human-readable summary: the broker (or the embedded one and its port),
    /// TLS (on or off; the CA, client certificate and name checked), the store, the runtime
    /// sizing, the simulator if any, and for each pipeline its topics, format, key, time,
    /// fields, model (kind, target, features, parameters, explanations, a clustering's
    /// warm-up, a recommender's weights, budget and topics), anomaly detection and output
    /// template.
    ///
    /// Meant for people (`edgeflow check`); the layout may change, do not parse it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // `fmt::Write` for `String` cannot fail; ignoring its `Ok` keeps this readable.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "config {}", self.source.display())?;
        let mqtt = &self.mqtt;
        if mqtt.embedded {
            write!(out, "mqtt: embedded broker on 127.0.0.1:{}", mqtt.port)?;
        } else {
            write!(out, "mqtt: broker {}:{}", mqtt.host, mqtt.port)?;
        }
        write!(out, ", client id \"{}\"", mqtt.client_id)?;
        if let Some(username) = &mqtt.username {
            write!(out, ", user \"{username}\"")?;
            if mqtt.password.is_some() {
                write!(out, " with password")?;
            }
        }
        writeln!(
            out,
            ", keep-alive {}, subscribe qos {}, max packet {} bytes",
            format_duration(mqtt.keep_alive),
            mqtt.subscribe_qos,
            mqtt.max_packet_bytes
        )?;
        match &mqtt.tls {
            None => writeln!(out, "mqtt tls: off (plaintext)")?,
            Some(tls) => {
                write!(out, "mqtt tls: on, trusting ")?;
                match &tls.ca_file {
                    Some(path) => write!(out, "the CA certificates in {}", path.display())?,
                    None => write!(out, "the system's CA certificates")?,
                }
                match &tls.client_auth {
                    Some(auth) => write!(
                        out,
                        ", client certificate {} (key {})",
                        auth.cert_file.display(),
                        auth.key_file.display()
                    )?,
                    None => write!(out, ", no client certificate")?,
                }
                match &tls.server_name {
                    Some(name) => writeln!(out, ", broker certificate checked for \"{name}\"")?,
                    None => writeln!(out, ", broker certificate checked for \"{}\"", mqtt.host)?,
                }
            }
        }
        writeln!(
            out,
            "store: data dir {}, checkpoint every {}, cache {} bytes, {}",
            self.store.data_dir.display(),
            format_duration(self.store.checkpoint_interval),
            self.store.cache_bytes,
            self.store.state_ttl.map_or_else(
                || "key states never expire".to_owned(),
                |ttl| format!("key states expire after {} unwritten", format_duration(ttl))
            )
        )?;
        let runtime = &self.runtime;
        let shards = if runtime.shards == 0 {
            "one shard per core".to_owned()
        } else {
            format!("{} shards", runtime.shards)
        };
        writeln!(
            out,
            "runtime: {shards}, at most {} resident keys, idle timeout {}",
            runtime.max_resident_keys,
            format_duration(runtime.idle_timeout)
        )?;
        if self.http.enabled {
            writeln!(
                out,
                "http: /metrics, /health, /keys on {}",
                self.http.listen
            )?;
        } else {
            writeln!(out, "http: off")?;
        }
        if let Some(simulate) = &self.simulate {
            writeln!(
                out,
                "simulate: {} sensors, {} readings/s on \"{}\" (seed {})",
                simulate.sensors, simulate.rate, simulate.topic, simulate.seed
            )?;
        }
        writeln!(out, "pipelines: {}", self.pipelines.len())?;
        for pipeline in &self.pipelines {
            writeln!(out, "  pipeline \"{}\"", pipeline.name)?;
            writeln!(out, "    topics: {}", join(&pipeline.topics))?;
            let format = match &pipeline.format {
                PayloadFormat::Csv(csv) => format!(
                    "csv, columns {}, delimiter {:?}{}",
                    csv.columns.join(", "),
                    char::from(csv.delimiter),
                    if csv.header {
                        ", header line skipped"
                    } else {
                        ""
                    }
                ),
                other => other.name().to_owned(),
            };
            writeln!(
                out,
                "    format: {format} (payloads over {} bytes dropped)",
                pipeline.max_payload_bytes
            )?;
            let key = match &pipeline.key {
                KeySource::Topic => "the whole topic".to_owned(),
                KeySource::TopicLevel(level) => format!("topic level {level}"),
                KeySource::Pointer(pointer) => format!("payload {pointer}"),
                KeySource::RecordName => "each SenML record's name (one reading per record)".into(),
                KeySource::BaseName => {
                    "the SenML base name (records of one base name and time form a reading)".into()
                }
            };
            writeln!(out, "    key: {key}")?;
            match &pipeline.time {
                None if pipeline.format == PayloadFormat::Senml => {
                    writeln!(out, "    time: each SenML record's (bt + t)")?
                }
                None => writeln!(out, "    time: arrival time")?,
                Some(time) => {
                    let unit = match time.unit {
                        TimeUnit::Auto => "auto",
                        TimeUnit::Seconds => "s",
                        TimeUnit::Milliseconds => "ms",
                        TimeUnit::Rfc3339 => "rfc3339",
                    };
                    writeln!(out, "    time: payload \"{}\" ({unit})", time.pointer)?;
                }
            }
            let fields = pipeline
                .fields
                .iter()
                .map(|field| format!("{} = \"{}\"", field.name, field.pointer))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(out, "    fields: {fields}")?;
            write_model(out, &pipeline.model)?;
            match &pipeline.anomaly {
                // A state detector is the model itself; `[pipelines.anomaly]` is refused there.
                None if pipeline.model.kind() == "anomaly" => {}
                None => writeln!(out, "    anomaly: off")?,
                Some(anomaly) => writeln!(
                    out,
                    "    anomaly: flag readings with anomaly_score over {} (rarer than 1 in {:.0} in normal operation) after {} readings, {}",
                    anomaly.threshold,
                    1.0 / (1.0 - anomaly.threshold),
                    anomaly.warmup,
                    if anomaly.learn_anomalies {
                        "anomalies learnt as they are"
                    } else {
                        "anomalies learnt winsorised"
                    }
                )?,
            }
            writeln!(
                out,
                "    output: {} (qos {})",
                pipeline.output, pipeline.output_qos
            )?;
        }
        if !self.classifiers.is_empty() {
            writeln!(out, "classifiers: {}", self.classifiers.len())?;
        }
        for classifier in &self.classifiers {
            let features: Vec<String> = classifier
                .features
                .iter()
                .map(ToString::to_string)
                .collect();
            writeln!(
                out,
                "  classifier \"{}\": keys of pipeline \"{}\" every {}, k = {}, half-life {} intervals, seed {}",
                classifier.name,
                classifier.source,
                format_duration(classifier.interval),
                classifier.params.k,
                classifier.params.half_life,
                classifier.params.seed
            )?;
            writeln!(
                out,
                "    profile: {} (keys with at least {} reading(s) in the interval)",
                features.join(", "),
                classifier.min_readings
            )?;
            writeln!(
                out,
                "    output: {} when a key's class changes, centres on {} (retained, qos {}); remembers {} keys",
                classifier.output, classifier.centres_output, classifier.output_qos, classifier.max_keys
            )?;
        }
        Ok(())
    }
}

/// `    model: …` and, for models with features, `    explain: …`.
fn write_model(out: &mut String, model: &ModelConfig) -> std::fmt::Result {
    match model {
        ModelConfig::Forecast(forecast) => {
            let p = &forecast.params;
            let season = if p.seasons.is_empty() {
                "no season".to_owned()
            } else {
                let names: Vec<String> = p
                    .seasons
                    .as_slice()
                    .iter()
                    .map(|spec| match *spec {
                        SeasonSpec::Steps(steps) => format!("{steps} readings"),
                        SeasonSpec::Duration { period_ms, bins } => format!(
                            "{} in {bins} bins",
                            format_duration(std::time::Duration::from_millis(period_ms))
                        ),
                    })
                    .collect();
                format!("season {}", names.join(" and "))
            };
            let bounds = match (p.min, p.max) {
                (None, None) => String::new(),
                (Some(min), None) => format!(", min {min}"),
                (None, Some(max)) => format!(", max {max}"),
                (Some(min), Some(max)) => format!(", min {min}, max {max}"),
            };
            let every = match forecast.horizon_every {
                None => String::new(),
                Some(crate::config::HorizonEvery::Readings(n)) => {
                    format!(", horizon every {n} readings")
                }
                Some(crate::config::HorizonEvery::Interval(interval)) => {
                    format!(", horizon every {}", format_duration(interval))
                }
            };
            writeln!(
                out,
                "    model: forecast of {} (lags {}, forgetting {}, interval z {}, horizon {}, damping {}, {season}{bounds}{every})",
                forecast.target, p.lags, p.forgetting, p.interval_z, p.horizon, p.damping
            )
        }
        ModelConfig::Regression(regression) => {
            let p = &regression.params;
            let algorithm = match p.algorithm {
                LinearAlgorithm::Sgd => format!(
                    "sgd, learning rate {}, power t {}, l2 {}",
                    p.learning_rate, p.power_t, p.l2
                ),
                LinearAlgorithm::Adagrad => {
                    format!("adagrad, learning rate {}, l2 {}", p.learning_rate, p.l2)
                }
                LinearAlgorithm::Rls => "rls".to_owned(),
            };
            writeln!(
                out,
                "    model: regression of {} on {} ({algorithm}, forgetting {}, {}, interval z {})",
                regression.target,
                regression.features.join(", "),
                p.forgetting,
                scaled(p.scale),
                p.interval_z
            )?;
            write_explain(out, regression.explain)
        }
        ModelConfig::Classification(classification) => {
            let p = &classification.params;
            let algorithm = match p.algorithm {
                LogisticAlgorithm::Ftrl => format!(
                    "ftrl, alpha {}, beta {}, l1 {}, l2 {}",
                    p.alpha, p.beta, p.l1, p.l2
                ),
                LogisticAlgorithm::Adagrad => {
                    format!("adagrad, learning rate {}, l2 {}", p.learning_rate, p.l2)
                }
            };
            writeln!(
                out,
                "    model: classification of {} on {} ({algorithm}, {}, threshold {})",
                classification.target,
                classification.features.join(", "),
                scaled(p.scale),
                classification.threshold
            )?;
            writeln!(
                out,
                "    labels: positive = true, {}; negative = false, {}",
                quoted(&classification.positive),
                quoted(&classification.negative)
            )?;
            write_explain(out, classification.explain)
        }
        ModelConfig::KMeans(kmeans) => {
            let p = &kmeans.params;
            writeln!(
                out,
                "    model: kmeans of {} (k {}, half-life {} readings, seed {}, {}, {} Lloyd iterations, dying fraction {})",
                kmeans.features.join(", "),
                p.k,
                p.half_life,
                p.seed,
                scaled(p.scale),
                p.lloyd_iterations,
                p.dying_fraction
            )?;
            writeln!(
                out,
                "    warm-up: the first {} readings of each key are buffered (cluster null), then seed the clusters",
                p.warm_up_points()
            )
        }
        ModelConfig::Anomaly(anomaly) => {
            let p = &anomaly.params;
            writeln!(
                out,
                "    model: anomaly state of {} (threshold {}, warm-up {} readings, smoothing {} readings)",
                anomaly.features.join(", "),
                p.threshold,
                p.warmup,
                p.smoothing
            )
        }
        ModelConfig::Recommend(r) => {
            let p = &r.params;
            writeln!(
                out,
                "    model: recommend items (field {}) to users (the key); history {} items, top {}",
                r.item, p.history, p.top_n
            )?;
            match &r.weight {
                None => writeln!(out, "    weight: every event weighs 1")?,
                Some(field) if r.event_weights.is_empty() => writeln!(
                    out,
                    "    weight: field {field}, a number in (0, {MAX_WEIGHT}]; missing weighs 1"
                )?,
                Some(field) => writeln!(
                    out,
                    "    weight: field {field}, a number in (0, {MAX_WEIGHT}] or an event type ({}; ASCII case ignored); missing weighs 1",
                    r.event_weights
                        .iter()
                        .map(|(event, w)| format!("{event} = {w}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?,
            }
            writeln!(
                out,
                "    similarities: at most {} items with {} neighbours each (≤ {:.1} MB), saved every {}",
                p.max_items,
                p.max_neighbours,
                p.memory_bound() as f64 / 1e6,
                format_duration(r.snapshot_interval)
            )?;
            let requests = join(&r.requests);
            let lists = match (r.publish_on_event, r.requests.is_empty()) {
                (true, true) => "after each event of the user (no request topics)".to_owned(),
                (true, false) => {
                    format!("after each event of the user and on request ({requests})")
                }
                (false, _) => format!("on request only ({requests})"),
            };
            writeln!(
                out,
                "    lists: {lists}; similar items on {}",
                r.similar_output,
            )
        }
    }
}

fn write_explain(out: &mut String, explain: Option<usize>) -> std::fmt::Result {
    match explain {
        None => writeln!(out, "    explain: off"),
        Some(k) => writeln!(out, "    explain: top {k} features"),
    }
}

fn scaled(scale: bool) -> &'static str {
    if scale {
        "scaled features"
    } else {
        "unscaled features"
    }
}

/// `"yes", "1"`
fn quoted(labels: &[String]) -> String {
    labels
        .iter()
        .map(|label| format!("{label:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Filters as written, comma-separated.
fn join(filters: &[crate::topic::TopicFilter]) -> String {
    filters
        .iter()
        .map(crate::topic::TopicFilter::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
