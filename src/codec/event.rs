//! Recommend events: the item and the weight of a `kind = "recommend"` pipeline's readings.
//!
//! The item is text. A string of 1 to [`MAX_ITEM_NAME_BYTES`] bytes is the item as is; an
//! integer is its decimal text (`3012` is the item `"3012"`, as an integer key is). Both are
//! written into [`ReadingBuf::text`](super::ReadingBuf::text), reusing its capacity.
//!
//! The weight is a number in (0, [`MAX_WEIGHT`]], or an event type (a string) looked up in the
//! pipeline's `event_weights`. Event types are matched **ignoring ASCII case**, as
//! classification labels are (`"View"` is `view`), and otherwise exactly: no trimming, no
//! prefix match (`" view"` is unknown). Config validation rejects two event types that differ
//! only in case, so a match is never ambiguous. The lookup compares in place
//! (`eq_ignore_ascii_case`), so it allocates nothing.

use std::fmt;

use super::shown::{Found, Snippet};
use crate::model::recommend::MAX_ITEM_NAME_BYTES;
use crate::model::MAX_WEIGHT;

/// The `event_weights` of a recommend pipeline (empty otherwise), in config order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventWeights {
    entries: Box<[(Box<str>, f64)]>,
}

impl EventWeights {
    pub(crate) fn new(entries: &[(String, f64)]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|(name, weight)| (name.as_str().into(), *weight))
                .collect(),
        }
    }

    /// The weight of `event_type`, matched ignoring ASCII case; `None` for an unknown type.
    pub(crate) fn weight_of(&self, event_type: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(event_type))
            .map(|&(_, weight)| weight)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for EventWeights {
    /// `"view", "cart", "purchase"`, as configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, _)) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name:?}")?;
        }
        Ok(())
    }
}

/// Why a recommend event's item or weight cannot be used (the reading is `bad_event`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum EventProblem {
    /// The item field is not in the event.
    MissingItem,
    /// The item is neither a string nor an integer (`null`, a boolean, a non-integer number, an
    /// object, an array).
    ItemType(Found),
    /// The item is `""`.
    EmptyItem,
    /// The item is longer than [`MAX_ITEM_NAME_BYTES`]: its length in bytes and its start.
    LongItem { len: usize, start: Snippet },
    /// The weight is neither a number nor a string (a boolean, an object, an array).
    WeightType(Found),
    /// A weight number outside (0, [`MAX_WEIGHT`]].
    WeightOutOfRange(f64),
    /// A weight string that is not an event type of `event_weights`.
    UnknownEventType(Snippet),
    /// A SenML record whose value cannot be an item (`vd`).
    ItemSenmlValue(&'static str),
    /// A SenML record whose value cannot be a weight (`vd`).
    WeightSenmlValue(&'static str),
}

/// Writes the item `item` (a string from the payload) into `text`, if it is one.
pub(crate) fn item_from_text(item: &str, text: &mut String) -> Result<(), EventProblem> {
    text.clear();
    check_item(item)?;
    text.push_str(item);
    Ok(())
}

/// Whether `item` is a valid item: 1 to [`MAX_ITEM_NAME_BYTES`] bytes.
pub(crate) fn check_item(item: &str) -> Result<(), EventProblem> {
    if item.is_empty() {
        Err(EventProblem::EmptyItem)
    } else if item.len() > MAX_ITEM_NAME_BYTES {
        Err(EventProblem::LongItem {
            len: item.len(),
            start: Snippet::new(item),
        })
    } else {
        Ok(())
    }
}

/// Writes an integer item as its decimal text into `text` (at most 20 bytes: always valid).
pub(crate) fn item_from_integer(item: impl fmt::Display, text: &mut String) {
    use fmt::Write as _;

    text.clear();
    // `write!` into a String cannot fail; it formats in place, reusing the capacity.
    let _ = write!(text, "{item}");
}

/// Writes a SenML or bare-number item (an f64) into `text`: integers only, exactly as an
/// integer would be written in JSON.
pub(crate) fn item_from_float(item: f64, text: &mut String) -> Result<(), EventProblem> {
    /// Integers beyond 2^53 are not exact in an f64: their text would not be the sender's.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if item.fract() == 0.0 && item.abs() <= EXACT {
        // Integral and within ±2^53 (checked above), so the cast is exact.
        item_from_integer(item as i64, text);
        Ok(())
    } else {
        Err(EventProblem::ItemType(Found::NonIntegerNumber))
    }
}

/// A weight given as a number: accepted in (0, [`MAX_WEIGHT`]].
pub(crate) fn weight_from_number(weight: f64) -> Result<f64, EventProblem> {
    // `!(… > 0)` also rejects NaN.
    if weight > 0.0 && weight <= MAX_WEIGHT {
        Ok(weight)
    } else {
        Err(EventProblem::WeightOutOfRange(weight))
    }
}

/// A weight given as a string: the weight of that event type.
pub(crate) fn weight_from_text(
    weights: &EventWeights,
    event_type: &str,
) -> Result<f64, EventProblem> {
    weights
        .weight_of(event_type)
        .ok_or_else(|| EventProblem::UnknownEventType(Snippet::new(event_type)))
}

/// What an item must be.
pub(crate) const EXPECTED_ITEM: &str = "an item (a string of 1 to 64 bytes, or an integer)";
/// What a weight must be (event types, when configured, are listed after this).
pub(crate) const EXPECTED_WEIGHT: &str = "a weight: a number greater than 0 and at most 1024";

/// `problem` described, with the pipeline's `weights` for the weight problems.
pub(crate) struct ShownEvent<'a> {
    pub problem: &'a EventProblem,
    pub weights: &'a EventWeights,
}

impl fmt::Display for ShownEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let weights = self.weights;
        // "a weight: …, or an event type: "view", "cart"" when event types are configured.
        let expected_weight = |f: &mut fmt::Formatter<'_>| {
            f.write_str(EXPECTED_WEIGHT)?;
            if !weights.is_empty() {
                write!(f, ", or an event type: {weights}")?;
            }
            Ok(())
        };
        match *self.problem {
            EventProblem::MissingItem => {
                write!(f, "not present (every event needs {EXPECTED_ITEM})")
            }
            EventProblem::ItemType(found) => write!(f, "expected {EXPECTED_ITEM}, found {found}"),
            EventProblem::EmptyItem => {
                write!(f, "expected {EXPECTED_ITEM}, found an empty string")
            }
            EventProblem::LongItem { len, start } => write!(
                f,
                "the item is {len} bytes long, more than the {MAX_ITEM_NAME_BYTES} accepted ({start})"
            ),
            EventProblem::WeightType(found) => {
                f.write_str("expected ")?;
                expected_weight(f)?;
                write!(f, "; found {found}")
            }
            EventProblem::WeightOutOfRange(weight) => {
                f.write_str("the weight ")?;
                // Very large numbers in scientific notation: `Display` would write every digit.
                if weight.abs() < 1e15 {
                    write!(f, "{weight}")?;
                } else {
                    write!(f, "{weight:e}")?;
                }
                write!(
                    f,
                    " is out of range (accepted: greater than 0 and at most {MAX_WEIGHT})"
                )
            }
            EventProblem::UnknownEventType(text) if weights.is_empty() => write!(
                f,
                "expected {EXPECTED_WEIGHT}, found the string {text} (event types need model.event_weights)"
            ),
            EventProblem::UnknownEventType(text) => write!(
                f,
                "the event type {text} is not in event_weights (known: {weights}; ASCII case is ignored)"
            ),
            EventProblem::ItemSenmlValue(label) => {
                write!(f, "expected {EXPECTED_ITEM}, found a \"{label}\" value")
            }
            EventProblem::WeightSenmlValue(label) => {
                f.write_str("expected ")?;
                expected_weight(f)?;
                write!(f, "; found a \"{label}\" value")
            }
        }
    }
}
