//! edgeflow: streaming machine learning for IoT/edge gateways.
//!
//! edgeflow subscribes to MQTT topics, decodes sensor readings, gives every key (sensor) its
//! own actor holding an online model, persists model state in sled, and publishes forecasts,
//! predictions, classifications or cluster assignments back over MQTT. Supervising actors
//! classify devices by their profiles (streaming k-means) and recommend items (item-item
//! cosine over co-occurrence). Pipelines are declared in TOML.
//!
//! # Layout
//! The path of one reading through the daemon, in order (`replay` enters at step 3 and writes
//! its outputs to stdout at step 6):
//!
//! 1. [`mqtt`] — the input connection's event loop (TCP, or TLS through rustls with the ring
//!    provider) reads the PUBLISH, drops an oversize one, and queues it for ingest (waiting
//!    at QoS 1, so the broker holds the rest); it reconnects with back-off and resubscribes.
//! 2. `ingest` — the ingest task drains that queue, hands each message to the pipelines,
//!    queues the readings per shard, and acknowledges QoS 1 messages once they are there.
//! 3. [`pipeline`] — `Pipelines::dispatch`: the pipelines whose `topic` filters match decode
//!    the payload with their [`codec`] decoder (JSON by pointer and batches, bare numbers, CSV,
//!    SenML) into a reusable reading buffer, or count why it is dropped.
//! 4. [`actors`] — the router puts the reading in its key's shard queue; the shard's thread
//!    activates the key's actor (from the [`store`], or fresh) and calls its handler.
//! 5. [`pipeline`] again — `Pipeline::process`, the per-key test-then-train step: the [`ops`]
//!    (filter, map, windows, dedupe), then the [`model`] (pure online models), then the output
//!    message (its topic rendered from a `topic` template).
//! 6. `ingest::MqttSink` → [`mqtt`] — the output goes into the publisher's bounded queue (the
//!    shard waits for room while the output connection is up) and out on the output
//!    connection.
//! 7. [`store`] — checkpoints write the changed key states (sled, versioned encoding);
//!    passivation writes a key back when it is idle or over the [`memory`] budget.
//!
//! Off the per-reading path:
//! - [`config`] — the TOML schema and its validation (every error, with `file:line:col`); it
//!   produces the parsed grammars the pipelines use: `topic` filters and templates, JSON
//!   `pointer`s, [`tls`] settings (PEM files checked at load).
//! - the supervisors in [`actors`]: a `ClassifierSupervisor` per classifier (streaming
//!   k-means over key profiles), a `RecommenderActor` per recommend pipeline.
//! - `http` — `/metrics` (Prometheus), `/health`, `/keys/{pipeline}/{key}`.
//! - `systemd` — readiness, reload, stop and watchdog notifications (`sd-notify`).
//! - [`app`] — the daemon (`edgeflow run`): starts the tasks above, reloads, shuts down.
//! - [`replay`] — the deterministic file driver (`edgeflow replay`), also used by benchmarks;
//!   its keys are bounded like the daemon's (passivated to a temporary store).
//! - [`sim`] — the synthetic sensor fleet (`edgeflow simulate`, the demo).
//! - `clock` — the wall clock, read in one place.
//!
//! The module graph has no circle: `python3 scripts/import_graph.py` checks it.

pub mod actors;
pub mod app;
pub(crate) mod clock;
pub mod codec;
pub mod config;
pub(crate) mod http;
pub(crate) mod ingest;
pub mod memory;
pub mod model;
pub mod mqtt;
pub mod ops;
pub mod pipeline;
pub(crate) mod pointer;
pub mod replay;
pub mod sim;
pub mod store;
pub(crate) mod systemd;
pub mod tls;
pub(crate) mod topic;

#[cfg(test)]
pub(crate) mod fuzz_support;
