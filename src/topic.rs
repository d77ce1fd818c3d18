//! The MQTT topic grammar, parsed once: subscription filters (with shared subscriptions,
//! `$share/{group}/{filter}`) and output topic templates. The config loader parses them (its
//! errors are these types' messages, placed at the setting's span) and the pipelines match and
//! render with the parsed values; nothing parses a filter or a template a second time.

use std::fmt;

/// Prefix of a shared subscription (`$share/{group}/{filter}`, MQTT 5 §4.8.2, also accepted by
/// Mosquitto and EMQX from 3.1.1 clients): the broker spreads the messages over the group's
/// members. See the README, "Several gateways".
const SHARE_PREFIX: &str = "$share/";

/// Longest topic or filter MQTT can carry: a UTF-8 string with a 16-bit length prefix.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Whether `c` may appear in a key (and so in a topic level the daemon publishes): not a control character (C0, DEL, C1: MQTT brokers refuse
/// them in topics), not a Unicode noncharacter (U+FDD0–U+FDEF, U+nFFFE/U+nFFFF: refused too),
/// not an MQTT wildcard. NUL is a control character.
pub fn key_character(c: char) -> bool {
    let code = u32::from(c);
    !(c.is_control()
        || c == '+'
        || c == '#'
        || (0xFDD0..=0xFDEF).contains(&code)
        || code & 0xFFFE == 0xFFFE)
}

/// The first character of `text` that no topic level may hold (see [`key_character`]), with
/// its byte offset. Hot path (every key, every output topic): plain ASCII takes one byte scan.
pub fn first_bad_character(text: &str) -> Option<(usize, char)> {
    let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'+' && *b != b'#';
    if text.as_bytes().iter().all(plain) {
        return None;
    }
    text.char_indices().find(|(_, c)| !key_character(*c))
}

/// One level of a topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A literal level: the byte range of the filter string it occupies.
    Exact(usize, usize),
    /// `+`: exactly one level, any content (also empty).
    One,
    /// `#`: zero or more trailing levels.
    Rest,
}

/// Why a string is not a topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterError {
    /// Longer than MQTT's 65,535 bytes.
    TooLong,
    /// Contains NUL.
    Nul,
    /// `$share/` without `{group}/{filter}`.
    ShareWithoutFilter,
    /// An empty share group, or one with a wildcard.
    BadShareGroup,
    /// Nothing to match (an empty string, or `$share/{group}/` alone).
    Empty,
    /// `#` sharing its level with other characters.
    HashNotALevel,
    /// `#` before the last level.
    HashNotLast,
    /// `+` sharing its level with other characters.
    PlusNotALevel,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterError::TooLong => "it is longer than 65535 bytes",
            FilterError::Nul => "it contains a NUL character",
            FilterError::ShareWithoutFilter => {
                "a shared subscription needs `$share/{group}/{filter}`"
            }
            FilterError::BadShareGroup => {
                "the share group name must be non-empty and without '+' or '#'"
            }
            FilterError::Empty => "it is empty",
            FilterError::HashNotALevel => "'#' must be a whole level (like `a/#`)",
            FilterError::HashNotLast => "'#' is only allowed as the last level",
            FilterError::PlusNotALevel => "'+' must be a whole level (like `a/+/b`)",
        })
    }
}

impl std::error::Error for FilterError {}

/// A parsed MQTT topic filter (`+` one level, `#` the rest), possibly a shared subscription.
///
/// Matching follows MQTT 3.1.1/5 §4.7: `#` also matches the parent level (`a/#` matches `a`),
/// `+` matches one level including an empty one, and topics starting with `$` (`$SYS/…`) are
/// not matched by a filter whose first level is a wildcard. A shared subscription
/// (`$share/{group}/{filter}`) is subscribed as written and matches what `{filter}` matches:
/// the broker delivers its messages with their own topic, without the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    /// As written: what is subscribed.
    filter: String,
    /// Where the matched part starts in `filter` (after `$share/{group}/`; 0 without).
    inner: usize,
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Parses a filter.
    ///
    /// # Errors
    /// `FilterError` when `s` is not a valid MQTT topic filter: empty, too long, containing
    /// NUL, `#` anywhere but alone in the last level, `+` not alone in its level, or a
    /// `$share/` prefix without a group and a filter.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        if s.len() > MAX_TOPIC_BYTES {
            return Err(FilterError::TooLong);
        }
        if s.contains('\0') {
            return Err(FilterError::Nul);
        }
        let inner = match s.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let (group, _) = rest
                    .split_once('/')
                    .ok_or(FilterError::ShareWithoutFilter)?;
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err(FilterError::BadShareGroup);
                }
                SHARE_PREFIX.len() + group.len() + 1
            }
            None => 0,
        };
        if inner == s.len() {
            return Err(FilterError::Empty);
        }
        let mut levels = Vec::new();
        let mut start = inner;
        let count = s[inner..].split('/').count();
        for (i, level) in s[inner..].split('/').enumerate() {
            let end = start + level.len();
            let parsed = match level {
                "+" => Level::One,
                "#" if i + 1 == count => Level::Rest,
                "#" => return Err(FilterError::HashNotLast),
                _ if level.contains('#') => return Err(FilterError::HashNotALevel),
                _ if level.contains('+') => return Err(FilterError::PlusNotALevel),
                _ => Level::Exact(start, end),
            };
            levels.push(parsed);
            start = end + 1;
        }
        Ok(Self {
            filter: s.to_owned(),
            inner,
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
        if topic.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        // Walk the topic level by level on bytes: `/` is ASCII, so this splits exactly where
        // `str::split('/')` would, without its per-call searcher set-up (this runs for every
        // message and every pipeline).
        let topic = topic.as_bytes();
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
                Level::Exact(..) => {
                    if topic[start..end] != *self.exact(*level) {
                        return false;
                    }
                }
            }
            start = end + 1;
        }
        start > topic.len()
    }

    /// The filter as written: what is subscribed (a shared subscription with its prefix).
    pub fn as_str(&self) -> &str {
        &self.filter
    }

    /// The share group of a shared subscription (`$share/{group}/…`).
    pub fn share_group(&self) -> Option<&str> {
        (self.inner > 0).then(|| &self.filter[SHARE_PREFIX.len()..self.inner - 1])
    }

    /// The levels of the topics it matches, as written (a shared subscription's without its
    /// prefix): `sensors/+/temperature` has 3.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Whether every topic it matches has a level `level` (0-based), so that
    /// `key = "topic[level]"` always finds one: the filter has more than `level` levels, or a
    /// `#` at a level ≤ `level` (which may stand for it).
    pub fn has_level(&self, level: usize) -> bool {
        self.levels.len() > level
            || self
                .levels
                .iter()
                .position(|l| *l == Level::Rest)
                .is_some_and(|hash| hash <= level)
    }

    /// Whether some topic matches both filters (shared subscriptions by what they match).
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        let dollar = |f: &TopicFilter| {
            f.levels
                .first()
                .is_some_and(|l| matches!(l, Level::Exact(..)) && f.exact(*l).starts_with(b"$"))
        };
        if (dollar(self) && other.starts_with_wildcard())
            || (dollar(other) && self.starts_with_wildcard())
        {
            return false;
        }
        let mut level = 0;
        loop {
            match (self.levels.get(level), other.levels.get(level)) {
                // `#` matches the rest, and its parent level too (`a/#` matches `a`).
                (Some(Level::Rest), _) | (_, Some(Level::Rest)) | (None, None) => return true,
                (Some(Level::One), Some(_)) | (Some(_), Some(Level::One)) => level += 1,
                (Some(a), Some(b)) if self.exact(*a) == other.exact(*b) => level += 1,
                _ => return false,
            }
        }
    }

    /// A filter whose first level is `+` or `#` (which `$` topics are not matched by).
    fn starts_with_wildcard(&self) -> bool {
        matches!(self.levels.first(), Some(Level::One | Level::Rest))
    }

    /// The bytes of a literal level (empty for a wildcard).
    fn exact(&self, level: Level) -> &[u8] {
        match level {
            Level::Exact(from, to) => &self.filter.as_bytes()[from..to],
            Level::One | Level::Rest => &[],
        }
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter)
    }
}

/// A placeholder of a topic template, `{name}`. Which ones a template may use depends on the
/// setting (a pipeline's `output`: pipeline, key, field; a classifier's: classifier, key; …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{pipeline}`: the pipeline's name.
    Pipeline,
    /// `{classifier}`: the classifier's name.
    Classifier,
    /// `{key}`: the key (a sensor, a user, an item).
    Key,
    /// `{field}`: the model's target field.
    Field,
    /// `{sensor}`: a simulated sensor's id.
    Sensor,
}

impl Placeholder {
    const ALL: [Placeholder; 5] = [
        Placeholder::Pipeline,
        Placeholder::Classifier,
        Placeholder::Key,
        Placeholder::Field,
        Placeholder::Sensor,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Pipeline => "pipeline",
            Placeholder::Classifier => "classifier",
            Placeholder::Key => "key",
            Placeholder::Field => "field",
            Placeholder::Sensor => "sensor",
        }
    }
}

/// Why a string is not a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// An empty template.
    Empty,
    /// `+` or `#` (not allowed in a topic name).
    Wildcard,
    /// Starts with `$` (the broker's topics).
    Reserved,
    /// Contains NUL.
    Nul,
    /// A `}` without its `{`.
    StrayClose,
    /// A `{` without its `}`.
    Unclosed,
    /// A placeholder the setting does not offer.
    Unknown {
        /// The name written.
        name: String,
        /// The placeholders accepted, as `{a}, {b}`.
        accepted: String,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Empty => f.write_str("a topic must not be empty"),
            TemplateError::Wildcard => {
                f.write_str("a published topic must not contain the wildcards '+' or '#'")
            }
            TemplateError::Reserved => {
                f.write_str("topics starting with '$' are reserved for the broker")
            }
            TemplateError::Nul => f.write_str("a topic must not contain a NUL character"),
            TemplateError::StrayClose => f.write_str("it has a '}' without a matching '{'"),
            TemplateError::Unclosed => f.write_str("it has a '{' without a matching '}'"),
            TemplateError::Unknown { name, accepted } => {
                write!(f, "unknown placeholder {{{name}}} (accepted: {accepted})")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// A compiled topic template: literal text and `{placeholder}`s.
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
    /// Parses a template whose placeholders are among `allowed`.
    ///
    /// # Errors
    /// `TemplateError` when the template is empty, starts with `$`, contains `+`, `#` or
    /// NUL, has an unclosed `{` or a stray `}`, or a placeholder not in `allowed`.
    pub fn parse(s: &str, allowed: &[Placeholder]) -> Result<Self, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        if s.contains(['+', '#']) {
            return Err(TemplateError::Wildcard);
        }
        if s.starts_with('$') {
            return Err(TemplateError::Reserved);
        }
        if s.contains('\0') {
            return Err(TemplateError::Nul);
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            if rest[open..].starts_with('}') {
                return Err(TemplateError::StrayClose);
            }
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|&i| after[i..].starts_with('}'))
                .ok_or(TemplateError::Unclosed)?;
            let name = &after[..close];
            let placeholder = allowed
                .iter()
                .copied()
                .find(|p| p.name() == name)
                .ok_or_else(|| TemplateError::Unknown {
                    name: name.to_owned(),
                    accepted: allowed
                        .iter()
                        .map(|p| format!("{{{}}}", p.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            parts.push(Part::Placeholder(placeholder));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self {
            template: s.to_owned(),
            parts,
        })
    }

    /// A built-in default template (every one is tested to parse); one that did not would
    /// render as its literal text rather than fail at start-up.
    pub fn builtin(s: &str) -> Self {
        Self::parse(s, &Placeholder::ALL).unwrap_or_else(|_| Self {
            template: s.to_owned(),
            parts: vec![Part::Literal(s.to_owned())],
        })
    }

    /// Whether the template uses `placeholder`.
    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.contains(&Part::Placeholder(placeholder))
    }

    /// Renders the topic for one output into `out` (cleared first): `{pipeline}` and
    /// `{classifier}` become `name`, `{key}` and `{sensor}` `key`, `{field}` `field`. Does
    /// not allocate once `out` has the capacity.
    pub fn render(&self, name: &str, key: &str, field: &str, out: &mut String) {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(Placeholder::Pipeline | Placeholder::Classifier) => {
                    push_level_safe(out, name);
                }
                Part::Placeholder(Placeholder::Key | Placeholder::Sensor) => {
                    push_level_safe(out, key);
                }
                Part::Placeholder(Placeholder::Field) => push_level_safe(out, field),
            }
        }
    }

    /// A filter that matches every topic this template renders: its literal leading levels
    /// and `#` (`edgeflow/{pipeline}/…` gives `edgeflow/#`; a template starting with a
    /// placeholder gives `#`).
    pub fn covering_filter(&self) -> String {
        let literal: Vec<&str> = self
            .template
            .split('/')
            .take_while(|level| !level.contains('{'))
            .collect();
        if literal.is_empty() {
            "#".into()
        } else {
            format!("{}/#", literal.join("/"))
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.template
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
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
            Ok(f) => f,
            Err(e) => panic!("{s:?} should parse: {e}"),
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
    fn invalid_filters_are_rejected_with_their_reason() {
        for (bad, reason) in [
            ("", FilterError::Empty),
            ("a/#/b", FilterError::HashNotLast),
            ("#/", FilterError::HashNotLast),
            ("a#", FilterError::HashNotALevel),
            ("a/b#", FilterError::HashNotALevel),
            ("a+/b", FilterError::PlusNotALevel),
            ("+a", FilterError::PlusNotALevel),
            ("a/+b/c", FilterError::PlusNotALevel),
            ("a\0b", FilterError::Nul),
            ("$share/g", FilterError::ShareWithoutFilter),
            ("$share//a", FilterError::BadShareGroup),
            ("$share/+/a", FilterError::BadShareGroup),
            ("$share/g/", FilterError::Empty),
            ("$share/g/a/#/b", FilterError::HashNotLast),
        ] {
            assert_eq!(TopicFilter::parse(bad), Err(reason), "{bad:?}");
        }
        let long = "a".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(TopicFilter::parse(&long), Err(FilterError::TooLong));
        for good in [
            "a",
            "a/b",
            "+",
            "#",
            "/",
            "a//b",
            "+/+/#",
            "/+",
            "/a",
            "$share/g/a/+",
        ] {
            assert!(TopicFilter::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_shared_subscription_is_subscribed_as_written_and_matches_without_its_prefix() {
        let f = filter("$share/gw/sensors/+/t");
        assert_eq!(f.as_str(), "$share/gw/sensors/+/t");
        assert_eq!(f.share_group(), Some("gw"));
        assert!(f.matches("sensors/x/t"));
        assert!(!f.matches("$share/gw/sensors/x/t"));
        assert!(!f.matches("sensors/x/u"));
        assert_eq!(f.level_count(), 3);
        assert!(filter("$share/g/#").matches("a/b"));
        assert_eq!(filter("sensors/+/t").share_group(), None);
        // A group may contain '$' and other characters; only the first two levels are the prefix.
        assert!(filter("$share/$g/share/x").matches("share/x"));
    }

    #[test]
    fn overlapping_filters_share_a_topic() {
        for (a, b) in [
            ("shop/requests", "shop/requests"),
            ("shop/#", "shop/requests"),
            ("shop/+/events", "shop/+/+"),
            ("shop/+/events", "shop/u1/#"),
            ("#", "anything/at/all"),
            ("shop/#", "shop"),
            ("$share/g/shop/+", "shop/requests"),
            ("$SYS/x", "$SYS/+"),
        ] {
            assert!(filter(a).overlaps(&filter(b)), "{a} and {b}");
            assert!(filter(b).overlaps(&filter(a)), "{b} and {a}");
        }
        for (a, b) in [
            ("shop/+/events", "shop/requests"),
            ("shop/events", "shop/requests"),
            ("shop/+", "shop/a/b"),
            ("shop", "shop/requests"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("a/+/c", "a/b/d"),
        ] {
            assert!(!filter(a).overlaps(&filter(b)), "{a} and {b}");
            assert!(!filter(b).overlaps(&filter(a)), "{b} and {a}");
        }
    }

    #[test]
    fn topic_level_must_exist_in_every_match() {
        assert!(filter("sensors/+/temperature").has_level(1));
        assert!(filter("sensors/+/temperature").has_level(2));
        assert!(!filter("sensors/+/temperature").has_level(3));
        assert!(filter("sensors/#").has_level(1));
        assert!(filter("sensors/#").has_level(5));
        assert!(!filter("sensors").has_level(1));
        // The share prefix is not part of the received topic.
        assert!(!filter("$share/g/sensors").has_level(1));
        assert!(filter("$share/g/sensors/+").has_level(1));
        assert_eq!(filter("$share/g/a/b").level_count(), 2);
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

    const OUTPUT: [Placeholder; 3] = [Placeholder::Pipeline, Placeholder::Key, Placeholder::Field];

    fn template(s: &str) -> TopicTemplate {
        match TopicTemplate::parse(s, &OUTPUT) {
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
        let unknown = |name: &str| TemplateError::Unknown {
            name: name.into(),
            accepted: "{pipeline}, {key}, {field}".into(),
        };
        for (input, expected) in [
            ("", TemplateError::Empty),
            ("a/{nope}", unknown("nope")),
            ("a/{classifier}", unknown("classifier")),
            ("a/{}", unknown("")),
            ("a/{key", TemplateError::Unclosed),
            ("a/{ke{y}", TemplateError::Unclosed),
            ("a/{{key}}", TemplateError::Unclosed),
            ("a/key}", TemplateError::StrayClose),
            ("a/+/{key}", TemplateError::Wildcard),
            ("a/#", TemplateError::Wildcard),
            ("$SYS/x", TemplateError::Reserved),
            ("a\0b", TemplateError::Nul),
        ] {
            assert_eq!(
                TopicTemplate::parse(input, &OUTPUT),
                Err(expected),
                "{input:?}"
            );
        }
        assert_eq!(
            unknown("nope").to_string(),
            "unknown placeholder {nope} (accepted: {pipeline}, {key}, {field})"
        );
    }

    #[test]
    fn a_template_offers_the_placeholders_of_its_setting() {
        let classes = [Placeholder::Classifier, Placeholder::Key];
        let t = match TopicTemplate::parse("c/{classifier}/{key}", &classes) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let mut out = String::new();
        t.render("rooms", "r1", "", &mut out);
        assert_eq!(out, "c/rooms/r1");
        assert!(t.uses(Placeholder::Key) && !t.uses(Placeholder::Field));
        assert!(TopicTemplate::parse("c/{pipeline}", &classes).is_err());
    }

    #[test]
    fn the_covering_filter_matches_every_rendered_topic() {
        for (t, filter) in [
            ("edgeflow/{pipeline}/{key}/{field}/forecast", "edgeflow/#"),
            ("a/b/x-{key}", "a/b/#"),
            ("{pipeline}/out", "#"),
            ("fixed/topic", "fixed/topic/#"),
        ] {
            let t = template(t);
            assert_eq!(t.covering_filter(), filter);
            let mut out = String::new();
            t.render("p", "k", "f", &mut out);
            assert!(
                TopicFilter::parse(filter).is_ok_and(|f| f.matches(&out)),
                "{filter} {out}"
            );
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
