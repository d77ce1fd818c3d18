//! Recommend events: the item as text, the weight as a number or an event type, every bad
//! item or weight dropped as `bad_event` with a message naming the field and what was found.

use super::*;
use crate::config::{CsvConfig, RecommendConfig};

/// Fields `item` (/item) then `type` (/type); user = `/user`; recommend with event types
/// view = 1, cart = 3, purchase = 5.
fn recommend_decoder() -> Decoder {
    recommend_decoder_with(
        KeySource::Pointer("/user".into()),
        None,
        Some("type"),
        &[("view", 1.0), ("cart", 3.0), ("purchase", 5.0)],
    )
}

fn recommend_decoder_with(
    key: KeySource,
    time: Option<(&str, TimeUnit)>,
    weight: Option<&str>,
    event_weights: &[(&str, f64)],
) -> Decoder {
    Decoder::new(&recommend_pipeline(key, time, weight, event_weights))
}

fn recommend_pipeline(
    key: KeySource,
    time: Option<(&str, TimeUnit)>,
    weight: Option<&str>,
    event_weights: &[(&str, f64)],
) -> PipelineConfig {
    let mut fields = vec![("item", "/item")];
    if weight.is_some() {
        fields.push(("type", "/type"));
    }
    let mut p = pipeline(&fields, key, time);
    p.model = ModelConfig::Recommend(RecommendConfig {
        item: "item".into(),
        weight: weight.map(Into::into),
        event_weights: event_weights
            .iter()
            .map(|&(name, weight)| (name.to_owned(), weight))
            .collect(),
        params: crate::model::RecommendParams::default(),
        requests: Vec::new(),
        publish_on_event: true,
        similar_output: crate::topic::TopicTemplate::builtin(crate::config::DEFAULT_SIMILAR_OUTPUT),
        snapshot_interval: crate::config::DEFAULT_SNAPSHOT_INTERVAL,
    });
    p
}

/// `(user, item, [item slot, weight])` of an event that must decode.
#[track_caller]
fn event(decoder: &Decoder, payload: &str) -> (String, String, Vec<f64>) {
    let out = ok(decoder, payload);
    (out.key, out.text, out.values)
}

/// The `bad_event` message of an event that must be dropped.
#[track_caller]
fn bad_event(decoder: &Decoder, payload: &str) -> String {
    let e = err(decoder, payload);
    assert_eq!(e.reason, DropReason::BadEvent, "{payload}: {e}");
    e.to_string()
}

#[track_caller]
fn assert_nan(value: f64) {
    assert!(value.is_nan(), "expected NaN, got {value}");
}

#[test]
fn string_and_integer_items_become_the_text() {
    let d = recommend_decoder();
    assert_eq!(
        event(&d, r#"{"user":"u1","item":"sku-1","type":"view"}"#),
        ("u1".to_owned(), "sku-1".to_owned(), vec![0.0, 1.0])
    );
    // An integer item is its decimal text, like an integer key.
    for (json, text) in [
        ("3012", "3012"),
        ("0", "0"),
        ("-5", "-5"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
    ] {
        let (_, item, values) = event(&d, &format!(r#"{{"user":7,"item":{json},"type":5}}"#));
        assert_eq!(
            (item.as_str(), values[0], values[1]),
            (text, 0.0, 5.0),
            "{json}"
        );
    }
    // Up to 64 bytes, any characters; escapes are unescaped.
    let longest = "é".repeat(32);
    let (_, item, _) = event(&d, &format!(r#"{{"user":"u","item":"{longest}"}}"#));
    assert_eq!(item, longest);
    let (_, item, _) = event(&d, r#"{"user":"u","item":"a\"b\u00e9"}"#);
    assert_eq!(item, "a\"bé");
    // Everything off the configured paths is ignored.
    let (user, item, _) = event(
        &d,
        r#"{"price":9.5,"user":"u2","tags":["x"],"item":"mug","type":"cart","extra":{"a":null}}"#,
    );
    assert_eq!((user.as_str(), item.as_str()), ("u2", "mug"));
}

#[test]
fn every_bad_item_is_bad_event_naming_the_field_and_what_was_found() {
    let d = recommend_decoder();
    let expected = "an item (a string of 1 to 64 bytes, or an integer)";
    assert_eq!(
        bad_event(&d, r#"{"user":"u","type":"view"}"#),
        format!("field \"item\" (/item): not present (every event needs {expected})")
    );
    for (json, found) in [
        ("null", "null"),
        ("true", "a boolean"),
        ("1.5", "a non-integer number"),
        ("1e3", "a non-integer number"),
        ("1.0", "a non-integer number"),
        ("{\"id\":1}", "an object"),
        ("[\"a\"]", "an array"),
        ("\"\"", "an empty string"),
    ] {
        assert_eq!(
            bad_event(&d, &format!(r#"{{"user":"u","item":{json}}}"#)),
            format!("field \"item\" (/item): expected {expected}, found {found}"),
            "{json}"
        );
    }
    let long = "a".repeat(65);
    assert_eq!(
        bad_event(&d, &format!(r#"{{"user":"u","item":"{long}"}}"#)),
        "field \"item\" (/item): the item is 65 bytes long, more than the 64 accepted (\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"…)"
    );
    // A later valid duplicate does not hide a bad occurrence.
    assert_eq!(
        bad_event(&d, r#"{"user":"u","item":null,"item":"ok"}"#),
        format!("field \"item\" (/item): expected {expected}, found null")
    );
}

#[test]
fn numeric_weights_in_range_are_kept() {
    let d = recommend_decoder();
    for (json, weight) in [
        ("1", 1.0),
        ("0.5", 0.5),
        ("1024", 1024.0),
        ("1e-3", 0.001),
        ("2.75", 2.75),
    ] {
        let (_, _, values) = event(&d, &format!(r#"{{"user":"u","item":"a","type":{json}}}"#));
        assert_eq!(values, [0.0, weight], "{json}");
    }
}

#[test]
fn weight_out_of_range_is_bad_event_saying_the_accepted_range() {
    let d = recommend_decoder();
    for (json, shown) in [
        ("0", "0"),
        ("-0.0", "-0"),
        ("-1", "-1"),
        ("1024.5", "1024.5"),
        ("1e300", "1e300"),
    ] {
        assert_eq!(
            bad_event(&d, &format!(r#"{{"user":"u","item":"a","type":{json}}}"#)),
            format!("field \"type\" (/type): the weight {shown} is out of range (accepted: greater than 0 and at most 1024)"),
            "{json}"
        );
    }
}

#[test]
fn event_types_are_looked_up_ignoring_ascii_case() {
    let d = recommend_decoder();
    for (json, weight) in [
        ("\"view\"", 1.0),
        ("\"cart\"", 3.0),
        ("\"purchase\"", 5.0),
        ("\"CART\"", 3.0),
        ("\"Purchase\"", 5.0),
        ("\"pur\\u0063hase\"", 5.0),
    ] {
        let (_, _, values) = event(&d, &format!(r#"{{"user":"u","item":"a","type":{json}}}"#));
        assert_eq!(values, [0.0, weight], "{json}");
    }
}

#[test]
fn unknown_event_type_is_bad_event_listing_the_known_ones() {
    let d = recommend_decoder();
    // Otherwise exact: no trimming, no prefix, no non-ASCII case folding.
    for text in ["like", " view", "views", "vie", "", "VİEW"] {
        assert_eq!(
            bad_event(&d, &format!(r#"{{"user":"u","item":"a","type":"{text}"}}"#)),
            format!("field \"type\" (/type): the event type {text:?} is not in event_weights (known: \"view\", \"cart\", \"purchase\"; ASCII case is ignored)"),
            "{text}"
        );
    }
    // A numeric weight field reads event types only when some are configured.
    let numbers =
        recommend_decoder_with(KeySource::Pointer("/user".into()), None, Some("type"), &[]);
    assert_eq!(
        bad_event(&numbers, r#"{"user":"u","item":"a","type":"view"}"#),
        "field \"type\" (/type): expected a weight: a number greater than 0 and at most 1024, found the string \"view\" (event types need model.event_weights)"
    );
    let (_, _, values) = event(&numbers, r#"{"user":"u","item":"a","type":2}"#);
    assert_eq!(values, [0.0, 2.0]);
}

#[test]
fn missing_or_null_weight_is_nan_meaning_weight_one() {
    let d = recommend_decoder();
    for payload in [
        r#"{"user":"u","item":"a"}"#,
        r#"{"user":"u","item":"a","type":null}"#,
        // Like a later duplicate member, `null` overwrites an earlier value.
        r#"{"user":"u","item":"a","type":"cart","type":null}"#,
    ] {
        let (_, item, values) = event(&d, payload);
        assert_eq!((item.as_str(), values[0]), ("a", 0.0), "{payload}");
        assert_nan(values[1]);
    }
    // Without a weight field there is one value, the item's.
    let unweighted = recommend_decoder_with(KeySource::Pointer("/user".into()), None, None, &[]);
    assert_eq!(
        event(&unweighted, r#"{"user":"u","item":"a","type":"ignored"}"#),
        ("u".to_owned(), "a".to_owned(), vec![0.0])
    );
}

#[test]
fn weight_of_the_wrong_type_is_bad_event() {
    let d = recommend_decoder();
    for (json, found) in [
        ("true", "a boolean"),
        ("{}", "an object"),
        ("[1]", "an array"),
    ] {
        assert_eq!(
            bad_event(&d, &format!(r#"{{"user":"u","item":"a","type":{json}}}"#)),
            format!("field \"type\" (/type): expected a weight: a number greater than 0 and at most 1024, or an event type: \"view\", \"cart\", \"purchase\"; found {found}"),
            "{json}"
        );
    }
}

#[test]
fn key_and_time_work_as_for_other_kinds() {
    let by_topic = recommend_decoder_with(
        KeySource::TopicLevel(1),
        Some(("/ts", TimeUnit::Seconds)),
        Some("type"),
        &[("view", 1.0)],
    );
    let out = ok_on(
        &by_topic,
        "shop/user-9/events",
        br#"{"ts":1700000000.5,"item":"a","type":"view"}"#,
    );
    assert_eq!(
        (out.key.as_str(), out.text.as_str(), out.time_ms),
        ("user-9", "a", Some(1_700_000_000_500))
    );
    // The key's problems come first, then the time's, then the fields' in config order.
    let d = recommend_decoder_with(
        KeySource::Pointer("/user".into()),
        Some(("/ts", TimeUnit::Milliseconds)),
        Some("type"),
        &[("view", 1.0)],
    );
    let e = err(&d, r#"{"item":null,"type":"x","ts":"soon"}"#);
    assert_eq!(
        (e.reason, e.to_string().as_str()),
        (DropReason::MissingKey, "key (/user): not present")
    );
    let e = err(&d, r#"{"user":"u","item":null,"type":"x","ts":"soon"}"#);
    assert_eq!(e.reason, DropReason::BadTime, "{e}");
    let e = err(&d, r#"{"user":"u","item":null,"type":"x","ts":1}"#);
    assert_eq!(
        e.to_string(),
        "field \"item\" (/item): expected an item (a string of 1 to 64 bytes, or an integer), found null"
    );
    let e = err(&d, r#"{"user":"u","item":"a","type":"x","ts":1}"#);
    assert_eq!(
        e.to_string(),
        "field \"type\" (/type): the event type \"x\" is not in event_weights (known: \"view\"; ASCII case is ignored)"
    );
}

#[test]
fn a_bad_batch_element_drops_only_itself() {
    let d = recommend_decoder();
    let payload = r#"[
        {"user":"u1","item":"a","type":"view"},
        {"user":"u1","item":true,"type":"view"},
        {"user":"u2","item":42},
        {"user":"u3","item":"b","type":"refund"},
        {"user":"u3","item":"c","type":2.5}
    ]"#;
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut out = ReadingBuf::default();
    d.decode_each(
        TOPIC,
        payload.as_bytes(),
        0,
        &mut out,
        |r| readings.push((r.key.clone(), r.text.clone(), r.values.clone())),
        |e| errors.push((e.reason, e.to_string())),
    );
    assert_eq!(readings.len(), 3);
    assert_eq!(
        readings[0],
        ("u1".to_owned(), "a".to_owned(), vec![0.0, 1.0])
    );
    // Element 2 has no weight, and the item of element 0 does not leak into it.
    assert_eq!(
        (readings[1].0.as_str(), readings[1].1.as_str()),
        ("u2", "42")
    );
    assert_nan(readings[1].2[1]);
    assert_eq!(
        readings[2],
        ("u3".to_owned(), "c".to_owned(), vec![0.0, 2.5])
    );
    assert_eq!(
        errors,
        [
            (DropReason::BadEvent, "element [1]: field \"item\" (/item): expected an item (a string of 1 to 64 bytes, or an integer), found a boolean".to_owned()),
            (DropReason::BadEvent, "element [3]: field \"type\" (/type): the event type \"refund\" is not in event_weights (known: \"view\", \"cart\", \"purchase\"; ASCII case is ignored)".to_owned()),
        ]
    );
}

#[test]
fn other_kinds_leave_the_text_empty() {
    let recommend = recommend_decoder();
    let forecast = value_decoder();
    let mut out = ReadingBuf::default();
    assert!(recommend
        .decode(TOPIC, br#"{"user":"u","item":"a"}"#, &mut out)
        .is_ok());
    assert_eq!(out.text, "a");
    assert!(forecast.decode(TOPIC, br#"{"value":1}"#, &mut out).is_ok());
    assert_eq!((out.text.as_str(), out.values.as_slice()), ("", &[1.0][..]));
}

#[test]
fn csv_cells_are_items_and_weights() {
    let mut p = recommend_pipeline(
        KeySource::Pointer("/user".into()),
        None,
        Some("type"),
        &[("view", 1.0), ("cart", 3.0)],
    );
    p.format = PayloadFormat::Csv(CsvConfig {
        columns: vec!["user".into(), "item".into(), "type".into()],
        delimiter: b',',
        header: false,
    });
    let d = Decoder::new(&p);
    let payload =
        "u1,sku-1,view\nu1, 3012 ,2.5\nu2,\"a,\"\"b\",CART\nu3,c,\nu4,,view\nu5,d,refund\nu6,e,0\nu7,f,inf\n";
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut out = ReadingBuf::default();
    d.decode_each(
        TOPIC,
        payload.as_bytes(),
        0,
        &mut out,
        |r| readings.push((r.key.clone(), r.text.clone(), r.values[1])),
        |e| errors.push((e.reason, e.to_string())),
    );
    let texts: Vec<(&str, &str)> = readings
        .iter()
        .map(|(user, item, _)| (user.as_str(), item.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            ("u1", "sku-1"),
            ("u1", "3012"),
            ("u2", "a,\"b"),
            ("u3", "c")
        ]
    );
    assert_eq!(readings[0].2, 1.0);
    assert_eq!(readings[1].2, 2.5);
    assert_eq!(readings[2].2, 3.0);
    // An empty weight cell is a missing weight.
    assert_nan(readings[3].2);
    assert_eq!(
        errors,
        [
            (DropReason::BadEvent, "line 5: field \"item\" (/item): not present (every event needs an item (a string of 1 to 64 bytes, or an integer))".to_owned()),
            (DropReason::BadEvent, "line 6: field \"type\" (/type): the event type \"refund\" is not in event_weights (known: \"view\", \"cart\"; ASCII case is ignored)".to_owned()),
            (DropReason::BadEvent, "line 7: field \"type\" (/type): the weight 0 is out of range (accepted: greater than 0 and at most 1024)".to_owned()),
            (DropReason::BadEvent, "line 8: field \"type\" (/type): the weight inf is out of range (accepted: greater than 0 and at most 1024)".to_owned()),
        ]
    );
}

#[test]
fn senml_and_number_payloads_read_items_as_json_would() {
    // Config validation only allows JSON; a decoder that meets these still behaves.
    let mut p = recommend_pipeline(KeySource::BaseName, None, Some("type"), &[("view", 1.0)]);
    p.format = PayloadFormat::Senml;
    let d = Decoder::new(&p);
    let pack = r#"[{"bn":"u1","bt":1700000000,"n":"item","vs":"mug"},{"n":"type","vs":"VIEW"},
        {"bn":"u2","n":"item","v":3012},{"n":"type","v":2},
        {"bn":"u3","n":"item","v":1.5},
        {"bn":"u4","n":"type","v":1}]"#;
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut out = ReadingBuf::default();
    d.decode_each(
        TOPIC,
        pack.as_bytes(),
        0,
        &mut out,
        |r| readings.push((r.key.clone(), r.text.clone(), r.values.clone())),
        |e| errors.push((e.reason, e.to_string())),
    );
    assert_eq!(
        readings,
        [
            ("u1".to_owned(), "mug".to_owned(), vec![0.0, 1.0]),
            ("u2".to_owned(), "3012".to_owned(), vec![0.0, 2.0]),
        ]
    );
    assert_eq!(
        errors,
        [
            (DropReason::BadEvent, "records with the base name and time of record 5: field \"item\" (/item): expected an item (a string of 1 to 64 bytes, or an integer), found a non-integer number".to_owned()),
            (DropReason::BadEvent, "records with the base name and time of record 6: field \"item\" (/item): not present (every event needs an item (a string of 1 to 64 bytes, or an integer))".to_owned()),
        ]
    );

    let mut p = recommend_pipeline(KeySource::TopicLevel(1), None, None, &[]);
    p.format = PayloadFormat::Number;
    p.fields[0].pointer = String::new();
    let d = Decoder::new(&p);
    let out = ok(&d, " 3012 ");
    assert_eq!(
        (out.text.as_str(), out.values.as_slice()),
        ("3012", &[0.0][..])
    );
    let e = err(&d, "30.5");
    assert_eq!(e.reason, DropReason::BadEvent);
}

#[test]
fn recommend_buffers_are_reused() {
    let d = recommend_decoder();
    let mut out = ReadingBuf::default();
    let long_item = "i".repeat(64);
    let first = format!(r#"{{"user":"a-long-user-name","item":"{long_item}","type":"cart"}}"#);
    assert!(d.decode(TOPIC, first.as_bytes(), &mut out).is_ok());
    assert_eq!(out.text, long_item);
    let (text_ptr, text_cap) = (out.text.as_ptr(), out.text.capacity());
    let (key_ptr, values_ptr) = (out.key.as_ptr(), out.values.as_ptr());
    assert!(d
        .decode(TOPIC, br#"{"user":"b","item":7,"type":"view"}"#, &mut out)
        .is_ok());
    assert_eq!((out.key.as_str(), out.text.as_str()), ("b", "7"));
    assert_eq!(
        (out.text.as_ptr(), out.text.capacity()),
        (text_ptr, text_cap)
    );
    assert_eq!(
        (out.key.as_ptr(), out.values.as_ptr()),
        (key_ptr, values_ptr)
    );
    // A failed decode leaves nothing behind that a later success could mix with.
    assert!(d
        .decode(TOPIC, br#"{"user":"c","item":"x","type":"nope"}"#, &mut out)
        .is_err());
    assert!(d
        .decode(TOPIC, br#"{"user":"d","item":"y"}"#, &mut out)
        .is_ok());
    assert_eq!((out.key.as_str(), out.text.as_str()), ("d", "y"));
    assert_eq!(out.values[0], 0.0);
    assert_nan(out.values[1]);
}

#[test]
fn warm_recommend_decode_does_not_allocate() {
    let d = recommend_decoder_with(
        KeySource::Pointer("/user".into()),
        Some(("/ts", TimeUnit::Auto)),
        Some("type"),
        &[("view", 1.0), ("cart", 3.0), ("purchase", 5.0)],
    );
    let singles: [&[u8]; 6] = [
        br#"{"user":"acct-2291","ts":1764064800123,"item":"mug-blue-330","type":"cart"}"#,
        br#"{"user":4711,"ts":"2025-11-25T10:00:00Z","item":3012,"type":"PURCHASE"}"#,
        br#"{"user":"u","ts":1764064800,"item":"a-sixty-four-byte-item-name-to-fill-the-whole-text-buffer-xxxxx","type":2.5}"#,
        br#"{"user":"u","ts":1,"item":"b","meta":{"shelf":4},"tags":["x"]}"#,
        br#"{"user":"u","ts":1,"item":"b","type":null}"#,
        br#"{"user":"u","ts":1,"item":-17,"type":1024}"#,
    ];
    let batch: &[u8] =
        br#"[{"user":"u1","ts":1,"item":"a","type":"view"},{"user":"u2","ts":2,"item":7},
        {"user":"u3","ts":3,"item":true},{"user":"u4","ts":4,"item":"c","type":"refund"}]"#;
    let mut readings = 0;
    let mut errors = 0;
    let mut out = ReadingBuf::default();
    let mut run = |out: &mut ReadingBuf| {
        for payload in singles {
            assert!(d.decode(TOPIC, payload, out).is_ok());
        }
        d.decode_each(TOPIC, batch, 0, out, |_| readings += 1, |_| errors += 1);
        // The error path of a bad item or weight does not allocate either.
        for payload in [
            &br#"{"user":"u","ts":1,"item":"x","type":"refund"}"#[..],
            br#"{"user":"u","ts":1,"item":1.5}"#,
            br#"{"user":"u","ts":1,"item":"x","type":0}"#,
        ] {
            assert!(d
                .decode(TOPIC, payload, out)
                .is_err_and(|e| e.reason == DropReason::BadEvent));
        }
    };
    // Warm up: grow the key, text and values buffers once.
    run(&mut out);
    assert_eq!(allocations::during(|| run(&mut out)), 0);
    // Per run: 2 batch readings and 2 batch errors.
    assert_eq!((readings, errors), (4, 4));
}
