//! Tests of the replay driver.

use super::*;

#[test]
fn plain_line_split_agrees_with_serde_json() {
    let lines: &[&[u8]] = &[
        br#"{"topic":"sensors/s1/temperature","payload":{"ts":1,"value":2.5}}"#,
        br#"{"topic":"raw/r1","payload":"21.5"}"#,
        br#"{"topic":"raw/r1","payload":42}"#,
        br#"{"topic":"","payload":[1,{"a":[2]}]}"#,
        r#"{"topic":"ü/é","payload":null}"#.as_bytes(),
        // Every line below must take the serde_json path.
        br#"{"topic":"a\"b","payload":1}"#,
        br#"{"topic":"a\u0062","payload":1}"#,
        b"{\"topic\":\"a\x01\",\"payload\":1}",
        b"{\"topic\":\"\xff\",\"payload\":1}",
        b"{\"topic\":\"a\",\"payload\":\"\xff\"}",
        br#"{"topic":"a","payload": 1}"#,
        br#"{"topic":"a","payload":1 }"#,
        br#"{"topic":"a","payload":1,"qos":1}"#,
        br#"{"topic":"a","payload":1,"topic":"b"}"#,
        br#"{"topic":"a","payload":1}}"#,
        br#"{"topic":"a","payload":}"#,
        br#"{"topic":"a","payload":[1}"#,
        br#"{"topic":"a","payload":1} x"#,
        br#"{"topic": "a", "payload": 1}"#,
    ];
    for (i, line) in lines.iter().enumerate() {
        let split = split_plain_line(line);
        assert_eq!(split.is_some(), i < 5, "{}", String::from_utf8_lossy(line));
        if let Some((topic, payload)) = split {
            let parsed: Line<'_> = match serde_json::from_slice(line) {
                Ok(l) => l,
                Err(e) => panic!("{}: {e}", String::from_utf8_lossy(line)),
            };
            assert_eq!(topic, &*parsed.topic);
            assert_eq!(payload, parsed.payload.get());
        }
    }
}

fn replay(input: &[u8], capacity: usize) -> (Vec<u8>, ReplaySummary) {
    let config = match crate::config::parse_str(
        std::path::Path::new("test.toml"),
        r#"
[[pipelines]]
name = "num"
topics = ["raw/+"]
format = "number"
key = "topic"
fields = { v = "" }

[pipelines.model]
kind = "forecast"
target = "v"
lags = 1
"#,
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut replayer = match Replayer::new(&config) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let mut out = Vec::new();
    let reader = io::BufReader::with_capacity(capacity, input);
    if let Err(e) = replayer.run(reader, &mut out) {
        panic!("{e}");
    }
    (out, replayer.summary())
}

#[test]
fn lines_across_buffer_ends_give_the_same_output() {
    let mut input = Vec::new();
    for i in 0..50 {
        let pad = " ".repeat(i * 7 % 40);
        input.extend_from_slice(
            format!("{{\"topic\":\"raw/r{}\",\"payload\":\"{pad}{i}\"}}", i % 3).as_bytes(),
        );
        input.extend_from_slice(match i % 4 {
            0 => b"\n".as_slice(),
            1 => b"\r\n",
            2 => b"\n\n",
            _ => b"\r\r\n",
        });
    }
    input.extend_from_slice(br#"{"topic":"raw/r1","payload":7}"#);
    let (expected, summary) = replay(&input, 1 << 16);
    assert_eq!(summary.outputs, 51);
    // 50 lines, 12 empty ones (after `\n\n`), and the last line without a newline.
    assert_eq!(summary.lines, 50 + 12 + 1);
    assert_eq!(summary.bad_lines, 0);
    for capacity in [1, 2, 7, 64] {
        let (out, small) = replay(&input, capacity);
        assert_eq!(out, expected, "buffer of {capacity} bytes");
        assert_eq!(small, summary);
    }
}
