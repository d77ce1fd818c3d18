//! Filter and derive expressions, compiled once when a pipeline is built and evaluated per
//! reading without touching the heap.
//!
//! Why not a crate: `evalexpr` 13 (with a custom `Context`) and `exmex` 0.21 were measured with a
//! counting allocator on `temp > -40 && temp < 125`. `evalexpr` allocates on every evaluation
//! (5 allocations for that filter, 7 for `key != "s7" && time % 60000 == 0`: a `Vec` of argument
//! `Value`s per node, and its `Context` hands out `&Value`, so the key has to live in a
//! `Value::String`) and takes about 190 ns. `exmex` evaluates `f64` expressions without
//! allocating (about 24 ns) and its `Val` flavour has comparisons and `&&` (0 allocations,
//! about 105 ns), but it has no string values at all, so `key == "s1"` cannot be written; its
//! types are only checked when evaluating, and its errors carry no position. So this module is a
//! small Pratt parser that type-checks at parse time (an error carries the byte offset and
//! length of the offending token) and lowers to a typed tree of boxed nodes, constant-folded,
//! that evaluates in a few nanoseconds with no allocation.
//!
//! # Language
//! - Numbers: `12`, `-40`, `1.5`, `.5`, `1e3`, `2.5E-3`. Strings: `"s1"` or `'s1'` (`\"`, `\'`
//!   and `\\` are the only escapes); strings only meet `key`.
//! - Names (`[A-Za-z_][A-Za-z0-9_.]*`): a field of the reading (a number), `time` (the reading's
//!   event time in ms since the epoch, a number) and `key` (the reading's key, a string). A field
//!   that is itself called `time` or `key` makes that name ambiguous: an expression that uses it is
//!   rejected (rename the field), rather than silently picking one meaning.
//! - Operators, loosest first: `||`; `&&`; `==` `!=`; `<` `<=` `>` `>=`; `+` `-`; `*` `/` `%`;
//!   unary `-` `!`; `^` (power, right-associative, binding tighter than unary minus as in
//!   mathematics: `-2^2` is `-4`, `2^3^2` is `512`). `%` is the remainder with the sign of the
//!   dividend (like C and Rust), so `time % 60000 == 0` selects whole minutes.
//! - Functions: `abs sqrt ln log10 exp floor ceil round` (one number), `min max pow` (two),
//!   `clamp(x, lo, hi)`, `if(cond, a, b)` (both branches numbers or both booleans),
//!   `starts_with ends_with contains` (two strings, e.g. `starts_with(key, "hall-")`).
//! - Types are checked when parsing: `&&`, `||`, `!` and the condition of `if` need booleans;
//!   arithmetic and ordering need numbers; `==`/`!=` compare two values of the same type.
//!
//! # Numbers
//! Arithmetic is IEEE-754 `f64`: `1/0` is infinity, `0/0` and `sqrt(-1)` are NaN, nothing
//! panics. A comparison with NaN is false except `!=`, which is true. A number read as a
//! boolean ([`Expr::eval_bool`]) is true when it is neither 0 nor NaN; a boolean read as a
//! number ([`Expr::eval_number`]) is 1.0 or 0.0. `min`/`max` ignore a NaN argument (they return
//! the other one); `round` rounds half away from zero; `clamp(x, lo, hi)` is `lo` when `x < lo`,
//! else `hi` when `x > hi`, else `x` (so a NaN `x` stays NaN). A field index past the end of
//! [`Env::values`] reads as NaN. `time` is converted to `f64`, exact for any time within
//! ±285,000 years of 1970.
//!
//! Nesting is limited to [`MAX_DEPTH`] levels so that a hostile configuration cannot overflow
//! the stack while parsing, evaluating or dropping an expression.

use std::fmt;

mod lex;
mod parse;
mod tree;

use lex::*;
use parse::*;
use tree::*;

/// How deeply an expression may nest: each operator, parenthesis and function call adds a level
/// (so a chain `a + b + …` may have up to 64 operands).
pub const MAX_DEPTH: usize = 64;

/// The functions the language knows, as listed in error messages.
const FUNCTIONS: &str = "abs, sqrt, ln, log10, exp, floor, ceil, round, min, max, pow, clamp, \
                         if, starts_with, ends_with, contains";

/// What a name in an expression stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The reading's value at this index of the field list given to [`Expr::parse`].
    Field(usize),
    /// The reading's event time in milliseconds since the Unix epoch.
    Time,
    /// The reading's key.
    Key,
}

impl Var {
    /// Resolves `name` against the pipeline's field names and the built-ins `time` and `key`.
    ///
    /// # Errors
    /// An [`ExprError`] spanning the whole `name` (offset 0) when it is neither a field nor a
    /// built-in (the message lists the known names), or when it is both a field and a built-in.
    pub fn resolve(name: &str, fields: &[&str]) -> Result<Var, ExprError> {
        let field = fields.iter().position(|field| *field == name);
        let builtin = match name {
            "time" => Some((Var::Time, "the event time")),
            "key" => Some((Var::Key, "the reading's key")),
            _ => None,
        };
        match (field, builtin) {
            (Some(index), None) => Ok(Var::Field(index)),
            (None, Some((var, _))) => Ok(var),
            (Some(_), Some((_, meaning))) => Err(ExprError::new(
                0,
                name.len(),
                format!(
                    "`{name}` is both a field of this pipeline and the built-in name for \
                     {meaning}; rename the field to use it in an expression"
                ),
            )),
            (None, None) => {
                let mut known = String::new();
                for field in fields {
                    known.push_str(field);
                    known.push_str(", ");
                }
                known.push_str("time, key");
                let hint = if is_function(name) {
                    format!("; `{name}` is a function, call it as `{name}(...)`")
                } else {
                    String::new()
                };
                Err(ExprError::new(
                    0,
                    name.len(),
                    format!("unknown field `{name}`; known: {known}{hint}"),
                ))
            }
        }
    }
}

/// The type of a whole expression: filters require [`ExprType::Bool`], derived fields
/// [`ExprType::Number`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprType {
    /// An `f64`.
    Number,
    /// A boolean.
    Bool,
}

impl fmt::Display for ExprType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExprType::Number => "a number",
            ExprType::Bool => "a boolean",
        })
    }
}

/// Why an expression was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Byte offset of the offending token in the expression source (its length for "unexpected
    /// end").
    pub offset: usize,
    /// Length in bytes of the offending token (0 at the end of the source).
    pub len: usize,
    /// What is wrong and what is accepted, for the user.
    pub message: String,
}

impl ExprError {
    fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            len,
            message: message.into(),
        }
    }
}

/// What an expression reads from one reading.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The reading's values, in the order of the field names given to [`Expr::parse`].
    pub values: &'a [f64],
    /// Event time in milliseconds since the Unix epoch.
    pub time: i64,
    /// The reading's key.
    pub key: &'a str,
}

/// A compiled, type-checked expression.
#[derive(Debug, Clone)]
pub struct Expr {
    root: Root,
    fields: Vec<usize>,
}

/// An expression as the config loader compiled it, with the text it was written as. The
/// pipeline uses [`expr`](Self::expr) as it is and never parses the text again. `Debug` and
/// equality show and compare the text: the operator fingerprint stored with every key's state
/// hashes the configs' `Debug`, and it stays what it was when the config held the text alone.
#[derive(Clone)]
pub struct CompiledExpr {
    text: String,
    expr: Expr,
}

impl CompiledExpr {
    /// `expr`, compiled from `text`.
    pub fn new(text: impl Into<String>, expr: Expr) -> Self {
        Self {
            text: text.into(),
            expr,
        }
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The compiled expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

impl std::fmt::Debug for CompiledExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.text, f)
    }
}

impl PartialEq for CompiledExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone)]
enum Root {
    Number(Num),
    Bool(Bool),
}

impl Expr {
    /// Compiles `src`; names resolve to the reading's values by their position in `fields`, or
    /// to the built-ins `time` and `key` (see [`Var::resolve`]).
    ///
    /// # Errors
    /// An [`ExprError`] whose `offset`/`len` point at the offending token: a character or
    /// number that cannot be read, an unterminated string, an unexpected token or end, an
    /// unclosed `(` or unmatched `)`, an unknown field (the known ones are listed), an unknown
    /// function (the known ones are listed), a wrong number of arguments, an operand of the
    /// wrong type, a whole expression that is a string, or nesting deeper than [`MAX_DEPTH`].
    pub fn parse(src: &str, fields: &[&str]) -> Result<Expr, ExprError> {
        let tokens = lex(src)?;
        let mut parser = Parser {
            src,
            tokens,
            pos: 0,
            fields,
            depth: 0,
            used: Vec::new(),
        };
        if parser.peek().kind == Tok::End {
            return Err(ExprError::new(0, src.len(), "empty expression"));
        }
        let operand = parser.expr(0)?;
        let next = parser.peek();
        match next.kind {
            Tok::End => {}
            Tok::RParen => {
                return Err(ExprError::new(next.offset, next.len, "unmatched `)`"));
            }
            _ => {
                return Err(ExprError::new(
                    next.offset,
                    next.len,
                    format!(
                        "expected an operator or the end of the expression, found {}",
                        parser.describe(next)
                    ),
                ));
            }
        }
        let root = match operand.value {
            Value::Num(num) => Root::Number(num),
            Value::Bool(bool) => Root::Bool(bool),
            Value::Str(_) => {
                return Err(ExprError::new(
                    operand.start,
                    operand.end - operand.start,
                    "the expression is a string; strings can only be compared with `==`/`!=` \
                     or tested with starts_with/ends_with/contains",
                ));
            }
        };
        let mut fields = parser.used;
        fields.sort_unstable();
        fields.dedup();
        Ok(Expr { root, fields })
    }

    /// The type of the whole expression.
    pub fn ty(&self) -> ExprType {
        match self.root {
            Root::Number(_) => ExprType::Number,
            Root::Bool(_) => ExprType::Bool,
        }
    }

    /// Evaluates the expression as a number (a boolean expression gives 1.0 or 0.0).
    pub fn eval_number(&self, env: &Env) -> f64 {
        match &self.root {
            Root::Number(num) => num.eval(env),
            Root::Bool(bool) => f64::from(u8::from(bool.eval(env))),
        }
    }

    /// Evaluates the expression as a boolean (a number is true when neither 0 nor NaN).
    pub fn eval_bool(&self, env: &Env) -> bool {
        match &self.root {
            Root::Number(num) => {
                let value = num.eval(env);
                value != 0.0 && !value.is_nan()
            }
            Root::Bool(bool) => bool.eval(env),
        }
    }

    /// The indices (into the field list given to [`Expr::parse`]) of the fields the expression
    /// reads, ascending and without repetition.
    pub fn fields_used(&self) -> impl Iterator<Item = usize> + '_ {
        self.fields.iter().copied()
    }
}
