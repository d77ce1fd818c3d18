//! Property tests of the operator grammars and of the window state machine: expressions
//! (hostile text, token soup, deep nesting, and arithmetic rendered from a tree, which must
//! evaluate as the tree does) and window specs with readings at any time, `i64::MIN` to
//! `i64::MAX`. Nothing panics or overflows the stack; the watermark never goes back.
//!
//! Run with many cases by `scripts/fuzz.sh`; `cargo test` runs a few.

use proptest::prelude::*;

use crate::fuzz_support::{config, hostile_text, number_text};
use crate::ops::expr::{Env, Expr, ExprType};
use crate::ops::window::{AggFn, AggSpec, WindowSpec};

const FIELDS: &[&str] = &["temp", "humidity", "x", "time_s"];

/// Tokens of the expression language, and near misses of them.
fn token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "temp",
        "humidity",
        "x",
        "time_s",
        "time",
        "key",
        "nope",
        "(",
        ")",
        ",",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "!",
        "&&",
        "||",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "=",
        "&",
        "|",
        "abs",
        "sqrt",
        "ln",
        "log10",
        "exp",
        "floor",
        "ceil",
        "round",
        "min",
        "max",
        "pow",
        "clamp",
        "if",
        "starts_with",
        "ends_with",
        "contains",
        "\"s1\"",
        "'hall-'",
        "\"unclosed",
        "'\\",
        "\"\\\"\"",
        ".",
        "e",
        "1e",
        "..",
        "true",
    ])
    .prop_map(str::to_owned);
    prop_oneof![4 => fixed, 2 => number_text(), 1 => hostile_text(4)]
}

/// Evaluates `expr` the way its type says, over values that include NaN and ±∞.
fn evaluate(expr: &Expr, values: &[f64], time: i64, key: &str) {
    let env = Env { values, time, key };
    match expr.ty() {
        ExprType::Number => {
            let _ = expr.eval_number(&env);
        }
        ExprType::Bool => {
            let _ = expr.eval_bool(&env);
        }
    }
}

/// An arithmetic tree over finite constants and the fields `temp` and `x`.
#[derive(Debug, Clone)]
enum Tree {
    Const(f64),
    Temp,
    X,
    Neg(Box<Tree>),
    Bin(char, Box<Tree>, Box<Tree>),
}

impl Tree {
    /// Fully parenthesized text, so the parser's precedence does not matter.
    fn render(&self) -> String {
        match self {
            Tree::Const(c) => format!("({c:?})"),
            Tree::Temp => "temp".into(),
            Tree::X => "x".into(),
            Tree::Neg(t) => format!("(-{})", t.render()),
            Tree::Bin(op, a, b) => format!("({} {op} {})", a.render(), b.render()),
        }
    }

    /// The value IEEE-754 gives, the reference the compiled expression must match.
    fn eval(&self, temp: f64, x: f64) -> f64 {
        match self {
            Tree::Const(c) => *c,
            Tree::Temp => temp,
            Tree::X => x,
            Tree::Neg(t) => -t.eval(temp, x),
            Tree::Bin(op, a, b) => {
                let (a, b) = (a.eval(temp, x), b.eval(temp, x));
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' => a / b,
                    _ => a % b,
                }
            }
        }
    }
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        prop_oneof![
            any::<f64>().prop_filter("finite", |c| c.is_finite()),
            prop::sample::select(vec![0.0, 1.0, 0.5, 1e308, 5e-324, 3.0, 60_000.0]),
        ]
        .prop_map(Tree::Const),
        Just(Tree::Temp),
        Just(Tree::X),
    ];
    leaf.prop_recursive(6, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Tree::Neg(Box::new(t))),
            (
                prop::sample::select(vec!['+', '-', '*', '/', '%']),
                inner.clone(),
                inner
            )
                .prop_map(|(op, a, b)| Tree::Bin(op, Box::new(a), Box::new(b))),
        ]
    })
}

/// A value a reading may carry into an expression (NaN and ±∞ included: a derive may make them).
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0]),
    ]
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn fuzz_expression_text_never_panics(
        src in hostile_text(80),
        values in prop::collection::vec(value(), 0..5),
        time in any::<i64>(),
    ) {
        if let Ok(expr) = Expr::parse(&src, FIELDS) {
            evaluate(&expr, &values, time, "k");
        }
    }

    #[test]
    fn fuzz_expression_tokens_never_panic(
        tokens in prop::collection::vec(token(), 0..30),
        values in prop::collection::vec(value(), 0..5),
        time in any::<i64>(),
        key in hostile_text(6),
    ) {
        let src = tokens.join(" ");
        match Expr::parse(&src, FIELDS) {
            Ok(expr) => evaluate(&expr, &values, time, &key),
            Err(error) => {
                // The error points at a token inside the source, which the loader underlines.
                let end = error.offset.checked_add(error.len);
                prop_assert!(
                    end.is_some_and(|end| end <= src.len() && src.is_char_boundary(error.offset) && src.is_char_boundary(end)),
                    "{:?}: {:?}", src, error
                );
                prop_assert!(!error.message.is_empty());
            }
        }
    }

    #[test]
    fn fuzz_arithmetic_rendered_from_a_tree_evaluates_as_the_tree(
        tree in tree(),
        temp in value(),
        x in value(),
    ) {
        let src = tree.render();
        let expr = Expr::parse(&src, FIELDS).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        prop_assert_eq!(expr.ty(), ExprType::Number);
        let values = [temp, 0.0, x, 0.0];
        let got = expr.eval_number(&Env { values: &values, time: 0, key: "k" });
        let want = tree.eval(temp, x);
        prop_assert!(same(got, want), "{} with temp={:?} x={:?}: {:?}, expected {:?}", src, temp, x, got, want);
    }

    #[test]
    fn fuzz_window_specs_and_times_never_panic_and_the_watermark_never_goes_back(
        size_ms in prop_oneof![1i64..100_000, any::<i64>()],
        windows in prop_oneof![Just(1i64), 1i64..8, any::<i64>()],
        lateness_ms in prop_oneof![Just(0i64), 0i64..100_000, any::<i64>()],
        readings in prop::collection::vec(
            (
                prop_oneof![
                    3 => -1_000_000i64..1_000_000,
                    1 => any::<i64>(),
                    1 => prop::sample::select(vec![i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1, 253_402_300_799_999]),
                ],
                value(),
            ),
            0..40,
        ),
    ) {
        let slide_ms = if windows > 0 { size_ms.checked_div(windows).unwrap_or(0) } else { windows };
        let aggs = [AggFn::Mean, AggFn::Min, AggFn::Max, AggFn::Sum, AggFn::Count, AggFn::Std, AggFn::First, AggFn::Last, AggFn::Rate]
            .into_iter()
            .enumerate()
            .map(|(i, func)| AggSpec { input: i % 3, func })
            .collect();
        let Ok(spec) = WindowSpec::new(size_ms, slide_ms, lateness_ms, aggs) else {
            return Ok(());
        };
        let mut st = spec.new_state();
        let mut last_end = i64::MIN;
        for (time_ms, v) in readings {
            let before = st.watermark_ms();
            let mut problem = None;
            let _ = spec.push(&mut st, time_ms, &[v, -v, v * 2.0], |start, end, _| {
                if start >= end || end < last_end {
                    problem = Some(format!("window [{start}, {end}) after one ending at {last_end}"));
                }
                last_end = end;
            });
            if let Some(problem) = problem {
                return Err(TestCaseError::fail(problem));
            }
            prop_assert!(st.watermark_ms() >= before, "watermark went back from {} to {}", before, st.watermark_ms());
            prop_assert!(last_end == i64::MIN || last_end <= st.watermark_ms());
        }
    }
}

/// Nesting far past [`crate::ops::expr::MAX_DEPTH`] is an error naming the limit, not a
/// stack overflow, whatever builds the nesting.
#[test]
fn fuzz_deeply_nested_expressions_are_rejected_not_overflowing_the_stack() {
    for depth in [1_000, 100_000] {
        let cases = [
            format!("{}1{}", "(".repeat(depth), ")".repeat(depth)),
            format!("{}temp", "-".repeat(depth)),
            format!("{}(temp > 1)", "!".repeat(depth)),
            format!("{}2", "2^".repeat(depth)),
            format!("{}temp", "temp + ".repeat(depth)),
            format!("{}1{}", "abs(".repeat(depth), ")".repeat(depth)),
            format!("{}1{}", "min(1, ".repeat(depth), ")".repeat(depth)),
            "(".repeat(depth),
        ];
        for src in &cases {
            match Expr::parse(src, FIELDS) {
                Ok(_) => panic!("{} bytes of nesting were accepted", src.len()),
                Err(error) => assert!(
                    error.to_string().contains("deeper") || src.ends_with('('),
                    "{}…: {error}",
                    &src[..20]
                ),
            }
        }
    }
}
