//! The key states of a replay, held within `[runtime] max_resident_keys` and `max_memory` the
//! way the daemon's shards hold theirs: past either bound the least recently used keys are
//! passivated — encoded exactly as the daemon writes them, into a temporary sled store — and
//! restored from it on their next reading. Encoding is lossless (every float is stored with
//! its bits), so a bounded replay writes the same outputs, byte for byte, as one that keeps
//! every key in memory.
//!
//! **No cost while the keys fit.** A reading of a resident key is one hash lookup and one
//! counter store (its last use), as before. Recency is a counter per access, not a linked
//! list: when a bound is passed, the oldest keys are found by one selection over the resident
//! keys' counters and passivated together (a 16th of `max_resident_keys`, or a 32nd of the
//! resident keys for `max_memory`), so a scan is paid for by many passivations. The store is
//! created on the first passivation (a replay whose keys fit never touches the disk), in a
//! new directory under the system's temporary directory (`TMPDIR`), removed when the replay
//! ends; until something has been passivated, a new key is not looked up in it.
//!
//! The byte budget is the daemon's ([`Budget`]): it is checked when a key is activated, and
//! only the `edgeflow` binary, which counts its heap, enforces it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::RuntimeConfig;
use crate::memory::Budget;
use crate::pipeline::{KeyState, Pipeline, Pipelines};
use crate::store::{Store, StoreError};

/// A resident key: its state and when it was last used (the replay's access counter).
struct Resident {
    state: KeyState,
    last_used: u64,
}

/// How the bounds were applied (part of the replay summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    /// Key states written to the temporary store (a key passivated twice counts twice).
    pub passivated: u64,
    /// Of those, passivated because the heap was over `max_memory`'s budget.
    pub passivated_for_memory: u64,
    /// Key states read back from it (a passivated key's next reading).
    pub restored: u64,
    /// Most keys resident at once (after passivation).
    pub peak_resident: u64,
}

/// The temporary store and the directory it lives in (removed when this is dropped).
struct Spill {
    /// Declared before `dir`: fields drop in order, so sled lets go before the directory goes.
    store: Store,
    dir: TempDir,
}

/// A directory removed (with everything in it) when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(
                "could not remove the replay's temporary store {}: {e}",
                self.0.display()
            );
        }
    }
}

/// Errors of the key store of a replay.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The temporary directory could not be created.
    #[error("cannot create a temporary store for passivated keys under {path}: {source} (set TMPDIR to a writable directory, or raise [runtime] max_resident_keys / max_memory so the keys fit in memory)")]
    TempDir {
        /// The directory it was to be created in.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store failed (opening, writing or reading a passivated key).
    #[error(
        "temporary store of passivated keys at {path}: {source} (is the disk under TMPDIR full?)"
    )]
    Store {
        /// The store's directory.
        path: PathBuf,
        /// The underlying error.
        source: StoreError,
    },
}

/// The key states of every pipeline of a replay (see the module doc).
pub(crate) struct ReplayKeys {
    /// Per pipeline index: the resident keys.
    maps: Vec<HashMap<String, Resident, ahash::RandomState>>,
    /// The access counter: incremented on every access, so the values are unique.
    clock: u64,
    /// Resident keys over all pipelines.
    resident: usize,
    max_resident: usize,
    budget: Budget,
    /// Page cache of the temporary store (`[store] cache_bytes`).
    cache_bytes: u64,
    spill: Option<Spill>,
    /// Per pipeline index: states written to the store (0: a new key need not be looked up).
    spilled: Vec<u64>,
    counts: KeyCounts,
    /// Scratch: the resident keys' last uses, for the selection of the oldest.
    last_uses: Vec<u64>,
    /// Scratch: an encoded state.
    encoded: Vec<u8>,
    /// The first store failure; the replay stops with it after the current line.
    error: Option<KeyStoreError>,
}

impl ReplayKeys {
    /// No keys yet, for `pipelines` pipelines, bounded by `runtime`.
    pub(crate) fn new(pipelines: usize, runtime: &RuntimeConfig, cache_bytes: u64) -> ReplayKeys {
        ReplayKeys {
            maps: (0..pipelines).map(|_| HashMap::default()).collect(),
            clock: 0,
            resident: 0,
            max_resident: runtime.max_resident_keys.max(1),
            budget: Budget::for_limit(runtime.max_memory),
            cache_bytes,
            spill: None,
            spilled: vec![0; pipelines],
            counts: KeyCounts::default(),
            last_uses: Vec::new(),
            encoded: Vec::new(),
            error: None,
        }
    }

    /// Runs `f` on `key`'s state in `p`: the resident one, else the one passivated earlier,
    /// else a fresh one. Activating a key may passivate others (never this one).
    #[inline]
    pub(crate) fn with_state<R>(
        &mut self,
        pipelines: &Pipelines,
        p: &Pipeline,
        key: &str,
        f: impl FnOnce(&mut KeyState) -> R,
    ) -> R {
        self.clock += 1;
        let now = self.clock;
        if let Some(r) = self.maps.get_mut(p.index).and_then(|m| m.get_mut(key)) {
            r.last_used = now;
            return f(&mut r.state);
        }
        self.activate(pipelines, p, key, now);
        match self.maps.get_mut(p.index).and_then(|m| m.get_mut(key)) {
            Some(r) => f(&mut r.state),
            // Only for a pipeline index beyond the ones this was built for.
            None => f(&mut p.new_state()),
        }
    }

    /// Makes `key` resident (restored or fresh), then keeps the bounds.
    #[cold]
    fn activate(&mut self, pipelines: &Pipelines, p: &Pipeline, key: &str, now: u64) {
        let state = match self.load(p, key) {
            Some(state) => {
                self.counts.restored += 1;
                state
            }
            None => p.new_state(),
        };
        let Some(map) = self.maps.get_mut(p.index) else {
            return;
        };
        map.insert(
            key.to_owned(),
            Resident {
                state,
                last_used: now,
            },
        );
        self.resident += 1;
        if self.resident > self.max_resident {
            // The newest key is never among the oldest `resident - 1`.
            let n = (self.max_resident / 16).clamp(1, self.resident - 1);
            self.passivate_oldest(pipelines, n);
        } else if self.budget.exceeded() {
            let mut shed = 0;
            while self.resident > 1 && self.budget.still_above_low() {
                let n = (self.resident / 32).clamp(1, self.resident - 1);
                let done = self.passivate_oldest(pipelines, n);
                if done == 0 {
                    break;
                }
                shed += done;
            }
            self.counts.passivated_for_memory += shed as u64;
        }
        self.counts.peak_resident = self.counts.peak_resident.max(self.resident as u64);
    }

    /// The state `key` of `p` was passivated with, if it was (a failure is kept in `error`
    /// and the key starts afresh: the replay stops after this line).
    fn load(&mut self, p: &Pipeline, key: &str) -> Option<KeyState> {
        if self.spilled.get(p.index).is_none_or(|&n| n == 0) {
            return None;
        }
        let spill = self.spill.as_ref()?;
        match spill.store.get(&p.name, key) {
            Ok(Some(bytes)) => match p.restore_state(&bytes) {
                Ok(Some(state)) => Some(state),
                // The state was written by this process with this pipeline: it always reads.
                Ok(None) => None,
                Err(source) => {
                    self.fail(spill.dir.0.clone(), source);
                    None
                }
            },
            Ok(None) => None,
            Err(source) => {
                self.fail(spill.dir.0.clone(), source);
                None
            }
        }
    }

    fn fail(&mut self, path: PathBuf, source: StoreError) {
        if self.error.is_none() {
            self.error = Some(KeyStoreError::Store { path, source });
        }
    }

    /// Passivates the `n` least recently used keys (over all pipelines); returns how many
    /// were written (fewer only on a store failure, which is kept in `error`).
    fn passivate_oldest(&mut self, pipelines: &Pipelines, n: usize) -> usize {
        if n == 0 || self.error.is_some() {
            return 0;
        }
        self.last_uses.clear();
        for map in &self.maps {
            self.last_uses.extend(map.values().map(|r| r.last_used));
        }
        let n = n.min(self.last_uses.len());
        let Some(n_th) = n.checked_sub(1) else {
            return 0;
        };
        // Last uses are unique: exactly `n` keys are at or below the n-th smallest.
        let (_, &mut oldest_kept_out, _) = self.last_uses.select_nth_unstable(n_th);
        if self.spill.is_none() {
            match open_spill(self.cache_bytes) {
                Ok(spill) => self.spill = Some(spill),
                Err(e) => {
                    self.error = Some(e);
                    return 0;
                }
            }
        }
        let Some(spill) = &self.spill else {
            return 0;
        };
        let mut written = 0;
        let mut failure = None;
        for (index, map) in self.maps.iter_mut().enumerate() {
            let Some(p) = pipelines.get(index) else {
                continue;
            };
            let spilled = &mut self.spilled[index];
            let encoded = &mut self.encoded;
            map.retain(|key, r| {
                if r.last_used > oldest_kept_out || failure.is_some() {
                    return true;
                }
                // A state that cannot be written stays resident: nothing is lost.
                match p
                    .encode_state(&r.state, encoded)
                    .and_then(|()| spill.store.put(&p.name, key, encoded))
                {
                    Ok(()) => {
                        written += 1;
                        *spilled += 1;
                        false
                    }
                    Err(e) => {
                        failure = Some(e);
                        true
                    }
                }
            });
        }
        if let Some(source) = failure {
            let path = spill.dir.0.clone();
            self.fail(path, source);
        }
        self.resident -= written;
        self.counts.passivated += written as u64;
        written
    }

    /// `key`'s state in `p` without making it resident (resident, or read back from the
    /// store); `None` for a key never seen.
    pub(crate) fn peek(&self, p: &Pipeline, key: &str) -> Option<Cow<'_, KeyState>> {
        if let Some(r) = self.maps.get(p.index).and_then(|m| m.get(key)) {
            return Some(Cow::Borrowed(&r.state));
        }
        if self.spilled.get(p.index).is_none_or(|&n| n == 0) {
            return None;
        }
        let bytes = self.spill.as_ref()?.store.get(&p.name, key);
        match bytes {
            Ok(Some(bytes)) => match p.restore_state(&bytes) {
                Ok(state) => state.map(Cow::Owned),
                Err(e) => {
                    tracing::error!(pipeline = %p.name, key, "cannot read a passivated state back: {e}");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::error!(pipeline = %p.name, key, "cannot read a passivated state back: {e}");
                None
            }
        }
    }

    /// Calls `f` with every key state of `p` (resident or passivated) in key order (bytewise,
    /// the order the summary merges metrics in); returns the number of keys.
    pub(crate) fn for_each_sorted(&self, p: &Pipeline, mut f: impl FnMut(&KeyState)) -> u64 {
        let Some(map) = self.maps.get(p.index) else {
            return 0;
        };
        let mut resident: Vec<(&str, &KeyState)> =
            map.iter().map(|(k, r)| (k.as_str(), &r.state)).collect();
        resident.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut resident = resident.into_iter().peekable();
        let mut keys = 0;
        let stored = match (&self.spill, self.spilled.get(p.index)) {
            (Some(spill), Some(&n)) if n > 0 => match spill.store.iter_entries(&p.name) {
                Ok(entries) => Some(entries),
                Err(e) => {
                    tracing::error!(pipeline = %p.name, "cannot read the passivated states: {e}");
                    None
                }
            },
            _ => None,
        };
        for entry in stored.into_iter().flatten() {
            let (key, bytes) = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(pipeline = %p.name, "cannot read the passivated states: {e}");
                    break;
                }
            };
            // Resident keys before this one, then this one unless it is resident (its stored
            // state is then an older copy).
            while let Some(&(k, state)) = resident.peek() {
                if k.as_bytes() > key.as_ref() {
                    break;
                }
                resident.next();
                keys += 1;
                f(state);
            }
            let was_resident = map
                .get(std::str::from_utf8(&key).unwrap_or_default())
                .is_some();
            if was_resident {
                continue;
            }
            match p.restore_state(&bytes) {
                Ok(Some(state)) => {
                    keys += 1;
                    f(&state);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(pipeline = %p.name, key = %String::from_utf8_lossy(&key), "cannot read a passivated state back: {e}");
                }
            }
        }
        for (_, state) in resident {
            keys += 1;
            f(state);
        }
        keys
    }

    /// How the bounds were applied so far.
    pub(crate) fn counts(&self) -> KeyCounts {
        self.counts
    }

    /// The first store failure, if any (taken: reported once).
    pub(crate) fn take_error(&mut self) -> Option<KeyStoreError> {
        self.error.take()
    }
}

/// Creates a fresh directory under the system's temporary directory and opens a store in it.
fn open_spill(cache_bytes: u64) -> Result<Spill, KeyStoreError> {
    let base = std::env::temp_dir();
    let mut attempt = 0u32;
    let dir = loop {
        let path = base.join(format!("edgeflow-replay-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => break TempDir(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                attempt += 1;
            }
            Err(source) => return Err(KeyStoreError::TempDir { path: base, source }),
        }
    };
    tracing::info!(
        "replay: more keys than [runtime] max_resident_keys / max_memory allow in memory; passivating the least recently used to {}",
        dir.0.display()
    );
    match Store::open(&dir.0, cache_bytes) {
        Ok(store) => Ok(Spill { store, dir }),
        Err(source) => Err(KeyStoreError::Store {
            path: dir.0.clone(),
            source,
        }),
    }
}
