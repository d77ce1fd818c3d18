//! Per-key pipeline operators: pure logic (no I/O, no actors), applied to each reading of a
//! key before the model sees it.
//!
//! - [`expr`] — filter and derive expressions (`temp > -40 && temp < 125`,
//!   `dew_point = "temp - (100 - humidity) / 5"`), parsed and type-checked once when the
//!   pipeline is built; evaluation allocates nothing.
//! - [`dedupe`] — drops readings redelivered by MQTT QoS 1, recognised by their event time
//!   within a bounded ring per key.
//! - [`window`] — tumbling or sliding event-time windows with allowed lateness; a closed window
//!   becomes one reading whose fields are the window's aggregates.
//!
//! # How a pipeline uses them
//! Each operator is split into a *spec* (validated once from the configuration, shared by every
//! key: [`expr::Expr`], [`dedupe::DedupeSpec`], [`window::WindowSpec`]) and, for the stateful
//! ones, a per-key *state* ([`dedupe::DedupeState`], [`window::WindowState`]) that the key's
//! actor owns and checkpoints with its model, so that windows and de-duplication survive a
//! restart. The operators run per key in the order the pipeline's configuration lists them,
//! before the model:
//!
//! - a filter evaluates its [`expr::Expr`] (which must be [`expr::ExprType::Bool`]) and drops
//!   the reading when it is false;
//! - a derive evaluates a [`expr::ExprType::Number`] expression over the fields so far and
//!   appends the result as a new field, which later operators can name;
//! - dedupe drops a reading whose event time the key has just seen;
//! - a window absorbs readings and, when the watermark closes a window, emits one reading
//!   stamped with the window's start whose fields are the aggregates, in configuration order
//!   and named after them (e.g. `temp_mean`, `temp_max`); operators after the window, and the
//!   model, see only those readings.
//!
//! Nothing here panics on any input: expression text, reading values and times, or a state
//! restored from disk.

pub mod dedupe;
pub mod expr;
pub mod window;

#[cfg(test)]
mod tests;
