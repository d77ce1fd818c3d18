//! Per-key event-time windows (tumbling or sliding) with allowed lateness; the open state is
//! plain data that is checkpointed with the key and restored after a restart.
//!
//! # Windows
//! Windows are aligned to the Unix epoch and half-open: with size `S` and slide `D`, the
//! windows are `[k·D, k·D + S)` for every integer `k` (negative times use floor division, so
//! `-1` belongs to `[-D, …)`). A reading at time `t` belongs to the `S/D` windows whose start
//! is `⌊t/D⌋·D − j·D` for `j = 0 … S/D − 1`; a reading exactly at a window's end belongs to
//! the next one. Tumbling windows are the case `D == S`.
//!
//! # Watermark, closing and lateness
//! The watermark is the largest event time seen minus `lateness_ms` (or a later time given to
//! [`WindowSpec::advance_to`]); it never goes back. A window closes once the watermark reaches
//! its end (`end <= watermark`): it is emitted exactly once, then forgotten. A reading is
//! accepted if at least one of its windows is still open; it then counts in those of its
//! windows that are open (not in ones already emitted). A reading all of whose windows are
//! closed is [`Late`] and changes nothing. When a reading moves the watermark, the windows it
//! closes are emitted *before* the reading is added; the reading never belongs to one of them
//! (its windows all end after it), so this only fixes the order of effects. Windows close only
//! by the watermark: nothing is force-closed at shutdown, because the open state is checkpointed
//! and the windows go on after a restart. An idle key's windows are flushed by
//! [`WindowSpec::advance_to`] with a watermark derived from processing time. Note that one
//! reading far in the future moves the watermark there: the daemon drops readings more than
//! the pipeline's `max_skew` ahead of its clock before they reach the window (`time_skew`).
//!
//! # Aggregates
//! Each [`AggSpec`] reads one value of the reading. Values that are not finite (NaN, ±∞, or an
//! index past the end of the reading) are ignored by that aggregate, so `Count` counts finite
//! values. A window is emitted when it holds at least one reading; an aggregate that saw no
//! finite value is NaN (`Sum` and `Count` are 0). `First`/`Last` are by event time (ties: the
//! earlier/later arrival). `Std` is the population standard deviation, kept with Welford's
//! update and merged with Chan et al.'s formula; sums use Neumaier's compensated summation.
//!
//! # State
//! The state keeps one partial aggregate per slide-long pane that holds data, not one per
//! window: a reading updates one pane, and a closing window merges its `S/D` panes. At most
//! `S/D + ⌈lateness/D⌉` panes are open, so with the limits [`WindowSpec::new`] enforces the
//! state is bounded; once that many panes have been seen, pushing allocates nothing.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most windows a reading may belong to (`size_ms / slide_ms`).
pub const MAX_WINDOWS_PER_READING: i64 = 1000;
/// Most slides the lateness may span (`⌈lateness_ms / slide_ms⌉`).
pub const MAX_LATENESS_SLIDES: i64 = 1000;
/// Most aggregates per window.
pub const MAX_AGGREGATES: usize = 64;

/// An aggregate function over the readings of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFn {
    /// Arithmetic mean.
    Mean,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum (0 for no values).
    Sum,
    /// Number of values (finite ones).
    Count,
    /// Population standard deviation (divides by n, like eKuiper's `stddev`).
    Std,
    /// The value with the earliest event time.
    First,
    /// The value with the latest event time.
    Last,
    /// `(last − first) / (t_last − t_first)` per second; 0 with one value or equal times.
    Rate,
}

impl AggFn {
    /// Every aggregate function, in declaration order.
    pub const ALL: [AggFn; 9] = [
        AggFn::Mean,
        AggFn::Min,
        AggFn::Max,
        AggFn::Sum,
        AggFn::Count,
        AggFn::Std,
        AggFn::First,
        AggFn::Last,
        AggFn::Rate,
    ];

    /// The name used in configuration and in output field names (`mean`, `std`, …).
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Mean => "mean",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Sum => "sum",
            AggFn::Count => "count",
            AggFn::Std => "std",
            AggFn::First => "first",
            AggFn::Last => "last",
            AggFn::Rate => "rate",
        }
    }

    /// The function called `name` in configuration (the inverse of [`AggFn::name`]).
    pub fn from_name(name: &str) -> Option<AggFn> {
        AggFn::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for AggFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One aggregate of a window: a function over one value of the readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggSpec {
    /// Index into the reading's values.
    pub input: usize,
    /// The function applied.
    pub func: AggFn,
}

/// Why a window specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The size is zero or negative.
    #[error("window size_ms must be > 0 (got {size_ms})")]
    SizeNotPositive {
        /// The size given.
        size_ms: i64,
    },
    /// The slide is not in `1..=size`.
    #[error("window slide_ms must be > 0 and <= size_ms {size_ms} (got {slide_ms})")]
    SlideOutOfRange {
        /// The size given.
        size_ms: i64,
        /// The slide given.
        slide_ms: i64,
    },
    /// The size is not a whole number of slides.
    #[error(
        "window size_ms {size_ms} must be a multiple of slide_ms {slide_ms}, so that every \
         reading belongs to the same number of windows and windows start on slide boundaries"
    )]
    SizeNotMultipleOfSlide {
        /// The size given.
        size_ms: i64,
        /// The slide given.
        slide_ms: i64,
    },
    /// A reading would belong to too many windows.
    #[error(
        "window size_ms / slide_ms must be at most {MAX_WINDOWS_PER_READING} (got {windows}); \
         use a longer slide"
    )]
    TooManyWindows {
        /// `size_ms / slide_ms`.
        windows: i64,
    },
    /// The lateness is negative.
    #[error("window lateness_ms must be >= 0 (got {lateness_ms})")]
    NegativeLateness {
        /// The lateness given.
        lateness_ms: i64,
    },
    /// The lateness spans too many slides (the state keeps one pane per slide).
    #[error(
        "window lateness_ms may span at most {MAX_LATENESS_SLIDES} slides of {slide_ms} ms \
         (got {lateness_ms} ms)"
    )]
    LatenessTooLong {
        /// The lateness given.
        lateness_ms: i64,
        /// The slide given.
        slide_ms: i64,
    },
    /// No aggregate was given.
    #[error("a window needs at least one aggregate")]
    NoAggregates,
    /// Too many aggregates.
    #[error("a window may have at most {MAX_AGGREGATES} aggregates (got {count})")]
    TooManyAggregates {
        /// The number given.
        count: usize,
    },
}

/// A reading refused because every window it belongs to has already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "reading at {time_ms} ms is late: every window it belongs to has closed (watermark \
     {watermark_ms} ms)"
)]
pub struct Late {
    /// The reading's event time.
    pub time_ms: i64,
    /// The watermark when it arrived.
    pub watermark_ms: i64,
}

/// A validated window definition; the per-key [`WindowState`] is separate, so one spec serves
/// every key of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    size_ms: i64,
    slide_ms: i64,
    lateness_ms: i64,
    aggs: Vec<AggSpec>,
    /// `size_ms / slide_ms`: panes per window, windows per reading.
    panes_per_window: i64,
    /// Fingerprint of what the state's layout depends on (size, slide, aggregates).
    layout: u64,
}

/// The open windows of one key: plain data, checkpointed with the key (round-trips through
/// serde, e.g. postcard) and bounded in size (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawWindowState")]
pub struct WindowState {
    /// Fingerprint of the spec this state was built for.
    layout: u64,
    /// Windows ending at or before this time are closed; `i64::MIN` before any reading.
    watermark_ms: i64,
    /// Indices `p` of the panes `[p·slide, (p+1)·slide)` holding data, strictly ascending.
    panes: VecDeque<i64>,
    /// One accumulator per aggregate per pane, pane after pane.
    accs: VecDeque<Acc>,
}

/// The serialized shape of [`WindowState`], checked before it is accepted.
#[derive(Deserialize)]
struct RawWindowState {
    layout: u64,
    watermark_ms: i64,
    panes: VecDeque<i64>,
    accs: VecDeque<Acc>,
}

impl TryFrom<RawWindowState> for WindowState {
    type Error = String;

    fn try_from(raw: RawWindowState) -> Result<Self, Self::Error> {
        let ascending = raw
            .panes
            .iter()
            .zip(raw.panes.iter().skip(1))
            .all(|(a, b)| a < b);
        if !ascending {
            return Err("window state: pane indices are not strictly ascending".into());
        }
        let consistent = if raw.panes.is_empty() {
            raw.accs.is_empty()
        } else {
            raw.accs.len() % raw.panes.len() == 0 && raw.accs.len() >= raw.panes.len()
        };
        if !consistent {
            return Err(format!(
                "window state: {} accumulators do not divide into {} panes",
                raw.accs.len(),
                raw.panes.len()
            ));
        }
        Ok(WindowState {
            layout: raw.layout,
            watermark_ms: raw.watermark_ms,
            panes: raw.panes,
            accs: raw.accs,
        })
    }
}

impl Default for WindowState {
    /// An empty state that any spec adopts on its first push.
    fn default() -> Self {
        WindowState {
            layout: 0,
            watermark_ms: i64::MIN,
            panes: VecDeque::new(),
            accs: VecDeque::new(),
        }
    }
}

impl WindowState {
    /// The watermark: windows ending at or before it are closed (`i64::MIN` before any
    /// reading).
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Number of slide-long panes holding data (what the state's size is proportional to).
    pub fn pane_count(&self) -> usize {
        self.panes.len()
    }
}

impl WindowSpec {
    /// Validates a window definition: `size_ms > 0`; `0 < slide_ms <= size_ms` (equal for
    /// tumbling windows); `size_ms` a multiple of `slide_ms`, so that every reading belongs to
    /// exactly `size_ms / slide_ms` windows and windows are unions of whole slide-long panes;
    /// `size_ms / slide_ms <= 1000` and `⌈lateness_ms / slide_ms⌉ <= 1000`, which bound the work
    /// per reading and the state; `lateness_ms >= 0`; 1 to 64 aggregates.
    ///
    /// # Errors
    /// The first [`WindowError`] found, naming the value and what is accepted.
    pub fn new(
        size_ms: i64,
        slide_ms: i64,
        lateness_ms: i64,
        aggs: Vec<AggSpec>,
    ) -> Result<Self, WindowError> {
        if size_ms <= 0 {
            return Err(WindowError::SizeNotPositive { size_ms });
        }
        if slide_ms <= 0 || slide_ms > size_ms {
            return Err(WindowError::SlideOutOfRange { size_ms, slide_ms });
        }
        if size_ms % slide_ms != 0 {
            return Err(WindowError::SizeNotMultipleOfSlide { size_ms, slide_ms });
        }
        let windows = size_ms / slide_ms;
        if windows > MAX_WINDOWS_PER_READING {
            return Err(WindowError::TooManyWindows { windows });
        }
        if lateness_ms < 0 {
            return Err(WindowError::NegativeLateness { lateness_ms });
        }
        if lateness_ms / slide_ms + i64::from(lateness_ms % slide_ms != 0) > MAX_LATENESS_SLIDES {
            return Err(WindowError::LatenessTooLong {
                lateness_ms,
                slide_ms,
            });
        }
        if aggs.is_empty() {
            return Err(WindowError::NoAggregates);
        }
        if aggs.len() > MAX_AGGREGATES {
            return Err(WindowError::TooManyAggregates { count: aggs.len() });
        }
        let layout = layout_fingerprint(size_ms, slide_ms, &aggs);
        Ok(WindowSpec {
            size_ms,
            slide_ms,
            lateness_ms,
            aggs,
            panes_per_window: windows,
            layout,
        })
    }

    /// Window length in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// Distance between window starts in milliseconds (equal to the size for tumbling windows).
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }

    /// How far behind the newest event time a reading may be and still count.
    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// The aggregates, in the order they are emitted.
    pub fn aggs(&self) -> &[AggSpec] {
        &self.aggs
    }

    /// A state with no open window.
    pub fn new_state(&self) -> WindowState {
        WindowState {
            layout: self.layout,
            ..WindowState::default()
        }
    }

    /// Adds one reading at event time `time_ms`. Windows that the new watermark closes are
    /// emitted first, in order of end time, as `emit(start_ms, end_ms, aggregates)` with the
    /// aggregates in [`WindowSpec::aggs`] order; then the reading is added to its open windows.
    ///
    /// A state made for a different spec (size, slide or aggregates changed since it was
    /// checkpointed) has its open windows dropped, keeping the watermark.
    ///
    /// # Errors
    /// [`Late`] when every window the reading belongs to has closed; the state is unchanged
    /// and nothing is emitted.
    pub fn push(
        &self,
        st: &mut WindowState,
        time_ms: i64,
        values: &[f64],
        mut emit: impl FnMut(i64, i64, &[f64]),
    ) -> Result<(), Late> {
        let pane = time_ms.div_euclid(self.slide_ms);
        let last_window_end =
            i128::from(pane) * i128::from(self.slide_ms) + i128::from(self.size_ms);
        if last_window_end <= i128::from(st.watermark_ms) {
            return Err(Late {
                time_ms,
                watermark_ms: st.watermark_ms,
            });
        }
        self.adopt(st);
        self.close(st, time_ms.saturating_sub(self.lateness_ms), &mut emit);
        let m = self.aggs.len();
        let pos = st.panes.partition_point(|&p| p < pane);
        if st.panes.get(pos) != Some(&pane) {
            st.panes.insert(pos, pane);
            for (j, agg) in self.aggs.iter().enumerate() {
                st.accs.insert(pos * m + j, Acc::new(agg.func));
            }
        }
        for (j, agg) in self.aggs.iter().enumerate() {
            let value = values.get(agg.input).copied().unwrap_or(f64::NAN);
            if let Some(acc) = st.accs.get_mut(pos * m + j) {
                acc.add(time_ms, value);
            }
        }
        Ok(())
    }

    /// Moves the watermark to `watermark_ms` (if that is later) and emits, in order of end
    /// time, every window that ends at or before it. Used to flush an idle key by processing
    /// time; readings for the closed windows are [`Late`] afterwards.
    pub fn advance_to(
        &self,
        st: &mut WindowState,
        watermark_ms: i64,
        mut emit: impl FnMut(i64, i64, &[f64]),
    ) {
        self.adopt(st);
        self.close(st, watermark_ms, &mut emit);
    }

    /// Number of windows that hold data and have not closed yet.
    pub fn open_windows(&self, st: &WindowState) -> usize {
        if st.layout != self.layout {
            return 0;
        }
        let n = i128::from(self.panes_per_window);
        let first_open = self.first_window_ending_after(st.watermark_ms);
        let mut count: i128 = 0;
        // Windows are counted as the union of the intervals [p − n + 1, p] ∩ [first_open, ∞).
        let mut counted_through = first_open - 1;
        for &pane in &st.panes {
            let pane = i128::from(pane);
            let from = (pane - n + 1).max(counted_through + 1);
            if pane >= from {
                count += pane - from + 1;
                counted_through = pane;
            }
        }
        usize::try_from(count).unwrap_or(usize::MAX)
    }

    /// Makes `st` fit this spec: a state built for another layout (or inconsistent) loses its
    /// open windows but keeps its watermark.
    fn adopt(&self, st: &mut WindowState) {
        let consistent = st.accs.len() == st.panes.len() * self.aggs.len();
        if st.layout != self.layout || !consistent {
            st.layout = self.layout;
            st.panes.clear();
            st.accs.clear();
        }
    }

    /// Index of the first window whose end is after `watermark_ms`: the smallest `k` with
    /// `k·slide + size > watermark`.
    fn first_window_ending_after(&self, watermark_ms: i64) -> i128 {
        floor_div(
            i128::from(watermark_ms) - i128::from(self.size_ms),
            i128::from(self.slide_ms),
        ) + 1
    }

    /// Raises the watermark to `watermark_ms`, emitting the windows that closes and dropping
    /// the panes no open window needs.
    fn close(
        &self,
        st: &mut WindowState,
        watermark_ms: i64,
        emit: &mut impl FnMut(i64, i64, &[f64]),
    ) {
        if watermark_ms <= st.watermark_ms {
            return;
        }
        let slide = i128::from(self.slide_ms);
        let size = i128::from(self.size_ms);
        let n = i128::from(self.panes_per_window);
        // Windows k in k_lo..=k_hi end in (old watermark, new watermark].
        let k_lo = self.first_window_ending_after(st.watermark_ms);
        let k_hi = self.first_window_ending_after(watermark_ms) - 1;
        st.watermark_ms = watermark_ms;
        let m = self.aggs.len();
        let mut out = [0.0; MAX_AGGREGATES];
        let Some(&front) = st.panes.front() else {
            return;
        };
        let mut k = k_lo.max(i128::from(front) - n + 1);
        // Index of the first pane >= k.
        let mut first = 0;
        while k <= k_hi {
            while st.panes.get(first).is_some_and(|&p| i128::from(p) < k) {
                first += 1;
            }
            let Some(&next) = st.panes.get(first) else {
                break;
            };
            let next = i128::from(next);
            if next > k + n - 1 {
                // Window k holds no pane: skip to the first window that holds `next`.
                k = next - n + 1;
                continue;
            }
            let mut last = first;
            while st
                .panes
                .get(last + 1)
                .is_some_and(|&p| i128::from(p) < k + n)
            {
                last += 1;
            }
            for (j, (agg, slot)) in self.aggs.iter().zip(out.iter_mut()).enumerate() {
                let mut acc = Acc::new(agg.func);
                for pane in first..=last {
                    if let Some(part) = st.accs.get(pane * m + j) {
                        acc.merge(part);
                    }
                }
                *slot = acc.value();
            }
            let start = k * slide;
            emit(clamp_i64(start), clamp_i64(start + size), &out[..m]);
            k += 1;
        }
        // A pane is needed until its last window (k = p) closes.
        while st.panes.front().is_some_and(|&p| i128::from(p) <= k_hi) {
            st.panes.pop_front();
            for _ in 0..m {
                st.accs.pop_front();
            }
        }
    }
}

fn floor_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b)
}

fn clamp_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// FNV-1a over what a state's layout depends on; stable across builds and platforms (unlike
/// `std`'s hasher), because it is compared with checkpointed states.
fn layout_fingerprint(size_ms: i64, slide_ms: i64, aggs: &[AggSpec]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |word: u64| {
        for byte in word.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(size_ms as u64);
    feed(slide_ms as u64);
    feed(aggs.len() as u64);
    for agg in aggs {
        feed(agg.input as u64);
        feed(AggFn::ALL.iter().position(|f| *f == agg.func).unwrap_or(0) as u64);
    }
    // 0 is the layout of `WindowState::default()`, which every spec adopts.
    hash.max(1)
}

/// The partial aggregate of one function over the readings of one pane, or of several merged.
/// Equality is bitwise (see the `PartialEq` impl), since NaN marks "no value yet".
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Acc {
    Mean {
        count: u64,
        sum: f64,
        compensation: f64,
    },
    Min(f64),
    Max(f64),
    Sum {
        sum: f64,
        compensation: f64,
    },
    Count(u64),
    Std {
        count: u64,
        mean: f64,
        m2: f64,
    },
    First {
        time_ms: i64,
        value: f64,
    },
    Last {
        time_ms: i64,
        value: f64,
    },
    Rate {
        first_time_ms: i64,
        first_value: f64,
        last_time_ms: i64,
        last_value: f64,
    },
}

/// Neumaier's compensated addition of `x` to `sum`.
fn add_compensated(sum: &mut f64, compensation: &mut f64, x: f64) {
    let total = *sum + x;
    if sum.abs() >= x.abs() {
        *compensation += (*sum - total) + x;
    } else {
        *compensation += (x - total) + *sum;
    }
    *sum = total;
}

/// Keeps `(time, value)` if it is earlier than the held one (ties: the held one stays); a NaN
/// `value` means "nothing" on either side.
fn keep_first(held_time: &mut i64, held_value: &mut f64, time_ms: i64, value: f64) {
    if !value.is_nan() && (held_value.is_nan() || time_ms < *held_time) {
        (*held_time, *held_value) = (time_ms, value);
    }
}

/// Keeps `(time, value)` if it is not earlier than the held one (ties: the newcomer wins).
fn keep_last(held_time: &mut i64, held_value: &mut f64, time_ms: i64, value: f64) {
    if !value.is_nan() && (held_value.is_nan() || time_ms >= *held_time) {
        (*held_time, *held_value) = (time_ms, value);
    }
}

impl PartialEq for Acc {
    /// Bitwise, so that a state equals its own copy even while it holds NaN ("no value yet").
    fn eq(&self, other: &Acc) -> bool {
        self.bits() == other.bits()
    }
}

impl Acc {
    /// The variant and its fields as raw bits, for [`PartialEq`].
    fn bits(&self) -> (u8, [u64; 4]) {
        match *self {
            Acc::Mean {
                count,
                sum,
                compensation,
            } => (0, [count, sum.to_bits(), compensation.to_bits(), 0]),
            Acc::Min(value) => (1, [value.to_bits(), 0, 0, 0]),
            Acc::Max(value) => (2, [value.to_bits(), 0, 0, 0]),
            Acc::Sum { sum, compensation } => (3, [sum.to_bits(), compensation.to_bits(), 0, 0]),
            Acc::Count(count) => (4, [count, 0, 0, 0]),
            Acc::Std { count, mean, m2 } => (5, [count, mean.to_bits(), m2.to_bits(), 0]),
            Acc::First { time_ms, value } => (6, [time_ms as u64, value.to_bits(), 0, 0]),
            Acc::Last { time_ms, value } => (7, [time_ms as u64, value.to_bits(), 0, 0]),
            Acc::Rate {
                first_time_ms,
                first_value,
                last_time_ms,
                last_value,
            } => (
                8,
                [
                    first_time_ms as u64,
                    first_value.to_bits(),
                    last_time_ms as u64,
                    last_value.to_bits(),
                ],
            ),
        }
    }

    /// The empty partial aggregate (min/max/first/last hold NaN until a value arrives).
    fn new(func: AggFn) -> Acc {
        match func {
            AggFn::Mean => Acc::Mean {
                count: 0,
                sum: 0.0,
                compensation: 0.0,
            },
            AggFn::Min => Acc::Min(f64::NAN),
            AggFn::Max => Acc::Max(f64::NAN),
            AggFn::Sum => Acc::Sum {
                sum: 0.0,
                compensation: 0.0,
            },
            AggFn::Count => Acc::Count(0),
            AggFn::Std => Acc::Std {
                count: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggFn::First => Acc::First {
                time_ms: i64::MAX,
                value: f64::NAN,
            },
            AggFn::Last => Acc::Last {
                time_ms: i64::MIN,
                value: f64::NAN,
            },
            AggFn::Rate => Acc::Rate {
                first_time_ms: i64::MAX,
                first_value: f64::NAN,
                last_time_ms: i64::MIN,
                last_value: f64::NAN,
            },
        }
    }

    fn add(&mut self, time_ms: i64, x: f64) {
        if !x.is_finite() {
            return;
        }
        match self {
            Acc::Mean {
                count,
                sum,
                compensation,
            } => {
                *count = count.saturating_add(1);
                add_compensated(sum, compensation, x);
            }
            Acc::Min(min) => *min = min.min(x),
            Acc::Max(max) => *max = max.max(x),
            Acc::Sum { sum, compensation } => add_compensated(sum, compensation, x),
            Acc::Count(count) => *count = count.saturating_add(1),
            Acc::Std { count, mean, m2 } => {
                *count = count.saturating_add(1);
                let delta = x - *mean;
                *mean += delta / *count as f64;
                *m2 += delta * (x - *mean);
            }
            Acc::First { time_ms: t, value } => keep_first(t, value, time_ms, x),
            Acc::Last { time_ms: t, value } => keep_last(t, value, time_ms, x),
            Acc::Rate {
                first_time_ms,
                first_value,
                last_time_ms,
                last_value,
            } => {
                keep_first(first_time_ms, first_value, time_ms, x);
                keep_last(last_time_ms, last_value, time_ms, x);
            }
        }
    }

    /// Merges the partial aggregate of a pane with later readings (pane order is time order,
    /// so on equal times `other` counts as the later arrival).
    fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (
                Acc::Mean {
                    count,
                    sum,
                    compensation,
                },
                Acc::Mean {
                    count: other_count,
                    sum: other_sum,
                    compensation: other_compensation,
                },
            ) => {
                *count = count.saturating_add(*other_count);
                add_compensated(sum, compensation, *other_sum);
                *compensation += other_compensation;
            }
            (Acc::Min(min), Acc::Min(other)) => *min = min.min(*other),
            (Acc::Max(max), Acc::Max(other)) => *max = max.max(*other),
            (
                Acc::Sum { sum, compensation },
                Acc::Sum {
                    sum: other_sum,
                    compensation: other_compensation,
                },
            ) => {
                add_compensated(sum, compensation, *other_sum);
                *compensation += other_compensation;
            }
            (Acc::Count(count), Acc::Count(other)) => *count = count.saturating_add(*other),
            (
                Acc::Std { count, mean, m2 },
                Acc::Std {
                    count: other_count,
                    mean: other_mean,
                    m2: other_m2,
                },
            ) => {
                if *other_count == 0 {
                    return;
                }
                if *count == 0 {
                    (*count, *mean, *m2) = (*other_count, *other_mean, *other_m2);
                    return;
                }
                // Chan, Golub & LeVeque: combine two (count, mean, M2) summaries.
                let (na, nb) = (*count as f64, *other_count as f64);
                let total = na + nb;
                let delta = other_mean - *mean;
                *mean += delta * nb / total;
                *m2 += other_m2 + delta * delta * na * nb / total;
                *count = count.saturating_add(*other_count);
            }
            (
                Acc::First { time_ms, value },
                Acc::First {
                    time_ms: other_time,
                    value: other_value,
                },
            ) => keep_first(time_ms, value, *other_time, *other_value),
            (
                Acc::Last { time_ms, value },
                Acc::Last {
                    time_ms: other_time,
                    value: other_value,
                },
            ) => keep_last(time_ms, value, *other_time, *other_value),
            (
                Acc::Rate {
                    first_time_ms,
                    first_value,
                    last_time_ms,
                    last_value,
                },
                Acc::Rate {
                    first_time_ms: other_first_time,
                    first_value: other_first_value,
                    last_time_ms: other_last_time,
                    last_value: other_last_value,
                },
            ) => {
                keep_first(
                    first_time_ms,
                    first_value,
                    *other_first_time,
                    *other_first_value,
                );
                keep_last(
                    last_time_ms,
                    last_value,
                    *other_last_time,
                    *other_last_value,
                );
            }
            // Different functions never meet: a pane's accumulators follow the spec's order.
            _ => {}
        }
    }

    fn value(&self) -> f64 {
        match *self {
            Acc::Mean {
                count,
                sum,
                compensation,
            } => {
                if count == 0 {
                    f64::NAN
                } else {
                    (sum + compensation) / count as f64
                }
            }
            Acc::Min(value) | Acc::Max(value) => value,
            Acc::Sum { sum, compensation } => sum + compensation,
            Acc::Count(count) => count as f64,
            Acc::Std { count, m2, .. } => {
                if count == 0 {
                    f64::NAN
                } else {
                    (m2.max(0.0) / count as f64).sqrt()
                }
            }
            Acc::First { value, .. } | Acc::Last { value, .. } => value,
            Acc::Rate {
                first_time_ms,
                first_value,
                last_time_ms,
                last_value,
            } => {
                if first_value.is_nan() {
                    f64::NAN
                } else if last_time_ms <= first_time_ms {
                    0.0
                } else {
                    // Both times lie in one window, so the difference cannot overflow.
                    let seconds =
                        (i128::from(last_time_ms) - i128::from(first_time_ms)) as f64 / 1000.0;
                    (last_value - first_value) / seconds
                }
            }
        }
    }
}
