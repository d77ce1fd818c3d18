//! Item-item cosine recommendations (`kind = "recommend"`): lists after events and on
//! request, similar items, the popular fallback, bounded memory, and the daemon over MQTT
//! (lists on request equal replay's, and survive a restart).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use edgeflow::config::Config;
use edgeflow::model::SplitMix64;

fn config(dir: &Path, port: u16, max_items: usize) -> Config {
    let text = format!(
        r#"
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "edgeflow-recommend"
reconnect_min = "50ms"
reconnect_max = "500ms"

[store]
data_dir = "{data}"
checkpoint_interval = "100ms"

[runtime]
shards = 2
shutdown_deadline = "5s"

[http]
listen = "127.0.0.1:0"

[[pipelines]]
name = "shop"
topics = ["shop/events"]
key = "/user"
fields = {{ item = "/item", weight = "/type" }}

[pipelines.model]
kind = "recommend"
item = "item"
weight = "weight"
event_weights = {{ view = 1, cart = 3, purchase = 5 }}
history = 10
max_items = {max_items}
max_neighbours = 50
top_n = 5
requests = ["shop/requests"]
"#,
        data = dir.join("data").display()
    );
    load(&write_config(dir, &text))
}

/// Items `c0`…`c9` of category `c`; user `u` shops in category `u % 3`.
fn item(category: usize, i: usize) -> String {
    format!("{}{i}", ["tea", "bike", "lamp"][category])
}

/// A seeded shopping stream: each user views, carts and buys items of their category.
fn events(users: usize, per_user: usize, rng: &mut SplitMix64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for round in 0..per_user {
        for u in 0..users {
            let category = u % 3;
            let i = rng.below(8);
            let kind = ["view", "view", "cart", "purchase"][(round + u) % 4];
            out.push((
                "shop/events".to_string(),
                format!(
                    "{{\"user\":\"u{u:02}\",\"item\":\"{}\",\"type\":\"{kind}\"}}",
                    item(category, i)
                ),
            ));
        }
    }
    out
}

fn request(body: &str) -> (String, String) {
    ("shop/requests".to_string(), body.to_string())
}

fn replay(
    config: &Config,
    input: &[(String, String)],
) -> (
    Vec<(String, serde_json::Value)>,
    edgeflow::replay::ReplaySummary,
) {
    let mut replayer = edgeflow::replay::Replayer::new(config).expect("replayer");
    let mut out = Vec::new();
    replayer
        .run(replay_input(input).as_bytes(), &mut out)
        .expect("replay");
    let lines = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                v["topic"].as_str().expect("topic").to_string(),
                v["payload"].clone(),
            )
        })
        .collect();
    (lines, replayer.summary())
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["item"].as_str().expect("item").to_string())
        .collect()
}

#[test]
fn lists_recommend_what_similar_users_took_and_exclude_what_the_user_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1883, 1000);
    let mut rng = SplitMix64::new(3);
    let mut input = events(30, 12, &mut rng);
    input.push(request(r#"{"user":"u04"}"#));
    input.push(request(r#"{"item":"tea3"}"#));
    input.push(request(r#"{"user":"newcomer"}"#));
    input.push(request(r#"{"item":"unknown-item"}"#));
    input.push(request(r#"{"nothing":1}"#));
    let (outputs, summary) = replay(&config, &input);

    // One list per event, then one per valid request.
    let lists: Vec<&(String, serde_json::Value)> = outputs
        .iter()
        .filter(|(topic, _)| topic.starts_with("edgeflow/shop/"))
        .collect();
    assert_eq!(lists.len(), 30 * 12 + 4);
    let p = &summary.pipelines[0];
    assert_eq!(p.kind, "recommend");
    assert_eq!(
        p.decode_errors.get("bad_event"),
        Some(&1),
        "the request without user or item"
    );
    let r = p.recommender.as_ref().expect("recommender summary");
    assert_eq!(r.requests, 4);
    assert_eq!(r.items, 24, "8 items in each of 3 categories");

    // u04 shops in category 1 (bikes): its list holds bikes it does not have.
    let (topic, u04) = &outputs[outputs.len() - 4];
    assert_eq!(topic, "edgeflow/shop/u04/recommendations");
    assert_eq!(u04["item"], serde_json::Value::Null);
    assert_eq!(u04["popular"], false);
    let recommended = names(u04);
    assert!(!recommended.is_empty());
    assert!(
        recommended.iter().all(|i| i.starts_with("bike")),
        "{recommended:?}"
    );
    let last_of_u04: Vec<String> = outputs
        .iter()
        .filter(|(t, m)| t == "edgeflow/shop/u04/recommendations" && m["item"].is_string())
        .map(|(_, m)| m["item"].as_str().expect("item").to_string())
        .collect();
    for had in &last_of_u04[last_of_u04.len().saturating_sub(10)..] {
        assert!(!recommended.contains(had), "{had} is in u04's history");
    }
    let scores: Vec<f64> = u04["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // Similar items of tea3 are teas, with cosines in (0, 1].
    let (topic, similar) = &outputs[outputs.len() - 3];
    assert_eq!(topic, "edgeflow/shop/items/tea3/similar");
    let teas = names(similar);
    assert_eq!(teas.len(), 5);
    assert!(
        teas.iter().all(|i| i.starts_with("tea") && i != "tea3"),
        "{teas:?}"
    );
    // A user never seen gets the most popular items.
    let (_, newcomer) = &outputs[outputs.len() - 2];
    assert_eq!(newcomer["popular"], true);
    assert_eq!(names(newcomer).len(), 5);
    // An unknown item has no similar items.
    let (_, unknown) = &outputs[outputs.len() - 1];
    assert!(names(unknown).is_empty());
}

#[test]
fn a_duplicate_event_changes_no_list_and_memory_stays_under_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1883, 1000);
    let event = |user: &str, item: &str| {
        (
            "shop/events".to_string(),
            format!("{{\"user\":\"{user}\",\"item\":\"{item}\",\"type\":\"view\"}}"),
        )
    };
    let input = vec![
        event("a", "x"),
        event("a", "y"),
        event("b", "x"),
        event("b", "z"),
        event("b", "z"),
        request(r#"{"user":"a"}"#),
    ];
    let (outputs, _) = replay(&config, &input);
    // b's lists after its first and its duplicate z event are the same list.
    assert_eq!(outputs[3].1["items"], outputs[4].1["items"]);
    // a has x and y; z co-occurs with x (through b): a is recommended z.
    assert_eq!(names(&outputs[5].1), ["z"]);

    // Far more items than the budget: the recommender tracks at most max_items.
    let small = config_with_budget(dir.path(), 40);
    let mut rng = SplitMix64::new(9);
    let input: Vec<(String, String)> = (0..3000)
        .map(|i| event(&format!("u{}", i % 50), &format!("i{}", rng.below(400))))
        .collect();
    let (_, summary) = replay(&small, &input);
    let r = summary.pipelines[0].recommender.as_ref().expect("summary");
    // 400 distinct items went through a budget of 40: it is full (items that left every
    // history are dropped, so it can be a little under) and never over.
    assert!((30..=40).contains(&r.items), "{} items", r.items);
    let bound = edgeflow::model::RecommendParams {
        history: 10,
        max_items: 40,
        max_neighbours: 50,
        top_n: 5,
    }
    .memory_bound() as u64;
    assert!(r.memory_bytes <= bound, "{} > {bound}", r.memory_bytes);
}

fn config_with_budget(dir: &Path, max_items: usize) -> Config {
    let sub = dir.join(format!("budget-{max_items}"));
    std::fs::create_dir_all(&sub).expect("dir");
    config(&sub, 1883, max_items)
}

/// The lists `requests` get, by topic.
fn request_lists(outputs: &[(String, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
    outputs
        .iter()
        .filter(|(_, m)| m["item"].is_null() || m["field"] == "similar")
        .map(|(t, m)| {
            let mut m = m.clone();
            m.as_object_mut().map(|o| o.remove("time"));
            (t.clone(), m)
        })
        .collect()
}

/// One message per topic, without its `time` (arrival time in the daemon, line number in
/// replay).
fn without_time(
    got: BTreeMap<String, Vec<serde_json::Value>>,
) -> BTreeMap<String, serde_json::Value> {
    got.into_iter()
        .map(|(t, mut list)| {
            let mut m = list.pop().expect("one per topic");
            m.as_object_mut().map(|o| o.remove("time"));
            (t, m)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_lists_over_mqtt_equal_replay_and_survive_a_restart() {
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let _broker = edgeflow::mqtt::start_embedded(port, 1 << 20).expect("embedded broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), port, 1000);
    let mut rng = SplitMix64::new(21);
    let stream = events(12, 10, &mut rng);
    let requests: Vec<(String, String)> = (0..12)
        .map(|u| request(&format!("{{\"user\":\"u{u:02}\"}}")))
        .chain(
            ["tea1", "bike2", "lamp3"]
                .iter()
                .map(|i| request(&format!("{{\"item\":\"{i}\"}}"))),
        )
        .collect();

    let mut client = TestClient::connect("127.0.0.1", port, "recommend-client").await;
    client.subscribe("edgeflow/#").await;
    let daemon = RunningDaemon::start(config.clone()).await;
    client.publish_all(&stream).await;
    client.receive(stream.len()).await; // one list per event
    client.publish_all(&requests).await;
    let daemon_lists = without_time(client.receive(requests.len()).await);

    // Users are processed on two shards, so the recommender sees their events interleaved in
    // another order than replay; the similarities (and so the lists on request) do not depend
    // on it.
    let mut all = stream.clone();
    all.extend(requests.iter().cloned());
    let (outputs, _) = replay(&config, &all);
    assert_eq!(daemon_lists, request_lists(&outputs));
    daemon.shutdown().await;

    // After a restart: the histories come back with the keys, the similarities from the
    // snapshot written at shutdown; the same requests give the same lists.
    let daemon = RunningDaemon::start(config).await;
    client.publish_all(&requests).await;
    let again = without_time(client.receive(requests.len()).await);
    assert_eq!(again, daemon_lists);
    daemon.shutdown().await;
}

#[test]
fn the_example_config_recommends_for_the_shop_and_the_vending_fleet() {
    let config = load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/recommend.toml"
    )));
    let shop = |user: &str, sku: &str, kind: &str, t: i64| {
        (
            "shop/kiosk-1/events".to_string(),
            format!("{{\"user\":\"{user}\",\"ts\":{t},\"sku\":\"{sku}\",\"type\":\"{kind}\"}}"),
        )
    };
    let sale = |card: &str, product: u32, qty: u32, t: i64| {
        (
            "vending/m7/sales".to_string(),
            format!("{{\"card\":\"{card}\",\"ts\":{t},\"product\":{product},\"qty\":{qty}}}"),
        )
    };
    let t0 = 1_764_064_800_000;
    let input = vec![
        shop("ann", "mug", "purchase", t0),
        shop("ann", "tea", "cart", t0 + 1),
        shop("bob", "mug", "View", t0 + 2),
        // An event type the shop does not weigh: dropped as bad_event.
        shop("bob", "kettle", "return", t0 + 3),
        sale("c-1", 3012, 2, 1_764_064_800),
        sale("c-1", 3020, 1, 1_764_064_801),
        sale("c-2", 3012, 1, 1_764_064_802),
        (
            "vending/requests".to_string(),
            r#"{"user":"c-2"}"#.to_string(),
        ),
        ("shop/requests".to_string(), r#"{"item":"mug"}"#.to_string()),
    ];
    let (outputs, summary) = replay(&config, &input);
    // The shop publishes after each of its 3 valid events; the vending pipeline only on request.
    let topics: Vec<&str> = outputs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "edgeflow/shop/ann/recommendations",
            "edgeflow/shop/ann/recommendations",
            "edgeflow/shop/bob/recommendations",
            "vending/c-2/suggestions",
            "edgeflow/shop/items/mug/similar",
        ]
    );
    // bob viewed the mug that ann bought with tea: bob is recommended tea.
    assert_eq!(names(&outputs[2].1), ["tea"]);
    // c-2 bought 3012 like c-1, who also bought 3020.
    assert_eq!(names(&outputs[3].1), ["3020"]);
    assert_eq!(names(&outputs[4].1), ["tea"]);
    let shop_summary = &summary.pipelines[0];
    assert_eq!(shop_summary.decode_errors.get("bad_event"), Some(&1));
    assert_eq!(
        summary.pipelines[1].recommender.as_ref().map(|r| r.lists),
        Some(1)
    );
}
