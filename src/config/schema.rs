//! The typed configuration: what `config::load` produces after every check has passed.
//!
//! Defaults live in one place: the `Default` impls (and `default_*` functions) in this file.
//! The TOML reference in the README mirrors these types field by field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::ops::expr::CompiledExpr;
pub use crate::ops::window::WindowSpec;
pub use crate::tls::{ClientAuthConfig, TlsConfig};

pub use crate::topic::{TopicFilter, TopicTemplate};

use crate::model::{
    AnomalyParams, ForecastParams, KMeansParams, LinearParams, LogisticParams, RecommendParams,
    StateParams,
};

/// A whole configuration file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (used in messages).
    pub source: PathBuf,
    /// `[mqtt]`: the broker connection (or the embedded broker).
    pub mqtt: MqttConfig,
    /// `[store]`: where key state is persisted and how often.
    pub store: StoreConfig,
    /// `[runtime]`: actor system sizing and the periodic stats line.
    pub runtime: RuntimeConfig,
    /// `[http]`: the metrics, health and key-inspection listener.
    pub http: HttpConfig,
    /// `[simulate]`: an optional built-in synthetic sensor fleet (demo and load generator).
    pub simulate: Option<SimulateConfig>,
    /// `[[pipelines]]`: at least one.
    pub pipelines: Vec<PipelineConfig>,
    /// `[[classifiers]]`: device classification over key profiles (none by default).
    pub classifiers: Vec<ClassifierConfig>,
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Start an in-process rumqttd broker on `127.0.0.1:port` and connect to it.
    pub embedded: bool,
    /// Broker host name or address (ignored when `embedded`; the embedded broker is on 127.0.0.1).
    pub host: String,
    /// Broker TCP port (also the embedded broker's listen port). The loader's default is 1883,
    /// or [`DEFAULT_TLS_PORT`] with `[mqtt.tls]`.
    pub port: u16,
    /// MQTT client id of the daemon. The loader's default is [`default_client_id`] of the
    /// configuration file (unique per host and file, stable across restarts).
    pub client_id: String,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password (requires `username`).
    pub password: Option<String>,
    /// MQTT keep-alive interval (≥ 5 s).
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted or sent, in bytes (rumqttc's default is 10 KiB).
    pub max_packet_bytes: usize,
    /// QoS of the subscriptions (0 or 1).
    pub subscribe_qos: u8,
    /// `clean_session`: `Some(true)`/`Some(false)` as written, `None` for `"auto"` (the
    /// default): see [`MqttConfig::persistent_session`].
    pub clean_session: Option<bool>,
    /// First delay after a connection error; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Cap of the reconnect back-off.
    pub reconnect_max: Duration,
    /// Capacity of the bounded queue from the MQTT event loop to the actor system.
    pub ingest_queue: usize,
    /// Capacity of the bounded queue of outgoing messages.
    pub publish_queue: usize,
    /// `[mqtt.tls]`: TLS to the broker; `None`: plaintext TCP. Never used with `embedded`
    /// (the embedded broker listens in plaintext on 127.0.0.1; the loader rejects the pair).
    pub tls: Option<TlsConfig>,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Directory of the sled database (created if missing).
    pub data_dir: PathBuf,
    /// How often dirty key states are written and flushed.
    pub checkpoint_interval: Duration,
    /// sled page cache size in bytes (kept small on gateways).
    pub cache_bytes: u64,
    /// A key state not written for this long (the daemon's running time) is removed from the
    /// store; `None`: never.
    pub state_ttl: Option<Duration>,
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Number of shards (actix Arbiters); 0 means one per CPU core.
    pub shards: usize,
    /// Resident key actors allowed in all shards together; past it the least recently used
    /// keys are passivated (state written back, actor stopped).
    pub max_resident_keys: usize,
    /// Memory the daemon may use, in bytes: past two thirds of it on the heap, the shards passivate
    /// their least recently used keys (see [`crate::memory::Budget`]).
    pub max_memory: u64,
    /// A key that has seen no reading for this long is passivated.
    pub idle_timeout: Duration,
    /// Readings each shard's input queue holds (in batches of up to 64); a full queue makes
    /// the ingest task wait.
    pub mailbox_capacity: usize,
    /// Interval of the periodic stats log line (keys, readings/s, MAE).
    pub stats_interval: Duration,
    /// Graceful shutdown gives up waiting after this long, checkpoints and exits anyway.
    pub shutdown_deadline: Duration,
}

/// `[http]`: `/metrics` (Prometheus text format), `/health` and `/keys/{pipeline}/{key}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Serve the endpoints at all.
    pub enabled: bool,
    /// Address to listen on; loopback by default, since the endpoints have no authentication
    /// (port 0 picks a free port, which the daemon logs).
    pub listen: SocketAddr,
}

/// `[simulate]`: a synthetic fleet published to the broker the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateConfig {
    /// Number of sensors.
    pub sensors: usize,
    /// Total readings per second over the whole fleet.
    pub rate: f64,
    /// Topic template; `{sensor}` is replaced by the sensor id (`s0001`…).
    pub topic: String,
    /// Random seed.
    pub seed: u64,
    /// Probability that a reading is a spike.
    pub spike_probability: f64,
}

/// One `[[classifiers]]` entry: every `interval`, a profile vector of each key of the
/// `source` pipeline that had readings, standardised and clustered by streaming k-means; a
/// key's class is published (retained) when it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierConfig {
    /// Unique among classifiers (`[A-Za-z0-9_-]+`); used in topics and state keys.
    pub name: String,
    /// The pipeline whose keys are classified.
    pub source: String,
    /// How often profiles are gathered and the model updated (one mini-batch).
    pub interval: Duration,
    /// The profile: one number per feature, in this order.
    pub features: Vec<ProfileFeature>,
    /// k-means parameters (`k`, `half_life` in intervals, `seed`), checked by the loader.
    pub params: KMeansParams,
    /// Readings a key needs within an interval to be profiled in it.
    pub min_readings: u64,
    /// Keys whose class is remembered (least recently profiled are forgotten first; a
    /// forgotten key's class is published again when it is next classified).
    pub max_keys: usize,
    /// Topic template of the class messages: `{classifier}`, `{key}`.
    pub output: TopicTemplate,
    /// Topic of the centres message published after every update: `{classifier}`.
    pub centres_output: TopicTemplate,
    /// QoS of the class and centres messages (they are retained).
    pub output_qos: u8,
}

/// One number of a key's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileFeature {
    /// A statistic of a decoded field of the source pipeline over the interval.
    Field {
        /// Which statistic.
        stat: FieldStat,
        /// The field (one of the source pipeline's `fields`).
        field: String,
    },
    /// Readings in the interval.
    Count,
    /// The key's prequential mean absolute error since it started (forecast, regression).
    Mae,
    /// The key's prequential root mean square error (forecast, regression).
    Rmse,
    /// The key's prequential accuracy (classification).
    Accuracy,
    /// The key's prequential mean log loss (classification).
    LogLoss,
    /// The key's current one-step forecast (forecast).
    Forecast,
    /// A coefficient of the key's linear model, in the feature's original units (regression,
    /// classification).
    Weight(String),
    /// The intercept of the key's linear model (regression, classification).
    Intercept,
}

/// A statistic of a field over a classifier's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldStat {
    /// Arithmetic mean.
    Mean,
    /// Population standard deviation.
    Std,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Least-squares slope against event time, per second.
    Slope,
    /// The last value (by arrival).
    Last,
}

impl FieldStat {
    /// Every statistic, as written in config.
    pub const ALL: [(FieldStat, &'static str); 6] = [
        (FieldStat::Mean, "mean"),
        (FieldStat::Std, "std"),
        (FieldStat::Min, "min"),
        (FieldStat::Max, "max"),
        (FieldStat::Slope, "slope"),
        (FieldStat::Last, "last"),
    ];

    /// The name as written in config.
    pub fn name(self) -> &'static str {
        FieldStat::ALL
            .iter()
            .find(|(stat, _)| *stat == self)
            .map_or("?", |(_, name)| name)
    }
}

impl std::fmt::Display for ProfileFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileFeature::Field { stat, field } => write!(f, "{}({field})", stat.name()),
            ProfileFeature::Count => f.write_str("count"),
            ProfileFeature::Mae => f.write_str("mae"),
            ProfileFeature::Rmse => f.write_str("rmse"),
            ProfileFeature::Accuracy => f.write_str("accuracy"),
            ProfileFeature::LogLoss => f.write_str("log_loss"),
            ProfileFeature::Forecast => f.write_str("forecast"),
            ProfileFeature::Weight(feature) => write!(f, "weight({feature})"),
            ProfileFeature::Intercept => f.write_str("intercept"),
        }
    }
}

/// Default topic template of class messages.
pub const DEFAULT_CLASSIFIER_OUTPUT: &str = "edgeflow/classes/{classifier}/{key}";
/// Default topic of a classifier's centres message.
pub const DEFAULT_CLASSIFIER_CENTRES_OUTPUT: &str = "edgeflow/classes/{classifier}";
/// Default k-means half-life of a classifier, in intervals.
pub const DEFAULT_CLASSIFIER_HALF_LIFE: f64 = 10.0;
/// Default number of keys whose class a classifier remembers.
pub const DEFAULT_CLASSIFIER_MAX_KEYS: usize = 100_000;

/// One `[[pipelines]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Unique name, used in output topics, state keys and metrics.
    pub name: String,
    /// MQTT topic filters (with `+`/`#` wildcards) this pipeline reads.
    pub topics: Vec<TopicFilter>,
    /// How payloads are decoded.
    pub format: PayloadFormat,
    /// Where the key (sensor id) comes from.
    pub key: KeySource,
    /// Where the event time comes from; `None`: arrival time (run) or line number (replay).
    /// Always `None` for `format = "senml"`, whose records carry their own time.
    pub time: Option<TimeSource>,
    /// A reading whose event time is more than this ahead of the daemon's clock is dropped
    /// (`time_skew`), so that one reading far in the future (a device clock off, a year-9999
    /// time) cannot move its key's window watermark and model clock there for good. Times
    /// in the past are not bounded. Not applied in `replay`, which has no clock.
    pub max_skew: Duration,
    /// The fields read from each payload, in this order.
    pub fields: Vec<FieldConfig>,
    /// `bounds = { field = { min = a, max = b } }`: the plausible range of some of `fields`; a
    /// decoded reading with a value outside is dropped (reason `implausible`). In file order.
    pub bounds: Vec<FieldBounds>,
    /// `from = "pipeline"`: this pipeline reads the output messages of another pipeline of
    /// the same daemon, in-process (no broker round trip), instead of MQTT `topics` (which is
    /// then empty).
    pub from: Option<String>,
    /// `[[pipelines.operators]]`, applied per key in this order between decoding and the
    /// model.
    pub operators: Vec<OperatorConfig>,
    /// The model each key runs.
    pub model: ModelConfig,
    /// `[pipelines.anomaly]`: flag readings whose residual is unusually large; only with a
    /// `forecast` or `regression` model (a classifier or a clustering has no residual).
    /// `None`: off.
    pub anomaly: Option<AnomalyParams>,
    /// Output topic template with `{pipeline}`, `{key}`, `{field}` (`{field}` is
    /// [`ModelConfig::output_field`]).
    pub output: TopicTemplate,
    /// QoS of output messages (0 or 1).
    pub output_qos: u8,
    /// Payloads larger than this are dropped (reason `too_large`).
    pub max_payload_bytes: usize,
}

/// One `[[pipelines.operators]]` entry, chosen by `op`.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorConfig {
    /// `op = "filter"`: keep a reading only when `expr` is true.
    Filter {
        /// A boolean expression over the fields, `time` and `key` (compiled at load).
        expr: CompiledExpr,
    },
    /// `op = "map"`: convert, derive, rename and drop fields.
    Map(MapConfig),
    /// `op = "window"`: per-key event-time windows whose aggregates become the reading.
    Window(WindowConfig),
    /// `op = "dedupe"`: drop a reading whose event time the key has already seen.
    Dedupe {
        /// How many recent event times per key are remembered.
        capacity: usize,
    },
}

impl OperatorConfig {
    /// The `op` as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorConfig::Filter { .. } => "filter",
            OperatorConfig::Map(_) => "map",
            OperatorConfig::Window(_) => "window",
            OperatorConfig::Dedupe { .. } => "dedupe",
        }
    }
}

/// `op = "map"`. Applied in this order: `convert` (in place), `derive` (every expression sees
/// the fields after `convert`, not each other's results), `rename`, `drop`. The output fields
/// are the input fields in their order (renamed, without the dropped ones; a derived field
/// with an existing name replaces it in place) followed by the new derived fields in the order
/// written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapConfig {
    /// `convert = { field = { scale = a, offset = b } }`: `field = field·a + b`.
    pub convert: Vec<(String, f64, f64)>,
    /// `derive = { name = "expression" }`, in the order written (compiled at load, over the
    /// fields after `convert`).
    pub derive: Vec<(String, CompiledExpr)>,
    /// `rename = { old = "new" }`.
    pub rename: Vec<(String, String)>,
    /// `drop = ["field", ...]`.
    pub drop: Vec<String>,
}

/// Where one output field of a map comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// The input field at this index (after `convert`).
    Input(usize),
    /// The `derive` entry at this index.
    Derived(usize),
}

impl MapConfig {
    /// The output fields of this map over input fields `names`, in order, each with its
    /// source (see [`MapConfig`] for the rules). Names `convert`, `rename` or `drop` give
    /// that are not inputs are ignored here (the loader reports them).
    pub fn outputs(&self, names: &[String]) -> Vec<(String, MapSource)> {
        let mut out: Vec<(String, MapSource)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), MapSource::Input(i)))
            .collect();
        for (k, (name, _)) in self.derive.iter().enumerate() {
            match out.iter_mut().find(|(existing, _)| existing == name) {
                Some(slot) => slot.1 = MapSource::Derived(k),
                None => out.push((name.clone(), MapSource::Derived(k))),
            }
        }
        // `drop` names fields before renaming.
        out.retain(|(name, _)| !self.drop.contains(name));
        for (name, _) in &mut out {
            if let Some((_, new)) = self.rename.iter().find(|(old, _)| old == name) {
                new.clone_into(name);
            }
        }
        out
    }
}

/// `op = "window"`.
#[derive(Clone, PartialEq)]
pub struct WindowConfig {
    /// Window length.
    pub size: Duration,
    /// Distance between window starts; equal to `size` for tumbling windows.
    pub slide: Duration,
    /// How far behind the newest event time a reading may be and still be counted.
    pub lateness: Duration,
    /// `aggregates = { out = "fn(field)" }` in the order written: the window's output fields.
    pub aggregates: Vec<AggregateConfig>,
    /// The window compiled by the loader (limits checked, inputs by position): what the
    /// pipeline runs.
    pub spec: WindowSpec,
}

/// The settings as written, without the compiled `spec`: the operator fingerprint stored with
/// every key's state hashes this text, and it stays what it was before the config held the
/// compiled window.
impl std::fmt::Debug for WindowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowConfig")
            .field("size", &self.size)
            .field("slide", &self.slide)
            .field("lateness", &self.lateness)
            .field("aggregates", &self.aggregates)
            .finish()
    }
}

/// One output field of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Output field name.
    pub name: String,
    /// Input field (for `count`, the field whose readings are counted).
    pub input: String,
    /// The aggregate function: `mean`, `min`, `max`, `sum`, `count`, `std`, `first`,
    /// `last` or `rate`.
    pub function: String,
}

/// `format = "json" | "number" | "csv" | "senml"`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadFormat {
    /// A JSON document; fields are read by JSON pointer (RFC 6901). A top-level array is a
    /// batch: each element is one reading, read with the same pointers.
    Json,
    /// The payload is a bare number such as `21.5` (one field, pointer `""`).
    Number,
    /// CSV text (RFC 4180): one reading per line; pointers name columns (`"/temp"`).
    Csv(CsvConfig),
    /// A SenML pack in JSON (RFC 8428); how records become readings depends on the
    /// [`KeySource`] (see [`KeySource::RecordName`] and [`KeySource::BaseName`]).
    Senml,
}

impl PayloadFormat {
    /// The name as written in the file: `"json"`, `"number"`, `"csv"` or `"senml"`.
    pub fn name(&self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Number => "number",
            PayloadFormat::Csv(_) => "csv",
            PayloadFormat::Senml => "senml",
        }
    }
}

/// `columns`, `delimiter` and `header` of `format = "csv"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvConfig {
    /// The column names, in line order (non-empty, distinct). A line is read as an object
    /// whose members are these columns, so `"/temp"` is the cell of column `temp`.
    pub columns: Vec<String>,
    /// The cell separator: one ASCII character other than `"`, CR and LF.
    pub delimiter: u8,
    /// Whether a first line equal to the column names is skipped (a header line).
    pub header: bool,
}

/// `key = "topic" | "topic[N]" | "/json/pointer" | "name" | "basename"`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The whole topic.
    Topic,
    /// Topic level N (0-based): `topic[1]` of `sensors/s1/temp` is `s1`.
    TopicLevel(usize),
    /// A JSON pointer into the payload (a string or an integer); with `format = "csv"`, a
    /// column (`"/sensor"`).
    Pointer(String),
    /// `key = "name"` (`format = "senml"` only, its default): every SenML record is one
    /// reading keyed by its resolved name (base name + name), with one field whose pointer
    /// selects the value: `"v"`, `"vb"`, `"s"` or `"vs"`.
    RecordName,
    /// `key = "basename"` (`format = "senml"` only): the records with the same resolved base
    /// name and time form one reading keyed by the base name; fields name records relative to
    /// it (`"/voltage"`). A topic key (`topic`, `topic[N]`) groups records the same way.
    BaseName,
}

/// `time = "/pointer"` and `time_unit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSource {
    /// JSON pointer of the event time (with `format = "csv"`, a column such as `"/ts"`).
    pub pointer: String,
    /// How the value is read.
    pub unit: TimeUnit,
}

/// `time_unit = "auto" | "s" | "ms" | "rfc3339"`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Numbers ≥ 1e11 are milliseconds, smaller ones seconds; strings are RFC 3339.
    Auto,
    /// Seconds since the Unix epoch (fractions allowed).
    Seconds,
    /// Milliseconds since the Unix epoch.
    Milliseconds,
    /// An RFC 3339 string.
    Rfc3339,
}

/// One entry of `fields = { name = "/pointer" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConfig {
    /// Field name (used by models and in output topics).
    pub name: String,
    /// Where the value is: a JSON pointer (`""` for the whole payload); with `format = "csv"`
    /// a column (`"/temp"`); with `format = "senml"`, a record name relative to the base name
    /// (`"/voltage"`), or under `key = "name"` the value to read (`"v"`, `"vb"`, `"s"`, `"vs"`).
    pub pointer: String,
}

/// One entry of `bounds = { field = { min = a, max = b } }`: the values a field may
/// plausibly have, both ends included. A bound that is not written is infinite.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldBounds {
    /// One of the pipeline's `fields` (as decoded, before any operator).
    pub field: String,
    /// Smallest plausible value (`-∞` when only `max` is given).
    pub min: f64,
    /// Largest plausible value (`+∞` when only `min` is given); greater than `min`.
    pub max: f64,
}

/// `[pipelines.model]`, chosen by `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// `kind = "forecast"`: forecasts of one field from its own past, 1..=horizon steps ahead.
    Forecast(ForecastConfig),
    /// `kind = "regression"`: predicts a numeric field from other fields (the features).
    Regression(RegressionConfig),
    /// `kind = "classification"`: predicts a yes/no label field from other fields.
    Classification(ClassificationConfig),
    /// `kind = "kmeans"`: assigns every reading to one of `k` clusters of its features
    /// (online k-means); there is no target.
    KMeans(KMeansConfig),
    /// `kind = "recommend"`: events (user = the key, item, weight) update each user's history
    /// and the pipeline's item-item cosine similarities; publishes top-N recommendations.
    Recommend(RecommendConfig),
    /// `kind = "anomaly"`: whether each key's fields (the features) are in their normal state,
    /// and their change points; there is no target.
    Anomaly(AnomalyModelConfig),
}

/// The `field` of a `kind = "anomaly"` pipeline's output messages.
pub const ANOMALY_OUTPUT_FIELD: &str = "anomaly";

/// `kind = "anomaly"`
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyModelConfig {
    /// The fields whose state is monitored (1..=64 of `fields`, distinct). Every reading must
    /// carry all of them.
    pub features: Vec<String>,
    /// `threshold`, `warmup`, `smoothing`, checked by the loader (they pass
    /// [`StateParams::validate`]).
    pub params: StateParams,
}

/// The `field` of a `kind = "recommend"` pipeline's output messages.
pub const RECOMMEND_OUTPUT_FIELD: &str = "recommendations";

/// `kind = "recommend"`
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendConfig {
    /// The field holding the item id: a string, or an integer (taken as its decimal text).
    pub item: String,
    /// The field holding the event's weight: a number, or an event type (a string) looked up
    /// in `event_weights`. `None`: every event weighs 1. A reading without it weighs 1 too.
    pub weight: Option<String>,
    /// Event type → weight, for a `weight` field that holds strings (`view`, `cart`, …).
    pub event_weights: Vec<(String, f64)>,
    /// History length, item budget, neighbours per item, list length (checked by the loader).
    pub params: RecommendParams,
    /// Topic filters of request messages: `{"user": "…"}` (that user's list) or
    /// `{"item": "…"}` (the items most similar to it). Empty: no requests.
    pub requests: Vec<TopicFilter>,
    /// Publish a user's list after each of their events (`true`, the default), or only on
    /// request.
    pub publish_on_event: bool,
    /// Topic template of similar-item lists: `{pipeline}`, `{key}` (the item).
    pub similar_output: TopicTemplate,
    /// How often the item similarities are written to the store (they are also written at
    /// shutdown).
    pub snapshot_interval: Duration,
}

/// Default topic template of a recommend pipeline's similar-item lists.
pub const DEFAULT_SIMILAR_OUTPUT: &str = "edgeflow/{pipeline}/items/{key}/similar";
/// Default topic template of a recommend pipeline's user lists.
pub const DEFAULT_RECOMMEND_OUTPUT: &str = "edgeflow/{pipeline}/{key}/recommendations";
/// Default interval between snapshots of a recommender's item similarities: 15 minutes.
///
/// A snapshot rewrites the whole similarity model, which is up to ~14 MB with the default
/// budget (10,000 items × 100 neighbours, see `RecommendParams::memory_bound`). Gateways keep
/// their store on SD cards or eMMC with limited write endurance, so the default writes that
/// about 100 times a day rather than every few minutes. The model is also written at shutdown;
/// a crash loses at most the similarity updates since the last snapshot.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The `field` of a `kind = "kmeans"` pipeline's output messages (and its `{field}` in topic
/// templates): a clustering has no target, and what it publishes is a cluster.
pub const KMEANS_OUTPUT_FIELD: &str = "cluster";

impl ModelConfig {
    /// The `kind` as written in the file: `"forecast"`, `"regression"`, `"classification"` or
    /// `"kmeans"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Forecast(_) => "forecast",
            ModelConfig::Regression(_) => "regression",
            ModelConfig::Classification(_) => "classification",
            ModelConfig::KMeans(_) => "kmeans",
            ModelConfig::Recommend(_) => "recommend",
            ModelConfig::Anomaly(_) => "anomaly",
        }
    }

    /// The field the model predicts (one of the pipeline's `fields`); `None` for a clustering,
    /// which has no target.
    pub fn target(&self) -> Option<&str> {
        match self {
            ModelConfig::Forecast(forecast) => Some(&forecast.target),
            ModelConfig::Regression(regression) => Some(&regression.target),
            ModelConfig::Classification(classification) => Some(&classification.target),
            ModelConfig::KMeans(_) | ModelConfig::Recommend(_) | ModelConfig::Anomaly(_) => None,
        }
    }

    /// The `field` member of every output message and the `{field}` of the output topic
    /// template: the target, or [`KMEANS_OUTPUT_FIELD`] (`"cluster"`) for a clustering.
    pub fn output_field(&self) -> &str {
        match self {
            ModelConfig::Recommend(_) => RECOMMEND_OUTPUT_FIELD,
            ModelConfig::Anomaly(_) => ANOMALY_OUTPUT_FIELD,
            other => other.target().unwrap_or(KMEANS_OUTPUT_FIELD),
        }
    }

    /// The fields the model predicts from (or, for a clustering, clusters), in the order the
    /// model sees them; empty for a forecast (its inputs are the target's own past values).
    pub fn features(&self) -> &[String] {
        match self {
            ModelConfig::Forecast(_) => &[],
            ModelConfig::Regression(regression) => &regression.features,
            ModelConfig::Classification(classification) => &classification.features,
            ModelConfig::KMeans(kmeans) => &kmeans.features,
            ModelConfig::Recommend(_) => &[],
            ModelConfig::Anomaly(anomaly) => &anomaly.features,
        }
    }
}

/// `kind = "forecast"`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForecastConfig {
    /// The field forecast (one of `fields`). It is required in every reading.
    pub target: String,
    /// The forecaster's parameters, checked by the loader (they pass
    /// [`ForecastParams::validate`]).
    pub params: ForecastParams,
    /// Which messages carry the `horizon` array (`horizon > 1`): every one when `None`.
    pub horizon_every: Option<HorizonEvery>,
}

/// `horizon_every`: how often a forecast message carries the whole horizon; the one-step
/// fields are in every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonEvery {
    /// Every n-th reading of the key (its `updates` a multiple of n).
    Readings(u64),
    /// The first reading of each interval of event time (`⌊time / interval⌋` changed).
    Interval(std::time::Duration),
}

impl HorizonEvery {
    /// Whether the message of a reading at `time` (ms), the key's previous reading at
    /// `previous_time` and `updates` values learnt carries the horizon.
    pub fn publishes(&self, updates: u64, time: i64, previous_time: i64) -> bool {
        match *self {
            HorizonEvery::Readings(n) => n <= 1 || updates % n == 0,
            HorizonEvery::Interval(interval) => {
                let ms = i64::try_from(interval.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1);
                previous_time == i64::MIN || time.div_euclid(ms) != previous_time.div_euclid(ms)
            }
        }
    }
}

/// `kind = "regression"`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegressionConfig {
    /// The field predicted (one of `fields`, not a feature). Optional in a reading: a reading
    /// without it is predicted but not learnt.
    pub target: String,
    /// The fields predicted from (1..=64 of `fields`, distinct), in this order.
    pub features: Vec<String>,
    /// The regression's parameters, checked by the loader (they pass
    /// [`LinearParams::validate`], and SGD on scaled features has a learning rate below
    /// `2/(features + 1)`).
    pub params: LinearParams,
    /// Publish the `k` features contributing most to each prediction; `None`: off.
    pub explain: Option<usize>,
}

/// `kind = "classification"`
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationConfig {
    /// The label field (one of `fields`, not a feature): JSON `true`/`false`, or a number or
    /// string listed in `positive` or `negative`. Optional in a reading: a reading without it
    /// is predicted but not learnt.
    pub target: String,
    /// The fields predicted from (1..=64 of `fields`, distinct), in this order.
    pub features: Vec<String>,
    /// The classifier's parameters, checked by the loader (they pass
    /// [`LogisticParams::validate`]).
    pub params: LogisticParams,
    /// A prediction is positive when its probability is at least this, in (0, 1).
    pub threshold: f64,
    /// Label texts meaning "positive" (non-empty, compared ignoring ASCII case with the JSON
    /// text of a string or number label: `"Yes"`, `1`, `1.5`).
    pub positive: Vec<String>,
    /// Label texts meaning "negative" (non-empty, none also in `positive`).
    pub negative: Vec<String>,
    /// Publish the `k` features contributing most to each prediction; `None`: off.
    pub explain: Option<usize>,
}

/// `kind = "kmeans"`
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// The fields clustered (1..=64 of `fields`, distinct), in this order: the coordinates of
    /// each reading and of the centres. Every reading must carry all of them.
    pub features: Vec<String>,
    /// The clustering's parameters (`k`, `half_life` in readings, `seed`, `scale`,
    /// `lloyd_iterations`, `dying_fraction`), checked by the loader (they pass
    /// [`KMeansParams::validate`]).
    pub params: KMeansParams,
}

impl MqttConfig {
    /// Whether the daemon asks the broker for a persistent session (clean session off).
    ///
    /// An explicit `clean_session` is honoured. `"auto"` means persistent at
    /// `subscribe_qos = 1` (the broker then keeps the subscriptions and queues the readings
    /// sent while the daemon is away) and clean at QoS 0 (a broker does not queue QoS 0
    /// messages anyway), and clean with the embedded broker (it lives and dies with the
    /// daemon, so a session cannot outlive a restart).
    pub fn persistent_session(&self) -> bool {
        match self.clean_session {
            Some(clean) => !clean,
            None => self.subscribe_qos >= 1 && !self.embedded,
        }
    }
}

/// The longest client id every MQTT 3.1.1 broker must accept (Mosquitto accepts longer ones).
pub const PORTABLE_CLIENT_ID_LEN: usize = 23;

/// The default `client_id` for the configuration file at `config_path`:
/// `ef-{host}-{hash}`, with the host name cut so that the id of the output connection
/// (`{client_id}-out`) fits in 23 characters, and `hash` 8 hex digits of an FNV-1a hash of
/// the full host name and the canonical path of the file.
///
/// Two daemons on one broker must not share a client id (the broker closes the older
/// connection each time the other connects), and a persistent session needs the same id at
/// every restart: this is unique per host and file, and stable while neither is renamed.
pub fn default_client_id(config_path: &std::path::Path) -> String {
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.into());
    client_id_for(&host_name(), &canonical.to_string_lossy())
}

/// [`default_client_id`] for a given host name and canonical path (pure, for tests).
pub fn client_id_for(host: &str, canonical_path: &str) -> String {
    // FNV-1a (32 bits): stable across Rust releases, unlike `DefaultHasher`.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in host.bytes().chain([0]).chain(canonical_path.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    // "ef-" + host + "-" + 8 hex digits + "-out" (the output connection's id) within 23
    // characters; brokers may refuse characters outside [0-9a-zA-Z] in a client id, so
    // others become '-'.
    let room = PORTABLE_CLIENT_ID_LEN - "ef--".len() - 8 - "-out".len();
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(room)
        .collect();
    let host = if host.is_empty() { "host" } else { &host };
    format!("ef-{host}-{hash:08x}")
}

/// This machine's host name (Linux: `/proc/sys/kernel/hostname`), or `$HOSTNAME`, or "host".
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "host".into())
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            embedded: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "edgeflow".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 256 * 1024,
            subscribe_qos: 1,
            clean_session: None,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            ingest_queue: 4096,
            publish_queue: 4096,
            tls: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            checkpoint_interval: Duration::from_secs(10),
            cache_bytes: 8 * 1024 * 1024,
            state_ttl: None,
        }
    }
}

/// Default of `[runtime] max_memory`: 192 MiB, within the shipped unit's `MemoryMax=256M` and
/// a 512 MB gateway.
pub const DEFAULT_MAX_MEMORY: u64 = 192 << 20;

/// Smallest `[runtime] max_memory` accepted: the daemon itself needs a few MB.
pub const MIN_MAX_MEMORY: u64 = 16 << 20;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            max_resident_keys: 100_000,
            max_memory: DEFAULT_MAX_MEMORY,
            idle_timeout: Duration::from_secs(600),
            mailbox_capacity: 1024,
            stats_interval: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Default address of the HTTP listener.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9883);

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_HTTP_LISTEN,
        }
    }
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            sensors: 50,
            rate: 50.0,
            topic: "sensors/{sensor}/temperature".into(),
            seed: 42,
            spike_probability: 0.01,
        }
    }
}

impl Default for ClassificationConfig {
    fn default() -> Self {
        Self {
            target: String::new(),
            features: Vec::new(),
            params: LogisticParams::default(),
            threshold: DEFAULT_CLASSIFICATION_THRESHOLD,
            positive: DEFAULT_POSITIVE_LABELS
                .iter()
                .map(|&label| label.into())
                .collect(),
            negative: DEFAULT_NEGATIVE_LABELS
                .iter()
                .map(|&label| label.into())
                .collect(),
            explain: None,
        }
    }
}

/// Default `[mqtt] port` when `[mqtt.tls]` is on (the IANA port of MQTT over TLS).
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Default output topic template.
pub const DEFAULT_OUTPUT: &str = "edgeflow/{pipeline}/{key}/{field}/forecast";
/// Default output topic template of `kind = "regression"`.
pub const DEFAULT_REGRESSION_OUTPUT: &str = "edgeflow/{pipeline}/{key}/{field}/prediction";
/// Default output topic template of `kind = "classification"`.
pub const DEFAULT_CLASSIFICATION_OUTPUT: &str = "edgeflow/{pipeline}/{key}/{field}/class";
/// Default output topic template of `kind = "kmeans"` (no `{field}`: it would always be
/// `cluster`).
pub const DEFAULT_KMEANS_OUTPUT: &str = "edgeflow/{pipeline}/{key}/cluster";

/// Default output topic template of `kind = "anomaly"`.
pub const DEFAULT_ANOMALY_OUTPUT: &str = "edgeflow/{pipeline}/{key}/anomaly";

/// The default output topic template of a model kind: the last level names what is published.
pub fn default_output(model: &ModelConfig) -> &'static str {
    match model {
        ModelConfig::Forecast(_) => DEFAULT_OUTPUT,
        ModelConfig::Regression(_) => DEFAULT_REGRESSION_OUTPUT,
        ModelConfig::Classification(_) => DEFAULT_CLASSIFICATION_OUTPUT,
        ModelConfig::KMeans(_) => DEFAULT_KMEANS_OUTPUT,
        ModelConfig::Recommend(_) => DEFAULT_RECOMMEND_OUTPUT,
        ModelConfig::Anomaly(_) => DEFAULT_ANOMALY_OUTPUT,
    }
}
/// Event times a `dedupe` operator remembers per key by default.
pub const DEFAULT_DEDUPE_CAPACITY: usize = 16;
/// Most event times a `dedupe` operator may remember per key.
pub const MAX_DEDUPE_CAPACITY: usize = crate::ops::dedupe::MAX_CAPACITY;
/// Most windows one reading may fall into (`size / slide` of a sliding window).
pub const MAX_WINDOWS_PER_READING: usize = crate::ops::window::MAX_WINDOWS_PER_READING as usize;
/// Default CSV cell separator (`delimiter`).
pub const DEFAULT_CSV_DELIMITER: u8 = b',';
/// The values a field of a `format = "senml"`, `key = "name"` pipeline can read from each
/// record: the number `v`, the boolean `vb` (1 or 0), the sum `s`, or the string `vs` (only
/// as a classification label).
pub const SENML_VALUES: [&str; 4] = ["v", "vb", "s", "vs"];
/// Default value a `format = "senml"`, `key = "name"` pipeline reads: `fields = { value = "v" }`.
pub const DEFAULT_SENML_VALUE: &str = "v";
/// Default payload size limit in bytes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Default bound on how far an event time may be ahead of the daemon's clock.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(3600);
/// Phase bins of a duration season (`season = "1d"`) when `season_bins` is not given: half-hour
/// bins over a day.
pub const DEFAULT_SEASON_BINS: usize = 48;
/// `explain = true` publishes this many top contributions.
pub const DEFAULT_EXPLAIN_TOP: usize = 3;
/// Default probability threshold of a positive classification.
pub const DEFAULT_CLASSIFICATION_THRESHOLD: f64 = 0.5;
/// Default texts of a positive label (besides JSON `true`).
pub const DEFAULT_POSITIVE_LABELS: [&str; 4] = ["true", "1", "yes", "positive"];
/// Default texts of a negative label (besides JSON `false`).
pub const DEFAULT_NEGATIVE_LABELS: [&str; 4] = ["false", "0", "no", "negative"];
