use super::Rng;
use crate::ops::expr::{Env, Expr, ExprError, ExprType, Var, MAX_DEPTH};

const FIELDS: &[&str] = &["temp", "humidity", "x", "y"];

fn env(values: &[f64]) -> Env<'_> {
    Env {
        values,
        time: 120_000,
        key: "hall-s1",
    }
}

fn parse(src: &str) -> Expr {
    match Expr::parse(src, FIELDS) {
        Ok(expr) => expr,
        Err(error) => panic!("{src:?} should parse, got {error:?}"),
    }
}

fn number(src: &str, values: &[f64]) -> f64 {
    let expr = parse(src);
    assert_eq!(expr.ty(), ExprType::Number, "{src}");
    expr.eval_number(&env(values))
}

fn boolean(src: &str, values: &[f64]) -> bool {
    let expr = parse(src);
    assert_eq!(expr.ty(), ExprType::Bool, "{src}");
    expr.eval_bool(&env(values))
}

fn error(src: &str) -> ExprError {
    match Expr::parse(src, FIELDS) {
        Ok(expr) => panic!("{src:?} should be rejected, parsed as {expr:?}"),
        Err(error) => error,
    }
}

/// Asserts the error's position and that its message contains `needle`.
fn assert_error(src: &str, offset: usize, len: usize, needle: &str) {
    let error = error(src);
    assert_eq!(
        (error.offset, error.len),
        (offset, len),
        "{src:?}: {}",
        error.message
    );
    assert!(
        error.message.contains(needle),
        "{src:?}: {:?} does not contain {needle:?}",
        error.message
    );
    assert_eq!(error.to_string(), error.message);
}

#[test]
fn precedence_and_associativity_follow_c_with_math_power() {
    let table: &[(&str, f64)] = &[
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("100 / 10 / 5", 2.0),
        ("7 % 4 * 2", 6.0),
        ("2 * 3 % 4", 2.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("(2 ^ 3) ^ 2", 64.0),
        ("-2 ^ 2", -4.0),
        ("(-2) ^ 2", 4.0),
        ("2 ^ -1", 0.5),
        ("-2 * 3", -6.0),
        ("1 - -1", 2.0),
        ("--3", 3.0),
        ("2 * 3 ^ 2", 18.0),
        ("-7 % 3", -1.0),
        ("1e3 + .5", 1000.5),
        ("2.5E-1 + 1.", 1.25),
        ("1.5e+1", 15.0),
    ];
    for &(src, expected) in table {
        assert_eq!(number(src, &[]), expected, "{src}");
    }
    // The same shapes over fields, so the folded and the evaluated trees agree.
    let values = [0.0, 0.0, 2.0, 3.0];
    let table: &[(&str, f64)] = &[
        ("x + y * x", 8.0),
        ("y - x - x", -1.0),
        ("x ^ y ^ x", 512.0),
        ("-x ^ x", -4.0),
        ("(-x) ^ x", 4.0),
        ("y % x * y", 3.0),
        ("-y * x", -6.0),
    ];
    for &(src, expected) in table {
        assert_eq!(number(src, &values), expected, "{src}");
    }
    let table: &[(&str, bool)] = &[
        // `||` is looser than `&&`: true || (false && false).
        ("2 > 1 || 1 > 2 && 1 > 2", true),
        ("1 > 2 && 1 > 0 || 2 > 1", true),
        // `==` is looser than `<`.
        ("1 < 2 == 2 < 3", true),
        ("1 + 1 == 2 && 3 > 2", true),
        ("!(1 > 2) && 2 > 1", true),
        ("!(2 > 1) || 1 >= 1", true),
        ("1 <= 1 && !(1 < 1) && 2 >= 2 && 1 != 2", true),
        ("x < y == y < x", false),
    ];
    for &(src, expected) in table {
        assert_eq!(boolean(src, &values), expected, "{src}");
    }
}

#[test]
fn functions_compute_their_documented_values() {
    let table: &[(&str, f64)] = &[
        ("abs(-3)", 3.0),
        ("sqrt(16)", 4.0),
        ("ln(exp(2))", 2.0),
        ("log10(1000)", 3.0),
        ("floor(-1.5)", -2.0),
        ("ceil(-1.5)", -1.0),
        ("round(2.5)", 3.0),
        ("round(-2.5)", -3.0),
        ("min(3, 1)", 1.0),
        ("max(3, 1)", 3.0),
        ("pow(2, 10)", 1024.0),
        ("clamp(5, 0, 3)", 3.0),
        ("clamp(-1, 0, 3)", 0.0),
        ("clamp(2, 0, 3)", 2.0),
        ("if(1 < 2, 10, 20)", 10.0),
        ("if(1 > 2, 10, 20)", 20.0),
        ("min(x, y) + max(x, y) * 10", 32.0),
        ("clamp(y, x, 2.5)", 2.5),
        ("if(x > y, x, y)", 3.0),
    ];
    for &(src, expected) in table {
        assert_eq!(number(src, &[0.0, 0.0, 2.0, 3.0]), expected, "{src}");
    }
    assert!(boolean("if(x < y, x > 1, x < 1)", &[0.0, 0.0, 2.0, 3.0]));
}

#[test]
fn user_examples_evaluate() {
    let filter = parse("temp > -40 && temp < 125");
    for (temp, pass) in [
        (21.5, true),
        (-40.0, false),
        (-39.9, true),
        (125.0, false),
        (f64::NAN, false),
    ] {
        assert_eq!(filter.eval_bool(&env(&[temp])), pass, "temp = {temp}");
    }
    assert_eq!(number("temp - (100 - humidity) / 5", &[20.0, 60.0]), 12.0);
    let minute = parse("key != \"s7\" && time % 60000 == 0");
    let at = |key, time| {
        minute.eval_bool(&Env {
            values: &[],
            time,
            key,
        })
    };
    assert!(at("s1", 120_000));
    assert!(!at("s1", 120_001));
    assert!(!at("s7", 120_000));
    assert!(at("s1", -60_000), "negative event times work");
    assert!(at("s1", 0));
}

#[test]
fn key_supports_equality_and_substring_tests() {
    let cases: &[(&str, bool)] = &[
        ("key == \"hall-s1\"", true),
        ("\"hall-s1\" == key", true),
        ("key == 'hall-s1'", true),
        ("key != \"hall-s1\"", false),
        ("key == \"hall-s2\"", false),
        ("starts_with(key, \"hall-\")", true),
        ("starts_with(key, \"s1\")", false),
        ("ends_with(key, \"s1\")", true),
        ("contains(key, \"ll-s\")", true),
        ("contains(key, \"x\")", false),
        ("contains(\"a-hall-s1-b\", key)", true),
        ("key == key", true),
        ("\"a\\\"b\" == 'a\"b'", true),
        ("'it\\'s' == \"it's\"", true),
        ("\"back\\\\slash\" != key", true),
        ("key == \"\" || starts_with(key, \"\")", true),
        ("key == \"hallé\"", false),
    ];
    for &(src, expected) in cases {
        assert_eq!(boolean(src, &[]), expected, "{src}");
    }
}

#[test]
fn nan_compares_false_except_not_equal() {
    let nan = [f64::NAN];
    for src in ["temp == temp", "temp < 1", "temp >= 1", "temp > -1e300"] {
        assert!(!boolean(src, &nan), "{src}");
    }
    assert!(boolean("temp != temp", &nan));
    assert!(
        boolean("!(temp > 1)", &nan),
        "negating a NaN comparison is true"
    );
    assert!(number("0 / 0", &[]).is_nan());
    assert!(number("sqrt(-1)", &[]).is_nan());
    assert_eq!(number("1 / 0", &[]), f64::INFINITY);
    assert_eq!(number("min(temp, 3)", &nan), 3.0, "min ignores NaN");
    assert!(number("clamp(temp, 0, 1)", &nan).is_nan());
    assert_eq!(number("clamp(5, 3, 1)", &[]), 1.0, "lo > hi does not panic");
}

#[test]
fn numbers_and_booleans_convert_at_the_root() {
    let value = parse("temp");
    assert_eq!(value.ty(), ExprType::Number);
    assert!(value.eval_bool(&env(&[2.0])));
    assert!(value.eval_bool(&env(&[-0.5])));
    assert!(!value.eval_bool(&env(&[0.0])));
    assert!(!value.eval_bool(&env(&[f64::NAN])));
    let test = parse("temp > 1");
    assert_eq!(test.ty(), ExprType::Bool);
    assert_eq!(test.eval_number(&env(&[2.0])), 1.0);
    assert_eq!(test.eval_number(&env(&[0.0])), 0.0);
}

#[test]
fn missing_field_reads_as_nan() {
    let expr = parse("humidity");
    assert!(expr.eval_number(&env(&[1.0])).is_nan());
    assert!(!parse("humidity > 0").eval_bool(&env(&[])));
}

#[test]
fn fields_used_lists_each_dependency_once_in_order() {
    let used: Vec<usize> = parse("y + temp * y - if(x > 0, y, 1)")
        .fields_used()
        .collect();
    assert_eq!(used, [0, 2, 3]);
    assert_eq!(
        parse("time % 2 == 0 && key == 'a'").fields_used().count(),
        0
    );
}

#[test]
fn names_resolve_to_fields_and_builtins() {
    assert_eq!(Var::resolve("x", FIELDS), Ok(Var::Field(2)));
    assert_eq!(Var::resolve("time", FIELDS), Ok(Var::Time));
    assert_eq!(Var::resolve("key", FIELDS), Ok(Var::Key));
    let unknown = Var::resolve("nope", FIELDS).err();
    assert_eq!(
        unknown.map(|e| (e.offset, e.len, e.message)),
        Some((
            0,
            4,
            "unknown field `nope`; known: temp, humidity, x, y, time, key".to_string()
        ))
    );
    let ambiguous = Var::resolve("time", &["time"]).err().map(|e| e.message);
    assert!(ambiguous.is_some_and(|m| m.contains("both a field")));
    assert_eq!(Var::resolve("a.b", &["a.b"]), Ok(Var::Field(0)));
}

#[test]
fn field_named_like_a_builtin_is_ambiguous_only_where_used() {
    let fields = ["time", "v"];
    let error = Expr::parse("v > 1 && time > 0", &fields).err();
    assert_eq!(error.as_ref().map(|e| (e.offset, e.len)), Some((9, 4)));
    assert!(error.is_some_and(|e| e.message.contains("rename the field")));
    assert!(Expr::parse("v > 1", &fields).is_ok());
}

#[test]
fn syntax_errors_point_at_the_offending_token() {
    assert_error("", 0, 0, "empty expression");
    assert_error("   ", 0, 3, "empty expression");
    assert_error("temp >", 6, 0, "unexpected end of expression");
    assert_error("(temp > 1", 0, 1, "unclosed `(`");
    assert_error("temp > 1)", 8, 1, "unmatched `)`");
    assert_error("min(1, 2", 3, 1, "unclosed `(`");
    assert_error(
        "(1 2)",
        3,
        1,
        "expected `)` or an operator, found number `2`",
    );
    assert_error(
        "min(1 2)",
        6,
        1,
        "expected `,` or `)` after an argument of `min`",
    );
    assert_error(
        "temp 1",
        5,
        1,
        "expected an operator or the end of the expression, found number `1`",
    );
    assert_error(
        "1 +* 2",
        3,
        1,
        "expected a number, a field, a function call or `(`",
    );
    assert_error(",", 0, 1, "found `,`");
    assert_error("temp = 1", 5, 1, "compare with `==`");
    assert_error("temp > 1 & x > 1", 9, 1, "use `&&`");
    assert_error("temp > 1 | x > 1", 9, 1, "use `||`");
    assert_error("temp # 1", 5, 1, "unexpected character `#`");
    assert_error("temp > 1é", 8, 2, "unexpected character `é`");
    assert_error("1e", 0, 2, "invalid number `1e`");
    assert_error("x + 1.2.3", 4, 5, "invalid number `1.2.3`");
    assert_error("3x", 0, 2, "invalid number `3x`");
    assert_error("1e999", 0, 5, "too large");
    assert_error("key == \"s1", 7, 3, "unterminated string");
    assert_error("key == \"a\\nb\"", 9, 2, "unknown escape");
}

#[test]
fn name_errors_list_what_is_known() {
    assert_error(
        "humid > 3",
        0,
        5,
        "unknown field `humid`; known: temp, humidity, x, y, time, key",
    );
    assert_error(
        "1 + abs",
        4,
        3,
        "`abs` is a function, call it as `abs(...)`",
    );
    assert_error(
        "x > foo(1)",
        4,
        3,
        "unknown function `foo`; known: abs, sqrt, ln, log10, exp, floor, ceil, round, min, \
         max, pow, clamp, if, starts_with, ends_with, contains",
    );
}

#[test]
fn wrong_arity_is_reported_on_the_call() {
    assert_error("x + min(1)", 4, 6, "`min` takes 2 arguments, got 1");
    assert_error("abs()", 0, 5, "`abs` takes 1 argument, got 0");
    assert_error("clamp(1, 2)", 0, 11, "`clamp` takes 3 arguments, got 2");
    assert_error("if(x > 1, 1, 2, 3)", 0, 18, "`if` takes 3 arguments, got 4");
}

#[test]
fn type_errors_point_at_the_operand() {
    assert_error("temp && 1", 0, 4, "`&&` needs booleans, found a number");
    assert_error(
        "temp > 1 && 2",
        12,
        1,
        "`&&` needs booleans, found a number",
    );
    assert_error("x > 1 || key", 9, 3, "`||` needs booleans, found a string");
    assert_error("key + 1", 0, 3, "`+` needs numbers, found a string");
    assert_error("1 * (x > 1)", 4, 7, "`*` needs numbers, found a boolean");
    assert_error("key < \"a\"", 0, 3, "`<` needs numbers, found a string");
    assert_error(
        "key == 1",
        0,
        8,
        "`==` compares values of the same type, found a string and a number",
    );
    assert_error(
        "x > 1 != 2",
        0,
        10,
        "`!=` compares values of the same type, found a boolean and a number",
    );
    assert_error("1 < x < 3", 0, 5, "`<` needs numbers, found a boolean");
    assert_error("-key", 1, 3, "unary `-` needs a number, found a string");
    assert_error("!temp", 1, 4, "unary `!` needs a boolean, found a number");
    assert_error("x + !1", 5, 1, "unary `!` needs a boolean");
    assert_error("key", 0, 3, "the expression is a string");
    assert_error("(\"a\")", 0, 5, "the expression is a string");
    assert_error(
        "if(temp, 1, 2)",
        3,
        4,
        "argument 1 of `if` must be a boolean",
    );
    assert_error(
        "if(x > 1, 1, x > 2)",
        10,
        8,
        "the branches of `if` must both be numbers or both be booleans",
    );
    assert_error("if(x > 1, key, key) == 'a'", 10, 8, "branches of `if`");
    assert_error(
        "starts_with(key, 1)",
        17,
        1,
        "argument 2 of `starts_with` must be a string",
    );
    assert_error("sqrt(key)", 5, 3, "argument 1 of `sqrt` must be a number");
    assert_error(
        "max(1, x > 1)",
        7,
        5,
        "argument 2 of `max` must be a number",
    );
}

#[test]
fn nesting_beyond_the_limit_is_rejected_without_overflowing() {
    let inside = MAX_DEPTH - 2;
    let ok = format!("{}x{}", "(".repeat(inside), ")".repeat(inside));
    assert_eq!(number(&ok, &[0.0, 0.0, 7.0]), 7.0);
    let hostile = [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{}1", "-".repeat(100_000)),
        format!("{}x", "!".repeat(100_000)),
        format!("1{}", "+x".repeat(100_000)),
        format!("{}2", "2^".repeat(100_000)),
        format!("{}1{}", "abs(".repeat(100_000), ")".repeat(100_000)),
        format!("x > 1{}", " == (1 > 0)".repeat(100_000)),
        "(".repeat(1_000_000),
    ];
    for src in &hostile {
        let error = error(src);
        assert!(
            error.message.contains("nests deeper than 64 levels"),
            "{}…: {}",
            &src[..20],
            error.message
        );
        assert!(error.offset + error.len <= src.len());
    }
    // Wide but shallow is fine: a balanced sum of 4096 terms is 13 levels deep.
    let mut wide = "x".to_string();
    for _ in 0..12 {
        wide = format!("({wide} + {wide})");
    }
    assert_eq!(number(&wide, &[0.0, 0.0, 1.0]), 4096.0);
}

#[test]
fn random_text_never_panics() {
    let pieces = [
        "temp",
        "key",
        "time",
        "x",
        "(",
        ")",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "!",
        "<",
        "<=",
        ">",
        ">=",
        "==",
        "!=",
        "&&",
        "||",
        "1",
        "2.5",
        ".5",
        "1e3",
        "0",
        "\"s1\"",
        "'a'",
        ",",
        "abs",
        "min",
        "if",
        "clamp",
        "starts_with",
        "sqrt",
        " ",
        "=",
        "&",
        "é",
        "\"",
        "\\",
        "1e",
        "..",
    ];
    let mut rng = Rng::new(7);
    let mut parsed = 0;
    for _ in 0..50_000 {
        let len = 1 + rng.below(12);
        let src: String = (0..len)
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(if rng.below(2) == 0 { " " } else { "" });
        match Expr::parse(&src, FIELDS) {
            Ok(expr) => {
                parsed += 1;
                for values in [&[1.0, 2.0, -3.0, 0.0][..], &[f64::NAN], &[]] {
                    let env = Env {
                        values,
                        time: -5,
                        key: "s1",
                    };
                    let (number, truth) = (expr.eval_number(&env), expr.eval_bool(&env));
                    if expr.ty() == ExprType::Bool {
                        assert_eq!(number, f64::from(u8::from(truth)), "{src}");
                    }
                }
            }
            Err(error) => {
                assert!(error.offset + error.len <= src.len(), "{src:?}: {error:?}");
                assert!(src.is_char_boundary(error.offset), "{src:?}: {error:?}");
                assert!(!error.message.is_empty());
            }
        }
    }
    assert!(
        parsed > 500,
        "the generator should produce valid expressions too ({parsed})"
    );
}
