//! The integration tests, in one binary (one link instead of one per file: linking dominated
//! the build of the tests on two cores). Each module is one former `tests/*.rs` file;
//! `common` holds their shared helpers. `tests/ops_allocations.rs` stays a binary of its own:
//! it installs a counting global allocator, which concurrent tests in the same process would
//! disturb.

// Tests may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod binary_sigkill;
mod binary_signals;
mod broker_outage;
mod classifier;
mod configs;
mod daemon_restart;
mod demo;
mod http;
mod models;
mod mosquitto;
mod mqtt_tls;
mod operators;
mod passivation;
mod recommend;
mod reload;
mod replay;
mod replay_bounded;
mod simulate;
mod systemd;
