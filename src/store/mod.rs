//! The embedded store: per-key model state in sled, encoded with postcard behind a version tag.
//!
//! All store access goes through [`Store`], so the engine underneath could be replaced without
//! touching the actors. Writes are plain `insert`s (sled's batch API was seen to grow memory
//! without bound), the page cache is small, and nothing is flushed implicitly: the checkpointer
//! calls [`Store::flush`] once per interval and at shutdown, which bounds SD-card writes to one
//! sync per checkpoint however many readings arrive.
//!
//! **Write times and `state_ttl`.** Every value is stored in a 5-byte envelope,
//! `[ENVELOPE_TAG][write time: u32 LE]` before the encoded state, so that the states of keys
//! not written for longer than `[store] state_ttl` can be removed by [`Store::sweep_expired`]
//! (the checkpointer calls it after each checkpoint, a bounded number of entries at a time)
//! without a second write per state. The write time is *store time*: seconds of the daemon's
//! running time, counted by a monotonic clock from what was persisted at the last flush
//! ([`StoreClock`]). It is not the wall clock, so a gateway without a real-time clock that
//! sets its time from NTP after boot (a Raspberry Pi) cannot expire every key at once, and a
//! gateway switched off for a month does not forget its keys; the TTL counts time the daemon
//! ran. Values written before the envelope existed (no tag) read as they are and count as
//! written at store time 0, the first start of a build with the envelope: one TTL of running
//! time after the upgrade they expire unless their key is written again.

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the state encoding written by this build. Bump it when a persisted type changes
/// shape, and teach the reader (`Pipeline::restore_state`) what to do with the old one.
/// Version 3: the forecaster of the band-scored blend (issue 10). Version 4: the calibrated
/// anomaly detectors (issue 11) and `kind = "anomaly"`. Version 5: the forecaster's RLS
/// covariance is stored as its upper triangle (issue 16); the decoder reads both layouts, so
/// version 4 states of every kind are read as they are. Forecast and regression states of
/// versions 1–3 start afresh; versions 1–3 of the other kinds are read as they are.
pub const STATE_VERSION: u8 = 5;

/// First byte of every value this build writes: the envelope with the write time. No state
/// version tag is this large, so a value without the envelope (written by an older build)
/// is told apart by its first byte.
pub const ENVELOPE_TAG: u8 = 0xE5;
const _: () = assert!(STATE_VERSION < ENVELOPE_TAG);

/// Bytes of the envelope: the tag and the write time (u32 little-endian store seconds, 136
/// years of running time).
pub const ENVELOPE_LEN: usize = 5;

/// The store's own tree (not a pipeline): the store clock.
const META_TREE: &str = "__edgeflow_meta__";
/// Key of the store time (u64 little-endian seconds) in [`META_TREE`], written at each flush.
const CLOCK_KEY: &[u8] = b"store_time";

/// How long [`Store::open`] waits for a locked data directory to be released.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or is not writable.
    #[error("data dir {path}: cannot create or write it: {source} (check the path and its permissions; under systemd use StateDirectory=)")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process (or another daemon in this one) holds the store's lock.
    #[error("data dir {path} is locked by another edgeflow process (only one daemon may use a data dir): {detail}")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// sled's message.
        detail: String,
    },
    /// sled failed.
    #[error("store at {path}: {source}")]
    Sled {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: sled::Error,
    },
    /// A state could not be encoded.
    #[error("cannot encode state: {0}")]
    Encode(postcard::Error),
    /// A stored state could not be decoded.
    #[error("cannot decode stored state: {0}")]
    Decode(postcard::Error),
    /// A stored state was written by an incompatible version.
    #[error("stored state has version tag {found}, this build reads version {expected}")]
    Version {
        /// The tag found.
        found: u8,
        /// The tag this build writes.
        expected: u8,
    },
    /// A stored state is empty (no version tag).
    #[error("stored state is empty")]
    Empty,
}

/// Encode `state` as `[STATE_VERSION][postcard bytes]` into `buf` (cleared first, capacity kept).
///
/// # Errors
/// [`StoreError::Encode`] if postcard cannot serialise the value.
pub fn encode_state<T: Serialize>(state: &T, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    buf.clear();
    buf.push(STATE_VERSION);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(state, taken).map_err(StoreError::Encode)?;
    Ok(())
}

/// Decode a value written by [`encode_state`], checking the version tag first.
///
/// # Errors
/// [`StoreError::Empty`], [`StoreError::Version`] or [`StoreError::Decode`].
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::Empty)?;
    if version != STATE_VERSION {
        return Err(StoreError::Version {
            found: version,
            expected: STATE_VERSION,
        });
    }
    postcard::from_bytes(body).map_err(StoreError::Decode)
}

/// Decode a value of a type whose encoding has not changed since state version `oldest`: the
/// tags `oldest..=STATE_VERSION` are read alike (a version bump for another type must not make
/// this one unreadable).
///
/// # Errors
/// [`StoreError::Empty`], [`StoreError::Version`] (a tag outside the range) or
/// [`StoreError::Decode`].
pub fn decode_state_since<T: DeserializeOwned>(bytes: &[u8], oldest: u8) -> Result<T, StoreError> {
    let (&version, body) = bytes.split_first().ok_or(StoreError::Empty)?;
    if !(oldest..=STATE_VERSION).contains(&version) {
        return Err(StoreError::Version {
            found: version,
            expected: STATE_VERSION,
        });
    }
    postcard::from_bytes(body).map_err(StoreError::Decode)
}

/// Decode a value written by an older version `version` of the state format, if `bytes`
/// carry that version's tag; `Ok(None)` when they carry another tag (or none).
///
/// # Errors
/// [`StoreError::Decode`] when the tag matches but the body does not decode.
pub fn decode_legacy_state<T: DeserializeOwned>(
    bytes: &[u8],
    version: u8,
) -> Result<Option<T>, StoreError> {
    match bytes.split_first() {
        Some((&tag, body)) if tag == version => postcard::from_bytes(body)
            .map(Some)
            .map_err(StoreError::Decode),
        _ => Ok(None),
    }
}

/// Where store time comes from: the daemon's running time (a monotonic clock), or a clock a
/// test moves by hand. Cheap to clone; clones of a manual clock share its time.
#[derive(Debug, Clone)]
pub struct StoreClock(ClockSource);

#[derive(Debug, Clone)]
enum ClockSource {
    Running(Instant),
    Manual(Arc<AtomicU64>),
}

impl StoreClock {
    /// Running time from now on (what the daemon uses).
    pub fn running() -> StoreClock {
        StoreClock(ClockSource::Running(Instant::now()))
    }

    /// A clock that stands still until [`StoreClock::advance`] moves it (tests).
    pub fn manual() -> StoreClock {
        StoreClock(ClockSource::Manual(Arc::new(AtomicU64::new(0))))
    }

    /// Move a manual clock forward by `by` (whole seconds count); a running clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let ClockSource::Manual(secs) = &self.0 {
            secs.fetch_add(by.as_secs(), Ordering::Relaxed);
        }
    }

    /// Seconds since the clock started.
    fn elapsed_secs(&self) -> u64 {
        match &self.0 {
            ClockSource::Running(start) => start.elapsed().as_secs(),
            ClockSource::Manual(secs) => secs.load(Ordering::Relaxed),
        }
    }
}

/// Where [`Store::sweep_expired`] goes on from: the pipeline it was in and the last key it
/// looked at. Owned by the caller (the checkpointer), one per store.
#[derive(Debug, Default, Clone)]
pub struct SweepCursor {
    pipeline: usize,
    after: Option<Vec<u8>>,
}

/// What one [`Store::sweep_expired`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Entries looked at.
    pub examined: usize,
    /// Entries removed (not written for longer than the TTL).
    pub expired: u64,
    /// Entries without a write time (written by a build before the envelope) among those
    /// looked at; they count as written at store time 0.
    pub legacy: usize,
}

/// The state store: one sled tree per pipeline, one entry per key. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    meta: sled::Tree,
    clock: StoreClock,
    /// Store time persisted at the last flush before this open (seconds).
    base_secs: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`.
    ///
    /// # Errors
    /// [`StoreError::DataDir`] when the directory cannot be created or written,
    /// [`StoreError::Locked`] when another process still holds it after [`LOCK_WAIT`] (the
    /// calling thread sleeps meanwhile: call it at start-up), [`StoreError::Sled`] otherwise.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Store::open_with_clock(dir, cache_bytes, StoreClock::running())
    }

    /// [`Store::open`] with the clock store time is counted by (tests move a manual one).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_clock(
        dir: &Path,
        cache_bytes: u64,
        clock: StoreClock,
    ) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: path.clone(),
            source,
        })?;
        // sled reports an unwritable directory late and vaguely; probe it first.
        let probe = dir.join(".edgeflow-write-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|source| StoreError::DataDir {
                path: path.clone(),
                source,
            })?;
        // A daemon that is still exiting (a restart), or sled's own threads of a store just
        // dropped in this process, release the lock within moments: wait a little before
        // calling the directory locked.
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::LowSpace)
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(ref e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= give_up {
                        return Err(StoreError::Locked {
                            path,
                            detail: e.to_string(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => return Err(StoreError::Sled { path, source }),
            }
        };
        let meta = db.open_tree(META_TREE).map_err(|source| StoreError::Sled {
            path: path.clone(),
            source,
        })?;
        let stored = meta.get(CLOCK_KEY).map_err(|source| StoreError::Sled {
            path: path.clone(),
            source,
        })?;
        // A missing or malformed clock (a store of an older build) starts at 0.
        let base_secs = stored
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_le_bytes);
        Ok(Store {
            db,
            path,
            meta,
            clock,
            base_secs,
        })
    }

    /// Store time now: seconds of running time since the store was created.
    pub fn now_secs(&self) -> u64 {
        self.base_secs.saturating_add(self.clock.elapsed_secs())
    }

    /// Write the store time to the meta tree (durable with the flush that follows).
    fn save_clock(&self) -> Result<(), StoreError> {
        self.meta
            .insert(CLOCK_KEY, &self.now_secs().to_le_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tree(&self, pipeline: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(pipeline).map_err(|e| self.err(e))
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Write one key's encoded state (a plain insert; durable after the next [`Store::flush`]).
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn put(&self, pipeline: &str, key: &str, state: &[u8]) -> Result<(), StoreError> {
        let value = envelope(self.now_secs(), state);
        self.tree(pipeline)?
            .insert(key.as_bytes(), value)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Read one key's encoded state (without its envelope).
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn get(&self, pipeline: &str, key: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self
            .tree(pipeline)?
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| unwrap_envelope(&v).0))
    }

    /// When a key's state was last written, in store time (`Some(0)` for a value written
    /// before the envelope existed); `None` if the key has no state.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn written_at(&self, pipeline: &str, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree(pipeline)?
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| unwrap_envelope(&v).1.unwrap_or(0)))
    }

    /// Remove the states of `pipelines` that were not written for longer than `ttl` (store
    /// time), looking at no more than `budget` entries: a sweep goes on from `cursor`, pipeline
    /// after pipeline, and looks at each entry at most once per call, so a call costs a
    /// bounded amount of work whatever the store holds. An entry is removed only if it still
    /// holds the value that was found expired (a state written meanwhile stays). Removals are
    /// durable after the next [`Store::flush`].
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure (what was removed before it stays removed).
    pub fn sweep_expired(
        &self,
        pipelines: &[&str],
        ttl: Duration,
        budget: usize,
        cursor: &mut SweepCursor,
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        if pipelines.is_empty() {
            return Ok(report);
        }
        let now = self.now_secs();
        let ttl_secs = ttl.as_secs();
        if cursor.pipeline >= pipelines.len() {
            *cursor = SweepCursor::default();
        }
        // Each pipeline's tree once, from the cursor round to it again: a sweep that starts
        // inside a tree ends with that tree's first part, up to where it started.
        let origin = cursor.after.clone();
        let passes = pipelines.len() + usize::from(origin.is_some());
        for pass in 0..passes {
            if report.examined >= budget {
                break;
            }
            let tree = self.tree(pipelines[cursor.pipeline])?;
            let start = cursor
                .after
                .as_deref()
                .map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
            let end = match &origin {
                Some(k) if pass == pipelines.len() => Bound::Included(k.clone()),
                _ => Bound::Unbounded,
            };
            let mut finished = true;
            for item in tree.range::<Vec<u8>, _>((start, end)) {
                if report.examined >= budget {
                    finished = false;
                    break;
                }
                let (key, value) = item.map_err(|e| self.err(e))?;
                report.examined += 1;
                let written = match unwrap_envelope(&value).1 {
                    Some(t) => t,
                    None => {
                        report.legacy += 1;
                        0
                    }
                };
                if now.saturating_sub(written) > ttl_secs {
                    let swapped = tree
                        .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                        .map_err(|e| self.err(e))?;
                    if swapped.is_ok() {
                        report.expired += 1;
                    }
                }
                cursor.after = Some(key.to_vec());
            }
            if finished {
                cursor.pipeline = (cursor.pipeline + 1) % pipelines.len();
                cursor.after = None;
            }
        }
        Ok(report)
    }

    /// Remove every key of a pipeline (used when its model changes shape).
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn clear_pipeline(&self, pipeline: &str) -> Result<(), StoreError> {
        self.tree(pipeline)?.clear().map_err(|e| self.err(e))
    }

    /// All `(key, encoded state)` pairs of a pipeline, in key order.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn entries(&self, pipeline: &str) -> Result<Vec<(String, sled::IVec)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(pipeline)?.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                unwrap_envelope(&v).0,
            ));
        }
        Ok(out)
    }

    /// The `(key, encoded state)` pairs of a pipeline in key order (bytewise), one at a time:
    /// unlike [`Store::entries`], a store of a million keys is read without holding it all.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure, when the tree is opened or on any item.
    pub fn iter_entries(
        &self,
        pipeline: &str,
    ) -> Result<impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_, StoreError>
    {
        Ok(self.tree(pipeline)?.iter().map(|item| {
            let (k, v) = item.map_err(|e| self.err(e))?;
            Ok((k, unwrap_envelope(&v).0))
        }))
    }

    /// Names of the pipelines that have stored state.
    pub fn pipelines(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != b"__sled__default" && n.as_ref() != META_TREE.as_bytes())
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect()
    }

    /// Make every write so far durable. Returns the number of bytes flushed.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.save_clock()?;
        self.db.flush_async().await.map_err(|e| self.err(e))
    }

    /// Blocking variant of [`Store::flush`] for code outside an async context.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn flush_blocking(&self) -> Result<usize, StoreError> {
        self.save_clock()?;
        self.db.flush().map_err(|e| self.err(e))
    }
}

/// `state` in the envelope with write time `now` (store seconds, saturating at u32::MAX).
fn envelope(now: u64, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(ENVELOPE_LEN + state.len());
    value.push(ENVELOPE_TAG);
    value.extend_from_slice(&u32::try_from(now).unwrap_or(u32::MAX).to_le_bytes());
    value.extend_from_slice(state);
    value
}

/// The state inside a stored value and its write time; a value without the envelope (an
/// older build's) is the state itself, with no write time.
fn unwrap_envelope(value: &sled::IVec) -> (sled::IVec, Option<u64>) {
    match value.get(..ENVELOPE_LEN) {
        Some([ENVELOPE_TAG, a, b, c, d]) => (
            value.subslice(ENVELOPE_LEN, value.len() - ENVELOPE_LEN),
            Some(u64::from(u32::from_le_bytes([*a, *b, *c, *d]))),
        ),
        _ => (value.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Sample {
        a: u64,
        b: f64,
        c: Vec<f64>,
    }

    #[test]
    fn state_round_trips_through_the_version_tag() {
        let s = Sample {
            a: 7,
            b: -1.25e-7,
            c: vec![1.0, f64::MIN_POSITIVE],
        };
        let mut buf = Vec::new();
        encode_state(&s, &mut buf).unwrap();
        assert_eq!(buf[0], STATE_VERSION);
        let back: Sample = decode_state(&buf).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn wrong_version_tag_is_rejected() {
        let mut buf = Vec::new();
        encode_state(&1u32, &mut buf).unwrap();
        buf[0] = STATE_VERSION.wrapping_add(1);
        match decode_state::<u32>(&buf) {
            Err(StoreError::Version { found, expected }) => {
                assert_eq!(found, STATE_VERSION.wrapping_add(1));
                assert_eq!(expected, STATE_VERSION);
            }
            other => panic!("expected a version error, got {other:?}"),
        }
        assert!(matches!(decode_state::<u32>(&[]), Err(StoreError::Empty)));
    }

    #[test]
    fn truncated_state_is_a_decode_error() {
        let mut buf = Vec::new();
        encode_state(
            &Sample {
                a: 1,
                b: 2.0,
                c: vec![3.0],
            },
            &mut buf,
        )
        .unwrap();
        buf.truncate(buf.len() - 3);
        assert!(matches!(
            decode_state::<Sample>(&buf),
            Err(StoreError::Decode(_))
        ));
    }

    #[test]
    fn puts_survive_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.put("p", "k1", b"\x01abc").unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.get("p", "k1").unwrap().as_deref(),
            Some(&b"\x01abc"[..])
        );
        assert_eq!(store.get("p", "k2").unwrap(), None);
        assert_eq!(store.pipelines(), vec!["p".to_string()]);
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn open_manual(dir: &Path) -> (Store, StoreClock) {
        let clock = StoreClock::manual();
        (
            Store::open_with_clock(dir, 1 << 20, clock.clone()).unwrap(),
            clock,
        )
    }

    #[test]
    fn values_carry_their_write_time_in_an_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open_manual(dir.path());
        clock.advance(Duration::from_secs(42));
        store.put("p", "k", b"\x05state").unwrap();
        let raw = store.tree("p").unwrap().get("k").unwrap().unwrap();
        assert_eq!(
            &raw[..],
            &[ENVELOPE_TAG, 42, 0, 0, 0, 5, b's', b't', b'a', b't', b'e']
        );
        assert_eq!(
            store.get("p", "k").unwrap().as_deref(),
            Some(&b"\x05state"[..])
        );
        assert_eq!(store.written_at("p", "k").unwrap(), Some(42));
        let entries = store.entries("p").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(&entries[0].1[..], b"\x05state");
    }

    #[test]
    fn values_without_an_envelope_read_as_they_are_written_at_time_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open_manual(dir.path());
        // What a build before the envelope wrote: the state itself, version tag first.
        store
            .tree("p")
            .unwrap()
            .insert("old", &b"\x04legacy"[..])
            .unwrap();
        assert_eq!(
            store.get("p", "old").unwrap().as_deref(),
            Some(&b"\x04legacy"[..])
        );
        assert_eq!(store.written_at("p", "old").unwrap(), Some(0));
        let mut cursor = SweepCursor::default();
        let report = store.sweep_expired(&["p"], HOUR, 100, &mut cursor).unwrap();
        assert_eq!((report.examined, report.legacy, report.expired), (1, 1, 0));
        clock.advance(HOUR + Duration::from_secs(1));
        let report = store.sweep_expired(&["p"], HOUR, 100, &mut cursor).unwrap();
        assert_eq!(report.expired, 1);
        assert_eq!(store.get("p", "old").unwrap(), None);
    }

    #[test]
    fn sweep_removes_only_states_not_written_for_longer_than_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open_manual(dir.path());
        store.put("a", "idle", b"\x05i").unwrap();
        store.put("a", "busy", b"\x05b").unwrap();
        store.put("b", "idle", b"\x05i").unwrap();
        clock.advance(HOUR);
        store.put("a", "busy", b"\x05b2").unwrap();
        let mut cursor = SweepCursor::default();
        // Exactly one TTL old is not expired yet.
        let report = store
            .sweep_expired(&["a", "b"], HOUR, 100, &mut cursor)
            .unwrap();
        assert_eq!((report.examined, report.expired), (3, 0));
        clock.advance(Duration::from_secs(1));
        let report = store
            .sweep_expired(&["a", "b"], HOUR, 100, &mut cursor)
            .unwrap();
        assert_eq!((report.examined, report.expired), (3, 2));
        assert_eq!(store.get("a", "idle").unwrap(), None);
        assert_eq!(store.get("b", "idle").unwrap(), None);
        assert_eq!(
            store.get("a", "busy").unwrap().as_deref(),
            Some(&b"\x05b2"[..])
        );
        // A pipeline the sweep is not told about (a classifier's tree) is left alone.
        store.put("classifier", "model", b"\x05m").unwrap();
        clock.advance(HOUR * 2);
        let report = store
            .sweep_expired(&["a", "b"], HOUR, 100, &mut cursor)
            .unwrap();
        assert_eq!(report.expired, 1, "a/busy");
        assert!(store.get("classifier", "model").unwrap().is_some());
    }

    #[test]
    fn sweep_does_bounded_work_per_call_and_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = open_manual(dir.path());
        for k in 0..7 {
            store.put("a", &format!("k{k}"), b"\x05x").unwrap();
        }
        for k in 0..3 {
            store.put("b", &format!("k{k}"), b"\x05x").unwrap();
        }
        clock.advance(HOUR * 2);
        let mut cursor = SweepCursor::default();
        let mut calls = Vec::new();
        loop {
            let report = store
                .sweep_expired(&["a", "b"], HOUR, 4, &mut cursor)
                .unwrap();
            assert!(report.examined <= 4);
            calls.push(report.expired);
            if report.examined == 0 || calls.len() > 10 {
                break;
            }
        }
        assert_eq!(calls, [4, 4, 2, 0]);
        assert!(store.entries("a").unwrap().is_empty());
        assert!(store.entries("b").unwrap().is_empty());
    }

    #[test]
    fn one_sweep_looks_at_each_entry_once_when_the_budget_is_large() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _clock) = open_manual(dir.path());
        for k in 0..5 {
            store.put("a", &format!("k{k}"), b"\x05x").unwrap();
        }
        let mut cursor = SweepCursor::default();
        // Stop inside the tree, then a large budget: the rest, then the start up to the cursor.
        assert_eq!(
            store
                .sweep_expired(&["a"], HOUR, 2, &mut cursor)
                .unwrap()
                .examined,
            2
        );
        assert_eq!(
            store
                .sweep_expired(&["a"], HOUR, 100, &mut cursor)
                .unwrap()
                .examined,
            5
        );
        assert_eq!(
            store
                .sweep_expired(&["a"], HOUR, 100, &mut cursor)
                .unwrap()
                .examined,
            5
        );
    }

    #[test]
    fn store_time_survives_a_reopen_and_counts_running_time_only() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, clock) = open_manual(dir.path());
            clock.advance(Duration::from_secs(500));
            store.put("p", "k", b"\x05x").unwrap();
            store.flush_blocking().unwrap();
        }
        let (store, clock) = open_manual(dir.path());
        assert_eq!(store.now_secs(), 500);
        clock.advance(Duration::from_secs(7));
        assert_eq!(store.now_secs(), 507);
        assert_eq!(store.written_at("p", "k").unwrap(), Some(500));
        assert_eq!(
            store.pipelines(),
            vec!["p".to_string()],
            "the meta tree is no pipeline"
        );
    }

    #[test]
    fn state_versions_from_the_oldest_readable_one_decode() {
        let mut buf = Vec::new();
        encode_state(&7u32, &mut buf).unwrap();
        buf[0] = 4;
        assert_eq!(decode_state_since::<u32>(&buf, 4).unwrap(), 7);
        buf[0] = 3;
        assert!(matches!(
            decode_state_since::<u32>(&buf, 4),
            Err(StoreError::Version { found: 3, .. })
        ));
        buf[0] = STATE_VERSION + 1;
        assert!(decode_state_since::<u32>(&buf, 4).is_err());
    }

    #[test]
    fn second_open_of_a_data_dir_reports_it_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 1 << 20).unwrap();
        match Store::open(dir.path(), 1 << 20) {
            Err(e @ StoreError::Locked { .. }) => {
                assert!(e.to_string().contains("locked by another edgeflow process"))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn unwritable_data_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        match Store::open(&file.join("sub"), 1 << 20) {
            Err(e @ StoreError::DataDir { .. }) => assert!(e.to_string().contains("cannot create")),
            other => panic!("expected DataDir, got {other:?}"),
        }
    }
}
