//! Output messages, rendered by hand into a reused buffer.
//!
//! The renderer writes byte for byte what `serde_json::to_writer` writes for the same fields
//! (the tests check it), about twice as fast: names are static and need no escaping, the
//! pipeline's own name is escaped once, and numbers go straight to serde_json's formatter
//! (`CompactFormatter`, the same shortest round-trip float printing serde_json uses). NaN and
//! infinities, which JSON cannot carry, are written as `null`, as serde_json does.

use serde_json::ser::{CompactFormatter, Formatter as _};

/// Writes `s` as a JSON string, exactly as serde_json does.
///
/// Keys and topics almost never need escaping, so they are checked for the bytes serde_json
/// escapes (control characters, `"` and `\`; everything else, including non-ASCII, is written
/// as is) and copied in one piece; the rare string that has one goes through serde_json.
///
/// # Errors
/// Those of `out`.
pub(crate) fn write_json_str(out: &mut impl std::io::Write, s: &str) -> std::io::Result<()> {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return serde_json::to_writer(out, s).map_err(std::io::Error::from);
    }
    out.write_all(b"\"")?;
    out.write_all(s.as_bytes())?;
    out.write_all(b"\"")
}

/// Appends `s` as a JSON string.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec<u8> cannot fail.
    let _ = write_json_str(out, s);
}

/// A JSON object being appended to a buffer. Field names are `&'static str` chosen by this
/// crate, so they are written without escaping.
pub(crate) struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    /// Start an object (`{`).
    pub(crate) fn start(out: &'a mut Vec<u8>) -> JsonObject<'a> {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    /// Continue an object whose first fields were written already (a prepared prefix).
    pub(crate) fn resume(out: &'a mut Vec<u8>, prefix: &[u8]) -> JsonObject<'a> {
        out.extend_from_slice(prefix);
        JsonObject { out, empty: false }
    }

    fn name(&mut self, name: &'static str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// `"name":"value"`
    pub(crate) fn str(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.name(name);
        push_json_str(self.out, value);
        self
    }

    /// `"name":"value"` or `"name":null` for `None`.
    pub(crate) fn opt_str(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(name, value),
            None => {
                self.name(name);
                self.out.extend_from_slice(b"null");
                self
            }
        }
    }

    /// `"name":number` or `null` for `None`, NaN and infinities.
    pub(crate) fn f64(&mut self, name: &'static str, value: Option<f64>) -> &mut Self {
        self.name(name);
        push_f64(self.out, value);
        self
    }

    /// `"name":integer`
    pub(crate) fn u64(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.name(name);
        // Writing into a Vec<u8> cannot fail.
        let _ = CompactFormatter.write_u64(self.out, value);
        self
    }

    /// `"name":integer` or `null` for `None`.
    pub(crate) fn opt_u64(&mut self, name: &'static str, value: Option<u64>) -> &mut Self {
        match value {
            Some(value) => self.u64(name, value),
            None => {
                self.name(name);
                self.out.extend_from_slice(b"null");
                self
            }
        }
    }

    /// `"name":integer`
    pub(crate) fn i64(&mut self, name: &'static str, value: i64) -> &mut Self {
        self.name(name);
        let _ = CompactFormatter.write_i64(self.out, value);
        self
    }

    /// `"name":true|false|null`
    pub(crate) fn bool(&mut self, name: &'static str, value: Option<bool>) -> &mut Self {
        self.name(name);
        self.out.extend_from_slice(match value {
            Some(true) => b"true",
            Some(false) => b"false",
            None => b"null",
        });
        self
    }

    /// `"name":[obj,obj,…]`, each element written by `each(i, object)`.
    pub(crate) fn array_of_objects(
        &mut self,
        name: &'static str,
        len: usize,
        mut each: impl FnMut(usize, &mut JsonObject<'_>),
    ) -> &mut Self {
        self.name(name);
        self.out.push(b'[');
        for i in 0..len {
            if i > 0 {
                self.out.push(b',');
            }
            let mut element = JsonObject::start(self.out);
            each(i, &mut element);
            element.end();
        }
        self.out.push(b']');
        self
    }

    /// Close the object (`}`).
    pub(crate) fn end(&mut self) {
        self.out.push(b'}');
    }
}

/// Appends `value` as serde_json renders an `Option<f64>`.
pub(crate) fn push_f64(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        // Writing into a Vec<u8> cannot fail.
        Some(v) if v.is_finite() => {
            let _ = CompactFormatter.write_f64(out, v);
        }
        _ => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_exactly_as_serde_json_does() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(
            [
                "",
                "s0001",
                "a\"b",
                "back\\slash",
                "uni\u{fc}",
                "\u{2028}",
                "😀",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut ours = Vec::new();
            push_json_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[derive(serde::Serialize)]
    struct Reference<'a> {
        name: &'a str,
        n: u64,
        t: i64,
        a: Option<f64>,
        b: Option<f64>,
        c: Option<f64>,
        flag: Option<bool>,
        none: Option<bool>,
        id: Option<u64>,
        no_id: Option<u64>,
        items: Vec<Item>,
    }

    #[derive(serde::Serialize)]
    struct Item {
        v: f64,
    }

    #[test]
    fn object_writer_matches_serde_json() {
        for (a, t) in [
            (1.0, -5),
            (0.1 + 0.2, 0),
            (-1e-300, i64::MIN),
            (1e300, i64::MAX),
            (f64::NAN, 7),
        ] {
            let reference = Reference {
                name: "x\"y",
                n: u64::MAX,
                t,
                a: Some(a),
                b: None,
                c: Some(f64::INFINITY),
                flag: Some(true),
                none: None,
                id: Some(3),
                no_id: None,
                items: vec![Item { v: a }, Item { v: 2.5 }],
            };
            let mut ours = Vec::new();
            let mut o = JsonObject::start(&mut ours);
            o.str("name", "x\"y")
                .u64("n", u64::MAX)
                .i64("t", t)
                .f64("a", Some(a))
                .f64("b", None)
                .f64("c", Some(f64::INFINITY))
                .bool("flag", Some(true))
                .bool("none", None)
                .opt_u64("id", Some(3))
                .opt_u64("no_id", None)
                .array_of_objects("items", 2, |i, e| {
                    e.f64("v", Some(if i == 0 { a } else { 2.5 }));
                });
            o.end();
            let expected = serde_json::to_vec(&reference).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
