//! Typed tree. Every binary node boxes its two children together (one allocation, adjacent in
//! memory). Constants are folded while building, so `-40` is a constant, not a negation.

use super::*;

#[derive(Debug, Clone)]
pub(super) enum Num {
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
pub(super) enum Bool {
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
pub(super) enum Str {
    Key,
    Lit(Box<str>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Func1 {
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
pub(super) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum StrTest {
    Eq,
    Ne,
    StartsWith,
    EndsWith,
    Contains,
}

/// The environment constants are folded in; they read no variable.
pub(super) const NO_ENV: Env<'static> = Env {
    values: &[],
    time: 0,
    key: "",
};

impl Num {
    pub(super) fn eval(&self, env: &Env) -> f64 {
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

    pub(super) fn is_const(&self) -> bool {
        matches!(self, Num::Const(_))
    }

    /// Whether every child is a constant (so the node can be folded).
    pub(super) fn children_const(&self) -> bool {
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

    pub(super) fn folded(self) -> Num {
        if self.children_const() {
            Num::Const(self.eval(&NO_ENV))
        } else {
            self
        }
    }
}

impl Cmp {
    pub(super) fn apply(self, a: f64, b: f64) -> bool {
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
    pub(super) fn swapped(self) -> Cmp {
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
    pub(super) fn compare(cmp: Cmp, a: Num, b: Num) -> Bool {
        match (a, b) {
            (Num::Field(index), Num::Const(constant)) => Bool::FieldCmp(cmp, index, constant),
            (Num::Const(constant), Num::Field(index)) => {
                Bool::FieldCmp(cmp.swapped(), index, constant)
            }
            (a, b) => Bool::Cmp(cmp, Box::new([a, b])).folded(),
        }
    }

    pub(super) fn eval(&self, env: &Env) -> bool {
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

    pub(super) fn is_const(&self) -> bool {
        matches!(self, Bool::Const(_))
    }

    pub(super) fn children_const(&self) -> bool {
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

    pub(super) fn folded(self) -> Bool {
        if self.children_const() {
            Bool::Const(self.eval(&NO_ENV))
        } else {
            self
        }
    }
}

impl Str {
    pub(super) fn get<'a>(&'a self, env: &Env<'a>) -> &'a str {
        match self {
            Str::Key => env.key,
            Str::Lit(text) => text,
        }
    }
}
