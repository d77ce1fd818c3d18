//! `KeyActor`: the actor of one key — its model state and its handlers.
//!
//! A key actor is a *virtual actor* (the Orleans grain, Akka's sharded entity): it has an
//! identity (pipeline, key), private state and handlers that run one message at a time, in
//! order; it is activated on its first reading (from the store, or fresh) and passivated when
//! idle or over the resident budget (state written back, memory freed). What it does not have
//! is a mailbox and a task of its own: its [`Shard`](super::Shard) is its mailbox and its
//! thread. The shard owns the directory of its keys, takes batches of readings from its one
//! queue and calls the key's handler for each reading, in arrival order, on the shard's
//! thread — so no two handlers of a key ever run at once and no lock guards the state, as
//! with a mailbox per key.
//!
//! Why not an actix actor per key: an actor costs a mailbox (a channel allocated per key), a
//! context, a boxed envelope and a wake per message, and a future per key for every
//! checkpoint — measured under load, those hops cost several times the model step itself
//! (BENCHMARKS.md, "Daemon under load"). The per-key state is the only per-key thing a key
//! needs.

use std::sync::Arc;

use actix::prelude::*;
use compact_str::CompactString;

use super::recommender::{RecommendEvent, RecommenderActor, UserList};
use super::{Ingest, OutputSink};
use crate::codec::DropReason;
use crate::pipeline::profile::ProfileAccumulator;
use crate::pipeline::{KeyState, Pipeline, Scratch};
use crate::store::{Store, StoreError};

/// The actor of one key of one pipeline.
pub struct KeyActor {
    /// Its pipeline: held directly, so a reload that keeps the pipeline does not disturb the
    /// actor, and one that rebuilds it passivates the actor before the old one is dropped.
    pipeline: Arc<Pipeline>,
    key: CompactString,
    state: KeyState,
    /// Changed since it was last written to the store.
    dirty: bool,
    /// The last output message, for `/keys/{pipeline}/{key}` (kept while resident, not
    /// persisted; its buffer is reused, so keeping it costs a copy, not an allocation).
    last_output: Vec<u8>,
    /// One per classifier of the pipeline: what the key did in the current interval (not
    /// persisted: a key passivated mid-interval starts its next profile afresh).
    /// Boxed (16 bytes, no allocation when the pipeline has no classifier): inline, one
    /// accumulator made every resident key ~200 bytes larger, classifier or not.
    profiles: Box<[ProfileAccumulator]>,
    /// A recommend pipeline's recommender (the key is a user).
    recommender: Option<Addr<RecommenderActor>>,
}

/// Working memory of the key actors of one shard: the step's scratch buffers and the encoding
/// buffer of a state. Handlers of a shard's keys run one at a time on its thread, so one set
/// serves them all; per key it would cost a few KB per resident key (the encoded state alone
/// is as large as the state).
#[derive(Default)]
pub struct KeyBuffers {
    scratch: Scratch,
    encoded: Vec<u8>,
}

/// Bytes a key's kept last output may grow by before its buffer is reallocated.
const OUTPUT_SLACK: usize = 32;

impl KeyActor {
    /// A key actor starting from `state` (loaded from the store, or fresh).
    pub fn new(
        pipeline: Arc<Pipeline>,
        key: CompactString,
        state: KeyState,
        recommender: Option<Addr<RecommenderActor>>,
    ) -> KeyActor {
        KeyActor {
            key,
            state,
            dirty: false,
            profiles: (0..pipeline.profiles.len())
                .map(|_| ProfileAccumulator::default())
                .collect(),
            pipeline,
            last_output: Vec::new(),
            recommender,
        }
    }

    /// The handler of a reading (or of a recommend pipeline's request): test-then-train, the
    /// output to `sink`.
    pub fn ingest(&mut self, msg: &Ingest, buffers: &mut KeyBuffers, sink: &dyn OutputSink) {
        if self.pipeline.is_recommend() {
            self.recommend(msg);
            return;
        }
        let p = &self.pipeline;
        for (accumulator, spec) in self.profiles.iter_mut().zip(&p.profiles) {
            accumulator.record(spec, msg.time, &msg.values);
        }
        let last_output = &mut self.last_output;
        p.process(
            &mut self.state,
            &self.key,
            msg.time,
            &msg.values,
            &mut buffers.scratch,
            &mut |topic, payload| {
                last_output.clear();
                if last_output.capacity() < payload.len() {
                    // Exact plus a little, not doubled: outputs of a key differ by a few
                    // bytes, and a doubled buffer per resident key is ~300 bytes wasted.
                    last_output.reserve_exact(payload.len() + OUTPUT_SLACK);
                }
                last_output.extend_from_slice(payload);
                sink.emit(p.index, topic, payload, p.output_qos);
            },
        );
        self.dirty = true;
    }

    /// Write the state to the store if it changed since it was last written (a checkpoint,
    /// a passivation). Returns whether it wrote.
    ///
    /// # Errors
    /// [`StoreError`] if the state cannot be encoded or written; it stays dirty.
    pub fn write_back(
        &mut self,
        store: &Store,
        buffers: &mut KeyBuffers,
    ) -> Result<bool, StoreError> {
        if !self.dirty {
            return Ok(false);
        }
        let p = &self.pipeline;
        p.encode_state(&self.state, &mut buffers.encoded)?;
        store.put(&p.name, &self.key, &buffers.encoded)?;
        self.dirty = false;
        Ok(true)
    }

    /// Whether the state changed since it was last written to the store.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A copy of the key's state and its last output message (inspection).
    pub fn view(&self) -> KeyView {
        KeyView {
            state: self.state.clone(),
            last_output: self.last_output.clone(),
        }
    }

    /// The profile of the interval that ends now, for the classifier in slot `slot` of the
    /// key's pipeline (`None` if the key has none: too few readings, or a feature without a
    /// value yet). Starts the next interval.
    pub fn take_profile(&mut self, slot: usize) -> Option<Vec<f64>> {
        let spec = self.pipeline.profiles.get(slot)?;
        let accumulator = self.profiles.get_mut(slot)?;
        let mut out = Vec::with_capacity(spec.dim());
        accumulator
            .take(spec, &self.state.model, &mut out)
            .then_some(out)
    }

    /// A recommend pipeline's event (the key is the user) or request: the change to the
    /// user's history, or the history itself, goes to the pipeline's recommender.
    fn recommend(&mut self, msg: &Ingest) {
        let p = &self.pipeline;
        let Some(recommender) = &self.recommender else {
            p.stats.drops.record(DropReason::MailboxFull, |suppressed| {
                tracing::warn!(pipeline = %p.name, reason = DropReason::MailboxFull.as_str(), suppressed, "dropped an event: the pipeline has no recommender")
            });
            return;
        };
        let sent = if msg.request {
            let items = match &self.state.model {
                crate::pipeline::KeyModel::Recommend { history, .. } => history.entries().to_vec(),
                _ => Vec::new(),
            };
            recommender
                .try_send(UserList {
                    user: self.key.clone(),
                    items,
                    time: msg.time,
                })
                .is_ok()
        } else {
            let Some(change) = p.record_event(&mut self.state, msg.time, &msg.values, &msg.text)
            else {
                return;
            };
            self.dirty = true;
            recommender
                .try_send(RecommendEvent {
                    user: self.key.clone(),
                    change,
                    time: msg.time,
                })
                .is_ok()
        };
        if !sent {
            p.stats.drops.record(DropReason::MailboxFull, |suppressed| {
                tracing::warn!(pipeline = %p.name, reason = DropReason::MailboxFull.as_str(), suppressed, "dropped an event: the recommender's mailbox is full (the recommender is overloaded)")
            });
        }
    }
}

/// What inspection sees of a resident key.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// A copy of the key's state.
    pub state: KeyState,
    /// The last output message's payload (empty before the first output).
    pub last_output: Vec<u8>,
}
