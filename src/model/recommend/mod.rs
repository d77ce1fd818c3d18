//! Item-item recommendation: cosine similarity over item co-occurrence, kept up to date one
//! event at a time, in bounded memory.
//!
//! # The model
//! X is the user×item matrix of the users' *current* histories: `x_ui` is the weight of item i
//! in user u's history, 0 if absent. The model keeps the co-occurrence matrix `A = XᵀX`,
//! `A(i,j) = Σ_u x_ui·x_uj`, `A(i,i) = Σ_u x_ui²`, and answers with the cosine similarity
//! `sim(i,j) = A(i,j)/√(A(i,i)·A(j,j))`.
//!
//! # Two parts, two kinds of actor
//! - [`UserHistory`] (one per user, small, persisted with the user's key): the user's recent
//!   items, most recent first. [`UserHistory::record`] applies one event and returns a
//!   [`HistoryChange`] that describes the change of the user's row of X completely: the item
//!   and its old and new weight, the item evicted to make room and its weight, and the user's
//!   other items with their weights.
//! - [`ItemSimilarity`] (one per pipeline, held by the supervising `Recommender` actor):
//!   [`ItemSimilarity::apply`] turns a change into the exact update of A without ever seeing
//!   the history, so it can run asynchronously, in another actor. A is a sum over users, so
//!   changes of different users may arrive interleaved in any order; the changes of one user
//!   must be applied in the order `record` produced them (one mailbox does that).
//!
//! # History rule
//! A history holds at most `history` distinct items. An event for an item not in the history
//! pushes it to the front with the event's weight and, when the history is full, evicts the
//! oldest item. An event for an item already there moves it to the front and its weight
//! becomes `max(old, new)`: repeated views of an item do not inflate it, a stronger signal
//! (a purchase after a view) raises it. So an event with the same or a lower weight — a
//! *duplicate* — changes no weight and leaves A unchanged (it still makes the item the most
//! recent one of the history and of the model).
//!
//! # Weights are quantised, so A is exact
//! Weights are rounded to the nearest multiple of [`WEIGHT_QUANTUM`] (1/1024), at least one
//! quantum; weights that are not finite, ≤ 0 or above [`MAX_WEIGHT`] (1024) are rejected. Every
//! product of two weights is then a multiple of 2⁻²⁰ below 2²⁰, so every value of A is a
//! multiple of 2⁻²⁰, and f64 adds and subtracts such values exactly while they stay below 2³³
//! (2⁵³ quanta; 8.6·10⁹ co-occurrences of weight-1 events, far beyond one gateway). Hence:
//! the incremental A equals a recomputation from scratch *bit for bit*, a value whose
//! contributions have all been removed is exactly 0 (and its entry is dropped), and ranked
//! lists never depend on round-off. Beyond 2³³ A is ordinary f64 arithmetic (relative error
//! ~1e-16 per update). The quantisation error of a weight is at most 1/2048.
//!
//! # Scoring
//! [`ItemSimilarity::recommend`] scores every item j that is not in the user's history by
//! `score(j) = Σ_i x_ui·sim(i,j)` over the history's items in the order given (most recent
//! first), keeps the items with score > 0 (those that co-occur with something in the
//! history), and returns the top n by score, ties broken by item name (byte order), so lists
//! are reproducible. [`ItemSimilarity::similar_items`] ranks one item's neighbours the same
//! way. An unknown item (never seen, forgotten, or in no current history) has no neighbours:
//! its list is empty, its similarity to anything is 0. A history with no known item gets an
//! empty list; the caller may fall back on [`ItemSimilarity::popular`] (items by `A(i,i)`).
//!
//! # Bounded memory: forgetting and pruning
//! - **At most `max_items` items.** When an event brings a new item into a full model, the
//!   *least recently touched* item is forgotten: its row, its `A(i,i)` and its entries in its
//!   neighbours' rows. An item is touched by every event about it (duplicates included), not
//!   by appearing in another item's event.
//! - **At most `max_neighbours` non-zero `A(i,j)` per row.** When a new co-occurrence must
//!   enter a full row, the weakest eighth of that row (at least one entry: smallest `A(i,j)`,
//!   ties: lower internal id first, which the state keeps) is dropped from both rows first; then
//!   the new entry enters. Dropping an eighth at once amortises the selection over
//!   `max_neighbours/8` insertions; letting the new entry in keeps full rows learning (a new
//!   pair starts weakest, so "drop the weakest" would otherwise always drop it).
//! - An item whose `A(i,i)` reaches 0 has left every history: it is removed.
//!
//! Exactness holds while nothing has been forgotten or pruned. Afterwards the model holds A′
//! with `0 ≤ A′ ≤ A` for every pair and every diagonal value: forgetting and pruning only
//! lower values, and a removal the model can no longer match (the entry was dropped) is
//! clamped at 0 (the true A is never negative). The shortfall of a value grows only when it is
//! dropped. Similarities are the cosines of what the model holds.
//!
//! [`ItemSimilarity::memory_bytes`] estimates the heap in use from capacities;
//! [`RecommendParams::memory_bound`] bounds it: on 64-bit targets at most
//! `3 KiB + 48·max_neighbours + max_items·(203 + 12·max_neighbours)` bytes, i.e. 1.39 KB per
//! item with the default 100 neighbours, 13.9 MB for the default 10,000 items. The 203 bytes
//! include 64 for a name at the longest accepted length; names up to 24 bytes are stored
//! inline.
//!
//! # Speed
//! `apply` costs O(history) hash look-ups and O(history) row updates, each a vectorised scan
//! of one row (≤ `max_neighbours` ids); pruning adds O(max_neighbours) per `max_neighbours/8`
//! insertions. It allocates nothing once warm: its scratch buffers are reused, rows and slots
//! keep their capacity for the next item (a row grows by doubling up to `max_neighbours`, so a
//! slot reallocates its row a few times in its life, then never), and a change built by
//! `record` holds up to [`CHANGE_INLINE_ITEMS`] other items and names up to 24 bytes without
//! touching the heap. (A longer name lives on the heap: each copy of it — into a change, into
//! a new slot — is an allocation.) `benches/recommend.rs` measures it.

use std::mem::size_of;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::ModelError;

mod history;
mod similarity;
mod state;
#[cfg(test)]
mod tests;

pub use history::{HistoryChange, HistoryEntry, UserHistory};
use similarity::{Item, PruneCandidate};
pub use similarity::{ItemSimilarity, ScoredItem};

/// Weights are rounded to multiples of this (2⁻¹⁰), which makes every update of A exact; see
/// the [module documentation](self).
pub const WEIGHT_QUANTUM: f64 = 1.0 / 1024.0;
/// Largest accepted weight (2¹⁰): products of two weights stay below 2²⁰.
pub const MAX_WEIGHT: f64 = 1024.0;
/// Longest accepted item name, in bytes: bounds the memory an item can take.
pub const MAX_ITEM_NAME_BYTES: usize = 64;
/// Largest accepted `history`: the cost of an event grows with the history.
pub const MAX_HISTORY: usize = 100;
/// Largest accepted `max_items` (ids are `u32`; a million items is already ~1.4 GB of rows
/// at the default neighbours, beyond any gateway).
pub const MAX_ITEMS: usize = 1_000_000;
/// Largest accepted `max_neighbours`.
pub const MAX_NEIGHBOURS: usize = 10_000;
/// Largest accepted `top_n`.
pub const MAX_TOP_N: usize = 1_000;
/// Other items a [`HistoryChange`] holds inline; histories up to one more than this build a
/// change without touching the heap (the default history is 20).
pub const CHANGE_INLINE_ITEMS: usize = 24;

/// "No item" in the recency list.
const NIL: u32 = u32::MAX;

/// Parameters of the recommender; check them with [`validate`](Self::validate).
///
/// The defaults suit a gateway: 20 recent items per user (enough context, O(20) work per
/// event), 10,000 items with 100 neighbours each (at most 13.9 MB) and top-10 lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommendParams {
    /// Items kept per user history, in `1..=100` (default 20). Longer histories give more
    /// context but cost more per event.
    pub history: usize,
    /// Items the model tracks, in `2..=1_000_000` (default 10,000); the least recently touched
    /// item is forgotten to make room for a new one.
    pub max_items: usize,
    /// Non-zero co-occurrences kept per item, in `1..=10_000` (default 100); the weakest are
    /// pruned to make room.
    pub max_neighbours: usize,
    /// Length of the lists the daemon publishes, in `1..=1000` (default 10): the `n` the
    /// `Recommender` actor passes to [`ItemSimilarity::recommend`] and
    /// [`ItemSimilarity::similar_items`].
    pub top_n: usize,
}

impl Default for RecommendParams {
    fn default() -> Self {
        Self {
            history: 20,
            max_items: 10_000,
            max_neighbours: 100,
            top_n: 10,
        }
    }
}

/// The ranges of [`RecommendParams`] (the config loader reads the keys with them).
pub mod ranges {
    use crate::model::param::IntRange;

    /// `history`: items kept per user.
    pub const HISTORY: IntRange = IntRange::new("history", 1, super::MAX_HISTORY as i64);
    /// `max_items`: items the model keeps.
    pub const MAX_ITEMS: IntRange = IntRange::new("max_items", 2, super::MAX_ITEMS as i64);
    /// `max_neighbours`: co-occurrences kept per item.
    pub const MAX_NEIGHBOURS: IntRange =
        IntRange::new("max_neighbours", 1, super::MAX_NEIGHBOURS as i64);
    /// `top_n`: the length of a list.
    pub const TOP_N: IntRange = IntRange::new("top_n", 1, super::MAX_TOP_N as i64);
}

impl RecommendParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let errors: Vec<_> = [
            ranges::HISTORY.check(self.history),
            ranges::MAX_ITEMS.check(self.max_items),
            ranges::MAX_NEIGHBOURS.check(self.max_neighbours),
            ranges::TOP_N.check(self.top_n),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ModelError::OutOfRange(errors))
        }
    }

    /// Upper bound of [`ItemSimilarity::memory_bytes`] for these parameters, in bytes.
    ///
    /// Per item: its slot, a full row (`max_neighbours` × (4-byte id + 8-byte value)), a name
    /// at the longest accepted length (names up to 24 bytes take none), a score, a candidate
    /// and a free-list entry of scratch; then the index at the largest size the hash table
    /// can reach (fewer than 32/7 buckets of 5 bytes per item), and the fixed part: the struct
    /// and the buffers sized by `history` and `max_neighbours`. On 64-bit targets that is at
    /// most `3 KiB + 48·max_neighbours + max_items·(203 + 12·max_neighbours)`.
    pub fn memory_bound(&self) -> usize {
        let neighbours = self.max_neighbours;
        // Scratch buffers: their capacity may round up to a power of two (after a clone).
        let fixed = size_of::<ItemSimilarity>()
            + MAX_HISTORY.next_power_of_two() * size_of::<(u32, f64)>()
            + neighbours
                .checked_next_power_of_two()
                .unwrap_or(usize::MAX)
                .saturating_mul(size_of::<PruneCandidate>());
        // `HashTable::allocation_size`: the ids padded to the control bytes' 16-byte alignment,
        // one control byte per bucket and a 16-byte trailing group.
        let index = index_buckets_bound(self.max_items)
            .saturating_mul(size_of::<u32>() + 1)
            .saturating_add(2 * 16);
        let per_item = neighbours
            .saturating_mul(size_of::<u32>() + size_of::<f64>())
            .saturating_add(
                size_of::<Item>() + name_heap_bound() + size_of::<f64>() + 2 * size_of::<u32>(),
            );
        fixed
            .saturating_add(index)
            .saturating_add(self.max_items.saturating_mul(per_item))
    }

    /// [`memory_bound`](Self::memory_bound) per tracked item at the budget (`max_items`
    /// items), rounded up: about 1.39 KB with the defaults.
    pub fn bytes_per_item_bound(&self) -> usize {
        self.memory_bound().div_ceil(self.max_items.max(1))
    }
}

/// Heap of an item name: none up to the inline size (24 bytes on 64-bit targets), else
/// `max(len, inline size + word)` (`compact_str`'s smallest heap buffer).
fn name_heap_bound() -> usize {
    MAX_ITEM_NAME_BYTES.max(size_of::<CompactString>() + size_of::<usize>())
}

/// Most buckets the index can reach while it never holds more than `max_items` ids.
///
/// `hashbrown` grows a table when it runs out of free buckets; with deletions (forgotten
/// items leave tombstones) it rehashes in place when at most half its capacity is used, and
/// doubles otherwise. So it stops doubling at the first power of two whose capacity (7/8 of
/// the buckets; one less than the buckets below 16) exceeds `2·max_items + 1`: fewer than
/// `32/7·(max_items + 1)` buckets.
fn index_buckets_bound(max_items: usize) -> usize {
    let mut buckets = 4usize;
    while buckets < usize::MAX / 16 {
        let capacity = if buckets < 16 {
            buckets - 1
        } else {
            buckets / 8 * 7
        };
        if capacity / 2 > max_items {
            return buckets;
        }
        buckets *= 2;
    }
    usize::MAX
}

/// Rounds a weight to the quantum grid; `None` unless finite, > 0 and ≤ [`MAX_WEIGHT`].
fn quantise(weight: f64) -> Option<f64> {
    if !(weight.is_finite() && weight > 0.0 && weight <= MAX_WEIGHT) {
        return None;
    }
    // Scaling by a power of two is exact; the result is k/1024 with 1 ≤ k ≤ 2²⁰.
    Some((weight / WEIGHT_QUANTUM).round().max(1.0) * WEIGHT_QUANTUM)
}

/// A weight `quantise` can return.
fn is_quantised(weight: f64) -> bool {
    (WEIGHT_QUANTUM..=MAX_WEIGHT).contains(&weight) && (weight / WEIGHT_QUANTUM).fract() == 0.0
}

/// An item name `record` accepts: non-empty, at most [`MAX_ITEM_NAME_BYTES`].
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ITEM_NAME_BYTES
}

/// The cosine from a co-occurrence and the two norms `√A(i,i)`, `√A(j,j)`. Capped at 1: with
/// exact A, Cauchy–Schwarz holds, but the square roots round.
fn cosine(cooccurrence: f64, norm_a: f64, norm_b: f64) -> f64 {
    (cooccurrence / (norm_a * norm_b)).min(1.0)
}
