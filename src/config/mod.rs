//! The configuration: a TOML file turned into a checked [`Config`].
//!
//! The file is parsed with toml-span rather than serde so that *every* problem is reported,
//! each as `file:line:col: message` naming the component and what is accepted — a user
//! fixing a gateway over SSH should see all mistakes in one `edgeflow check`.
//!
//! # Layout
//! - `schema` — the typed result and the defaults (one place for them).
//! - `loader` — walks the TOML tree, applies defaults, collects problems.
//! - `rules` — pure checks of topic filters, JSON pointers, key sources and templates.
//! - `error` — [`ConfigError`], [`ConfigErrors`] and offset → line:col conversion.
//! - `summary` — [`Config::summary`] for `edgeflow check`.
//!
//! # File format
//!
//! Unknown keys are errors everywhere (a typo must not silently fall back to a default).
//! Durations are strings such as `"500ms"`, `"30s"`, `"10m"`, `"1h 30m"` (at most a year).
//! Values shown are the defaults.
//!
//! ```toml
//! [mqtt]                      # optional
//! embedded = false            # run an in-process broker on 127.0.0.1:port (host is then ignored)
//! host = "127.0.0.1"          # non-empty unless embedded
//! port = 1883                 # 1..=65535
//! # client_id = "gw-7"        # default "ef-{host}-{hash of the file's path}"; non-empty
//!                             # (≤ 23 characters is what every broker accepts)
//! # username = "u"            # optional
//! # password = "p"            # optional, requires username
//! keep_alive = "30s"          # 5s..=65535s
//! max_packet_bytes = 262144   # 1024..=268435455
//! subscribe_qos = 1           # 0 or 1
//! clean_session = "auto"      # "auto" (persistent at QoS 1 unless embedded) | true | false
//! reconnect_min = "500ms"     # > 0; first back-off after a connection error
//! reconnect_max = "30s"       # ≥ reconnect_min; cap of the doubling back-off
//! ingest_queue = 4096         # ≥ 1
//! publish_queue = 4096        # ≥ 1
//!
//! [mqtt.tls]                  # optional; present = TLS to the broker (not with embedded)
//! enabled = true              # false: plaintext, the table is kept but ignored
//! # ca_file = "ca.pem"        # PEM CA bundle to trust; default: the system trust store
//! # client_cert = "gw.pem"    # PEM client certificate (+ chain), with client_key: both or neither
//! # client_key = "gw.key"     # PEM private key, unencrypted (PKCS#8, PKCS#1 or SEC1)
//! # server_name = "broker.example"  # name the broker's certificate is checked for; default: host
//! # Relative paths start at the config file's directory. With TLS, port defaults to 8883.
//!
//! [store]                     # optional
//! data_dir = "data"           # non-empty; relative to the working directory
//! checkpoint_interval = "10s" # ≥ 10ms
//! cache_bytes = 8388608       # ≥ 65536
//! state_ttl = "30d"           # ≥ 1s; default: none (states never expire)
//!
//! [runtime]                   # optional
//! shards = 0                  # 0..=256; 0 = one per CPU core
//! max_resident_keys = 100000  # ≥ 1
//! max_memory = "192MiB"       # ≥ 16MiB; bytes, or a size such as "512MB", "1.5GiB"
//! idle_timeout = "10m"        # > 0
//! mailbox_capacity = 1024     # ≥ 1
//! stats_interval = "10s"      # > 0
//! shutdown_deadline = "10s"   # > 0
//!
//! [simulate]                  # optional; present (even empty) = enabled
//! sensors = 50                # 1..=1000000
//! rate = 50.0                 # readings/s over the fleet, > 0 (integer or float)
//! topic = "sensors/{sensor}/temperature"   # must contain {sensor}; no '+' or '#'
//! seed = 42                   # ≥ 0
//! spike_probability = 0.01    # 0..=1
//!
//! [[pipelines]]               # at least one
//! name = "temperature"        # required, unique, [A-Za-z0-9_-]+
//! topics = ["sensors/+/temperature"]  # required, non-empty MQTT filters ($share/g/… allowed)
//! format = "json"             # "json" | "number" | "csv" | "senml"
//! # columns = ["ts", "id", "t"] # csv only, required: non-empty, distinct column names
//! # delimiter = ","           # csv only: one ASCII character, not '"' or a line break
//! # header = false            # csv only: skip a first line equal to the column names
//! key = "topic"               # "topic" | "topic[N]" (0-based level) | "/json/pointer" (json;
//!                             # csv: "/column") | "name" | "basename" (senml; default "name")
//! # time = "/ts"              # optional JSON pointer of the event time (json; csv: "/column";
//!                             # not senml, whose records carry their time)
//! # time_unit = "auto"        # "auto" | "s" | "ms" | "rfc3339"; only with time
//! # max_skew = "1h"           # ≥ 1s; event times further ahead of the clock are dropped
//!                             # (time_skew); only with event times (time, from, senml)
//! fields = { temp = "/value" } # json: required, ≥ 1 entry, kept in file order; csv: "/column";
//!                             # number: optional, default { value = "" }, one entry with "";
//!                             # senml, key = "name": optional, default { value = "v" }, one
//!                             # entry "v" | "vb" | "s" | "vs" (vs: a classification label);
//!                             # senml, other keys: required, "/record" relative to the base name
//! # bounds = { temp = { min = -50, max = 150 } }  # plausible ranges of fields (min, max or
//!                             # both, finite, min < max); outside: dropped as "implausible"
//! output = "edgeflow/{pipeline}/{key}/{field}/forecast"  # placeholders {pipeline} {key} {field};
//!                             # default by kind: …/{field}/forecast, …/{field}/prediction,
//!                             # …/{field}/class, "edgeflow/{pipeline}/{key}/cluster" (kmeans),
//!                             # "edgeflow/{pipeline}/{key}/recommendations" (recommend);
//!                             # {field} is the target ("cluster" for kmeans, "recommendations"
//!                             # for recommend)
//! output_qos = 0              # 0 or 1
//! max_payload_bytes = 65536   # ≥ 1; larger payloads are dropped
//!
//! [pipelines.model]           # required
//! kind = "forecast"           # required: "forecast" | "regression" | "classification" | "kmeans"
//!                             # | "recommend"
//! target = "temp"             # required; one of the pipeline's fields (kmeans, recommend: none,
//!                             # an error)
//! # Keys of another kind are errors ("model.lags is not a parameter of kind \"regression\"").
//! # format = "number" payloads allow kind = "forecast" or "kmeans" only (a bare number has one
//! # field), and so does format = "senml" with key = "name" (each record is a reading with one
//! # value).
//!
//! # kind = "forecast": forecasts of `target` from its own past (1..=horizon steps ahead).
//! lags = 4                    # 1..=32
//! forgetting = 0.995          # 0.9..=1.0
//! interval_z = 1.96           # > 0 and ≤ 10
//! horizon = 1                 # 1..=64
//! damping = 0.98              # > 0 and ≤ 1 (1 = undamped trend)
//! # season = 48               # optional: a season of N readings, 2..=10000, or
//! # season = "1d"             #   a duration (≥ 1ms, whole ms, ≤ a year) for irregular sampling
//! # season_bins = 48          # 2..=1440; only with a duration season (default 48)
//!
//! # kind = "regression": `target` (a number; missing/null = predict only) from `features`.
//! # features = ["x1", "x2"]   # required; 1..=64 distinct fields, not the target
//! # algorithm = "adagrad"     # "adagrad" | "sgd" | "rls"
//! # learning_rate = 0.1       # > 0 and ≤ 10 (sgd, adagrad); sgd with scale: < 2/(1 + features)
//! # power_t = 0.0             # 0..=1 (sgd: step learning_rate / t^power_t)
//! # l2 = 0.0                  # finite, ≥ 0 (sgd, adagrad)
//! # forgetting = 0.999        # 0.9..=1.0 (rls forgetting; memory of the interval's σ)
//! # scale = true              # standardise the features
//! # interval_z = 1.96         # > 0 and ≤ 10
//! # explain = false           # true (top 3) | 1..=64 (top k) | false (off)
//!
//! # kind = "classification": `target` is a label (missing/null = predict only) from `features`.
//! # features = ["x1", "x2"]   # required; as for regression
//! # algorithm = "ftrl"        # "ftrl" | "adagrad"
//! # alpha = 0.2               # > 0 and ≤ 10 (ftrl)
//! # beta = 1.0                # finite, ≥ 0 (ftrl)
//! # l1 = 0.0                  # finite, ≥ 0 (ftrl)
//! # l2 = 0.0                  # finite, ≥ 0
//! # learning_rate = 0.2       # > 0 and ≤ 10 (adagrad)
//! # scale = true              # standardise the features
//! # threshold = 0.5           # > 0 and < 1: probability from which a prediction is positive
//! # positive = ["true", "1", "yes", "positive"]  # non-empty, entries non-empty; JSON true is
//! # negative = ["false", "0", "no", "negative"]  # always positive, false negative; strings and
//! #                           # numbers (by their shortest text: 1.0 is "1") are matched ignoring
//! #                           # ASCII case; the two lists must not share an entry
//! # explain = false           # as for regression
//!
//! # kind = "kmeans": assigns each reading to the nearest of k clusters of `features`, then
//! # learns it; no target. The first 8·k readings of a key seed the clusters (cluster null).
//! # features = ["x1", "x2"]   # required; 1..=64 distinct fields (may be the one field of a
//! #                           # number payload or SenML record)
//! # k = 4                     # required; 1..=64 clusters
//! # half_life = 1000.0        # finite, ≥ 1: readings after which a reading weighs half
//! # seed = 0                  # ≥ 0: k-means++ seeding draws
//! # scale = true              # standardise the features (running, decayed mean and σ)
//! # lloyd_iterations = 10     # 0..=100 on the warm-up readings
//! # dying_fraction = 1e-6     # 0..=0.5: lighter clusters (vs the heaviest) are re-seeded
//!
//! # kind = "recommend": events (user = the key, item, weight) → each user's recent items →
//! # item-item cosine similarities → top-N lists. Only with format = "json"; `fields` are the
//! # item and the weight and nothing else; no [[pipelines.operators]], no [pipelines.anomaly].
//! # item = "item"             # required: the field of the item (a string of 1..=64 bytes, or
//! #                           # an integer taken as its decimal text)
//! # weight = "type"           # optional, another field: a number in (0, 1024], or an event
//! #                           # type looked up in event_weights; missing/null weighs 1
//! # event_weights = { view = 1, cart = 3, purchase = 5 }  # only with weight; ≥ 1 entry, each
//! #                           # in (0, 1024]; types matched ignoring ASCII case, so no two
//! #                           # may differ only in case
//! # history = 20              # 1..=100 recent items per user
//! # max_items = 10000         # 2..=1000000 items tracked (least recently seen forgotten)
//! # max_neighbours = 100      # 1..=10000 co-occurrences kept per item
//! # top_n = 10                # 1..=1000: length of the published lists
//! # requests = []             # MQTT filters of request messages; none may overlap `topics`
//! # publish = "event"         # "event" (after each event and on request) | "request" (only on
//! #                           # request: needs requests)
//! # similar_output = "edgeflow/{pipeline}/items/{key}/similar"  # {pipeline} {key} (the item)
//! # snapshot_interval = "15m" # ≥ 1s: how often the similarities are saved
//!
//! [pipelines.anomaly]         # optional; only with kind = "forecast" or "regression"
//! threshold = 0.9999          # in (0, 1): flag a reading rarer than 1 − threshold in normal operation
//! learn_anomalies = false     # let the model learn flagged readings
//! warmup = 100                # ≥ 0: residuals observed before flags are raised (default 100,
//!                             # or two seasons of a forecast with a season in readings)
//! ```

use std::path::Path;

mod error;
mod loader;
mod rules;
pub mod schema;
mod summary;

pub use error::{ConfigError, ConfigErrors};
pub use schema::*;

use error::LineIndex;
use loader::Files;

/// Load and validate a config file, including the files it names: the PEM files of
/// `[mqtt.tls]` are read and parsed, and a problem with one is reported at its key.
///
/// # Errors
/// Every problem in the file, each with its location. A file that cannot be read gives one
/// error at 1:1 with the I/O error; a file that is not UTF-8 gives one error where the
/// first invalid byte is.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, Files::Check)
}

/// [`load`] for commands that never connect to the broker (`replay`, `inspect`): the files
/// named in `[mqtt.tls]` are not opened, so a gateway's config can be replayed elsewhere.
///
/// # Errors
/// As [`load`], less the problems of the TLS files.
pub fn load_offline(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, Files::Skip)
}

fn load_with(path: &Path, files: Files) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|error| single(path, 1, 1, format!("cannot read the config file: {error}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => parse_with(path, &text, files),
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            // `valid_up_to` is by definition a valid prefix; the fallback only keeps this
            // free of `unwrap`.
            let (line, col) = std::str::from_utf8(valid)
                .map_or((1, 1), |prefix| LineIndex::new(prefix).locate(prefix.len()));
            Err(single(
                path,
                line,
                col,
                "the config file is not valid UTF-8 (TOML files must be UTF-8)".into(),
            ))
        }
    }
}

/// Same as [`load`] from a string. `path` is used in messages and `Config::source`, and its
/// directory is where relative paths in `[mqtt.tls]` start from.
///
/// # Errors
/// Every problem in `text`, each with its location, in file order.
pub fn parse_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, Files::Check)
}

fn parse_with(path: &Path, text: &str, files: Files) -> Result<Config, ConfigErrors> {
    // Editors on Windows may write a byte-order mark; TOML parsers reject it, users do not
    // see it. Columns are unaffected: no editor counts it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    loader::load_text(path, text, files).map_err(|problems| {
        let lines = LineIndex::new(text);
        ConfigErrors {
            errors: problems
                .into_iter()
                .map(|problem| {
                    let (line, col) = lines.locate(problem.offset);
                    ConfigError {
                        file: path.to_path_buf(),
                        line,
                        col,
                        message: problem.message,
                    }
                })
                .collect(),
        }
    })
}

fn single(path: &Path, line: usize, col: usize, message: String) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            file: path.to_path_buf(),
            line,
            col,
            message,
        }],
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod recommend_tests;
#[cfg(test)]
mod tests;
