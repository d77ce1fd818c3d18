//! [`StreamingKMeans`]: mini-batch k-means with decay, for a supervisor that clusters the
//! profiles of all keys every interval.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    check_new, valid_point, Assignment, Clusters, DecayedScaler, KMeansParams, Points, Workspace,
};
use crate::model::linear::check_dim;
use crate::model::{ModelError, SplitMix64};

/// Streaming (mini-batch) k-means with forgetting, as Spark's `StreamingKMeans`; see the
/// [module documentation](super) for the update rule, standardisation, seeding, dying clusters
/// and ids.
///
/// One [`update`](Self::update) per batch: the first batch with a valid point is seeded with
/// k-means++ and refined by Lloyd iterations; every later batch assigns its points to the
/// nearest centres, moves each centre to the decayed weighted mean of its old position and its
/// new points, seeds inactive slots and re-seeds dying clusters. `half_life` is in batches.
///
/// The struct is the whole model state plus scratch buffers that are reused across batches
/// (so a steady stream of batches of one size allocates nothing) and are not serialised.
/// Deserialising checks the state (shapes, finiteness, ids, parameters) and fails with
/// [`ModelError::InvalidState`] rather than producing a model that could panic or emit `NaN`.
#[derive(Debug, Clone)]
pub struct StreamingKMeans {
    pub(super) state: StreamingState,
    scratch: BatchScratch,
}

/// The serialised fields of a [`StreamingKMeans`]. Field order is the postcard format: append
/// only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StreamingState {
    pub(super) params: KMeansParams,
    /// Decayed feature statistics (learn only when `params.scale`).
    pub(super) scaler: DecayedScaler,
    pub(super) clusters: Clusters,
    /// Draws of k-means++ seeding.
    pub(super) rng: SplitMix64,
    /// Batches learnt (with at least one valid point).
    pub(super) updates: u64,
}

/// Buffers of one batch, kept between batches so that they are allocated once.
#[derive(Debug, Clone, Default)]
struct BatchScratch {
    /// Input row of each valid point.
    rows: Vec<usize>,
    /// Valid points in original units, row after row.
    x: Vec<f64>,
    /// Valid points standardised.
    z: Vec<f64>,
    work: Workspace,
    /// The output: one entry per input row.
    assignments: Vec<Option<Assignment>>,
}

impl StreamingKMeans {
    /// A model for points of `dim` features, with no cluster until the first batch.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`KMeansParams::validate`] or `dim`
    /// is not in `1..=MAX_FEATURES` (64), naming every offending value.
    pub fn new(params: KMeansParams, dim: usize) -> Result<Self, ModelError> {
        check_new(&params, dim)?;
        let mut scaler = DecayedScaler::new(dim);
        scaler.refresh();
        Ok(Self {
            state: StreamingState {
                params,
                scaler,
                clusters: Clusters::new(params.k, dim),
                rng: SplitMix64::new(params.seed),
                updates: 0,
            },
            scratch: BatchScratch::default(),
        })
    }

    /// The parameters the model was built with (compare them to tell whether a persisted
    /// state still matches the configuration).
    pub fn params(&self) -> &KMeansParams {
        &self.state.params
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.state.scaler.dim()
    }

    /// Learn one batch (one point per row) and return the assignment of every row after the
    /// update: the nearest cluster's id and the distance to it in standardised units.
    ///
    /// A row with a value that is not finite or beyond 1e100 in magnitude is skipped: its
    /// entry is `None` and it is not learnt. If `points` does not have [`dim`](Self::dim)
    /// columns, or no row is valid, every entry is `None` and the model is unchanged (and the
    /// batch is not counted by [`updates`](Self::updates); in particular it does not decay
    /// the clusters). The returned slice lives in a buffer reused by the next call.
    ///
    /// Cost: O(rows · k · dim) per pass, two passes for a later batch, k-means++ and up to
    /// `lloyd_iterations` passes for the first.
    pub fn update(&mut self, points: ArrayView2<'_, f64>) -> &[Option<Assignment>] {
        let dim = self.dim();
        let Self { state, scratch } = self;
        let BatchScratch {
            rows,
            x,
            z,
            work,
            assignments,
        } = scratch;
        assignments.clear();
        assignments.resize(points.nrows(), None);
        if points.ncols() != dim {
            return assignments;
        }
        rows.clear();
        x.clear();
        rows.reserve(points.nrows());
        x.reserve(points.nrows() * dim);
        for (i, row) in points.outer_iter().enumerate() {
            let start = x.len();
            match row.as_slice() {
                Some(values) => x.extend_from_slice(values),
                None => x.extend(row.iter().copied()),
            }
            if valid_point(&x[start..]) {
                rows.push(i);
            } else {
                x.truncate(start);
            }
        }
        if rows.is_empty() {
            return assignments;
        }

        let params = state.params;
        let decay = params.decay();
        if params.scale {
            for (i, point) in x.chunks_exact(dim).enumerate() {
                state.scaler.fold(point, if i == 0 { decay } else { 1.0 });
            }
            state.scaler.refresh();
        }
        z.resize(x.len(), 0.0);
        for (point, out) in x.chunks_exact(dim).zip(z.chunks_exact_mut(dim)) {
            state.scaler.standardise(point, out);
        }

        let points = Points {
            x,
            z,
            weights: None,
            dim,
        };
        let clusters = &mut state.clusters;
        work.prepare(rows.len(), clusters.k(), dim);
        if clusters.active == 0 {
            work.seed(
                &points,
                clusters,
                &state.scaler,
                params.lloyd_iterations,
                &mut state.rng,
            );
        } else {
            learn_batch(work, &points, clusters, &state.scaler, decay);
        }
        work.grow_and_reseed(&points, clusters, &state.scaler, params.dying_fraction);

        for ((&row, &slot), &d2) in rows.iter().zip(&work.nearest).zip(&work.d2) {
            if let (Some(entry), Some(&id)) = (assignments.get_mut(row), clusters.ids.get(slot)) {
                *entry = Some(Assignment {
                    id,
                    distance: d2.sqrt(),
                });
            }
        }
        state.updates += 1;
        assignments
    }

    /// The nearest cluster to `x` and the distance to it in standardised units, with the
    /// current centres and statistics (exactly what [`update`](Self::update) reports for a
    /// row equal to `x` when no learning happens in between).
    ///
    /// `None` before the first batch, and when `x` does not have [`dim`](Self::dim) values or
    /// one of them is not finite (or beyond 1e100 in magnitude).
    pub fn assign(&self, x: &[f64]) -> Option<Assignment> {
        let dim = self.dim();
        let clusters = &self.state.clusters;
        if clusters.active == 0 || x.len() != dim || !valid_point(x) {
            return None;
        }
        let scaler = &self.state.scaler;
        let mut z_buffer = [0.0; crate::model::MAX_FEATURES];
        let mut centre_buffer = [0.0; crate::model::MAX_FEATURES];
        let z = z_buffer.get_mut(..dim)?;
        let centre_z = centre_buffer.get_mut(..dim)?;
        scaler.standardise(x, z);
        let mut best: Option<(usize, f64)> = None;
        for slot in 0..clusters.active {
            // The same arithmetic as `update`: standardise the centre, then the plain distance.
            scaler.standardise(clusters.centre(slot), centre_z);
            let d2 = super::squared_distance(z, centre_z);
            if best.is_none_or(|(_, nearest)| d2 < nearest) {
                best = Some((slot, d2));
            }
        }
        let (slot, d2) = best?;
        Some(Assignment {
            id: *clusters.ids.get(slot)?,
            distance: d2.sqrt(),
        })
    }

    /// Live cluster centres in original units, one row per cluster, in the order of
    /// [`ids`](Self::ids) (at most `k` rows; none before the first batch).
    pub fn centres(&self) -> ArrayView2<'_, f64> {
        self.state.clusters.centres()
    }

    /// Stable ids of the live clusters, one per row of [`centres`](Self::centres).
    pub fn ids(&self) -> &[u32] {
        self.state.clusters.ids()
    }

    /// Decayed weights (point counts) of the live clusters, one per row of
    /// [`centres`](Self::centres).
    pub fn weights(&self) -> &[f64] {
        self.state.clusters.weights()
    }

    /// Number of batches learnt (batches with at least one valid point; survives state
    /// round-trips).
    pub fn updates(&self) -> u64 {
        self.state.updates
    }

    /// Standardise `x` with the current statistics: `out[i] = (x[i] − μᵢ)/σᵢ` (the identity
    /// with `scale = false`), for `min(x.len(), out.len(), dim)` values. Applied to a row of
    /// [`centres`](Self::centres) it gives the centre in the space where distances are
    /// measured.
    pub fn standardise_into(&self, x: &[f64], out: &mut [f64]) {
        self.state.scaler.standardise(x, out);
    }

    /// The centre of live cluster `id` in original units, if it is live.
    pub fn centre_of(&self, id: u32) -> Option<ArrayView1<'_, f64>> {
        let slot = self.ids().iter().position(|&live| live == id)?;
        Some(self.state.clusters.centres.row(slot))
    }
}

/// A later batch: assign, move every centre to the decayed weighted mean of its old position
/// and its new points (`c ← (c·n·a + s)/(n·a + m)`, `n ← n·a + m`; clusters without points
/// only decay), assign again to the moved centres.
fn learn_batch(
    work: &mut Workspace,
    points: &Points<'_>,
    clusters: &mut Clusters,
    scaler: &DecayedScaler,
    decay: f64,
) {
    let active = clusters.active;
    let dim = points.dim;
    work.standardise_centres(clusters, scaler);
    work.assign(points, active);
    work.accumulate(points, active);
    for slot in 0..active {
        let kept = clusters.weights[slot] * decay;
        let count = work.counts[slot];
        if count > 0.0 {
            let total = kept + count;
            let sums = &work.sums[slot * dim..(slot + 1) * dim];
            for (centre, &sum) in clusters.centre_mut(slot).iter_mut().zip(sums) {
                *centre = (*centre * kept + sum) / total;
            }
            clusters.weights[slot] = total;
            work.standardise_centre(slot, clusters, scaler);
        } else {
            clusters.weights[slot] = kept;
        }
    }
    work.assign(points, active);
}

impl StreamingState {
    /// Whether a deserialised state is one the model can run on without panicking or
    /// producing `NaN`.
    pub(super) fn check(&self) -> Result<(), ModelError> {
        let invalid = |what: String| ModelError::InvalidState(format!("streaming k-means: {what}"));
        self.params
            .validate()
            .map_err(|error| invalid(error.to_string()))?;
        let dim = self.scaler.dim();
        check_dim(dim).map_err(|error| invalid(error.to_string()))?;
        self.scaler
            .check(dim, self.params.scale)
            .map_err(&invalid)?;
        self.clusters.check(self.params.k, dim).map_err(&invalid)?;
        if (self.updates == 0) != (self.clusters.active == 0) {
            return Err(invalid(format!(
                "{} live clusters after {} batches",
                self.clusters.active, self.updates
            )));
        }
        Ok(())
    }
}

impl PartialEq for StreamingKMeans {
    /// Models are equal when their states are (scratch buffers do not count).
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

impl Serialize for StreamingKMeans {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StreamingKMeans {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = StreamingState::deserialize(deserializer)?;
        state.check().map_err(serde::de::Error::custom)?;
        state.scaler.refresh();
        Ok(Self {
            state,
            scratch: BatchScratch::default(),
        })
    }
}
