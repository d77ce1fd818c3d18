//! Configuration errors with their location, and byte offset → line:col conversion.

use std::fmt;
use std::path::PathBuf;

/// One problem in a configuration file, with the place to fix it.
///
/// Displays as `file:line:col: message`, the format editors and CI logs link to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", file.display())]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes).
    pub col: usize,
    /// What is wrong, naming the component and what is accepted.
    pub message: String,
}

/// Every problem found in a configuration file, in file order.
///
/// Displays as one `file:line:col: message` line per error, each ending in a newline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(errors))]
pub struct ConfigErrors {
    /// The problems, never empty when returned by `load`/`parse_str`.
    pub errors: Vec<ConfigError>,
}

/// The errors, each on its own line ending in `\n` (so `eprint!("{errors}")` prints
/// complete lines, as `edgeflow check` does).
struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in self.0 {
            writeln!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Converts byte offsets of a source text to 1-based line and character column.
pub(crate) struct LineIndex<'s> {
    text: &'s str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(crate) fn new(text: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// Line and column (both 1-based, column in chars) of a byte offset. Offsets past the
    /// end or inside a character are clamped, so any offset gives a usable location.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_line_and_char_column() {
        let index = LineIndex::new("ab\nçé = 1\n\nx");
        assert_eq!(index.locate(0), (1, 1));
        assert_eq!(index.locate(2), (1, 3));
        assert_eq!(index.locate(3), (2, 1));
        // "çé " is 5 bytes but 3 characters.
        assert_eq!(index.locate(8), (2, 4));
        // Inside a multi-byte character: clamped to its start.
        assert_eq!(index.locate(4), (2, 1));
        assert_eq!(index.locate(12), (3, 1));
        assert_eq!(index.locate(13), (4, 1));
        assert_eq!(index.locate(1000), (4, 2));
    }

    #[test]
    fn errors_display_one_line_each() {
        let error = |line, message: &str| ConfigError {
            file: "gw.toml".into(),
            line,
            col: 3,
            message: message.into(),
        };
        let errors = ConfigErrors {
            errors: vec![error(1, "a"), error(7, "b")],
        };
        assert_eq!(errors.to_string(), "gw.toml:1:3: a\ngw.toml:7:3: b\n");
    }
}
