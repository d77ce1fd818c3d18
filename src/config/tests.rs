//! Loader tests: one per invariant, with exact locations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::model::{
    AnomalyParams, ForecastParams, Forecaster, KMeansParams, LinearAlgorithm, LinearParams,
    LinearRegression, LogisticAlgorithm, LogisticParams, LogisticRegression, OnlineKMeans,
    SeasonSpec, Seasons,
};

/// A minimal valid pipeline, appended to configs that test something else.
const PIPELINE: &str = r#"
[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature"]
fields = { temp = "/value" }
[pipelines.model]
kind = "forecast"
target = "temp"
"#;

/// Parse `text` as the file `gw.toml` (shared by the config test modules).
pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_str(Path::new("gw.toml"), text)
}

/// A config that must be valid.
pub(super) fn valid(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

/// The errors as `line:col: message`, in the order reported.
pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

#[test]
fn full_valid_config_parses_to_expected_values() {
    let text = r#"
[mqtt]
embedded = false
host = "broker.local"
port = 8883
client_id = "gw-7"
username = "u"
password = "p"
keep_alive = "1m"
max_packet_bytes = 1048576
subscribe_qos = 0
reconnect_min = "1s"
reconnect_max = "1m"
ingest_queue = 100
publish_queue = 200

[store]
data_dir = "/var/lib/edgeflow"
checkpoint_interval = "250ms"
cache_bytes = 1048576
state_ttl = "30d"

[runtime]
shards = 4
max_resident_keys = 5000
max_memory = "64MiB"
idle_timeout = "5m"
mailbox_capacity = 64
stats_interval = "30s"
shutdown_deadline = "3s"

[http]
enabled = false
listen = "[::1]:9100"

[simulate]
sensors = 10
rate = 5
topic = "demo/{sensor}/t"
seed = 7
spike_probability = 0.5

[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature", "legacy/#"]
format = "json"
key = "topic[1]"
time = "/ts"
time_unit = "ms"
max_skew = "5m"
fields = { temp = "/value", humidity = "/h" }
output = "out/{pipeline}/{key}/{field}"
output_qos = 1
max_payload_bytes = 1024
[pipelines.model]
kind = "forecast"
target = "humidity"
lags = 8
forgetting = 1
interval_z = 2.5

[[pipelines]]
name = "power"
topics = ["power/+"]
format = "number"
[pipelines.model]
kind = "forecast"
target = "value"
"#;
    let expected = Config {
        source: PathBuf::from("gw.toml"),
        mqtt: MqttConfig {
            embedded: false,
            host: "broker.local".into(),
            port: 8883,
            client_id: "gw-7".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            keep_alive: Duration::from_secs(60),
            max_packet_bytes: 1_048_576,
            subscribe_qos: 0,
            clean_session: None,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            ingest_queue: 100,
            publish_queue: 200,
            tls: None,
        },
        store: StoreConfig {
            data_dir: PathBuf::from("/var/lib/edgeflow"),
            checkpoint_interval: Duration::from_millis(250),
            cache_bytes: 1_048_576,
            state_ttl: Some(Duration::from_secs(30 * 86_400)),
        },
        runtime: RuntimeConfig {
            shards: 4,
            max_resident_keys: 5000,
            max_memory: 64 << 20,
            idle_timeout: Duration::from_secs(300),
            mailbox_capacity: 64,
            stats_interval: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(3),
        },
        http: HttpConfig {
            enabled: false,
            listen: "[::1]:9100".parse().unwrap(),
        },
        simulate: Some(SimulateConfig {
            sensors: 10,
            rate: 5.0,
            topic: "demo/{sensor}/t".into(),
            seed: 7,
            spike_probability: 0.5,
        }),
        pipelines: vec![
            PipelineConfig {
                name: "temperature".into(),
                topics: vec![
                    crate::topic::TopicFilter::parse("sensors/+/temperature").unwrap(),
                    crate::topic::TopicFilter::parse("legacy/#").unwrap(),
                ],
                format: PayloadFormat::Json,
                key: KeySource::TopicLevel(1),
                time: Some(TimeSource {
                    pointer: "/ts".into(),
                    unit: TimeUnit::Milliseconds,
                }),
                max_skew: Duration::from_secs(300),
                fields: vec![
                    FieldConfig {
                        name: "temp".into(),
                        pointer: "/value".into(),
                    },
                    FieldConfig {
                        name: "humidity".into(),
                        pointer: "/h".into(),
                    },
                ],
                model: ModelConfig::Forecast(ForecastConfig {
                    target: "humidity".into(),
                    params: ForecastParams {
                        lags: 8,
                        forgetting: 1.0,
                        interval_z: 2.5,
                        ..ForecastParams::default()
                    },
                    horizon_every: None,
                }),
                bounds: Vec::new(),
                from: None,
                operators: Vec::new(),
                anomaly: None,
                output: crate::topic::TopicTemplate::builtin("out/{pipeline}/{key}/{field}"),
                output_qos: 1,
                max_payload_bytes: 1024,
            },
            PipelineConfig {
                name: "power".into(),
                topics: vec![crate::topic::TopicFilter::parse("power/+").unwrap()],
                format: PayloadFormat::Number,
                key: KeySource::Topic,
                time: None,
                max_skew: DEFAULT_MAX_SKEW,
                fields: vec![FieldConfig {
                    name: "value".into(),
                    pointer: String::new(),
                }],
                model: ModelConfig::Forecast(ForecastConfig {
                    target: "value".into(),
                    ..ForecastConfig::default()
                }),
                bounds: Vec::new(),
                from: None,
                operators: Vec::new(),
                anomaly: None,
                output: crate::topic::TopicTemplate::builtin(DEFAULT_OUTPUT),
                output_qos: 0,
                max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            },
        ],
        classifiers: Vec::new(),
    };
    assert_eq!(valid(text), expected);
}

#[test]
fn omitted_keys_take_the_schema_defaults() {
    let config = valid(PIPELINE);
    let mqtt = MqttConfig {
        client_id: default_client_id(&config.source),
        ..MqttConfig::default()
    };
    assert_eq!(config.mqtt, mqtt);
    assert!(
        config.mqtt.persistent_session(),
        "QoS 1 by default: persistent"
    );
    assert_eq!(config.store, StoreConfig::default());
    assert_eq!(config.runtime, RuntimeConfig::default());
    assert_eq!(config.simulate, None);
    let pipeline = &config.pipelines[0];
    assert_eq!(pipeline.format, PayloadFormat::Json);
    assert_eq!(pipeline.key, KeySource::Topic);
    assert_eq!(pipeline.time, None);
    assert_eq!(pipeline.output.as_str(), DEFAULT_OUTPUT);
    assert_eq!(pipeline.output_qos, 0);
    assert_eq!(pipeline.max_payload_bytes, DEFAULT_MAX_PAYLOAD_BYTES);
    assert_eq!(
        pipeline.model,
        ModelConfig::Forecast(ForecastConfig {
            target: "temp".into(),
            ..ForecastConfig::default()
        })
    );
}

#[test]
fn empty_simulate_table_enables_the_simulator_with_defaults() {
    let config = valid(&format!("[simulate]\n{PIPELINE}"));
    assert_eq!(config.simulate, Some(SimulateConfig::default()));
}

#[test]
fn time_unit_defaults_to_auto_when_time_is_given() {
    let text = PIPELINE.replace("fields =", "time = \"/ts\"\nfields =");
    let config = valid(&text);
    assert_eq!(
        config.pipelines[0].time,
        Some(TimeSource {
            pointer: "/ts".into(),
            unit: TimeUnit::Auto,
        })
    );
}

#[test]
fn fields_keep_the_order_written_in_the_file() {
    let text = PIPELINE.replace(
        "fields = { temp = \"/value\" }",
        "fields = { zeta = \"/z\", temp = \"/value\", alpha = \"/a\" }",
    );
    let names: Vec<_> = valid(&text).pipelines[0]
        .fields
        .iter()
        .map(|field| field.name.clone())
        .collect();
    assert_eq!(names, ["zeta", "temp", "alpha"]);
}

#[test]
fn embedded_broker_with_a_remote_host_is_accepted() {
    let config = valid(&format!(
        "[mqtt]\nembedded = true\nhost = \"10.0.0.9\"\n{PIPELINE}"
    ));
    assert!(config.mqtt.embedded);
}

#[test]
fn byte_order_mark_is_ignored() {
    let config = valid(&format!("\u{feff}[mqtt]\nport = 1884\n{PIPELINE}"));
    assert_eq!(config.mqtt.port, 1884);
}

#[test]
fn shared_subscription_filters_are_accepted() {
    let text = PIPELINE.replace("\"sensors/+/temperature\"", "\"$share/gw/sensors/+/t\"");
    let text = text.replace("fields =", "key = \"topic[1]\"\nfields =");
    assert_eq!(valid(&text).pipelines[0].key, KeySource::TopicLevel(1));
}

#[test]
fn unknown_keys_are_each_reported_at_the_key() {
    let text = format!("[mqtt]\nhots = \"x\"\nprot = 1\n[sotre]\n{PIPELINE}lag = 3\n");
    let accepted = "embedded, host, port, client_id, username, password, keep_alive, \
                    max_packet_bytes, subscribe_qos, clean_session, reconnect_min, reconnect_max, \
                    ingest_queue, publish_queue, tls";
    assert_eq!(
        errors(&text),
        [
            format!("2:1: [mqtt]: unknown key \"hots\" (accepted keys: {accepted})"),
            format!("3:1: [mqtt]: unknown key \"prot\" (accepted keys: {accepted})"),
            "4:2: unknown key \"sotre\" (accepted keys: mqtt, store, runtime, http, simulate, pipelines, classifiers)".into(),
            "13:1: pipeline \"temperature\": unknown key \"model.lag\" (accepted keys: kind, target, lags, forgetting, interval_z, horizon, damping, season, season_bins, min, max, horizon_every)".into(),
        ]
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let text =
        format!("[mqtt]\nport = \"1883\"\nembedded = 1\n[runtime]\nidle_timeout = 600\n{PIPELINE}");
    assert_eq!(
        errors(&text),
        [
            "2:8: [mqtt]: port must be an integer (got a string)",
            "3:12: [mqtt]: embedded must be true or false (got an integer)",
            "5:16: [runtime]: idle_timeout must be a duration string such as \"30s\" (got an integer)",
        ]
    );
}

#[test]
fn wrong_type_inside_an_array_names_the_entry() {
    let text = PIPELINE.replace("[\"sensors/+/temperature\"]", "[\"a/+\", 7]");
    assert_eq!(
        errors(&text),
        ["4:18: pipeline \"temperature\": topics[1] must be a string (got an integer)"]
    );
}

#[test]
fn missing_required_keys_are_reported_at_the_table() {
    let text = "[[pipelines]]\nfields = { t = \"/t\" }\n[pipelines.model]\nkind = \"forecast\"\n";
    assert_eq!(
        errors(text),
        [
            "1:1: pipeline #1: missing required key \"name\"",
            "1:1: pipeline #1: missing required key \"topics\"",
            "3:1: pipeline #1: missing required key \"model.target\"",
        ]
    );
    let text = "[[pipelines]]\nname = \"a\"\ntopics = [\"a\"]\n";
    assert_eq!(
        errors(text),
        [
            "1:1: pipeline \"a\": missing required key \"fields\" (format = \"json\" reads each field by JSON pointer, e.g. fields = { temp = \"/value\" })",
            "1:1: pipeline \"a\": missing required key \"model\" (a [pipelines.model] table with kind = \"forecast\" | \"regression\" | \"classification\" | \"kmeans\" | \"recommend\" | \"anomaly\")",
        ]
    );
}

#[test]
fn out_of_range_numbers_say_what_is_accepted() {
    let text = format!(
        "[mqtt]\nport = 0\nsubscribe_qos = 2\n[runtime]\nshards = 300\n[simulate]\nspike_probability = 1.5\nrate = nan\n{PIPELINE}lags = 0\nforgetting = 0.5\ninterval_z = 0\n"
    );
    assert_eq!(
        errors(&text),
        [
            "2:8: [mqtt]: port must be between 1 and 65535 (got 0)",
            "3:17: [mqtt]: subscribe_qos must be 0 or 1 (got 2)",
            "5:10: [runtime]: shards must be between 0 and 256 (got 300)",
            "7:21: [simulate]: spike_probability must be between 0 and 1 (got 1.5)",
            "8:8: [simulate]: rate must be a number of readings per second greater than 0 (got NaN)",
            "17:8: pipeline \"temperature\": model.lags must be between 1 and 32 (got 0)",
            "18:14: pipeline \"temperature\": model.forgetting must be between 0.9 and 1.0 (got 0.5)",
            "19:14: pipeline \"temperature\": model.interval_z must be greater than 0 and at most 10 (got 0)",
        ]
    );
}

#[test]
fn bad_durations_are_reported_with_the_accepted_form() {
    let text = format!(
        "[mqtt]\nkeep_alive = \"30 seconds please\"\nreconnect_min = \"0s\"\n[store]\ncheckpoint_interval = \"1ms\"\n{PIPELINE}"
    );
    assert_eq!(
        errors(&text),
        [
            "2:14: [mqtt]: keep_alive must be a duration such as \"500ms\", \"30s\" or \"10m\" (got \"30 seconds please\": expected number at 11)",
            "3:17: [mqtt]: reconnect_min must be greater than 0 (got 0s)",
            "5:23: [store]: checkpoint_interval must be at least 10ms (got 1ms)",
        ]
    );
}

#[test]
fn state_ttl_is_a_duration_of_at_least_a_second_and_off_by_default() {
    assert_eq!(valid(PIPELINE).store.state_ttl, None);
    assert_eq!(
        valid(&format!("[store]\nstate_ttl = \"36h\"\n{PIPELINE}"))
            .store
            .state_ttl,
        Some(Duration::from_secs(36 * 3600))
    );
    assert_eq!(
        errors(&format!(
            "[store]\nstate_ttl = \"500ms\"\n[runtime]\nshards = 1\n{PIPELINE}"
        )),
        ["2:13: [store]: state_ttl must be at least 1s (got 500ms)"]
    );
    assert_eq!(
        errors(&format!("[store]\nstate_ttl = 3600\n{PIPELINE}")),
        ["2:13: [store]: state_ttl must be a duration string such as \"30s\" (got an integer)"]
    );
    assert_eq!(
        errors(&format!("[store]\nstate_ttl = \"a week\"\n{PIPELINE}")).len(),
        1
    );
}

#[test]
fn max_memory_is_a_size_in_bytes_or_with_a_unit() {
    assert_eq!(valid(PIPELINE).runtime.max_memory, 192 << 20);
    let with = |v: &str| format!("[runtime]\nmax_memory = {v}\n{PIPELINE}");
    assert_eq!(valid(&with("\"512MB\"")).runtime.max_memory, 512_000_000);
    assert_eq!(valid(&with("\"1.5 GiB\"")).runtime.max_memory, 3 << 29);
    assert_eq!(valid(&with("33554432")).runtime.max_memory, 32 << 20);
    assert_eq!(
        errors(&with("\"1MiB\"")),
        ["2:14: [runtime]: max_memory must be at least 16.0 MiB (got 1.0 MiB)"]
    );
    let bad = errors(&with("\"lots\""));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("2:14: [runtime]: max_memory must be a size such as"),
        "{bad:?}"
    );
    let negative = errors(&with("-5"));
    assert!(negative[0].contains("not negative"), "{negative:?}");
    assert_eq!(errors(&with("true")).len(), 1);
}

#[test]
fn keep_alive_below_five_seconds_is_rejected() {
    assert_eq!(
        errors(&format!("[mqtt]\nkeep_alive = \"2s\"\n{PIPELINE}")),
        ["2:14: [mqtt]: keep_alive must be at least 5s (got 2s)"]
    );
}

#[test]
fn reconnect_max_below_reconnect_min_is_rejected() {
    assert_eq!(
        errors(&format!(
            "[mqtt]\nreconnect_min = \"10s\"\nreconnect_max = \"1s\"\n{PIPELINE}"
        )),
        ["3:17: [mqtt]: reconnect_max must be at least reconnect_min (10s) (got 1s)"]
    );
    assert_eq!(
        errors(&format!("[mqtt]\nreconnect_min = \"1m\"\n{PIPELINE}")),
        ["2:17: [mqtt]: reconnect_min must be at most reconnect_max (30s) (got 1m)"]
    );
}

#[test]
fn bad_topic_filters_are_reported_at_the_entry() {
    let text = PIPELINE.replace(
        "[\"sensors/+/temperature\"]",
        "[\"ok/+\", \"a/#/b\", \"a/b+\", \"\"]",
    );
    assert_eq!(
        errors(&text),
        [
            "4:19: pipeline \"temperature\": topics[1] \"a/#/b\" is not a valid MQTT topic filter: '#' is only allowed as the last level",
            "4:28: pipeline \"temperature\": topics[2] \"a/b+\" is not a valid MQTT topic filter: '+' must be a whole level (like `a/+/b`)",
            "4:36: pipeline \"temperature\": topics[3] \"\" is not a valid MQTT topic filter: it is empty",
        ]
    );
    let text = PIPELINE.replace("[\"sensors/+/temperature\"]", "[]");
    assert_eq!(
        errors(&text),
        ["4:10: pipeline \"temperature\": topics must list at least one MQTT topic filter, e.g. [\"sensors/+/temperature\"]"]
    );
}

#[test]
fn bad_key_source_is_reported() {
    let text = PIPELINE.replace("fields =", "key = \"sensor\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:7: pipeline \"temperature\": key \"sensor\" is not a valid key source: accepted: \"topic\", \"topic[N]\" (N = 0-based topic level), a JSON pointer starting with \"/\", or for SenML \"name\" or \"basename\""]
    );
}

#[test]
fn topic_level_key_must_exist_in_every_filter() {
    let text = PIPELINE
        .replace(
            "[\"sensors/+/temperature\"]",
            "[\"sensors/+/temperature\", \"s/#\", \"short\"]",
        )
        .replace("fields =", "key = \"topic[2]\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:7: pipeline \"temperature\": key \"topic[2]\" reads topic level 2 (0-based), but topic filter \"short\" only matches topics with 1 level(s)"]
    );
}

#[test]
fn json_pointer_key_is_rejected_for_number_payloads() {
    let text = "[[pipelines]]\nname = \"p\"\ntopics = [\"p/+\"]\nformat = \"number\"\nkey = \"/id\"\ntime = \"/ts\"\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"value\"\n";
    assert_eq!(
        errors(text),
        [
            "5:7: pipeline \"p\": key \"/id\" is a JSON pointer, but format = \"number\" payloads are bare numbers (use \"topic\" or \"topic[N]\")",
            "6:8: pipeline \"p\": time cannot be read when format = \"number\": the payload is a bare number (remove time to use the arrival time)",
        ]
    );
}

#[test]
fn number_payload_fields_must_be_one_whole_payload_entry() {
    let base = "[[pipelines]]\nname = \"p\"\ntopics = [\"p/+\"]\nformat = \"number\"\n";
    let model = "[pipelines.model]\nkind = \"forecast\"\ntarget = \"v\"\n";
    assert_eq!(
        errors(&format!("{base}fields = {{ v = \"/v\" }}\n{model}")),
        ["5:16: pipeline \"p\": fields.v must be \"\" when format = \"number\" (the payload is one bare number)"]
    );
    assert_eq!(
        errors(&format!("{base}fields = {{ v = \"\", w = \"\" }}\n{model}")),
        ["5:10: pipeline \"p\": fields must have exactly one entry with pointer \"\" when format = \"number\" (got 2 entries)"]
    );
    let config = valid(&format!("{base}fields = {{ v = \"\" }}\n{model}"));
    assert_eq!(
        config.pipelines[0].fields,
        [FieldConfig {
            name: "v".into(),
            pointer: String::new()
        }]
    );
}

#[test]
fn bad_json_pointers_are_reported_at_the_value() {
    let text = PIPELINE.replace(
        "fields = { temp = \"/value\" }",
        "time = \"ts\"\nfields = { temp = \"value\", hum = \"/h~2\", bad = 3 }",
    );
    assert_eq!(
        errors(&text),
        [
            "5:8: pipeline \"temperature\": time \"ts\" is not a JSON pointer: a JSON pointer is \"\" (the whole payload) or starts with \"/\"",
            "6:19: pipeline \"temperature\": fields.temp \"value\" is not a JSON pointer: a JSON pointer is \"\" (the whole payload) or starts with \"/\"",
            "6:34: pipeline \"temperature\": fields.hum \"/h~2\" is not a JSON pointer: '~' in a JSON pointer must be followed by 0 or 1 (\"~0\" is '~', \"~1\" is '/')",
            "6:48: pipeline \"temperature\": fields.bad must be a JSON pointer string such as \"/value\" (got an integer)",
        ]
    );
}

#[test]
fn empty_fields_table_is_rejected() {
    let text = PIPELINE.replace("{ temp = \"/value\" }", "{}");
    assert_eq!(
        errors(&text),
        [
            "5:10: pipeline \"temperature\": fields must have at least one entry, e.g. fields = { temp = \"/value\" }",
        ]
    );
}

#[test]
fn bad_template_placeholders_are_reported() {
    let text = PIPELINE.replace("fields =", "output = \"out/{pipeline}/{sensor}\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:10: pipeline \"temperature\": output \"out/{pipeline}/{sensor}\" is not a valid topic template: unknown placeholder {sensor} (accepted: {pipeline}, {key}, {field})"]
    );
    let text = PIPELINE.replace("fields =", "output = \"out/{key\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:10: pipeline \"temperature\": output \"out/{key\" is not a valid topic template: it has a '{' without a matching '}'"]
    );
    let text = PIPELINE.replace("fields =", "output = \"out/+/{key}\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:10: pipeline \"temperature\": output \"out/+/{key}\" is not a valid topic template: a published topic must not contain the wildcards '+' or '#'"]
    );
    assert_eq!(
        errors(&format!("[simulate]\ntopic = \"demo/all\"\n{PIPELINE}")),
        ["2:9: [simulate]: topic must contain {sensor}, replaced by each sensor's id (got \"demo/all\")"]
    );
}

#[test]
fn model_target_must_be_one_of_the_fields() {
    let text = PIPELINE
        .replace(
            "{ temp = \"/value\" }",
            "{ temp = \"/value\", hum = \"/h\" }",
        )
        .replace("target = \"temp\"", "target = \"pressure\"");
    assert_eq!(
        errors(&text),
        ["8:10: pipeline \"temperature\": model.target \"pressure\" is not one of the pipeline's fields (fields: temp, hum)"]
    );
}

#[test]
fn unsupported_model_kind_lists_the_accepted_kinds() {
    let text = PIPELINE.replace("kind = \"forecast\"", "kind = \"dbscan\"\nk = 3");
    assert_eq!(
        errors(&text),
        ["7:8: pipeline \"temperature\": model.kind \"dbscan\" is not supported (accepted: \"forecast\" | \"regression\" | \"classification\" | \"kmeans\" | \"recommend\" | \"anomaly\")"]
    );
}

#[test]
fn duplicate_pipeline_name_is_reported_at_the_duplicate() {
    let text = format!("{PIPELINE}{PIPELINE}");
    assert_eq!(
        errors(&text),
        ["11:8: pipeline \"temperature\": name is already used by the pipeline at line 3 (pipeline names must be unique)"]
    );
}

#[test]
fn invalid_pipeline_name_is_rejected() {
    let text = PIPELINE.replace("name = \"temperature\"", "name = \"room temp\"");
    assert_eq!(
        errors(&text),
        ["3:8: pipeline #1: name must match [A-Za-z0-9_-]+ (it is used in topics and state keys) (got \"room temp\")"]
    );
}

#[test]
fn a_config_without_pipelines_is_rejected() {
    let message = "[[pipelines]]: at least one pipeline is required (add a [[pipelines]] table)";
    assert_eq!(errors("[mqtt]\nport = 1883\n"), [format!("1:1: {message}")]);
    assert_eq!(errors("\npipelines = []\n"), [format!("2:13: {message}")]);
    assert_eq!(
        errors("[pipelines]\nname = \"a\"\n"),
        ["1:1: pipelines must be an array of tables: write [[pipelines]], not [pipelines]"]
    );
}

#[test]
fn password_without_username_is_rejected() {
    assert_eq!(
        errors(&format!("[mqtt]\npassword = \"secret\"\n{PIPELINE}")),
        ["2:12: [mqtt]: password is set but username is not (MQTT sends a password only with a user name)"]
    );
}

#[test]
fn time_unit_without_time_is_rejected() {
    let text = PIPELINE.replace("fields =", "time_unit = \"ms\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:13: pipeline \"temperature\": time_unit is set but time is not (set time to the JSON pointer of the event time, e.g. time = \"/ts\")"]
    );
}

#[test]
fn unknown_time_unit_lists_the_accepted_units() {
    let text = PIPELINE.replace("fields =", "time = \"/ts\"\ntime_unit = \"us\"\nfields =");
    assert_eq!(
        errors(&text),
        ["6:13: pipeline \"temperature\": time_unit must be \"auto\", \"s\", \"ms\" or \"rfc3339\" (got \"us\")"]
    );
}

#[test]
fn toml_syntax_error_is_one_error_with_its_location() {
    assert_eq!(
        errors("[mqtt]\nport = 1883\nhost = \"a\n"),
        ["3:10: TOML syntax error: invalid character in string: `\\n`"]
    );
    assert_eq!(
        errors("[mqtt]\nport = 1\nport = 2\n"),
        ["3:1: TOML syntax error: duplicate key: `port` (first defined at 2:1)"]
    );
}

#[test]
fn errors_in_every_section_are_all_reported() {
    let text = r#"[mqtt]
port = 70000
[store]
data_dir = ""
[runtime]
mailbox_capacity = 0
[[pipelines]]
name = "a"
topics = ["x/#/y"]
fields = { t = "/t" }
[pipelines.model]
kind = "forecast"
target = "t"
lags = 99
[[pipelines]]
name = "b"
topics = ["y"]
fields = { t = "/t" }
color = "red"
[pipelines.model]
kind = "forecast"
target = "nope"
"#;
    assert_eq!(
        errors(text),
        [
            "2:8: [mqtt]: port must be between 1 and 65535 (got 70000)",
            "4:12: [store]: data_dir must not be empty (a directory path, e.g. \"data\" or \"/var/lib/edgeflow\")",
            "6:20: [runtime]: mailbox_capacity must be at least 1 (got 0)",
            "9:11: pipeline \"a\": topics[0] \"x/#/y\" is not a valid MQTT topic filter: '#' is only allowed as the last level",
            "14:8: pipeline \"a\": model.lags must be between 1 and 32 (got 99)",
            "19:1: pipeline \"b\": unknown key \"color\" (accepted keys: name, from, topics, format, columns, delimiter, header, key, time, time_unit, max_skew, fields, bounds, operators, output, output_qos, max_payload_bytes, model, anomaly)",
            "22:10: pipeline \"b\": model.target \"nope\" is not one of the pipeline's fields (fields: t)",
        ]
    );
}

#[test]
fn error_display_is_file_line_col_message() {
    let errors = parse(&format!("[mqtt]\nport = 0\n{PIPELINE}")).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "gw.toml:2:8: [mqtt]: port must be between 1 and 65535 (got 0)\n"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = PIPELINE.replace("fields =", "output = \"é/{x}\"\nfields =");
    let text = text.replace("[[pipelines]]", "# ünïcödé\n[[pipelines]]");
    let errors = parse(&text).unwrap_err().errors;
    assert_eq!((errors[0].line, errors[0].col), (6, 10));
    let text = format!("[simulate]\ntopic = \"é\"; x\n{PIPELINE}");
    let errors = parse(&text).unwrap_err().errors;
    // `;` is the 12th character of the line but the 13th byte.
    assert_eq!((errors[0].line, errors[0].col), (2, 12));
}

#[test]
fn summary_mentions_every_pipeline_and_the_broker() {
    let text = format!(
        "[mqtt]\nembedded = true\nport = 1999\n{PIPELINE}{}",
        PIPELINE.replace("temperature\"", "humidity\"")
    );
    let summary = valid(&text).summary();
    assert!(
        summary.contains("embedded broker on 127.0.0.1:1999"),
        "{summary}"
    );
    assert!(summary.contains("pipeline \"temperature\""), "{summary}");
    assert!(summary.contains("pipeline \"humidity\""), "{summary}");
    assert!(
        summary.contains("topics: sensors/+/temperature"),
        "{summary}"
    );
    assert!(summary.contains("fields: temp = \"/value\""), "{summary}");
    assert!(
        summary.contains("model: forecast of temp (lags 4, forgetting 0.995, interval z 1.96, horizon 1, damping 0.98, no season)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("output: {DEFAULT_OUTPUT} (qos 0)")),
        "{summary}"
    );
    assert!(summary.contains("checkpoint every 10s"), "{summary}");
    let remote = valid(PIPELINE).summary();
    assert!(remote.contains("mqtt: broker 127.0.0.1:1883"), "{remote}");
}

/// A minimal valid regression pipeline; further model keys can be appended (line 10 on).
const REGRESSION: &str = r#"
[[pipelines]]
name = "power"
topics = ["site/+/power"]
fields = { load = "/load", temp = "/temp", hour = "/hour" }
[pipelines.model]
kind = "regression"
target = "load"
features = ["temp", "hour"]
"#;

/// A minimal valid clustering pipeline; further model keys can be appended (line 10 on).
const KMEANS: &str = r#"
[[pipelines]]
name = "modes"
topics = ["plant/+/machine"]
fields = { power = "/power", vibration = "/vib" }
[pipelines.model]
kind = "kmeans"
features = ["power", "vibration"]
k = 3
"#;

/// A minimal valid classification pipeline; further model keys can be appended (line 10 on).
const CLASSIFICATION: &str = r#"
[[pipelines]]
name = "door"
topics = ["site/+/door"]
fields = { open = "/open", temp = "/temp", hour = "/hour" }
[pipelines.model]
kind = "classification"
target = "open"
features = ["temp", "hour"]
"#;

#[test]
fn full_forecast_config_parses_every_parameter() {
    let text = format!(
        "{PIPELINE}lags = 32\nforgetting = 0.9\ninterval_z = 10\nhorizon = 64\ndamping = 1\nseason = \"1d\"\nseason_bins = 1440\nmin = -40\nmax = 125.5\nhorizon_every = \"15m\"\n[pipelines.anomaly]\nthreshold = 0.999\nlearn_anomalies = true\nwarmup = 0\n"
    );
    let config = valid(&text);
    let pipeline = &config.pipelines[0];
    let params = ForecastParams {
        lags: 32,
        forgetting: 0.9,
        interval_z: 10.0,
        seasons: Seasons::one(SeasonSpec::Duration {
            period_ms: 86_400_000,
            bins: 1440,
        }),
        horizon: 64,
        damping: 1.0,
        min: Some(-40.0),
        max: Some(125.5),
    };
    assert_eq!(
        pipeline.model,
        ModelConfig::Forecast(ForecastConfig {
            target: "temp".into(),
            params,
            horizon_every: Some(HorizonEvery::Interval(Duration::from_secs(900))),
        })
    );
    assert_eq!(
        pipeline.anomaly,
        Some(AnomalyParams {
            threshold: 0.999,
            learn_anomalies: true,
            warmup: 0,
        })
    );
    // The limits the loader accepts are ones the model accepts.
    assert!(Forecaster::new(params).is_ok());

    let steps = valid(&format!("{PIPELINE}season = 10000\n"));
    let ModelConfig::Forecast(forecast) = &steps.pipelines[0].model else {
        panic!("not a forecast: {:?}", steps.pipelines[0].model);
    };
    assert_eq!(
        forecast.params.seasons,
        Seasons::one(SeasonSpec::Steps(10_000))
    );
    let duration = valid(&format!("{PIPELINE}season = \"1h 30m\"\n"));
    let ModelConfig::Forecast(forecast) = &duration.pipelines[0].model else {
        panic!("not a forecast: {:?}", duration.pipelines[0].model);
    };
    assert_eq!(
        forecast.params.seasons,
        Seasons::one(SeasonSpec::Duration {
            period_ms: 5_400_000,
            bins: DEFAULT_SEASON_BINS,
        })
    );
    // Two seasons, in any order, shortest first; a horizon every n readings.
    let two = valid(&format!(
        "{PIPELINE}season = [168, 24]\nhorizon = 48\nhorizon_every = 6\n"
    ));
    let ModelConfig::Forecast(forecast) = &two.pipelines[0].model else {
        panic!("not a forecast: {:?}", two.pipelines[0].model);
    };
    assert_eq!(
        forecast.params.seasons.as_slice(),
        [SeasonSpec::Steps(24), SeasonSpec::Steps(168)]
    );
    assert_eq!(forecast.horizon_every, Some(HorizonEvery::Readings(6)));
    let durations = valid(&format!("{PIPELINE}season = [\"1d\", \"7d\"]\n"));
    let ModelConfig::Forecast(forecast) = &durations.pipelines[0].model else {
        panic!("not a forecast: {:?}", durations.pipelines[0].model);
    };
    assert_eq!(forecast.params.seasons.as_slice().len(), 2);
}

#[test]
fn bad_forecast_seasons_bounds_and_horizon_every_are_located() {
    for (extra, expected) in [
        ("season = [24, \"1d\"]", "not a mix"),
        ("season = [24, 168, 336, 672]", "1 to 3 seasons"),
        ("season = []", "1 to 3 seasons"),
        ("season = [24, 24]", "same length"),
        ("season = [24, 1]", "between 2 and 10000"),
        ("season = [24, true]", "list of them such as [24, 168]"),
        (
            "season = [24, 168]\nseason_bins = 12",
            "only applies to a duration season",
        ),
        ("min = 10\nmax = 5", "model.max must be above model.min"),
        ("min = \"zero\"", "min must be"),
        ("horizon_every = 5", "only applies with horizon > 1"),
        ("horizon = 4\nhorizon_every = 0", "horizon_every must be"),
        (
            "horizon = 4\nhorizon_every = \"soon\"",
            "horizon_every must be",
        ),
    ] {
        let text = format!("{PIPELINE}{extra}\n");
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{extra}: {errors:?}"
        );
    }
}

#[test]
fn full_regression_config_parses_every_parameter() {
    let text = format!(
        "{REGRESSION}algorithm = \"sgd\"\nlearning_rate = 0.5\npower_t = 1\nl2 = 0.25\nforgetting = 1.0\nscale = true\ninterval_z = 2\nexplain = 2\n[pipelines.anomaly]\nthreshold = 0.99999\n"
    );
    let config = valid(&text);
    let pipeline = &config.pipelines[0];
    let params = LinearParams {
        algorithm: LinearAlgorithm::Sgd,
        learning_rate: 0.5,
        power_t: 1.0,
        l2: 0.25,
        forgetting: 1.0,
        scale: true,
        interval_z: 2.0,
    };
    assert_eq!(
        pipeline.model,
        ModelConfig::Regression(RegressionConfig {
            target: "load".into(),
            features: vec!["temp".into(), "hour".into()],
            params,
            explain: Some(2),
        })
    );
    assert_eq!(
        pipeline.anomaly,
        Some(AnomalyParams {
            threshold: 0.99999,
            ..AnomalyParams::default()
        })
    );
    assert!(LinearRegression::new(2, params).is_ok());
    for (algorithm, expected) in [
        ("adagrad", LinearAlgorithm::Adagrad),
        ("rls", LinearAlgorithm::Rls),
    ] {
        let config = valid(&format!(
            "{REGRESSION}algorithm = \"{algorithm}\"\nscale = false\nexplain = true\n"
        ));
        let ModelConfig::Regression(regression) = &config.pipelines[0].model else {
            panic!("not a regression: {:?}", config.pipelines[0].model);
        };
        assert_eq!(regression.params.algorithm, expected);
        assert!(!regression.params.scale);
        assert_eq!(regression.explain, Some(DEFAULT_EXPLAIN_TOP));
    }
}

#[test]
fn full_classification_config_parses_every_parameter() {
    let text = format!(
        "{CLASSIFICATION}algorithm = \"adagrad\"\nalpha = 10\nbeta = 0\nl1 = 0.5\nl2 = 2\nlearning_rate = 0.05\nscale = false\nthreshold = 0.8\npositive = [\"Open\", \"1\"]\nnegative = [\"closed\", \"0\"]\nexplain = false\n"
    );
    let config = valid(&text);
    let params = LogisticParams {
        algorithm: LogisticAlgorithm::Adagrad,
        alpha: 10.0,
        beta: 0.0,
        l1: 0.5,
        l2: 2.0,
        learning_rate: 0.05,
        scale: false,
    };
    assert_eq!(
        config.pipelines[0].model,
        ModelConfig::Classification(ClassificationConfig {
            target: "open".into(),
            features: vec!["temp".into(), "hour".into()],
            params,
            threshold: 0.8,
            positive: vec!["Open".into(), "1".into()],
            negative: vec!["closed".into(), "0".into()],
            explain: None,
        })
    );
    assert_eq!(config.pipelines[0].anomaly, None);
    assert!(LogisticRegression::new(2, params).is_ok());
}

#[test]
fn omitted_model_parameters_take_the_model_defaults() {
    let regression = valid(REGRESSION);
    assert_eq!(
        regression.pipelines[0].model,
        ModelConfig::Regression(RegressionConfig {
            target: "load".into(),
            features: vec!["temp".into(), "hour".into()],
            ..RegressionConfig::default()
        })
    );
    let ModelConfig::Regression(config) = &regression.pipelines[0].model else {
        panic!("not a regression");
    };
    assert_eq!(config.params, LinearParams::default());
    assert_eq!(config.explain, None);

    let classification = valid(CLASSIFICATION);
    let ModelConfig::Classification(config) = &classification.pipelines[0].model else {
        panic!("not a classification");
    };
    assert_eq!(config.params, LogisticParams::default());
    assert_eq!(config.threshold, 0.5);
    assert_eq!(config.positive, ["true", "1", "yes", "positive"]);
    assert_eq!(config.negative, ["false", "0", "no", "negative"]);
    assert_eq!(config.explain, None);

    let forecast = valid(PIPELINE);
    let ModelConfig::Forecast(config) = &forecast.pipelines[0].model else {
        panic!("not a forecast");
    };
    assert_eq!(config.params, ForecastParams::default());
}

#[test]
fn model_accessors_name_kind_target_and_features() {
    let forecast = valid(PIPELINE).pipelines.remove(0).model;
    assert_eq!(
        (forecast.kind(), forecast.target(), forecast.features()),
        ("forecast", Some("temp"), &[][..])
    );
    let regression = valid(REGRESSION).pipelines.remove(0).model;
    assert_eq!(
        (
            regression.kind(),
            regression.target(),
            regression.features()
        ),
        (
            "regression",
            Some("load"),
            &["temp".to_owned(), "hour".to_owned()][..]
        )
    );
    let classification = valid(CLASSIFICATION).pipelines.remove(0).model;
    assert_eq!(
        (classification.kind(), classification.target()),
        ("classification", Some("open"))
    );
    assert_eq!(classification.features(), ["temp", "hour"]);
    assert_eq!(classification.output_field(), "open");
    let kmeans = valid(KMEANS).pipelines.remove(0).model;
    assert_eq!(
        (kmeans.kind(), kmeans.target(), kmeans.output_field()),
        ("kmeans", None, "cluster")
    );
    assert_eq!(kmeans.features(), ["power", "vibration"]);
}

#[test]
fn parameters_of_another_kind_are_named_as_such() {
    let text = format!("{REGRESSION}lags = 4\nalpha = 0.1\nseason = 24\nlag = 1\n");
    assert_eq!(
        errors(&text),
        [
            "10:1: pipeline \"power\": model.lags is not a parameter of kind \"regression\" (it belongs to kind \"forecast\")",
            "11:1: pipeline \"power\": model.alpha is not a parameter of kind \"regression\" (it belongs to kind \"classification\")",
            "12:1: pipeline \"power\": model.season is not a parameter of kind \"regression\" (it belongs to kind \"forecast\")",
            "13:1: pipeline \"power\": unknown key \"model.lag\" (accepted keys: kind, target, features, algorithm, learning_rate, power_t, l2, forgetting, scale, interval_z, explain)",
        ]
    );
    let text = format!("{PIPELINE}features = [\"temp\"]\nthreshold = 0.5\nexplain = true\n");
    assert_eq!(
        errors(&text),
        [
            "9:1: pipeline \"temperature\": model.features is not a parameter of kind \"forecast\" (it belongs to kinds \"regression\", \"classification\", \"kmeans\" and \"anomaly\")",
            "10:1: pipeline \"temperature\": model.threshold is not a parameter of kind \"forecast\" (it belongs to kinds \"classification\" and \"anomaly\")",
            "11:1: pipeline \"temperature\": model.explain is not a parameter of kind \"forecast\" (it belongs to kinds \"regression\" and \"classification\")",
        ]
    );
    let text = format!("{CLASSIFICATION}power_t = 0.5\ninterval_z = 2\n");
    assert_eq!(
        errors(&text),
        [
            "10:1: pipeline \"door\": model.power_t is not a parameter of kind \"classification\" (it belongs to kind \"regression\")",
            "11:1: pipeline \"door\": model.interval_z is not a parameter of kind \"classification\" (it belongs to kinds \"forecast\" and \"regression\")",
        ]
    );
}

#[test]
fn number_payloads_only_feed_forecasts() {
    let text = "[[pipelines]]\nname = \"p\"\ntopics = [\"p/+\"]\nformat = \"number\"\n[pipelines.model]\nkind = \"regression\"\ntarget = \"value\"\nfeatures = [\"value\"]\n";
    assert_eq!(
        errors(text),
        ["6:8: pipeline \"p\": model.kind \"regression\" needs format = \"json\": a format = \"number\" payload is one bare number, so there are no features to predict it from (use kind = \"forecast\", or send JSON)"]
    );
    let text = text
        .replace("\"regression\"", "\"classification\"")
        .replace("features = [\"value\"]\n", "features = [\"other\"]\n");
    assert_eq!(
        errors(&text),
        ["6:8: pipeline \"p\": model.kind \"classification\" needs format = \"json\": a format = \"number\" payload is one bare number, so there are no features to predict it from (use kind = \"forecast\", or send JSON)"]
    );
}

#[test]
fn features_must_be_distinct_fields_other_than_the_target() {
    let text = REGRESSION.replace(
        "features = [\"temp\", \"hour\"]",
        "features = [\"temp\", \"load\", \"wind\", \"temp\"]",
    );
    assert_eq!(
        errors(&text),
        [
            "9:21: pipeline \"power\": model.features[1] \"load\" is the model's target (a model cannot predict a field from itself)",
            "9:29: pipeline \"power\": model.features[2] \"wind\" is not one of the pipeline's fields (fields: load, temp, hour)",
            "9:37: pipeline \"power\": model.features[3] \"temp\" is already listed as model.features[0] (list each feature once)",
        ]
    );
    let text = CLASSIFICATION.replace("features = [\"temp\", \"hour\"]", "features = []");
    assert_eq!(
        errors(&text),
        ["9:12: pipeline \"door\": model.features must list at least one of the pipeline's fields to predict from, e.g. features = [\"humidity\"]"]
    );
    let text = CLASSIFICATION.replace("features = [\"temp\", \"hour\"]\n", "");
    assert_eq!(
        errors(&text),
        ["6:1: pipeline \"door\": missing required key \"model.features\""]
    );
    let text = REGRESSION.replace("[\"temp\", \"hour\"]", "[\"temp\", 3]");
    assert_eq!(
        errors(&text),
        ["9:21: pipeline \"power\": model.features[1] must be a string (got an integer)"]
    );
}

#[test]
fn more_than_64_features_are_rejected() {
    let names: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
    let fields = names
        .iter()
        .map(|name| format!("{name} = \"/{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let list = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = REGRESSION
        .replace(
            "{ load = \"/load\", temp = \"/temp\", hour = \"/hour\" }",
            &format!("{{ load = \"/load\", {fields} }}"),
        )
        .replace("[\"temp\", \"hour\"]", &format!("[{list}]"));
    assert_eq!(
        errors(&text),
        ["9:12: pipeline \"power\": model.features must list at most 64 fields (got 65)"]
    );
}

#[test]
fn forecast_parameters_out_of_range_are_reported_at_each_key() {
    let text = format!("{PIPELINE}horizon = 65\ndamping = 0\nseason = 1\n");
    assert_eq!(
        errors(&text),
        [
            "9:11: pipeline \"temperature\": model.horizon must be between 1 and 64 (got 65)",
            "10:11: pipeline \"temperature\": model.damping must be greater than 0 and at most 1 (got 0)",
            "11:10: pipeline \"temperature\": model.season must be between 2 and 10000 readings, or a duration such as \"1d\" (got 1)",
        ]
    );
    let text = format!("{PIPELINE}season = \"daily\"\nseason_bins = 24\n");
    assert_eq!(
        errors(&text),
        ["9:10: pipeline \"temperature\": model.season must be a number of readings such as 48 or a duration such as \"1d\" (got \"daily\": expected number at 0)"]
    );
    let text = format!("{PIPELINE}season = 2.5\n");
    assert_eq!(
        errors(&text),
        ["9:10: pipeline \"temperature\": model.season must be a number of readings such as 48, a duration string such as \"1d\", or a list of them such as [24, 168] (got a float)"]
    );
}

#[test]
fn season_bins_need_a_duration_season() {
    assert_eq!(
        errors(&format!("{PIPELINE}season = 24\nseason_bins = 12\n")),
        ["10:15: pipeline \"temperature\": model.season_bins only applies to a duration season such as season = \"1d\" (season = 24 counts readings and has no bins)"]
    );
    assert_eq!(
        errors(&format!("{PIPELINE}season_bins = 12\n")),
        ["9:15: pipeline \"temperature\": model.season_bins is set but season is not (season_bins divides a duration season such as season = \"1d\" into phase bins)"]
    );
    assert_eq!(
        errors(&format!("{PIPELINE}season = \"1d\"\nseason_bins = 1441\n")),
        ["10:15: pipeline \"temperature\": model.season_bins must be between 2 and 1440 (got 1441)"]
    );
}

#[test]
fn duration_season_must_be_whole_milliseconds_within_a_year() {
    assert_eq!(
        errors(&format!("{PIPELINE}season = \"500us\"\n")),
        ["9:10: pipeline \"temperature\": model.season must be at least 1ms (got 500us)"]
    );
    assert_eq!(
        errors(&format!("{PIPELINE}season = \"1ms 500us\"\n")),
        ["9:10: pipeline \"temperature\": model.season must be a whole number of milliseconds (got 1ms 500us)"]
    );
    assert_eq!(
        errors(&format!("{PIPELINE}season = \"2y\"\n")),
        ["9:10: pipeline \"temperature\": model.season must be at most a year (got 2years)"]
    );
}

#[test]
fn regression_parameters_out_of_range_are_reported_at_each_key() {
    let text = format!(
        "{REGRESSION}algorithm = \"adam\"\nlearning_rate = 0\npower_t = 2\nl2 = -1\nforgetting = 0.5\nscale = 1\ninterval_z = 11\nexplain = 0\n"
    );
    assert_eq!(
        errors(&text),
        [
            "10:13: pipeline \"power\": model.algorithm must be \"adagrad\", \"sgd\" or \"rls\" for kind \"regression\" (got \"adam\")",
            "11:17: pipeline \"power\": model.learning_rate must be greater than 0 and at most 10 (got 0)",
            "12:11: pipeline \"power\": model.power_t must be between 0 and 1 (got 2)",
            "13:6: pipeline \"power\": model.l2 must be finite and at least 0 (got -1)",
            "14:14: pipeline \"power\": model.forgetting must be between 0.9 and 1.0 (got 0.5)",
            "15:9: pipeline \"power\": model.scale must be true or false (got an integer)",
            "16:14: pipeline \"power\": model.interval_z must be greater than 0 and at most 10 (got 11)",
            "17:11: pipeline \"power\": model.explain must be true (top 3), false (off) or a number of features between 1 and 64 (got 0)",
        ]
    );
    assert_eq!(
        errors(&format!("{REGRESSION}explain = \"all\"\n")),
        ["10:11: pipeline \"power\": model.explain must be true, false or a number of features such as 3 (got a string)"]
    );
}

#[test]
fn sgd_learning_rate_must_stay_below_the_divergence_limit() {
    assert_eq!(
        errors(&format!(
            "{REGRESSION}algorithm = \"sgd\"\nlearning_rate = 0.7\n"
        )),
        ["11:17: pipeline \"power\": model.learning_rate must be less than 2/(1 + 2 features) = 2/3 with algorithm = \"sgd\" on scaled features (got 0.7); larger steps diverge"]
    );
    // Unscaled features have no such limit.
    valid(&format!(
        "{REGRESSION}algorithm = \"sgd\"\nlearning_rate = 0.7\nscale = false\n"
    ));
    // With the default rate, the limit is reached at 19 features: reported at `algorithm`.
    let names: Vec<String> = (0..19).map(|i| format!("f{i}")).collect();
    let fields = names
        .iter()
        .map(|name| format!("{name} = \"/{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let list = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = REGRESSION
        .replace(
            "{ load = \"/load\", temp = \"/temp\", hour = \"/hour\" }",
            &format!("{{ load = \"/load\", {fields} }}"),
        )
        .replace("[\"temp\", \"hour\"]", &format!("[{list}]"));
    assert_eq!(
        errors(&format!("{text}algorithm = \"sgd\"\n")),
        ["10:13: pipeline \"power\": model.algorithm \"sgd\" on scaled features needs learning_rate < 2/(1 + 19 features) = 2/20, and the default is 0.1 (set a smaller learning_rate, or use algorithm = \"adagrad\")"]
    );
    valid(&format!(
        "{text}algorithm = \"sgd\"\nlearning_rate = 0.09\n"
    ));
}

#[test]
fn classification_parameters_out_of_range_are_reported_at_each_key() {
    let text = format!(
        "{CLASSIFICATION}algorithm = \"rls\"\nalpha = 0\nbeta = -1\nl1 = inf\nl2 = nan\nlearning_rate = 11\nthreshold = 1\n"
    );
    assert_eq!(
        errors(&text),
        [
            "10:13: pipeline \"door\": model.algorithm must be \"ftrl\" or \"adagrad\" for kind \"classification\" (got \"rls\")",
            "11:9: pipeline \"door\": model.alpha must be greater than 0 and at most 10 (got 0)",
            "12:8: pipeline \"door\": model.beta must be finite and at least 0 (got -1)",
            "13:6: pipeline \"door\": model.l1 must be finite and at least 0 (got inf)",
            "14:6: pipeline \"door\": model.l2 must be finite and at least 0 (got NaN)",
            "15:17: pipeline \"door\": model.learning_rate must be greater than 0 and at most 10 (got 11)",
            "16:13: pipeline \"door\": model.threshold must be greater than 0 and less than 1 (got 1)",
        ]
    );
}

#[test]
fn label_lists_must_be_non_empty_and_disjoint() {
    let text = format!("{CLASSIFICATION}positive = []\nnegative = [\"no\", \"\"]\n");
    assert_eq!(
        errors(&text),
        [
            "10:12: pipeline \"door\": model.positive must list at least one label text, e.g. positive = [\"yes\"]",
            "11:19: pipeline \"door\": model.negative[1] must not be empty (a missing or null label already means \"no label\")",
        ]
    );
    let text =
        format!("{CLASSIFICATION}positive = [\"open\", \"ON\"]\nnegative = [\"closed\", \"on\"]\n");
    assert_eq!(
        errors(&text),
        ["11:23: pipeline \"door\": model.negative[1] \"on\" is also a positive label (model.positive[1] \"ON\"; labels are compared ignoring ASCII case)"]
    );
    // The defaults of one list are not checked against a list given for the other: writing
    // `positive = ["0"]` replaces the positive list only, so "0" is then in both.
    let text = format!("{CLASSIFICATION}positive = [\"0\"]\n");
    valid(&text);
}

#[test]
fn anomaly_detection_needs_a_forecast_or_a_regression() {
    let text = format!("{CLASSIFICATION}[pipelines.anomaly]\nthreshold = 0.9999\n");
    assert_eq!(
        errors(&text),
        ["10:1: pipeline \"door\": anomaly detection is not available with model.kind \"classification\" (only with \"forecast\" or \"regression\": it flags readings far from the predicted value; remove [pipelines.anomaly])"]
    );
    let text = format!("{PIPELINE}[pipelines.anomaly]\n");
    assert_eq!(
        valid(&text).pipelines[0].anomaly,
        Some(AnomalyParams::default())
    );
}

#[test]
fn anomaly_parameters_are_checked_at_each_key() {
    let text = format!(
        "{PIPELINE}[pipelines.anomaly]\nthreshold = 0\nlearn_anomalies = \"no\"\nwarmup = -1\nwindow = 5\n"
    );
    assert_eq!(
        errors(&text),
        [
            "10:13: pipeline \"temperature\": anomaly.threshold must be between 0 and 1, exclusive: the rarity of a flagged reading, such as 0.9999 for one in ten thousand (got 0)",
            "11:19: pipeline \"temperature\": anomaly.learn_anomalies must be true or false (got a string)",
            "12:10: pipeline \"temperature\": anomaly.warmup must be at least 0 (got -1)",
            "13:1: pipeline \"temperature\": unknown key \"anomaly.window\" (accepted keys: threshold, learn_anomalies, warmup)",
        ]
    );
    let text = PIPELINE.replace("[[pipelines]]", "[[pipelines]]\nanomaly = 4");
    assert_eq!(
        errors(&text),
        ["3:11: pipeline \"temperature\": anomaly must be a table (got an integer)"]
    );
}

#[test]
fn summary_describes_each_model_kind() {
    let text = format!(
        "{}{}explain = 4\n[pipelines.anomaly]\nthreshold = 0.999\n{}algorithm = \"adagrad\"\npositive = [\"open\"]\nexplain = true\n",
        PIPELINE.replace("target = \"temp\"", "target = \"temp\"\nseason = \"1d\"\nseason_bins = 24"),
        REGRESSION,
        CLASSIFICATION
    );
    let summary = valid(&text).summary();
    for expected in [
        "model: forecast of temp (lags 4, forgetting 0.995, interval z 1.96, horizon 1, damping 0.98, season 1day in 24 bins)",
        "model: regression of load on temp, hour (adagrad, learning rate 0.1, l2 0, forgetting 0.999, scaled features, interval z 1.96)",
        "explain: top 4 features",
        "anomaly: flag readings with anomaly_score over 0.999 (rarer than 1 in 1000 in normal operation) after 100 readings, anomalies learnt winsorised",
        "model: classification of open on temp, hour (adagrad, learning rate 0.2, l2 0, scaled features, threshold 0.5)",
        "labels: positive = true, \"open\"; negative = false, \"false\", \"0\", \"no\", \"negative\"",
        "explain: top 3 features",
        "anomaly: off",
    ] {
        assert!(summary.contains(expected), "{expected}\nnot in\n{summary}");
    }
}

#[test]
fn full_kmeans_config_parses_every_parameter() {
    let text = format!(
        "{KMEANS}half_life = 250.5\nseed = 7\nscale = false\nlloyd_iterations = 0\ndying_fraction = 0\n"
    );
    let config = valid(&text);
    let params = KMeansParams {
        k: 3,
        half_life: 250.5,
        seed: 7,
        lloyd_iterations: 0,
        dying_fraction: 0.0,
        scale: false,
    };
    assert_eq!(
        config.pipelines[0].model,
        ModelConfig::KMeans(KMeansConfig {
            features: vec!["power".into(), "vibration".into()],
            params,
        })
    );
    assert_eq!(
        config.pipelines[0].output.as_str(),
        "edgeflow/{pipeline}/{key}/cluster"
    );
    assert!(OnlineKMeans::new(params, 2).is_ok());
}

#[test]
fn omitted_kmeans_parameters_take_the_online_defaults() {
    let config = valid(KMEANS);
    let ModelConfig::KMeans(kmeans) = &config.pipelines[0].model else {
        panic!("not a kmeans: {:?}", config.pipelines[0].model);
    };
    assert_eq!(kmeans.params, KMeansParams::online_default(3));
}

#[test]
fn kmeans_needs_k_and_features_and_takes_no_target() {
    let text = KMEANS.replace("k = 3\n", "target = \"power\"\n");
    assert_eq!(
        errors(&text),
        [
            "6:1: pipeline \"modes\": missing required key \"model.k\" (the number of clusters, between 1 and 64, e.g. k = 4)",
            "9:1: pipeline \"modes\": model.target does not apply to kind \"kmeans\": a clustering has no target, it groups readings by their features (remove target, and list the fields to cluster in features)",
        ]
    );
    let text = KMEANS.replace("features = [\"power\", \"vibration\"]\n", "");
    assert_eq!(
        errors(&text),
        ["6:1: pipeline \"modes\": missing required key \"model.features\""]
    );
    let text = KMEANS.replace("[\"power\", \"vibration\"]", "[]");
    assert_eq!(
        errors(&text),
        ["8:12: pipeline \"modes\": model.features must list at least one of the pipeline's fields to cluster, e.g. features = [\"humidity\"]"]
    );
    let text = KMEANS.replace(
        "[\"power\", \"vibration\"]",
        "[\"power\", \"temp\", \"power\"]",
    );
    assert_eq!(
        errors(&text),
        [
            "8:22: pipeline \"modes\": model.features[1] \"temp\" is not one of the pipeline's fields (fields: power, vibration)",
            "8:30: pipeline \"modes\": model.features[2] \"power\" is already listed as model.features[0] (list each feature once)",
        ]
    );
}

#[test]
fn kmeans_parameters_out_of_range_are_reported_at_each_key() {
    let text = KMEANS.replace("k = 3", "k = 65")
        + "half_life = 0.5\nseed = -1\nscale = 1\nlloyd_iterations = 101\ndying_fraction = 0.6\n";
    assert_eq!(
        errors(&text),
        [
            "9:5: pipeline \"modes\": model.k must be between 1 and 64 (got 65)",
            "10:13: pipeline \"modes\": model.half_life must be a finite number of readings, at least 1 (got 0.5)",
            "11:8: pipeline \"modes\": model.seed must be at least 0 (got -1)",
            "12:9: pipeline \"modes\": model.scale must be true or false (got an integer)",
            "13:20: pipeline \"modes\": model.lloyd_iterations must be between 0 and 100 (got 101)",
            "14:18: pipeline \"modes\": model.dying_fraction must be between 0 and 0.5 (got 0.6)",
        ]
    );
    assert_eq!(
        errors(&KMEANS.replace("k = 3", "k = 0")),
        ["9:5: pipeline \"modes\": model.k must be between 1 and 64 (got 0)"]
    );
    assert_eq!(
        errors(&format!("{KMEANS}half_life = inf\n")),
        ["10:13: pipeline \"modes\": model.half_life must be a finite number of readings, at least 1 (got inf)"]
    );
}

#[test]
fn kmeans_parameters_and_other_kinds_parameters_do_not_mix() {
    let text = format!("{PIPELINE}k = 4\nhalf_life = 100\n");
    assert_eq!(
        errors(&text),
        [
            "9:1: pipeline \"temperature\": model.k is not a parameter of kind \"forecast\" (it belongs to kind \"kmeans\")",
            "10:1: pipeline \"temperature\": model.half_life is not a parameter of kind \"forecast\" (it belongs to kind \"kmeans\")",
        ]
    );
    let text = format!("{CLASSIFICATION}seed = 1\n");
    assert_eq!(
        errors(&text),
        ["10:1: pipeline \"door\": model.seed is not a parameter of kind \"classification\" (it belongs to kind \"kmeans\")"]
    );
    let text = format!("{KMEANS}threshold = 0.5\nlags = 2\nexplain = true\nclusters = 4\n");
    assert_eq!(
        errors(&text),
        [
            "10:1: pipeline \"modes\": model.threshold is not a parameter of kind \"kmeans\" (it belongs to kinds \"classification\" and \"anomaly\")",
            "11:1: pipeline \"modes\": model.lags is not a parameter of kind \"kmeans\" (it belongs to kind \"forecast\")",
            "12:1: pipeline \"modes\": model.explain is not a parameter of kind \"kmeans\" (it belongs to kinds \"regression\" and \"classification\")",
            "13:1: pipeline \"modes\": unknown key \"model.clusters\" (accepted keys: kind, features, k, half_life, seed, scale, lloyd_iterations, dying_fraction)",
        ]
    );
}

#[test]
fn anomaly_detection_is_rejected_for_kmeans() {
    let text = format!("{KMEANS}[pipelines.anomaly]\n");
    assert_eq!(
        errors(&text),
        ["10:1: pipeline \"modes\": anomaly detection is not available with model.kind \"kmeans\" (only with \"forecast\" or \"regression\": it flags readings far from the predicted value; a clustering publishes each reading's distance to its cluster instead; remove [pipelines.anomaly])"]
    );
}

#[test]
fn kmeans_can_cluster_the_one_value_of_a_number_payload() {
    let text = "[[pipelines]]\nname = \"meter\"\ntopics = [\"meters/+/power\"]\nformat = \"number\"\n[pipelines.model]\nkind = \"kmeans\"\nfeatures = [\"value\"]\nk = 2\n";
    let config = valid(text);
    assert_eq!(config.pipelines[0].model.features(), ["value"]);
    let text = senml_pipeline("", "kind = \"kmeans\"\nfeatures = [\"value\"]\nk = 2");
    assert_eq!(valid(&text).pipelines[0].model.kind(), "kmeans");
}

#[test]
fn summary_describes_a_kmeans_model() {
    let summary = valid(&format!("{KMEANS}seed = 5\n")).summary();
    for expected in [
        "model: kmeans of power, vibration (k 3, half-life 1000 readings, seed 5, scaled features, 10 Lloyd iterations, dying fraction 0.000001)",
        "warm-up: the first 24 readings of each key are buffered (cluster null), then seed the clusters",
        "anomaly: off",
        "output: edgeflow/{pipeline}/{key}/cluster (qos 0)",
    ] {
        assert!(summary.contains(expected), "{expected}\nnot in\n{summary}");
    }
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, PIPELINE).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.source, path);
    assert_eq!(config.pipelines.len(), 1);
}

#[test]
fn unreadable_file_is_one_error_at_line_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let errors = load(&path).unwrap_err().errors;
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (1, 1));
    assert_eq!(errors[0].file, path);
    assert!(
        errors[0]
            .message
            .starts_with("cannot read the config file: "),
        "{}",
        errors[0].message
    );
}

#[test]
fn non_utf8_file_is_reported_at_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[mqtt]\nhost = \"caf\xe9\"\n").unwrap();
    let errors = load(&path).unwrap_err().errors;
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (2, 12));
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(errors) = load(&path) {
                panic!("{} is invalid:\n{errors}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no example configs found in {}", dir.display());
}

#[test]
fn mutated_configs_never_panic() {
    // Every single-character deletion and a few replacements of a full config: the loader
    // must answer with a config or located errors, never a panic.
    let text = format!(
        "[mqtt]\nusername = \"u\"\npassword = \"p\"\nkeep_alive = \"30s\"\n[simulate]\nrate = 5\n{PIPELINE}lags = 4\n{}",
        PIPELINE.replace("temperature\"", "other\"")
    );
    assert_mutations_answer(&text, &['"', '[', '0', 'é', '#']);
}

/// Every copy of `text` with one character removed, or replaced by one of `replacements`,
/// parses to a config or to located errors (shared by the config test modules).
pub(super) fn assert_mutations_answer(text: &str, replacements: &[char]) {
    let chars: Vec<char> = text.chars().collect();
    for index in 0..chars.len() {
        let replacements = std::iter::once(None).chain(replacements.iter().copied().map(Some));
        for replacement in replacements {
            let mut mutated = chars.clone();
            match replacement {
                None => {
                    mutated.remove(index);
                }
                Some(c) => mutated[index] = c,
            }
            let mutated: String = mutated.into_iter().collect();
            if let Err(errors) = parse(&mutated) {
                assert!(!errors.errors.is_empty());
                for error in &errors.errors {
                    assert!(error.line >= 1 && error.col >= 1, "{error}");
                }
            }
        }
    }
}

// ---- payload formats ----------------------------------------------------------------------

/// A CSV pipeline; `{extra}` lines go after `format` (line 5 on).
fn csv_pipeline(extra: &str) -> String {
    format!(
        "[[pipelines]]\nname = \"env\"\ntopics = [\"env/+\"]\nformat = \"csv\"\n{extra}\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"temp\"\n"
    )
}

/// A SenML pipeline; `{extra}` lines go after `format` (line 5 on).
fn senml_pipeline(extra: &str, model: &str) -> String {
    format!(
        "[[pipelines]]\nname = \"meter\"\ntopics = [\"meters/+\"]\nformat = \"senml\"\n{extra}\n[pipelines.model]\n{model}\n"
    )
}

#[test]
fn csv_format_reads_columns_delimiter_and_header() {
    let config = valid(&csv_pipeline(
        "columns = [\"ts\", \"sensor\", \"temp\", \"hum\"]\ndelimiter = \";\"\nheader = true\nkey = \"/sensor\"\ntime = \"/ts\"\ntime_unit = \"s\"\nfields = { temp = \"/temp\", hum = \"/hum\" }",
    ));
    let pipeline = &config.pipelines[0];
    assert_eq!(
        pipeline.format,
        PayloadFormat::Csv(CsvConfig {
            columns: vec!["ts".into(), "sensor".into(), "temp".into(), "hum".into()],
            delimiter: b';',
            header: true,
        })
    );
    assert_eq!(pipeline.key, KeySource::Pointer("/sensor".into()));
    assert_eq!(
        pipeline.time,
        Some(TimeSource {
            pointer: "/ts".into(),
            unit: TimeUnit::Seconds
        })
    );
    assert_eq!(pipeline.fields[1].pointer, "/hum");
    // Defaults: a comma, no header line.
    let config = valid(&csv_pipeline(
        "columns = [\"temp\"]\nfields = { temp = \"/temp\" }",
    ));
    assert_eq!(
        config.pipelines[0].format,
        PayloadFormat::Csv(CsvConfig {
            columns: vec!["temp".into()],
            delimiter: DEFAULT_CSV_DELIMITER,
            header: false,
        })
    );
    let tab = valid(&csv_pipeline(
        "columns = [\"temp\"]\ndelimiter = \"\\t\"\nfields = { temp = \"/temp\" }",
    ));
    assert!(matches!(&tab.pipelines[0].format, PayloadFormat::Csv(c) if c.delimiter == b'\t'));
}

#[test]
fn csv_format_needs_distinct_non_empty_columns() {
    assert_eq!(
        errors(&csv_pipeline("fields = { temp = \"/temp\" }")),
        ["1:1: pipeline \"env\": missing required key \"columns\" (format = \"csv\" names the cells of a line, e.g. columns = [\"ts\", \"sensor\", \"temp\"])"]
    );
    assert_eq!(
        errors(&csv_pipeline(
            "columns = \"ts\"\nfields = { temp = \"/temp\" }"
        )),
        ["5:11: pipeline \"env\": columns must be an array of strings (got a string)"]
    );
    assert_eq!(
        errors(&csv_pipeline("columns = []\nfields = { temp = \"/temp\" }")),
        ["5:11: pipeline \"env\": columns must name at least one column, e.g. columns = [\"ts\", \"sensor\", \"temp\"]"]
    );
    assert_eq!(
        errors(&csv_pipeline(
            "columns = [\"temp\", \"\", \"temp\"]\ndelimiter = \"ab\"\nfields = { temp = \"/temp\" }"
        )),
        [
            "5:20: pipeline \"env\": columns[1] must not be empty",
            "5:24: pipeline \"env\": columns[2] \"temp\" is already columns[0] (column names must be distinct)",
            "6:13: pipeline \"env\": delimiter must be one ASCII character other than '\"' and line breaks, e.g. \";\" or \"\\t\" (got \"ab\")",
        ]
    );
    for bad in ["\\\"", "\\n", "é", ""] {
        let text = csv_pipeline(&format!(
            "columns = [\"temp\"]\ndelimiter = \"{bad}\"\nfields = {{ temp = \"/temp\" }}"
        ));
        let found = errors(&text);
        assert!(
            found.len() == 1 && found[0].starts_with("6:13: pipeline \"env\": delimiter must be"),
            "{bad}: {found:?}"
        );
    }
}

#[test]
fn csv_pointers_must_name_a_column() {
    let text = csv_pipeline(
        "columns = [\"ts\", \"sensor\", \"temp\"]\nkey = \"/id\"\ntime = \"/time\"\nfields = { temp = \"/temp/c\", hum = \"/hum\" }",
    );
    assert_eq!(
        errors(&text),
        [
            "6:7: pipeline \"env\": key \"/id\" names no column (columns: ts, sensor, temp)",
            "7:8: pipeline \"env\": time \"/time\" names no column (columns: ts, sensor, temp)",
            "8:19: pipeline \"env\": fields.temp \"/temp/c\" must name one column, \"/column\" (a CSV line has no nesting; a '/' in a column name is written \"~1\")",
            "8:36: pipeline \"env\": fields.hum \"/hum\" names no column (columns: ts, sensor, temp)",
        ]
    );
    assert_eq!(
        errors(&csv_pipeline("columns = [\"temp\"]")),
        ["1:1: pipeline \"env\": missing required key \"fields\" (format = \"csv\" reads each field from a column, e.g. fields = { temp = \"/temp\" })"]
    );
}

#[test]
fn csv_settings_are_rejected_for_other_formats() {
    let text = PIPELINE.replace(
        "fields =",
        "columns = [\"a\"]\ndelimiter = \";\"\nheader = true\nfields =",
    );
    assert_eq!(
        errors(&text),
        [
            "5:11: pipeline \"temperature\": columns only applies to format = \"csv\" (this pipeline has format = \"json\")",
            "6:13: pipeline \"temperature\": delimiter only applies to format = \"csv\" (this pipeline has format = \"json\")",
            "7:10: pipeline \"temperature\": header only applies to format = \"csv\" (this pipeline has format = \"json\")",
        ]
    );
}

#[test]
fn unknown_format_lists_the_accepted_formats() {
    let text = PIPELINE.replace("fields =", "format = \"xml\"\nfields =");
    assert_eq!(
        errors(&text),
        ["5:10: pipeline \"temperature\": format must be \"json\", \"number\", \"csv\" or \"senml\" (got \"xml\")"]
    );
}

#[test]
fn senml_defaults_to_one_reading_per_record_of_its_value() {
    let config = valid(&senml_pipeline(
        "",
        "kind = \"forecast\"\ntarget = \"value\"",
    ));
    let pipeline = &config.pipelines[0];
    assert_eq!(pipeline.format, PayloadFormat::Senml);
    assert_eq!(pipeline.key, KeySource::RecordName);
    assert_eq!(pipeline.time, None);
    assert_eq!(
        pipeline.fields,
        [FieldConfig {
            name: "value".into(),
            pointer: DEFAULT_SENML_VALUE.into()
        }]
    );
    for value in ["v", "vb", "s"] {
        let config = valid(&senml_pipeline(
            &format!("key = \"name\"\nfields = {{ x = \"{value}\" }}"),
            "kind = \"forecast\"\ntarget = \"x\"",
        ));
        assert_eq!(config.pipelines[0].fields[0].pointer, value);
    }
}

#[test]
fn senml_record_fields_read_one_value() {
    let forecast = "kind = \"forecast\"\ntarget = \"x\"";
    assert_eq!(
        errors(&senml_pipeline("fields = { x = \"/x\" }", forecast)),
        ["5:16: pipeline \"meter\": fields.x \"/x\" must be \"v\", \"vb\", \"s\" or \"vs\": with key = \"name\" each SenML record is a reading and its field reads one of these values (to read records by name, \"/voltage\", use key = \"basename\" or a topic key)"]
    );
    assert_eq!(
        errors(&senml_pipeline("fields = { x = \"v\", y = \"vb\" }", forecast)),
        ["5:10: pipeline \"meter\": fields must have exactly one entry when format = \"senml\" and key = \"name\" (each record is a reading with one value) (got 2 entries)"]
    );
    // A string value is a label: a forecast target cannot read it.
    assert_eq!(
        errors(&senml_pipeline("fields = { x = \"vs\" }", forecast)),
        ["5:16: pipeline \"meter\": fields.x = \"vs\" reads a SenML string value, which only the target of kind = \"classification\" (a label) can use (use \"v\", \"vb\" or \"s\")"]
    );
}

#[test]
fn senml_record_readings_only_feed_forecasts() {
    let text = senml_pipeline(
        "",
        "kind = \"regression\"\ntarget = \"value\"\nfeatures = [\"value\"]",
    );
    assert_eq!(
        errors(&text),
        ["7:8: pipeline \"meter\": model.kind \"regression\" needs several fields: with format = \"senml\" and key = \"name\" each record is a reading with one value, so there are no features to predict it from (use key = \"basename\" to make one reading of the records of one base name and time, or kind = \"forecast\")"]
    );
}

#[test]
fn senml_grouped_fields_name_records_relative_to_the_base_name() {
    let model = "kind = \"regression\"\ntarget = \"power\"\nfeatures = [\"voltage\", \"current\"]";
    let config = valid(&senml_pipeline(
        "key = \"basename\"\nfields = { power = \"/power\", voltage = \"/voltage\", current = \"/a~1b\" }",
        model,
    ));
    assert_eq!(config.pipelines[0].key, KeySource::BaseName);
    assert_eq!(config.pipelines[0].fields[2].pointer, "/a~1b");
    let topic = valid(&senml_pipeline(
        "key = \"topic[1]\"\nfields = { power = \"/power\", voltage = \"/voltage\", current = \"/current\" }",
        model,
    ));
    assert_eq!(topic.pipelines[0].key, KeySource::TopicLevel(1));
    assert_eq!(
        errors(&senml_pipeline(
            "key = \"basename\"\nfields = { power = \"v\", voltage = \"/a/b\", current = \"current\" }",
            model
        )),
        [
            "6:20: pipeline \"meter\": fields.power \"v\" selects a record's value, which only key = \"name\" does; with key = \"basename\" or a topic key each field names a SenML record relative to the base name, e.g. \"/temperature\"",
            "6:35: pipeline \"meter\": fields.voltage \"/a/b\" must name one SenML record, \"/name\" (relative to the base name; a '/' in a record name is written \"~1\")",
            "6:53: pipeline \"meter\": fields.current \"current\" is not a JSON pointer: a JSON pointer is \"\" (the whole payload) or starts with \"/\"",
        ]
    );
    assert_eq!(
        errors(&senml_pipeline("key = \"basename\"", "kind = \"forecast\"\ntarget = \"x\"")),
        ["1:1: pipeline \"meter\": missing required key \"fields\" (with key = \"basename\" or a topic key, each field names a SenML record relative to the base name, e.g. fields = { voltage = \"/voltage\" })"]
    );
}

#[test]
fn senml_time_comes_from_the_records() {
    let forecast = "kind = \"forecast\"\ntarget = \"value\"";
    assert_eq!(
        errors(&senml_pipeline("time = \"/t\"\ntime_unit = \"s\"", forecast)),
        ["5:8: pipeline \"meter\": time cannot be set when format = \"senml\": each SenML record carries its own time (bt + t, RFC 8428; remove time)"]
    );
    assert_eq!(
        errors(&senml_pipeline("time_unit = \"s\"", forecast)),
        ["5:13: pipeline \"meter\": time_unit does not apply to format = \"senml\" (SenML times are seconds, RFC 8428)"]
    );
}

#[test]
fn senml_keys_and_formats_must_match() {
    let forecast = "kind = \"forecast\"\ntarget = \"value\"";
    assert_eq!(
        errors(&senml_pipeline("key = \"/device\"", forecast)),
        ["5:7: pipeline \"meter\": key \"/device\" is a JSON pointer, but a SenML pack is read record by record (use \"name\", \"basename\", \"topic\" or \"topic[N]\")"]
    );
    for key in ["name", "basename"] {
        let text = PIPELINE.replace("fields =", &format!("key = \"{key}\"\nfields ="));
        assert_eq!(
            errors(&text),
            [format!("5:7: pipeline \"temperature\": key \"{key}\" names a SenML record, so it needs format = \"senml\" (this pipeline has format = \"json\")")]
        );
    }
}

#[test]
fn http_defaults_to_loopback_and_rejects_a_bad_address() {
    let config = valid(PIPELINE);
    assert!(config.http.enabled);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9883");
    assert_eq!(
        errors(&format!(
            "[http]\nlisten = \"localhost\"\nport = 1\n{PIPELINE}"
        )),
        [
            "2:10: [http]: listen must be an IP address and port such as \"127.0.0.1:9883\" or \"[::1]:9883\" (got \"localhost\")",
            "3:1: [http]: unknown key \"port\" (accepted keys: enabled, listen)",
        ]
    );
}

/// `[mqtt.tls]` tests: the PEM files live in a temporary directory next to the config file,
/// named relative to it.
mod tls {
    use super::*;
    use crate::tls::test_pki;

    /// Parse `text` as `dir/gw.toml`.
    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
        parse_str(&dir.join("gw.toml"), text)
    }

    /// The errors of `text` parsed as `dir/gw.toml`, as `line:col: message`, with `dir`
    /// written as `DIR`.
    fn errors_in(dir: &Path, text: &str) -> Vec<String> {
        match parse_in(dir, text) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| {
                    format!("{}:{}: {}", e.line, e.col, e.message)
                        .replace(&dir.display().to_string(), "DIR")
                })
                .collect(),
        }
    }

    const MUTUAL: &str = "[mqtt]\nhost = \"localhost\"\nusername = \"gw\"\npassword = \"s3cret\"\n\
                          [mqtt.tls]\nca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\n\
                          client_key = \"client.key\"\n";

    #[test]
    fn tls_table_turns_tls_on_with_paths_relative_to_the_config_and_port_8883() {
        let dir = tempfile::tempdir().unwrap();
        let files = test_pki::write(dir.path(), "test CA");
        let config = parse_in(dir.path(), &format!("{MUTUAL}{PIPELINE}")).unwrap();
        assert_eq!(config.mqtt.port, DEFAULT_TLS_PORT);
        assert_eq!(config.mqtt.username.as_deref(), Some("gw"));
        assert_eq!(
            config.mqtt.tls,
            Some(TlsConfig {
                ca_file: Some(files.ca.clone()),
                client_auth: Some(ClientAuthConfig {
                    cert_file: files.client_cert.clone(),
                    key_file: files.client_key.clone(),
                }),
                server_name: None,
            })
        );
        let summary = config.summary();
        assert!(
            summary.contains(&format!(
                "mqtt tls: on, trusting the CA certificates in {}, client certificate {} (key {}), broker certificate checked for \"localhost\"",
                files.ca.display(),
                files.client_cert.display(),
                files.client_key.display()
            )),
            "{summary}"
        );
    }

    #[test]
    fn explicit_port_and_server_name_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        test_pki::write(dir.path(), "test CA");
        let text = format!(
            "[mqtt]\nhost = \"10.0.0.5\"\nport = 18883\n[mqtt.tls]\nca_file = \"ca.pem\"\nserver_name = \"broker.site.example\"\n{PIPELINE}"
        );
        let config = parse_in(dir.path(), &text).unwrap();
        assert_eq!(config.mqtt.port, 18883);
        let tls = config.mqtt.tls.as_ref().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("broker.site.example"));
        assert_eq!(tls.client_auth, None);
        assert!(config.summary().contains(
            "no client certificate, broker certificate checked for \"broker.site.example\""
        ));
    }

    #[test]
    fn without_tls_the_summary_says_plaintext() {
        let summary = valid(PIPELINE).summary();
        assert!(summary.contains("mqtt tls: off (plaintext)"), "{summary}");
    }

    #[test]
    fn enabled_false_keeps_plaintext_and_reads_no_file() {
        let config = valid(&format!(
            "[mqtt.tls]\nenabled = false\nca_file = \"missing.pem\"\n{PIPELINE}"
        ));
        assert_eq!(config.mqtt.tls, None);
        assert_eq!(config.mqtt.port, 1883);
    }

    #[test]
    fn missing_file_is_reported_at_its_key_with_the_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            errors_in(
                dir.path(),
                &format!("[mqtt.tls]\nca_file = \"missing.pem\"\n{PIPELINE}")
            ),
            ["2:11: [mqtt]: tls.ca_file \"DIR/missing.pem\": cannot read the file: No such file or directory (os error 2)"]
        );
    }

    #[test]
    fn file_without_certificates_is_reported_at_its_key() {
        let dir = tempfile::tempdir().unwrap();
        test_pki::write(dir.path(), "test CA");
        std::fs::write(dir.path().join("empty.pem"), "not PEM at all\n").unwrap();
        let text = format!(
            "[mqtt.tls]\nca_file = \"ca.pem\"\nclient_cert = \"empty.pem\"\nclient_key = \"client.key\"\n{PIPELINE}"
        );
        assert_eq!(
            errors_in(dir.path(), &text),
            ["3:15: [mqtt]: tls.client_cert \"DIR/empty.pem\": no certificate in the file (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")"]
        );
        // A certificate where the key should be.
        let text = format!(
            "[mqtt.tls]\nca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.pem\"\n{PIPELINE}"
        );
        let errors = errors_in(dir.path(), &text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "4:14: [mqtt]: tls.client_key \"DIR/client.pem\": no private key in the file"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn key_of_another_certificate_is_reported_at_client_key() {
        let dir = tempfile::tempdir().unwrap();
        test_pki::write(dir.path(), "test CA");
        let text = format!(
            "[mqtt.tls]\nca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"server.key\"\n{PIPELINE}"
        );
        assert_eq!(
            errors_in(dir.path(), &text),
            ["4:14: [mqtt]: tls.client_key \"DIR/server.key\": the key does not belong to the certificate in tls.client_cert (DIR/client.pem)"]
        );
    }

    #[test]
    fn client_cert_and_key_come_in_pairs() {
        assert_eq!(
            errors(&format!("[mqtt.tls]\nclient_cert = \"gw.pem\"\n{PIPELINE}")),
            ["2:15: [mqtt]: tls.client_cert is set but tls.client_key is not (a client certificate needs its private key: set both or neither)"]
        );
        assert_eq!(
            errors(&format!("[mqtt.tls]\nclient_key = \"gw.key\"\n{PIPELINE}")),
            ["2:14: [mqtt]: tls.client_key is set but tls.client_cert is not (a client key needs its certificate: set both or neither)"]
        );
    }

    #[test]
    fn file_problems_are_reported_with_the_other_tls_problems() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[mqtt.tls]\nca_file = \"missing.pem\"\nclient_cert = \"gw.pem\"\nserver_name = \"a b\"\n{PIPELINE}"
        );
        assert_eq!(
            errors_in(dir.path(), &text),
            [
                "2:11: [mqtt]: tls.ca_file \"DIR/missing.pem\": cannot read the file: No such file or directory (os error 2)",
                "3:15: [mqtt]: tls.client_cert is set but tls.client_key is not (a client certificate needs its private key: set both or neither)",
                "4:15: [mqtt]: tls.server_name must be a DNS name or an IP address (got \"a b\": invalid dns name)",
            ]
        );
        // An unusable ca_file is not silently replaced by the system trust store.
        assert_eq!(
            errors(&format!("[mqtt.tls]\nca_file = 7\n{PIPELINE}")),
            ["2:11: [mqtt]: tls.ca_file must be a string (got an integer)"]
        );
    }

    #[test]
    fn tls_with_the_embedded_broker_is_rejected() {
        assert_eq!(
            errors(&format!("[mqtt]\nembedded = true\n[mqtt.tls]\nca_file = \"ca.pem\"\n{PIPELINE}")),
            ["3:1: [mqtt]: tls cannot be used with embedded = true: the embedded broker listens without TLS on 127.0.0.1 (remove [mqtt.tls] or set tls.enabled = false)"]
        );
    }

    #[test]
    fn names_must_be_dns_names_or_addresses() {
        assert_eq!(
            errors(&format!(
                "[mqtt]\nhost = \"broker host\"\n[mqtt.tls]\nserver_name = \"not a name\"\n{PIPELINE}"
            )),
            [
                "2:8: [mqtt]: host \"broker host\" cannot be used with TLS: it must be a DNS name or an IP address (the broker's certificate is checked against it)",
                "4:15: [mqtt]: tls.server_name must be a DNS name or an IP address (got \"not a name\": invalid dns name)",
            ]
        );
    }

    #[test]
    fn tls_keys_are_checked_like_any_other() {
        let accepted = "enabled, ca_file, client_cert, client_key, server_name";
        assert_eq!(
            errors(&format!(
                "[mqtt.tls]\ncafile = \"ca.pem\"\nenabled = \"yes\"\nca_file = \"\"\n{PIPELINE}"
            )),
            [
                format!("2:1: [mqtt]: unknown key \"tls.cafile\" (accepted keys: {accepted})"),
                "3:11: [mqtt]: tls.enabled must be true or false (got a string)".into(),
                "4:11: [mqtt]: tls.ca_file must not be empty (the path of a PEM file)".into(),
            ]
        );
        assert_eq!(
            errors(&format!("[mqtt]\ntls = true\n{PIPELINE}")),
            ["2:7: [mqtt]: tls must be a table (got a boolean)"]
        );
    }

    #[test]
    fn offline_loading_does_not_open_the_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            format!("[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\"\n{PIPELINE}"),
        )
        .unwrap();
        let config = load_offline(&path).unwrap();
        assert_eq!(
            config.mqtt.tls.and_then(|tls| tls.ca_file),
            Some(PathBuf::from("/nonexistent/ca.pem"))
        );
        let errors = load(&path).unwrap_err();
        assert_eq!(errors.errors.len(), 1);
        assert_eq!((errors.errors[0].line, errors.errors[0].col), (2, 11));
    }
}

#[test]
fn the_anomaly_warm_up_defaults_to_two_seasons_of_a_forecast() {
    let warmup = |model: &str, anomaly: &str| {
        let text = format!("{PIPELINE}{model}\n[pipelines.anomaly]\n{anomaly}\n");
        valid(&text).pipelines[0].anomaly.map(|a| a.warmup)
    };
    assert_eq!(warmup("", ""), Some(100));
    assert_eq!(warmup("season = 24", ""), Some(100));
    assert_eq!(warmup("season = [24, 168]", ""), Some(336));
    assert_eq!(warmup("season = \"1d\"", ""), Some(100));
    assert_eq!(warmup("season = 168", "warmup = 5"), Some(5));
}

#[test]
fn max_skew_defaults_to_an_hour_and_is_checked() {
    let timed = PIPELINE.replace("fields =", "time = \"/ts\"\nfields =");
    assert_eq!(valid(&timed).pipelines[0].max_skew, DEFAULT_MAX_SKEW);
    let set = timed.replace("fields =", "max_skew = \"2d\"\nfields =");
    assert_eq!(
        valid(&set).pipelines[0].max_skew,
        Duration::from_secs(2 * 86_400)
    );
    let zero = errors(&timed.replace("fields =", "max_skew = \"0s\"\nfields ="));
    assert_eq!(zero.len(), 1, "{zero:?}");
    assert!(
        zero[0].contains("max_skew must be at least 1s (got 0s)"),
        "{zero:?}"
    );
    let untimed = errors(&PIPELINE.replace("fields =", "max_skew = \"1h\"\nfields ="));
    assert_eq!(untimed.len(), 1, "{untimed:?}");
    assert!(
        untimed[0].contains("max_skew is set but the pipeline has no event time"),
        "{untimed:?}"
    );
}

/// A forecast pipeline with two fields and `bounds` written as `line` (line 5 of the file).
fn with_bounds(line: &str) -> String {
    format!(
        "[[pipelines]]\nname = \"t\"\ntopics = [\"s/+/t\"]\nfields = {{ temp = \"/value\", rh = \"/h\" }}\n{line}\n[pipelines.model]\nkind = \"forecast\"\ntarget = \"temp\"\n"
    )
}

#[test]
fn bounds_are_read_in_file_order_with_an_open_end_infinite() {
    let text = with_bounds("bounds = { temp = { min = -50, max = 150.5 }, rh = { min = 0 } }");
    let config = valid(&text);
    assert_eq!(
        config.pipelines[0].bounds,
        [
            FieldBounds {
                field: "temp".into(),
                min: -50.0,
                max: 150.5,
            },
            FieldBounds {
                field: "rh".into(),
                min: 0.0,
                max: f64::INFINITY,
            },
        ]
    );
    // The table form is the same setting.
    let config = valid(&with_bounds("[pipelines.bounds]\nrh = { max = 100 }"));
    assert_eq!(
        config.pipelines[0].bounds,
        [FieldBounds {
            field: "rh".into(),
            min: f64::NEG_INFINITY,
            max: 100.0,
        }]
    );
    assert!(valid(PIPELINE).pipelines[0].bounds.is_empty());
}

#[test]
fn bad_bounds_are_located() {
    for (line, at, message) in [
        (
            "bounds = { temp = { min = 150, max = -50 } }",
            "{ min = 150",
            "bounds.temp: min must be less than max (got min = 150, max = -50)",
        ),
        (
            "bounds = { temp = { min = 5, max = 5 } }",
            "{ min = 5",
            "bounds.temp: min must be less than max (got min = 5, max = 5)",
        ),
        (
            "bounds = { pressure = { min = 0 } }",
            "pressure",
            "bounds.pressure: \"pressure\" is not one of the pipeline's fields (fields: temp, rh)",
        ),
        (
            "bounds = { temp = { min = nan } }",
            "nan",
            "bounds.temp: min must be finite (got NaN)",
        ),
        (
            "bounds = { temp = { max = inf } }",
            "inf",
            "bounds.temp: max must be finite (got inf)",
        ),
        (
            "bounds = { temp = { min = \"cold\" } }",
            "\"cold\"",
            "bounds.temp: min must be a number (got a string)",
        ),
        (
            "bounds = { temp = { low = 0 } }",
            "low",
            "bounds.temp: unknown key \"low\" (accepted: min, max)",
        ),
        (
            "bounds = { temp = {} }",
            "{}",
            "bounds.temp: needs min, max or both, e.g. { min = -50, max = 150 }",
        ),
        (
            "bounds = { temp = 5 }",
            "5",
            "bounds.temp: must be { min = a, max = b } (got an integer)",
        ),
        (
            "bounds = 5",
            "5",
            "bounds must be a table of field = { min = a, max = b } entries, e.g. bounds = { temp = { min = -50, max = 150 } } (got an integer)",
        ),
    ] {
        let col = line.find(at).expect("the located text is in the line") + 1;
        assert_eq!(
            errors(&with_bounds(line)),
            [format!("5:{col}: pipeline \"t\": {message}")],
            "{line}"
        );
    }
}

#[test]
fn every_bad_bound_is_reported() {
    let line = "bounds = { temp = { min = 1, max = 0 }, rh = { min = inf } }";
    let errors = errors(&with_bounds(line));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("bounds.temp: min must be less than max"));
    assert!(errors[1].contains("bounds.rh: min must be finite"));
}

#[test]
fn bounds_on_a_label_are_rejected() {
    let text = "[[pipelines]]\nname = \"c\"\ntopics = [\"s/+/c\"]\nfields = { x = \"/x\", ok = \"/ok\" }\nbounds = { ok = { max = 1 }, x = { max = 1 } }\n[pipelines.model]\nkind = \"classification\"\ntarget = \"ok\"\nfeatures = [\"x\"]\n";
    assert_eq!(
        errors(text),
        ["5:12: pipeline \"c\": bounds.ok: \"ok\" is a classification label, not a number a range applies to"]
    );
}

#[test]
fn the_default_client_id_is_portable_distinct_and_stable() {
    let a = client_id_for("gateway-kitchen-01", "/etc/edgeflow/edgeflow.toml");
    assert_eq!(
        a,
        client_id_for("gateway-kitchen-01", "/etc/edgeflow/edgeflow.toml")
    );
    assert!(a.starts_with("ef-gateway-"), "{a}");
    // The output connection's id too.
    let output = format!("{a}-{}", crate::mqtt::OUTPUT_CLIENT_SUFFIX);
    assert!(output.len() <= PORTABLE_CLIENT_ID_LEN, "{output}");
    // Another file on the same host, the same file on a host whose name differs only after
    // the part shown: other ids.
    assert_ne!(
        a,
        client_id_for("gateway-kitchen-01", "/etc/edgeflow/other.toml")
    );
    assert_ne!(
        a,
        client_id_for("gateway-kitchen-02", "/etc/edgeflow/edgeflow.toml")
    );
    // Characters a broker may refuse are replaced; an empty host name still gives an id.
    let odd = client_id_for("gw.local_ü", "/x");
    assert!(
        odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{odd}"
    );
    assert!(client_id_for("", "/x").starts_with("ef-host-"));
    // Written in the file: used as it is.
    let text = format!("[mqtt]\nclient_id = \"gw-7\"\n{PIPELINE}");
    assert_eq!(valid(&text).mqtt.client_id, "gw-7");
}

#[test]
fn clean_session_is_auto_true_or_false() {
    let with = |value: &str| {
        let text = format!("[mqtt]\nclean_session = {value}\n{PIPELINE}");
        valid(&text).mqtt
    };
    assert_eq!(with("\"auto\"").clean_session, None);
    assert!(with("\"auto\"").persistent_session());
    assert!(!with("true").persistent_session());
    assert!(with("false").persistent_session());
    let qos0 = valid(&format!("[mqtt]\nsubscribe_qos = 0\n{PIPELINE}")).mqtt;
    assert!(!qos0.persistent_session(), "QoS 0: clean unless asked");
    assert_eq!(
        errors(&format!("[mqtt]\nclean_session = \"never\"\n{PIPELINE}")),
        ["2:17: [mqtt]: clean_session must be true, false or \"auto\" (got \"never\")"]
    );
    assert_eq!(
        errors(&format!("[mqtt]\nclean_session = 1\n{PIPELINE}")),
        ["2:17: [mqtt]: clean_session must be true, false or \"auto\" (got an integer)"]
    );
}

#[test]
fn every_default_topic_template_parses_with_the_placeholders_of_its_setting() {
    use crate::topic::{Placeholder as P, TopicTemplate};
    let output = [P::Pipeline, P::Key, P::Field];
    for (template, allowed) in [
        (DEFAULT_OUTPUT, &output[..]),
        (DEFAULT_REGRESSION_OUTPUT, &output),
        (DEFAULT_CLASSIFICATION_OUTPUT, &output),
        (DEFAULT_KMEANS_OUTPUT, &output),
        (DEFAULT_ANOMALY_OUTPUT, &output),
        (DEFAULT_RECOMMEND_OUTPUT, &output),
        (DEFAULT_SIMILAR_OUTPUT, &[P::Pipeline, P::Key]),
        (DEFAULT_CLASSIFIER_OUTPUT, &[P::Classifier, P::Key]),
        (DEFAULT_CLASSIFIER_CENTRES_OUTPUT, &[P::Classifier]),
        (&SimulateConfig::default().topic, &[P::Sensor]),
    ] {
        let parsed = TopicTemplate::parse(template, allowed);
        assert!(parsed.is_ok(), "{template}: {parsed:?}");
        assert_eq!(parsed.ok(), Some(TopicTemplate::builtin(template)));
    }
}
