//! The JSON pointer grammar (RFC 6901), parsed in one place: the config loader checks every
//! pointer with it (its errors are these messages, placed at the setting), and the decoders
//! build their path trees from its tokens.

use std::fmt;

/// Why a string is not a JSON pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerError {
    /// Neither `""` nor starting with `/`.
    NoLeadingSlash,
    /// A `~` not followed by `0` or `1`.
    BadEscape,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointerError::NoLeadingSlash => {
                "a JSON pointer is \"\" (the whole payload) or starts with \"/\""
            }
            PointerError::BadEscape => {
                "'~' in a JSON pointer must be followed by 0 or 1 (\"~0\" is '~', \"~1\" is '/')"
            }
        })
    }
}

impl std::error::Error for PointerError {}

/// Splits an RFC 6901 JSON pointer into its unescaped reference tokens (`~1` → `/`, `~0` → `~`).
///
/// `""` is the whole document (no tokens).
///
/// # Errors
/// `PointerError` when the pointer does not start with `/` (and is not `""`), or a `~` is not
/// followed by `0` or `1`.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or(PointerError::NoLeadingSlash)?;
    rest.split('/').map(unescape_token).collect()
}

/// Unescapes one reference token.
fn unescape_token(token: &str) -> Result<String, PointerError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(PointerError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_are_decoded_in_rfc_order() {
        assert_eq!(parse_pointer(""), Ok(vec![]));
        assert_eq!(parse_pointer("/"), Ok(vec![String::new()]));
        assert_eq!(
            parse_pointer("/a~1b/m~0n/~01"),
            Ok(vec!["a/b".to_string(), "m~n".to_string(), "~1".to_string()])
        );
        for ok in ["/a", "/a/0", "/a~0b", "/a~1b", "/a b"] {
            assert!(parse_pointer(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_pointers_are_rejected_with_their_reason() {
        for (bad, reason) in [
            ("value", PointerError::NoLeadingSlash),
            ("a/b", PointerError::NoLeadingSlash),
            ("~0", PointerError::NoLeadingSlash),
            ("/a~2", PointerError::BadEscape),
            ("/a~", PointerError::BadEscape),
        ] {
            assert_eq!(parse_pointer(bad), Err(reason), "{bad}");
        }
    }
}
