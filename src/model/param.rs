//! The accepted values of the models' numeric parameters, each stated once: the model's
//! `validate` checks its parameters with them, and the config loader reads each key with the
//! same range and reports a value outside it at the key's span, with the same words.

use std::fmt;

use super::ModelError;

/// The accepted values of one numeric parameter: its key, what it accepts in words, and the
/// test.
#[derive(Clone, Copy)]
pub struct Range {
    /// The parameter's key, as written in a config file.
    pub key: &'static str,
    /// What it accepts, worded to follow "must be" ("greater than 0 and at most 10").
    pub expected: &'static str,
    accepts: fn(f64) -> bool,
}

impl Range {
    /// The range of parameter `key`: the values `accepts` is true for, `expected` in words.
    pub const fn new(key: &'static str, expected: &'static str, accepts: fn(f64) -> bool) -> Self {
        Self {
            key,
            expected,
            accepts,
        }
    }

    /// Whether `value` is accepted.
    pub fn accepts(&self, value: f64) -> bool {
        (self.accepts)(value)
    }

    /// `value` checked against the range.
    ///
    /// # Errors
    /// [`ParamError`] naming the key, the value and the range.
    pub fn check(&self, value: f64) -> Result<(), ParamError> {
        if self.accepts(value) {
            Ok(())
        } else {
            Err(ParamError {
                key: self.key,
                value,
                expected: self.expected.into(),
            })
        }
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.key, self.expected)
    }
}

/// A parameter outside its [`Range`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} must be {expected} (got {value})")]
pub struct ParamError {
    /// The parameter's key.
    pub key: &'static str,
    /// The value given.
    pub value: f64,
    /// What the key accepts, in words.
    pub expected: String,
}

/// The accepted values of one integer parameter: its key and its bounds (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    /// The parameter's key, as written in a config file.
    pub key: &'static str,
    /// The smallest value accepted.
    pub min: i64,
    /// The largest value accepted (`i64::MAX`: no upper bound).
    pub max: i64,
}

impl IntRange {
    /// The range `min..=max` of parameter `key`.
    pub const fn new(key: &'static str, min: i64, max: i64) -> Self {
        Self { key, min, max }
    }

    /// Whether `value` is accepted.
    pub fn accepts(&self, value: i64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// `value` (a count or a size) checked against the range.
    ///
    /// # Errors
    /// [`ParamError`] naming the key, the value and the range.
    pub fn check(&self, value: impl TryInto<i64>) -> Result<(), ParamError> {
        let value = value.try_into().unwrap_or(i64::MAX);
        if self.accepts(value) {
            Ok(())
        } else {
            Err(ParamError {
                key: self.key,
                value: value as f64,
                expected: int_words(self.min, self.max),
            })
        }
    }
}

/// What an integer range accepts, in words: "at least 1", "0 or 1", "between 1 and 32".
pub fn int_words(min: i64, max: i64) -> String {
    if max == i64::MAX {
        format!("at least {min}")
    } else if max - min == 1 {
        format!("{min} or {max}")
    } else {
        format!("between {min} and {max}")
    }
}

/// Every value of `checks` against its range: `Ok` when all are accepted, else
/// [`ModelError::OutOfRange`] with one [`ParamError`] per value outside its range.
pub(crate) fn check_all(checks: &[(Range, f64)]) -> Result<(), ModelError> {
    let errors: Vec<ParamError> = checks
        .iter()
        .filter_map(|(range, value)| range.check(*value).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ModelError::OutOfRange(errors))
    }
}

/// Ranges several models share.
pub mod common {
    use super::Range;

    /// A step size (`learning_rate`, FTRL's `alpha`).
    pub const fn step_size(key: &'static str) -> Range {
        Range::new(key, "greater than 0 and at most 10", |v| {
            v > 0.0 && v <= 10.0
        })
    }

    /// A regularisation strength (`l1`, `l2`, FTRL's `beta`).
    pub const fn non_negative(key: &'static str) -> Range {
        Range::new(key, "finite and at least 0", |v| v.is_finite() && v >= 0.0)
    }

    /// The width of a prediction interval in standard deviations (`interval_z`).
    pub const INTERVAL_Z: Range = Range::new("interval_z", "greater than 0 and at most 10", |z| {
        z > 0.0 && z <= 10.0
    });

    /// The forgetting factor of a recursive least-squares model (`forgetting`).
    pub const FORGETTING: Range = Range::new("forgetting", "between 0.9 and 1.0", |f| {
        (0.9..=1.0).contains(&f)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_names_the_key_the_value_and_what_it_accepts() {
        let range = common::step_size("learning_rate");
        assert!(range.accepts(0.5) && range.accepts(10.0));
        assert!(!range.accepts(0.0) && !range.accepts(f64::NAN) && !range.accepts(11.0));
        assert_eq!(
            range.check(12.0).unwrap_err().to_string(),
            "learning_rate must be greater than 0 and at most 10 (got 12)"
        );
        assert_eq!(
            check_all(&[(range, 12.0), (common::non_negative("l2"), -1.0)])
                .unwrap_err()
                .to_string(),
            "invalid model parameters: learning_rate must be greater than 0 and at most 10 (got 12); l2 must be finite and at least 0 (got -1)"
        );
        assert!(check_all(&[(range, 1.0)]).is_ok());
    }
}
