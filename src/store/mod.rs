//! The embedded store: per-key model state in sled, encoded with postcard behind a version tag.
//!
//! All store access goes through [`Store`], so the engine underneath could be replaced without
//! touching the actors. Writes are plain `insert`s (sled's batch API was seen to grow memory
//! without bound), the page cache is small, and nothing is flushed implicitly: the checkpointer
//! calls [`Store::flush`] once per interval and at shutdown, which bounds SD-card writes to one
//! sync per checkpoint however many readings arrive.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the state encoding written by this build. Bump it when a persisted type changes
/// shape, and teach the reader (`Pipeline::restore_state`) what to do with the old one.
/// Version 3: the forecaster of the band-scored blend (issue 10). Version 4: the calibrated
/// anomaly detectors (issue 11) and `kind = "anomaly"`. Forecast and regression states of
/// older versions start afresh; versions 1–3 of the other kinds are read as they are.
pub const STATE_VERSION: u8 = 4;

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

/// The state store: one sled tree per pipeline, one entry per key. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
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
        Ok(Store { db, path })
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
        self.tree(pipeline)?
            .insert(key.as_bytes(), state)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Read one key's encoded state.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn get(&self, pipeline: &str, key: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.tree(pipeline)?
            .get(key.as_bytes())
            .map_err(|e| self.err(e))
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
            out.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        Ok(out)
    }

    /// Names of the pipelines that have stored state.
    pub fn pipelines(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != b"__sled__default")
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect()
    }

    /// Make every write so far durable. Returns the number of bytes flushed.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.db.flush_async().await.map_err(|e| self.err(e))
    }

    /// Blocking variant of [`Store::flush`] for code outside an async context.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on I/O failure.
    pub fn flush_blocking(&self) -> Result<usize, StoreError> {
        self.db.flush().map_err(|e| self.err(e))
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
