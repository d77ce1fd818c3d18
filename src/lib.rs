//! edgeflow: streaming machine learning for IoT/edge gateways.
//!
//! edgeflow subscribes to MQTT topics, decodes sensor readings, gives every key (sensor) its
//! own actor holding an online model, persists model state in sled, and publishes forecasts,
//! predictions, classifications or cluster assignments back over MQTT. Supervising actors
//! classify devices by their profiles (streaming k-means) and recommend items (item-item
//! cosine over co-occurrence). Pipelines are declared in TOML.
//!
//! # Layout
//! In the order a reading flows through the modules:
//!
//! - [`config`] — the TOML schema and its validation (every error, with `file:line:col`).
//! - [`mqtt`] — the broker connection (TCP, or TLS through rustls with the ring provider):
//!   one task owns the rumqttc event loop, reconnects with back-off, resubscribes; the bounded
//!   publisher queue; the embedded rumqttd broker.
//! - [`codec`] — payload decoding (JSON by pointer and JSON batches, bare numbers, CSV lines,
//!   SenML packs) into a reusable reading buffer, one callback per reading, and the reasons a
//!   reading is dropped.
//! - [`ops`] — the per-key operators between decoding and the model: filter and map
//!   expressions, event-time windows, dedupe.
//! - [`pipeline`] — a pipeline compiled from config: topic matching, decoding, the per-key
//!   test-then-train step and the output message; key profiles, the classifier and the
//!   recommender (pure, driven by actors or by replay); shared by every driver.
//! - [`actors`] — the router, one shard per Arbiter, one `KeyActor` per key (activated from
//!   the store, passivated when idle or over budget), checkpoints; the supervisors: a
//!   `ClassifierSupervisor` per classifier, a `RecommenderActor` per recommend pipeline.
//! - [`model`] — online models (pure: no I/O, no actors).
//! - [`store`] — sled behind a narrow interface; state encoding with a version tag.
//! - [`memory`] — the counting allocator and the byte budget passivation keeps to.
//! - [`http`] — `/metrics` (Prometheus), `/health`, `/keys/{pipeline}/{key}`.
//! - [`systemd`] — readiness, reload, stop and watchdog notifications (`sd-notify`).
//! - [`app`] — the daemon (`edgeflow run`): start-up, reload and graceful shutdown.
//! - [`replay`] — the deterministic file driver (`edgeflow replay`), also used by benchmarks;
//!   its keys are bounded like the daemon's (passivated to a temporary store).
//! - [`sim`] — the synthetic sensor fleet (`edgeflow simulate`, the demo).

pub mod actors;
pub mod app;
pub mod clock;
pub mod codec;
pub mod config;
pub mod http;
pub mod memory;
pub mod model;
pub mod mqtt;
pub mod ops;
pub mod pipeline;
pub mod pointer;
pub mod replay;
pub mod sim;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod topic;

#[cfg(test)]
pub(crate) mod fuzz_support;
