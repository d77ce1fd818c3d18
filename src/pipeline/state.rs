//! A pipeline's key states: a fresh one, and the versioned encoding a key is stored and
//! restored with (states of another configuration or of an older version are recognised).

use super::model::KeyStateV1;
use super::{KeyModel, KeyState, Pipeline};
use crate::store::{decode_legacy_state, decode_state, encode_state, StoreError};

impl Pipeline {
    /// The model a fresh key starts with (what [`new_state`](Self::new_state) clones).
    pub(crate) fn prototype_model(&self) -> &KeyModel {
        &self.spec.prototype
    }

    /// A fresh state for a key seen for the first time.
    pub fn new_state(&self) -> KeyState {
        KeyState {
            model: self.spec.prototype.clone(),
            last_time: i64::MIN,
            operators: self.operators.new_states(),
            operators_fingerprint: self.operators.fingerprint,
        }
    }

    /// Decode a stored state (of this version, or of version 4, which differs only in the
    /// layout of the forecaster's covariance). A state made with another model kind or other
    /// parameters (the config changed), or a forecast or regression state of versions 1–3 (before the
    /// band-scored forecaster and the calibrated anomaly detector, whose states cannot be
    /// carried over), is not used: `Ok(None)` tells the caller to start the key afresh. A
    /// state whose operators were configured differently keeps its model and starts its
    /// operators afresh. States of versions 1 (before operators), 2 and 3 of the other kinds
    /// are read too.
    ///
    /// # Errors
    /// [`StoreError`] when the bytes are not a state of this or an older readable version.
    pub fn restore_state(&self, bytes: &[u8]) -> Result<Option<KeyState>, StoreError> {
        // The model is the first field, its kind the first byte (variant 0: forecast, 1:
        // regression, the two kinds that carry an anomaly detector).
        if let Some((&version, body)) = bytes.split_first() {
            if version < 4 && matches!(body.first(), Some(0 | 1)) {
                return Ok(None);
            }
        }
        let mut state: KeyState = match decode_legacy_state::<KeyStateV1>(bytes, 1)? {
            Some(old) => KeyState {
                model: old.model,
                last_time: old.last_time,
                operators: Vec::new(),
                operators_fingerprint: !self.operators.fingerprint,
            },
            None => match decode_legacy_state::<KeyState>(bytes, 2)? {
                Some(state) => state,
                None => match decode_legacy_state::<KeyState>(bytes, 3)? {
                    Some(state) => state,
                    // Version 4 differs only in how the forecaster's covariance is laid out,
                    // and the decoder reads both layouts.
                    None => match decode_legacy_state::<KeyState>(bytes, 4)? {
                        Some(state) => state,
                        None => decode_state(bytes)?,
                    },
                },
            },
        };
        if !state.model.same_config(&self.spec.prototype) {
            return Ok(None);
        }
        if state.operators_fingerprint != self.operators.fingerprint {
            state.operators = self.operators.new_states();
            state.operators_fingerprint = self.operators.fingerprint;
        }
        Ok(Some(state))
    }

    /// Encode a key's state for the store.
    ///
    /// # Errors
    /// [`StoreError::Encode`].
    pub fn encode_state(&self, state: &KeyState, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        encode_state(state, buf)
    }
}
