//! Loader tests of `kind = "recommend"`: one per rule, with exact locations and messages.

use std::time::Duration;

use super::tests::{assert_mutations_answer, errors, parse, valid};
use super::*;
use crate::model::RecommendParams;

/// A minimal valid recommend pipeline weighted by an event type; further model keys can be
/// appended (line 11 on).
const RECOMMEND: &str = r#"
[[pipelines]]
name = "shop"
topics = ["shop/+/events"]
key = "/user"
fields = { item = "/item", type = "/type" }
[pipelines.model]
kind = "recommend"
item = "item"
weight = "type"
"#;

/// [`RECOMMEND`] followed by `extra`.
fn weighted(extra: &str) -> String {
    format!("{RECOMMEND}{extra}")
}

/// [`RECOMMEND`] without a weight (field `item` only) followed by `extra` (line 10 on).
fn unweighted(extra: &str) -> String {
    RECOMMEND
        .replace(", type = \"/type\"", "")
        .replace("weight = \"type\"\n", "")
        + extra
}

fn recommend_of(config: &Config) -> &RecommendConfig {
    match &config.pipelines[0].model {
        ModelConfig::Recommend(r) => r,
        other => panic!("not a recommend model: {other:?}"),
    }
}

#[test]
fn full_recommend_config_parses_every_key() {
    let text = r#"
[[pipelines]]
name = "shop"
topics = ["shop/+/events"]
format = "json"
key = "/user"
time = "/ts"
fields = { item = "/item", weight = "/type" }

[pipelines.model]
kind = "recommend"
item = "item"
weight = "weight"
event_weights = { view = 1, cart = 3, purchase = 5.5, "add to list" = 0.25 }
history = 100
max_items = 2
max_neighbours = 10000
top_n = 1000
requests = ["shop/requests", "$share/kiosks/kiosk/ask"]
publish = "request"
similar_output = "out/{pipeline}/similar/{key}"
snapshot_interval = "1s"
"#;
    let config = valid(text);
    let pipeline = &config.pipelines[0];
    assert_eq!(
        pipeline.model,
        ModelConfig::Recommend(RecommendConfig {
            item: "item".into(),
            weight: Some("weight".into()),
            // In file order, as written.
            event_weights: vec![
                ("view".into(), 1.0),
                ("cart".into(), 3.0),
                ("purchase".into(), 5.5),
                ("add to list".into(), 0.25),
            ],
            params: RecommendParams {
                history: 100,
                max_items: 2,
                max_neighbours: 10_000,
                top_n: 1000,
            },
            requests: vec![
                crate::topic::TopicFilter::parse("shop/requests").unwrap(),
                crate::topic::TopicFilter::parse("$share/kiosks/kiosk/ask").unwrap()
            ],
            publish_on_event: false,
            similar_output: crate::topic::TopicTemplate::builtin("out/{pipeline}/similar/{key}"),
            snapshot_interval: Duration::from_secs(1),
        })
    );
    // The limits the loader accepts are ones the model accepts.
    assert!(recommend_of(&config).params.validate().is_ok());
    assert_eq!(pipeline.key, KeySource::Pointer("/user".into()));
    assert_eq!(
        pipeline.time,
        Some(TimeSource {
            pointer: "/ts".into(),
            unit: TimeUnit::Auto,
        })
    );
    assert_eq!(pipeline.output.as_str(), DEFAULT_RECOMMEND_OUTPUT);
    assert_eq!(pipeline.anomaly, None);
    assert!(pipeline.operators.is_empty());
    assert_eq!(
        (
            pipeline.model.kind(),
            pipeline.model.target(),
            pipeline.model.output_field()
        ),
        ("recommend", None, RECOMMEND_OUTPUT_FIELD)
    );
}

#[test]
fn omitted_recommend_keys_take_their_defaults() {
    let config = valid(&unweighted(""));
    assert_eq!(
        *recommend_of(&config),
        RecommendConfig {
            item: "item".into(),
            weight: None,
            event_weights: Vec::new(),
            params: RecommendParams::default(),
            requests: Vec::new(),
            publish_on_event: true,
            similar_output: crate::topic::TopicTemplate::builtin(DEFAULT_SIMILAR_OUTPUT),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    );
    assert_eq!(DEFAULT_SNAPSHOT_INTERVAL, Duration::from_secs(15 * 60));
    assert_eq!(
        config.pipelines[0].output.as_str(),
        DEFAULT_RECOMMEND_OUTPUT
    );
    // A weight field without event types: numbers only. `publish = "event"` is the default.
    let config = valid(&weighted("publish = \"event\"\nrequests = []\n"));
    let r = recommend_of(&config);
    assert_eq!(
        (
            r.weight.as_deref(),
            r.event_weights.len(),
            r.publish_on_event
        ),
        (Some("type"), 0, true)
    );
    assert!(r.requests.is_empty());
}

#[test]
fn any_key_source_names_the_user() {
    for (key, expected) in [
        ("topic", KeySource::Topic),
        ("topic[1]", KeySource::TopicLevel(1)),
        ("/user/id", KeySource::Pointer("/user/id".into())),
    ] {
        let text = RECOMMEND.replace("key = \"/user\"", &format!("key = \"{key}\""));
        assert_eq!(valid(&text).pipelines[0].key, expected);
    }
}

#[test]
fn item_is_required_and_must_be_a_field() {
    let text = RECOMMEND.replace("item = \"item\"\n", "");
    assert_eq!(
        errors(&text),
        ["7:1: pipeline \"shop\": missing required key \"model.item\" (the field holding the item of each event, e.g. item = \"item\")"]
    );
    let text = RECOMMEND.replace("item = \"item\"\n", "item = \"sku\"\n");
    assert_eq!(
        errors(&text),
        ["9:8: pipeline \"shop\": model.item \"sku\" is not one of the pipeline's fields (fields: item, type)"]
    );
    let text = RECOMMEND.replace("item = \"item\"\n", "item = 3\n");
    assert_eq!(
        errors(&text),
        ["9:8: pipeline \"shop\": model.item must be a string (got an integer)"]
    );
}

#[test]
fn weight_must_be_another_field() {
    assert_eq!(
        errors(&unweighted("weight = \"kind\"\n")),
        ["10:10: pipeline \"shop\": model.weight \"kind\" is not one of the pipeline's fields (fields: item)"]
    );
    assert_eq!(
        errors(&unweighted("weight = \"item\"\n")),
        ["10:10: pipeline \"shop\": model.weight \"item\" is also model.item (the weight must be read from another field, or left out: every event then weighs 1)"]
    );
}

#[test]
fn event_weights_need_weight_and_valid_entries() {
    assert_eq!(
        errors(&unweighted("event_weights = { view = 1 }\n")),
        ["10:17: pipeline \"shop\": model.event_weights is set but model.weight is not (event types are read from the weight field: set weight to the field holding them, e.g. weight = \"type\")"]
    );
    assert_eq!(
        errors(&weighted("event_weights = {}\n")),
        ["11:17: pipeline \"shop\": model.event_weights must list at least one event type, e.g. event_weights = { view = 1, cart = 3, purchase = 5 } (or remove it when the weight field holds numbers)"]
    );
    assert_eq!(
        errors(&weighted("event_weights = [\"view\"]\n")),
        ["11:17: pipeline \"shop\": model.event_weights must be a table of event type = weight, e.g. event_weights = { view = 1, cart = 3, purchase = 5 } (got an array)"]
    );
    assert_eq!(
        errors(&weighted(
            "event_weights = { view = 0, cart = \"3\", buy = 1025, like = -1, View = 2, \"\" = 1, \"big one\" = nan }\n"
        )),
        [
            "11:26: pipeline \"shop\": model.event_weights.view must be greater than 0 and at most 1024 (got 0)",
            "11:36: pipeline \"shop\": model.event_weights.cart must be a number greater than 0 and at most 1024 (got a string)",
            "11:47: pipeline \"shop\": model.event_weights.buy must be greater than 0 and at most 1024 (got 1025)",
            "11:60: pipeline \"shop\": model.event_weights.like must be greater than 0 and at most 1024 (got -1)",
            "11:64: pipeline \"shop\": model.event_weights.View is the same event type as model.event_weights.view (event types are matched ignoring ASCII case)",
            "11:74: pipeline \"shop\": model.event_weights has an empty event type (\"\"), which no event can carry (an empty or missing weight field weighs 1)",
            "11:94: pipeline \"shop\": model.event_weights.\"big one\" must be greater than 0 and at most 1024 (got NaN)",
        ]
    );
}

#[test]
fn event_types_equal_ignoring_ascii_case_are_one_type() {
    assert_eq!(
        errors(&weighted("event_weights = { view = 1, View = 2, VIEW = 3 }\n")),
        [
            "11:29: pipeline \"shop\": model.event_weights.View is the same event type as model.event_weights.view (event types are matched ignoring ASCII case)",
            "11:39: pipeline \"shop\": model.event_weights.VIEW is the same event type as model.event_weights.view (event types are matched ignoring ASCII case)",
        ]
    );
    // The largest weight is accepted, and so is a tiny one (the model rounds it up to one
    // quantum).
    let config = valid(&weighted("event_weights = { buy = 1024, glance = 1e-6 }\n"));
    assert_eq!(
        recommend_of(&config).event_weights,
        [("buy".to_owned(), 1024.0), ("glance".to_owned(), 1e-6)]
    );
}

#[test]
fn recommend_parameters_out_of_range_are_reported_at_each_key() {
    let text = format!(
        "{RECOMMEND}history = 0\nmax_items = 1\nmax_neighbours = 10001\ntop_n = 0\nsnapshot_interval = \"500ms\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "11:11: pipeline \"shop\": model.history must be between 1 and 100 (got 0)",
            "12:13: pipeline \"shop\": model.max_items must be between 2 and 1000000 (got 1)",
            "13:18: pipeline \"shop\": model.max_neighbours must be between 1 and 10000 (got 10001)",
            "14:9: pipeline \"shop\": model.top_n must be between 1 and 1000 (got 0)",
            "15:21: pipeline \"shop\": model.snapshot_interval must be at least 1s (got 500ms)",
        ]
    );
    let text = format!("{RECOMMEND}history = 101\nmax_items = \"many\"\n");
    assert_eq!(
        errors(&text),
        [
            "11:11: pipeline \"shop\": model.history must be between 1 and 100 (got 101)",
            "12:13: pipeline \"shop\": model.max_items must be an integer (got a string)",
        ]
    );
}

#[test]
fn requests_publish_and_similar_output_are_checked() {
    let text = format!(
        "{RECOMMEND}requests = [\"shop/#/x\", 4]\npublish = \"always\"\nsimilar_output = \"items/{{item}}/similar\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "11:25: pipeline \"shop\": model.requests[1] must be a string (got an integer)",
            "12:11: pipeline \"shop\": model.publish must be \"event\" (a user's list after each of their events, and on request) or \"request\" (only on request) (got \"always\")",
            "13:18: pipeline \"shop\": model.similar_output \"items/{item}/similar\" is not a valid topic template: unknown placeholder {item} (accepted: {pipeline}, {key})",
        ]
    );
    // Lists published only on request need a topic to ask on.
    for requests in ["", "requests = []\n"] {
        let text = format!("{RECOMMEND}{requests}publish = \"request\"\n");
        let line = if requests.is_empty() { 11 } else { 12 };
        assert_eq!(
            errors(&text),
            [format!("{line}:11: pipeline \"shop\": model.publish = \"request\" publishes lists only when asked, but model.requests gives no topic to ask on (add e.g. requests = [\"shop/requests\"], or publish = \"event\")")]
        );
    }
    let text = format!("{RECOMMEND}requests = [\"shop/#/x\"]\n");
    assert_eq!(
        errors(&text),
        ["11:13: pipeline \"shop\": model.requests[0] \"shop/#/x\" is not a valid MQTT topic filter: '#' is only allowed as the last level"]
    );
}

#[test]
fn request_topics_must_not_overlap_the_event_topics() {
    let text = format!("{RECOMMEND}requests = [\"shop/requests\", \"shop/kiosk/+\", \"shop/#\"]\n");
    assert_eq!(
        errors(&text),
        [
            "11:30: pipeline \"shop\": model.requests[1] \"shop/kiosk/+\" overlaps topics[0] \"shop/+/events\": a request on a topic both match would also be read as an event (give requests a topic of their own, outside the event topics)",
            "11:46: pipeline \"shop\": model.requests[2] \"shop/#\" overlaps topics[0] \"shop/+/events\": a request on a topic both match would also be read as an event (give requests a topic of their own, outside the event topics)",
        ]
    );
}

#[test]
fn recommend_reads_json_events_only() {
    let text = RECOMMEND.replace(
        "key = \"/user\"",
        "format = \"csv\"\ncolumns = [\"user\", \"item\", \"type\"]\nkey = \"/user\"",
    );
    assert_eq!(
        errors(&text),
        ["5:10: pipeline \"shop\": format = \"csv\" cannot carry the events of model.kind \"recommend\": they are JSON objects with the item and the weight (use format = \"json\", the default)"]
    );
    let text = "[[pipelines]]\nname = \"p\"\ntopics = [\"p/+\"]\nformat = \"number\"\n[pipelines.model]\nkind = \"recommend\"\nitem = \"value\"\n";
    assert_eq!(
        errors(text),
        ["4:10: pipeline \"p\": format = \"number\" cannot carry the events of model.kind \"recommend\": they are JSON objects with the item and the weight (use format = \"json\", the default)"]
    );
    let text = "[[pipelines]]\nname = \"p\"\ntopics = [\"p/+\"]\nformat = \"senml\"\nkey = \"basename\"\nfields = { item = \"/item\" }\n[pipelines.model]\nkind = \"recommend\"\nitem = \"item\"\n";
    assert_eq!(
        errors(text),
        ["4:10: pipeline \"p\": format = \"senml\" cannot carry the events of model.kind \"recommend\": they are JSON objects with the item and the weight (use format = \"json\", the default)"]
    );
}

#[test]
fn fields_other_than_item_and_weight_are_rejected() {
    let text = unweighted("").replace(
        "fields = { item = \"/item\" }",
        "fields = { price = \"/price\", item = \"/item\", type = \"/type\" }",
    );
    assert_eq!(
        errors(&text),
        [
            "6:12: pipeline \"shop\": fields.price is not read: a recommend pipeline reads only the item (model.item = \"item\") and an optional weight (model.weight) of each event (remove fields.price, or set model.weight = \"price\" if it holds the event's weight)",
            "6:46: pipeline \"shop\": fields.type is not read: a recommend pipeline reads only the item (model.item = \"item\") and an optional weight (model.weight) of each event (remove fields.type, or set model.weight = \"type\" if it holds the event's weight)",
        ]
    );
    let text = weighted("").replace(
        "type = \"/type\" }",
        "type = \"/type\", \"shop id\" = \"/shop\" }",
    );
    assert_eq!(
        errors(&text),
        ["6:44: pipeline \"shop\": fields.\"shop id\" is not read: a recommend pipeline reads only the item (model.item = \"item\") and the weight (model.weight = \"type\") of each event (remove fields.\"shop id\")"]
    );
    // Not repeated when item itself is wrong: that is the one problem to fix.
    let text = weighted("").replace("item = \"item\"\n", "item = \"sku\"\n");
    assert_eq!(
        errors(&text),
        ["9:8: pipeline \"shop\": model.item \"sku\" is not one of the pipeline's fields (fields: item, type)"]
    );
}

#[test]
fn recommend_has_no_target_features_operators_or_anomaly() {
    let text = weighted("target = \"item\"\nfeatures = [\"type\"]\n");
    assert_eq!(
        errors(&text),
        [
            "11:1: pipeline \"shop\": model.target does not apply to kind \"recommend\": there is no target, the key is the user and model.item names the field holding the item (remove target)",
            "12:1: pipeline \"shop\": model.features does not apply to kind \"recommend\": there is no target and there are no features, the key is the user and model.item names the field holding the item (remove features)",
        ]
    );
    let text = weighted("[pipelines.anomaly]\nthreshold = 0.9999\n");
    assert_eq!(
        errors(&text),
        ["11:1: pipeline \"shop\": anomaly detection is not available with model.kind \"recommend\" (only with \"forecast\" or \"regression\": it flags readings far from the predicted value; a recommender predicts no value of an event; remove [pipelines.anomaly])"]
    );
    let text = weighted("[[pipelines.operators]]\nop = \"filter\"\nexpr = \"type > 0\"\n");
    assert_eq!(
        errors(&text),
        ["11:1: pipeline \"shop\": [[pipelines.operators]] cannot be used with model.kind \"recommend\": each event goes to its user's history as decoded (remove the operators)"]
    );
}

#[test]
fn recommend_and_other_kinds_parameters_do_not_mix() {
    let text = weighted("lags = 4\nk = 3\nexplain = true\nhistory_len = 5\n");
    assert_eq!(
        errors(&text),
        [
            "11:1: pipeline \"shop\": model.lags is not a parameter of kind \"recommend\" (it belongs to kind \"forecast\")",
            "12:1: pipeline \"shop\": model.k is not a parameter of kind \"recommend\" (it belongs to kind \"kmeans\")",
            "13:1: pipeline \"shop\": model.explain is not a parameter of kind \"recommend\" (it belongs to kinds \"regression\" and \"classification\")",
            "14:1: pipeline \"shop\": unknown key \"model.history_len\" (accepted keys: kind, item, weight, event_weights, history, max_items, max_neighbours, top_n, requests, publish, similar_output, snapshot_interval)",
        ]
    );
    let forecast = r#"
[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature"]
fields = { temp = "/value" }
[pipelines.model]
kind = "forecast"
target = "temp"
item = "temp"
top_n = 5
"#;
    assert_eq!(
        errors(forecast),
        [
            "9:1: pipeline \"temperature\": model.item is not a parameter of kind \"forecast\" (it belongs to kind \"recommend\")",
            "10:1: pipeline \"temperature\": model.top_n is not a parameter of kind \"forecast\" (it belongs to kind \"recommend\")",
        ]
    );
}

#[test]
fn unknown_kind_lists_recommend() {
    let text = RECOMMEND.replace("kind = \"recommend\"", "kind = \"recommender\"");
    assert_eq!(
        errors(&text),
        ["8:8: pipeline \"shop\": model.kind \"recommender\" is not supported (accepted: \"forecast\" | \"regression\" | \"classification\" | \"kmeans\" | \"recommend\" | \"anomaly\")"]
    );
}

#[test]
fn summary_describes_a_recommend_model() {
    let text = weighted(
        "event_weights = { view = 1, purchase = 5 }\nmax_items = 5000\nmax_neighbours = 50\ntop_n = 8\nrequests = [\"shop/requests\"]\n",
    );
    let summary = valid(&text).summary();
    for expected in [
        "model: recommend items (field item) to users (the key); history 20 items, top 8",
        "weight: field type, a number in (0, 1024] or an event type (view = 1, purchase = 5; ASCII case ignored); missing weighs 1",
        "similarities: at most 5000 items with 50 neighbours each (≤ 4.0 MB), saved every 15m",
        "lists: after each event of the user and on request (shop/requests); similar items on edgeflow/{pipeline}/items/{key}/similar",
        "output: edgeflow/{pipeline}/{key}/recommendations (qos 0)",
    ] {
        assert!(summary.contains(expected), "{expected}\nnot in\n{summary}");
    }
    let summary = valid(&unweighted(
        "publish = \"request\"\nrequests = [\"kiosk/ask\", \"web/ask\"]\n",
    ))
    .summary();
    for expected in [
        "weight: every event weighs 1",
        "similarities: at most 10000 items with 100 neighbours each (≤ 13.9 MB), saved every 15m",
        "lists: on request only (kiosk/ask, web/ask); similar items on",
    ] {
        assert!(summary.contains(expected), "{expected}\nnot in\n{summary}");
    }
    let summary = valid(RECOMMEND).summary();
    let expected = "lists: after each event of the user (no request topics); similar items on";
    assert!(summary.contains(expected), "{expected}\nnot in\n{summary}");
}

#[test]
fn mutated_recommend_configs_never_panic() {
    // Every single-character deletion and a few replacements of a full recommend config: the
    // loader answers with a config or located errors, never a panic.
    let text = weighted(
        "event_weights = { view = 1, cart = 3 }\nhistory = 5\nrequests = [\"shop/ask\"]\npublish = \"request\"\nsimilar_output = \"s/{key}\"\nsnapshot_interval = \"1m\"\n",
    );
    assert!(parse(&text).is_ok());
    assert_mutations_answer(&text, &['"', '[', '0', '{', '#']);
}
