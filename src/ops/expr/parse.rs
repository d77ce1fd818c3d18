//! Parser: precedence climbing (Pratt) with type checking as nodes are built.

use super::*;

/// A parsed sub-expression: its typed value, its source span and the height of its tree.
pub(super) struct Operand {
    pub(super) value: Value,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) height: usize,
}

pub(super) enum Value {
    Num(Num),
    Bool(Bool),
    Str(Str),
}

impl Value {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Order(Cmp),
    Arith(Arith),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    pub(super) fn symbol(self) -> &'static str {
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
pub(super) const PREFIX_BP: u8 = 13;

/// Left and right binding powers of an infix operator (left < right: left-associative).
pub(super) fn infix(kind: &Tok) -> Option<(BinOp, u8, u8)> {
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

pub(super) fn is_function(name: &str) -> bool {
    FUNCTIONS.split(", ").any(|known| known == name)
}

pub(super) struct Parser<'s, 'f> {
    pub(super) src: &'s str,
    pub(super) tokens: Vec<Token>,
    pub(super) pos: usize,
    pub(super) fields: &'f [&'f str],
    /// Current recursion depth of `expr`; parentheses nest without building nodes, so this is
    /// limited separately from the tree height.
    pub(super) depth: usize,
    pub(super) used: Vec<usize>,
}

impl Parser<'_, '_> {
    pub(super) fn peek(&self) -> Token {
        // `lex` always ends the list with `End`, and `pos` never moves past it.
        self.tokens.get(self.pos).cloned().unwrap_or(Token {
            kind: Tok::End,
            offset: self.src.len(),
            len: 0,
        })
    }

    pub(super) fn bump(&mut self) -> Token {
        let token = self.peek();
        if token.kind != Tok::End {
            self.pos += 1;
        }
        token
    }

    pub(super) fn text(&self, token: &Token) -> &str {
        self.src
            .get(token.offset..token.offset + token.len)
            .unwrap_or("")
    }

    pub(super) fn describe(&self, token: Token) -> String {
        match token.kind {
            Tok::End => "the end of the expression".to_string(),
            Tok::Num(_) => format!("number `{}`", self.text(&token)),
            Tok::Str(_) => format!("string {}", self.text(&token)),
            Tok::Ident => format!("name `{}`", self.text(&token)),
            _ => format!("`{}`", self.text(&token)),
        }
    }

    pub(super) fn too_deep(start: usize, end: usize) -> ExprError {
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
    pub(super) fn expr(&mut self, min_bp: u8) -> Result<Operand, ExprError> {
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

    pub(super) fn prefix(&mut self) -> Result<Operand, ExprError> {
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

    pub(super) fn binary(op: BinOp, lhs: Operand, rhs: Operand) -> Result<Operand, ExprError> {
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
    pub(super) fn call(&mut self, name_token: &Token) -> Result<Operand, ExprError> {
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
pub(super) fn build_call(
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
pub(super) fn arity<const N: usize>(
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
pub(super) fn wrong_operand(symbol: &str, operand: &Operand, needs: &str) -> ExprError {
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
pub(super) fn numbers(symbol: &str, lhs: Operand, rhs: Operand) -> Result<[Num; 2], ExprError> {
    match (lhs.value, rhs.value) {
        (Value::Num(a), Value::Num(b)) => Ok([a, b]),
        (Value::Num(_), value) => Err(wrong_operand(symbol, &Operand { value, ..rhs }, "numbers")),
        (value, _) => Err(wrong_operand(symbol, &Operand { value, ..lhs }, "numbers")),
    }
}

pub(super) fn wrong_argument(name: &str, position: usize, arg: &Operand, needs: &str) -> ExprError {
    ExprError::new(
        arg.start,
        arg.end - arg.start,
        format!(
            "argument {position} of `{name}` must be {needs}, found {}",
            arg.value.type_name()
        ),
    )
}

pub(super) fn number(name: &str, position: usize, arg: Operand) -> Result<Num, ExprError> {
    match arg.value {
        Value::Num(num) => Ok(num),
        _ => Err(wrong_argument(name, position, &arg, "a number")),
    }
}

pub(super) fn boolean(name: &str, position: usize, arg: Operand) -> Result<Bool, ExprError> {
    match arg.value {
        Value::Bool(bool) => Ok(bool),
        _ => Err(wrong_argument(name, position, &arg, "a boolean")),
    }
}

pub(super) fn string(name: &str, position: usize, arg: Operand) -> Result<Str, ExprError> {
    match arg.value {
        Value::Str(text) => Ok(text),
        _ => Err(wrong_argument(name, position, &arg, "a string")),
    }
}
