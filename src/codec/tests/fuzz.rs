//! Property tests of the payload decoders: arbitrary bytes, and structure-aware payloads
//! (JSON of any shape with hostile numbers, CSV with quotes and line breaks, SenML packs with
//! base names and times, recommend events). Whatever the input, decoding does not panic, a
//! reading only carries finite numbers (NaN only where it means "absent optional field"),
//! and a payload rendered from known fields decodes to those fields.
//!
//! Run with many cases by `scripts/fuzz.sh`; `cargo test` runs a few.

use proptest::prelude::*;

use super::*;
use crate::config::{CsvConfig, RecommendConfig, RegressionConfig};
use crate::fuzz_support::{config, hostile_text, number_text};

/// SenML's "now" (2024-01-01T00:00:00Z), as in the format tests.
const NOW: i64 = 1_704_067_200_000;

/// Every decoder shape the fuzzers drive, with which of its value slots may be NaN.
struct Subject {
    name: &'static str,
    decoder: Decoder,
    /// Value slots that may hold NaN (an optional target or weight); the others are finite.
    nan_allowed: &'static [usize],
    /// A recommend pipeline: slot 0 is the item (its text is in `text`), slot 1 the weight.
    recommend: bool,
}

fn json_pipeline() -> PipelineConfig {
    pipeline(
        &[("a", "/a"), ("c", "/b/c"), ("tilde", "/x~1y/~0z")],
        KeySource::Pointer("/id".into()),
        Some(("/ts", TimeUnit::Auto)),
    )
}

fn csv_pipeline(delimiter: u8) -> PipelineConfig {
    let mut p = pipeline(
        &[("a", "/a"), ("c", "/c")],
        KeySource::Pointer("/id".into()),
        Some(("/ts", TimeUnit::Seconds)),
    );
    p.format = PayloadFormat::Csv(CsvConfig {
        columns: vec!["ts".into(), "id".into(), "a".into(), "c".into()],
        delimiter,
        header: true,
    });
    p
}

fn senml_pipeline(key: KeySource, fields: &[(&str, &str)]) -> PipelineConfig {
    let mut p = pipeline(fields, key, None);
    p.format = PayloadFormat::Senml;
    p
}

fn recommend_pipeline(format: PayloadFormat) -> PipelineConfig {
    let mut p = pipeline(
        &[("item", "/item"), ("type", "/type")],
        KeySource::Pointer("/user".into()),
        Some(("/ts", TimeUnit::Milliseconds)),
    );
    p.format = format;
    p.model = ModelConfig::Recommend(RecommendConfig {
        item: "item".into(),
        weight: Some("type".into()),
        event_weights: vec![("view".into(), 1.0), ("purchase".into(), 5.0)],
        params: crate::model::RecommendParams::default(),
        requests: Vec::new(),
        publish_on_event: true,
        similar_output: crate::topic::TopicTemplate::builtin(crate::config::DEFAULT_SIMILAR_OUTPUT),
        snapshot_interval: crate::config::DEFAULT_SNAPSHOT_INTERVAL,
    });
    p
}

/// One decoder per format, key source and model role the codec distinguishes.
fn subjects() -> Vec<Subject> {
    let mut regression = json_pipeline();
    regression.model = ModelConfig::Regression(RegressionConfig {
        target: "a".into(),
        features: vec!["c".into(), "tilde".into()],
        ..RegressionConfig::default()
    });
    let mut classification = json_pipeline();
    classification.model = ModelConfig::Classification(ClassificationConfig {
        target: "a".into(),
        features: vec!["c".into(), "tilde".into()],
        ..ClassificationConfig::default()
    });
    let mut number = pipeline(&[("value", "")], KeySource::TopicLevel(1), None);
    number.format = PayloadFormat::Number;
    let mut rfc3339 = json_pipeline();
    rfc3339.time = Some(TimeSource {
        pointer: "/ts".into(),
        unit: TimeUnit::Rfc3339,
    });
    let mut csv_classification = csv_pipeline(b';');
    csv_classification.model = ModelConfig::Classification(ClassificationConfig {
        target: "a".into(),
        features: vec!["c".into()],
        ..ClassificationConfig::default()
    });
    let subject = |name, p: PipelineConfig, nan_allowed, recommend| Subject {
        name,
        decoder: Decoder::new(&p),
        nan_allowed,
        recommend,
    };
    vec![
        subject("json", json_pipeline(), &[], false),
        subject("json rfc3339", rfc3339, &[], false),
        subject("json regression", regression, &[0], false),
        subject("json classification", classification, &[0], false),
        subject("number", number, &[], false),
        subject("csv", csv_pipeline(b','), &[], false),
        subject("csv classification", csv_classification, &[0], false),
        subject(
            "senml by name",
            senml_pipeline(KeySource::RecordName, &[("value", "v")]),
            &[],
            false,
        ),
        subject(
            "senml by base name",
            senml_pipeline(KeySource::BaseName, &[("a", "/a"), ("c", "/c")]),
            &[],
            false,
        ),
        subject(
            "senml by topic",
            senml_pipeline(KeySource::TopicLevel(1), &[("a", "/a")]),
            &[],
            false,
        ),
        subject(
            "recommend json",
            recommend_pipeline(PayloadFormat::Json),
            &[1],
            true,
        ),
        subject(
            "recommend csv",
            recommend_pipeline(PayloadFormat::Csv(CsvConfig {
                columns: vec!["ts".into(), "user".into(), "item".into(), "type".into()],
                delimiter: b',',
                header: false,
            })),
            &[1],
            true,
        ),
    ]
}

thread_local! {
    /// Built once per test thread: building decoders is not what is being tested.
    static SUBJECTS: Vec<Subject> = subjects();
}

/// Decodes `payload` with every subject and checks what every reading may hold.
fn check_all(topic: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    SUBJECTS.with(|subjects| {
        for s in subjects {
            check_one(s, topic, payload)?;
        }
        Ok(())
    })
}

fn check_one(s: &Subject, topic: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    let mut out = ReadingBuf::default();
    let mut problem = None;
    let fields = s.decoder.field_names().count();
    s.decoder.decode_each(
        topic,
        payload,
        NOW,
        &mut out,
        |r| {
            if problem.is_some() {
                return;
            }
            if r.values.len() != fields {
                problem = Some(format!("{} values for {fields} fields", r.values.len()));
            }
            for (i, v) in r.values.iter().enumerate() {
                if !(v.is_finite() || (v.is_nan() && s.nan_allowed.contains(&i))) {
                    problem = Some(format!("value {i} is {v}"));
                }
            }
            if s.recommend {
                let weight = r.values.get(1).copied().unwrap_or(f64::NAN);
                if r.text.is_empty() || r.text.len() > 64 {
                    problem = Some(format!("item {:?}", r.text));
                } else if !(weight.is_nan() || (weight > 0.0 && weight <= 1024.0)) {
                    problem = Some(format!("weight {weight}"));
                }
            }
            if r.key.is_empty() {
                problem = Some("empty key".into());
            }
        },
        |e| {
            // Rendering every error exercises the message code as well.
            let _ = e.to_string();
        },
    );
    match problem {
        Some(problem) => Err(TestCaseError::fail(format!(
            "{}: {problem} from {:?}",
            s.name,
            String::from_utf8_lossy(payload)
        ))),
        None => Ok(()),
    }
}

// ---- generators ------------------------------------------------------------------------------

/// A JSON value of any shape, rendered as text; numbers come from [`number_text`] (so some
/// are outside f64, or not JSON at all), member names favour the configured ones.
fn json_text() -> impl Strategy<Value = String> {
    json_text_with(number_text().boxed())
}

/// Valid JSON of any shape (numbers are finite f64s), for the noise around known fields.
fn valid_json_text() -> impl Strategy<Value = String> {
    json_text_with(finite().prop_map(|x| format!("{x:?}")).boxed())
}

fn json_text_with(number: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "a", "b", "c", "id", "ts", "x/y", "~z", "item", "type", "user", "n", "v", "bn", "bt",
            "vb", "vs", "s", "t", "bver", "a_",
        ])
        .prop_map(str::to_owned),
        hostile_text(6),
    ];
    let leaf = prop_oneof![
        number,
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        hostile_text(12).prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("\"2024-01-01T00:00:00Z\"".to_owned()),
        Just("\"9999-12-31T23:59:59.999+23:59\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just(format!("\"{}\"", "x".repeat(70))),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((name.clone(), inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A JSON object with the configured members present (so the decoders read deeper than the
/// top level), with values of any shape.
fn json_reading() -> impl Strategy<Value = String> {
    (
        json_text(),
        json_text(),
        json_text(),
        json_text(),
        json_text(),
    )
        .prop_map(|(id, ts, a, c, extra)| {
            format!(
                r#"{{"id":{id},"ts":{ts},"a":{a},"b":{{"c":{c}}},"x/y":{{"~z":{extra}}},"item":{id},"type":{extra},"user":{id}}}"#
            )
        })
}

/// A CSV cell: numbers, text, quoted text with `""` escapes and line breaks, or broken quotes.
fn csv_cell() -> impl Strategy<Value = String> {
    prop_oneof![
        number_text(),
        hostile_text(8),
        hostile_text(8).prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
        Just("\"a\nb\"".to_owned()),
        Just("\"unclosed".to_owned()),
        Just("\"x\"y".to_owned()),
        Just(String::new()),
        Just("  ".to_owned()),
        Just("2024-01-01T00:00:00Z".to_owned()),
        Just("view".to_owned()),
    ]
}

fn csv_payload() -> impl Strategy<Value = String> {
    let line = prop::collection::vec(csv_cell(), 0..6);
    let end = prop::sample::select(vec!["\n", "\r\n", "\r", ""]);
    let delimiter = prop::sample::select(vec![",", ";"]);
    (
        prop::collection::vec((line, end), 0..5),
        delimiter,
        any::<bool>(),
    )
        .prop_map(|(lines, delimiter, header)| {
            let mut text = String::new();
            if header {
                text.push_str("ts,id,a,c\n");
            }
            for (cells, end) in lines {
                text.push_str(&cells.join(delimiter));
                text.push_str(end);
            }
            text
        })
}

/// A SenML record: any subset of the RFC 8428 fields, of the right type or not.
fn senml_record() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        ("bn|n", senml_name()),
        ("bt|t|bv|bs|v|s|ut|bver", number_text()),
        (
            "vb",
            prop::sample::select(vec!["true", "false", "1"]).prop_map(str::to_owned)
        ),
        (
            "vs|vd|u|bu",
            hostile_text(6).prop_map(|s| serde_json::Value::String(s).to_string())
        ),
        ("any", json_text()),
    ];
    let names = [
        "bn", "n", "bt", "t", "bv", "bs", "v", "s", "ut", "bver", "vb", "vs", "vd", "u", "bu",
        "x_", "bx_", "ver",
    ];
    prop::collection::vec((field, prop::sample::select(names.to_vec())), 0..6).prop_map(|fields| {
        let members: Vec<String> = fields
            .into_iter()
            .map(|((_, value), name)| format!("\"{name}\":{value}"))
            .collect();
        format!("{{{}}}", members.join(","))
    })
}

/// A SenML name as JSON text: valid ones, invalid ones, and non-strings.
fn senml_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9:./_-]{0,8}".prop_map(|s| format!("\"{s}\"")),
        Just("\"a\"".to_owned()),
        Just("\"c\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"-bad\"".to_owned()),
        Just("7".to_owned()),
        hostile_text(6).prop_map(|s| serde_json::Value::String(s).to_string()),
    ]
}

fn senml_pack() -> impl Strategy<Value = String> {
    prop::collection::vec(senml_record(), 0..20).prop_map(|r| format!("[{}]", r.join(",")))
}

/// Keys that survive every format unchanged: no blanks at the ends (CSV trims them), no
/// control characters, no MQTT wildcards.
fn plain_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:é/\"\\\\-]([a-zA-Z0-9_.:é/ ,;\"\\\\-]{0,14}[a-zA-Z0-9_é\"-])?"
}

/// A finite f64 of any magnitude, including -0 and subnormals.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        prop::sample::select(vec![
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e308,
            -1e-308,
            0.1,
        ]),
    ]
}

/// JSON text of a string (quotes, backslashes and non-ASCII escaped or not, as serde_json
/// writes them).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A CSV cell holding `s` exactly (quoted, with `""`).
fn csv_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn only_reading(decoder: &Decoder, topic: &str, payload: &str) -> Result<ReadingBuf, String> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut out = ReadingBuf::default();
    decoder.decode_each(
        topic,
        payload.as_bytes(),
        NOW,
        &mut out,
        |r| found.push(r.clone()),
        |e| errors.push(e),
    );
    match (found.as_slice(), errors.first()) {
        ([one], None) => Ok(one.clone()),
        (_, Some(e)) => Err(format!("{payload}: {e}")),
        (many, None) => Err(format!("{payload}: {} readings", many.len())),
    }
}

/// Equal as bits, so that -0 and 0 are told apart.
fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// ---- properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn fuzz_arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        check_all(TOPIC, &payload)?;
    }

    #[test]
    fn fuzz_arbitrary_text_never_panics(payload in hostile_text(200), topic in hostile_text(12)) {
        check_all(TOPIC, payload.as_bytes())?;
        check_all(&topic, payload.as_bytes())?;
    }

    #[test]
    fn fuzz_json_of_any_shape_gives_only_finite_readings(payload in json_text()) {
        check_all(TOPIC, payload.as_bytes())?;
    }

    #[test]
    fn fuzz_json_readings_give_only_finite_readings(
        payload in json_reading(),
        batch in prop::collection::vec(json_reading(), 0..4),
    ) {
        check_all(TOPIC, payload.as_bytes())?;
        check_all(TOPIC, format!("[{}]", batch.join(",")).as_bytes())?;
    }

    #[test]
    fn fuzz_csv_payloads_give_only_finite_readings(payload in csv_payload()) {
        check_all(TOPIC, payload.as_bytes())?;
    }

    #[test]
    fn fuzz_senml_packs_give_only_finite_readings(payload in senml_pack()) {
        check_all(TOPIC, payload.as_bytes())?;
    }

    #[test]
    fn fuzz_invalid_utf8_is_dropped_whole(
        prefix in hostile_text(20),
        bad in prop::sample::select(vec![
            vec![0xff], vec![0xc0, 0x80], vec![0xed, 0xa0, 0x80], vec![0xf4, 0x90, 0x80, 0x80],
            vec![0xe2, 0x82],
        ]),
    ) {
        let mut payload = prefix.into_bytes();
        payload.extend_from_slice(&bad);
        SUBJECTS.with(|subjects| -> Result<(), TestCaseError> {
            for s in subjects {
                let mut out = ReadingBuf::default();
                let mut readings = 0;
                let mut reasons = Vec::new();
                s.decoder.decode_each(TOPIC, &payload, NOW, &mut out, |_| readings += 1, |e| {
                    reasons.push(e.reason)
                });
                prop_assert_eq!(readings, 0, "{}", s.name);
                prop_assert_eq!(&reasons, &[DropReason::NotUtf8], "{}", s.name);
            }
            Ok(())
        })?;
    }

    #[test]
    fn fuzz_json_rendered_from_fields_decodes_to_them(
        key in plain_key(),
        time_ms in 100_000_000_000i64..=253_402_300_799_999,
        a in finite(),
        c in finite(),
        tilde in finite(),
        noise in valid_json_text(),
    ) {
        let decoder = Decoder::new(&json_pipeline());
        let payload = format!(
            r#"{{"noise":{noise},"b":{{"c":{c:?},"d":{noise}}},"id":{},"a":{a:?},"x/y":{{"~z":{tilde:?}}},"ts":{time_ms}}}"#,
            json_string(&key),
        );
        let found = only_reading(&decoder, TOPIC, &payload).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&found.key, &key);
        prop_assert_eq!(found.time_ms, Some(time_ms));
        prop_assert!(same_bits(&found.values, &[a, c, tilde]), "{:?} from {}", found.values, payload);
    }

    #[test]
    fn fuzz_csv_rendered_from_fields_decodes_to_them(
        key in plain_key(),
        time_s in -62_135_596_800i64..=253_402_300_799,
        a in finite(),
        c in finite(),
        quote_numbers in any::<bool>(),
    ) {
        let decoder = Decoder::new(&csv_pipeline(b','));
        let number = |x: f64| if quote_numbers { csv_quoted(&format!("{x:?}")) } else { format!("{x:?}") };
        let payload = format!(
            "ts,id,a,c\r\n{time_s},{},{}, {} \r\n",
            csv_quoted(&key),
            number(a),
            number(c),
        );
        let found = only_reading(&decoder, TOPIC, &payload).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&found.key, &key);
        prop_assert_eq!(found.time_ms, Some(time_s * 1000));
        prop_assert!(same_bits(&found.values, &[a, c]), "{:?} from {}", found.values, payload);
    }

    #[test]
    fn fuzz_senml_rendered_from_fields_decodes_to_them(
        base in "[a-z][a-z0-9:._/-]{0,10}:",
        base_time_s in 268_435_456i64..=4_000_000_000,
        offset_s in 0i64..1000,
        a in finite(),
        c in finite(),
    ) {
        let decoder = Decoder::new(&senml_pipeline(KeySource::BaseName, &[("a", "/a"), ("c", "/c")]));
        let payload = format!(
            r#"[{{"bn":{},"bt":{base_time_s},"n":"a","t":{offset_s},"v":{a:?}}},{{"n":"c","t":{offset_s},"v":{c:?},"u":"V"}}]"#,
            json_string(&base),
        );
        let found = only_reading(&decoder, TOPIC, &payload).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&found.key, &base);
        prop_assert_eq!(found.time_ms, Some((base_time_s + offset_s) * 1000));
        // Compared as numbers: a resolved SenML value is `bv + v` (RFC 8428 §4.6), and the
        // default base value 0 turns -0 into 0.
        prop_assert_eq!(&found.values, &vec![a, c], "from {}", payload);
    }

    #[test]
    fn fuzz_recommend_event_rendered_from_fields_decodes_to_them(
        user in plain_key(),
        item in "[a-zA-Z0-9 _:é\"\\\\-]{1,20}",
        weight in prop_oneof![
            (1e-300f64..=1024.0).prop_map(Some),
            Just(Some(1024.0)),
            Just(None),
        ],
        time_ms in any::<i64>(),
    ) {
        let decoder = Decoder::new(&recommend_pipeline(PayloadFormat::Json));
        let weight_text = match weight {
            Some(w) => format!("{w:?}"),
            None => "\"purchase\"".into(),
        };
        let payload = format!(
            r#"{{"user":{},"item":{},"type":{weight_text},"ts":{time_ms}}}"#,
            json_string(&user),
            json_string(&item),
        );
        let found = only_reading(&decoder, TOPIC, &payload).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&found.key, &user);
        prop_assert_eq!(&found.text, &item);
        prop_assert_eq!(found.time_ms, Some(time_ms));
        let expected = weight.unwrap_or(5.0);
        prop_assert_eq!(found.values.get(1).map(|w| w.to_bits()), Some(expected.to_bits()));
    }

    #[test]
    fn fuzz_number_payload_rendered_from_a_value_decodes_to_it(x in finite(), pad in "[ \t\r\n]{0,3}") {
        let mut p = pipeline(&[("value", "")], KeySource::TopicLevel(1), None);
        p.format = PayloadFormat::Number;
        let decoder = Decoder::new(&p);
        let payload = format!("{pad}{x:?}{pad}");
        let found = only_reading(&decoder, TOPIC, &payload).map_err(TestCaseError::fail)?;
        prop_assert!(same_bits(&found.values, &[x]), "{:?} from {:?}", found.values, payload);
    }
}

#[test]
fn fuzz_deeply_nested_json_is_rejected_not_overflowing_the_stack() {
    for depth in [100, 1_000, 5_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("{\"b\":{\"c\":", "}}")] {
            let payload = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            check_all(TOPIC, payload.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let unclosed = open.repeat(depth);
            check_all(TOPIC, unclosed.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn fuzz_long_strings_and_huge_packs_are_decoded_or_dropped() {
    let long = "x".repeat(20_000);
    let payloads = [
        format!(r#"{{"id":"{long}","a":1,"b":{{"c":2}}}}"#),
        format!(r#"{{"id":"s","a":1,"b":{{"c":2}},"{long}":"{long}"}}"#),
        format!("[{}]", vec![r#"{"n":"a","v":1}"#; 3_000].join(",")),
        format!("ts,id,a,c\n{}", "1,s,2,3\n".repeat(5_000)),
    ];
    for payload in &payloads {
        check_all(TOPIC, payload.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
}
