//! `KeyActor`: one per active key. It owns the key's model state, runs the test-then-train
//! step for each reading, hands the output to the sink, and writes its state to the store when
//! the checkpointer asks (only if it changed) or when it is passivated.

use std::sync::Arc;

use actix::prelude::*;
use compact_str::CompactString;

use smallvec::SmallVec;

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
    store: Store,
    sink: Arc<dyn OutputSink>,
    /// The last output message, for `/keys/{pipeline}/{key}` (kept while resident, not
    /// persisted; its buffer is reused, so keeping it costs a copy, not an allocation).
    last_output: Vec<u8>,
    /// One per classifier of the pipeline: what the key did in the current interval (not
    /// persisted: a key passivated mid-interval starts its next profile afresh).
    profiles: SmallVec<[ProfileAccumulator; 1]>,
    /// A recommend pipeline's recommender (the key is a user).
    recommender: Option<Addr<RecommenderActor>>,
}

impl KeyActor {
    /// A key actor starting from `state` (loaded from the store, or fresh).
    pub fn new(
        pipeline: Arc<Pipeline>,
        key: CompactString,
        state: KeyState,
        store: Store,
        sink: Arc<dyn OutputSink>,
        recommender: Option<Addr<RecommenderActor>>,
    ) -> KeyActor {
        KeyActor {
            key,
            state,
            dirty: false,
            store,
            profiles: (0..pipeline.profiles.len())
                .map(|_| ProfileAccumulator::default())
                .collect(),
            pipeline,
            sink,
            last_output: Vec::new(),
            recommender,
        }
    }

    /// Write the state to the store if it changed.
    fn write_back(&mut self) -> Result<bool, StoreError> {
        if !self.dirty {
            return Ok(false);
        }
        let p = &self.pipeline;
        with_buffers(|buffers| {
            p.encode_state(&self.state, &mut buffers.encoded)?;
            self.store.put(&p.name, &self.key, &buffers.encoded)
        })?;
        self.dirty = false;
        Ok(true)
    }
}

impl KeyActor {
    /// A recommend pipeline's event (the key is the user) or request: the change to the
    /// user's history, or the history itself, goes to the pipeline's recommender.
    fn recommend(&mut self, msg: Ingest) {
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

/// Working memory of the key actors of one thread: the step's output and scratch buffers and
/// the encoding buffer of a state. Every key actor of a shard runs on the shard's thread, one
/// handler at a time, so one set per thread serves them all; per actor it would cost a few KB
/// per resident key (the encoded state alone is as large as the state).
#[derive(Default)]
struct ThreadBuffers {
    scratch: Scratch,
    encoded: Vec<u8>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<ThreadBuffers> = std::cell::RefCell::new(ThreadBuffers::default());
}

/// Run `f` with this thread's buffers (fresh ones in the impossible case that they are
/// already borrowed: handlers do not nest).
fn with_buffers<R>(f: impl FnOnce(&mut ThreadBuffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => f(&mut buffers),
        Err(_) => f(&mut ThreadBuffers::default()),
    })
}

impl Actor for KeyActor {
    type Context = Context<Self>;
}

impl Handler<Ingest> for KeyActor {
    type Result = ();

    fn handle(&mut self, msg: Ingest, _ctx: &mut Self::Context) {
        if self.pipeline.is_recommend() {
            self.recommend(msg);
            return;
        }
        let p = &self.pipeline;
        for (accumulator, spec) in self.profiles.iter_mut().zip(&p.profiles) {
            accumulator.record(spec, msg.time, &msg.values);
        }
        let (sink, last_output) = (&self.sink, &mut self.last_output);
        with_buffers(|buffers| {
            p.process(
                &mut self.state,
                &self.key,
                msg.time,
                &msg.values,
                &mut buffers.scratch,
                &mut |topic, payload| {
                    last_output.clear();
                    last_output.extend_from_slice(payload);
                    sink.emit(p.index, topic, payload, p.output_qos);
                },
            );
        });
        self.dirty = true;
    }
}

/// Checkpointer → key: write your state if it changed. Answers whether it wrote.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Snapshot;

impl Handler<Snapshot> for KeyActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        self.write_back()
    }
}

/// Shard → key: write your state back and stop (the key is idle or over the resident budget).
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Passivate;

impl Handler<Passivate> for KeyActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, _msg: Passivate, ctx: &mut Self::Context) -> Self::Result {
        let written = self.write_back();
        ctx.stop();
        written
    }
}

/// Inspection: a copy of the key's state and its last output message.
#[derive(Message)]
#[rtype(result = "KeyView")]
pub struct GetState;

/// What inspection sees of a resident key.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// A copy of the key's state.
    pub state: KeyState,
    /// The last output message's payload (empty before the first output).
    pub last_output: Vec<u8>,
}

impl Handler<GetState> for KeyActor {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _msg: GetState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(KeyView {
            state: self.state.clone(),
            last_output: self.last_output.clone(),
        })
    }
}

/// Classifier → key (through its shard): the profile of the interval that ends now, for the
/// classifier in slot `slot` of the key's pipeline (`None` if the key has none: too few
/// readings, or a feature without a value yet). Starts the next interval.
#[derive(Message)]
#[rtype(result = "Option<Vec<f64>>")]
pub struct TakeProfile {
    /// Index into the pipeline's `profiles`.
    pub slot: usize,
}

impl Handler<TakeProfile> for KeyActor {
    type Result = Option<Vec<f64>>;

    fn handle(&mut self, msg: TakeProfile, _ctx: &mut Self::Context) -> Self::Result {
        let spec = self.pipeline.profiles.get(msg.slot)?;
        let accumulator = self.profiles.get_mut(msg.slot)?;
        let mut out = Vec::with_capacity(spec.dim());
        accumulator
            .take(spec, &self.state.model, &mut out)
            .then_some(out)
    }
}
