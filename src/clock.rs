//! The wall clock, read in one place: arrival times of readings, the "now" of checkpoints and
//! classifier intervals. Replay has no wall clock and never calls it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (arrival time of readings without an event time); 0 for
/// a clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
