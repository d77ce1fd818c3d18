//! Every member scored on its own h-step errors, per band of steps: the blend's weights and its
//! intervals for each step of the horizon.
//!
//! # Bands
//! The steps `1..=horizon` are cut into bands that double in length: `[1]`, `[2, 3]`,
//! `[4, 7]`, `[8, 15]`, `[16, 31]`, `[32, 63]`, the last one cut at the horizon (and merged
//! into the one before when that leaves it shorter than half its start, so that no band is much
//! shorter than its first step). A member that is good one step ahead (the last value, a
//! short AR) is often poor a day ahead, where the seasonal members win: one set of weights per
//! band lets each step follow the members that are good at it. Weights vary little within a
//! band, and a band's errors are plentiful, which one weight per step would not be.
//!
//! # Scoring without storing every forecast
//! Scoring step h exactly needs the forecast made h readings ago, for every h: `horizon²`
//! numbers per member. Instead each band scores all of its steps, but for one target at a
//! time. A band `[s, e]` of `L = e − s + 1` steps runs in cycles of L readings: the reading
//! that opens a cycle forecasts step e, the next one step e − 1 (the same target, one reading
//! later), …, the last one step s. All L forecasts of a cycle are for the one target e readings
//! after the cycle opened, so a member's squared errors against it only need three running
//! sums (`Σd`, `Σd²` and a count, with d the forecast minus a reference: exact, and without
//! cancellation at a large offset). When the target arrives the sums give the member's mean
//! squared error over the band's steps, one sample per cycle. A cycle is pending for e
//! readings and a new one opens every L readings, so a band holds `⌈e / L⌉` ≤ 3 cycles. Each
//! band thus sees one sample of L errors every L readings, as many errors as scoring one step
//! per reading, in O(bands × members) numbers. Scoring a single representative step per band
//! was tried first and failed: the naive forecast scored at step 48 is a two-day seasonal
//! naive on hourly data and looked excellent, and took the weight of steps 33…47 where it is
//! poor.
//!
//! # Weights
//! Per band and member an exponentially weighted mean of the samples (weights `1/n`, then at
//! least `min(0.01·L, 0.05)`: a memory of about 100 readings, at least 20 samples); the weights
//! are `w_m ∝ exp(−η_m (E_m − E_best) / E_best)`, η_m = 10·n_m / (n_m + 2) for a member with
//! n_m samples — fewer samples, flatter weights — so a member joins after its first sample
//! (a short series uses its trend from the third reading) without a lucky first error
//! taking all the weight. Why this rule: squared error is convex, so the blend's error is at
//! most the weighted mean of its members' errors, and with these weights that mean exceeds the
//! best member's by at most `Σ_m r_m e^{−η r_m} ≤ (M − 1)/(e·η)` of it (`r_m` = relative excess
//! error) — in practice far less, because a clearly worse member (r ≳ 0.3) gets a weight
//! below 5 %, and members that are about equally good share the weight, and averaging
//! forecasters whose errors are not perfectly correlated is where the blend beats its best
//! member. Inverse-error weights were rejected: they keep a 2× worse member at a third of the
//! weight of the best one, which costs several percent on a random walk where `last` is
//! optimal. Relative (not absolute) error makes η scale-free. A band without a sample yet uses
//! the weights of the band before it.
//!
//! # Intervals
//! The blend's own forecasts are kept per pending cycle (`Σ L·⌈e/L⌉ ≤ 3·horizon` numbers), so
//! its errors are known step by step. Per band: σ_b² = exponentially weighted mean of the
//! blend's squared errors (as above), and σ(h) is interpolated between the bands' centres
//! (`√(s·e)`) linearly in `log h`, with `√h` growth past the last centre. The half-width of
//! step h is `q_b · σ(h)`, where q_b is calibrated online (split-conformal in spirit): for
//! every scored error, `q_b += 0.05·(share of |error| / σ(h) beyond q_b − α)` with α the
//! nominal miss rate, so that the share of errors outside the interval tends to α whatever the
//! error distribution (q starts at the Gaussian z). A band's interval is published once it has
//! scored 20 errors over at least two cycles; before that the step has no interval.

use serde::{Deserialize, Serialize};

use super::MEMBERS;

/// Bands at most (horizon ≤ 64).
pub(super) const MAX_BANDS: usize = 7;
/// η of the exponential weights on relative excess error, for a member with many samples.
const SHARPNESS: f64 = 10.0;
/// Weights below e^−this are 0.
const NEGLIGIBLE_EXPONENT: f64 = 40.0;
/// Pseudo-samples of the worst member's score a member's score is shrunk with.
const PRIOR_SAMPLES: f64 = 1.0;
/// Smallest weight of a new sample per step of a band (memory ≈ 100 readings)…
const SAMPLE_WEIGHT_PER_STEP: f64 = 0.01;
/// … and at most this (at least 20 samples).
const SAMPLE_WEIGHT_CAP: f64 = 0.05;
/// A member's sample counts at most this many times the best member's error.
const SAMPLE_CAP: f64 = 10.0;
/// Errors a band must have scored (over at least two cycles) before its interval is published.
pub(super) const CALIBRATION_ERRORS: u64 = 20;
/// Step of the conformal multiplier per scored cycle.
const QUANTILE_STEP: f64 = 0.05;
/// Range of the conformal multiplier (in σ).
const QUANTILE_RANGE: (f64, f64) = (0.25, 50.0);

/// The bands `[start, end]` of a horizon; derived from it, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bands {
    /// `(start, end)` of each band (steps ≤ 64: a key's state holds one, so it is kept small).
    bounds: [(u8, u8); MAX_BANDS],
    len: u8,
}

impl Bands {
    pub(super) fn new(horizon: usize) -> Self {
        let mut bands = Self {
            bounds: [(0, 0); MAX_BANDS],
            len: 0,
        };
        let horizon = horizon.min(super::MAX_HORIZON);
        let mut list = [(0usize, 0usize); MAX_BANDS];
        let (mut len, mut start) = (0, 1);
        while start <= horizon && len < MAX_BANDS {
            list[len] = (start, (2 * start - 1).min(horizon));
            len += 1;
            start *= 2;
        }
        if len >= 2 {
            let (start, end) = list[len - 1];
            if 2 * (end + 1 - start) < start {
                len -= 1;
                list[len - 1].1 = end;
            }
        }
        for (bound, &(start, end)) in bands.bounds.iter_mut().zip(&list[..len]) {
            // Steps ≤ 64 (the horizon is capped above).
            *bound = (start as u8, end as u8);
        }
        bands.len = len as u8;
        bands
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// `(start, end)` of band `b`.
    pub(super) fn get(&self, b: usize) -> (usize, usize) {
        let (start, end) = self.bounds[b.min(self.len().saturating_sub(1))];
        (usize::from(start), usize::from(end))
    }

    /// The band of step `k` (≥ 1); the last band for steps beyond the horizon.
    pub(super) fn band_of(&self, k: usize) -> usize {
        self.bounds[..self.len()]
            .iter()
            .position(|&(_, end)| k <= usize::from(end))
            .unwrap_or(self.len().saturating_sub(1))
    }

    /// Pending cycles a band holds at most: `⌈e / L⌉`.
    fn cycles(&self, b: usize) -> usize {
        let (start, end) = self.get(b);
        end.div_ceil(end + 1 - start)
    }

    fn length(&self, b: usize) -> usize {
        let (start, end) = self.get(b);
        end + 1 - start
    }
}

/// One pending cycle of a band: the forecasts made for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cycle {
    /// Readings until the target arrives; 0 = free.
    remaining: u32,
    /// Blend forecasts stored in the band's `blend` array for this cycle.
    count: u32,
    /// The blend's first forecast of the cycle: forecasts are summed relative to it.
    reference: f64,
    /// Per member: Σ (forecast − reference).
    sum: [f64; MEMBERS],
    /// Per member: Σ (forecast − reference)².
    sum_sq: [f64; MEMBERS],
    /// Per member: forecasts summed.
    n: [u32; MEMBERS],
}

impl Cycle {
    fn free() -> Self {
        Self {
            remaining: 0,
            count: 0,
            reference: 0.0,
            sum: [0.0; MEMBERS],
            sum_sq: [0.0; MEMBERS],
            n: [0; MEMBERS],
        }
    }
}

/// What one band has learnt about the members and the blend. Field order is the postcard
/// format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Band {
    /// Position in the current cycle (0 opens one).
    phase: u32,
    /// Index of the cycle being filled.
    open: u32,
    cycles: Vec<Cycle>,
    /// The blend's forecasts of every cycle, `L` per cycle.
    blend: Vec<f64>,
    /// Per member: EW mean of its RMS error over the band's steps, one sample per cycle (the
    /// mean absolute error for a one-step band).
    member_mse: [f64; MEMBERS],
    /// Per member: samples (cycles) folded into `member_mse`.
    member_samples: [u32; MEMBERS],
    /// Per member: blend weight, normalised over the members with a sample (0 for others).
    weights: [f64; MEMBERS],
    /// Samples (cycles) of the blend's errors scored.
    blend_samples: u32,
    /// Blend errors scored.
    blend_errors: u64,
    /// The interval from absolute errors: `value ± q σ`.
    absolute: ErrorModel,
    /// The interval from relative errors (`ln y − ln value`, positive series only):
    /// `value · e^{±q σ}`, as wide as the level makes it.
    relative: ErrorModel,
}

/// One way of turning the blend's errors into an interval. Field order is the postcard
/// format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct ErrorModel {
    /// EW mean absolute error (σ_b) over the band's steps: a scale that a rare large error
    /// does not inflate for the whole memory (the multiplier covers the tails).
    scale: f64,
    /// Samples folded into `mse`.
    samples: u32,
    /// Conformal multiplier q_b (in σ).
    quantile: f64,
    /// EW mean interval score of this model's intervals (Gneiting–Raftery: width plus 2/α
    /// times the miss), the lower the better.
    score: f64,
}

impl ErrorModel {
    fn new(z: f64) -> Self {
        Self {
            scale: 0.0,
            samples: 0,
            // The Gaussian multiplier of a mean absolute error: z·√(π/2).
            quantile: z * (std::f64::consts::PI / 2.0).sqrt(),
            score: 0.0,
        }
    }

    fn numbers(&self) -> [f64; 3] {
        [self.scale, self.quantile, self.score]
    }
}

/// The h-step scoring of every member and of the blend (see the module documentation).
/// Field order is the postcard format: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Scoring {
    bands: Vec<Band>,
}

impl Scoring {
    pub(super) fn new(bands: &Bands, z: f64) -> Self {
        let bands = (0..bands.len())
            .map(|b| {
                let cycles = bands.cycles(b);
                Band {
                    phase: 0,
                    open: 0,
                    cycles: vec![Cycle::free(); cycles],
                    blend: vec![0.0; cycles * bands.length(b)],
                    member_mse: [0.0; MEMBERS],
                    member_samples: [0; MEMBERS],
                    weights: [0.0; MEMBERS],
                    blend_samples: 0,
                    blend_errors: 0,
                    absolute: ErrorModel::new(z),
                    relative: ErrorModel::new(z),
                }
            })
            .collect();
        Self { bands }
    }

    /// The step band `b` forecasts at this origin: `end − phase`.
    pub(super) fn step_to_record(&self, bands: &Bands, b: usize) -> usize {
        let (_, end) = bands.get(b);
        let phase = self.bands.get(b).map_or(0, |band| band.phase as usize);
        end.saturating_sub(phase).max(1)
    }

    /// The largest step any band records at this origin.
    pub(super) fn max_step_to_record(&self, bands: &Bands) -> usize {
        (0..bands.len())
            .map(|b| self.step_to_record(bands, b))
            .max()
            .unwrap_or(1)
    }

    /// A reading arrived: every pending cycle is one reading closer to its target, and those
    /// whose target this is are scored against `value` (`None`: the reading was not learnt, or
    /// was a level shift, and scores nothing).
    pub(super) fn arrive(&mut self, bands: &Bands, value: Option<f64>, miss_rate: f64) {
        for b in 0..self.bands.len() {
            let length = bands.length(b);
            let mut due = None;
            if let Some(band) = self.bands.get_mut(b) {
                for (index, cycle) in band.cycles.iter_mut().enumerate() {
                    if cycle.remaining > 0 {
                        cycle.remaining -= 1;
                        if cycle.remaining == 0 {
                            due = Some(index);
                        }
                    }
                }
            }
            if let (Some(index), Some(y)) = (due, value) {
                self.score(bands, b, index, length, y, miss_rate);
            }
        }
    }

    /// Score cycle `index` of band `b` against its target `y`.
    fn score(&mut self, bands: &Bands, b: usize, index: usize, length: usize, y: f64, alpha: f64) {
        let (_, end) = bands.get(b);
        let (absolute, relative) = (
            Lazy::new(|| self.curve(bands, Kind::Absolute)),
            Lazy::new(|| self.curve(bands, Kind::Relative)),
        );
        // The interval of each step before this sample changes it: (σ absolute, σ relative).
        // A one-step band (scored every reading) does not zero a horizon's worth of buffer.
        let steps = length.min(super::MAX_HORIZON);
        let mut one = [(0.0, 0.0); 1];
        let mut many;
        let sigmas: &mut [(f64, f64)] = if steps == 1 {
            &mut one
        } else {
            many = [(0.0, 0.0); super::MAX_HORIZON];
            &mut many[..steps]
        };
        for (j, sigma) in sigmas.iter_mut().enumerate() {
            let k = end - j;
            *sigma = if steps == 1 {
                (
                    self.sigma(bands, k, Kind::Absolute).unwrap_or(0.0),
                    self.sigma(bands, k, Kind::Relative).unwrap_or(0.0),
                )
            } else {
                (
                    absolute.get().sigma(k).unwrap_or(0.0),
                    relative.get().sigma(k).unwrap_or(0.0),
                )
            };
        }
        let Some(band) = self.bands.get_mut(b) else {
            return;
        };
        let Some(cycle) = band.cycles.get(index) else {
            return;
        };
        let (reference, sums, squares, counts, stored) = (
            cycle.reference,
            cycle.sum,
            cycle.sum_sq,
            cycle.n,
            cycle.count,
        );
        let sample_weight = |samples: u32| {
            (1.0 / f64::from(samples.max(1)))
                .max((SAMPLE_WEIGHT_PER_STEP * length as f64).min(SAMPLE_WEIGHT_CAP))
        };
        let d = y - reference;
        let mut samples = [None; MEMBERS];
        for (m, sample) in samples.iter_mut().enumerate() {
            let n = counts[m];
            if n > 0 {
                let count = f64::from(n);
                let total = count * d * d - 2.0 * d * sums[m] + squares[m];
                *sample = Some((total / count).max(0.0)).filter(|mse| mse.is_finite());
            }
        }
        // Winsorised: a sample counts at most SAMPLE_CAP times the best error (of this sample
        // or of the band so far), so that one wild stretch of a member (a transient, a regime
        // the others also missed) does not hold its weight down for the whole memory.
        let sample_best = samples
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let band_best = band
            .member_mse
            .iter()
            .zip(&band.member_samples)
            .filter(|(_, &n)| n > 0)
            .map(|(&rmse, _)| rmse * rmse)
            .fold(f64::INFINITY, f64::min);
        let cap = SAMPLE_CAP
            * sample_best.max(if band_best.is_finite() {
                band_best
            } else {
                0.0
            });
        for (m, sample) in samples.iter().enumerate() {
            let Some(mse) = *sample else { continue };
            let mse = if cap > 0.0 { mse.min(cap) } else { mse };
            band.member_samples[m] = band.member_samples[m].saturating_add(1);
            let weight = sample_weight(band.member_samples[m]);
            band.member_mse[m] += weight * (mse.sqrt() - band.member_mse[m]);
        }
        band.refresh_weights();

        let count = (stored as usize).min(length);
        if count > 0 {
            let offset = index * length;
            let forecasts = band.blend.get(offset..offset + count).unwrap_or(&[]);
            let sigmas = &sigmas[..count.min(sigmas.len())];
            band.blend_samples = band.blend_samples.saturating_add(1);
            band.blend_errors += count as u64;
            let weight = sample_weight(band.blend_samples);
            band.absolute
                .learn(forecasts, sigmas, y, alpha, weight, Kind::Absolute);
            band.relative
                .learn(forecasts, sigmas, y, alpha, weight, Kind::Relative);
        }
        if let Some(slot) = band.cycles.get_mut(index) {
            *slot = Cycle::free();
        }
    }

    /// Add this origin's forecasts of band `b` (for step [`step_to_record`]) to its open
    /// cycle, opening one when the band's phase is 0; `blend` is the published forecast.
    ///
    /// [`step_to_record`]: Self::step_to_record
    pub(super) fn record(
        &mut self,
        bands: &Bands,
        b: usize,
        members: &[Option<f64>; MEMBERS],
        blend: f64,
    ) {
        let length = bands.length(b);
        let (_, end) = bands.get(b);
        let Some(band) = self.bands.get_mut(b) else {
            return;
        };
        if band.phase == 0 {
            // Open a cycle in a free slot (there always is one: ⌈e/L⌉ slots).
            let free = band.cycles.iter().position(|cycle| cycle.remaining == 0);
            match free {
                Some(index) => {
                    band.open = index as u32;
                    if let Some(cycle) = band.cycles.get_mut(index) {
                        *cycle = Cycle::free();
                        cycle.remaining = end as u32;
                        cycle.reference = blend;
                    }
                }
                None => band.open = u32::MAX,
            }
        }
        let open = band.open as usize;
        let phase = band.phase as usize;
        if let Some(cycle) = band.cycles.get_mut(open) {
            for (m, forecast) in members.iter().enumerate() {
                if let Some(value) = forecast {
                    let d = value - cycle.reference;
                    cycle.sum[m] += d;
                    cycle.sum_sq[m] += d * d;
                    cycle.n[m] += 1;
                }
            }
            if let Some(slot) = band.blend.get_mut(open * length + phase) {
                *slot = blend;
                cycle.count = cycle.count.max(phase as u32 + 1);
            }
        }
        band.phase = if phase + 1 >= length {
            0
        } else {
            phase as u32 + 1
        };
    }

    /// Forget every pending cycle (after a level shift the forecasts made before it say
    /// nothing about the members' skill) and start the cycles afresh.
    pub(super) fn drop_pending(&mut self) {
        for band in &mut self.bands {
            band.phase = 0;
            for cycle in &mut band.cycles {
                *cycle = Cycle::free();
            }
        }
    }

    /// The blend weights of step `k`'s band (of the nearest band before it with a sample);
    /// `None` before any member has a sample.
    pub(super) fn weights(&self, bands: &Bands, k: usize) -> Option<&[f64; MEMBERS]> {
        let b = bands.band_of(k);
        self.bands
            .get(..=b.min(self.bands.len().saturating_sub(1)))?
            .iter()
            .rev()
            .find(|band| band.member_samples.iter().any(|&n| n > 0))
            .map(|band| &band.weights)
    }

    /// The score of each member over step `k`'s band (the EW mean of its per-cycle RMS
    /// errors: its mean absolute error for step 1); `None` for a member without a sample.
    pub(super) fn member_rmse(&self, bands: &Bands, k: usize) -> [Option<f64>; MEMBERS] {
        let mut out = [None; MEMBERS];
        if let Some(band) = self.bands.get(bands.band_of(k)) {
            for (m, entry) in out.iter_mut().enumerate() {
                *entry = (band.member_samples[m] > 0).then(|| band.member_mse[m]);
            }
        }
        out
    }

    fn calibrated(band: &Band) -> bool {
        band.blend_samples >= 2 && band.blend_errors >= CALIBRATION_ERRORS
    }

    /// The error scale of model `kind` along the steps: one point per calibrated band.
    fn curve(&self, bands: &Bands, kind: Kind) -> Curve {
        let mut curve = Curve {
            points: [(0, 0.0); MAX_BANDS],
            len: 0,
            constant: false,
        };
        for (b, band) in self.bands.iter().enumerate() {
            let model = band.model(kind);
            if !Self::calibrated(band) || model.samples < 2 {
                continue;
            }
            if model.scale <= 0.0 || model.scale.is_nan() {
                curve.constant = true;
                continue;
            }
            if let Some(point) = curve.points.get_mut(curve.len) {
                let (start, end) = bands.get(b);
                // Steps ≤ 64: start · end fits in u16.
                *point = ((start * end) as u16, model.scale);
                curve.len += 1;
            }
        }
        curve
    }

    /// The intervals of the current state, for any number of steps: each error model's curve
    /// is built once, on first use.
    pub(super) fn intervals<'a>(&'a self, bands: &'a Bands) -> Intervals<'a> {
        Intervals {
            scoring: self,
            bands,
            absolute: std::cell::OnceCell::new(),
            relative: std::cell::OnceCell::new(),
        }
    }

    /// σ(h) of error model `kind` at step `k`, interpolated between the calibrated bands;
    /// `None` before any band is. The same as [`Curve::sigma`], for one step without building
    /// a curve (the one-step band is scored and published every reading: this is its path).
    fn sigma(&self, bands: &Bands, k: usize, kind: Kind) -> Option<f64> {
        // (band, scale) of the calibrated bands whose centre is at or below k, and above it.
        let mut below: Option<(usize, f64)> = None;
        let mut above: Option<(usize, f64)> = None;
        let mut constant = false;
        for (b, band) in self.bands.iter().enumerate() {
            let model = band.model(kind);
            if !Self::calibrated(band) || model.samples < 2 {
                continue;
            }
            if model.scale <= 0.0 || model.scale.is_nan() {
                constant = true;
                continue;
            }
            let (start, end) = bands.get(b);
            // Centre √(start·end) ≤ k ⇔ start·end ≤ k².
            if start * end <= k * k {
                below = Some((b, model.scale));
            } else if above.is_none() {
                above = Some((b, model.scale));
            }
        }
        let centre = |b: usize| {
            let (start, end) = bands.get(b);
            0.5 * ((start as f64).ln() + (end as f64).ln())
        };
        match (below, above) {
            // At a band's centre (step 1 of the one-step band: every reading): its scale.
            (Some((b, scale)), _) if bands.get(b) == (k, k) => Some(scale),
            (Some((b0, s0)), Some((b1, s1))) => {
                let (c0, c1, log_k) = (centre(b0), centre(b1), (k as f64).ln());
                Some(s0 * ((s1 / s0).ln() * (log_k - c0) / (c1 - c0)).exp())
            }
            // Past the last calibrated centre: a random walk's √h growth.
            (Some((b0, s0)), None) => Some(s0 * (0.5 * ((k as f64).ln() - centre(b0))).exp()),
            (None, Some((_, s1))) => Some(s1),
            // A constant series: calibrated with zero error.
            (None, None) => constant.then_some(0.0),
        }
    }

    /// The interval `(lower, upper)` of step `k` around the published `value`: from the error
    /// model of its band with the lower interval score; `None` until the band is calibrated.
    pub(super) fn interval(&self, bands: &Bands, k: usize, value: f64) -> Option<(f64, f64)> {
        if !self.has_interval(bands, k) {
            return None;
        }
        let band = self.bands.get(bands.band_of(k))?;
        let relative =
            band.relative.samples >= 2 && value > 0.0 && band.relative.score < band.absolute.score;
        if relative {
            let spread = band.relative.quantile * self.sigma(bands, k, Kind::Relative)?;
            let factor = spread.exp();
            Some((value / factor, value * factor))
        } else {
            let half_width = band.absolute.quantile * self.sigma(bands, k, Kind::Absolute)?;
            Some((value - half_width, value + half_width))
        }
    }

    /// Whether step `k` has an interval: its band is calibrated.
    pub(super) fn has_interval(&self, bands: &Bands, k: usize) -> bool {
        self.bands
            .get(bands.band_of(k))
            .is_some_and(Self::calibrated)
    }

    /// Whether a deserialised scoring fits `bands`; the error says what does not.
    pub(super) fn check(&self, bands: &Bands) -> Result<(), String> {
        if self.bands.len() != bands.len() {
            return Err(format!(
                "scoring has {} bands, expected {}",
                self.bands.len(),
                bands.len()
            ));
        }
        for (b, band) in self.bands.iter().enumerate() {
            let (cycles, length) = (bands.cycles(b), bands.length(b));
            if band.cycles.len() != cycles
                || band.blend.len() != cycles * length
                || band.phase as usize >= length
            {
                return Err(format!("band {b} does not fit its steps"));
            }
            let (_, end) = bands.get(b);
            let numbers_ok = band
                .cycles
                .iter()
                .flat_map(|cycle| {
                    std::iter::once(cycle.reference)
                        .chain(cycle.sum)
                        .chain(cycle.sum_sq)
                })
                .chain(band.blend.iter().copied())
                .chain(band.member_mse)
                .chain(band.weights)
                .chain(band.absolute.numbers())
                .chain(band.relative.numbers())
                .all(f64::is_finite);
            let cycles_ok = band
                .cycles
                .iter()
                .all(|cycle| cycle.remaining as usize <= end && cycle.count as usize <= length);
            let signs_ok = band
                .member_mse
                .iter()
                .chain(&band.weights)
                .chain([&band.absolute.scale, &band.relative.scale])
                .chain([&band.absolute.score, &band.relative.score])
                .all(|&value| value >= 0.0)
                && band.absolute.quantile > 0.0
                && band.relative.quantile > 0.0;
            if !(numbers_ok && cycles_ok && signs_ok) {
                return Err(format!("band {b} holds an impossible number"));
            }
        }
        Ok(())
    }
}

/// σ(h) of one error model: `(start · end, scale)` of each calibrated band, in step order
/// (the band's centre is √(start · end)), interpolated linearly in `ln h` and `ln σ`, with `√h`
/// growth past the last centre. Logs are taken only where a step falls between or beyond
/// centres, so the one-step band of a one-step forecast (every reading) costs none.
#[derive(Debug, Clone, Copy)]
struct Curve {
    points: [(u16, f64); MAX_BANDS],
    len: usize,
    /// A calibrated band had zero error (a constant series).
    constant: bool,
}

impl Curve {
    fn sigma(&self, k: usize) -> Option<f64> {
        let points = &self.points[..self.len];
        let Some(&(first, first_scale)) = points.first() else {
            return self.constant.then_some(0.0);
        };
        let squared = k * k;
        if squared <= usize::from(first) {
            // At or before the first centre (step 1 of the one-step band: its own scale).
            return Some(first_scale);
        }
        let log_k = (k as f64).ln();
        let centre = |product: u16| 0.5 * f64::from(product).ln();
        for pair in points.windows(2) {
            let ((p0, s0), (p1, s1)) = (pair[0], pair[1]);
            if squared <= usize::from(p1) {
                let (c0, c1) = (centre(p0), centre(p1));
                return Some(s0 * ((s1 / s0).ln() * (log_k - c0) / (c1 - c0)).exp());
            }
        }
        let &(last, last_scale) = points.last()?;
        // Past the last calibrated centre: a random walk's √h growth.
        Some(last_scale * (0.5 * (log_k - centre(last))).exp())
    }
}

/// The intervals of one state (see [`Scoring::intervals`]).
pub(super) struct Intervals<'a> {
    scoring: &'a Scoring,
    bands: &'a Bands,
    absolute: std::cell::OnceCell<Curve>,
    relative: std::cell::OnceCell<Curve>,
}

impl Intervals<'_> {
    /// The interval `(lower, upper)` of step `k` around the published `value`: from the error
    /// model of its band with the lower interval score; `None` until the band is calibrated.
    pub(super) fn interval(&self, k: usize, value: f64) -> Option<(f64, f64)> {
        let band = self.scoring.bands.get(self.bands.band_of(k))?;
        if !Scoring::calibrated(band) {
            return None;
        }
        let relative =
            band.relative.samples >= 2 && value > 0.0 && band.relative.score < band.absolute.score;
        let (scoring, bands) = (self.scoring, self.bands);
        if relative {
            let curve = self
                .relative
                .get_or_init(|| scoring.curve(bands, Kind::Relative));
            let factor = (band.relative.quantile * curve.sigma(k)?).exp();
            Some((value / factor, value * factor))
        } else {
            let curve = self
                .absolute
                .get_or_init(|| scoring.curve(bands, Kind::Absolute));
            let half_width = band.absolute.quantile * curve.sigma(k)?;
            Some((value - half_width, value + half_width))
        }
    }
}

/// A curve built on first use (a one-step band needs only its own).
struct Lazy<F: Fn() -> Curve> {
    cell: std::cell::OnceCell<Curve>,
    build: F,
}

impl<F: Fn() -> Curve> Lazy<F> {
    fn new(build: F) -> Self {
        Self {
            cell: std::cell::OnceCell::new(),
            build,
        }
    }

    fn get(&self) -> &Curve {
        self.cell.get_or_init(&self.build)
    }
}

/// Which error model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Absolute,
    Relative,
}

impl ErrorModel {
    /// Fold one cycle's blend `forecasts` (step e first) against the target `y`: the squared
    /// errors into σ², the share beyond the interval into q (against `sigmas`, the scales at
    /// each step before this sample: `.0` absolute, `.1` relative), and the interval score.
    fn learn(
        &mut self,
        forecasts: &[f64],
        sigmas: &[(f64, f64)],
        y: f64,
        alpha: f64,
        weight: f64,
        kind: Kind,
    ) {
        let (mut sum_abs, mut counted) = (0.0, 0usize);
        let (mut beyond, mut judged, mut score) = (0usize, 0usize, 0.0);
        for (j, &forecast) in forecasts.iter().enumerate() {
            let error = match kind {
                Kind::Absolute => y - forecast,
                Kind::Relative if y > 0.0 && forecast > 0.0 => (y / forecast).ln(),
                Kind::Relative => continue,
            };
            sum_abs += error.abs();
            counted += 1;
            let sigma = sigmas.get(j).map_or(0.0, |s| match kind {
                Kind::Absolute => s.0,
                Kind::Relative => s.1,
            });
            if sigma > 0.0 {
                judged += 1;
                let spread = self.quantile * sigma;
                beyond += usize::from(error.abs() > spread);
                let (lower, upper) = match kind {
                    Kind::Absolute => (forecast - spread, forecast + spread),
                    Kind::Relative => {
                        let factor = spread.exp();
                        (forecast / factor, forecast * factor)
                    }
                };
                let miss = (lower - y).max(0.0) + (y - upper).max(0.0);
                score += (upper - lower) + 2.0 / alpha.max(1e-9) * miss;
            }
        }
        if counted > 0 {
            let mae = sum_abs / counted as f64;
            if mae.is_finite() {
                self.samples = self.samples.saturating_add(1);
                self.scale += weight * (mae - self.scale);
            }
        }
        if judged > 0 {
            let share = beyond as f64 / judged as f64;
            self.quantile = (self.quantile + QUANTILE_STEP * (share - alpha))
                .clamp(QUANTILE_RANGE.0, QUANTILE_RANGE.1);
            let mean_score = score / judged as f64;
            if mean_score.is_finite() {
                self.score += weight * (mean_score - self.score);
            }
        } else if kind == Kind::Relative && counted < forecasts.len() {
            // A value ≤ 0: this series has no relative intervals.
            self.score = f64::MAX;
        }
    }
}

impl Band {
    fn model(&self, kind: Kind) -> &ErrorModel {
        match kind {
            Kind::Absolute => &self.absolute,
            Kind::Relative => &self.relative,
        }
    }

    /// Recompute the weights from the members' errors (see the module documentation).
    fn refresh_weights(&mut self) {
        // A member's score shrunk towards the worst member's by `PRIOR_SAMPLES` pseudo-samples:
        // a member with one lucky sample does not take the weight from one that has been good
        // for a hundred; after a few samples its own errors decide.
        let worst = self
            .member_mse
            .iter()
            .zip(&self.member_samples)
            .filter(|(_, &samples)| samples > 0)
            .map(|(&score, _)| score)
            .fold(f64::NEG_INFINITY, f64::max);
        if !worst.is_finite() {
            self.weights = [0.0; MEMBERS];
            return;
        }
        let mut shrunk = [f64::INFINITY; MEMBERS];
        for ((out, &score), &samples) in shrunk
            .iter_mut()
            .zip(&self.member_mse)
            .zip(&self.member_samples)
        {
            if samples > 0 {
                let n = f64::from(samples);
                *out = (n * score + PRIOR_SAMPLES * worst) / (n + PRIOR_SAMPLES);
            }
        }
        let best = shrunk.iter().copied().fold(f64::INFINITY, f64::min);
        let reference = best.max(f64::MIN_POSITIVE);
        let mut total = 0.0;
        for (weight, &score) in self.weights.iter_mut().zip(&shrunk) {
            let exponent = SHARPNESS * (score - best) / reference;
            *weight = if exponent == 0.0 {
                1.0
            } else if exponent < NEGLIGIBLE_EXPONENT {
                (-exponent).exp()
            } else {
                // e^−40 ≈ 4e−18: nothing a blend of six could notice (and an exp saved on
                // the one-step band, which is scored every reading).
                0.0
            };
            total += *weight;
        }
        if total > 0.0 {
            for weight in &mut self.weights {
                *weight /= total;
            }
        }
    }
}
