//! MQTT topic filters (which pipeline a message belongs to) and output topic templates.

use std::fmt;

/// One level of a topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// A literal level: the byte range of the filter string it occupies.
    Exact(usize, usize),
    /// `+`: exactly one level, any content (also empty).
    One,
    /// `#`: zero or more trailing levels.
    Rest,
}

/// A parsed MQTT topic filter (`+` one level, `#` the rest).
///
/// Matching follows MQTT 3.1.1/5 §4.7: `#` also matches the parent level (`a/#` matches `a`),
/// `+` matches one level including an empty one, and topics starting with `$` (`$SYS/…`) are
/// not matched by a filter whose first level is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    filter: String,
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Parses a filter; `None` when it is not a valid MQTT topic filter: empty, containing NUL,
    /// `#` anywhere but alone in the last level, or `+` not alone in its level.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.contains('\0') {
            return None;
        }
        let mut levels = Vec::new();
        let mut start = 0;
        let count = s.split('/').count();
        for (i, level) in s.split('/').enumerate() {
            let end = start + level.len();
            let parsed = match level {
                "+" => Level::One,
                "#" if i + 1 == count => Level::Rest,
                _ if level.contains(['+', '#']) => return None,
                _ => Level::Exact(start, end),
            };
            levels.push(parsed);
            start = end + 1;
        }
        Some(Self {
            filter: s.to_owned(),
            levels,
        })
    }

    /// Whether the topic name `topic` matches this filter. Does not allocate.
    ///
    /// An empty topic (not a valid topic name) matches nothing.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.is_empty() {
            return false;
        }
        if topic.starts_with('$') && matches!(self.levels.first(), Some(Level::One | Level::Rest)) {
            return false;
        }
        // Walk the topic level by level on bytes: `/` is ASCII, so this splits exactly where
        // `str::split('/')` would, without its per-call searcher set-up (this runs for every
        // message and every pipeline).
        let topic = topic.as_bytes();
        let filter = self.filter.as_bytes();
        // Start of the current topic level; past the end once every level has been taken.
        let mut start = 0;
        for level in &self.levels {
            if start > topic.len() {
                // No topic level left: only `#` matches nothing (the parent level).
                return *level == Level::Rest;
            }
            let end = topic[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(topic.len(), |i| start + i);
            match *level {
                Level::Rest => return true,
                Level::One => {}
                Level::Exact(from, to) => {
                    if topic[start..end] != filter[from..to] {
                        return false;
                    }
                }
            }
            start = end + 1;
        }
        start > topic.len()
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.filter
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter)
    }
}

/// One piece of an output topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Pipeline,
    Key,
    Field,
}

/// A compiled output topic template with `{pipeline}`, `{key}`, `{field}`.
///
/// Substituted values are made safe for a topic *name*: `+` and `#` (wildcards, not allowed in
/// names) and NUL become `_`, and an empty value becomes `_` (so `{key}` alone never renders
/// an empty topic). `/` is kept, so a key taken from the whole topic (`sensors/s1/temp`) spans
/// several levels. Keys come from devices, so this is what keeps a device from publishing to a
/// wildcard-looking or empty topic through us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    template: String,
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parses a template.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong when the template is empty, has an unknown placeholder
    /// (only `{pipeline}`, `{key}` and `{field}` exist), an unclosed `{` or a stray `}`, or
    /// contains `+`, `#` or NUL (not allowed in a topic name).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("output topic template is empty".to_owned());
        }
        if let Some(c) = s.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return Err(format!(
                "output topic template {s:?} contains {c:?}, which is not allowed in a topic name"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let brace = rest.find(['{', '}']).unwrap_or(rest.len());
            if brace > 0 {
                parts.push(Part::Literal(rest[..brace].to_owned()));
            }
            rest = &rest[brace..];
            if rest.starts_with('}') {
                return Err(format!(
                    "output topic template {s:?} has a '}}' without a matching '{{'"
                ));
            }
            if rest.is_empty() {
                break;
            }
            let Some(close) = rest.find('}') else {
                return Err(format!("output topic template {s:?} has an unclosed '{{'"));
            };
            parts.push(match &rest[1..close] {
                "pipeline" => Part::Pipeline,
                "key" => Part::Key,
                "field" => Part::Field,
                other => {
                    return Err(format!(
                        "output topic template {s:?} has an unknown placeholder {{{other}}} \
                         (expected {{pipeline}}, {{key}} or {{field}})"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        Ok(Self {
            template: s.to_owned(),
            parts,
        })
    }

    /// Renders the topic for one output into `out` (cleared first). Does not allocate once
    /// `out` has the capacity.
    pub fn render(&self, pipeline: &str, key: &str, field: &str, out: &mut String) {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Pipeline => push_level_safe(out, pipeline),
                Part::Key => push_level_safe(out, key),
                Part::Field => push_level_safe(out, field),
            }
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.template
    }
}

/// Appends `value` with `+`, `#` and NUL replaced by `_`; an empty value becomes `_`.
fn push_level_safe(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    // Nearly every value is already safe: one byte scan, then one copy.
    if !value.bytes().any(|b| matches!(b, b'+' | b'#' | b'\0')) {
        out.push_str(value);
        return;
    }
    for piece in value.split_inclusive(['+', '#', '\0']) {
        match piece.strip_suffix(['+', '#', '\0']) {
            Some(head) => {
                out.push_str(head);
                out.push('_');
            }
            None => out.push_str(piece),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        match TopicFilter::parse(s) {
            Some(f) => f,
            None => panic!("{s:?} should parse"),
        }
    }

    #[test]
    fn exact_filter_matches_only_the_same_topic() {
        let f = filter("sensors/s1/temp");
        assert!(f.matches("sensors/s1/temp"));
        assert!(!f.matches("sensors/s1/temp2"));
        assert!(!f.matches("sensors/s1"));
        assert!(!f.matches("sensors/s1/temp/x"));
        assert!(!f.matches("Sensors/s1/temp"));
        assert_eq!(f.as_str(), "sensors/s1/temp");
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        let f = filter("sensors/+/temp");
        assert!(f.matches("sensors/s1/temp"));
        assert!(f.matches("sensors//temp"));
        assert!(!f.matches("sensors/temp"));
        assert!(!f.matches("sensors/a/b/temp"));
        let last = filter("sensors/+");
        assert!(last.matches("sensors/s1"));
        assert!(last.matches("sensors/"));
        assert!(!last.matches("sensors"));
        assert!(!last.matches("sensors/s1/temp"));
    }

    #[test]
    fn level_count_mismatch_does_not_match() {
        let f = filter("+/+");
        assert!(f.matches("a/b"));
        assert!(!f.matches("a"));
        assert!(!f.matches("a/b/c"));
    }

    #[test]
    fn hash_matches_the_rest_and_the_parent_level() {
        let f = filter("sensors/#");
        assert!(f.matches("sensors"));
        assert!(f.matches("sensors/"));
        assert!(f.matches("sensors/s1"));
        assert!(f.matches("sensors/s1/temp"));
        assert!(!f.matches("sensorsX"));
        assert!(!f.matches("other/s1"));
        let all = filter("#");
        assert!(all.matches("a"));
        assert!(all.matches("a/b/c"));
        assert!(all.matches("/"));
        assert!(!all.matches(""));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!filter("#").matches("$SYS/broker/uptime"));
        assert!(!filter("+/broker/uptime").matches("$SYS/broker/uptime"));
        assert!(filter("$SYS/#").matches("$SYS/broker/uptime"));
        assert!(filter("$SYS/+/uptime").matches("$SYS/broker/uptime"));
        // A '$' further in is an ordinary character.
        assert!(filter("a/+").matches("a/$x"));
    }

    #[test]
    fn invalid_filters_are_rejected() {
        for bad in ["", "a/#/b", "a#", "a/b#", "a+/b", "+a", "a\0b", "#/"] {
            assert_eq!(TopicFilter::parse(bad), None, "{bad:?}");
        }
        for good in ["+", "#", "/", "a//b", "+/+/#", "/+"] {
            assert!(TopicFilter::parse(good).is_some(), "{good:?}");
        }
    }

    /// The matching rules written directly on `str::split`, the way the byte walk in
    /// `matches` must behave.
    fn matches_by_split(filter: &str, topic: &str) -> bool {
        if topic.is_empty() || (topic.starts_with('$') && filter.starts_with(['+', '#'])) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in filter.split('/') {
            match level {
                "#" => return true,
                "+" if topic_levels.next().is_none() => return false,
                "+" => {}
                exact if topic_levels.next() != Some(exact) => return false,
                _ => {}
            }
        }
        topic_levels.next().is_none()
    }

    #[test]
    fn byte_walk_matches_like_level_split() {
        let filters = [
            "#",
            "+",
            "/",
            "a",
            "a/b",
            "a/+",
            "a/#",
            "+/b",
            "+/+",
            "/+",
            "a//b",
            "a/+/#",
            "sensors/+/temperature",
            "$SYS/#",
            "é/+",
        ];
        let topics = [
            "",
            "/",
            "//",
            "a",
            "a/",
            "/a",
            "a/b",
            "a/b/",
            "a//b",
            "a/b/c",
            "ab",
            "b",
            "a/bb",
            "sensors/s1/temperature",
            "sensors//temperature",
            "sensors/s1/temperature/x",
            "$SYS/x",
            "é/x",
            "é",
            "ü/x",
        ];
        for f in filters {
            for t in topics {
                assert_eq!(
                    filter(f).matches(t),
                    matches_by_split(f, t),
                    "{f:?} on {t:?}"
                );
            }
        }
    }

    #[test]
    fn leading_slash_is_an_empty_first_level() {
        let f = filter("/+");
        assert!(f.matches("/a"));
        assert!(!f.matches("a"));
    }

    fn template(s: &str) -> TopicTemplate {
        match TopicTemplate::parse(s) {
            Ok(t) => t,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn template_substitutes_all_placeholders() {
        let t = template("edgeflow/{pipeline}/{key}/{field}/forecast");
        let mut out = String::new();
        t.render("temperature", "s1", "value", &mut out);
        assert_eq!(out, "edgeflow/temperature/s1/value/forecast");
        t.render("p", "k", "f", &mut out);
        assert_eq!(out, "edgeflow/p/k/f/forecast", "render clears out first");
        let adjacent = template("{key}{field}-x");
        adjacent.render("p", "k", "f", &mut out);
        assert_eq!(out, "kf-x");
        assert_eq!(adjacent.as_str(), "{key}{field}-x");
    }

    #[test]
    fn template_escapes_wildcards_and_empty_keys() {
        let t = template("out/{key}/{field}");
        let mut out = String::new();
        t.render("p", "a+b#c", "v", &mut out);
        assert_eq!(out, "out/a_b_c/v");
        t.render("p", "++", "#", &mut out);
        assert_eq!(out, "out/__/_");
        t.render("p", "", "v", &mut out);
        assert_eq!(out, "out/_/v");
        t.render("p", "nul\0x", "v", &mut out);
        assert_eq!(out, "out/nul_x/v");
        // '/' is kept: a whole-topic key spans levels.
        t.render("p", "sensors/s1/temp", "v", &mut out);
        assert_eq!(out, "out/sensors/s1/temp/v");
        // The result is always a valid topic name: no wildcards.
        assert!(!out.contains(['+', '#']));
    }

    #[test]
    fn render_reuses_capacity() {
        let t = template("edgeflow/{pipeline}/{key}/{field}/forecast");
        let mut out = String::with_capacity(64);
        let before = out.as_ptr();
        t.render("temperature", "s1", "value", &mut out);
        t.render("temperature", "s2", "value", &mut out);
        assert_eq!(out.as_ptr(), before);
    }

    #[test]
    fn invalid_templates_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("a/{nope}", "unknown placeholder {nope}"),
            ("a/{key", "unclosed"),
            ("a/key}", "without a matching"),
            ("a/+/{key}", "not allowed in a topic name"),
            ("a/#", "not allowed in a topic name"),
        ];
        for (input, expected) in cases {
            match TopicTemplate::parse(input) {
                Ok(_) => panic!("{input:?} should be rejected"),
                Err(e) => assert!(e.contains(expected), "{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn literal_only_template_renders_itself() {
        let t = template("fixed/topic");
        let mut out = String::new();
        t.render("p", "k", "f", &mut out);
        assert_eq!(out, "fixed/topic");
    }
}
