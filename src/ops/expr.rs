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

// ---------------------------------------------------------------------------------------------
// Typed tree. Every binary node boxes its two children together (one allocation, adjacent in
// memory). Constants are folded while building, so `-40` is a constant, not a negation.

#[derive(Debug, Clone)]
enum Num {
    Const(f64),
    Field(usize),
    Time,
    Neg(Box<Num>),
    Add(Box<[Num; 2]>),
    Sub(Box<[Num; 2]>),
    Mul(Box<[Num; 2]>),
    Div(Box<[Num; 2]>),
    Rem(Box<[Num; 2]>),
    Pow(Box<[Num; 2]>),
    Call1(Func1, Box<Num>),
    Min(Box<[Num; 2]>),
    Max(Box<[Num; 2]>),
    Clamp(Box<[Num; 3]>),
    If(Box<(Bool, Num, Num)>),
}

#[derive(Debug, Clone)]
enum Bool {
    Const(bool),
    Not(Box<Bool>),
    And(Box<[Bool; 2]>),
    Or(Box<[Bool; 2]>),
    Cmp(Cmp, Box<[Num; 2]>),
    /// A field compared with a constant (`temp > -40`), the usual shape of a filter: no box.
    FieldCmp(Cmp, usize, f64),
    Eq(Box<[Bool; 2]>),
    Ne(Box<[Bool; 2]>),
    Str(StrTest, Box<[Str; 2]>),
    If(Box<[Bool; 3]>),
}

#[derive(Debug, Clone, PartialEq)]
enum Str {
    Key,
    Lit(Box<str>),
}

#[derive(Debug, Clone, Copy)]
enum Func1 {
    Abs,
    Sqrt,
    Ln,
    Log10,
    Exp,
    Floor,
    Ceil,
    Round,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy)]
enum StrTest {
    Eq,
    Ne,
    StartsWith,
    EndsWith,
    Contains,
}

/// The environment constants are folded in; they read no variable.
const NO_ENV: Env<'static> = Env {
    values: &[],
    time: 0,
    key: "",
};

impl Num {
    fn eval(&self, env: &Env) -> f64 {
        match self {
            Num::Const(value) => *value,
            Num::Field(index) => env.values.get(*index).copied().unwrap_or(f64::NAN),
            // Exact for |time| < 2^53 ms.
            Num::Time => env.time as f64,
            Num::Neg(a) => -a.eval(env),
            Num::Add(ab) => ab[0].eval(env) + ab[1].eval(env),
            Num::Sub(ab) => ab[0].eval(env) - ab[1].eval(env),
            Num::Mul(ab) => ab[0].eval(env) * ab[1].eval(env),
            Num::Div(ab) => ab[0].eval(env) / ab[1].eval(env),
            Num::Rem(ab) => ab[0].eval(env) % ab[1].eval(env),
            Num::Pow(ab) => ab[0].eval(env).powf(ab[1].eval(env)),
            Num::Call1(func, a) => {
                let x = a.eval(env);
                match func {
                    Func1::Abs => x.abs(),
                    Func1::Sqrt => x.sqrt(),
                    Func1::Ln => x.ln(),
                    Func1::Log10 => x.log10(),
                    Func1::Exp => x.exp(),
                    Func1::Floor => x.floor(),
                    Func1::Ceil => x.ceil(),
                    Func1::Round => x.round(),
                }
            }
            Num::Min(ab) => ab[0].eval(env).min(ab[1].eval(env)),
            Num::Max(ab) => ab[0].eval(env).max(ab[1].eval(env)),
            Num::Clamp(args) => {
                let (x, lo, hi) = (args[0].eval(env), args[1].eval(env), args[2].eval(env));
                // Not `f64::clamp`: it panics when lo > hi or either bound is NaN.
                if x < lo {
                    lo
                } else if x > hi {
                    hi
                } else {
                    x
                }
            }
            Num::If(branches) => {
                let (cond, then, otherwise) = &**branches;
                if cond.eval(env) {
                    then.eval(env)
                } else {
                    otherwise.eval(env)
                }
            }
        }
    }

    fn is_const(&self) -> bool {
        matches!(self, Num::Const(_))
    }

    /// Whether every child is a constant (so the node can be folded).
    fn children_const(&self) -> bool {
        match self {
            Num::Const(_) | Num::Field(_) | Num::Time => false,
            Num::Neg(a) | Num::Call1(_, a) => a.is_const(),
            Num::Add(ab)
            | Num::Sub(ab)
            | Num::Mul(ab)
            | Num::Div(ab)
            | Num::Rem(ab)
            | Num::Pow(ab)
            | Num::Min(ab)
            | Num::Max(ab) => ab.iter().all(Num::is_const),
            Num::Clamp(args) => args.iter().all(Num::is_const),
            Num::If(branches) => {
                branches.0.is_const() && branches.1.is_const() && branches.2.is_const()
            }
        }
    }

    fn folded(self) -> Num {
        if self.children_const() {
            Num::Const(self.eval(&NO_ENV))
        } else {
            self
        }
    }
}

impl Cmp {
    fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }

    /// The comparison with its operands swapped: `a < b` is `b > a`.
    fn swapped(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Eq | Cmp::Ne => self,
        }
    }
}

impl Bool {
    /// `a cmp b`, folded, with the field-versus-constant shape stored unboxed.
    fn compare(cmp: Cmp, a: Num, b: Num) -> Bool {
        match (a, b) {
            (Num::Field(index), Num::Const(constant)) => Bool::FieldCmp(cmp, index, constant),
            (Num::Const(constant), Num::Field(index)) => {
                Bool::FieldCmp(cmp.swapped(), index, constant)
            }
            (a, b) => Bool::Cmp(cmp, Box::new([a, b])).folded(),
        }
    }

    fn eval(&self, env: &Env) -> bool {
        match self {
            Bool::Const(value) => *value,
            Bool::Not(a) => !a.eval(env),
            Bool::And(ab) => ab[0].eval(env) && ab[1].eval(env),
            Bool::Or(ab) => ab[0].eval(env) || ab[1].eval(env),
            Bool::Cmp(cmp, ab) => cmp.apply(ab[0].eval(env), ab[1].eval(env)),
            Bool::FieldCmp(cmp, index, constant) => {
                let value = env.values.get(*index).copied().unwrap_or(f64::NAN);
                cmp.apply(value, *constant)
            }
            Bool::Eq(ab) => ab[0].eval(env) == ab[1].eval(env),
            Bool::Ne(ab) => ab[0].eval(env) != ab[1].eval(env),
            Bool::Str(test, ab) => {
                let (a, b) = (ab[0].get(env), ab[1].get(env));
                match test {
                    StrTest::Eq => a == b,
                    StrTest::Ne => a != b,
                    StrTest::StartsWith => a.starts_with(b),
                    StrTest::EndsWith => a.ends_with(b),
                    StrTest::Contains => a.contains(b),
                }
            }
            Bool::If(branches) => {
                if branches[0].eval(env) {
                    branches[1].eval(env)
                } else {
                    branches[2].eval(env)
                }
            }
        }
    }

    fn is_const(&self) -> bool {
        matches!(self, Bool::Const(_))
    }

    fn children_const(&self) -> bool {
        match self {
            Bool::Const(_) | Bool::FieldCmp(..) => false,
            Bool::Not(a) => a.is_const(),
            Bool::And(ab) | Bool::Or(ab) | Bool::Eq(ab) | Bool::Ne(ab) => {
                ab.iter().all(Bool::is_const)
            }
            Bool::Cmp(_, ab) => ab.iter().all(Num::is_const),
            Bool::Str(_, ab) => ab.iter().all(|s| matches!(s, Str::Lit(_))),
            Bool::If(branches) => branches.iter().all(Bool::is_const),
        }
    }

    fn folded(self) -> Bool {
        if self.children_const() {
            Bool::Const(self.eval(&NO_ENV))
        } else {
            self
        }
    }
}

impl Str {
    fn get<'a>(&'a self, env: &Env<'a>) -> &'a str {
        match self {
            Str::Key => env.key,
            Str::Lit(text) => text,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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
struct Token {
    kind: Tok,
    offset: usize,
    len: usize,
}

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_ident_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.'
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
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
fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
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

fn lex_string(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
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

// ---------------------------------------------------------------------------------------------
// Parser: precedence climbing (Pratt) with type checking as nodes are built.

/// A parsed sub-expression: its typed value, its source span and the height of its tree.
struct Operand {
    value: Value,
    start: usize,
    end: usize,
    height: usize,
}

enum Value {
    Num(Num),
    Bool(Bool),
    Str(Str),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Order(Cmp),
    Arith(Arith),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq | BinOp::Order(Cmp::Eq) => "==",
            BinOp::Ne | BinOp::Order(Cmp::Ne) => "!=",
            BinOp::Order(Cmp::Lt) => "<",
            BinOp::Order(Cmp::Le) => "<=",
            BinOp::Order(Cmp::Gt) => ">",
            BinOp::Order(Cmp::Ge) => ">=",
            BinOp::Arith(Arith::Add) => "+",
            BinOp::Arith(Arith::Sub) => "-",
            BinOp::Arith(Arith::Mul) => "*",
            BinOp::Arith(Arith::Div) => "/",
            BinOp::Arith(Arith::Rem) => "%",
            BinOp::Arith(Arith::Pow) => "^",
        }
    }
}

/// Binding power of the prefix operators `-` and `!`: tighter than `*`, looser than `^`.
const PREFIX_BP: u8 = 13;

/// Left and right binding powers of an infix operator (left < right: left-associative).
fn infix(kind: &Tok) -> Option<(BinOp, u8, u8)> {
    Some(match kind {
        Tok::OrOr => (BinOp::Or, 1, 2),
        Tok::AndAnd => (BinOp::And, 3, 4),
        Tok::EqEq => (BinOp::Eq, 5, 6),
        Tok::Ne => (BinOp::Ne, 5, 6),
        Tok::Lt => (BinOp::Order(Cmp::Lt), 7, 8),
        Tok::Le => (BinOp::Order(Cmp::Le), 7, 8),
        Tok::Gt => (BinOp::Order(Cmp::Gt), 7, 8),
        Tok::Ge => (BinOp::Order(Cmp::Ge), 7, 8),
        Tok::Plus => (BinOp::Arith(Arith::Add), 9, 10),
        Tok::Minus => (BinOp::Arith(Arith::Sub), 9, 10),
        Tok::Star => (BinOp::Arith(Arith::Mul), 11, 12),
        Tok::Slash => (BinOp::Arith(Arith::Div), 11, 12),
        Tok::Percent => (BinOp::Arith(Arith::Rem), 11, 12),
        Tok::Caret => (BinOp::Arith(Arith::Pow), 16, 15),
        _ => return None,
    })
}

fn is_function(name: &str) -> bool {
    FUNCTIONS.split(", ").any(|known| known == name)
}

struct Parser<'s, 'f> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    fields: &'f [&'f str],
    /// Current recursion depth of `expr`; parentheses nest without building nodes, so this is
    /// limited separately from the tree height.
    depth: usize,
    used: Vec<usize>,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Token {
        // `lex` always ends the list with `End`, and `pos` never moves past it.
        self.tokens.get(self.pos).cloned().unwrap_or(Token {
            kind: Tok::End,
            offset: self.src.len(),
            len: 0,
        })
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if token.kind != Tok::End {
            self.pos += 1;
        }
        token
    }

    fn text(&self, token: &Token) -> &str {
        self.src
            .get(token.offset..token.offset + token.len)
            .unwrap_or("")
    }

    fn describe(&self, token: Token) -> String {
        match token.kind {
            Tok::End => "the end of the expression".to_string(),
            Tok::Num(_) => format!("number `{}`", self.text(&token)),
            Tok::Str(_) => format!("string {}", self.text(&token)),
            Tok::Ident => format!("name `{}`", self.text(&token)),
            _ => format!("`{}`", self.text(&token)),
        }
    }

    fn too_deep(start: usize, end: usize) -> ExprError {
        ExprError::new(
            start,
            end - start,
            format!(
                "expression nests deeper than {MAX_DEPTH} levels (each operator, parenthesis \
                 and function call adds one); split it into derived fields"
            ),
        )
    }

    /// Parses an expression whose operators bind at least as tightly as `min_bp`.
    fn expr(&mut self, min_bp: u8) -> Result<Operand, ExprError> {
        let here = self.peek();
        if self.depth >= MAX_DEPTH {
            return Err(Self::too_deep(here.offset, here.offset + here.len));
        }
        self.depth += 1;
        let mut lhs = self.prefix()?;
        loop {
            let token = self.peek();
            let Some((op, left_bp, right_bp)) = infix(&token.kind) else {
                break;
            };
            if left_bp < min_bp {
                break;
            }
            self.bump();
            let rhs = self.expr(right_bp)?;
            lhs = Self::binary(op, lhs, rhs)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Operand, ExprError> {
        let token = self.bump();
        let start = token.offset;
        let end = token.offset + token.len;
        let leaf = |value| Operand {
            value,
            start,
            end,
            height: 1,
        };
        match token.kind {
            Tok::Num(value) => Ok(leaf(Value::Num(Num::Const(value)))),
            Tok::Str(text) => Ok(leaf(Value::Str(Str::Lit(text.into_boxed_str())))),
            Tok::Ident => {
                if self.peek().kind == Tok::LParen {
                    return self.call(&token);
                }
                let var =
                    Var::resolve(self.text(&token), self.fields).map_err(|error| ExprError {
                        offset: start,
                        ..error
                    })?;
                Ok(leaf(match var {
                    Var::Field(index) => {
                        self.used.push(index);
                        Value::Num(Num::Field(index))
                    }
                    Var::Time => Value::Num(Num::Time),
                    Var::Key => Value::Str(Str::Key),
                }))
            }
            Tok::LParen => {
                let inner = self.expr(0)?;
                let close = self.peek();
                match close.kind {
                    Tok::RParen => {
                        self.bump();
                        Ok(Operand {
                            start,
                            end: close.offset + close.len,
                            ..inner
                        })
                    }
                    Tok::End => Err(ExprError::new(start, 1, "unclosed `(`")),
                    _ => Err(ExprError::new(
                        close.offset,
                        close.len,
                        format!(
                            "expected `)` or an operator, found {}",
                            self.describe(close)
                        ),
                    )),
                }
            }
            Tok::Minus | Tok::Bang => {
                let operand = self.expr(PREFIX_BP)?;
                let (op_start, op_end) = (operand.start, operand.end);
                let height = operand.height + 1;
                if height > MAX_DEPTH {
                    return Err(Self::too_deep(start, op_end));
                }
                let value = match (token.kind, operand.value) {
                    (Tok::Minus, Value::Num(num)) => Value::Num(Num::Neg(Box::new(num)).folded()),
                    (Tok::Bang, Value::Bool(bool)) => {
                        Value::Bool(Bool::Not(Box::new(bool)).folded())
                    }
                    (kind, other) => {
                        let (symbol, needs) = if kind == Tok::Minus {
                            ("-", "a number")
                        } else {
                            ("!", "a boolean")
                        };
                        return Err(ExprError::new(
                            op_start,
                            op_end - op_start,
                            format!(
                                "unary `{symbol}` needs {needs}, found {}",
                                other.type_name()
                            ),
                        ));
                    }
                };
                Ok(Operand {
                    value,
                    start,
                    end: op_end,
                    height,
                })
            }
            Tok::End => Err(ExprError::new(
                token.offset,
                0,
                "unexpected end of expression; expected a number, a field, a function call \
                 or `(`",
            )),
            _ => Err(ExprError::new(
                token.offset,
                token.len,
                format!(
                    "expected a number, a field, a function call or `(`, found {}",
                    self.describe(token.clone())
                ),
            )),
        }
    }

    fn binary(op: BinOp, lhs: Operand, rhs: Operand) -> Result<Operand, ExprError> {
        let (start, end) = (lhs.start, rhs.end);
        let height = lhs.height.max(rhs.height) + 1;
        if height > MAX_DEPTH {
            return Err(Self::too_deep(start, end));
        }
        let symbol = op.symbol();
        let value = match op {
            BinOp::And | BinOp::Or => match (lhs.value, rhs.value) {
                (Value::Bool(a), Value::Bool(b)) => {
                    let pair = Box::new([a, b]);
                    Value::Bool(
                        if op == BinOp::And {
                            Bool::And(pair)
                        } else {
                            Bool::Or(pair)
                        }
                        .folded(),
                    )
                }
                (Value::Bool(_), value) => {
                    return Err(wrong_operand(symbol, &Operand { value, ..rhs }, "booleans"));
                }
                (value, _) => {
                    return Err(wrong_operand(symbol, &Operand { value, ..lhs }, "booleans"));
                }
            },
            BinOp::Eq | BinOp::Ne => {
                let equal = op == BinOp::Eq;
                match (lhs.value, rhs.value) {
                    (Value::Num(a), Value::Num(b)) => {
                        let cmp = if equal { Cmp::Eq } else { Cmp::Ne };
                        Value::Bool(Bool::compare(cmp, a, b))
                    }
                    (Value::Bool(a), Value::Bool(b)) => {
                        let pair = Box::new([a, b]);
                        Value::Bool(
                            if equal {
                                Bool::Eq(pair)
                            } else {
                                Bool::Ne(pair)
                            }
                            .folded(),
                        )
                    }
                    (Value::Str(a), Value::Str(b)) => {
                        let test = if equal { StrTest::Eq } else { StrTest::Ne };
                        Value::Bool(Bool::Str(test, Box::new([a, b])).folded())
                    }
                    (a, b) => {
                        return Err(ExprError::new(
                            start,
                            end - start,
                            format!(
                                "`{symbol}` compares values of the same type, found {} and {}",
                                a.type_name(),
                                b.type_name()
                            ),
                        ));
                    }
                }
            }
            BinOp::Order(cmp) => {
                let pair = numbers(symbol, lhs, rhs)?;
                let [a, b] = pair;
                Value::Bool(Bool::compare(cmp, a, b))
            }
            BinOp::Arith(arith) => {
                let pair = Box::new(numbers(symbol, lhs, rhs)?);
                Value::Num(
                    match arith {
                        Arith::Add => Num::Add(pair),
                        Arith::Sub => Num::Sub(pair),
                        Arith::Mul => Num::Mul(pair),
                        Arith::Div => Num::Div(pair),
                        Arith::Rem => Num::Rem(pair),
                        Arith::Pow => Num::Pow(pair),
                    }
                    .folded(),
                )
            }
        };
        Ok(Operand {
            value,
            start,
            end,
            height,
        })
    }

    /// Parses `name(args…)`; the name token has been consumed and `(` is next.
    fn call(&mut self, name_token: &Token) -> Result<Operand, ExprError> {
        let name = self.text(name_token).to_string();
        let start = name_token.offset;
        if !is_function(&name) {
            return Err(ExprError::new(
                start,
                name_token.len,
                format!("unknown function `{name}`; known: {FUNCTIONS}"),
            ));
        }
        let open = self.bump();
        let mut args: Vec<Operand> = Vec::new();
        let end = if self.peek().kind == Tok::RParen {
            let close = self.bump();
            close.offset + close.len
        } else {
            loop {
                args.push(self.expr(0)?);
                let next = self.bump();
                match next.kind {
                    Tok::Comma => {}
                    Tok::RParen => break next.offset + next.len,
                    Tok::End => return Err(ExprError::new(open.offset, 1, "unclosed `(`")),
                    _ => {
                        return Err(ExprError::new(
                            next.offset,
                            next.len,
                            format!(
                                "expected `,` or `)` after an argument of `{name}`, found {}",
                                self.describe(next.clone())
                            ),
                        ));
                    }
                }
            }
        };
        let height = args.iter().map(|arg| arg.height).max().unwrap_or(0) + 1;
        if height > MAX_DEPTH {
            return Err(Self::too_deep(start, end));
        }
        let value = build_call(&name, args, start, end)?;
        Ok(Operand {
            value,
            start,
            end,
            height,
        })
    }
}

/// Builds the node for a call of the function `name` spanning `start..end`, checking the number
/// and types of its arguments.
fn build_call(
    name: &str,
    args: Vec<Operand>,
    start: usize,
    end: usize,
) -> Result<Value, ExprError> {
    let unary = match name {
        "abs" => Some(Func1::Abs),
        "sqrt" => Some(Func1::Sqrt),
        "ln" => Some(Func1::Ln),
        "log10" => Some(Func1::Log10),
        "exp" => Some(Func1::Exp),
        "floor" => Some(Func1::Floor),
        "ceil" => Some(Func1::Ceil),
        "round" => Some(Func1::Round),
        _ => None,
    };
    if let Some(func) = unary {
        let [x] = arity(name, args, start, end)?;
        let x = number(name, 1, x)?;
        return Ok(Value::Num(Num::Call1(func, Box::new(x)).folded()));
    }
    let value = match name {
        "min" | "max" | "pow" => {
            let [a, b] = arity(name, args, start, end)?;
            let pair = Box::new([number(name, 1, a)?, number(name, 2, b)?]);
            Value::Num(
                match name {
                    "min" => Num::Min(pair),
                    "max" => Num::Max(pair),
                    _ => Num::Pow(pair),
                }
                .folded(),
            )
        }
        "clamp" => {
            let [x, lo, hi] = arity(name, args, start, end)?;
            let args = [
                number(name, 1, x)?,
                number(name, 2, lo)?,
                number(name, 3, hi)?,
            ];
            Value::Num(Num::Clamp(Box::new(args)).folded())
        }
        "starts_with" | "ends_with" | "contains" => {
            let [a, b] = arity(name, args, start, end)?;
            let pair = Box::new([string(name, 1, a)?, string(name, 2, b)?]);
            let test = match name {
                "starts_with" => StrTest::StartsWith,
                "ends_with" => StrTest::EndsWith,
                _ => StrTest::Contains,
            };
            Value::Bool(Bool::Str(test, pair).folded())
        }
        "if" => {
            let [cond, then, otherwise] = arity(name, args, start, end)?;
            let (branches_start, branches_end) = (then.start, otherwise.end);
            let cond = boolean(name, 1, cond)?;
            match (then.value, otherwise.value) {
                (Value::Num(a), Value::Num(b)) => {
                    Value::Num(Num::If(Box::new((cond, a, b))).folded())
                }
                (Value::Bool(a), Value::Bool(b)) => {
                    Value::Bool(Bool::If(Box::new([cond, a, b])).folded())
                }
                (a, b) => {
                    return Err(ExprError::new(
                        branches_start,
                        branches_end - branches_start,
                        format!(
                            "the branches of `if` must both be numbers or both be booleans, \
                             found {} and {}",
                            a.type_name(),
                            b.type_name()
                        ),
                    ));
                }
            }
        }
        _ => {
            return Err(ExprError::new(
                start,
                name.len(),
                format!("unknown function `{name}`; known: {FUNCTIONS}"),
            ));
        }
    };
    Ok(value)
}

/// The arguments of a call as an array of the function's arity.
fn arity<const N: usize>(
    name: &str,
    args: Vec<Operand>,
    start: usize,
    end: usize,
) -> Result<[Operand; N], ExprError> {
    let got = args.len();
    args.try_into().map_err(|_| {
        let plural = if N == 1 { "" } else { "s" };
        ExprError::new(
            start,
            end - start,
            format!("`{name}` takes {N} argument{plural}, got {got}"),
        )
    })
}

/// The error for an operand of `symbol` that is not of the type it `needs`.
fn wrong_operand(symbol: &str, operand: &Operand, needs: &str) -> ExprError {
    ExprError::new(
        operand.start,
        operand.end - operand.start,
        format!(
            "`{symbol}` needs {needs}, found {}",
            operand.value.type_name()
        ),
    )
}

/// Both operands of an arithmetic or ordering operator, which must be numbers.
fn numbers(symbol: &str, lhs: Operand, rhs: Operand) -> Result<[Num; 2], ExprError> {
    match (lhs.value, rhs.value) {
        (Value::Num(a), Value::Num(b)) => Ok([a, b]),
        (Value::Num(_), value) => Err(wrong_operand(symbol, &Operand { value, ..rhs }, "numbers")),
        (value, _) => Err(wrong_operand(symbol, &Operand { value, ..lhs }, "numbers")),
    }
}

fn wrong_argument(name: &str, position: usize, arg: &Operand, needs: &str) -> ExprError {
    ExprError::new(
        arg.start,
        arg.end - arg.start,
        format!(
            "argument {position} of `{name}` must be {needs}, found {}",
            arg.value.type_name()
        ),
    )
}

fn number(name: &str, position: usize, arg: Operand) -> Result<Num, ExprError> {
    match arg.value {
        Value::Num(num) => Ok(num),
        _ => Err(wrong_argument(name, position, &arg, "a number")),
    }
}

fn boolean(name: &str, position: usize, arg: Operand) -> Result<Bool, ExprError> {
    match arg.value {
        Value::Bool(bool) => Ok(bool),
        _ => Err(wrong_argument(name, position, &arg, "a boolean")),
    }
}

fn string(name: &str, position: usize, arg: Operand) -> Result<Str, ExprError> {
    match arg.value {
        Value::Str(text) => Ok(text),
        _ => Err(wrong_argument(name, position, &arg, "a string")),
    }
}
