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
use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use super::ModelError;

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

impl RecommendParams {
    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        let mut check = |name: &str, value: usize, low: usize, high: usize| {
            if !(low..=high).contains(&value) {
                problems.push(format!(
                    "{name} must be between {low} and {high} (got {value})"
                ));
            }
        };
        check("history", self.history, 1, MAX_HISTORY);
        check("max_items", self.max_items, 2, MAX_ITEMS);
        check("max_neighbours", self.max_neighbours, 1, MAX_NEIGHBOURS);
        check("top_n", self.top_n, 1, MAX_TOP_N);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidParams(problems.join("; ")))
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

// ---------------------------------------------------------------------------------------------
// User history
// ---------------------------------------------------------------------------------------------

/// One item of a user's history and its (quantised) weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The item's name.
    pub item: CompactString,
    /// Its weight `x_ui`, a multiple of [`WEIGHT_QUANTUM`] in `[WEIGHT_QUANTUM, MAX_WEIGHT]`.
    pub weight: f64,
}

/// A user's recent items, most recent first, at most `capacity` of them; see the [module
/// documentation](self) for the rule.
///
/// Serialises with serde; deserialising checks the state (capacity, unique valid names,
/// weights on the quantum grid) and fails on a corrupt one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserHistory {
    /// Most items kept.
    capacity: usize,
    /// Most recent first; unique names.
    entries: Vec<HistoryEntry>,
}

/// The serialised fields of a [`UserHistory`] (same order: the postcard format).
#[derive(Deserialize)]
struct UserHistoryState {
    capacity: usize,
    entries: Vec<HistoryEntry>,
}

impl UserHistory {
    /// An empty history of at most `capacity` items (the pipeline's `history` parameter).
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] unless `capacity` is in `1..=100`.
    pub fn new(capacity: usize) -> Result<Self, ModelError> {
        if !(1..=MAX_HISTORY).contains(&capacity) {
            return Err(ModelError::InvalidParams(format!(
                "history must be between 1 and {MAX_HISTORY} (got {capacity})"
            )));
        }
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

    fn check(&self) -> Result<(), ModelError> {
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
    item: CompactString,
    old_weight: f64,
    new_weight: f64,
    evicted: Option<HistoryEntry>,
    others: SmallVec<[HistoryEntry; CHANGE_INLINE_ITEMS]>,
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

// ---------------------------------------------------------------------------------------------
// Item similarity
// ---------------------------------------------------------------------------------------------

/// An item and its score in a ranked list.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredItem {
    /// The item's name.
    pub item: CompactString,
    /// Its score: the similarity for [`ItemSimilarity::similar_items`], `Σ x_ui·sim(i,j)`
    /// for [`ItemSimilarity::recommend`], `A(i,i)` for [`ItemSimilarity::popular`].
    pub score: f64,
}

/// One tracked item: its name, `A(i,i)`, its recency and its row of A (neighbour ids, values
/// alongside, in no particular order: a row is found by a vectorised scan, which costs less
/// than a binary search's chain of cache misses on rows of ~100 entries, and entries are added
/// and removed in O(1)). A free slot has an empty name and row but keeps the row's capacity
/// for the next item.
#[derive(Debug, Clone)]
struct Item {
    name: CompactString,
    /// `A(i,i)`, > 0 for a live item.
    diagonal: f64,
    /// The model's clock at the last event about the item (unique among live items).
    touched: u64,
    /// Next more recently touched item, or `NIL`.
    newer: u32,
    /// Next less recently touched item, or `NIL`.
    older: u32,
    /// Neighbour ids, distinct.
    neighbours: Vec<u32>,
    /// `A(i, neighbours[k])`, > 0.
    values: Vec<f64>,
}

impl Item {
    fn vacant() -> Self {
        Self {
            name: CompactString::default(),
            diagonal: 0.0,
            touched: 0,
            newer: NIL,
            older: NIL,
            neighbours: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Position of `id` in the row.
    fn find(&self, id: u32) -> Option<usize> {
        // Fixed-size chunks compared without an early exit vectorise; only the chunk with the
        // hit is searched again.
        const CHUNK: usize = 16;
        let mut chunks = self.neighbours.chunks_exact(CHUNK);
        for (k, chunk) in chunks.by_ref().enumerate() {
            if chunk.iter().fold(false, |hit, &other| hit | (other == id)) {
                return chunk
                    .iter()
                    .position(|&other| other == id)
                    .map(|position| k * CHUNK + position);
            }
        }
        let base = self.neighbours.len() - chunks.remainder().len();
        chunks
            .remainder()
            .iter()
            .position(|&other| other == id)
            .map(|position| base + position)
    }

    fn remove_at(&mut self, position: usize) {
        self.neighbours.swap_remove(position);
        self.values.swap_remove(position);
    }

    fn remove_neighbour(&mut self, id: u32) {
        if let Some(position) = self.find(id) {
            self.remove_at(position);
        }
    }

    /// Appends an entry, growing the row by doubling but never beyond `limit` entries of
    /// capacity (a full row is pruned before an insertion).
    fn push(&mut self, id: u32, value: f64, limit: usize) {
        let len = self.neighbours.len();
        if len == self.neighbours.capacity() || len == self.values.capacity() {
            let target = (2 * len).max(4).min(limit).max(len + 1);
            self.neighbours.reserve_exact(target - len);
            self.values.reserve_exact(target - len);
        }
        self.neighbours.push(id);
        self.values.push(value);
    }

    fn heap_bytes(&self) -> usize {
        let name = if self.name.is_heap_allocated() {
            self.name.capacity()
        } else {
            0
        };
        name + self.neighbours.capacity() * size_of::<u32>()
            + self.values.capacity() * size_of::<f64>()
    }
}

/// A row entry considered for pruning.
#[derive(Debug, Clone, Copy)]
struct PruneCandidate {
    value: f64,
    id: u32,
    position: u32,
}

/// The item-item co-occurrence model of one pipeline; see the [module documentation](self).
///
/// Item names are interned to `u32` ids (a hash index on the names held in the slots), so a
/// row entry is 12 bytes. Ids are internal, but the state keeps them (and the free list), so a
/// restored model continues exactly like the original, pruning ties included.
///
/// Serialises with serde in a canonical form (items by id, each co-occurrence once);
/// deserialising checks it and fails with [`ModelError::InvalidState`] on a corrupt state.
#[derive(Debug, Clone)]
pub struct ItemSimilarity {
    params: RecommendParams,
    /// Slots by id; at most `max_items`.
    items: Vec<Item>,
    /// Ids of the live items, hashed by name.
    index: HashTable<u32>,
    /// Randomly seeded: item names come from the network.
    hasher: ahash::RandomState,
    /// Vacant slots.
    free: Vec<u32>,
    /// Most recently touched live item, or `NIL`.
    newest: u32,
    /// Least recently touched live item, or `NIL`: the next to be forgotten.
    oldest: u32,
    /// Counts touches.
    clock: u64,
    /// Scratch: the ids and weights of a change's or a query's known items.
    resolved: Vec<(u32, f64)>,
    /// Scratch of pruning.
    prune: Vec<PruneCandidate>,
    /// Scratch of `recommend`: a score per slot (0 when unused).
    scores: Vec<f64>,
    /// Scratch of `recommend`: the slots with a score.
    candidates: Vec<u32>,
}

impl ItemSimilarity {
    /// An empty model.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` are out of range.
    pub fn new(params: RecommendParams) -> Result<Self, ModelError> {
        params.validate()?;
        Ok(Self::empty(params))
    }

    fn empty(params: RecommendParams) -> Self {
        Self {
            params,
            items: Vec::new(),
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            clock: 0,
            resolved: Vec::with_capacity(MAX_HISTORY),
            prune: Vec::with_capacity(params.max_neighbours),
            scores: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &RecommendParams {
        &self.params
    }

    /// Number of items tracked (at most `max_items`).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no item is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when `item` is tracked.
    pub fn contains(&self, item: &str) -> bool {
        self.lookup(item).is_some()
    }

    /// Apply one user's [`HistoryChange`]: the exact update of A (see the [module
    /// documentation](self)), then forgetting and pruning as the bounds require.
    ///
    /// For the item's weight going from `old` to `new`: `A(i,j) += (new − old)·x_uj` for every
    /// other item j of the history, `A(i,i) += new² − old²`; for an evicted item e of weight
    /// `w_e`: `A(e,j) −= w_e·x_uj`, `A(e,e) −= w_e²`. A duplicate only touches its item.
    /// Items the model does not know (forgotten) are skipped, except the event's item, which
    /// a weight increase (re-)creates. Allocates nothing once the model is warm.
    pub fn apply(&mut self, change: &HistoryChange) {
        let (old, new) = (change.old_weight, change.new_weight);
        let item = match self.lookup(&change.item) {
            Some(id) => {
                self.touch(id);
                Some(id)
            }
            None if new > old => Some(self.insert_item(&change.item)),
            None => None,
        };
        if !change.changes_weights() {
            // A duplicate: A does not change.
            return;
        }
        // After the insertion, which may have forgotten one of them.
        let evicted = change.evicted.as_ref().and_then(|entry| {
            self.lookup(&entry.item)
                .filter(|&id| Some(id) != item)
                .map(|id| (id, entry.weight))
        });
        self.resolved.clear();
        for entry in change.others.iter().take(MAX_HISTORY) {
            if let Some(id) = Self::find_id(&self.index, &self.hasher, &self.items, &entry.item) {
                if Some(id) != item && Some(id) != evicted.map(|(id, _)| id) {
                    self.resolved.push((id, entry.weight));
                }
            }
        }

        // Touch the first line of every row j up front: independent loads whose cache misses
        // overlap, instead of one miss after the other in the loop below.
        let mut first_lines = 0u32;
        for &(j, _) in &self.resolved {
            first_lines ^= self.items[j as usize]
                .neighbours
                .first()
                .copied()
                .unwrap_or(0);
        }
        std::hint::black_box(first_lines);
        // One pass over the other items: each row j is updated for the event's item and the
        // evicted one while it is in cache.
        let delta = item.map_or(0.0, |_| new - old);
        if let Some(i) = item {
            self.items[i as usize].diagonal += new * new - old * old;
        }
        for k in 0..self.resolved.len() {
            let (j, weight) = self.resolved[k];
            if let Some(i) = item {
                self.add_pair(i, j, delta * weight);
            }
            if let Some((e, evicted_weight)) = evicted {
                self.add_pair(e, j, -(evicted_weight * weight));
            }
        }
        if let Some((e, weight)) = evicted {
            if let Some(i) = item {
                // Zero when the item was new to the history, the only case `record` evicts.
                if old > 0.0 {
                    self.add_pair(i, e, -(old * weight));
                }
            }
            self.items[e as usize].diagonal -= weight * weight;
            if self.items[e as usize].diagonal <= 0.0 {
                self.remove_item(e);
            }
        }
        if let Some(i) = item {
            if self.items[i as usize].diagonal <= 0.0 {
                self.remove_item(i);
            }
        }
    }

    /// `A(a, b)`: the co-occurrence of two items (`A(a, a)` when `a == b`); 0 when either is
    /// unknown or the pair has no co-occurrence.
    pub fn cooccurrence(&self, a: &str, b: &str) -> f64 {
        match (self.lookup(a), self.lookup(b)) {
            (Some(i), Some(j)) if i == j => self.items[i as usize].diagonal,
            (Some(i), Some(j)) => self.pair(i, j),
            _ => 0.0,
        }
    }

    /// `sim(a, b) = A(a,b)/√(A(a,a)·A(b,b))` in [0, 1]: 1 for a known item with itself, 0 when
    /// either is unknown or they never co-occur.
    pub fn similarity(&self, a: &str, b: &str) -> f64 {
        match (self.lookup(a), self.lookup(b)) {
            (Some(i), Some(j)) if i == j => 1.0,
            (Some(i), Some(j)) => {
                let (first, second) = (&self.items[i as usize], &self.items[j as usize]);
                cosine(
                    self.pair(i, j),
                    first.diagonal.sqrt(),
                    second.diagonal.sqrt(),
                )
            }
            _ => 0.0,
        }
    }

    /// The `n` items most similar to `item`, most similar first (ties by name), into `out`
    /// (cleared first; its capacity is reused). Only items that co-occur with `item` are
    /// listed (their score is positive); the list is empty for an unknown item.
    pub fn similar_items(&self, item: &str, n: usize, out: &mut Vec<ScoredItem>) {
        out.clear();
        let Some(i) = self.lookup(item) else {
            return;
        };
        let row = &self.items[i as usize];
        let norm = row.diagonal.sqrt();
        for (&j, &value) in row.neighbours.iter().zip(&row.values) {
            let other = &self.items[j as usize];
            let score = cosine(value, norm, other.diagonal.sqrt());
            if score > 0.0 {
                offer(out, n, &other.name, score);
            }
        }
    }

    /// The top `n` recommendations for a user whose history is `history` (items and weights,
    /// most recent first, e.g. [`UserHistory::items`] or [`HistoryChange::items_after`]),
    /// best first, into `out` (cleared first; its capacity is reused).
    ///
    /// `score(j) = Σ_i x_ui·sim(i,j)` over the history's known items in the given order (only
    /// the first 100; entries with a weight that is not finite and > 0 are skipped), for every
    /// item j not in the history with score > 0; ties by name. Empty when no item of the
    /// history is known. Takes `&mut self` only for its scratch buffers: no allocation once
    /// warm.
    pub fn recommend<'h, I>(&mut self, history: I, n: usize, out: &mut Vec<ScoredItem>)
    where
        I: IntoIterator<Item = (&'h str, f64)>,
    {
        out.clear();
        self.resolved.clear();
        for (name, weight) in history.into_iter().take(MAX_HISTORY) {
            if weight.is_finite() && weight > 0.0 {
                if let Some(id) = Self::find_id(&self.index, &self.hasher, &self.items, name) {
                    self.resolved.push((id, weight));
                }
            }
        }
        if n == 0 || self.resolved.is_empty() {
            return;
        }
        // One reservation per growth of the slots, never beyond `max_items`.
        let capacity = self.items.capacity();
        if self.scores.len() < self.items.len() {
            self.scores.reserve_exact(capacity - self.scores.len());
            self.scores.resize(self.items.len(), 0.0);
        }
        if self.candidates.capacity() < self.items.len() {
            self.candidates.reserve_exact(capacity);
        }
        let Self {
            items,
            resolved,
            scores,
            candidates,
            ..
        } = self;
        // The history's own items are excluded: marked so that nothing accumulates on them.
        for &(id, _) in resolved.iter() {
            scores[id as usize] = f64::NEG_INFINITY;
        }
        for &(i, weight) in resolved.iter() {
            let row = &items[i as usize];
            let norm = row.diagonal.sqrt();
            for (&j, &value) in row.neighbours.iter().zip(&row.values) {
                let score = scores[j as usize];
                if score == f64::NEG_INFINITY {
                    continue;
                }
                let term = weight * cosine(value, norm, items[j as usize].diagonal.sqrt());
                if term > 0.0 {
                    if score == 0.0 {
                        candidates.push(j);
                    }
                    scores[j as usize] = score + term;
                }
            }
        }
        for &j in candidates.iter() {
            offer(out, n, &items[j as usize].name, scores[j as usize]);
            scores[j as usize] = 0.0;
        }
        for &(id, _) in resolved.iter() {
            scores[id as usize] = 0.0;
        }
        candidates.clear();
    }

    /// The `n` items with the largest `A(i,i) = Σ_u x_ui²` (ties by name) into `out`
    /// (cleared first): a cold-start list for a user without known history. O(items).
    pub fn popular(&self, n: usize, out: &mut Vec<ScoredItem>) {
        out.clear();
        let mut id = self.newest;
        while id != NIL {
            let item = &self.items[id as usize];
            offer(out, n, &item.name, item.diagonal);
            id = item.older;
        }
    }

    /// Heap bytes in use, from the capacities of every buffer (slots, rows, names, index,
    /// scratch) plus the struct itself; at most [`memory_bound`](Self::memory_bound). O(slots).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.items.capacity() * size_of::<Item>()
            + self.items.iter().map(Item::heap_bytes).sum::<usize>()
            + self.index.allocation_size()
            + self.free.capacity() * size_of::<u32>()
            + self.resolved.capacity() * size_of::<(u32, f64)>()
            + self.prune.capacity() * size_of::<PruneCandidate>()
            + self.scores.capacity() * size_of::<f64>()
            + self.candidates.capacity() * size_of::<u32>()
    }

    /// [`RecommendParams::memory_bound`] of the model's parameters.
    pub fn memory_bound(&self) -> usize {
        self.params.memory_bound()
    }

    // ---- internals ----

    fn find_id(
        index: &HashTable<u32>,
        hasher: &ahash::RandomState,
        items: &[Item],
        name: &str,
    ) -> Option<u32> {
        index
            .find(hasher.hash_one(name), |&id| items[id as usize].name == name)
            .copied()
    }

    fn lookup(&self, name: &str) -> Option<u32> {
        Self::find_id(&self.index, &self.hasher, &self.items, name)
    }

    /// `A(i, j)` for two live ids, `i ≠ j`.
    fn pair(&self, i: u32, j: u32) -> f64 {
        let row = &self.items[i as usize];
        row.find(j).map_or(0.0, |position| row.values[position])
    }

    /// Makes `id` the most recently touched item.
    fn touch(&mut self, id: u32) {
        self.clock = self.clock.saturating_add(1);
        self.items[id as usize].touched = self.clock;
        if self.newest != id {
            self.unlink(id);
            self.push_newest(id);
        }
    }

    fn unlink(&mut self, id: u32) {
        let (newer, older) = {
            let item = &self.items[id as usize];
            (item.newer, item.older)
        };
        if newer == NIL {
            self.newest = older;
        } else {
            self.items[newer as usize].older = older;
        }
        if older == NIL {
            self.oldest = newer;
        } else {
            self.items[older as usize].newer = newer;
        }
        let item = &mut self.items[id as usize];
        item.newer = NIL;
        item.older = NIL;
    }

    fn push_newest(&mut self, id: u32) {
        let previous = self.newest;
        {
            let item = &mut self.items[id as usize];
            item.newer = NIL;
            item.older = previous;
        }
        if previous == NIL {
            self.oldest = id;
        } else {
            self.items[previous as usize].newer = id;
        }
        self.newest = id;
    }

    /// Tracks a new item (forgetting the least recently touched one if the model is full) and
    /// touches it. `name` must not be tracked yet.
    fn insert_item(&mut self, name: &str) -> u32 {
        if self.index.len() >= self.params.max_items && self.oldest != NIL {
            self.remove_item(self.oldest);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                if self.items.len() == self.items.capacity() {
                    // Double, but never beyond `max_items` slots.
                    let extra = self
                        .items
                        .capacity()
                        .max(8)
                        .min(self.params.max_items - self.items.len())
                        .max(1);
                    self.items.reserve_exact(extra);
                    // The free list can then hold every slot without growing.
                    self.free.reserve_exact(self.items.capacity());
                }
                self.items.push(Item::vacant());
                (self.items.len() - 1) as u32
            }
        };
        let item = &mut self.items[id as usize];
        item.name = CompactString::from(name);
        item.diagonal = 0.0;
        let Self {
            index,
            hasher,
            items,
            ..
        } = self;
        index.insert_unique(hasher.hash_one(name), id, |&other| {
            hasher.hash_one(items[other as usize].name.as_str())
        });
        self.push_newest(id);
        self.clock = self.clock.saturating_add(1);
        self.items[id as usize].touched = self.clock;
        id
    }

    /// Forgets a live item: its entries in its neighbours' rows, its row, its index entry and
    /// its place in the recency list. The slot keeps its row's capacity for the next item.
    fn remove_item(&mut self, id: u32) {
        for k in 0..self.items[id as usize].neighbours.len() {
            let neighbour = self.items[id as usize].neighbours[k];
            self.items[neighbour as usize].remove_neighbour(id);
        }
        let hash = self.hasher.hash_one(self.items[id as usize].name.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.unlink(id);
        let item = &mut self.items[id as usize];
        item.neighbours.clear();
        item.values.clear();
        item.name = CompactString::default();
        item.diagonal = 0.0;
        item.touched = 0;
        if self.free.len() == self.free.capacity() {
            // Room for every slot at once (a clone starts with a tight free list).
            let room = self.items.capacity() - self.free.len();
            self.free.reserve_exact(room);
        }
        self.free.push(id);
    }

    /// `A(a,b) += delta` in both rows (`a ≠ b`, both live). An entry that reaches ≤ 0 is
    /// removed; a negative delta for an entry the model does not hold is dropped (clamped at
    /// 0); a new entry first makes room in full rows.
    fn add_pair(&mut self, a: u32, b: u32, delta: f64) {
        if a == b || delta == 0.0 {
            return;
        }
        let limit = self.params.max_neighbours;
        match self.items[a as usize].find(b) {
            Some(position_a) => {
                let Some(position_b) = self.items[b as usize].find(a) else {
                    // Rows are symmetric (checked on load, kept by every update).
                    return;
                };
                let value = self.items[a as usize].values[position_a] + delta;
                if value > 0.0 {
                    self.items[a as usize].values[position_a] = value;
                    self.items[b as usize].values[position_b] = value;
                } else {
                    self.items[a as usize].remove_at(position_a);
                    self.items[b as usize].remove_at(position_b);
                }
            }
            None if delta < 0.0 => {}
            None => {
                if self.items[a as usize].neighbours.len() >= limit {
                    self.prune_row(a);
                }
                if self.items[b as usize].neighbours.len() >= limit {
                    self.prune_row(b);
                }
                self.items[a as usize].push(b, delta, limit);
                self.items[b as usize].push(a, delta, limit);
            }
        }
    }

    /// Drops the weakest eighth (at least one) of `a`'s row from both rows: smallest value
    /// first, ties by internal id (lower first). Ties are common (many pairs co-occurred once),
    /// and the id is at hand, where the neighbours' recency would cost a cache miss each; the
    /// state keeps ids, so the choice is reproducible.
    fn prune_row(&mut self, a: u32) {
        let Self { items, prune, .. } = self;
        let row = &items[a as usize];
        let len = row.neighbours.len();
        if len == 0 {
            return;
        }
        let drop = (len / 8).max(1);
        prune.clear();
        for (position, (&id, &value)) in row.neighbours.iter().zip(&row.values).enumerate() {
            prune.push(PruneCandidate {
                value,
                id,
                position: position as u32,
            });
        }
        prune.select_nth_unstable_by(drop - 1, |x, y| {
            x.value.total_cmp(&y.value).then(x.id.cmp(&y.id))
        });
        let dropped = &mut prune[..drop];
        // Last position first: `swap_remove` then only moves entries that stay.
        dropped.sort_unstable_by_key(|candidate| std::cmp::Reverse(candidate.position));
        let row = &mut items[a as usize];
        for candidate in dropped.iter() {
            row.remove_at(candidate.position as usize);
        }
        for candidate in dropped.iter() {
            items[candidate.id as usize].remove_neighbour(a);
        }
    }

    /// The canonical serialised form: the live items by id, the free list, each
    /// co-occurrence once as (lower id, higher id), sorted.
    fn to_state(&self) -> SimilarityState {
        let live = |item: &Item| !item.name.is_empty();
        let items = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, item)| live(item))
            .map(|(id, item)| ItemState {
                id: id as u32,
                name: item.name.clone(),
                self_cooccurrence: item.diagonal,
                touched: item.touched,
            })
            .collect();
        let mut pairs = Vec::new();
        for (low, item) in self.items.iter().enumerate() {
            for (&high, &value) in item.neighbours.iter().zip(&item.values) {
                if high as usize > low {
                    pairs.push(PairState {
                        low: low as u32,
                        high,
                        cooccurrence: value,
                    });
                }
            }
        }
        pairs.sort_unstable_by_key(|pair| (pair.low, pair.high));
        SimilarityState {
            params: self.params,
            clock: self.clock,
            slots: self.items.len() as u32,
            free: self.free.clone(),
            items,
            pairs,
        }
    }

    /// Rebuilds a model from its serialised form, checking it first.
    fn from_state(state: SimilarityState) -> Result<Self, ModelError> {
        let invalid = |what: String| Err(ModelError::InvalidState(what));
        state
            .params
            .validate()
            .map_err(|error| ModelError::InvalidState(error.to_string()))?;
        let params = state.params;
        let slots = state.slots as usize;
        if slots > params.max_items || state.items.len() + state.free.len() != slots {
            return invalid(format!(
                "{} items and {} free slots in {slots} slots (max_items {})",
                state.items.len(),
                state.free.len(),
                params.max_items
            ));
        }
        let mut model = Self::empty(params);
        model.items.reserve_exact(slots);
        model.items.resize_with(slots, Item::vacant);
        let mut live = vec![false; slots];
        let mut previous: Option<u32> = None;
        for item in &state.items {
            let id = item.id;
            if previous.is_some_and(|last| last >= id) || id as usize >= slots {
                return invalid(format!(
                    "item id {id} is out of order, repeated or beyond the {slots} slots"
                ));
            }
            previous = Some(id);
            if !valid_name(&item.name) {
                return invalid(format!("item {id} has an empty or too long name"));
            }
            if !(item.self_cooccurrence.is_finite() && item.self_cooccurrence > 0.0) {
                return invalid(format!(
                    "item {:?} has A(i,i) = {}, not finite and > 0",
                    item.name, item.self_cooccurrence
                ));
            }
            if !(1..=state.clock).contains(&item.touched) {
                return invalid(format!(
                    "item {:?} touched at {}, not in 1..={}",
                    item.name, item.touched, state.clock
                ));
            }
            if model.contains(&item.name) {
                return invalid(format!("item {:?} is listed twice", item.name));
            }
            live[id as usize] = true;
            let slot = &mut model.items[id as usize];
            slot.name = item.name.clone();
            slot.diagonal = item.self_cooccurrence;
            slot.touched = item.touched;
            let Self {
                index,
                hasher,
                items,
                ..
            } = &mut model;
            index.insert_unique(hasher.hash_one(item.name.as_str()), id, |&other| {
                hasher.hash_one(items[other as usize].name.as_str())
            });
        }
        // The recency list, least recent first; times are unique.
        let mut by_recency: Vec<(u64, u32)> = state
            .items
            .iter()
            .map(|item| (item.touched, item.id))
            .collect();
        by_recency.sort_unstable();
        if by_recency.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return invalid("two items were touched at the same time".to_string());
        }
        for &(_, id) in &by_recency {
            model.push_newest(id);
        }
        model.clock = state.clock;
        for &id in &state.free {
            match live.get_mut(id as usize) {
                Some(slot) if !*slot => *slot = true,
                _ => {
                    return invalid(format!(
                        "free slot {id} is live, repeated or beyond the {slots} slots"
                    ))
                }
            }
        }
        model.free.reserve_exact(slots);
        model.free.extend_from_slice(&state.free);

        let mut degree = vec![0usize; slots];
        let mut previous: Option<(u32, u32)> = None;
        for pair in &state.pairs {
            let (low, high) = (pair.low, pair.high);
            let known = |id: u32| {
                model
                    .items
                    .get(id as usize)
                    .is_some_and(|item| !item.name.is_empty())
            };
            if low >= high || !known(low) || !known(high) {
                return invalid(format!(
                    "pair ({low}, {high}) is not an upper-triangle pair of live items"
                ));
            }
            if previous.is_some_and(|last| last >= (low, high)) {
                return invalid(format!("pair ({low}, {high}) is out of order or repeated"));
            }
            previous = Some((low, high));
            if !(pair.cooccurrence.is_finite() && pair.cooccurrence > 0.0) {
                return invalid(format!(
                    "pair ({low}, {high}) has A = {}, not finite and > 0",
                    pair.cooccurrence
                ));
            }
            for end in [low, high] {
                degree[end as usize] += 1;
                if degree[end as usize] > params.max_neighbours {
                    return invalid(format!(
                        "item {end} has more than max_neighbours {} co-occurrences",
                        params.max_neighbours
                    ));
                }
            }
        }
        for (item, &degree) in model.items.iter_mut().zip(&degree) {
            item.neighbours.reserve_exact(degree);
            item.values.reserve_exact(degree);
        }
        for pair in &state.pairs {
            let (low, high) = (pair.low as usize, pair.high as usize);
            model.items[low].neighbours.push(pair.high);
            model.items[low].values.push(pair.cooccurrence);
            model.items[high].neighbours.push(pair.low);
            model.items[high].values.push(pair.cooccurrence);
        }
        model.check()?;
        Ok(model)
    }

    /// Checks every invariant of the live structure: index ↔ slots, recency list, free list,
    /// rows bounded, without repeats, symmetric, finite and positive.
    fn check(&self) -> Result<(), ModelError> {
        let invalid = |what: String| Err(ModelError::InvalidState(what));
        let params = &self.params;
        if self.index.len() > params.max_items || self.items.len() > params.max_items {
            return invalid(format!(
                "{} items in {} slots, more than max_items {}",
                self.index.len(),
                self.items.len(),
                params.max_items
            ));
        }
        let mut live = vec![false; self.items.len()];
        let (mut count, mut id, mut newer, mut touched) = (0, self.newest, NIL, u64::MAX);
        while id != NIL {
            let Some(item) = self.items.get(id as usize) else {
                return invalid(format!("recency list holds id {id} out of range"));
            };
            if live[id as usize]
                || item.newer != newer
                || item.touched >= touched
                || item.touched > self.clock
            {
                return invalid(format!("recency list broken at id {id}"));
            }
            if item.name.is_empty() || self.lookup(&item.name) != Some(id) {
                return invalid(format!("item {:?} is not indexed", item.name));
            }
            live[id as usize] = true;
            count += 1;
            touched = item.touched;
            newer = id;
            id = item.older;
        }
        if newer != self.oldest || count != self.index.len() {
            return invalid(format!(
                "recency list holds {count} items, the index {}",
                self.index.len()
            ));
        }
        let mut free = vec![false; self.items.len()];
        for &id in &self.free {
            match free.get_mut(id as usize) {
                Some(seen) if !*seen && !live[id as usize] => *seen = true,
                _ => {
                    return invalid(format!(
                        "free list holds id {id} twice, live or out of range"
                    ))
                }
            }
        }
        // `seen[k] == row + 1` while checking `row`: catches a neighbour listed twice.
        let mut seen = vec![0u32; self.items.len()];
        for (id, item) in self.items.iter().enumerate() {
            if !live[id] {
                if !item.neighbours.is_empty() || !item.name.is_empty() || !free[id] {
                    return invalid(format!("vacant slot {id} is not free and empty"));
                }
                continue;
            }
            if !(item.diagonal.is_finite() && item.diagonal > 0.0) {
                return invalid(format!(
                    "item {:?} has A(i,i) = {}",
                    item.name, item.diagonal
                ));
            }
            if item.neighbours.len() != item.values.len()
                || item.neighbours.len() > params.max_neighbours
                || item.neighbours.capacity() > params.max_neighbours
            {
                return invalid(format!("row of {:?} exceeds max_neighbours", item.name));
            }
            for (&neighbour, &value) in item.neighbours.iter().zip(&item.values) {
                if neighbour as usize == id
                    || !live.get(neighbour as usize).copied().unwrap_or(false)
                {
                    return invalid(format!(
                        "row of {:?} names id {neighbour}, not another live item",
                        item.name
                    ));
                }
                if seen[neighbour as usize] == id as u32 + 1 {
                    return invalid(format!("row of {:?} lists id {neighbour} twice", item.name));
                }
                seen[neighbour as usize] = id as u32 + 1;
                if !(value.is_finite() && value > 0.0) {
                    return invalid(format!("A({:?}, id {neighbour}) = {value}", item.name));
                }
                let mirror = self.pair(neighbour, id as u32);
                if mirror.to_bits() != value.to_bits() {
                    return invalid(format!(
                        "A is not symmetric: A({:?}, id {neighbour}) = {value}, the mirror {mirror}",
                        item.name
                    ));
                }
            }
        }
        if self.free.len() + count != self.items.len() {
            return invalid(format!(
                "{} free and {count} live slots of {}",
                self.free.len(),
                self.items.len()
            ));
        }
        Ok(())
    }
}

/// Keeps `out` the top `n` ranked items (score descending, then name ascending) while
/// candidates are offered one by one: O(log n) for a candidate that does not make it, and
/// only candidates that do are copied.
fn offer(out: &mut Vec<ScoredItem>, n: usize, name: &CompactString, score: f64) {
    let before = |a_score: f64, a_name: &str, b_score: f64, b_name: &str| {
        a_score > b_score || (a_score == b_score && a_name < b_name)
    };
    if out.len() >= n {
        match out.last() {
            Some(last) if before(score, name, last.score, &last.item) => {}
            _ => return,
        }
        out.pop();
    }
    let position = out.partition_point(|entry| before(entry.score, &entry.item, score, name));
    out.insert(
        position,
        ScoredItem {
            item: name.clone(),
            score,
        },
    );
}

/// The serialised form of an [`ItemSimilarity`]. Field order is the postcard format: append
/// only. Each co-occurrence is stored once, so an asymmetric A cannot even be written. Ids and
/// the free list are kept: pruning breaks ties by id, so a restored model continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SimilarityState {
    params: RecommendParams,
    clock: u64,
    /// Slots, live and free.
    slots: u32,
    /// Vacant slots, the next to be reused last.
    free: Vec<u32>,
    /// Live items by increasing id.
    items: Vec<ItemState>,
    /// Sorted by (low, high), low < high, both live ids.
    pairs: Vec<PairState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ItemState {
    id: u32,
    name: CompactString,
    /// `A(i,i)`.
    self_cooccurrence: f64,
    touched: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct PairState {
    low: u32,
    high: u32,
    /// `A(low, high)`.
    cooccurrence: f64,
}

impl Serialize for ItemSimilarity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_state().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ItemSimilarity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = SimilarityState::deserialize(deserializer)?;
        Self::from_state(state).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::SplitMix64;

    fn params(history: usize, max_items: usize, max_neighbours: usize) -> RecommendParams {
        RecommendParams {
            history,
            max_items,
            max_neighbours,
            top_n: 10,
        }
    }

    fn model(params: RecommendParams) -> ItemSimilarity {
        ItemSimilarity::new(params).expect("valid params")
    }

    fn history(capacity: usize) -> UserHistory {
        UserHistory::new(capacity).expect("valid capacity")
    }

    /// Records an event and applies its change; returns the change.
    fn event(
        model: &mut ItemSimilarity,
        user: &mut UserHistory,
        item: &str,
        weight: f64,
    ) -> HistoryChange {
        let change = user.record(item, weight).expect("accepted event");
        model.apply(&change);
        change
    }

    fn names(list: &[ScoredItem]) -> Vec<&str> {
        list.iter().map(|entry| entry.item.as_str()).collect()
    }

    /// A recomputed from scratch: X from the users' current histories, A = XᵀX, summed over
    /// users in order.
    struct Reference {
        columns: BTreeMap<String, usize>,
        a: Vec<Vec<f64>>,
    }

    impl Reference {
        fn new(users: &[UserHistory]) -> Self {
            let mut columns = BTreeMap::new();
            for user in users {
                for (item, _) in user.items() {
                    let next = columns.len();
                    columns.entry(item.to_string()).or_insert(next);
                }
            }
            let n = columns.len();
            let mut a = vec![vec![0.0; n]; n];
            for user in users {
                for (i, x_i) in user.items() {
                    for (j, x_j) in user.items() {
                        a[columns[i]][columns[j]] += x_i * x_j;
                    }
                }
            }
            Self { columns, a }
        }

        fn cooccurrence(&self, first: &str, second: &str) -> f64 {
            match (self.columns.get(first), self.columns.get(second)) {
                (Some(&i), Some(&j)) => self.a[i][j],
                _ => 0.0,
            }
        }

        fn similarity(&self, first: &str, second: &str) -> f64 {
            match (self.columns.get(first), self.columns.get(second)) {
                (Some(i), Some(j)) if i == j => 1.0,
                (Some(&i), Some(&j)) => {
                    cosine(self.a[i][j], self.a[i][i].sqrt(), self.a[j][j].sqrt())
                }
                _ => 0.0,
            }
        }

        fn ranked(mut all: Vec<ScoredItem>, n: usize) -> Vec<ScoredItem> {
            all.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.item.cmp(&y.item)));
            all.truncate(n);
            all
        }

        fn similar_items(&self, item: &str, n: usize) -> Vec<ScoredItem> {
            let all = self
                .columns
                .keys()
                .filter(|other| other.as_str() != item)
                .map(|other| ScoredItem {
                    item: CompactString::from(other.as_str()),
                    score: self.similarity(item, other),
                })
                .filter(|entry| entry.score > 0.0)
                .collect();
            Self::ranked(all, n)
        }

        fn recommend(&self, user: &UserHistory, n: usize) -> Vec<ScoredItem> {
            let all = self
                .columns
                .keys()
                .filter(|candidate| user.weight(candidate).is_none())
                .map(|candidate| ScoredItem {
                    item: CompactString::from(candidate.as_str()),
                    score: user
                        .items()
                        .fold(0.0, |sum, (i, x)| sum + x * self.similarity(i, candidate)),
                })
                .filter(|entry| entry.score > 0.0)
                .collect();
            Self::ranked(all, n)
        }
    }

    #[test]
    fn incremental_similarities_equal_recomputation_from_scratch() {
        // History 3: items turn over fast, so they also leave every history; history 8: long
        // lists. 15 items and 14 neighbours: nothing is ever forgotten or pruned, so A is
        // exact.
        let mut totals = [0; 4];
        for (history_len, seed) in [(3, 11), (8, 12)] {
            let counts = exact_stream(history_len, seed);
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        // The streams exercised every path.
        let [duplicates, raises, evictions, departures] = totals;
        assert!(duplicates > 100, "{duplicates} duplicates");
        assert!(raises > 30, "{raises} raised weights");
        assert!(evictions > 200, "{evictions} history evictions");
        assert!(departures > 5, "{departures} items left every history");
    }

    /// 30 users, 15 items, 500 events checked against a recomputation after every event;
    /// returns the numbers of duplicates, raises, history evictions and items that left every
    /// history.
    fn exact_stream(history_len: usize, seed: u64) -> [usize; 4] {
        let names: Vec<String> = (0..15).map(|i| format!("item{i:02}")).collect();
        let weights = [1.0, 2.0, 0.5, 1.3, 2.7, 3.0, 0.1];
        let mut model = model(params(history_len, 15, 14));
        let mut users: Vec<UserHistory> = (0..30).map(|_| history(history_len)).collect();
        let mut last: Vec<Option<(usize, f64)>> = vec![None; 30];
        let mut rng = SplitMix64::new(seed);
        let (mut duplicates, mut raises, mut evictions, mut departures) = (0, 0, 0, 0);
        let mut out = Vec::new();
        let mut full_lists = 0;
        for step in 0..500 {
            let u = rng.below(30);
            let (item, weight) = match last[u] {
                // A repeat of the user's last event, at the same or a lower weight.
                Some((item, weight)) if rng.next_f64() < 0.2 => {
                    (item, weight * [1.0, 0.5][rng.below(2)])
                }
                _ => {
                    // Skewed towards a window of 4 items that moves on every 30 events, so
                    // items that fall out of it leave every history.
                    let uniform = rng.next_f64();
                    (
                        (step / 30 + (uniform * uniform * 4.0) as usize) % 15,
                        weights[rng.below(weights.len())],
                    )
                }
            };
            last[u] = Some((item, weight));
            let known_before: Vec<bool> = names.iter().map(|name| model.contains(name)).collect();
            let change = event(&mut model, &mut users[u], &names[item], weight);
            if !change.changes_weights() {
                duplicates += 1;
            } else if change.old_weight() > 0.0 {
                raises += 1;
            }
            if change.evicted().is_some() {
                evictions += 1;
            }
            assert!(change.items_after().eq(users[u].items()), "step {step}");
            model.check().expect("consistent model");

            let reference = Reference::new(&users);
            for (k, a) in names.iter().enumerate() {
                let known = reference.columns.contains_key(a);
                assert_eq!(model.contains(a), known, "{a} at step {step}");
                if known_before[k] && !known {
                    departures += 1;
                }
                for b in &names {
                    let (incremental, exact) =
                        (model.cooccurrence(a, b), reference.cooccurrence(a, b));
                    assert_eq!(
                        incremental.to_bits(),
                        exact.to_bits(),
                        "A({a},{b}) step {step}"
                    );
                    let (incremental, exact) = (model.similarity(a, b), reference.similarity(a, b));
                    assert!(
                        (incremental - exact).abs() <= 1e-12,
                        "sim({a},{b}) = {incremental} vs {exact} at step {step}"
                    );
                }
                for n in [3, 15] {
                    model.similar_items(a, n, &mut out);
                    assert_eq!(out, reference.similar_items(a, n), "{a} at step {step}");
                }
            }
            assert_eq!(model.len(), reference.columns.len());
            for (v, user) in users.iter().enumerate() {
                for n in [3, 15] {
                    model.recommend(user.items(), n, &mut out);
                    assert_eq!(out, reference.recommend(user, n), "user {v} at step {step}");
                    full_lists += usize::from(out.len() == 3);
                }
            }
            // The recommender can answer straight from the change.
            let mut from_change = Vec::new();
            model.recommend(change.items_after(), 3, &mut from_change);
            model.recommend(users[u].items(), 3, &mut out);
            assert_eq!(from_change, out);
        }
        assert!(full_lists > 1000, "only {full_lists} full lists");
        [duplicates, raises, evictions, departures]
    }

    /// Item names of a skewed population (id = population·u^power, u uniform); every seventh
    /// name is long (heap-allocated).
    fn skewed_name(rng: &mut SplitMix64, population: usize, power: i32) -> String {
        let id = (rng.next_f64().powi(power) * population as f64) as usize;
        if id % 7 == 0 {
            format!("a-rather-long-item-name-that-lives-on-the-heap-{id:08}")
        } else {
            format!("item-{id}")
        }
    }

    #[test]
    fn forgetting_and_pruning_keep_memory_under_the_bound() {
        let params = params(20, 40, 6);
        let mut model = model(params);
        let mut users: Vec<UserHistory> = (0..300).map(|_| history(20)).collect();
        let mut rng = SplitMix64::new(23);
        let mut seen = std::collections::HashSet::new();
        let (mut peak, mut longest_row) = (0, 0);
        for step in 0..20_000 {
            if step == 10_000 {
                // A clone starts with tight buffers; they must not outgrow the bound either.
                model = model.clone();
            }
            let name = skewed_name(&mut rng, 3000, 4);
            seen.insert(name.clone());
            let u = rng.below(users.len());
            event(&mut model, &mut users[u], &name, 1.0 + rng.below(3) as f64);
            assert!(model.len() <= 40, "step {step}");
            let bytes = model.memory_bytes();
            assert!(bytes <= model.memory_bound(), "{bytes} at step {step}");
            peak = peak.max(bytes);
            let row = model.items.iter().map(|item| item.neighbours.len()).max();
            longest_row = longest_row.max(row.unwrap_or(0));
            if step % 10 == 0 {
                // Checks, among the rest, that no row holds or reserves more than 6 entries.
                model.check().expect("consistent model");
            }
        }
        assert_eq!(model.len(), 40);
        assert!(seen.len() > 1000, "{} distinct items", seen.len());
        assert_eq!(longest_row, 6, "rows reached their bound");
        // The bound is not vacuous: the model gets within a factor 2 of it.
        assert!(
            2 * peak > model.memory_bound(),
            "{peak} vs {}",
            model.memory_bound()
        );
        let mut out = Vec::new();
        model.recommend(users[0].items(), 5, &mut out);
        assert!(!out.is_empty());
    }

    #[test]
    fn forgetting_and_pruning_only_underestimate_cooccurrence() {
        let names: Vec<String> = (0..60).map(|i| format!("item{i:02}")).collect();
        let mut model = model(params(6, 20, 4));
        let mut users: Vec<UserHistory> = (0..40).map(|_| history(6)).collect();
        let mut rng = SplitMix64::new(31);
        let mut below = 0;
        for step in 0..3000 {
            let uniform = rng.next_f64();
            let item = &names[(uniform * uniform * 60.0) as usize];
            let u = rng.below(users.len());
            event(
                &mut model,
                &mut users[u],
                item,
                [1.0, 2.0, 0.5][rng.below(3)],
            );
            if step % 5 != 0 {
                continue;
            }
            let reference = Reference::new(&users);
            for a in &names {
                for b in &names {
                    let (held, exact) = (model.cooccurrence(a, b), reference.cooccurrence(a, b));
                    assert!(
                        (0.0..=exact).contains(&held),
                        "A({a},{b}) = {held} vs {exact} at step {step}"
                    );
                    below += usize::from(held < exact);
                }
            }
        }
        assert!(
            below > 2000,
            "only {below} underestimates: nothing was dropped"
        );
    }

    #[test]
    fn least_recently_touched_item_is_forgotten_first() {
        let mut model = model(params(10, 3, 10));
        let mut user = history(10);
        for item in ["a", "b", "c"] {
            event(&mut model, &mut user, item, 1.0);
        }
        // A duplicate changes no weight but touches "a": "b" is now the least recent.
        let change = event(&mut model, &mut user, "a", 1.0);
        assert!(!change.changes_weights());
        event(&mut model, &mut user, "d", 2.0);
        assert!(!model.contains("b"));
        for item in ["a", "c", "d"] {
            assert!(model.contains(item), "{item}");
        }
        assert_eq!(model.len(), 3);
        assert_eq!(model.cooccurrence("a", "b"), 0.0);
        assert_eq!(model.cooccurrence("a", "c"), 1.0);
        assert_eq!(model.cooccurrence("a", "d"), 2.0);
        assert_eq!(model.cooccurrence("d", "d"), 4.0);
        let mut out = Vec::new();
        model.similar_items("a", 10, &mut out);
        assert_eq!(names(&out), ["c", "d"]);
        model.check().expect("forgetting keeps the rows symmetric");
        // The user still has "b"; a raise brings it back with only what follows.
        assert_eq!(user.weight("b"), Some(1.0));
        event(&mut model, &mut user, "b", 3.0);
        assert!(model.contains("b") && !model.contains("c"));
        assert_eq!(model.cooccurrence("b", "b"), 9.0 - 1.0);
        assert_eq!(model.cooccurrence("b", "a"), 2.0 * 1.0);
        assert_eq!(model.cooccurrence("b", "d"), 2.0 * 2.0);
        model.check().expect("consistent model");
    }

    #[test]
    fn weakest_eighth_of_a_full_row_is_pruned_first() {
        // max_neighbours 8: a full row drops max(1, 8/8) = 1 entry.
        let mut model = model(params(2, 100, 8));
        let mut users: Vec<UserHistory> = (0..10).map(|_| history(2)).collect();
        // A(hub, n_k) = weight of n_k; n1 and n2 tie at 2, and n1 has the lower id.
        let weights = [2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        for (k, &weight) in weights.iter().enumerate() {
            event(&mut model, &mut users[k], &format!("n{}", k + 1), weight);
            event(&mut model, &mut users[k], "hub", 1.0);
        }
        assert_eq!(
            model.items[model.lookup("hub").expect("known") as usize]
                .neighbours
                .len(),
            8
        );
        event(&mut model, &mut users[8], "new", 1.0);
        event(&mut model, &mut users[8], "hub", 1.0);
        assert_eq!(model.cooccurrence("hub", "n1"), 0.0, "weakest, lower id");
        assert_eq!(
            model.cooccurrence("n1", "hub"),
            0.0,
            "dropped from both rows"
        );
        assert_eq!(model.similarity("hub", "n1"), 0.0);
        assert_eq!(
            model.cooccurrence("hub", "n2"),
            2.0,
            "same value, higher id"
        );
        assert_eq!(model.cooccurrence("hub", "new"), 1.0, "the new pair enters");
        for (k, &weight) in weights.iter().enumerate().skip(1) {
            assert_eq!(model.cooccurrence("hub", &format!("n{}", k + 1)), weight);
        }
        // A(hub,hub) is never pruned: one per user.
        assert_eq!(model.cooccurrence("hub", "hub"), 9.0);
        model.check().expect("consistent model");
        // Evicting n1 from its user's history removes a pair the model no longer holds: the
        // removal is clamped, and n1, in no history any more, is removed.
        event(&mut model, &mut users[0], "other", 1.0);
        assert!(!model.contains("n1"));
        assert_eq!(model.cooccurrence("hub", "hub"), 9.0);
        assert_eq!(model.cooccurrence("hub", "other"), 1.0);
        model.check().expect("consistent model");
    }

    #[test]
    fn duplicate_events_change_no_weight_and_leave_a_unchanged() {
        let mut model = model(RecommendParams::default());
        let mut user = history(20);
        let mut other = history(20);
        event(&mut model, &mut user, "a", 2.0);
        event(&mut model, &mut user, "b", 1.0);
        event(&mut model, &mut user, "c", 1.0);
        event(&mut model, &mut other, "a", 1.0);
        event(&mut model, &mut other, "b", 1.0);
        let snapshot = |model: &ItemSimilarity| -> Vec<f64> {
            let items = ["a", "b", "c"];
            items
                .iter()
                .flat_map(|a| items.iter().map(move |b| model.cooccurrence(a, b)))
                .collect()
        };
        let before = snapshot(&model);
        assert_eq!(before, [5.0, 3.0, 2.0, 3.0, 2.0, 1.0, 2.0, 1.0, 1.0]);

        // Same weight: moved to the front, nothing else.
        let change = user.record("b", 1.0).expect("accepted");
        assert_eq!((change.old_weight(), change.new_weight()), (1.0, 1.0));
        assert!(!change.changes_weights() && change.evicted().is_none());
        assert_eq!(change.item(), "b");
        assert_eq!(
            change.others(),
            [
                HistoryEntry {
                    item: "c".into(),
                    weight: 1.0
                },
                HistoryEntry {
                    item: "a".into(),
                    weight: 2.0
                },
            ]
        );
        model.apply(&change);
        assert_eq!(snapshot(&model), before);
        assert_eq!(model.items[model.newest as usize].name, "b", "touched");
        // Lower weight: the weight stays the maximum.
        let change = event(&mut model, &mut user, "a", 0.5);
        assert_eq!((change.old_weight(), change.new_weight()), (2.0, 2.0));
        assert!(!change.changes_weights());
        assert_eq!(snapshot(&model), before);
        assert!(user.items().eq([("a", 2.0), ("b", 1.0), ("c", 1.0)]));
        // Higher weight: raised, A follows.
        let change = event(&mut model, &mut user, "c", 3.0);
        assert_eq!((change.old_weight(), change.new_weight()), (1.0, 3.0));
        assert!(change.changes_weights());
        assert_eq!(model.cooccurrence("c", "a"), 6.0);
        assert_eq!(model.cooccurrence("c", "c"), 9.0);
        assert_eq!(model.cooccurrence("a", "b"), 3.0);
        assert_eq!(user.len(), 3);
    }

    #[test]
    fn unknown_items_and_users_get_empty_lists() {
        let mut model = model(RecommendParams::default());
        let mut out = vec![ScoredItem {
            item: "stale".into(),
            score: 1.0,
        }];
        model.similar_items("x", 10, &mut out);
        assert!(out.is_empty());
        assert_eq!(model.similarity("x", "y"), 0.0);
        assert_eq!(model.similarity("x", "x"), 0.0);
        assert_eq!(model.cooccurrence("x", "x"), 0.0);
        let empty = history(20);
        model.recommend(empty.items(), 10, &mut out);
        assert!(out.is_empty());
        model.popular(10, &mut out);
        assert!(out.is_empty());

        let (mut first, mut second, mut loner) = (history(20), history(20), history(20));
        event(&mut model, &mut first, "a", 1.0);
        event(&mut model, &mut first, "b", 1.0);
        event(&mut model, &mut second, "b", 2.0);
        event(&mut model, &mut second, "c", 1.0);
        event(&mut model, &mut loner, "solo", 2.0);
        assert_eq!(model.similarity("a", "unknown"), 0.0);
        assert_eq!(model.similarity("a", "a"), 1.0);
        assert_eq!(model.similarity("a", "c"), 0.0, "never co-occur");
        model.similar_items("solo", 10, &mut out);
        assert!(out.is_empty(), "no co-occurrence: nothing similar");
        model.recommend([("nobody-knows", 1.0)], 10, &mut out);
        assert!(out.is_empty(), "a history of unknown items");
        model.recommend(loner.items(), 10, &mut out);
        assert!(out.is_empty(), "an item that co-occurs with nothing");
        model.recommend(empty.items(), 10, &mut out);
        assert!(out.is_empty(), "an empty history");
        model.recommend(first.items(), 0, &mut out);
        assert!(out.is_empty(), "n = 0");
        // The documented fallback: A(i,i), ties by name.
        model.popular(3, &mut out);
        assert_eq!(names(&out), ["b", "solo", "a"]);
        assert_eq!(out[0].score, 5.0);
        assert_eq!(out[1].score, 4.0);
        assert_eq!(out[2].score, 1.0);
        model.popular(10, &mut out);
        assert_eq!(names(&out), ["b", "solo", "a", "c"]);
    }

    #[test]
    fn rejected_events_leave_the_history_unchanged() {
        let mut user = history(3);
        user.record("a", 1.0).expect("accepted");
        let before = user.clone();
        let long = "x".repeat(MAX_ITEM_NAME_BYTES + 1);
        for (item, weight) in [
            ("b", f64::NAN),
            ("b", f64::INFINITY),
            ("b", f64::NEG_INFINITY),
            ("b", 0.0),
            ("b", -1.0),
            ("b", MAX_WEIGHT + 0.5),
            ("", 1.0),
            (long.as_str(), 1.0),
        ] {
            assert!(user.record(item, weight).is_none(), "{item:?} {weight}");
            assert_eq!(user, before);
        }
        let longest = "y".repeat(MAX_ITEM_NAME_BYTES);
        assert!(user.record(&longest, MAX_WEIGHT).is_some());
        // Weights are rounded to 1/1024, at least one quantum.
        let change = user.record("tenth", 0.1).expect("accepted");
        assert_eq!(change.new_weight(), 102.0 / 1024.0);
        let change = user.record("tiny", 1e-9).expect("accepted");
        assert_eq!(change.new_weight(), WEIGHT_QUANTUM);
        assert_eq!(change.evicted().map(|entry| entry.item.as_str()), Some("a"));
        assert_eq!(user.len(), 3);
    }

    #[test]
    fn ties_are_broken_by_item_name() {
        let mut model = model(RecommendParams::default());
        let mut users: Vec<UserHistory> = (0..3).map(|_| history(20)).collect();
        // "zeta" and "alpha" co-occur with "hub" identically; "zeta" arrives first.
        event(&mut model, &mut users[0], "hub", 1.0);
        event(&mut model, &mut users[0], "zeta", 1.0);
        event(&mut model, &mut users[1], "hub", 1.0);
        event(&mut model, &mut users[1], "alpha", 1.0);
        event(&mut model, &mut users[2], "hub", 1.0);
        let mut out = Vec::with_capacity(4);
        let buffer = out.as_ptr();
        model.similar_items("hub", 10, &mut out);
        assert_eq!(names(&out), ["alpha", "zeta"]);
        assert_eq!(out[0].score, out[1].score);
        model.similar_items("hub", 1, &mut out);
        assert_eq!(names(&out), ["alpha"]);
        model.recommend(users[2].items(), 10, &mut out);
        assert_eq!(names(&out), ["alpha", "zeta"]);
        assert_eq!(out.as_ptr(), buffer, "capacity is reused");
    }

    #[test]
    fn similarity_is_the_cosine_of_cooccurrence() {
        let mut model = model(RecommendParams::default());
        let mut users: Vec<UserHistory> = (0..4).map(|_| history(20)).collect();
        for (u, item, weight) in [
            (0, "a", 1.0),
            (0, "b", 2.0),
            (1, "a", 3.0),
            (1, "c", 1.0),
            (2, "b", 1.0),
            (2, "c", 2.0),
        ] {
            event(&mut model, &mut users[u], item, weight);
        }
        // A(a,a) = 1 + 9, A(b,b) = 4 + 1, A(c,c) = 1 + 4, A(a,b) = 2, A(a,c) = 3, A(b,c) = 2.
        let expected = [
            ("a", "b", 2.0 / 50f64.sqrt()),
            ("a", "c", 3.0 / 50f64.sqrt()),
            ("b", "c", 2.0 / 5.0),
        ];
        for (a, b, sim) in expected {
            assert!((model.similarity(a, b) - sim).abs() < 1e-15, "{a},{b}");
            assert_eq!(model.similarity(a, b), model.similarity(b, a));
        }
        assert_eq!(model.cooccurrence("a", "a"), 10.0);
        // A new user who has "a" at weight 2: c scores 2·3/√50, b 2·2/√50.
        event(&mut model, &mut users[3], "a", 2.0);
        // Their own row changes A: A(a,a) = 14 now.
        let mut out = Vec::new();
        model.recommend(users[3].items(), 10, &mut out);
        assert_eq!(names(&out), ["c", "b"]);
        assert!((out[0].score - 2.0 * 3.0 / (14f64.sqrt() * 5f64.sqrt())).abs() < 1e-15);
        assert!((out[1].score - 2.0 * 2.0 / (14f64.sqrt() * 5f64.sqrt())).abs() < 1e-15);
    }

    /// A stream with forgetting and pruning; returns the model and the users.
    fn run(
        model: &mut ItemSimilarity,
        users: &mut [UserHistory],
        rng: &mut SplitMix64,
        events: usize,
    ) {
        for _ in 0..events {
            let name = skewed_name(rng, 200, 2);
            let u = rng.below(users.len());
            event(model, &mut users[u], &name, [1.0, 0.5, 2.5][rng.below(3)]);
        }
    }

    /// Every observable answer of the model, by name.
    fn answers(model: &mut ItemSimilarity, users: &[UserHistory]) -> Vec<Vec<ScoredItem>> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        let names: Vec<String> = (0..200)
            .map(|id| {
                if id % 7 == 0 {
                    format!("a-rather-long-item-name-that-lives-on-the-heap-{id:08}")
                } else {
                    format!("item-{id}")
                }
            })
            .collect();
        for a in &names {
            model.similar_items(a, 5, &mut out);
            all.push(out.clone());
            let row = names
                .iter()
                .map(|b| ScoredItem {
                    item: b.as_str().into(),
                    score: model.similarity(a, b) + model.cooccurrence(a, b),
                })
                .collect();
            all.push(row);
        }
        for user in users {
            model.recommend(user.items(), 5, &mut out);
            all.push(out.clone());
        }
        model.popular(10, &mut out);
        all.push(out.clone());
        all
    }

    #[test]
    fn state_round_trip_gives_identical_similarities_and_lists() {
        let mut original = model(params(8, 30, 5));
        let mut users: Vec<UserHistory> = (0..50).map(|_| history(8)).collect();
        let mut rng = SplitMix64::new(41);
        run(&mut original, &mut users, &mut rng, 3000);
        assert_eq!(original.len(), 30, "forgetting happened");

        let bytes = postcard::to_allocvec(&original).expect("serialises");
        let mut restored: ItemSimilarity = postcard::from_bytes(&bytes).expect("deserialises");
        let history_bytes: Vec<Vec<u8>> = users
            .iter()
            .map(|user| postcard::to_allocvec(user).expect("serialises"))
            .collect();
        let mut restored_users: Vec<UserHistory> = history_bytes
            .iter()
            .map(|bytes| postcard::from_bytes(bytes).expect("deserialises"))
            .collect();
        assert_eq!(restored_users, users);
        assert_eq!(
            postcard::to_allocvec(&restored).expect("serialises"),
            bytes,
            "canonical form"
        );
        let expected = answers(&mut original, &users);
        assert!(expected.iter().filter(|list| !list.is_empty()).count() > 100);
        assert_eq!(answers(&mut restored, &restored_users), expected);

        // Both continue identically (same ids, same free list, same pruning ties).
        let mut twin = rng.clone();
        run(&mut original, &mut users, &mut rng, 2000);
        run(&mut restored, &mut restored_users, &mut twin, 2000);
        assert_eq!(
            answers(&mut restored, &restored_users),
            answers(&mut original, &users)
        );
        assert_eq!(
            postcard::to_allocvec(&restored).expect("serialises"),
            postcard::to_allocvec(&original).expect("serialises")
        );
        restored.check().expect("consistent model");
    }

    #[test]
    fn corrupt_similarity_state_is_rejected() {
        let mut model = model(params(8, 30, 5));
        let mut users: Vec<UserHistory> = (0..50).map(|_| history(8)).collect();
        run(&mut model, &mut users, &mut SplitMix64::new(43), 2000);
        // An item that leaves its only history frees its slot.
        let mut passer_by = history(1);
        event(&mut model, &mut passer_by, "here", 1.0);
        event(&mut model, &mut passer_by, "gone", 1.0);
        let state = model.to_state();
        assert!(state.pairs.len() > 20);
        let rejects = |bad: SimilarityState, what: &str| {
            let bytes = postcard::to_allocvec(&bad).expect("serialises");
            assert!(
                postcard::from_bytes::<ItemSimilarity>(&bytes).is_err(),
                "{what}"
            );
            assert!(
                matches!(
                    ItemSimilarity::from_state(bad),
                    Err(ModelError::InvalidState(_))
                ),
                "{what}"
            );
        };
        let with = |change: &dyn Fn(&mut SimilarityState)| {
            let mut bad = state.clone();
            change(&mut bad);
            bad
        };
        rejects(
            with(&|s| s.pairs[3].cooccurrence = f64::NAN),
            "NaN co-occurrence",
        );
        rejects(
            with(&|s| s.pairs[3].cooccurrence = -1.0),
            "negative co-occurrence",
        );
        rejects(with(&|s| s.pairs[3].cooccurrence = 0.0), "zero entry kept");
        rejects(with(&|s| s.pairs[3].high = s.slots + 3), "id out of range");
        let free = state.free.first().copied().expect("forgetting freed slots");
        rejects(
            with(&|s| {
                s.pairs[3].high = free;
                s.pairs.sort_unstable_by_key(|pair| (pair.low, pair.high));
            }),
            "pair with a free slot",
        );
        rejects(
            with(&|s| s.free.push(s.items[0].id)),
            "free slot that is live",
        );
        rejects(with(&|s| s.free.push(free)), "free slot listed twice");
        rejects(with(&|s| s.slots += 1), "slot neither live nor free");
        rejects(with(&|s| s.items.swap(2, 3)), "items out of id order");
        rejects(
            with(&|s| {
                let pair = s.pairs[3];
                s.pairs[3] = PairState {
                    low: pair.high,
                    high: pair.low,
                    ..pair
                };
            }),
            "lower-triangle entry (an asymmetric A)",
        );
        rejects(
            with(&|s| {
                let pair = s.pairs[3];
                s.pairs.insert(3, pair);
            }),
            "pair listed twice",
        );
        rejects(with(&|s| s.pairs.swap(3, 4)), "pairs out of order");
        rejects(
            with(&|s| s.items[2].self_cooccurrence = f64::NAN),
            "NaN A(i,i)",
        );
        rejects(with(&|s| s.items[2].self_cooccurrence = 0.0), "zero A(i,i)");
        rejects(
            with(&|s| s.items[2].name = s.items[5].name.clone()),
            "duplicate name",
        );
        rejects(
            with(&|s| s.items[2].name = CompactString::default()),
            "empty name",
        );
        rejects(
            with(&|s| s.items[2].touched = s.items[1].touched),
            "two items touched at once",
        );
        rejects(with(&|s| s.clock = 1), "touched after the clock");
        rejects(
            with(&|s| s.params.max_items = 10),
            "more slots than max_items",
        );
        rejects(
            with(&|s| s.params.max_neighbours = 1),
            "row longer than max_neighbours",
        );
        rejects(with(&|s| s.params.history = 0), "invalid params");
        let bytes = postcard::to_allocvec(&model).expect("serialises");
        assert!(postcard::from_bytes::<ItemSimilarity>(&bytes[..bytes.len() / 2]).is_err());
        assert!(postcard::from_bytes::<ItemSimilarity>(&bytes).is_ok());

        // The live check catches an asymmetric row.
        let mut broken = model.clone();
        let id = broken.lookup(&state.items[state.pairs[3].low as usize].name);
        let row = &mut broken.items[id.expect("known") as usize];
        row.values[0] += 1.0;
        match broken.check() {
            Err(ModelError::InvalidState(message)) => {
                assert!(message.contains("not symmetric"), "{message}")
            }
            other => panic!("asymmetric A accepted: {other:?}"),
        }
    }

    #[test]
    fn corrupt_history_state_is_rejected() {
        let mut user = history(3);
        for item in ["a", "b", "c"] {
            user.record(item, 1.5).expect("accepted");
        }
        let rejects = |bad: &UserHistory, what: &str| {
            let bytes = postcard::to_allocvec(bad).expect("serialises");
            assert!(
                postcard::from_bytes::<UserHistory>(&bytes).is_err(),
                "{what}"
            );
            assert!(
                matches!(bad.check(), Err(ModelError::InvalidState(_))),
                "{what}"
            );
        };
        let mut bad = user.clone();
        bad.entries[1].item = "a".into();
        rejects(&bad, "duplicate item");
        let mut bad = user.clone();
        bad.capacity = 2;
        rejects(&bad, "more items than the capacity");
        let mut bad = user.clone();
        bad.capacity = 0;
        rejects(&bad, "zero capacity");
        let mut bad = user.clone();
        bad.entries[0].weight = 0.3;
        rejects(&bad, "weight off the quantum grid");
        let mut bad = user.clone();
        bad.entries[0].weight = f64::NAN;
        rejects(&bad, "NaN weight");
        let mut bad = user.clone();
        bad.entries[2].item = CompactString::default();
        rejects(&bad, "empty name");
        let bytes = postcard::to_allocvec(&user).expect("serialises");
        let restored: UserHistory = postcard::from_bytes(&bytes).expect("deserialises");
        assert_eq!(restored, user);
    }

    #[test]
    fn invalid_params_are_rejected_naming_the_param() {
        let defaults = RecommendParams::default();
        assert!(defaults.validate().is_ok());
        let bad = [
            (
                "history",
                RecommendParams {
                    history: 0,
                    ..defaults
                },
            ),
            (
                "history",
                RecommendParams {
                    history: 101,
                    ..defaults
                },
            ),
            (
                "max_items",
                RecommendParams {
                    max_items: 1,
                    ..defaults
                },
            ),
            (
                "max_items",
                RecommendParams {
                    max_items: MAX_ITEMS + 1,
                    ..defaults
                },
            ),
            (
                "max_neighbours",
                RecommendParams {
                    max_neighbours: 0,
                    ..defaults
                },
            ),
            (
                "max_neighbours",
                RecommendParams {
                    max_neighbours: 10_001,
                    ..defaults
                },
            ),
            (
                "top_n",
                RecommendParams {
                    top_n: 0,
                    ..defaults
                },
            ),
            (
                "top_n",
                RecommendParams {
                    top_n: 1001,
                    ..defaults
                },
            ),
        ];
        for (name, params) in bad {
            match ItemSimilarity::new(params) {
                Err(ModelError::InvalidParams(message)) => {
                    assert!(message.starts_with(name), "{message}")
                }
                other => panic!("{params:?} accepted: {other:?}"),
            }
        }
        for capacity in [0, MAX_HISTORY + 1] {
            match UserHistory::new(capacity) {
                Err(ModelError::InvalidParams(message)) => {
                    assert!(message.starts_with("history"), "{message}")
                }
                other => panic!("history {capacity} accepted: {other:?}"),
            }
        }
        let all_bad = RecommendParams {
            history: 0,
            max_items: 0,
            max_neighbours: 0,
            top_n: 0,
        };
        match all_bad.validate() {
            Err(ModelError::InvalidParams(message)) => {
                assert_eq!(message.matches("; ").count(), 3, "{message}");
                for name in ["history", "max_items", "max_neighbours", "top_n"] {
                    assert!(
                        message.contains(&format!("{name} must be between")),
                        "{message}"
                    );
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn memory_bound_matches_its_documented_formula() {
        for max_items in [2, 10, 1000, 10_000, MAX_ITEMS] {
            for max_neighbours in [1, 8, 100, MAX_NEIGHBOURS] {
                let params = RecommendParams {
                    max_items,
                    max_neighbours,
                    ..RecommendParams::default()
                };
                let bound = params.memory_bound();
                let documented =
                    3072 + 48 * max_neighbours + max_items * (203 + 12 * max_neighbours);
                assert!(bound <= documented, "{params:?}: {bound} > {documented}");
                if max_items >= 1000 {
                    // Not loose by more than the index's and the scratch's rounding.
                    assert!(10 * bound > 9 * documented, "{params:?}: {bound}");
                }
            }
        }
        let defaults = RecommendParams::default();
        assert!((1390..1400).contains(&defaults.bytes_per_item_bound()));
        assert!((13_900_000..14_000_000).contains(&defaults.memory_bound()));
    }
}
