//! Pure checks of string-valued settings: JSON pointers (and the CSV columns and SenML records
//! they name), key sources and names. Topic filters and templates are parsed by
//! [`crate::topic`].
//!
//! Each check returns the *reason* something is wrong; the loader adds the component, the
//! key and the location. Keeping them free of TOML lets them be tested on their own.

use super::schema::KeySource;
use crate::pointer::parse_pointer;

/// Why `pointer` (a valid JSON pointer) names none of `columns`, worded to follow the pointer:
/// a CSV line is an object of its columns, so the pointer must be `"/column"`.
pub(crate) fn csv_column_problem(pointer: &str, columns: &[String]) -> Option<String> {
    let tokens = parse_pointer(pointer).ok()?;
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
    match parse_pointer(pointer).ok()?.len() {
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
        return match parse_pointer(text).err() {
            None => Ok(KeySource::Pointer(text.to_owned())),
            Some(reason) => Err(reason.to_string()),
        };
    }
    Err(format!("accepted: {ACCEPTED}"))
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
