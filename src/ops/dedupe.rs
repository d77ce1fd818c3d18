//! Per-key de-duplication of redelivered readings (MQTT QoS 1 delivers at least once).
//!
//! A reading is identified by its key and event time: two readings of one key with the same
//! event time are the same reading. Each key remembers the event times of its last `capacity`
//! distinct readings in a ring.
//!
//! **Guarantee:** a redelivered reading is recognised if fewer than `capacity` readings of the
//! same key with other event times arrived between the original and the copy. QoS 1 redelivers
//! immediately after a reconnect, so in practice the copy follows within a few readings; the
//! default capacity of 16 leaves room for a burst. Older copies pass as new readings (and
//! event-time windows will usually refuse them as late).

use serde::{Deserialize, Serialize};

/// Default number of event times remembered per key.
pub const DEFAULT_CAPACITY: usize = 16;
/// Largest accepted capacity; bounds the state of every key.
pub const MAX_CAPACITY: usize = 1024;

/// Why a de-duplication specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DedupeError {
    /// The capacity is outside `1..=MAX_CAPACITY`.
    #[error("dedupe capacity must be between 1 and {MAX_CAPACITY} (got {capacity})")]
    CapacityOutOfRange {
        /// The capacity given.
        capacity: usize,
    },
}

/// A validated de-duplication setting, shared by every key of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeSpec {
    capacity: usize,
}

impl Default for DedupeSpec {
    fn default() -> Self {
        DedupeSpec {
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// The event times of one key's most recent distinct readings: plain data, checkpointed with
/// the key, at most `capacity` entries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DedupeState {
    /// While not full: oldest first. Once full: a ring whose oldest entry is at `next`.
    times: Vec<i64>,
    /// Where the next event time is written once the ring is full.
    next: usize,
}

impl DedupeState {
    /// Number of event times remembered.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether no event time is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Re-establishes the ring invariant for `capacity` after a restore with another capacity
    /// (or a damaged `next`): oldest first, newest `capacity` kept.
    fn fit(&mut self, capacity: usize) {
        let len = self.times.len();
        let ordered = if len < capacity {
            self.next == 0
        } else {
            len == capacity && self.next < len
        };
        if ordered {
            return;
        }
        if len > 0 {
            self.times.rotate_left(self.next % len);
        }
        if len > capacity {
            self.times.drain(..len - capacity);
        }
        self.next = 0;
    }
}

impl DedupeSpec {
    /// A spec remembering `capacity` event times per key.
    ///
    /// # Errors
    /// [`DedupeError::CapacityOutOfRange`] unless `1 <= capacity <= MAX_CAPACITY`.
    pub fn new(capacity: usize) -> Result<Self, DedupeError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(DedupeError::CapacityOutOfRange { capacity });
        }
        Ok(DedupeSpec { capacity })
    }

    /// How many event times each key remembers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// An empty state with room for `capacity` event times (so inserting never allocates).
    pub fn new_state(&self) -> DedupeState {
        DedupeState {
            times: Vec::with_capacity(self.capacity),
            next: 0,
        }
    }

    /// Returns `true` if a reading at `time_ms` was already seen (drop it); otherwise remembers
    /// it, forgetting the oldest remembered time when full, and returns `false`. A state saved
    /// with another capacity keeps its newest entries.
    pub fn seen_or_insert(&self, st: &mut DedupeState, time_ms: i64) -> bool {
        st.fit(self.capacity);
        if st.times.contains(&time_ms) {
            return true;
        }
        if st.times.len() < self.capacity {
            st.times.push(time_ms);
        } else if let Some(slot) = st.times.get_mut(st.next) {
            *slot = time_ms;
            st.next = (st.next + 1) % self.capacity;
        }
        false
    }
}
