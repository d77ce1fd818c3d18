//! The serialised form of an [`ItemSimilarity`], and the checks a restored one passes.

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

impl ItemSimilarity {
    /// The canonical serialised form: the live items by id, the free list, each
    /// co-occurrence once as (lower id, higher id), sorted.
    pub(super) fn to_state(&self) -> SimilarityState {
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
    pub(super) fn from_state(state: SimilarityState) -> Result<Self, ModelError> {
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
    pub(super) fn check(&self) -> Result<(), ModelError> {
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

/// The serialised form of an [`ItemSimilarity`]. Field order is the postcard format: append
/// only. Each co-occurrence is stored once, so an asymmetric A cannot even be written. Ids and
/// the free list are kept: pruning breaks ties by id, so a restored model continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SimilarityState {
    pub(super) params: RecommendParams,
    pub(super) clock: u64,
    /// Slots, live and free.
    pub(super) slots: u32,
    /// Vacant slots, the next to be reused last.
    pub(super) free: Vec<u32>,
    /// Live items by increasing id.
    pub(super) items: Vec<ItemState>,
    /// Sorted by (low, high), low < high, both live ids.
    pub(super) pairs: Vec<PairState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ItemState {
    pub(super) id: u32,
    pub(super) name: CompactString,
    /// `A(i,i)`.
    pub(super) self_cooccurrence: f64,
    pub(super) touched: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct PairState {
    pub(super) low: u32,
    pub(super) high: u32,
    /// `A(low, high)`.
    pub(super) cooccurrence: f64,
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
