//! The item-item model: co-occurrences, similarities, ranked lists, pruning to the bounds.

use compact_str::CompactString;
use hashbrown::HashTable;

use super::*;

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
pub(super) struct Item {
    pub(super) name: CompactString,
    /// `A(i,i)`, > 0 for a live item.
    pub(super) diagonal: f64,
    /// The model's clock at the last event about the item (unique among live items).
    pub(super) touched: u64,
    /// Next more recently touched item, or `NIL`.
    pub(super) newer: u32,
    /// Next less recently touched item, or `NIL`.
    pub(super) older: u32,
    /// Neighbour ids, distinct.
    pub(super) neighbours: Vec<u32>,
    /// `A(i, neighbours[k])`, > 0.
    pub(super) values: Vec<f64>,
}

impl Item {
    pub(super) fn vacant() -> Self {
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
    pub(super) fn find(&self, id: u32) -> Option<usize> {
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

    pub(super) fn remove_at(&mut self, position: usize) {
        self.neighbours.swap_remove(position);
        self.values.swap_remove(position);
    }

    pub(super) fn remove_neighbour(&mut self, id: u32) {
        if let Some(position) = self.find(id) {
            self.remove_at(position);
        }
    }

    /// Appends an entry, growing the row by doubling but never beyond `limit` entries of
    /// capacity (a full row is pruned before an insertion).
    pub(super) fn push(&mut self, id: u32, value: f64, limit: usize) {
        let len = self.neighbours.len();
        if len == self.neighbours.capacity() || len == self.values.capacity() {
            let target = (2 * len).max(4).min(limit).max(len + 1);
            self.neighbours.reserve_exact(target - len);
            self.values.reserve_exact(target - len);
        }
        self.neighbours.push(id);
        self.values.push(value);
    }

    pub(super) fn heap_bytes(&self) -> usize {
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
pub(super) struct PruneCandidate {
    pub(super) value: f64,
    pub(super) id: u32,
    pub(super) position: u32,
}

/// The item-item co-occurrence model of one pipeline; see the [module documentation](super).
///
/// Item names are interned to `u32` ids (a hash index on the names held in the slots), so a
/// row entry is 12 bytes. Ids are internal, but the state keeps them (and the free list), so a
/// restored model continues exactly like the original, pruning ties included.
///
/// Serialises with serde in a canonical form (items by id, each co-occurrence once);
/// deserialising checks it and fails with [`ModelError::InvalidState`] on a corrupt state.
#[derive(Debug, Clone)]
pub struct ItemSimilarity {
    pub(super) params: RecommendParams,
    /// Slots by id; at most `max_items`.
    pub(super) items: Vec<Item>,
    /// Ids of the live items, hashed by name.
    pub(super) index: HashTable<u32>,
    /// Randomly seeded: item names come from the network.
    pub(super) hasher: ahash::RandomState,
    /// Vacant slots.
    pub(super) free: Vec<u32>,
    /// Most recently touched live item, or `NIL`.
    pub(super) newest: u32,
    /// Least recently touched live item, or `NIL`: the next to be forgotten.
    pub(super) oldest: u32,
    /// Counts touches.
    pub(super) clock: u64,
    /// Scratch: the ids and weights of a change's or a query's known items.
    pub(super) resolved: Vec<(u32, f64)>,
    /// Scratch of pruning.
    pub(super) prune: Vec<PruneCandidate>,
    /// Scratch of `recommend`: a score per slot (0 when unused).
    pub(super) scores: Vec<f64>,
    /// Scratch of `recommend`: the slots with a score.
    pub(super) candidates: Vec<u32>,
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

    pub(super) fn empty(params: RecommendParams) -> Self {
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
    /// documentation](super)), then forgetting and pruning as the bounds require.
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

    pub(super) fn find_id(
        index: &HashTable<u32>,
        hasher: &ahash::RandomState,
        items: &[Item],
        name: &str,
    ) -> Option<u32> {
        index
            .find(hasher.hash_one(name), |&id| items[id as usize].name == name)
            .copied()
    }

    pub(super) fn lookup(&self, name: &str) -> Option<u32> {
        Self::find_id(&self.index, &self.hasher, &self.items, name)
    }

    /// `A(i, j)` for two live ids, `i ≠ j`.
    pub(super) fn pair(&self, i: u32, j: u32) -> f64 {
        let row = &self.items[i as usize];
        row.find(j).map_or(0.0, |position| row.values[position])
    }

    /// Makes `id` the most recently touched item.
    pub(super) fn touch(&mut self, id: u32) {
        self.clock = self.clock.saturating_add(1);
        self.items[id as usize].touched = self.clock;
        if self.newest != id {
            self.unlink(id);
            self.push_newest(id);
        }
    }

    pub(super) fn unlink(&mut self, id: u32) {
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

    pub(super) fn push_newest(&mut self, id: u32) {
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
    pub(super) fn insert_item(&mut self, name: &str) -> u32 {
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
    pub(super) fn remove_item(&mut self, id: u32) {
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
    pub(super) fn add_pair(&mut self, a: u32, b: u32, delta: f64) {
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
    pub(super) fn prune_row(&mut self, a: u32) {
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
}

/// Keeps `out` the top `n` ranked items (score descending, then name ascending) while
/// candidates are offered one by one: O(log n) for a candidate that does not make it, and
/// only candidates that do are copied.
pub(super) fn offer(out: &mut Vec<ScoredItem>, n: usize, name: &CompactString, score: f64) {
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
