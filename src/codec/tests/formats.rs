//! Payloads with several readings: JSON batches, CSV lines and SenML packs (with the examples
//! of RFC 8428 §5.1), one reading per callback and one error per reading dropped.

use super::*;
use crate::config::CsvConfig;

/// Arrival time used as SenML's "now" in these tests (2024-01-01T00:00:00Z).
const NOW: i64 = 1_704_067_200_000;

/// Every reading and every error of one payload.
#[track_caller]
fn all(decoder: &Decoder, payload: &str) -> (Vec<ReadingBuf>, Vec<DecodeError>) {
    all_on(decoder, TOPIC, payload)
}

#[track_caller]
fn all_on(decoder: &Decoder, topic: &str, payload: &str) -> (Vec<ReadingBuf>, Vec<DecodeError>) {
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut out = ReadingBuf::default();
    decoder.decode_each(
        topic,
        payload.as_bytes(),
        NOW,
        &mut out,
        |r| readings.push(r.clone()),
        |e| errors.push(e),
    );
    (readings, errors)
}

/// The readings of a payload that must decode without any error.
#[track_caller]
fn readings(decoder: &Decoder, payload: &str) -> Vec<ReadingBuf> {
    let (readings, errors) = all(decoder, payload);
    assert!(errors.is_empty(), "{payload}: {:?}", messages(&errors));
    readings
}

fn messages(errors: &[DecodeError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn reasons(errors: &[DecodeError]) -> Vec<DropReason> {
    errors.iter().map(|e| e.reason).collect()
}

fn reading(key: &str, time_ms: Option<i64>, values: &[f64]) -> ReadingBuf {
    ReadingBuf {
        key: key.into(),
        text: String::new(),
        time_ms,
        values: values.to_vec(),
    }
}

// ---- JSON batches ---------------------------------------------------------------------------

fn batch_decoder() -> Decoder {
    Decoder::new(&pipeline(
        &[("value", "/value")],
        KeySource::Pointer("/id".into()),
        Some(("/ts", TimeUnit::Milliseconds)),
    ))
}

#[test]
fn each_batch_element_is_a_reading_read_with_the_same_pointers() {
    let decoder = batch_decoder();
    let found = readings(
        &decoder,
        r#" [{"id":"a","ts":1,"value":1.5},{"ts":2,"value":-2,"id":7,"extra":[1,[2]]}] "#,
    );
    assert_eq!(
        found,
        [
            reading("a", Some(1), &[1.5]),
            reading("7", Some(2), &[-2.0])
        ]
    );
    // A topic key holds for every element.
    let topic = value_decoder();
    let found = readings(&topic, r#"[{"value":1},{"value":2}]"#);
    assert_eq!(
        found,
        [reading("s1", None, &[1.0]), reading("s1", None, &[2.0])]
    );
    // Elements need not be objects: "" is the element itself.
    let whole = Decoder::new(&pipeline(&[("v", "")], KeySource::Topic, None));
    let values: Vec<f64> = readings(&whole, "[1, 2.5, -3]")
        .iter()
        .map(|r| r.values[0])
        .collect();
    assert_eq!(values, [1.0, 2.5, -3.0]);
}

#[test]
fn a_bad_batch_element_drops_only_itself() {
    let decoder = batch_decoder();
    let (found, errors) = all(
        &decoder,
        r#"[{"id":"a","ts":1,"value":1},{"id":"b","ts":2,"value":"2"},{"id":"c","ts":3},
           {"ts":4,"value":4},{"id":"e","ts":5,"value":5}]"#,
    );
    assert_eq!(
        found,
        [reading("a", Some(1), &[1.0]), reading("e", Some(5), &[5.0])]
    );
    assert_eq!(
        messages(&errors),
        [
            r#"element [1]: field "value" (/value): expected a number, found a string (numbers inside strings are not converted)"#,
            r#"element [2]: field "value" (/value): not present"#,
            "element [3]: key (/id): not present",
        ]
    );
    assert_eq!(
        reasons(&errors),
        [
            DropReason::NotANumber,
            DropReason::MissingField,
            DropReason::MissingKey
        ]
    );
}

#[test]
fn a_malformed_batch_is_dropped_once_before_any_reading() {
    let decoder = batch_decoder();
    for (payload, reason) in [
        (
            r#"[{"id":"a","ts":1,"value":1},{"id":"b","ts":2,"value":2}"#,
            DropReason::MalformedJson,
        ),
        (
            r#"[{"id":"a","ts":1,"value":1}] trailing"#,
            DropReason::MalformedJson,
        ),
        (
            r#"[{"id":"a","ts":1,"value":1},{"id":"b","ts":2,"value":1e400}]"#,
            DropReason::NonFinite,
        ),
    ] {
        let (found, errors) = all(&decoder, payload);
        assert!(found.is_empty(), "{payload}");
        assert_eq!(reasons(&errors), [reason], "{payload}");
    }
}

#[test]
fn a_pointer_cannot_address_into_the_top_level_array() {
    let decoder = Decoder::new(&pipeline(&[("v", "/0/value")], KeySource::Topic, None));
    let (found, errors) = all(&decoder, r#"[{"value":1}]"#);
    assert!(found.is_empty());
    assert_eq!(
        messages(&errors),
        [r#"element [0]: field "v" (/0/value): not present"#]
    );
    // Inside an element, arrays are followed as usual.
    assert_eq!(
        readings(&decoder, r#"[[{"value":3}]]"#),
        [reading(TOPIC, None, &[3.0])]
    );
    // An empty batch has no reading and no error.
    let (found, errors) = all(&decoder, " [ ] ");
    assert!(found.is_empty() && errors.is_empty());
}

// ---- CSV ------------------------------------------------------------------------------------

/// Columns `ts, sensor, temp, hum`; key `/sensor`, time `/ts` (s), fields temp and hum.
fn csv_decoder(delimiter: u8, header: bool) -> Decoder {
    let mut p = pipeline(
        &[("temp", "/temp"), ("hum", "/hum")],
        KeySource::Pointer("/sensor".into()),
        Some(("/ts", TimeUnit::Seconds)),
    );
    p.format = PayloadFormat::Csv(CsvConfig {
        columns: vec!["ts".into(), "sensor".into(), "temp".into(), "hum".into()],
        delimiter,
        header,
    });
    Decoder::new(&p)
}

#[test]
fn each_csv_line_is_a_reading() {
    let decoder = csv_decoder(b',', false);
    let found = readings(
        &decoder,
        "1700000000,s1,21.5,40\n1700000001.5, s2 ,-3e1, 41 \r\n1700000002,s1,22,42",
    );
    assert_eq!(
        found,
        [
            reading("s1", Some(1_700_000_000_000), &[21.5, 40.0]),
            reading("s2", Some(1_700_000_001_500), &[-30.0, 41.0]),
            reading("s1", Some(1_700_000_002_000), &[22.0, 42.0]),
        ]
    );
    let semicolons = csv_decoder(b';', false);
    assert_eq!(
        readings(&semicolons, "1;a,b;1.5;2\n"),
        [reading("a,b", Some(1000), &[1.5, 2.0])],
        "a comma is text when it is not the delimiter"
    );
    let tabs = csv_decoder(b'\t', false);
    assert_eq!(
        readings(&tabs, "1\t a b \t2\t3\n"),
        [reading("a b", Some(1000), &[2.0, 3.0])]
    );
}

#[test]
fn blank_lines_are_skipped_and_errors_name_the_line() {
    let decoder = csv_decoder(b',', false);
    let (found, errors) = all(
        &decoder,
        "\n1,a,1,2\n\n   \r\n1,b,x,2\n1,c,3\n1,d,4,5,6\n1,,7,8\n2,e,9,10\n\n",
    );
    assert_eq!(
        found,
        [
            reading("a", Some(1000), &[1.0, 2.0]),
            reading("e", Some(2000), &[9.0, 10.0])
        ]
    );
    assert_eq!(
        messages(&errors),
        [
            r#"line 5: field "temp" (/temp): expected a number, found "x""#,
            "line 6: expected 4 cells (the columns), found 3",
            "line 7: expected 4 cells (the columns), found 5",
            r#"line 8: key (/sensor): expected a non-empty string, found """#,
        ]
    );
    assert_eq!(
        reasons(&errors),
        [
            DropReason::NotANumber,
            DropReason::BadCsv,
            DropReason::BadCsv,
            DropReason::MissingKey
        ]
    );
    // Nothing but blank lines: no reading, no error.
    let (found, errors) = all(&decoder, "\r\n \n");
    assert!(found.is_empty() && errors.is_empty());
}

#[test]
fn a_header_line_is_skipped_only_when_asked_and_equal_to_the_columns() {
    let payload = "ts,sensor,temp,hum\n1,a,1,2\n";
    let with_header = csv_decoder(b',', true);
    assert_eq!(
        readings(&with_header, payload),
        [reading("a", Some(1000), &[1.0, 2.0])]
    );
    // Blank lines before it, quotes and blanks around the names do not matter.
    assert_eq!(
        readings(&with_header, "\n \"ts\", sensor ,\"temp\",hum\n1,a,1,2").len(),
        1
    );
    // A broken line is never taken for the header.
    let (found, errors) = all(&with_header, "ts,\"sensor\"x,temp,hum\n1,a,1,2\n");
    assert_eq!(found.len(), 1);
    assert_eq!(reasons(&errors), [DropReason::BadCsv]);
    // Only the first line can be the header.
    let (found, errors) = all(&with_header, "1,a,1,2\nts,sensor,temp,hum\n");
    assert_eq!(found.len(), 1);
    assert_eq!(reasons(&errors), [DropReason::BadTime]);
    // A first line that differs is data.
    let (found, errors) = all(&with_header, "time,sensor,temp,hum\n1,a,1,2\n");
    assert_eq!(found.len(), 1);
    assert_eq!(
        messages(&errors),
        [r#"line 1: time (/ts): expected a number of seconds, found "time""#]
    );
    // Without `header = true` a header line is an error like any bad line.
    let (found, errors) = all(&csv_decoder(b',', false), payload);
    assert_eq!(found.len(), 1);
    assert_eq!(reasons(&errors), [DropReason::BadTime]);
}

#[test]
fn quoted_cells_follow_rfc_4180() {
    let decoder = csv_decoder(b',', false);
    let found = readings(
        &decoder,
        "1,\"s,1\",\"21.5\",2\n2, \"say \"\"hi\"\"\" ,3,4\r\n4,\"\"\"\",7,8\n5,a\"b,9,10",
    );
    let keys: Vec<&str> = found.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["s,1", "say \"hi\"", "\"", "a\"b"]);
    // A quoted line break is a cell's text, but a key with one cannot be a topic level.
    let (_, errors) = all(&decoder, "3,\"two\nlines\",5,6\n");
    assert_eq!(reasons(&errors), [DropReason::BadKey]);
    assert_eq!(found[0].values, [21.5, 2.0]);
    // A line break inside quotes does not start a new line, but is counted.
    // (The key "a\nb" itself is a bad key.)
    let (_, errors) = all(&decoder, "1,\"a\nb\",1,2\n2,c,x,2\n");
    assert_eq!(
        messages(&errors),
        [
            r#"key (/sensor): a control character (\u{a}) at byte 1: a key must be usable as a topic level"#,
            r#"line 3: field "temp" (/temp): expected a number, found "x""#
        ]
    );
}

#[test]
fn broken_quotes_are_bad_csv_for_their_line_only() {
    let decoder = csv_decoder(b',', false);
    let (found, errors) = all(&decoder, "1,\"a\"x,1,2\n2,b,3,4\n3,\"c,5,6\n4,d,7,8\n");
    assert_eq!(found, [reading("b", Some(2000), &[3.0, 4.0])]);
    assert_eq!(
        messages(&errors),
        [
            "line 1: cell 2 has text after its closing quote (RFC 4180: a quoted cell ends at its closing quote)",
            "line 3: a quoted cell has no closing quote (RFC 4180: a quote inside a quoted cell is written \"\")",
        ]
    );
    assert_eq!(reasons(&errors), [DropReason::BadCsv, DropReason::BadCsv]);
}

#[test]
fn csv_numbers_and_empty_cells() {
    let decoder = csv_decoder(b',', false);
    let (found, errors) = all(
        &decoder,
        "1,a,,2\n1,b,nan,2\n1,c,1,-inf\n1,d,1e400,2\n1,e, +.5 ,2\n",
    );
    assert_eq!(found, [reading("e", Some(1000), &[0.5, 2.0])]);
    assert_eq!(
        messages(&errors),
        [
            r#"line 1: field "temp" (/temp): not present"#,
            r#"line 2: field "temp" (/temp): "nan" is not a finite number"#,
            r#"line 3: field "hum" (/hum): "-inf" is not a finite number"#,
            r#"line 4: field "temp" (/temp): "1e400" is not a finite number"#,
        ]
    );
    assert_eq!(
        reasons(&errors),
        [
            DropReason::MissingField,
            DropReason::NonFinite,
            DropReason::NonFinite,
            DropReason::NonFinite
        ]
    );
}

#[test]
fn csv_times_follow_the_time_unit() {
    let mut p = pipeline(
        &[("v", "/v")],
        KeySource::Topic,
        Some(("/t", TimeUnit::Auto)),
    );
    p.format = PayloadFormat::Csv(CsvConfig {
        columns: vec!["t".into(), "v".into()],
        delimiter: b',',
        header: false,
    });
    let auto = Decoder::new(&p);
    let times: Vec<Option<i64>> = readings(
        &auto,
        "1700000000,1\n1700000000123,1\n2024-01-02T03:04:05.5+01:00,1\n1.5,1\n",
    )
    .iter()
    .map(|r| r.time_ms)
    .collect();
    assert_eq!(
        times,
        [
            Some(1_700_000_000_000),
            Some(1_700_000_000_123),
            Some(1_704_161_045_500),
            Some(1500)
        ]
    );
    let (_, errors) = all(&auto, "yesterday,1\n,1\n");
    assert_eq!(reasons(&errors), [DropReason::BadTime, DropReason::BadTime]);
    assert!(
        errors[0]
            .to_string()
            .starts_with("line 1: time (/t): not an RFC 3339 time"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1].to_string(), "line 2: time (/t): not present");
    p.time = Some(crate::config::TimeSource {
        pointer: "/t".into(),
        unit: TimeUnit::Milliseconds,
    });
    let ms = Decoder::new(&p);
    assert_eq!(
        readings(&ms, "1700000000123,1")[0].time_ms,
        Some(1_700_000_000_123)
    );
    let (_, errors) = all(&ms, "2024-01-02T03:04:05Z,1");
    assert_eq!(
        messages(&errors),
        [r#"line 1: time (/t): expected a number of milliseconds, found "2024-01-02T03:04:05Z""#]
    );
}

#[test]
fn csv_labels_match_as_text_then_as_numbers() {
    let mut p = pipeline(&[("x", "/x"), ("label", "/label")], KeySource::Topic, None);
    p.format = PayloadFormat::Csv(CsvConfig {
        columns: vec!["x".into(), "label".into()],
        delimiter: b',',
        header: false,
    });
    p.model = ModelConfig::Classification(ClassificationConfig {
        target: "label".into(),
        features: vec!["x".into()],
        positive: vec!["yes".into(), "1".into()],
        negative: vec!["no".into(), "0".into()],
        ..ClassificationConfig::default()
    });
    let decoder = Decoder::new(&p);
    let (found, errors) = all(
        &decoder,
        "1,YES\n1,no\n1,1.0\n1,0\n1,TRUE\n1,false\n1,\n1,\"yes\"\n1,maybe\n1,2\n",
    );
    let labels: Vec<f64> = found.iter().map(|r| r.values[1]).collect();
    assert_eq!(&labels[..6], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert!(labels[6].is_nan(), "an empty label cell means predict only");
    assert_eq!(labels[7], 1.0);
    assert_eq!(labels.len(), 8);
    assert_eq!(
        messages(&errors),
        [
            r#"line 9: field "label" (/label): the string "maybe" is not a label (positive: true, "yes", "1"; negative: false, "no", "0"; ASCII case is ignored)"#,
            r#"line 10: field "label" (/label): the number 2 is not a label (positive: true, "yes", "1"; negative: false, "no", "0"; ASCII case is ignored)"#,
        ]
    );
}

// ---- SenML (RFC 8428) -----------------------------------------------------------------------

/// A SenML decoder with `key` and `fields`, a forecast of the first field unless `model` says.
fn senml_decoder(key: KeySource, fields: &[(&str, &str)], model: Option<ModelConfig>) -> Decoder {
    let mut p = pipeline(fields, key, None);
    p.format = PayloadFormat::Senml;
    if let Some(model) = model {
        p.model = model;
    }
    Decoder::new(&p)
}

/// `key = "name"`, one field reading `value` ("v", "vb", "s").
fn by_name(value: &str) -> Decoder {
    senml_decoder(KeySource::RecordName, &[("value", value)], None)
}

/// RFC 8428 §5.1.1, Single Datapoint (copied from the RFC).
const RFC_5_1_1: &str = r#"
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
   ]
"#;

/// RFC 8428 §5.1.2, Multiple Datapoints, first example (copied from the RFC).
const RFC_5_1_2_NOW: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
     {"n":"current","u":"A","v":1.2}
   ]
"#;

/// RFC 8428 §5.1.2, Multiple Datapoints, second example (copied from the RFC).
const RFC_5_1_2_TIMED: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]
"#;

/// RFC 8428 §5.1.3, Multiple Measurements (copied from the RFC).
const RFC_5_1_3: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]
"#;

/// RFC 8428 §5.1.4, Resolved Data: §5.1.3 resolved (copied from the RFC).
const RFC_5_1_4: &str = r#"
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
      "v":20},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
      "v":24.30621},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
      "v":20.3},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
      "v":24.30622},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
      "v":20.7},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
      "v":24.30623},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
      "v":60.07966},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
      "v":98},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
      "v":21.2},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
      "v":24.30628},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
      "v":60.07967}
   ]
"#;

/// RFC 8428 §5.1.5, Multiple Data Types (copied from the RFC).
const RFC_5_1_5: &str = r#"
   [
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfc-reader","vd":"aGkgCg"}
   ]
"#;

/// RFC 8428 §5.1.6, Collection of Resources (copied from the RFC).
const RFC_5_1_6: &str = r#"
   [
     {"bn":"2001:db8::2/","bt":1.320078429e+09,
      "n":"temperature","u":"Cel","v":25.2},
     {"n":"humidity","u":"%RH","v":30},
     {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
     {"n":"humidity","u":"%RH","v":67}
   ]
"#;

#[test]
fn rfc_8428_single_datapoint_is_one_reading_at_now() {
    assert_eq!(
        readings(&by_name("v"), RFC_5_1_1),
        [reading("urn:dev:ow:10e2073a01080063", Some(NOW), &[23.1])]
    );
}

#[test]
fn rfc_8428_multiple_datapoints_by_name_and_by_base_name() {
    assert_eq!(
        readings(&by_name("v"), RFC_5_1_2_NOW),
        [
            reading("urn:dev:ow:10e2073a01080063:voltage", Some(NOW), &[120.1]),
            reading("urn:dev:ow:10e2073a01080063:current", Some(NOW), &[1.2]),
        ]
    );
    let grouped = senml_decoder(
        KeySource::BaseName,
        &[("voltage", "/voltage"), ("current", "/current")],
        None,
    );
    assert_eq!(
        readings(&grouped, RFC_5_1_2_NOW),
        [reading(
            "urn:dev:ow:10e2073a01080063:",
            Some(NOW),
            &[120.1, 1.2]
        )]
    );
}

#[test]
fn rfc_8428_timed_datapoints_resolve_base_time_and_relative_offsets() {
    // bt = Tue Jun 8 18:01:16.001 UTC 2010; t = -5..0 s before it.
    let bt = 1_276_020_076_001;
    let name = "urn:dev:ow:10e2073a0108006:";
    let mut expected = vec![reading(&format!("{name}voltage"), Some(bt), &[120.1])];
    for (seconds_before, value) in [(5, 1.2), (4, 1.3), (3, 1.4), (2, 1.5), (1, 1.6), (0, 1.7)] {
        expected.push(reading(
            &format!("{name}current"),
            Some(bt - seconds_before * 1000),
            &[value],
        ));
    }
    assert_eq!(readings(&by_name("v"), RFC_5_1_2_TIMED), expected);

    // Grouped by base name and time: only bt has both a voltage and a current.
    let grouped = senml_decoder(
        KeySource::BaseName,
        &[("voltage", "/voltage"), ("current", "/current")],
        None,
    );
    let (found, errors) = all(&grouped, RFC_5_1_2_TIMED);
    assert_eq!(found, [reading(name, Some(bt), &[120.1, 1.7])]);
    assert_eq!(reasons(&errors), [DropReason::MissingField; 5]);
    assert_eq!(
        errors[0].to_string(),
        r#"records with the base name and time of record 2: field "voltage" (/voltage): not present"#
    );
    // A missing regression target is predicted, not dropped.
    let regression = senml_decoder(
        KeySource::BaseName,
        &[("current", "/current"), ("voltage", "/voltage")],
        Some(ModelConfig::Regression(RegressionConfig {
            target: "voltage".into(),
            features: vec!["current".into()],
            ..RegressionConfig::default()
        })),
    );
    let found = readings(&regression, RFC_5_1_2_TIMED);
    assert_eq!(found.len(), 6);
    assert_eq!(found[0].values, [1.7, 120.1]);
    assert_eq!(found[1].time_ms, Some(bt - 5000));
    assert!(found[1].values[1].is_nan());
}

/// The 13 readings of RFC 8428 §5.1.3 (and §5.1.4), one per record.
fn rfc_5_1_3_readings() -> Vec<ReadingBuf> {
    let bt = 1_320_067_464_000;
    [
        (0, 20.0),
        (0, 24.30621),
        (0, 60.07965),
        (60, 20.3),
        (60, 24.30622),
        (60, 60.07965),
        (120, 20.7),
        (120, 24.30623),
        (120, 60.07966),
        (150, 98.0),
        (180, 21.2),
        (180, 24.30628),
        (180, 60.07967),
    ]
    .iter()
    .map(|&(t, v)| reading("urn:dev:ow:10e2073a01080063", Some(bt + t * 1000), &[v]))
    .collect()
}

#[test]
fn rfc_8428_multiple_measurements_are_one_reading_per_record() {
    assert_eq!(readings(&by_name("v"), RFC_5_1_3), rfc_5_1_3_readings());
}

#[test]
fn rfc_8428_resolved_data_gives_the_same_readings_as_its_source() {
    assert_eq!(readings(&by_name("v"), RFC_5_1_4), rfc_5_1_3_readings());
}

#[test]
fn rfc_8428_multiple_data_types() {
    let base = "urn:dev:ow:10e2073a01080063:";
    // Reading `v`: only the temperature has one; the others are counted, not read.
    let (found, errors) = all(&by_name("v"), RFC_5_1_5);
    assert_eq!(found, [reading(&format!("{base}temp"), Some(NOW), &[23.1])]);
    assert_eq!(
        messages(&errors),
        [
            r#"record 2: field "value" (v): the record has no "v" (it has "vs")"#,
            r#"record 3: field "value" (v): the record has no "v" (it has "vb")"#,
            r#"record 4: field "value" (v): the record has no "v" (it has "vd")"#,
        ]
    );
    assert_eq!(reasons(&errors), [DropReason::MissingField; 3]);
    // Reading `vb`: the door.
    let (found, errors) = all(&by_name("vb"), RFC_5_1_5);
    assert_eq!(found, [reading(&format!("{base}open"), Some(NOW), &[0.0])]);
    assert_eq!(errors.len(), 3);

    // Grouped: one reading with a number, a boolean label and a string label.
    let classify = |target: &str, positive: &str| {
        senml_decoder(
            KeySource::BaseName,
            &[("temp", "/temp"), (target, &format!("/{target}"))],
            Some(ModelConfig::Classification(ClassificationConfig {
                target: target.into(),
                features: vec!["temp".into()],
                positive: vec![positive.into()],
                ..ClassificationConfig::default()
            })),
        )
    };
    assert_eq!(
        readings(&classify("open", "yes"), RFC_5_1_5),
        [reading(base, Some(NOW), &[23.1, 0.0])]
    );
    assert_eq!(
        readings(&classify("label", "machine room"), RFC_5_1_5),
        [reading(base, Some(NOW), &[23.1, 1.0])]
    );
    let (_, errors) = all(&classify("label", "office"), RFC_5_1_5);
    assert_eq!(reasons(&errors), [DropReason::BadLabel]);
    assert!(
        errors[0]
            .to_string()
            .contains(r#"field "label" (/label): the string "Machine Room" is not a label"#),
        "{}",
        errors[0]
    );
    // A string or data value is not a number.
    let numbers = senml_decoder(
        KeySource::BaseName,
        &[("label", "/label"), ("reader", "/nfc-reader")],
        None,
    );
    let (_, errors) = all(&numbers, RFC_5_1_5);
    assert_eq!(
        messages(&errors),
        [
            r#"records with the base name and time of record 2: field "label" (/label): expected a number, found a "vs" value"#
        ]
    );
}

#[test]
fn rfc_8428_collection_of_resources() {
    let time = Some(1_320_078_429_000);
    assert_eq!(
        readings(&by_name("v"), RFC_5_1_6),
        [
            reading("2001:db8::2/temperature", time, &[25.2]),
            reading("2001:db8::2/humidity", time, &[30.0]),
            reading("2001:db8::1/temperature", time, &[12.3]),
            reading("2001:db8::1/humidity", time, &[67.0]),
        ]
    );
    let grouped = senml_decoder(
        KeySource::BaseName,
        &[("temperature", "/temperature"), ("humidity", "/humidity")],
        None,
    );
    assert_eq!(
        readings(&grouped, RFC_5_1_6),
        [
            reading("2001:db8::2/", time, &[25.2, 30.0]),
            reading("2001:db8::1/", time, &[12.3, 67.0]),
        ]
    );
    // With a topic key, the groups are the same, keyed by the topic.
    let topic = senml_decoder(
        KeySource::TopicLevel(1),
        &[("temperature", "/temperature"), ("humidity", "/humidity")],
        None,
    );
    let keys: Vec<String> = readings(&topic, RFC_5_1_6)
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["s1", "s1"]);
}

#[test]
fn senml_base_values_sums_and_relative_times() {
    let pack = r#"[{"bn":"m:","bv":100,"bs":5,"bt":-10,"n":"a","v":1,"s":2,"t":-2},
                   {"n":"b","v":-1},{"n":"c","bt":0,"t":3.0004,"vb":true},
                   {"n":"d","bt":1e9,"bv":0.5,"unknown":{"x":[1]},"ut":60}]"#;
    let (found, errors) = all(&by_name("v"), pack);
    assert_eq!(
        messages(&errors),
        [r#"record 3: field "value" (v): the record has no "v" (it has "vb")"#]
    );
    let values: Vec<(String, Option<i64>, f64)> = found
        .into_iter()
        .map(|r| (r.key, r.time_ms, r.values[0]))
        .collect();
    assert_eq!(
        values,
        [
            ("m:a".into(), Some(NOW - 12_000), 101.0),
            ("m:b".into(), Some(NOW - 10_000), 99.0),
            // No `v` of its own: the base value (RFC 8428 §4.6).
            ("m:d".into(), Some(1_000_000_000_000), 0.5),
        ]
    );
    let (found, _) = all(&by_name("s"), pack);
    let sums: Vec<f64> = found.iter().map(|r| r.values[0]).collect();
    assert_eq!(sums, [7.0, 5.0, 5.0, 5.0], "a missing sum counts as 0 + bs");
    let (found, _) = all(&by_name("vb"), pack);
    assert_eq!(found, [reading("m:c", Some(NOW + 3000), &[1.0])]);
}

#[test]
fn records_with_only_base_fields_are_not_readings() {
    // As RFC 8428's actuator example (§5.1.7) starts.
    let pack = r#"[{"bn":"urn:dev:ow:10e2073a01080063:"},{"n":"temp","u":"Cel","v":23.1}]"#;
    assert_eq!(
        readings(&by_name("v"), pack),
        [reading(
            "urn:dev:ow:10e2073a01080063:temp",
            Some(NOW),
            &[23.1]
        )]
    );
}

#[test]
fn a_pack_that_breaks_rfc_8428_is_dropped_whole() {
    let decoder = by_name("v");
    for (pack, message) in [
        (
            r#"{"n":"a","v":1}"#,
            "payload: a SenML pack is a JSON array of records, found an object",
        ),
        ("7", "payload: a SenML pack is a JSON array of records, found a number"),
        (
            r#"[{"n":"a","v":1},2]"#,
            "record 2: a SenML record is a JSON object, found a number",
        ),
        (
            r#"[{"n":"a","v":1},{"n":"b","v":"1"}]"#,
            r#"record 2: "v" must be a number, found a string"#,
        ),
        (
            r#"[{"n":"a","v":1},{"bn":7,"v":1}]"#,
            r#"record 2: "bn" must be a string, found a number"#,
        ),
        (
            r#"[{"n":"a","v":1,"vb":true}]"#,
            r#"record 1: a record has more than one of "v", "vs", "vb" and "vd" (RFC 8428 allows exactly one value)"#,
        ),
        (
            r#"[{"n":"a","v":1},{"bver":11,"n":"b","v":1}]"#,
            "record 2: bver 11 is newer than SenML version 10, the version understood (RFC 8428: such a pack must not be used)",
        ),
        (
            r#"[{"bver":0,"n":"a","v":1}]"#,
            r#"record 1: "bver" must be a positive integer"#,
        ),
        (
            r#"[{"n":"a","v":1,"xyz_":true}]"#,
            r#"record 1: the label "xyz_" ends in '_', so it must be understood (RFC 8428), and it is not supported"#,
        ),
    ] {
        let (found, errors) = all(&decoder, pack);
        assert!(found.is_empty(), "{pack}");
        assert_eq!(messages(&errors), [message], "{pack}");
        assert_eq!(reasons(&errors), [DropReason::BadSenml], "{pack}");
    }
    for pack in [r#"[{"n":"a","v":1}"#, r#"[{"n":"a","v":NaN}]"#, ""] {
        let (found, errors) = all(&decoder, pack);
        assert!(found.is_empty(), "{pack}");
        assert_eq!(reasons(&errors), [DropReason::MalformedJson], "{pack}");
    }
    let (found, errors) = all(&decoder, r#"[{"n":"a","v":1},{"n":"b","v":1e400}]"#);
    assert!(found.is_empty());
    assert_eq!(reasons(&errors), [DropReason::NonFinite]);
    // An empty pack has no reading and no error.
    let (found, errors) = all(&decoder, "[]");
    assert!(found.is_empty() && errors.is_empty());
}

#[test]
fn senml_names_and_times_are_checked_per_record() {
    let decoder = by_name("v");
    let (found, errors) = all(
        &decoder,
        r#"[{"n":"bad name","v":1},{"n":"","v":2},{"n":"-x","v":3},{"n":"ok","v":4},
            {"n":"sum","s":1},{"n":"late","bt":1e300,"v":5}]"#,
    );
    assert_eq!(found, [reading("ok", Some(NOW), &[4.0])]);
    assert_eq!(
        messages(&errors),
        [
            r#"record 1: key (the record name): "bad name" is not a valid SenML name (RFC 8428: letters, digits, '-', ':', '.', '/' and '_', starting with a letter or a digit)"#,
            r#"record 2: key (the record name): "" is not a valid SenML name (RFC 8428: letters, digits, '-', ':', '.', '/' and '_', starting with a letter or a digit)"#,
            r#"record 3: key (the record name): "-x" is not a valid SenML name (RFC 8428: letters, digits, '-', ':', '.', '/' and '_', starting with a letter or a digit)"#,
            r#"record 5: field "value" (v): the record has no "v""#,
            "record 6: time (bt + t): the resolved time is out of range",
        ]
    );
    assert_eq!(
        reasons(&errors),
        [
            DropReason::MissingKey,
            DropReason::MissingKey,
            DropReason::MissingKey,
            DropReason::MissingField,
            DropReason::BadTime
        ]
    );
    // Grouped by base name: the base name is the key, so it must be a valid name too.
    let grouped = senml_decoder(KeySource::BaseName, &[("v", "/v")], None);
    let (found, errors) = all(
        &grouped,
        r#"[{"n":"v","v":1},{"bn":"a:","n":"v","v":2},{"bn":"a:","n":"v","t":1e300,"v":3},{"n":"w","v":4}]"#,
    );
    assert_eq!(found, [reading("a:", Some(NOW), &[2.0])]);
    assert_eq!(
        messages(&errors),
        [
            "record 3: time (bt + t): the resolved time is out of range",
            r#"records with the base name and time of record 1: key (the base name): "" is not a valid SenML name (RFC 8428: letters, digits, '-', ':', '.', '/' and '_', starting with a letter or a digit)"#,
        ]
    );
}

#[test]
fn senml_groups_keep_pack_order_and_the_last_duplicate() {
    let grouped = senml_decoder(KeySource::BaseName, &[("a", "/a"), ("b", "/b")], None);
    let found = readings(
        &grouped,
        r#"[{"bn":"y:","n":"a","v":1,"t":-1},{"bn":"x:","n":"a","v":2},{"bn":"y:","n":"b","v":3,"t":-1},
            {"bn":"x:","n":"b","v":4},{"bn":"x:","n":"a","v":5},{"n":"b","s":6,"bs":1}]"#,
    );
    assert_eq!(
        found,
        [
            reading("y:", Some(NOW - 1000), &[1.0, 3.0]),
            // The later `a` counts; a record with only a sum gives its sum.
            reading("x:", Some(NOW), &[5.0, 7.0]),
        ]
    );
}

// ---- allocation -----------------------------------------------------------------------------

#[test]
fn warm_batch_and_csv_decode_does_not_allocate() {
    let batch = batch_decoder();
    let batch_payload: &[u8] =
        br#"[{"id":"sensor-1","ts":1,"value":1.5,"meta":{"x":1,"y":"z"},"tags":[1,2]},{"id":42,"ts":2,"value":2},
            {"id":"sensor-3","ts":3,"value":"bad"},{"id":"sensor-4","ts":4}]"#;
    let csv = csv_decoder(b',', true);
    let csv_payload: &[u8] = b"ts,sensor,temp,hum\n1700000000,s1,21.5,40\r\n\n1700000001,\"s,\"\"2\"\"\",22,41\n1700000002,s3,x,41\n1,s4,1\n1,\"s5,1,2\n";
    let mut readings = 0;
    let mut errors = 0;
    let mut out = ReadingBuf::default();
    let mut run = |out: &mut ReadingBuf| {
        batch.decode_each(
            TOPIC,
            batch_payload,
            NOW,
            out,
            |_| readings += 1,
            |_| errors += 1,
        );
        csv.decode_each(
            TOPIC,
            csv_payload,
            NOW,
            out,
            |_| readings += 1,
            |_| errors += 1,
        );
    };
    out.key.reserve(64);
    run(&mut out);
    assert_eq!(allocations::during(|| run(&mut out)), 0);
    // As for a single document, a container nested two deep in a skipped member makes
    // serde_json allocate its scratch buffer, once per pass.
    let nested = allocations::during(|| {
        batch.decode_each(
            TOPIC,
            br#"[{"id":"a","ts":1,"value":1,"meta":{"x":[1]}}]"#,
            NOW,
            &mut out,
            |_| {},
            |_| {},
        );
    });
    assert_eq!(nested, 2);
    // Per run: 2 batch readings and 2 errors; 2 CSV readings and 3 errors.
    assert_eq!((readings, errors), (8, 10));
}

#[test]
fn senml_allocations_are_bounded() {
    let name = by_name("v");
    let grouped = senml_decoder(
        KeySource::BaseName,
        &[("voltage", "/voltage"), ("current", "/current")],
        None,
    );
    let collection = senml_decoder(
        KeySource::BaseName,
        &[("temperature", "/temperature"), ("humidity", "/humidity")],
        None,
    );
    let mut out = ReadingBuf::default();
    out.key.reserve(64);
    let decode = |decoder: &Decoder, pack: &str, out: &mut ReadingBuf| {
        decoder.decode_each(TOPIC, pack.as_bytes(), NOW, out, |_| {}, |_| {});
    };
    // Warm up the reading buffer.
    for pack in [RFC_5_1_2_TIMED, RFC_5_1_3, RFC_5_1_6] {
        decode(&name, pack, &mut out);
        decode(&grouped, pack, &mut out);
    }
    // Packs of at most 16 records live on the stack.
    for pack in [
        RFC_5_1_1,
        RFC_5_1_2_TIMED,
        RFC_5_1_3,
        RFC_5_1_4,
        RFC_5_1_5,
        RFC_5_1_6,
    ] {
        assert_eq!(
            allocations::during(|| decode(&name, pack, &mut out)),
            0,
            "{pack}"
        );
        assert_eq!(
            allocations::during(|| decode(&grouped, pack, &mut out)),
            0,
            "{pack}"
        );
        assert_eq!(
            allocations::during(|| decode(&collection, pack, &mut out)),
            0,
            "{pack}"
        );
    }
    // A larger pack (401 records) spills its record list to the heap as it grows (doubling
    // from 16: 5 allocations), and a grouped one its index lists (once each): a handful per
    // pack, not one per record.
    let mut big = String::from(r#"[{"bn":"dev:","bt":1.7e9,"n":"voltage","v":230}"#);
    for i in 0..200 {
        big.push_str(&format!(
            r#",{{"n":"voltage","t":{i},"v":230}},{{"n":"current","t":{i},"v":{i}}}"#
        ));
    }
    big.push(']');
    decode(&grouped, &big, &mut out);
    let by_name_count = allocations::during(|| decode(&name, &big, &mut out));
    let grouped_count = allocations::during(|| decode(&grouped, &big, &mut out));
    assert!(
        by_name_count <= 6 && grouped_count <= 8,
        "{by_name_count} {grouped_count}"
    );
    // An escaped name is unescaped in serde_json's scratch buffer, then copied.
    let escaped = allocations::during(|| {
        decode(&name, r#"[{"n":"a\u0062","v":1}]"#, &mut out);
    });
    assert_eq!(escaped, 2);
}

#[test]
fn mutated_payloads_never_panic_and_yield_well_formed_readings() {
    let cases: Vec<(Decoder, usize, &str)> = vec![
        (
            batch_decoder(),
            1,
            r#"[{"id":"a","ts":1,"value":1.5},{"id":7,"ts":2,"value":-2}]"#,
        ),
        (
            csv_decoder(b',', true),
            2,
            "ts,sensor,temp,hum\n1,\"s,\"\"1\",2,3\r\n\n2,b,4,5\n",
        ),
        (by_name("v"), 1, RFC_5_1_2_TIMED),
        (
            senml_decoder(
                KeySource::BaseName,
                &[("temperature", "/temperature"), ("humidity", "/humidity")],
                None,
            ),
            2,
            RFC_5_1_6,
        ),
    ];
    let mut out = ReadingBuf::default();
    for (decoder, fields, payload) in &cases {
        let bytes = payload.as_bytes();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for i in 0..bytes.len() {
            let mut deleted = bytes.to_vec();
            deleted.remove(i);
            variants.push(deleted);
            for replacement in [b'"', b',', b'\n', b'[', b'}', b'x', b'-', 0xff] {
                let mut replaced = bytes.to_vec();
                replaced[i] = replacement;
                variants.push(replaced);
            }
        }
        for variant in &variants {
            let mut readings = 0;
            decoder.decode_each(
                TOPIC,
                variant,
                NOW,
                &mut out,
                |r| {
                    readings += 1;
                    assert_eq!(r.values.len(), *fields);
                    assert!(r.values.iter().all(|v| v.is_finite()), "{r:?}");
                    assert!(!r.key.is_empty());
                },
                |e| assert!(!e.to_string().is_empty()),
            );
            assert!(readings <= 13, "{}", String::from_utf8_lossy(variant));
        }
    }
}
