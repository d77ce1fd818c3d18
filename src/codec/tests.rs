//! Decoder tests: one per drop reason at least, plus the pointer, time and reuse invariants.

use super::*;
use crate::config::{
    ClassificationConfig, FieldBounds, FieldConfig, ForecastConfig, ModelConfig, PipelineConfig,
    RegressionConfig, TimeSource, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_OUTPUT,
};

const TOPIC: &str = "sensors/s1/temp";

fn pipeline(
    fields: &[(&str, &str)],
    key: KeySource,
    time: Option<(&str, TimeUnit)>,
) -> PipelineConfig {
    PipelineConfig {
        name: "test".into(),
        topics: vec![crate::topic::TopicFilter::parse("sensors/+/temp").unwrap()],
        format: PayloadFormat::Json,
        key,
        time: time.map(|(pointer, unit)| TimeSource {
            pointer: pointer.into(),
            unit,
        }),
        max_skew: crate::config::DEFAULT_MAX_SKEW,
        fields: fields
            .iter()
            .map(|(name, pointer)| FieldConfig {
                name: (*name).into(),
                pointer: (*pointer).into(),
            })
            .collect(),
        model: ModelConfig::Forecast(ForecastConfig::default()),
        bounds: Vec::new(),
        from: None,
        operators: Vec::new(),
        anomaly: None,
        output: crate::topic::TopicTemplate::builtin(DEFAULT_OUTPUT),
        output_qos: 0,
        max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
    }
}

/// `{value = "/value"}`, key = topic[1], no time.
fn value_decoder() -> Decoder {
    Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::TopicLevel(1),
        None,
    ))
}

/// `{value = "/value"}`, key = `/sensor` from the payload, no time.
fn sensor_key_decoder() -> Decoder {
    Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::Pointer("/sensor".into()),
        None,
    ))
}

fn time_decoder(unit: TimeUnit) -> Decoder {
    Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::TopicLevel(1),
        Some(("/ts", unit)),
    ))
}

fn number_decoder(key: KeySource, time: Option<(&str, TimeUnit)>) -> Decoder {
    let mut p = pipeline(&[("value", "")], key, time);
    p.format = PayloadFormat::Number;
    Decoder::new(&p)
}

/// Fields `x` (/x) then `label` (/label); a classifier of `label` on `x` with the default
/// label lists.
fn label_decoder() -> Decoder {
    let mut p = pipeline(
        &[("x", "/x"), ("label", "/label")],
        KeySource::TopicLevel(1),
        None,
    );
    p.model = ModelConfig::Classification(ClassificationConfig {
        target: "label".into(),
        features: vec!["x".into()],
        ..ClassificationConfig::default()
    });
    Decoder::new(&p)
}

/// Fields `x` (/x) then `y` (/y); a regression of `y` on `x`.
fn regression_decoder() -> Decoder {
    let mut p = pipeline(&[("x", "/x"), ("y", "/y")], KeySource::TopicLevel(1), None);
    p.model = ModelConfig::Regression(RegressionConfig {
        target: "y".into(),
        features: vec!["x".into()],
        ..RegressionConfig::default()
    });
    Decoder::new(&p)
}

/// The label decoded from `{"x":1,"label":<json>}`.
#[track_caller]
fn label_of(decoder: &Decoder, json: &str) -> f64 {
    let out = ok(decoder, &format!(r#"{{"x":1,"label":{json}}}"#));
    assert_eq!(out.values[0], 1.0, "{json}");
    out.values[1]
}

#[track_caller]
fn ok(decoder: &Decoder, payload: &str) -> ReadingBuf {
    ok_on(decoder, TOPIC, payload.as_bytes())
}

#[track_caller]
fn ok_on(decoder: &Decoder, topic: &str, payload: &[u8]) -> ReadingBuf {
    let mut out = ReadingBuf::default();
    if let Err(e) = decoder.decode(topic, payload, &mut out) {
        panic!(
            "{:.200?} should decode, got {} ({e})",
            String::from_utf8_lossy(payload),
            e.reason
        );
    }
    out
}

#[track_caller]
fn err(decoder: &Decoder, payload: &str) -> DecodeError {
    err_on(decoder, TOPIC, payload.as_bytes())
}

#[track_caller]
fn err_on(decoder: &Decoder, topic: &str, payload: &[u8]) -> DecodeError {
    let mut out = ReadingBuf::default();
    match decoder.decode(topic, payload, &mut out) {
        Ok(_) => panic!(
            "{:.200?} should fail, decoded {out:?}",
            String::from_utf8_lossy(payload)
        ),
        Err(e) => e,
    }
}

// ---- drop reasons -------------------------------------------------------------------------

#[test]
fn drop_reason_names_are_stable_and_indexed() {
    let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "unknown_topic",
            "too_large",
            "not_utf8",
            "malformed_json",
            "missing_key",
            "missing_field",
            "not_a_number",
            "non_finite",
            "bad_time",
            "queue_full",
            "mailbox_full",
            "bad_label",
            "bad_csv",
            "bad_senml",
            "bad_event",
            "bad_key",
            "time_skew",
            "implausible"
        ]
    );
    assert_eq!(DropReason::Implausible.index(), 17);
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        assert_eq!(reason.index(), i);
        assert_eq!(reason.to_string(), reason.as_str());
    }
}

#[test]
fn keys_that_cannot_be_a_topic_level_are_bad_keys_whatever_their_source() {
    let from_payload = sensor_key_decoder();
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for key in [
        "a\u{0}b",
        "a\u{1}b",
        "a\tb",
        "a\nb",
        "a\u{1b}b",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{fdd0}b",
        "a\u{fffe}b",
        "a\u{ffff}b",
        "a\u{10ffff}b",
        "a+b",
        "a#b",
        &long,
    ] {
        let payload = serde_json::json!({"sensor": key, "value": 1.0}).to_string();
        let e = err(&from_payload, &payload);
        assert_eq!(e.reason, DropReason::BadKey, "{key:.20?}: {e}");
        assert!(e.to_string().starts_with("key (/sensor): "), "{e}");
    }
    let e = err(
        &from_payload,
        &serde_json::json!({"sensor": long, "value": 1.0}).to_string(),
    );
    assert_eq!(
        e.to_string(),
        "key (/sensor): 1025 bytes, more than the 1024 a key may have"
    );
    let e = err(&from_payload, r#"{"sensor":"a\u0001b","value":1}"#);
    assert_eq!(
        e.to_string(),
        "key (/sensor): a control character (\\u{1}) at byte 1: a key must be usable as a topic level"
    );
    // Longest accepted, and non-ASCII text that is fine in a topic.
    let longest = "k".repeat(MAX_KEY_BYTES);
    for key in [longest.as_str(), "température/salle 2", "датчик-7", "セン🌡"] {
        let payload = serde_json::json!({"sensor": key, "value": 1.0}).to_string();
        assert_eq!(ok(&from_payload, &payload).key, key);
    }
    // A key from the topic is checked the same way (a broker delivers such topics).
    let e = err_on(&value_decoder(), "sensors/a\u{7f}b/temp", br#"{"value":1}"#);
    assert_eq!(e.reason, DropReason::BadKey);
    assert!(e.to_string().starts_with("key (topic level 1): "), "{e}");
}

/// A regression of `y` on `x` with `x` in [-50, 150] and `y` at most 100.
fn bounded_decoder() -> Decoder {
    let mut p = pipeline(&[("x", "/x"), ("y", "/y")], KeySource::TopicLevel(1), None);
    p.model = ModelConfig::Regression(RegressionConfig {
        target: "y".into(),
        features: vec!["x".into()],
        ..RegressionConfig::default()
    });
    p.bounds = vec![
        FieldBounds {
            field: "x".into(),
            min: -50.0,
            max: 150.0,
        },
        FieldBounds {
            field: "y".into(),
            min: f64::NEG_INFINITY,
            max: 100.0,
        },
    ];
    Decoder::new(&p)
}

#[test]
fn a_value_outside_its_bounds_is_implausible() {
    let decoder = bounded_decoder();
    // Both ends are plausible; an absent optional target is not outside.
    assert_eq!(
        ok(&decoder, r#"{"x":-50,"y":-1e300}"#).values,
        [-50.0, -1e300]
    );
    assert_eq!(ok(&decoder, r#"{"x":150,"y":100}"#).values, [150.0, 100.0]);
    assert!(ok(&decoder, r#"{"x":20}"#).values[1].is_nan());
    for (payload, message) in [
        (
            r#"{"x":1e12,"y":1}"#,
            "field \"x\" (/x): 1000000000000 is outside the field's bounds (min = -50, max = 150)",
        ),
        (
            r#"[{"x":-1e300,"y":1}]"#,
            "field \"x\" (/x): -1e300 is outside the field's bounds (min = -50, max = 150)",
        ),
        (
            r#"{"x":-50.5,"y":1}"#,
            "field \"x\" (/x): -50.5 is outside the field's bounds (min = -50, max = 150)",
        ),
        (
            r#"{"x":0,"y":100.5}"#,
            "field \"y\" (/y): 100.5 is outside the field's bounds (max = 100)",
        ),
    ] {
        let e = err(&decoder, payload);
        assert_eq!(e.reason, DropReason::Implausible, "{payload}");
        assert_eq!(e.to_string(), message);
    }
}

#[test]
fn an_implausible_value_drops_only_its_reading_of_a_batch() {
    let decoder = bounded_decoder();
    let mut out = ReadingBuf::default();
    let (mut xs, mut reasons) = (Vec::new(), Vec::new());
    decoder.decode_each(
        TOPIC,
        br#"[{"x":1,"y":1},{"x":1e300,"y":2},{"x":3,"y":3}]"#,
        0,
        &mut out,
        |r| xs.push(r.values[0]),
        |e| reasons.push(e.reason),
    );
    assert_eq!(xs, [1.0, 3.0]);
    assert_eq!(reasons, [DropReason::Implausible]);
}

#[test]
fn a_bad_key_drops_only_its_reading_of_a_batch() {
    let decoder = sensor_key_decoder();
    let mut out = ReadingBuf::default();
    let (mut keys, mut reasons) = (Vec::new(), Vec::new());
    decoder.decode_each(
        TOPIC,
        br#"[{"sensor":"a","value":1},{"sensor":"b+","value":2},{"sensor":"c","value":3}]"#,
        0,
        &mut out,
        |r| keys.push(r.key.clone()),
        |e| reasons.push(e.reason),
    );
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(reasons, [DropReason::BadKey]);
}

#[test]
fn payload_over_the_limit_is_too_large_before_anything_else() {
    let mut p = pipeline(&[("value", "/value")], KeySource::TopicLevel(1), None);
    p.max_payload_bytes = 16;
    let decoder = Decoder::new(&p);
    assert_eq!(ok(&decoder, r#"{"value":1.5}"#).values, [1.5]);
    // 17 bytes, invalid UTF-8 and a bad topic: the size wins.
    let e = err_on(&decoder, "", b"\xff{\"value\":1.5}xxx");
    assert_eq!(e.reason, DropReason::TooLarge);
    assert_eq!(
        e.to_string(),
        "payload: 17 bytes exceed the limit of 16 bytes (max_payload_bytes)"
    );
    // Exactly at the limit is accepted.
    assert!(decoder
        .decode(TOPIC, &[b' '; 16], &mut ReadingBuf::default())
        .is_err_and(|e| e.reason != DropReason::TooLarge));
}

#[test]
fn invalid_utf8_inside_a_json_string_is_not_utf8() {
    let e = err_on(
        &value_decoder(),
        TOPIC,
        b"{\"unit\":\"\xc3\x28\",\"value\":1}",
    );
    assert_eq!(e.reason, DropReason::NotUtf8);
    assert_eq!(
        e.to_string(),
        "payload: not valid UTF-8 (bad byte at offset 9)"
    );
}

#[test]
fn invalid_json_is_malformed() {
    let decoder = value_decoder();
    for payload in [
        "",
        "{",
        r#"{"value":1"#,
        r#"{"value":1,}"#,
        r#"{'value':1}"#,
        r#"{"value":1} x"#,
        r#"{"value":1}{"value":2}"#,
        r#"{"other":[1,2,}, "value":1}"#,
        r#"{"value":01}"#,
    ] {
        let e = err(&decoder, payload);
        assert_eq!(e.reason, DropReason::MalformedJson, "{payload:?}: {e}");
    }
    let e = err(&decoder, r#"{"value":1,}"#);
    assert!(
        e.to_string()
            .starts_with("payload: not valid JSON: trailing comma"),
        "{e}"
    );
}

#[test]
fn nan_and_infinity_literals_are_malformed_json() {
    let decoder = value_decoder();
    for payload in [
        r#"{"value":NaN}"#,
        r#"{"value":Infinity}"#,
        r#"{"value":-Infinity}"#,
    ] {
        assert_eq!(
            err(&decoder, payload).reason,
            DropReason::MalformedJson,
            "{payload}"
        );
    }
}

#[test]
fn overflowing_number_is_non_finite() {
    let decoder = value_decoder();
    let e = err(&decoder, r#"{"value":1e400}"#);
    assert_eq!(e.reason, DropReason::NonFinite, "{e}");
    assert!(e.to_string().contains("beyond the f64 range"), "{e}");
    let e = err(&decoder, r#"{"value":-1e400}"#);
    assert_eq!(e.reason, DropReason::NonFinite, "{e}");
    // A huge number off the configured paths is only scanned, never converted.
    assert_eq!(ok(&decoder, r#"{"junk":1e400,"value":2}"#).values, [2.0]);
}

#[test]
fn missing_field_is_reported_with_its_name_and_pointer() {
    let e = err(&value_decoder(), r#"{"val":21.5}"#);
    assert_eq!(e.reason, DropReason::MissingField);
    assert_eq!(e.to_string(), r#"field "value" (/value): not present"#);
}

#[test]
fn string_field_is_not_a_number_even_with_digits() {
    let e = err(&value_decoder(), r#"{"value":"21.5"}"#);
    assert_eq!(e.reason, DropReason::NotANumber);
    assert_eq!(
        e.to_string(),
        r#"field "value" (/value): expected a number, found a string (numbers inside strings are not converted)"#
    );
}

#[test]
fn bool_null_object_and_array_fields_are_not_numbers() {
    let decoder = value_decoder();
    for (json, found) in [
        ("true", "a boolean"),
        ("null", "null"),
        (r#"{"v":1}"#, "an object"),
        ("[1]", "an array"),
    ] {
        let e = err(&decoder, &format!(r#"{{"value":{json}}}"#));
        assert_eq!(e.reason, DropReason::NotANumber, "{json}");
        assert_eq!(
            e.to_string(),
            format!(r#"field "value" (/value): expected a number, found {found}"#)
        );
    }
}

#[test]
fn first_bad_field_in_config_order_is_reported() {
    let decoder = Decoder::new(&pipeline(
        &[("a", "/a"), ("b", "/b"), ("c", "/c")],
        KeySource::Topic,
        None,
    ));
    // Document order c, b; config order puts b first; a is fine.
    let e = err(&decoder, r#"{"c":"x","b":true,"a":1}"#);
    assert_eq!(e.reason, DropReason::NotANumber);
    assert!(e.to_string().starts_with(r#"field "b""#), "{e}");
    // A missing field before a wrong-typed one in config order is reported first.
    let e = err(&decoder, r#"{"c":"x","b":1}"#);
    assert_eq!(e.reason, DropReason::MissingField);
    assert!(e.to_string().starts_with(r#"field "a""#), "{e}");
}

#[test]
fn key_problems_are_reported_before_field_problems() {
    let decoder = Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::Pointer("/id".into()),
        None,
    ));
    assert_eq!(
        err(&decoder, r#"{"value":"x"}"#).reason,
        DropReason::MissingKey
    );
}

// ---- keys ---------------------------------------------------------------------------------

#[test]
fn key_from_topic_level_and_whole_topic() {
    assert_eq!(ok(&value_decoder(), r#"{"value":1}"#).key, "s1");
    let whole = Decoder::new(&pipeline(&[("value", "/value")], KeySource::Topic, None));
    assert_eq!(ok(&whole, r#"{"value":1}"#).key, TOPIC);
}

#[test]
fn topic_level_splits_like_str_split() {
    for topic in [
        "",
        "/",
        "a",
        "a/",
        "/a",
        "a/b",
        "a//b",
        "sensors/s1/temp",
        "ü/é/",
        "//",
    ] {
        for n in 0..5 {
            assert_eq!(
                topic_level(topic, n),
                topic.split('/').nth(n),
                "{topic:?} level {n}"
            );
        }
    }
}

#[test]
fn missing_or_empty_topic_level_is_missing_key() {
    let decoder = value_decoder();
    for topic in ["sensors", "sensors//temp", "sensors/"] {
        let e = err_on(&decoder, topic, br#"{"value":1}"#);
        assert_eq!(e.reason, DropReason::MissingKey, "{topic:?}");
        assert_eq!(
            e.to_string(),
            "key (topic level 1): the topic has no such level, or it is empty"
        );
    }
    let whole = Decoder::new(&pipeline(&[("value", "/value")], KeySource::Topic, None));
    assert_eq!(
        err_on(&whole, "", br#"{"value":1}"#).reason,
        DropReason::MissingKey
    );
}

#[test]
fn string_and_integer_keys_from_the_payload() {
    let decoder = Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::Pointer("/meta/id".into()),
        None,
    ));
    for (id, key) in [
        (r#""dev-7""#, "dev-7"),
        (r#""d\u00e9v\"q""#, "dév\"q"),
        ("42", "42"),
        ("-17", "-17"),
        ("18446744073709551615", "18446744073709551615"),
    ] {
        let out = ok(&decoder, &format!(r#"{{"value":1,"meta":{{"id":{id}}}}}"#));
        assert_eq!(out.key, key, "{id}");
    }
}

#[test]
fn missing_empty_or_wrong_typed_payload_key_is_missing_key() {
    let decoder = Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::Pointer("/id".into()),
        None,
    ));
    for (payload, message) in [
        (r#"{"value":1}"#, "key (/id): not present"),
        (
            r#"{"value":1,"id":""}"#,
            r#"key (/id): expected a non-empty string, found """#,
        ),
        (
            r#"{"value":1,"id":1.5}"#,
            "key (/id): expected a string or an integer, found a non-integer number",
        ),
        (
            r#"{"value":1,"id":true}"#,
            "key (/id): expected a string or an integer, found a boolean",
        ),
        (
            r#"{"value":1,"id":null}"#,
            "key (/id): expected a string or an integer, found null",
        ),
        (
            r#"{"value":1,"id":["a"]}"#,
            "key (/id): expected a string or an integer, found an array",
        ),
    ] {
        let e = err(&decoder, payload);
        assert_eq!(e.reason, DropReason::MissingKey, "{payload}");
        assert_eq!(e.to_string(), message);
    }
}

// ---- pointers -----------------------------------------------------------------------------

#[test]
fn pointer_escapes_select_members_with_slash_and_tilde() {
    let decoder = Decoder::new(&pipeline(
        &[
            ("slash", "/a~1b"),
            ("tilde", "/m~0n"),
            ("empty", "/"),
            ("both", "/~01"),
        ],
        KeySource::Topic,
        None,
    ));
    let out = ok(
        &decoder,
        r#"{"a":9,"a/b":1,"m~n":2,"":3,"~1":4,"m":{"n":9}}"#,
    );
    assert_eq!(out.values, [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn escaped_member_names_match_their_unescaped_pointer() {
    let decoder = value_decoder();
    assert_eq!(ok(&decoder, r#"{"v\u0061lue":3.5}"#).values, [3.5]);
    let slash = Decoder::new(&pipeline(&[("v", "/a~1b")], KeySource::Topic, None));
    assert_eq!(ok(&slash, r#"{"a\/b":7}"#).values, [7.0]);
}

#[test]
fn nested_objects_and_arrays_are_followed() {
    let decoder = Decoder::new(&pipeline(
        &[
            ("first", "/readings/0/v"),
            ("third", "/readings/2/v"),
            ("deep", "/a/b/c"),
            ("m", "/m/1/0"),
        ],
        KeySource::Topic,
        None,
    ));
    let out = ok(
        &decoder,
        r#"{"readings":[{"v":1,"x":[1,2]},{"v":"skip"},{"w":0,"v":3},{"v":4}],
            "a":{"b":{"c":-2.5e-3}},"m":[[9],[8,7]]}"#,
    );
    assert_eq!(out.values, [1.0, 3.0, -2.5e-3, 8.0]);
}

#[test]
fn array_index_past_the_end_is_missing() {
    let decoder = Decoder::new(&pipeline(&[("v", "/readings/3")], KeySource::Topic, None));
    assert_eq!(
        err(&decoder, r#"{"readings":[1,2,3]}"#).reason,
        DropReason::MissingField
    );
    assert_eq!(ok(&decoder, r#"{"readings":[1,2,3,4,5]}"#).values, [4.0]);
}

#[test]
fn numeric_segment_also_names_an_object_member() {
    let decoder = Decoder::new(&pipeline(&[("v", "/readings/0/v")], KeySource::Topic, None));
    assert_eq!(ok(&decoder, r#"{"readings":{"0":{"v":6}}}"#).values, [6.0]);
    // Leading zeros are not array indices (RFC 6901), only member names.
    let padded = Decoder::new(&pipeline(&[("v", "/r/01")], KeySource::Topic, None));
    assert_eq!(
        err(&padded, r#"{"r":[1,2]}"#).reason,
        DropReason::MissingField
    );
    assert_eq!(ok(&padded, r#"{"r":{"01":2}}"#).values, [2.0]);
}

#[test]
fn empty_pointer_is_the_whole_document() {
    let decoder = Decoder::new(&pipeline(&[("v", "")], KeySource::Topic, None));
    assert_eq!(ok(&decoder, " 21.5 ").values, [21.5]);
    assert_eq!(err(&decoder, r#"{"v":1}"#).reason, DropReason::NotANumber);
}

#[test]
fn invalid_configured_pointer_fails_gracefully() {
    let decoder = Decoder::new(&pipeline(&[("v", "value")], KeySource::Topic, None));
    let e = err(&decoder, r#"{"value":1}"#);
    assert_eq!(e.reason, DropReason::MissingField);
    assert!(e.to_string().contains("not a valid JSON pointer"), "{e}");
}

#[test]
fn duplicate_members_last_valid_value_wins() {
    let decoder = value_decoder();
    assert_eq!(ok(&decoder, r#"{"value":1,"value":2}"#).values, [2.0]);
    assert_eq!(
        err(&decoder, r#"{"value":"x","value":2}"#).reason,
        DropReason::NotANumber
    );
}

#[test]
fn unrelated_large_nested_members_are_skipped() {
    let mut p = pipeline(
        &[("value", "/value")],
        KeySource::TopicLevel(1),
        Some(("/ts", TimeUnit::Milliseconds)),
    );
    p.max_payload_bytes = 1 << 20;
    let decoder = Decoder::new(&p);
    let mut junk = String::from(r#"{"meta":{"tags":["#);
    for i in 0..2000 {
        junk.push_str(&format!(
            r#"{{"id":{i},"name":"n\"}}{{[{i}","nested":[[[{{"value":"not me"}}]]],"f":1e400}},"#
        ));
    }
    junk.push_str(r#"null]},"deep":"#);
    junk.push_str(&"[".repeat(5000));
    junk.push_str(&"]".repeat(5000));
    junk.push_str(r#","value":21.5,"ts":1700000000000,"after":{"value":"x"}}"#);
    let out = ok(&decoder, &junk);
    assert_eq!(out.values, [21.5]);
    assert_eq!(out.time_ms, Some(1_700_000_000_000));
}

#[test]
fn field_names_are_in_config_order() {
    let decoder = Decoder::new(&pipeline(
        &[("b", "/b"), ("a", "/a")],
        KeySource::Topic,
        None,
    ));
    assert_eq!(decoder.field_names().collect::<Vec<_>>(), ["b", "a"]);
    assert_eq!(ok(&decoder, r#"{"a":1,"b":2}"#).values, [2.0, 1.0]);
}

#[test]
fn one_member_can_feed_several_targets() {
    let decoder = Decoder::new(&pipeline(
        &[("v", "/n"), ("w", "/n")],
        KeySource::Pointer("/n".into()),
        Some(("/n", TimeUnit::Seconds)),
    ));
    let out = ok(&decoder, r#"{"n":12}"#);
    assert_eq!(out.values, [12.0, 12.0]);
    assert_eq!(out.key, "12");
    assert_eq!(out.time_ms, Some(12_000));
}

// ---- time ---------------------------------------------------------------------------------

#[test]
fn no_time_source_gives_no_time() {
    assert_eq!(ok(&value_decoder(), r#"{"value":1,"ts":5}"#).time_ms, None);
}

#[test]
fn time_in_seconds_allows_fractions_rounded_to_ms() {
    let decoder = time_decoder(TimeUnit::Seconds);
    for (ts, ms) in [
        ("1700000000", 1_700_000_000_000),
        ("1700000000.5", 1_700_000_000_500),
        ("1700000000.0004", 1_700_000_000_000),
        ("1700000000.0006", 1_700_000_000_001),
        ("-1.5", -1_500),
        ("1e9", 1_000_000_000_000),
    ] {
        let out = ok(&decoder, &format!(r#"{{"value":1,"ts":{ts}}}"#));
        assert_eq!(out.time_ms, Some(ms), "{ts}");
    }
}

#[test]
fn time_in_milliseconds() {
    let decoder = time_decoder(TimeUnit::Milliseconds);
    assert_eq!(
        ok(&decoder, r#"{"value":1,"ts":1700000000123}"#).time_ms,
        Some(1_700_000_000_123)
    );
    assert_eq!(ok(&decoder, r#"{"value":1,"ts":5}"#).time_ms, Some(5));
    assert_eq!(ok(&decoder, r#"{"value":1,"ts":2.6}"#).time_ms, Some(3));
}

#[test]
fn time_rfc3339_with_offset_and_fraction() {
    let decoder = time_decoder(TimeUnit::Rfc3339);
    // 2024-01-02T02:04:05.5Z = 1704153600 s (2024-01-02T00:00Z) + 7445.5 s.
    let out = ok(
        &decoder,
        r#"{"value":1,"ts":"2024-01-02T03:04:05.5+01:00"}"#,
    );
    assert_eq!(out.time_ms, Some(1_704_161_045_500));
    let out = ok(&decoder, r#"{"value":1,"ts":"2024-01-02T02:04:05.5Z"}"#);
    assert_eq!(out.time_ms, Some(1_704_161_045_500));
    let out = ok(&decoder, r#"{"value":1,"ts":"1969-12-31T23:59:59.9995Z"}"#);
    assert_eq!(out.time_ms, Some(-1), "floor, not truncation, before 1970");
}

#[test]
fn auto_time_detects_seconds_milliseconds_and_rfc3339() {
    let decoder = time_decoder(TimeUnit::Auto);
    for (ts, ms) in [
        ("1700000000", 1_700_000_000_000),
        ("1700000000.25", 1_700_000_000_250),
        ("1700000000000", 1_700_000_000_000),
        ("99999999999", 99_999_999_999_000),
        ("100000000000", 100_000_000_000),
        (r#""2024-01-02T03:04:05.5+01:00""#, 1_704_161_045_500),
    ] {
        let out = ok(&decoder, &format!(r#"{{"value":1,"ts":{ts}}}"#));
        assert_eq!(out.time_ms, Some(ms), "{ts}");
    }
}

#[test]
fn missing_wrong_or_unparsable_time_is_bad_time() {
    for (unit, ts, message) in [
        (TimeUnit::Auto, None, "time (/ts): not present"),
        (
            TimeUnit::Auto,
            Some("true"),
            "time (/ts): expected a number or an RFC 3339 string, found a boolean",
        ),
        (
            TimeUnit::Seconds,
            Some(r#""1700000000""#),
            "time (/ts): expected a number of seconds, found a string",
        ),
        (
            TimeUnit::Milliseconds,
            Some("null"),
            "time (/ts): expected a number of milliseconds, found null",
        ),
        (
            TimeUnit::Rfc3339,
            Some("1700000000"),
            "time (/ts): expected an RFC 3339 string, found a number",
        ),
        (
            TimeUnit::Seconds,
            Some("1e300"),
            "time (/ts): time out of range",
        ),
        (
            TimeUnit::Seconds,
            Some("9223372036854775807"),
            "time (/ts): time out of range",
        ),
        (
            TimeUnit::Milliseconds,
            Some("18446744073709551615"),
            "time (/ts): time out of range",
        ),
    ] {
        let payload = match ts {
            Some(ts) => format!(r#"{{"value":1,"ts":{ts}}}"#),
            None => r#"{"value":1}"#.to_owned(),
        };
        let e = err(&time_decoder(unit), &payload);
        assert_eq!(e.reason, DropReason::BadTime, "{payload}");
        assert_eq!(e.to_string(), message);
    }
    for ts in [
        "2024-01-02T03:04:05",
        "2024-13-02T03:04:05Z",
        "yesterday",
        "",
    ] {
        let e = err(
            &time_decoder(TimeUnit::Rfc3339),
            &format!(r#"{{"value":1,"ts":"{ts}"}}"#),
        );
        assert_eq!(e.reason, DropReason::BadTime, "{ts:?}");
        assert!(
            e.to_string()
                .starts_with("time (/ts): not an RFC 3339 time: "),
            "{e}"
        );
    }
}

#[test]
fn time_problems_are_reported_before_field_problems() {
    let e = err(&time_decoder(TimeUnit::Seconds), r#"{"ts":"x"}"#);
    assert_eq!(e.reason, DropReason::BadTime);
}

// ---- labels and optional targets ------------------------------------------------------------

#[test]
fn label_booleans_are_one_and_zero() {
    let decoder = label_decoder();
    assert_eq!(label_of(&decoder, "true"), 1.0);
    assert_eq!(label_of(&decoder, "false"), 0.0);
}

#[test]
fn label_numbers_match_by_their_shortest_text() {
    let decoder = label_decoder();
    for (json, label) in [
        ("1", 1.0),
        ("1.0", 1.0),
        ("1e0", 1.0),
        ("0", 0.0),
        ("0.0", 0.0),
        ("-0", 0.0),
        ("-0.0", 0.0),
    ] {
        assert_eq!(label_of(&decoder, json), label, "{json}");
    }
    let mut p = pipeline(&[("x", "/x"), ("label", "/label")], KeySource::Topic, None);
    p.model = ModelConfig::Classification(ClassificationConfig {
        target: "label".into(),
        features: vec!["x".into()],
        positive: vec!["1.5".into(), "-2".into()],
        negative: vec!["100000000000000000000".into()],
        ..ClassificationConfig::default()
    });
    let custom = Decoder::new(&p);
    assert_eq!(label_of(&custom, "1.5"), 1.0);
    assert_eq!(label_of(&custom, "15e-1"), 1.0);
    assert_eq!(label_of(&custom, "-2"), 1.0);
    assert_eq!(label_of(&custom, "1e20"), 0.0);
    assert_eq!(label_of(&custom, "100000000000000000000"), 0.0);
    // Booleans are labels whatever the lists say.
    assert_eq!(label_of(&custom, "true"), 1.0);
    assert_eq!(label_of(&custom, "false"), 0.0);
}

#[test]
fn label_strings_match_ignoring_ascii_case() {
    let decoder = label_decoder();
    for (json, label) in [
        (r#""true""#, 1.0),
        (r#""TRUE""#, 1.0),
        (r#""Yes""#, 1.0),
        (r#""1""#, 1.0),
        (r#""Positive""#, 1.0),
        (r#""false""#, 0.0),
        (r#""nO""#, 0.0),
        (r#""0""#, 0.0),
        (r#""NEGATIVE""#, 0.0),
        (r#""yes""#, 1.0),
    ] {
        assert_eq!(label_of(&decoder, json), label, "{json}");
    }
}

#[test]
fn missing_or_null_label_is_nan_meaning_predict_only() {
    let decoder = label_decoder();
    let out = ok(&decoder, r#"{"x":2}"#);
    assert_eq!(out.values[0], 2.0);
    assert!(out.values[1].is_nan());
    assert!(label_of(&decoder, "null").is_nan());
    // Like any duplicate member, a later null overwrites an earlier label.
    let out = ok(&decoder, r#"{"x":2,"label":true,"label":null}"#);
    assert!(out.values[1].is_nan());
    // The features stay required.
    let e = err(&decoder, r#"{"label":true}"#);
    assert_eq!(e.reason, DropReason::MissingField);
    assert_eq!(e.to_string(), r#"field "x" (/x): not present"#);
}

#[test]
fn unmapped_label_is_bad_label() {
    let lists = r#"positive: true, "true", "1", "yes", "positive"; negative: false, "false", "0", "no", "negative"; ASCII case is ignored"#;
    for (json, found) in [
        (r#""maybe""#, r#"the string "maybe""#.to_owned()),
        (r#""""#, r#"the string """#.to_owned()),
        (r#"" yes""#, r#"the string " yes""#.to_owned()),
        ("2", "the number 2".to_owned()),
        ("1.5", "the number 1.5".to_owned()),
        ("-1", "the number -1".to_owned()),
        (
            &format!(r#""{}""#, "x".repeat(40)),
            format!("the string {:?}…", "x".repeat(32)),
        ),
    ] {
        let e = err(&label_decoder(), &format!(r#"{{"x":1,"label":{json}}}"#));
        assert_eq!(e.reason, DropReason::BadLabel, "{json}");
        assert_eq!(
            e.to_string(),
            format!(r#"field "label" (/label): {found} is not a label ({lists})"#)
        );
    }
    for (json, found) in [("{}", "an object"), (r#"["yes"]"#, "an array")] {
        let e = err(&label_decoder(), &format!(r#"{{"x":1,"label":{json}}}"#));
        assert_eq!(e.reason, DropReason::BadLabel, "{json}");
        assert_eq!(
            e.to_string(),
            format!(
                r#"field "label" (/label): expected a label (true, false, or a string or number listed in positive or negative), found {found}"#
            )
        );
    }
}

#[test]
fn label_problems_are_reported_in_field_order() {
    let decoder = label_decoder();
    // `x` comes first in config order: its problem wins over the label's.
    let e = err(&decoder, r#"{"label":"maybe","x":"1"}"#);
    assert_eq!(e.reason, DropReason::NotANumber);
    // A bad label is not hidden by a later valid duplicate.
    let e = err(&decoder, r#"{"x":1,"label":"maybe","label":true}"#);
    assert_eq!(e.reason, DropReason::BadLabel);
    // NaN and overflowing numbers are still rejected before any label matching.
    assert_eq!(
        err(&decoder, r#"{"x":1,"label":NaN}"#).reason,
        DropReason::MalformedJson
    );
    assert_eq!(
        err(&decoder, r#"{"x":1,"label":1e400}"#).reason,
        DropReason::NonFinite
    );
}

#[test]
fn number_payload_label_is_matched_like_a_json_number() {
    // Config validation only allows forecasts on number payloads; the decoder still reads
    // a label target consistently rather than passing the raw number on.
    let mut p = pipeline(&[("value", "")], KeySource::Topic, None);
    p.format = PayloadFormat::Number;
    p.model = ModelConfig::Classification(ClassificationConfig {
        target: "value".into(),
        ..ClassificationConfig::default()
    });
    let decoder = Decoder::new(&p);
    assert_eq!(ok(&decoder, "1").values, [1.0]);
    assert_eq!(ok(&decoder, " 0.0 ").values, [0.0]);
    let e = err(&decoder, "7");
    assert_eq!(e.reason, DropReason::BadLabel);
    assert!(
        e.to_string()
            .starts_with(r#"field "value" (the whole payload): the number 7 is not a label"#),
        "{e}"
    );
}

#[test]
fn optional_regression_target_may_be_missing_or_null() {
    let decoder = regression_decoder();
    assert_eq!(ok(&decoder, r#"{"x":1,"y":2.5}"#).values, [1.0, 2.5]);
    for payload in [r#"{"x":1}"#, r#"{"x":1,"y":null}"#] {
        let out = ok(&decoder, payload);
        assert_eq!(out.values[0], 1.0, "{payload}");
        assert!(out.values[1].is_nan(), "{payload}");
    }
    // Present but not a number is still a drop.
    for (json, found) in [
        (r#""2.5""#, "a string"),
        ("true", "a boolean"),
        ("[]", "an array"),
    ] {
        let e = err(&decoder, &format!(r#"{{"x":1,"y":{json}}}"#));
        assert_eq!(e.reason, DropReason::NotANumber, "{json}");
        assert!(e.to_string().contains(&format!("found {found}")), "{e}");
    }
    assert_eq!(
        err(&decoder, r#"{"x":1,"y":1e400}"#).reason,
        DropReason::NonFinite
    );
    // The features stay required, and null is not a missing feature but a wrong one.
    assert_eq!(err(&decoder, r#"{"y":1}"#).reason, DropReason::MissingField);
    assert_eq!(
        err(&decoder, r#"{"x":null,"y":1}"#).reason,
        DropReason::NotANumber
    );
}

#[test]
fn forecast_target_stays_required() {
    let decoder = value_decoder();
    assert_eq!(err(&decoder, "{}").reason, DropReason::MissingField);
    assert_eq!(
        err(&decoder, r#"{"value":null}"#).reason,
        DropReason::NotANumber
    );
}

// ---- number payloads ----------------------------------------------------------------------

#[test]
fn bare_number_payloads_decode() {
    let decoder = number_decoder(KeySource::TopicLevel(1), None);
    for (payload, value) in [
        ("21.5", 21.5),
        (" -3\n", -3.0),
        ("1e3", 1000.0),
        ("\t0\r\n", 0.0),
    ] {
        let out = ok(&decoder, payload);
        assert_eq!(out.values, [value], "{payload:?}");
        assert_eq!(out.key, "s1");
        assert_eq!(out.time_ms, None);
    }
}

#[test]
fn non_finite_number_payloads_are_non_finite() {
    let decoder = number_decoder(KeySource::Topic, None);
    for payload in [
        "nan",
        "NaN",
        "inf",
        "-Inf",
        "infinity",
        "+INFINITY",
        "1e400",
        "-1e400",
    ] {
        let e = err(&decoder, payload);
        assert_eq!(e.reason, DropReason::NonFinite, "{payload}");
        assert_eq!(
            e.to_string(),
            format!("payload: {payload:?} is not a finite number")
        );
    }
}

#[test]
fn garbage_number_payloads_are_not_a_number() {
    let decoder = number_decoder(KeySource::Topic, None);
    for payload in [
        "",
        "  \n",
        "abc",
        "\"1\"",
        "1,5",
        "1 2",
        "0x10",
        r#"{"value":1}"#,
    ] {
        let e = err(&decoder, payload);
        assert_eq!(e.reason, DropReason::NotANumber, "{payload:?}");
    }
    assert_eq!(
        err(&decoder, " ").to_string(),
        "payload: expected a number, found an empty payload"
    );
    let long = "x".repeat(100);
    assert_eq!(
        err(&decoder, &long).to_string(),
        format!("payload: expected a number, found {:?}…", "x".repeat(32))
    );
}

#[test]
fn number_payload_with_a_pointer_key_is_missing_key() {
    let e = err(&number_decoder(KeySource::Pointer("/id".into()), None), "1");
    assert_eq!(e.reason, DropReason::MissingKey);
    assert!(e.to_string().contains("needs format = \"json\""), "{e}");
}

#[test]
fn number_payload_with_a_time_pointer_is_bad_time() {
    let e = err(
        &number_decoder(KeySource::Topic, Some(("/ts", TimeUnit::Auto))),
        "1",
    );
    assert_eq!(e.reason, DropReason::BadTime);
}

#[test]
fn number_payload_invalid_utf8_is_not_utf8() {
    let e = err_on(&number_decoder(KeySource::Topic, None), TOPIC, b"2\xff");
    assert_eq!(e.reason, DropReason::NotUtf8);
}

// ---- reuse and allocation -----------------------------------------------------------------

#[test]
fn reading_buf_is_reused_across_decodes() {
    let decoder = Decoder::new(&pipeline(
        &[("a", "/a"), ("b", "/b")],
        KeySource::Pointer("/id".into()),
        Some(("/ts", TimeUnit::Milliseconds)),
    ));
    let mut out = ReadingBuf::default();
    let long_key = "k".repeat(40);
    let first = format!(r#"{{"id":"{long_key}","a":1,"b":2,"ts":10}}"#);
    assert!(decoder.decode(TOPIC, first.as_bytes(), &mut out).is_ok());
    assert_eq!(out.key, long_key);
    let (key_ptr, key_cap) = (out.key.as_ptr(), out.key.capacity());
    let values_ptr = out.values.as_ptr();

    assert!(decoder
        .decode(TOPIC, br#"{"id":7,"a":3,"b":4,"ts":20}"#, &mut out)
        .is_ok());
    assert_eq!(out.key, "7");
    assert_eq!(out.values, [3.0, 4.0]);
    assert_eq!(out.time_ms, Some(20));
    assert_eq!((out.key.as_ptr(), out.key.capacity()), (key_ptr, key_cap));
    assert_eq!(out.values.as_ptr(), values_ptr);

    // A failed decode leaves nothing behind that a later success could mix with.
    assert!(decoder
        .decode(TOPIC, br#"{"id":"x","a":5}"#, &mut out)
        .is_err());
    assert!(decoder
        .decode(TOPIC, br#"{"id":"y","b":6,"a":5,"ts":30}"#, &mut out)
        .is_ok());
    assert_eq!(
        out,
        ReadingBuf {
            key: "y".into(),
            text: String::new(),
            time_ms: Some(30),
            values: vec![5.0, 6.0],
        }
    );
}

/// Found by `fuzz_json_rendered_from_fields_decodes_to_them`: serde_json's default float
/// parser was one ULP off for these; with `float_roundtrip` every shortest-form f64 comes
/// back bit for bit.
#[test]
fn json_numbers_are_parsed_correctly_rounded() {
    let decoder = value_decoder();
    for x in [
        929.021_279_688_310_9,
        -2.000_298_200_757_738e-308,
        0.1,
        5e-324,
        f64::MAX,
    ] {
        let out = ok(&decoder, &format!("{{\"value\": {x:?}}}"));
        assert_eq!(
            out.values[0].to_bits(),
            x.to_bits(),
            "{x:?} became {:?}",
            out.values[0]
        );
    }
}

mod allocations {
    //! Counts this thread's heap allocations, to check that a warm decode allocates nothing.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct CountingAllocator;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        // `try_with`: the allocator may run while thread-locals are being torn down.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    // SAFETY: every call is forwarded unchanged to `System`; counting touches no heap memory.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAllocator = CountingAllocator;

    /// Allocations made by this thread while running `f`.
    pub(super) fn during(f: impl FnOnce()) -> u64 {
        let before = ALLOCATIONS.with(Cell::get);
        f();
        ALLOCATIONS.with(Cell::get) - before
    }
}

#[test]
fn warm_decode_does_not_allocate() {
    let json = Decoder::new(&pipeline(
        &[("value", "/value"), ("v0", "/readings/0/v")],
        KeySource::Pointer("/id".into()),
        Some(("/ts", TimeUnit::Auto)),
    ));
    let payloads: [&[u8]; 3] = [
        br#"{"ts":1700000000000,"value":21.53,"unit":"C","id":"sensor-1","readings":[{"v":1},2,{"x":3}]}"#,
        br#"{"id":12345,"ts":"2024-01-02T03:04:05.5+01:00","value":-1,"readings":[{"v":2.5}]}"#,
        br#"{"id":"s","value":1,"ts":1.5,"readings":[{"v":0}],"flat":"skipped","n":null}"#,
    ];
    let topic_key = time_decoder(TimeUnit::Milliseconds);
    let topic_payload: &[u8] = br#"{"ts":1700000000000,"value":21.53,"unit":"C"}"#;
    let number = number_decoder(KeySource::TopicLevel(1), None);
    let labels = label_decoder();
    let label_payloads: [&[u8]; 7] = [
        br#"{"x":1,"label":true}"#,
        br#"{"x":1,"label":false}"#,
        br#"{"x":1,"label":1}"#,
        br#"{"x":1,"label":0.0}"#,
        br#"{"x":1,"label":"YES"}"#,
        br#"{"x":1,"label":null}"#,
        br#"{"x":1}"#,
    ];
    let regression = regression_decoder();

    let mut out = ReadingBuf::default();
    let run = |out: &mut ReadingBuf| {
        for payload in payloads {
            assert!(json.decode(TOPIC, payload, out).is_ok());
        }
        assert!(topic_key.decode(TOPIC, topic_payload, out).is_ok());
        assert!(number.decode(TOPIC, b"21.5", out).is_ok());
        for payload in label_payloads {
            assert!(labels.decode(TOPIC, payload, out).is_ok());
        }
        assert!(regression.decode(TOPIC, br#"{"x":1}"#, out).is_ok());
        assert!(regression.decode(TOPIC, br#"{"x":1,"y":2}"#, out).is_ok());
        // Errors other than malformed_json do not allocate either.
        assert!(labels
            .decode(TOPIC, br#"{"x":1,"label":"maybe"}"#, out)
            .is_err_and(|e| e.reason == DropReason::BadLabel));
        assert!(labels
            .decode(TOPIC, br#"{"x":1,"label":2.5}"#, out)
            .is_err_and(|e| e.reason == DropReason::BadLabel));
        assert!(json.decode(TOPIC, br#"{"value":"x"}"#, out).is_err());
        assert!(number.decode(TOPIC, b"nan", out).is_err());
    };
    // Warm up: grow the key and values buffers once.
    out.key.reserve(64);
    run(&mut out);
    assert_eq!(allocations::during(|| run(&mut out)), 0);
    // Documented exceptions: serde_json's scratch buffer for escapes and deeply nested skips.
    let escaped = allocations::during(|| {
        assert!(json
            .decode(
                TOPIC,
                br#"{"id":"a\"b","value":1,"ts":1,"readings":[{"v":1}]}"#,
                &mut out
            )
            .is_ok());
    });
    let nested = allocations::during(|| {
        assert!(json
            .decode(
                TOPIC,
                br#"{"x":[[1]],"id":"a","value":1,"ts":1,"readings":[{"v":1}]}"#,
                &mut out
            )
            .is_ok());
    });
    assert!(escaped <= 1 && nested <= 1, "{escaped} {nested}");
    // The counter does see this thread's allocations (else the zero above proves nothing).
    let grow = allocations::during(|| drop(std::hint::black_box(String::with_capacity(8))));
    assert_eq!(grow, 1);
}

mod formats;
mod fuzz;
mod recommend;
