//! Lexer.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Ident,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Bang,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) kind: Tok,
    pub(super) offset: usize,
    pub(super) len: usize,
}

pub(super) fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

pub(super) fn is_ident_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.'
}

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let byte = bytes[i];
        let next = bytes.get(i + 1).copied();
        let (kind, len) = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'0'..=b'9' | b'.' => lex_number(src, start)?,
            b'"' | b'\'' => lex_string(src, start)?,
            _ if is_ident_start(byte) => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|b| is_ident_continue(**b))
                    .count();
                (Tok::Ident, len)
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'^' => (Tok::Caret, 1),
            b'<' if next == Some(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if next == Some(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'=' if next == Some(b'=') => (Tok::EqEq, 2),
            b'!' if next == Some(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Bang, 1),
            b'&' if next == Some(b'&') => (Tok::AndAnd, 2),
            b'|' if next == Some(b'|') => (Tok::OrOr, 2),
            b'=' => {
                return Err(ExprError::new(
                    start,
                    1,
                    "unexpected `=`; compare with `==`",
                ))
            }
            b'&' => return Err(ExprError::new(start, 1, "unexpected `&`; use `&&`")),
            b'|' => return Err(ExprError::new(start, 1, "unexpected `|`; use `||`")),
            _ => {
                let ch = src[start..].chars().next().unwrap_or('\u{fffd}');
                return Err(ExprError::new(
                    start,
                    ch.len_utf8(),
                    format!("unexpected character `{}`", ch.escape_debug()),
                ));
            }
        };
        tokens.push(Token {
            kind,
            offset: start,
            len,
        });
        i = start + len;
    }
    tokens.push(Token {
        kind: Tok::End,
        offset: src.len(),
        len: 0,
    });
    Ok(tokens)
}

/// Reads a number starting at `start`: everything that could belong to it (digits, letters,
/// `_`, `.`, and a sign right after an exponent `e`) is taken, then must parse as a finite `f64`,
/// so `1e`, `1.2.3` and `3x` are one invalid number rather than confusing token sequences.
pub(super) fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let mut end = start;
    while end < bytes.len() {
        let byte = bytes[end];
        let sign_after_exponent = (byte == b'+' || byte == b'-')
            && end > start
            && matches!(bytes[end - 1], b'e' | b'E')
            && bytes[start..end - 1]
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'.');
        if is_ident_continue(byte) || sign_after_exponent {
            end += 1;
        } else {
            break;
        }
    }
    let text = &src[start..end];
    // `str::parse::<f64>` also takes "inf"/"nan"/"infinity", which cannot start with a digit or
    // a dot, so only the shapes checked here reach it.
    let well_formed = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    match text.parse::<f64>() {
        Ok(value) if well_formed && value.is_finite() => Ok((Tok::Num(value), end - start)),
        Ok(_) if well_formed => Err(ExprError::new(
            start,
            end - start,
            format!("number `{text}` is too large for a 64-bit float"),
        )),
        _ => Err(ExprError::new(
            start,
            end - start,
            format!("invalid number `{text}`; write numbers like 12, -4.5, .5 or 1e3"),
        )),
    }
}

pub(super) fn lex_string(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let quote = bytes[start];
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        let Some(&byte) = bytes.get(i) else {
            return Err(ExprError::new(
                start,
                src.len() - start,
                "unterminated string; close it with the quote it was opened with",
            ));
        };
        if byte == quote {
            return Ok((Tok::Str(text), i + 1 - start));
        }
        if byte == b'\\' {
            match bytes.get(i + 1) {
                Some(&escaped @ (b'"' | b'\'' | b'\\')) => {
                    text.push(char::from(escaped));
                    i += 2;
                    continue;
                }
                _ => {
                    let len = src[i + 1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
                    return Err(ExprError::new(
                        i,
                        len,
                        "unknown escape in string; only \\\", \\' and \\\\ are accepted",
                    ));
                }
            }
        }
        // Copy one whole character (the source is UTF-8; `i` is always on a boundary here).
        let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
        text.push(ch);
        i += ch.len_utf8();
    }
}
