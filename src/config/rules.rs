//! Pure checks of string-valued settings: MQTT topic filters, JSON pointers (and the CSV
//! columns and SenML records they name), key sources, topic templates and names.
//!
//! Each check returns the *reason* something is wrong; the loader adds the component, the
//! key and the location. Keeping them free of TOML lets them be tested on their own.

use super::schema::KeySource;
use crate::codec::pointer::parse_pointer;

/// Prefix of an MQTT 5 shared subscription (`$share/{group}/{filter}`). Several daemons can
/// split one fleet this way (see DESIGN.md, "Scaling past one gateway").
const SHARE_PREFIX: &str = "$share/";

/// Longest topic or filter MQTT can carry: a UTF-8 string with a 16-bit length prefix.
const MAX_TOPIC_BYTES: usize = 65_535;

/// Why `filter` is not a valid MQTT subscription filter, or `None` if it is.
pub(crate) fn topic_filter_problem(filter: &str) -> Option<String> {
    if filter.len() > MAX_TOPIC_BYTES {
        return Some(format!("it is longer than {MAX_TOPIC_BYTES} bytes"));
    }
    if filter.contains('\0') {
        return Some("it contains a NUL character".into());
    }
    let inner = match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            let Some((group, inner)) = rest.split_once('/') else {
                return Some("a shared subscription needs `$share/{group}/{filter}`".into());
            };
            if group.is_empty() || group.contains(['+', '#']) {
                return Some(
                    "the share group name must be non-empty and without '+' or '#'".into(),
                );
            }
            inner
        }
        None => filter,
    };
    if inner.is_empty() {
        return Some("it is empty".into());
    }
    let levels: Vec<&str> = inner.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        if level.contains('#') {
            if *level != "#" {
                return Some("'#' must be a whole level (like `a/#`)".into());
            }
            if index + 1 != levels.len() {
                return Some("'#' is only allowed as the last level".into());
            }
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole level (like `a/+/b`)".into());
        }
    }
    None
}

/// The topic levels a (valid) filter matches against: a shared subscription's
/// `$share/{group}/` prefix is not part of the topics it receives.
fn filter_levels(filter: &str) -> Vec<&str> {
    let inner = filter
        .strip_prefix(SHARE_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_group, inner)| inner);
    inner.split('/').collect()
}

/// Whether every topic matched by `filter` has a level `level` (0-based), so that
/// `key = "topic[level]"` always finds one: the filter has more than `level` levels, or a
/// `#` at a level ≤ `level` (which may stand for it).
pub(crate) fn filter_has_level(filter: &str, level: usize) -> bool {
    let levels = filter_levels(filter);
    levels.len() > level
        || levels
            .iter()
            .position(|l| *l == "#")
            .is_some_and(|hash| hash <= level)
}

/// Whether some topic matches both (valid) filters. A shared subscription's prefix is not
/// part of the topics it matches; a filter starting with a wildcard does not match topics
/// starting with `$` (MQTT 3.1.1 §4.7.2).
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (filter_levels(a), filter_levels(b));
    let dollar = |levels: &[&str]| levels.first().is_some_and(|l| l.starts_with('$'));
    let wildcard_first = |levels: &[&str]| levels.first().is_some_and(|l| *l == "+" || *l == "#");
    if (dollar(&a) && wildcard_first(&b)) || (dollar(&b) && wildcard_first(&a)) {
        return false;
    }
    let mut level = 0;
    loop {
        match (a.get(level), b.get(level)) {
            // `#` matches the rest, and its parent level too (`a/#` matches `a`).
            (Some(&"#"), _) | (_, Some(&"#")) | (None, None) => return true,
            (Some(x), Some(y)) if *x == "+" || *y == "+" || x == y => level += 1,
            _ => return false,
        }
    }
}

/// The number of levels of a filter, as shown in messages.
pub(crate) fn filter_level_count(filter: &str) -> usize {
    filter_levels(filter).len()
}

/// Why `pointer` is not an RFC 6901 JSON pointer (`""` or `/a/b`, `~` only in `~0`/`~1`).
pub(crate) fn pointer_problem(pointer: &str) -> Option<&'static str> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Some("a JSON pointer is \"\" (the whole payload) or starts with \"/\"");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(
                "'~' in a JSON pointer must be followed by 0 or 1 (\"~0\" is '~', \"~1\" is '/')",
            );
        }
    }
    None
}

/// Why `pointer` (a valid JSON pointer) names none of `columns`, worded to follow the pointer:
/// a CSV line is an object of its columns, so the pointer must be `"/column"`.
pub(crate) fn csv_column_problem(pointer: &str, columns: &[String]) -> Option<String> {
    let tokens = parse_pointer(pointer)?;
    match tokens.as_slice() {
        [column] if columns.contains(column) => None,
        [_] => Some(format!(
            "names no column (columns: {})",
            columns.join(", ")
        )),
        _ => Some(
            "must name one column, \"/column\" (a CSV line has no nesting; a '/' in a column name is written \"~1\")"
                .into(),
        ),
    }
}

/// Why `pointer` (a valid JSON pointer) is not one SenML record name, `"/name"`, worded to
/// follow the pointer.
pub(crate) fn senml_record_problem(pointer: &str) -> Option<String> {
    match parse_pointer(pointer)?.len() {
        1 => None,
        _ => Some(
            "must name one SenML record, \"/name\" (relative to the base name; a '/' in a record name is written \"~1\")"
                .into(),
        ),
    }
}

/// Parses `key = "topic" | "topic[N]" | "/json/pointer" | "name" | "basename"`.
pub(crate) fn parse_key_source(text: &str) -> Result<KeySource, String> {
    const ACCEPTED: &str =
        "\"topic\", \"topic[N]\" (N = 0-based topic level), a JSON pointer starting with \"/\", or for SenML \"name\" or \"basename\"";
    match text {
        "topic" => return Ok(KeySource::Topic),
        "name" => return Ok(KeySource::RecordName),
        "basename" => return Ok(KeySource::BaseName),
        _ => {}
    }
    if let Some(index) = text
        .strip_prefix("topic[")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        // `usize::from_str` accepts a leading '+'; only plain digits are meant here.
        if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(level) = index.parse::<usize>() {
                return Ok(KeySource::TopicLevel(level));
            }
        }
        return Err(format!(
            "the level in topic[N] must be a non-negative integer; accepted: {ACCEPTED}"
        ));
    }
    if text.starts_with('/') {
        return match pointer_problem(text) {
            None => Ok(KeySource::Pointer(text.to_owned())),
            Some(reason) => Err(reason.to_owned()),
        };
    }
    Err(format!("accepted: {ACCEPTED}"))
}

/// Checks a publish-topic template whose placeholders are `{name}` with `name` in
/// `allowed`; returns the placeholders used, in order.
pub(crate) fn template_placeholders<'t>(
    template: &'t str,
    allowed: &[&str],
) -> Result<Vec<&'t str>, String> {
    if template.is_empty() {
        return Err("a topic must not be empty".into());
    }
    if template.contains(['+', '#']) {
        return Err("a published topic must not contain the wildcards '+' or '#'".into());
    }
    if template.starts_with('$') {
        return Err("topics starting with '$' are reserved for the broker".into());
    }
    if template.contains('\0') {
        return Err("a topic must not contain a NUL character".into());
    }
    let accepted = allowed
        .iter()
        .map(|name| format!("{{{name}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("it has a '}' without a matching '{'".into());
        }
        let after = &rest[open + 1..];
        let Some(close) = after
            .find(['{', '}'])
            .filter(|&i| after[i..].starts_with('}'))
        else {
            return Err("it has a '{' without a matching '}'".into());
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (accepted: {accepted})"
            ));
        }
        used.push(name);
        rest = &after[close + 1..];
    }
    Ok(used)
}

/// Names used in topics and state keys: `[A-Za-z0-9_-]+`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A field name ends up as one level of an output topic (`{field}`), so it must be a
/// valid, non-wildcard topic level.
pub(crate) fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '+', '#', '{', '}', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topic_filters_are_accepted() {
        for filter in [
            "a",
            "a/b",
            "+",
            "#",
            "a/+/c",
            "a/#",
            "+/+/#",
            "/a",
            "a//b",
            "$share/g/a/+",
        ] {
            assert_eq!(topic_filter_problem(filter), None, "{filter}");
        }
    }

    #[test]
    fn invalid_topic_filters_are_rejected() {
        for filter in [
            "",
            "a/#/b",
            "a#",
            "a/b#",
            "a+",
            "a/+b/c",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/+/a",
        ] {
            assert!(topic_filter_problem(filter).is_some(), "{filter}");
        }
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
            assert!(filters_overlap(a, b), "{a} and {b}");
            assert!(filters_overlap(b, a), "{b} and {a}");
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
            assert!(!filters_overlap(a, b), "{a} and {b}");
            assert!(!filters_overlap(b, a), "{b} and {a}");
        }
    }

    #[test]
    fn topic_level_must_exist_in_every_match() {
        assert!(filter_has_level("sensors/+/temperature", 1));
        assert!(filter_has_level("sensors/+/temperature", 2));
        assert!(!filter_has_level("sensors/+/temperature", 3));
        assert!(filter_has_level("sensors/#", 1));
        assert!(filter_has_level("sensors/#", 5));
        assert!(!filter_has_level("sensors", 1));
        // The share prefix is not part of the received topic.
        assert!(!filter_has_level("$share/g/sensors", 1));
        assert!(filter_has_level("$share/g/sensors/+", 1));
        assert_eq!(filter_level_count("$share/g/a/b"), 2);
    }

    #[test]
    fn json_pointers_follow_rfc_6901() {
        for ok in ["", "/", "/a", "/a/0", "/a~0b", "/a~1b", "/a b"] {
            assert_eq!(pointer_problem(ok), None, "{ok}");
        }
        for bad in ["a", "a/b", "/a~", "/a~2", "~0"] {
            assert!(pointer_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn key_sources_parse() {
        assert_eq!(parse_key_source("topic"), Ok(KeySource::Topic));
        assert_eq!(parse_key_source("topic[0]"), Ok(KeySource::TopicLevel(0)));
        assert_eq!(parse_key_source("topic[12]"), Ok(KeySource::TopicLevel(12)));
        assert_eq!(
            parse_key_source("/id"),
            Ok(KeySource::Pointer("/id".into()))
        );
        assert_eq!(parse_key_source("name"), Ok(KeySource::RecordName));
        assert_eq!(parse_key_source("basename"), Ok(KeySource::BaseName));
        for bad in [
            "",
            "topics",
            "topic[]",
            "topic[-1]",
            "topic[+1]",
            "topic[x]",
            "id",
            "/a~",
        ] {
            assert!(parse_key_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_pointers_name_one_column() {
        let columns = ["ts".to_owned(), "a/b".to_owned(), "temp".to_owned()];
        assert_eq!(csv_column_problem("/temp", &columns), None);
        assert_eq!(csv_column_problem("/a~1b", &columns), None);
        assert_eq!(
            csv_column_problem("/tmp", &columns).as_deref(),
            Some("names no column (columns: ts, a/b, temp)")
        );
        for nested in ["", "/a/b", "/temp/0"] {
            assert!(
                csv_column_problem(nested, &columns).is_some_and(|p| p.contains("one column")),
                "{nested:?}"
            );
        }
    }

    #[test]
    fn senml_pointers_name_one_record() {
        assert_eq!(senml_record_problem("/voltage"), None);
        assert_eq!(senml_record_problem("/"), None);
        assert_eq!(senml_record_problem("/a~1b"), None);
        assert!(senml_record_problem("").is_some());
        assert!(senml_record_problem("/a/b").is_some());
    }

    #[test]
    fn templates_accept_only_known_placeholders() {
        let allowed = ["pipeline", "key", "field"];
        assert_eq!(
            template_placeholders("e/{pipeline}/{key}/{field}/f", &allowed),
            Ok(vec!["pipeline", "key", "field"])
        );
        assert_eq!(template_placeholders("plain/topic", &allowed), Ok(vec![]));
        for bad in [
            "",
            "e/{sensor}",
            "e/{key",
            "e/key}",
            "e/{{key}}",
            "e/{}",
            "e/+/x",
            "e/#",
            "$SYS/x",
        ] {
            assert!(template_placeholders(bad, &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_restricted_to_topic_safe_characters() {
        assert!(is_valid_name("temp_1-a"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a/b"));
        assert!(is_valid_field_name("temp.c"));
        assert!(!is_valid_field_name("a/b"));
        assert!(!is_valid_field_name("+"));
        assert!(!is_valid_field_name(""));
    }
}
