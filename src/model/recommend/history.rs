//! A user's history: the recent items and their weights, and the change an event makes to it.

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize};
use smallvec::SmallVec;

use super::*;

/// One item of a user's history and its (quantised) weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The item's name.
    pub item: CompactString,
    /// Its weight `x_ui`, a multiple of [`WEIGHT_QUANTUM`] in `[WEIGHT_QUANTUM, MAX_WEIGHT]`.
    pub weight: f64,
}

/// A user's recent items, most recent first, at most `capacity` of them; see the [module
/// documentation](super) for the rule.
///
/// Serialises with serde; deserialising checks the state (capacity, unique valid names,
/// weights on the quantum grid) and fails on a corrupt one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserHistory {
    /// Most items kept.
    pub(super) capacity: usize,
    /// Most recent first; unique names.
    pub(super) entries: Vec<HistoryEntry>,
}

/// The serialised fields of a [`UserHistory`] (same order: the postcard format).
#[derive(Deserialize)]
pub(super) struct UserHistoryState {
    pub(super) capacity: usize,
    pub(super) entries: Vec<HistoryEntry>,
}

impl UserHistory {
    /// An empty history of at most `capacity` items (the pipeline's `history` parameter).
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] unless `capacity` is in `1..=100`.
    pub fn new(capacity: usize) -> Result<Self, ModelError> {
        ranges::HISTORY
            .check(capacity)
            .map_err(|e| ModelError::OutOfRange(vec![e]))?;
        Ok(Self {
            capacity,
            entries: Vec::with_capacity(capacity),
        })
    }

    /// Apply one event: the user interacted with `item` with `weight`.
    ///
    /// Returns what changed, for [`ItemSimilarity::apply`] — also for a duplicate, which
    /// changes no weight but makes the item the most recent. `None` (and the history is
    /// unchanged) when the event is rejected: an empty name or one longer than
    /// [`MAX_ITEM_NAME_BYTES`], or a weight that is not finite, ≤ 0 or above [`MAX_WEIGHT`].
    /// The weight is rounded to a multiple of [`WEIGHT_QUANTUM`] (at least one quantum).
    pub fn record(&mut self, item: &str, weight: f64) -> Option<HistoryChange> {
        if !valid_name(item) {
            return None;
        }
        let weight = quantise(weight)?;
        let (old_weight, new_weight, evicted) =
            match self.entries.iter().position(|entry| entry.item == item) {
                Some(position) => {
                    // Move to the front, keeping the order of the others.
                    self.entries[..=position].rotate_right(1);
                    let entry = &mut self.entries[0];
                    let old = entry.weight;
                    entry.weight = old.max(weight);
                    (old, entry.weight, None)
                }
                None => {
                    let evicted = if self.entries.len() >= self.capacity {
                        self.entries.pop()
                    } else {
                        None
                    };
                    self.entries.insert(
                        0,
                        HistoryEntry {
                            item: CompactString::from(item),
                            weight,
                        },
                    );
                    (0.0, weight, evicted)
                }
            };
        Some(HistoryChange {
            item: self.entries[0].item.clone(),
            old_weight,
            new_weight,
            evicted,
            others: self.entries[1..].iter().cloned().collect(),
        })
    }

    /// The items with their weights, most recent first: the input of
    /// [`ItemSimilarity::recommend`].
    pub fn items(&self) -> impl Iterator<Item = (&str, f64)> + Clone + '_ {
        self.entries
            .iter()
            .map(|entry| (entry.item.as_str(), entry.weight))
    }

    /// The entries, most recent first.
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries
    }

    /// The weight of `item`, `None` if it is not in the history.
    pub fn weight(&self, item: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|entry| entry.item == item)
            .map(|entry| entry.weight)
    }

    /// Number of items in the history.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before the first accepted event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most items kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn check(&self) -> Result<(), ModelError> {
        let invalid = |what: String| Err(ModelError::InvalidState(what));
        if !(1..=MAX_HISTORY).contains(&self.capacity) {
            return invalid(format!(
                "history capacity {} is not in 1..={MAX_HISTORY}",
                self.capacity
            ));
        }
        if self.entries.len() > self.capacity {
            return invalid(format!(
                "history holds {} items, more than its capacity {}",
                self.entries.len(),
                self.capacity
            ));
        }
        for (index, entry) in self.entries.iter().enumerate() {
            if !valid_name(&entry.item) {
                return invalid(format!(
                    "history item {index} has an empty or too long name"
                ));
            }
            if !is_quantised(entry.weight) {
                return invalid(format!(
                    "history item {:?} has weight {}, not a multiple of 1/1024 in [1/1024, {MAX_WEIGHT}]",
                    entry.item, entry.weight
                ));
            }
            if self.entries[..index]
                .iter()
                .any(|earlier| earlier.item == entry.item)
            {
                return invalid(format!("history holds {:?} twice", entry.item));
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for UserHistory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = UserHistoryState::deserialize(deserializer)?;
        let mut history = Self {
            capacity: state.capacity,
            entries: state.entries,
        };
        history.check().map_err(serde::de::Error::custom)?;
        // `record` then never reallocates.
        let room = history.capacity - history.entries.len();
        history.entries.reserve_exact(room);
        Ok(history)
    }
}

/// What one event changed in a user's row of X: everything [`ItemSimilarity::apply`] needs
/// to update A exactly without seeing the history.
///
/// Built only by [`UserHistory::record`], so its weights are valid and its items distinct.
/// It owns its data (names up to 24 bytes and up to [`CHANGE_INLINE_ITEMS`] other items
/// inline), so it can travel to another actor.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryChange {
    pub(super) item: CompactString,
    pub(super) old_weight: f64,
    pub(super) new_weight: f64,
    pub(super) evicted: Option<HistoryEntry>,
    pub(super) others: SmallVec<[HistoryEntry; CHANGE_INLINE_ITEMS]>,
}

impl HistoryChange {
    /// The item of the event (now the most recent of the history).
    pub fn item(&self) -> &str {
        &self.item
    }

    /// The item's weight before the event; 0 if it was not in the history.
    pub fn old_weight(&self) -> f64 {
        self.old_weight
    }

    /// The item's weight after the event: `max(old, event's weight)`.
    pub fn new_weight(&self) -> f64 {
        self.new_weight
    }

    /// The item evicted from the full history to make room, with its weight.
    pub fn evicted(&self) -> Option<&HistoryEntry> {
        self.evicted.as_ref()
    }

    /// The user's other items and their weights at the time, most recent first (neither the
    /// event's item nor the evicted one).
    pub fn others(&self) -> &[HistoryEntry] {
        &self.others
    }

    /// False for a duplicate: no weight changed, so A does not change.
    pub fn changes_weights(&self) -> bool {
        self.new_weight != self.old_weight || self.evicted.is_some()
    }

    /// The user's history after the event, most recent first (the event's item, then the
    /// others): what [`ItemSimilarity::recommend`] needs to answer right after `apply`.
    pub fn items_after(&self) -> impl Iterator<Item = (&str, f64)> + Clone + '_ {
        std::iter::once((self.item.as_str(), self.new_weight)).chain(
            self.others
                .iter()
                .map(|entry| (entry.item.as_str(), entry.weight)),
        )
    }
}
