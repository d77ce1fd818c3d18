//! Streaming k-means: [`StreamingKMeans`] (mini-batches, Spark's `StreamingKMeans`) and
//! [`OnlineKMeans`] (one point at a time, Flink ML's `OnlineKMeans` with a batch of one), plus
//! [`adjusted_rand_index`] to score a clustering against known labels.
//!
//! # Update rule
//! Every cluster has a centre `c` and a weight `n` (a decayed count of the points it absorbed).
//! With decay factor `a = 0.5^(1/half_life)` per update (per batch for [`StreamingKMeans`], per
//! point for [`OnlineKMeans`]), a cluster that receives `m` points of sum `s` becomes
//!
//! ```text
//! c ← (c·n·a + s) / (n·a + m)        n ← n·a + m
//! ```
//!
//! and a cluster that receives nothing just decays, `n ← n·a`. A point weighs half as much
//! after `half_life` updates, so centres follow drifting data with that half-life.
//!
//! # Standardisation
//! Profiles mix units (a temperature mean, a slope per hour, a count), so with `scale = true`
//! (the default) distances are measured between standardised features
//! `zᵢ = (xᵢ − μᵢ)/σᵢ`, where `μ` and `σ²` are a *running, decayed* mean and variance with the
//! same decay as the clusters (West's weighted update, each point weighing 1 when it arrives).
//! The standardised space moves as `μ` and `σ` learn. Centres are therefore **stored in
//! original units** and standardised with the current statistics whenever distances are
//! computed: this is exactly "centres kept in the standardised space and re-expressed after
//! every change of the statistics" (the update rule above commutes with the affine map), but a
//! centre that receives no points stays bit for bit where it was instead of accumulating
//! round-off from being mapped back and forth. Only the metric depends on the statistics:
//! `d(x, c)² = Σ ((xᵢ − cᵢ)/σᵢ)²`; the mean cancels. [`StreamingKMeans::centres`] and
//! [`OnlineKMeans::centres`] are in original units; `standardise_into` maps any point,
//! including a centre, into the current standardised space. Distances reported in an
//! [`Assignment`] are in standardised units (dimensionless: 1 is one standard deviation along
//! one feature).
//!
//! A feature whose standard deviation is 0, below `1e-10·|μᵢ|` (round-off of a constant
//! feature, not signal) or below 1e-50 (so that a distance between any two accepted values,
//! at most 2e100 apart, stays finite) is treated as constant: its divisor is 1, as in
//! [`StandardScaler`](super::StandardScaler). With `scale = false` every divisor is 1.
//!
//! # Seeding, inactive slots and dying clusters
//! - **First batch** ([`StreamingKMeans`]) or **warm-up buffer** ([`OnlineKMeans`], the first
//!   [`KMeansParams::warm_up_points`] = 8·k points): greedy k-means++ (D² sampling with the
//!   model's [`SplitMix64`]), then up to `lloyd_iterations` Lloyd iterations on those points;
//!   the best of [`SEEDING_RUNS`] (3) such runs is kept, so the first assignments are good. k-means++ can only pick distinct points, so with fewer
//!   distinct points than `k` the remaining slots stay **inactive**: no centre, no id, not
//!   listed by `centres()`/`ids()`/`weights()`. Live clusters always occupy the first slots.
//! - **Inactive slots** are seeded later: by [`StreamingKMeans`] at the batch points farthest
//!   from their nearest centre (farthest-first), but never beyond the number of distinct
//!   points of that batch (a batch of 5 distinct profiles cannot support 8 clusters); by
//!   [`OnlineKMeans`] at the next *misfit*, a point more than [`MISFIT_FACTOR`] (3) times
//!   farther from its nearest centre than the running mean distance, one per point.
//! - **Dying clusters**: a cluster whose weight falls below `dying_fraction` × the largest
//!   weight is re-seeded — in a batch at the worst-fit point (farthest from its nearest
//!   centre), online at the next misfit — with weight 1 and a fresh id. Weights in steady
//!   state are proportional to the points absorbed per update, so the default fraction 1e-6
//!   keeps a cluster that absorbs one point per batch alive next to one that absorbs half a
//!   million (a rare device class among many keys is a class, not noise), while a cluster
//!   that absorbs nothing drops below the threshold within `log2(1e6 · n/n_max)` ≤ 20
//!   half-lives. Spark's 1e-8 protects even smaller classes but leaves a dead cluster idle
//!   for up to 27 half-lives. 0 disables re-seeding.
//!
//! # Ids
//! Every live cluster carries a `u32` id that never changes while it lives; a newly seeded or
//! re-seeded cluster gets the next unused id (ids count up from 0 and skip ids still in use if
//! the counter ever wraps). Nothing sorts or relabels clusters, so the same data gives the same
//! ids, and ids survive a state round-trip.
//!
//! # Robustness
//! Points with a value that is not finite or whose magnitude exceeds 1e100 are skipped
//! (reported as `None`, not learnt), as are points with the wrong number of features.
//! Nothing divides by a weight that can be 0, so centres never become `NaN`. Deserialising
//! checks the state and fails with [`ModelError::InvalidState`] instead of producing a model
//! that could panic.

mod ari;
mod online;
mod streaming;
#[cfg(test)]
mod tests;

use std::fmt;

use ndarray::{s, Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

pub use ari::adjusted_rand_index;
pub use online::{OnlineKMeans, MISFIT_FACTOR};
pub use streaming::StreamingKMeans;

use super::linear::{check_dim, valid_value};
use super::{ModelError, SplitMix64};

/// Largest accepted number of clusters `k`.
pub const MAX_CLUSTERS: usize = 64;
/// Largest accepted number of Lloyd iterations on the seeding points.
pub const MAX_LLOYD_ITERATIONS: usize = 100;
/// Largest accepted `dying_fraction`: beyond it, clusters of ordinary, unequal sizes would be
/// recycled.
pub const MAX_DYING_FRACTION: f64 = 0.5;
/// [`OnlineKMeans`] buffers this many points per cluster (8·k) before seeding: enough that
/// every cluster of a few equally likely ones is present in the buffer with high probability
/// (a given one of 4 equal clusters is missing from 32 points with probability 1e-4), small
/// enough to keep (4 KiB for k = 8 and 8 features; freed after seeding).
pub const WARM_UP_POINTS_PER_CLUSTER: usize = 8;
/// Seeding runs k-means++ and Lloyd this many times and keeps the run of least inertia:
/// greedy k-means++ alone still misses one of four well separated blobs about once in a
/// hundred seedings (every candidate for the last seed falls in a covered blob), which no
/// later update repairs; three runs make that about one in a million for a third of the cost
/// of scikit-learn's former ten.
pub const SEEDING_RUNS: usize = 3;
/// A standard deviation at most this fraction of the feature's |mean| is round-off, not signal.
const RELATIVE_STD_FLOOR: f64 = 1e-10;
/// Smallest standard deviation used as a divisor: keeps `(2e100/σ)²·64` finite.
const ABSOLUTE_STD_FLOOR: f64 = 1e-50;

/// Parameters of a [`StreamingKMeans`] or an [`OnlineKMeans`]; check them with
/// [`validate`](Self::validate).
///
/// Start from [`streaming_default`](Self::streaming_default) or
/// [`online_default`](Self::online_default), which differ only in the half-life (its unit
/// differs: batches or points).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KMeansParams {
    /// Number of clusters, in `1..=MAX_CLUSTERS` (64).
    pub k: usize,
    /// Updates after which a point weighs half as much, finite and > 0: **batches** for
    /// [`StreamingKMeans`], **points** for [`OnlineKMeans`]. Below 1 most of the past is
    /// forgotten at every update.
    pub half_life: f64,
    /// Seed of the k-means++ sampling (the generator is part of the state).
    pub seed: u64,
    /// Lloyd iterations after k-means++ on the seeding points, at most
    /// [`MAX_LLOYD_ITERATIONS`] (default 10; they stop early once no point changes cluster).
    pub lloyd_iterations: usize,
    /// A cluster whose weight is below this fraction of the largest weight is re-seeded with a
    /// fresh id, in `[0, 0.5]` (default 1e-6; see the [module documentation](self)); 0 never
    /// re-seeds.
    pub dying_fraction: f64,
    /// Measure distances between features standardised by their running, decayed mean and
    /// standard deviation (default true). Turn off only for features already in one unit.
    pub scale: bool,
}

/// The ranges of the numeric [`KMeansParams`] (the config loader reads the keys with them).
pub mod ranges {
    use super::MAX_DYING_FRACTION;
    use crate::model::param::{IntRange, Range};

    /// `k`: the number of clusters.
    pub const K: IntRange = IntRange::new("k", 1, super::MAX_CLUSTERS as i64);
    /// `lloyd_iterations`: of the batch initialisation.
    pub const LLOYD_ITERATIONS: IntRange =
        IntRange::new("lloyd_iterations", 0, super::MAX_LLOYD_ITERATIONS as i64);

    /// `half_life`, in whatever the caller counts (readings, classifier intervals).
    pub const HALF_LIFE: Range = Range::new("half_life", "a finite number greater than 0", |h| {
        h.is_finite() && h > 0.0
    });
    /// `half_life` of a `kind = "kmeans"` pipeline, in readings: at least one (stricter than
    /// [`HALF_LIFE`], which the model itself needs).
    pub const HALF_LIFE_READINGS: Range = Range::new(
        "half_life",
        "a finite number of readings, at least 1",
        |h| h.is_finite() && h >= 1.0,
    );
    /// `half_life` of a classifier, in classification intervals.
    pub const HALF_LIFE_INTERVALS: Range =
        Range::new("half_life", "a number of intervals greater than 0", |h| {
            h.is_finite() && h > 0.0
        });
    /// `dying_fraction`: how small a cluster's weight may get before it is reseeded.
    pub const DYING_FRACTION: Range = Range::new("dying_fraction", "between 0 and 0.5", |f| {
        (0.0..=MAX_DYING_FRACTION).contains(&f)
    });
}

impl KMeansParams {
    /// Defaults for [`StreamingKMeans`] with `k` clusters: a half-life of 10 batches (with a
    /// profile batch every minute, device classes follow a change of behaviour within about
    /// ten minutes but do not flap with one unusual interval), seed 0, 10 Lloyd iterations,
    /// dying fraction 1e-6, scaling on.
    pub fn streaming_default(k: usize) -> Self {
        Self {
            k,
            half_life: 10.0,
            seed: 0,
            lloyd_iterations: 10,
            dying_fraction: 1e-6,
            scale: true,
        }
    }

    /// Defaults for [`OnlineKMeans`] with `k` clusters: a half-life of 1000 points (each of 8
    /// clusters then averages over roughly 180 recent points, which keeps a centre's noise
    /// below a tenth of the spread of its points while following drift within a few thousand
    /// readings), otherwise as [`streaming_default`](Self::streaming_default).
    pub fn online_default(k: usize) -> Self {
        Self {
            half_life: 1000.0,
            ..Self::streaming_default(k)
        }
    }

    /// Check every parameter's range.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] naming every parameter out of range, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        for check in [
            ranges::K.check(self.k),
            ranges::LLOYD_ITERATIONS.check(self.lloyd_iterations),
        ] {
            if let Err(e) = check {
                problems.push(e.to_string());
            }
        }
        for (range, value) in [
            (ranges::HALF_LIFE, self.half_life),
            (ranges::DYING_FRACTION, self.dying_fraction),
        ] {
            if let Err(e) = range.check(value) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::InvalidParams(problems.join("; ")))
        }
    }

    /// The decay factor per update, `a = 0.5^(1/half_life)`.
    pub fn decay(&self) -> f64 {
        (-1.0 / self.half_life).exp2()
    }

    /// Points [`OnlineKMeans`] buffers before seeding: [`WARM_UP_POINTS_PER_CLUSTER`]·k.
    pub fn warm_up_points(&self) -> usize {
        WARM_UP_POINTS_PER_CLUSTER * self.k
    }
}

impl fmt::Display for KMeansParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "k={} half_life={} seed={} lloyd_iterations={} dying_fraction={} scale={}",
            self.k,
            self.half_life,
            self.seed,
            self.lloyd_iterations,
            self.dying_fraction,
            self.scale
        )
    }
}

/// The cluster a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Stable id of the nearest cluster (see the [module documentation](self)).
    pub id: u32,
    /// Euclidean distance to that cluster's centre in standardised units.
    pub distance: f64,
}

/// A new model's parameters and dimension.
fn check_new(params: &KMeansParams, dim: usize) -> Result<(), ModelError> {
    let params_result = params.validate();
    let dim_result = check_dim(dim);
    match (params_result, dim_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(ModelError::InvalidParams(a)), Err(ModelError::InvalidParams(b))) => {
            Err(ModelError::InvalidParams(format!("{a}; {b}")))
        }
        (Err(error), Err(_)) => Err(error),
    }
}

/// Whether every value of `x` may be learnt: finite with magnitude ≤ 1e100. The same test as
/// the regressions', in one pass without early exit.
#[inline]
fn valid_point(x: &[f64]) -> bool {
    x.iter().fold(true, |ok, &v| ok & valid_value(v))
}

// ---- the running, decayed standardisation ----

/// Per-feature mean and variance with exponential forgetting (West's weighted update), and
/// the divisors of the standardisation they define.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DecayedScaler {
    /// Sum of the decayed weights of the points folded in.
    weight: f64,
    /// Weighted mean of each feature.
    mean: Array1<f64>,
    /// Weighted sum of squared deviations of each feature (variance × weight).
    m2: Array1<f64>,
    /// `1/σ` per feature, or 1 for a constant feature; derived, rebuilt by `refresh`.
    #[serde(skip)]
    inv_divisor: Array1<f64>,
}

impl DecayedScaler {
    fn new(dim: usize) -> Self {
        Self {
            weight: 0.0,
            mean: Array1::zeros(dim),
            m2: Array1::zeros(dim),
            inv_divisor: Array1::ones(dim),
        }
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Decay the statistics by `decay`, then fold in `x` with weight 1. Does not refresh the
    /// divisors (a batch folds many points and refreshes once).
    fn fold(&mut self, x: &[f64], decay: f64) {
        self.weight = self.weight * decay + 1.0;
        let share = 1.0 / self.weight;
        let (Some(mean), Some(m2)) = (self.mean.as_slice_mut(), self.m2.as_slice_mut()) else {
            return;
        };
        for ((mean, m2), &value) in mean.iter_mut().zip(m2).zip(x) {
            let delta = value - *mean;
            *mean += delta * share;
            // ≥ 0 in exact arithmetic; the max keeps round-off from making it negative.
            *m2 = (*m2 * decay + delta * (value - *mean)).max(0.0);
        }
    }

    /// Recompute the divisors from the statistics (also after deserialising).
    fn refresh(&mut self) {
        let dim = self.dim();
        if self.inv_divisor.len() != dim {
            self.inv_divisor = Array1::ones(dim);
        }
        let weight = self.weight;
        for ((inv, &m2), &mean) in self.inv_divisor.iter_mut().zip(&self.m2).zip(&self.mean) {
            let std = if weight > 0.0 {
                (m2 / weight).sqrt()
            } else {
                0.0
            };
            *inv = if std > RELATIVE_STD_FLOOR * mean.abs() && std > ABSOLUTE_STD_FLOOR {
                1.0 / std
            } else {
                1.0
            };
        }
    }

    fn mean(&self) -> &[f64] {
        self.mean.as_slice().unwrap_or(&[])
    }

    fn inverse_divisors(&self) -> &[f64] {
        self.inv_divisor.as_slice().unwrap_or(&[])
    }

    /// `out[i] = (x[i] − μᵢ)/σᵢ` for `min(x.len(), out.len(), dim)` values.
    fn standardise(&self, x: &[f64], out: &mut [f64]) {
        for (((out, &value), &mean), &inv) in out
            .iter_mut()
            .zip(x)
            .zip(self.mean())
            .zip(self.inverse_divisors())
        {
            *out = (value - mean) * inv;
        }
    }

    /// Whether deserialised statistics are consistent with `dim` features and `scale`.
    fn check(&self, dim: usize, scale: bool) -> Result<(), String> {
        if self.mean.len() != dim || self.m2.len() != dim {
            return Err(format!(
                "scaler has {} means and {} sums of squares for {dim} features",
                self.mean.len(),
                self.m2.len()
            ));
        }
        if !self.mean.is_standard_layout() || !self.m2.is_standard_layout() {
            return Err("scaler statistics are not contiguous".into());
        }
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(format!("scaler weight {} is not finite ≥ 0", self.weight));
        }
        if !self.mean.iter().all(|&v| valid_value(v)) || !self.m2.iter().all(|v| v.is_finite()) {
            return Err("a scaler statistic is not finite".into());
        }
        if self.m2.iter().any(|&m2| m2 < 0.0) {
            return Err("a scaler sum of squares is negative".into());
        }
        if !scale && (self.weight != 0.0 || self.mean.iter().chain(&self.m2).any(|&v| v != 0.0)) {
            return Err("scaler has learnt although scale is off".into());
        }
        Ok(())
    }
}

// ---- the clusters ----

/// Centres (original units), weights and ids of up to `k` clusters; the live ones occupy the
/// first `active` slots, the rest are zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Clusters {
    /// `k × dim` centres in original units.
    centres: Array2<f64>,
    /// `k` decayed weights.
    weights: Array1<f64>,
    /// `k` ids.
    ids: Vec<u32>,
    /// Number of live clusters.
    active: usize,
    /// The next id to hand out (skipping ids in use).
    next_id: u32,
}

impl Clusters {
    fn new(k: usize, dim: usize) -> Self {
        Self {
            centres: Array2::zeros((k, dim)),
            weights: Array1::zeros(k),
            ids: vec![0; k],
            active: 0,
            next_id: 0,
        }
    }

    fn k(&self) -> usize {
        self.weights.len()
    }

    fn dim(&self) -> usize {
        self.centres.ncols()
    }

    fn centres(&self) -> ArrayView2<'_, f64> {
        self.centres.slice(s![..self.active, ..])
    }

    /// The live centres, row after row.
    fn centre_values(&self) -> &[f64] {
        let len = self.active * self.dim();
        self.centres
            .as_slice()
            .and_then(|values| values.get(..len))
            .unwrap_or(&[])
    }

    fn centre(&self, slot: usize) -> &[f64] {
        let dim = self.dim();
        self.centres
            .as_slice()
            .and_then(|values| values.get(slot * dim..(slot + 1) * dim))
            .unwrap_or(&[])
    }

    fn centre_mut(&mut self, slot: usize) -> &mut [f64] {
        let dim = self.dim();
        self.centres
            .as_slice_mut()
            .and_then(|values| values.get_mut(slot * dim..(slot + 1) * dim))
            .unwrap_or(&mut [])
    }

    fn ids(&self) -> &[u32] {
        self.ids.get(..self.active).unwrap_or(&[])
    }

    fn weights(&self) -> &[f64] {
        self.weights
            .as_slice()
            .and_then(|weights| weights.get(..self.active))
            .unwrap_or(&[])
    }

    /// The next id not held by a live cluster.
    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.ids().contains(&id) {
                return id;
            }
        }
    }

    /// Put a cluster of weight `weight` with a fresh id at `x` in `slot`: a re-seed when
    /// `slot < active`, a new live cluster when `slot == active`. Returns whether it did.
    fn place(&mut self, slot: usize, x: &[f64], weight: f64) -> bool {
        if slot > self.active || slot >= self.k() {
            return false;
        }
        let id = self.fresh_id();
        self.centre_mut(slot).copy_from_slice(x);
        self.weights[slot] = weight;
        self.ids[slot] = id;
        if slot == self.active {
            self.active += 1;
        }
        true
    }

    /// Give the live clusters fresh ids in slot order (after seeding).
    fn hand_out_ids(&mut self) {
        let active = self.active;
        self.active = 0;
        for slot in 0..active {
            let id = self.fresh_id();
            self.ids[slot] = id;
            self.active = slot + 1;
        }
    }

    /// `n ← n·a` for every live cluster.
    fn decay(&mut self, decay: f64) {
        for weight in self.weights.iter_mut().take(self.active) {
            *weight *= decay;
        }
    }

    /// The largest live weight (0 without clusters).
    fn max_weight(&self) -> f64 {
        self.weights().iter().fold(0.0, |max, &w| w.max(max))
    }

    /// Whether deserialised clusters are consistent with `k` and `dim`.
    fn check(&self, k: usize, dim: usize) -> Result<(), String> {
        if self.centres.dim() != (k, dim) || !self.centres.is_standard_layout() {
            return Err(format!(
                "centres are {:?}, expected {:?}",
                self.centres.dim(),
                (k, dim)
            ));
        }
        if self.weights.len() != k || !self.weights.is_standard_layout() || self.ids.len() != k {
            return Err(format!(
                "{} weights and {} ids for k = {k}",
                self.weights.len(),
                self.ids.len()
            ));
        }
        if self.active > k {
            return Err(format!("{} live clusters for k = {k}", self.active));
        }
        if !self.centres.iter().all(|&v| valid_value(v)) {
            return Err("a centre is not finite".into());
        }
        if !self.weights.iter().all(|&w| w.is_finite() && w >= 0.0) {
            return Err("a weight is not finite ≥ 0".into());
        }
        let unused_rows = self.centres.slice(s![self.active.., ..]);
        let unused_weights = self.weights.slice(s![self.active..]);
        if unused_rows.iter().chain(&unused_weights).any(|&v| v != 0.0)
            || self.ids[self.active..].iter().any(|&id| id != 0)
        {
            return Err("an inactive cluster slot is not empty".into());
        }
        let live = self.ids();
        for (i, id) in live.iter().enumerate() {
            if live[..i].contains(id) {
                return Err(format!("cluster id {id} is used twice"));
            }
        }
        Ok(())
    }
}

// ---- distances ----

/// `Σ (aᵢ − bᵢ)²` with four partial sums (a fixed order: reproducible, and it vectorises).
#[inline]
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0.0; 4];
    let mut a_chunks = a.chunks_exact(4);
    let mut b_chunks = b.chunks_exact(4);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((sum, x), y) in sums.iter_mut().zip(ca).zip(cb) {
            let d = x - y;
            *sum += d * d;
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        let d = x - y;
        tail += d * d;
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// `Σ ((xᵢ − cᵢ)·sᵢ)²`: the squared distance in the standardised metric with inverse
/// divisors `s`, without standardising either point.
#[inline]
fn scaled_squared_distance(x: &[f64], c: &[f64], inv: &[f64]) -> f64 {
    let mut sums = [0.0; 4];
    let mut x_chunks = x.chunks_exact(4);
    let mut c_chunks = c.chunks_exact(4);
    let mut s_chunks = inv.chunks_exact(4);
    for ((cx, cc), cs) in (&mut x_chunks).zip(&mut c_chunks).zip(&mut s_chunks) {
        for (((sum, x), c), s) in sums.iter_mut().zip(cx).zip(cc).zip(cs) {
            let d = (x - c) * s;
            *sum += d * d;
        }
    }
    let mut tail = 0.0;
    for ((x, c), s) in x_chunks
        .remainder()
        .iter()
        .zip(c_chunks.remainder())
        .zip(s_chunks.remainder())
    {
        let d = (x - c) * s;
        tail += d * d;
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// The nearest of the centres (`dim` values each) to `z` and its squared distance; the lowest
/// index wins a tie. `(0, ∞)` without centres.
#[inline]
fn nearest(z: &[f64], centres: &[f64], dim: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (slot, centre) in centres.chunks_exact(dim).enumerate() {
        let d2 = squared_distance(z, centre);
        if d2 < best.1 {
            best = (slot, d2);
        }
    }
    best
}

// ---- seeding and Lloyd iterations on a set of points ----

/// Points to cluster, contiguous row after row: in original units (`x`, for centres) and
/// standardised (`z`, for distances), with optional weights (1 each without).
struct Points<'a> {
    x: &'a [f64],
    z: &'a [f64],
    weights: Option<&'a [f64]>,
    dim: usize,
}

impl Points<'_> {
    fn len(&self) -> usize {
        self.z.len() / self.dim
    }

    fn x(&self, p: usize) -> &[f64] {
        self.x.get(p * self.dim..(p + 1) * self.dim).unwrap_or(&[])
    }

    fn z(&self, p: usize) -> &[f64] {
        self.z.get(p * self.dim..(p + 1) * self.dim).unwrap_or(&[])
    }

    fn weight(&self, p: usize) -> f64 {
        self.weights
            .and_then(|weights| weights.get(p).copied())
            .unwrap_or(1.0)
    }
}

/// Scratch of the clustering steps, reused across batches: standardised centres, each
/// point's nearest live centre and squared distance to it, per-cluster sums.
#[derive(Debug, Clone, Default)]
struct Workspace {
    /// `k × dim` live centres standardised with the current statistics.
    centres_z: Vec<f64>,
    /// Slot of each point's nearest live centre.
    nearest: Vec<usize>,
    /// Squared standardised distance of each point to that centre.
    d2: Vec<f64>,
    /// `k × dim` sums of the points of each cluster (original units).
    sums: Vec<f64>,
    /// `k` (weighted) counts of the points of each cluster.
    counts: Vec<f64>,
    /// Points chosen by k-means++.
    seeds: Vec<usize>,
    /// Slots seeded during the current update (exempt from dying).
    fresh: Vec<bool>,
    /// Representatives of the distinct points found so far.
    distinct: Vec<usize>,
    /// Centres of the best seeding run so far.
    best_centres: Vec<f64>,
}

impl Workspace {
    /// Size the buffers for `n` points, `k` clusters and `dim` features (allocates only when
    /// they grow).
    fn prepare(&mut self, n: usize, k: usize, dim: usize) {
        self.centres_z.resize(k * dim, 0.0);
        self.nearest.resize(n, 0);
        self.d2.resize(n, 0.0);
        self.sums.resize(k * dim, 0.0);
        self.counts.resize(k, 0.0);
        self.fresh.clear();
        self.fresh.resize(k, false);
    }

    /// Standardise live centre `slot` with the current statistics.
    fn standardise_centre(&mut self, slot: usize, clusters: &Clusters, scaler: &DecayedScaler) {
        let dim = clusters.dim();
        if let Some(out) = self.centres_z.get_mut(slot * dim..(slot + 1) * dim) {
            scaler.standardise(clusters.centre(slot), out);
        }
    }

    /// Standardise every live centre.
    fn standardise_centres(&mut self, clusters: &Clusters, scaler: &DecayedScaler) {
        for slot in 0..clusters.active {
            self.standardise_centre(slot, clusters, scaler);
        }
    }

    /// Assign every point to its nearest of the first `active` standardised centres; returns
    /// whether any point changed cluster.
    fn assign(&mut self, points: &Points<'_>, active: usize) -> bool {
        let dim = points.dim;
        let centres = self.centres_z.get(..active * dim).unwrap_or(&[]);
        let mut changed = false;
        for ((z, nearest_slot), d2) in points
            .z
            .chunks_exact(dim)
            .zip(self.nearest.iter_mut())
            .zip(self.d2.iter_mut())
        {
            let (slot, distance) = nearest(z, centres, dim);
            changed |= slot != *nearest_slot;
            *nearest_slot = slot;
            *d2 = distance;
        }
        changed
    }

    /// Per-cluster (weighted) counts and sums of the original points, by current assignment.
    fn accumulate(&mut self, points: &Points<'_>, active: usize) {
        let dim = points.dim;
        self.sums[..active * dim].fill(0.0);
        self.counts[..active].fill(0.0);
        for (p, &slot) in self.nearest.iter().enumerate().take(points.len()) {
            let weight = points.weight(p);
            self.counts[slot] += weight;
            let sum = &mut self.sums[slot * dim..(slot + 1) * dim];
            for (sum, &value) in sum.iter_mut().zip(points.x(p)) {
                *sum += weight * value;
            }
        }
    }

    /// Greedy k-means++ (Arthur and Vassilvitskii 2007, with scikit-learn's local trials): the
    /// first seed uniformly at random; for each next one, `2 + ⌊ln k⌋` candidates drawn with
    /// probability proportional to weight × squared distance to the nearest seed so far, and
    /// the candidate that lowers the total weighted squared distance most is kept. At most `k`
    /// seeds; stops early when every point coincides with a seed (fewer than `k` distinct
    /// points). Leaves the seeds' point indices in `seeds` and each point's squared distance to
    /// its nearest seed in `d2`.
    ///
    /// Plain D² sampling picks two seeds in one of four well separated clusters about one
    /// time in ten, and Lloyd iterations cannot undo that; the trials make it rare.
    fn kmeans_plus_plus(&mut self, points: &Points<'_>, k: usize, rng: &mut SplitMix64) {
        self.seeds.clear();
        let n = points.len();
        if n == 0 || k == 0 {
            return;
        }
        let trials = 2 + (k as f64).ln() as usize;
        let first = rng.below(n);
        self.seeds.push(first);
        let seed_z = points.z(first);
        for (p, d2) in self.d2.iter_mut().enumerate().take(n) {
            *d2 = squared_distance(points.z(p), seed_z);
        }
        while self.seeds.len() < k {
            let total: f64 = (0..n).map(|p| points.weight(p) * self.d2[p]).sum();
            if !(total > 0.0 && total.is_finite()) {
                return;
            }
            let mut best: Option<(usize, f64)> = None;
            for _ in 0..trials {
                let Some(candidate) = self.sample_by_mass(points, rng.next_f64() * total) else {
                    continue;
                };
                let candidate_z = points.z(candidate);
                let potential: f64 = (0..n)
                    .map(|p| {
                        let d2 = self.d2[p].min(squared_distance(points.z(p), candidate_z));
                        points.weight(p) * d2
                    })
                    .sum();
                if best.is_none_or(|(_, lowest)| potential < lowest) {
                    best = Some((candidate, potential));
                }
            }
            let Some((seed, _)) = best else {
                return;
            };
            self.seeds.push(seed);
            let seed_z = points.z(seed);
            for (p, d2) in self.d2.iter_mut().enumerate().take(n) {
                *d2 = d2.min(squared_distance(points.z(p), seed_z));
            }
        }
    }

    /// The point where the running sum of weight × `d2` first exceeds `target` (the last
    /// point with mass when round-off leaves `target` unreached; `None` without mass).
    fn sample_by_mass(&self, points: &Points<'_>, target: f64) -> Option<usize> {
        let mut cumulative = 0.0;
        let mut chosen = None;
        for (p, &d2) in self.d2.iter().enumerate().take(points.len()) {
            let mass = points.weight(p) * d2;
            if mass > 0.0 {
                cumulative += mass;
                chosen = Some(p);
                if cumulative > target {
                    break;
                }
            }
        }
        chosen
    }

    /// Seed `clusters` (which must have no live cluster) from `points`: [`SEEDING_RUNS`] runs
    /// of k-means++ followed by up to `iterations` Lloyd iterations (stopping when no point
    /// changes cluster), keeping the run of least inertia (weighted Σ d²). Weights are the
    /// (weighted) counts of the final assignment; ids are handed out in slot order. Leaves
    /// `nearest`/`d2` consistent with the final centres.
    fn seed(
        &mut self,
        points: &Points<'_>,
        clusters: &mut Clusters,
        scaler: &DecayedScaler,
        iterations: usize,
        rng: &mut SplitMix64,
    ) {
        let k = clusters.k();
        let mut best_inertia = f64::INFINITY;
        let mut best_active = 0;
        for _ in 0..SEEDING_RUNS {
            self.kmeans_plus_plus(points, k, rng);
            let active = self.seeds.len();
            for (slot, &p) in self.seeds.iter().enumerate() {
                clusters.centre_mut(slot).copy_from_slice(points.x(p));
            }
            clusters.active = active;
            self.standardise_centres(clusters, scaler);
            self.assign(points, active);
            self.lloyd(points, clusters, scaler, iterations);
            let inertia: f64 = (0..points.len())
                .map(|p| points.weight(p) * self.d2[p])
                .sum();
            if inertia < best_inertia || self.best_centres.is_empty() {
                best_inertia = inertia;
                best_active = active;
                self.best_centres.clear();
                self.best_centres
                    .extend_from_slice(clusters.centre_values());
            }
            if best_inertia <= 0.0 {
                // Every point is on a centre (at most k distinct points): nothing to improve.
                break;
            }
        }
        clusters.active = best_active;
        if let Some(centres) = clusters.centres.as_slice_mut() {
            centres.fill(0.0);
            for (centre, &best) in centres.iter_mut().zip(&self.best_centres) {
                *centre = best;
            }
        }
        self.standardise_centres(clusters, scaler);
        self.assign(points, best_active);
        self.accumulate(points, best_active);
        for slot in 0..best_active {
            clusters.weights[slot] = self.counts[slot];
        }
        clusters.hand_out_ids();
    }

    /// Lloyd iterations: move every centre to the (weighted) mean of its points, reassign,
    /// until no point changes cluster or `iterations` are done. Expects `nearest`/`d2` to be
    /// current and leaves them so.
    fn lloyd(
        &mut self,
        points: &Points<'_>,
        clusters: &mut Clusters,
        scaler: &DecayedScaler,
        iterations: usize,
    ) {
        let active = clusters.active;
        let dim = points.dim;
        for _ in 0..iterations {
            self.accumulate(points, active);
            for slot in 0..active {
                let count = self.counts[slot];
                if count > 0.0 {
                    let sums = &self.sums[slot * dim..(slot + 1) * dim];
                    for (centre, &sum) in clusters.centre_mut(slot).iter_mut().zip(sums) {
                        *centre = sum / count;
                    }
                    self.standardise_centre(slot, clusters, scaler);
                }
            }
            if !self.assign(points, active) {
                break;
            }
        }
    }

    /// The point farthest from its nearest centre (first of equals), if it is not on a centre.
    fn farthest(&self, n: usize) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (p, &d2) in self.d2.iter().enumerate().take(n) {
            if d2 > best.map_or(0.0, |(_, far)| far) {
                best = Some((p, d2));
            }
        }
        best.map(|(p, _)| p)
    }

    /// Number of distinct points (equal standardised values count once), counting up to
    /// `limit`.
    fn count_distinct(&mut self, points: &Points<'_>, limit: usize) -> usize {
        self.distinct.clear();
        for p in 0..points.len() {
            if self.distinct.len() >= limit {
                break;
            }
            let z = points.z(p);
            if !self.distinct.iter().any(|&q| points.z(q) == z) {
                self.distinct.push(p);
            }
        }
        self.distinct.len()
    }

    /// Put a cluster of weight 1 with a fresh id at point `p` in `slot` (a new live cluster
    /// when `slot == active`, a re-seed otherwise) and bring `nearest`/`d2` up to date.
    fn place(
        &mut self,
        points: &Points<'_>,
        p: usize,
        slot: usize,
        clusters: &mut Clusters,
        scaler: &DecayedScaler,
    ) {
        let reseed = slot < clusters.active;
        if !clusters.place(slot, points.x(p), 1.0) {
            return;
        }
        self.standardise_centre(slot, clusters, scaler);
        if let Some(fresh) = self.fresh.get_mut(slot) {
            *fresh = true;
        }
        let dim = points.dim;
        let active = clusters.active;
        let centres = self.centres_z.get(..active * dim).unwrap_or(&[]);
        let centre = self
            .centres_z
            .get(slot * dim..(slot + 1) * dim)
            .unwrap_or(&[]);
        for ((z, nearest_slot), d2) in points
            .z
            .chunks_exact(dim)
            .zip(self.nearest.iter_mut())
            .zip(self.d2.iter_mut())
        {
            if reseed && *nearest_slot == slot {
                // Its centre moved away: look at all centres again.
                (*nearest_slot, *d2) = nearest(z, centres, dim);
            } else {
                let distance = squared_distance(z, centre);
                if distance < *d2 || (distance == *d2 && slot < *nearest_slot) {
                    (*nearest_slot, *d2) = (slot, distance);
                }
            }
        }
    }

    /// Seed inactive slots at the farthest points (never beyond the number of distinct
    /// points), then re-seed every cluster lighter than `dying_fraction` × the heaviest at
    /// the worst-fit point. Clusters placed by this update are exempt.
    fn grow_and_reseed(
        &mut self,
        points: &Points<'_>,
        clusters: &mut Clusters,
        scaler: &DecayedScaler,
        dying_fraction: f64,
    ) {
        let k = clusters.k();
        let n = points.len();
        if clusters.active < k {
            let supported = self.count_distinct(points, k);
            while clusters.active < supported {
                let Some(p) = self.farthest(n) else {
                    break;
                };
                self.place(points, p, clusters.active, clusters, scaler);
            }
        }
        if dying_fraction > 0.0 {
            let threshold = dying_fraction * clusters.max_weight();
            for slot in 0..clusters.active {
                let fresh = self.fresh.get(slot).copied().unwrap_or(false);
                if fresh || clusters.weights[slot] >= threshold {
                    continue;
                }
                let Some(p) = self.farthest(n) else {
                    break;
                };
                self.place(points, p, slot, clusters, scaler);
            }
        }
    }
}
