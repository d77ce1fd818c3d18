//! Class labels: a classification target's JSON value → 1.0 (positive) or 0.0 (negative).
//!
//! JSON `true`/`false` are the labels themselves. A string or a number is matched by its text
//! against the configured `positive` and `negative` lists, ignoring ASCII case: `"Yes"`
//! matches `yes`, the number `1` (or `1.0`, `1e0`) matches `"1"`. A number's text is its
//! shortest form (Rust's `Display` for f64, which never uses an exponent; `-0` is `0`), written
//! into a stack buffer, so matching allocates nothing unless the text is longer than
//! [`NUMBER_TEXT_CAPACITY`] bytes (numbers beyond 1e40 or with 40 digits after the point).

use std::fmt::{self, Write as _};

/// Bytes of a number's text formatted on the stack.
pub(crate) const NUMBER_TEXT_CAPACITY: usize = 40;

/// The `positive` and `negative` label texts of a classification pipeline, lowercased
/// (ASCII) once when the decoder is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelSet {
    positive: Box<[Box<str>]>,
    negative: Box<[Box<str>]>,
}

impl LabelSet {
    pub(crate) fn new(positive: &[String], negative: &[String]) -> Self {
        let lower = |labels: &[String]| {
            labels
                .iter()
                .map(|label| label.to_ascii_lowercase().into_boxed_str())
                .collect()
        };
        Self {
            positive: lower(positive),
            negative: lower(negative),
        }
    }

    /// `Some(true)` for a positive label text, `Some(false)` for a negative one, `None` for
    /// neither. Positive wins if a text is in both (config validation forbids that).
    pub(crate) fn classify(&self, text: &str) -> Option<bool> {
        let listed = |labels: &[Box<str>]| labels.iter().any(|l| l.eq_ignore_ascii_case(text));
        if listed(&self.positive) {
            Some(true)
        } else if listed(&self.negative) {
            Some(false)
        } else {
            None
        }
    }

    /// The label of a number, matched by its text; `Err` holds the text for the message.
    pub(crate) fn classify_number(&self, number: LabelNumber) -> Result<bool, NumberText> {
        let text = NumberText::new(number);
        match text.as_str() {
            Some(short) => self.classify(short).ok_or(text),
            // Longer than the stack buffer: rare enough to allocate.
            None => self.classify(&number.to_string()).ok_or(text),
        }
    }
}

impl fmt::Display for LabelSet {
    /// `positive: true, "yes"; negative: false, "no"` (lowercased as matched).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("positive: true")?;
        for label in &self.positive {
            write!(f, ", {label:?}")?;
        }
        f.write_str("; negative: false")?;
        for label in &self.negative {
            write!(f, ", {label:?}")?;
        }
        Ok(())
    }
}

/// A JSON number given as a label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LabelNumber {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl fmt::Display for LabelNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LabelNumber::Unsigned(v) => write!(f, "{v}"),
            LabelNumber::Signed(v) => write!(f, "{v}"),
            // `-0` is written `0`: it is the same label (the pattern matches both zeros).
            LabelNumber::Float(0.0) => f.write_str("0"),
            LabelNumber::Float(v) => write!(f, "{v}"),
        }
    }
}

/// A number's text in a stack buffer (truncated past [`NUMBER_TEXT_CAPACITY`] bytes).
#[derive(Clone, Copy)]
pub(crate) struct NumberText {
    bytes: [u8; NUMBER_TEXT_CAPACITY],
    len: usize,
    overflow: bool,
}

impl NumberText {
    fn new(number: LabelNumber) -> Self {
        let mut text = Self {
            bytes: [0; NUMBER_TEXT_CAPACITY],
            len: 0,
            overflow: false,
        };
        // Our `write_str` never fails; an overflow is recorded instead.
        let _ = write!(text, "{number}");
        text
    }

    /// The whole text, or `None` when it did not fit.
    pub(crate) fn as_str(&self) -> Option<&str> {
        if self.overflow {
            None
        } else {
            Some(self.prefix())
        }
    }

    /// The text, truncated when it did not fit (for messages).
    pub(crate) fn prefix(&self) -> &str {
        // A number's text is ASCII, so any prefix is valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for NumberText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(NUMBER_TEXT_CAPACITY - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        self.overflow |= take < s.len();
        Ok(())
    }
}

impl fmt::Debug for NumberText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NumberText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())?;
        if self.overflow {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(positive: &[&str], negative: &[&str]) -> LabelSet {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        LabelSet::new(&owned(positive), &owned(negative))
    }

    #[test]
    fn strings_match_ignoring_ascii_case() {
        let set = labels(&["Yes", "ON"], &["no", "off"]);
        assert_eq!(set.classify("yes"), Some(true));
        assert_eq!(set.classify("YES"), Some(true));
        assert_eq!(set.classify("on"), Some(true));
        assert_eq!(set.classify("No"), Some(false));
        assert_eq!(set.classify("maybe"), None);
        assert_eq!(set.classify(""), None);
        // Only ASCII letters fold: the lists are not Unicode-case-insensitive.
        let accented = labels(&["ja"], &["né"]);
        assert_eq!(accented.classify("NÉ"), None);
        assert_eq!(accented.classify("nÉ"), None);
        assert_eq!(accented.classify("Né"), Some(false));
    }

    #[test]
    fn numbers_match_by_their_shortest_text() {
        let set = labels(&["1", "1.5", "-2"], &["0", "100000000000000000000"]);
        for (number, label) in [
            (LabelNumber::Unsigned(1), Some(true)),
            (LabelNumber::Float(1.0), Some(true)),
            (LabelNumber::Float(1.5), Some(true)),
            (LabelNumber::Signed(-2), Some(true)),
            (LabelNumber::Float(-2.0), Some(true)),
            (LabelNumber::Unsigned(0), Some(false)),
            (LabelNumber::Float(0.0), Some(false)),
            (LabelNumber::Float(-0.0), Some(false)),
            (LabelNumber::Float(1e20), Some(false)),
            (LabelNumber::Unsigned(2), None),
            (LabelNumber::Float(1.25), None),
        ] {
            assert_eq!(set.classify_number(number).ok(), label, "{number}");
        }
        let text = set.classify_number(LabelNumber::Float(2.5)).unwrap_err();
        assert_eq!(text.to_string(), "2.5");
    }

    #[test]
    fn long_number_texts_fall_back_to_an_exact_match() {
        // 1e45 is 46 characters, past the stack buffer.
        let long = format!("1{}", "0".repeat(45));
        let set = labels(&[&long], &["0"]);
        assert_eq!(
            set.classify_number(LabelNumber::Float(1e45)).ok(),
            Some(true)
        );
        let text = set.classify_number(LabelNumber::Float(2e45)).unwrap_err();
        assert_eq!(text.prefix().len(), NUMBER_TEXT_CAPACITY);
        assert!(text.to_string().ends_with('…'));
    }

    #[test]
    fn display_lists_both_sides_with_the_json_booleans() {
        let set = labels(&["Yes"], &["no", "0"]);
        assert_eq!(
            set.to_string(),
            r#"positive: true, "yes"; negative: false, "no", "0""#
        );
    }
}
