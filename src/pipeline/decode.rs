//! Decoding for a pipeline: its decoder over a message, each reading counted, each drop counted
//! by reason and logged (rate-limited), readings too far ahead of the clock dropped.

use super::Pipeline;
use crate::codec::{DecodeError, DropReason, ReadingBuf};

impl Pipeline {
    /// Decode a payload expected to hold one reading with this pipeline's decoder (relative
    /// SenML times count from 0); `Ok(n)`: `n` readings, the last one in `out`.
    ///
    /// # Errors
    /// The first [`DecodeError`], saying why a reading (or the payload) is dropped.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        out: &mut ReadingBuf,
    ) -> Result<usize, DecodeError> {
        self.decoder.decode(topic, payload, out)
    }

    /// Decodes every reading of a message, calling `f` with each (counted in `readings`);
    /// each reading or payload dropped is counted by reason and logged (rate-limited).
    /// With a `clock` (the daemon's, in ms), a reading whose event time is more than
    /// `max_skew` ahead of it is dropped as `time_skew`. Returns the readings accepted.
    pub(super) fn decode_counted(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        clock: Option<i64>,
        buf: &mut ReadingBuf,
        f: &mut impl FnMut(&Pipeline, &ReadingBuf),
    ) -> usize {
        use std::sync::atomic::Ordering::Relaxed;

        let latest = clock.map(|clock| clock.saturating_add(self.max_skew_ms));
        let mut accepted = 0;
        self.decode_each(
            topic,
            payload,
            now_ms,
            buf,
            |reading| {
                if let (Some(latest), Some(time_ms)) = (latest, reading.time_ms) {
                    if time_ms > latest {
                        self.count_skewed(topic, reading, time_ms, latest);
                        return;
                    }
                }
                self.stats.readings.fetch_add(1, Relaxed);
                accepted += 1;
                f(self, reading);
            },
            |e| {
                self.stats.drops.record(e.reason, |suppressed| {
                    tracing::warn!(
                        pipeline = %self.name,
                        reason = e.reason.as_str(),
                        suppressed,
                        "dropped a reading on {topic}: {e}"
                    )
                })
            },
        );
        accepted
    }

    /// Counts and logs (rate-limited) a reading dropped because its event time `time_ms` is
    /// past `latest`, the daemon's clock plus `max_skew`.
    #[cold]
    fn count_skewed(&self, topic: &str, reading: &ReadingBuf, time_ms: i64, latest: i64) {
        let reason = DropReason::TimeSkew;
        self.stats.drops.record(reason, |suppressed| {
            let ahead_ms = i128::from(time_ms) - i128::from(latest) + i128::from(self.max_skew_ms);
            tracing::warn!(
                pipeline = %self.name,
                reason = reason.as_str(),
                suppressed,
                "dropped a reading of key {:?} on {topic}: its event time {time_ms} ms is {ahead_ms} ms ahead of the daemon's clock, more than max_skew ({} ms)",
                reading.key,
                self.max_skew_ms
            )
        });
    }

    /// Decode every reading of a payload with this pipeline's decoder: `on_reading` is called
    /// once per reading, `on_error` once per reading (or payload) dropped. See
    /// [`Decoder::decode_each`].
    pub fn decode_each(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        out: &mut ReadingBuf,
        on_reading: impl FnMut(&ReadingBuf),
        on_error: impl FnMut(DecodeError),
    ) {
        self.decoder
            .decode_each(topic, payload, now_ms, out, on_reading, on_error)
    }
}
