//! [`OnlineKMeans`]: k-means learnt one reading at a time, for a `kind = "kmeans"` pipeline
//! model (one feature vector per reading → cluster id).

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    check_new, scaled_squared_distance, valid_point, Assignment, Clusters, DecayedScaler,
    KMeansParams, Points, Workspace,
};
use crate::model::linear::check_dim;
use crate::model::{ModelError, SplitMix64};

/// A point farther than this many times the running mean distance from its nearest centre is
/// a misfit, the online counterpart of a batch's worst-fit point: it seeds an inactive slot or
/// re-seeds a dying cluster.
pub const MISFIT_FACTOR: f64 = 3.0;

/// Online k-means with forgetting (a mini-batch of one per reading, as Flink ML's
/// `OnlineKMeans`); see the [module documentation](super) for the update rule,
/// standardisation, dying clusters and ids. `half_life` is in points.
///
/// # Life cycle
/// - **Warm-up.** The first [`KMeansParams::warm_up_points`] (8·k) valid points are buffered
///   (and folded into the running statistics); predictions are `None`. The point that fills
///   the buffer seeds the model: k-means++ and Lloyd iterations over the buffer, each point
///   weighted by its decay `a^age`, so the weights are what one-at-a-time learning would have
///   given. The buffer is then freed.
/// - **Test-then-train.** [`predict_learn`](Self::predict_learn) first predicts (the nearest
///   cluster's id and distance, bit for bit what [`predict_one`](Self::predict_one) returns),
///   then learns: the statistics fold the point in, every weight decays by `a`, and the
///   predicted cluster moves, `c ← c + (x − c)/(n·a + 1)`, `n ← n·a + 1` (the batch rule with
///   a batch of one). A *misfit* — a point more than [`MISFIT_FACTOR`] (3) times farther from
///   its cluster than the running mean distance — instead seeds an inactive slot if there is
///   one, or else re-seeds the lightest cluster if it is dying; either gets weight 1 and a
///   fresh id. (Online there is no batch to take the worst-fit point from; 3× the mean
///   distance is rare within a Gaussian cluster: 0.1 % of points in 2 dimensions, fewer in
///   more, so a re-seed lands where the model fits badly, not on the edge of a live cluster.)
/// - **Quality.** [`mean_distance`](Self::mean_distance) is the prequential mean distance of
///   points to their predicted cluster (inertia per point, as a distance), decayed with the
///   model's half-life.
///
/// Nothing allocates after warm-up: distances are computed on the fly in the standardised
/// metric. The warm-up buffer is reserved whole by [`new`](Self::new), by a clone and by
/// deserialising, so buffering allocates nothing either; only seeding does, once. Deserialising
/// checks the state and fails with [`ModelError::InvalidState`] rather than producing a model
/// that could panic or emit `NaN`.
#[derive(Debug)]
pub struct OnlineKMeans {
    pub(super) state: OnlineState,
    /// `params.decay()`, cached (a power per point would cost as much as the update).
    decay: f64,
}

/// The serialised fields of an [`OnlineKMeans`]. Field order is the postcard format: append
/// only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct OnlineState {
    pub(super) params: KMeansParams,
    /// Decayed feature statistics (learn only when `params.scale`).
    pub(super) scaler: DecayedScaler,
    pub(super) clusters: Clusters,
    /// Draws of k-means++ seeding.
    pub(super) rng: SplitMix64,
    /// The warm-up points in original units, row after row; empty once seeded.
    pub(super) warm_up: Vec<f64>,
    /// Decayed mean of the prequential distances; before the first, the in-sample mean
    /// distance of the warm-up points (the yardstick of a misfit).
    pub(super) mean_distance: f64,
    /// Decayed count of the prequential distances in `mean_distance`.
    pub(super) distance_weight: f64,
    /// Points learnt (warm-up included).
    pub(super) updates: u64,
}

impl OnlineKMeans {
    /// A model for points of `dim` features; it predicts once the warm-up buffer is full.
    ///
    /// # Errors
    /// [`ModelError::InvalidParams`] when `params` fail [`KMeansParams::validate`] or `dim`
    /// is not in `1..=MAX_FEATURES` (64), naming every offending value.
    pub fn new(params: KMeansParams, dim: usize) -> Result<Self, ModelError> {
        check_new(&params, dim)?;
        let mut scaler = DecayedScaler::new(dim);
        scaler.refresh();
        Ok(Self {
            state: OnlineState {
                params,
                scaler,
                clusters: Clusters::new(params.k, dim),
                rng: SplitMix64::new(params.seed),
                warm_up: Vec::with_capacity(params.warm_up_points() * dim),
                mean_distance: 0.0,
                distance_weight: 0.0,
                updates: 0,
            },
            decay: params.decay(),
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

    /// Whether the model is still buffering its first points (and predicts nothing).
    pub fn is_warming_up(&self) -> bool {
        self.state.clusters.active == 0
    }

    /// The nearest cluster to `x` and the distance to it in standardised units.
    ///
    /// `None` during warm-up, and when `x` does not have [`dim`](Self::dim) values or one of
    /// them is not finite (or beyond 1e100 in magnitude).
    pub fn predict_one(&self, x: &[f64]) -> Option<Assignment> {
        if x.len() != self.dim() || !valid_point(x) {
            return None;
        }
        let (slot, d2) = self.state.nearest(x)?;
        Some(Assignment {
            id: *self.state.clusters.ids.get(slot)?,
            distance: d2.sqrt(),
        })
    }

    /// Test-then-train in one pass: predict `x` (exactly what
    /// [`predict_one`](Self::predict_one) returns before this call), then learn it (see the
    /// type's documentation).
    ///
    /// A point that does not have [`dim`](Self::dim) values, or has a value that is not
    /// finite or beyond 1e100 in magnitude, is ignored: `None`, the model is unchanged and the
    /// point is not counted. During warm-up the point is learnt and `None` returned.
    pub fn predict_learn(&mut self, x: &[f64]) -> Option<Assignment> {
        let dim = self.dim();
        if x.len() != dim || !valid_point(x) {
            return None;
        }
        let decay = self.decay;
        let state = &mut self.state;
        let Some((slot, d2)) = state.nearest(x) else {
            state.learn_scaler(x, decay);
            state.warm_up.extend_from_slice(x);
            state.updates += 1;
            if state.warm_up.len() >= state.params.warm_up_points() * dim {
                state.seed(decay);
            }
            return None;
        };
        let distance = d2.sqrt();
        let prediction = Assignment {
            id: *state.clusters.ids.get(slot)?,
            distance,
        };

        state.learn_scaler(x, decay);
        let yardstick = state.mean_distance;
        state.distance_weight = state.distance_weight * decay + 1.0;
        state.mean_distance += (distance - state.mean_distance) / state.distance_weight;
        let clusters = &mut state.clusters;
        clusters.decay(decay);
        // A misfit is > 0 away: it is not on a centre.
        let reseed = if distance <= MISFIT_FACTOR * yardstick {
            None
        } else if clusters.active < clusters.k() {
            Some(clusters.active)
        } else {
            lightest_if_dying(clusters, state.params.dying_fraction)
        };
        if let Some(target) = reseed {
            clusters.place(target, x, 1.0);
        } else if let Some(weight) = clusters.weights.get_mut(slot) {
            *weight += 1.0;
            let share = 1.0 / *weight;
            for (centre, &value) in clusters.centre_mut(slot).iter_mut().zip(x) {
                *centre += (value - *centre) * share;
            }
        }
        state.updates += 1;
        Some(prediction)
    }

    /// Live cluster centres in original units, one row per cluster, in the order of
    /// [`ids`](Self::ids) (none during warm-up).
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

    /// The centre of live cluster `id` in original units, if it is live.
    pub fn centre_of(&self, id: u32) -> Option<ArrayView1<'_, f64>> {
        let slot = self.ids().iter().position(|&live| live == id)?;
        Some(self.state.clusters.centres.row(slot))
    }

    /// Number of points learnt, warm-up included (survives state round-trips).
    pub fn updates(&self) -> u64 {
        self.state.updates
    }

    /// Prequential quality: the mean distance (standardised units) of the points to the
    /// cluster predicted for them before learning them, decayed with the model's half-life.
    /// `None` before the first prediction.
    pub fn mean_distance(&self) -> Option<f64> {
        (self.state.distance_weight > 0.0).then_some(self.state.mean_distance)
    }

    /// Standardise `x` with the current statistics: `out[i] = (x[i] − μᵢ)/σᵢ` (the identity
    /// with `scale = false`), for `min(x.len(), out.len(), dim)` values.
    pub fn standardise_into(&self, x: &[f64], out: &mut [f64]) {
        self.state.scaler.standardise(x, out);
    }
}

/// The lightest live cluster if its weight is below `fraction` × the heaviest.
fn lightest_if_dying(clusters: &Clusters, fraction: f64) -> Option<usize> {
    let weights = clusters.weights();
    let (mut lightest, mut heaviest) = (0, 0.0f64);
    for (slot, &weight) in weights.iter().enumerate() {
        if weight < weights[lightest] {
            lightest = slot;
        }
        heaviest = heaviest.max(weight);
    }
    (!weights.is_empty() && weights[lightest] < fraction * heaviest).then_some(lightest)
}

impl OnlineState {
    /// The nearest live centre to a valid `x` and the squared standardised distance; `None`
    /// without live clusters.
    fn nearest(&self, x: &[f64]) -> Option<(usize, f64)> {
        let dim = self.scaler.dim();
        let inv = self.scaler.inverse_divisors();
        let mut best: Option<(usize, f64)> = None;
        for (slot, centre) in self.clusters.centre_values().chunks_exact(dim).enumerate() {
            let d2 = scaled_squared_distance(x, centre, inv);
            if best.is_none_or(|(_, nearest)| d2 < nearest) {
                best = Some((slot, d2));
            }
        }
        best
    }

    fn learn_scaler(&mut self, x: &[f64], decay: f64) {
        if self.params.scale {
            self.scaler.fold(x, decay);
            self.scaler.refresh();
        }
    }

    /// Seed the clusters from the full warm-up buffer and free it. Allocates its scratch (once
    /// in the model's life).
    fn seed(&mut self, decay: f64) {
        let dim = self.scaler.dim();
        let warm_up = std::mem::take(&mut self.warm_up);
        let n = warm_up.len() / dim;
        let mut z = vec![0.0; warm_up.len()];
        for (point, out) in warm_up.chunks_exact(dim).zip(z.chunks_exact_mut(dim)) {
            self.scaler.standardise(point, out);
        }
        // The last point weighs 1, each earlier one `decay` times the next.
        let mut weights = vec![1.0; n];
        for p in (0..n.saturating_sub(1)).rev() {
            weights[p] = weights[p + 1] * decay;
        }
        let points = Points {
            x: &warm_up,
            z: &z,
            weights: Some(&weights),
            dim,
        };
        let mut work = Workspace::default();
        work.prepare(n, self.clusters.k(), dim);
        work.seed(
            &points,
            &mut self.clusters,
            &self.scaler,
            self.params.lloyd_iterations,
            &mut self.rng,
        );
        work.grow_and_reseed(
            &points,
            &mut self.clusters,
            &self.scaler,
            self.params.dying_fraction,
        );
        let total: f64 = weights.iter().sum();
        let weighted: f64 = weights
            .iter()
            .zip(&work.d2)
            .map(|(weight, d2)| weight * d2.sqrt())
            .sum();
        self.mean_distance = if total > 0.0 { weighted / total } else { 0.0 };
        self.distance_weight = 0.0;
    }

    /// While warming up, room for the rest of the warm-up, so that buffering allocates nothing.
    fn reserve_warm_up(&mut self) {
        if self.clusters.active == 0 {
            let capacity = self.params.warm_up_points() * self.scaler.dim();
            self.warm_up
                .reserve_exact(capacity.saturating_sub(self.warm_up.len()));
        }
    }

    /// Whether a deserialised state is one the model can run on without panicking or
    /// producing `NaN`.
    pub(super) fn check(&self) -> Result<(), ModelError> {
        let invalid = |what: String| ModelError::InvalidState(format!("online k-means: {what}"));
        self.params
            .validate()
            .map_err(|error| invalid(error.to_string()))?;
        let dim = self.scaler.dim();
        check_dim(dim).map_err(|error| invalid(error.to_string()))?;
        self.scaler
            .check(dim, self.params.scale)
            .map_err(&invalid)?;
        self.clusters.check(self.params.k, dim).map_err(&invalid)?;
        let warm_up_points = self.params.warm_up_points() as u64;
        let warming_up = self.clusters.active == 0;
        let buffered = self.warm_up.len() as u64;
        let consistent = if warming_up {
            self.updates < warm_up_points
                && buffered == self.updates * dim as u64
                && self.distance_weight == 0.0
                && self.mean_distance == 0.0
        } else {
            self.updates >= warm_up_points && buffered == 0
        };
        if !consistent {
            return Err(invalid(format!(
                "{} live clusters, {} points learnt and {buffered} values buffered do not fit a \
                 warm-up of {warm_up_points} points of {dim} features",
                self.clusters.active, self.updates
            )));
        }
        if !self.warm_up.iter().all(|&v| super::valid_value(v)) {
            return Err(invalid("a warm-up value is not finite".into()));
        }
        let metric = [self.mean_distance, self.distance_weight];
        if !metric.iter().all(|&v| v.is_finite() && v >= 0.0) {
            return Err(invalid("the mean distance is not finite ≥ 0".into()));
        }
        Ok(())
    }
}

impl Clone for OnlineKMeans {
    /// A clone of a model still warming up keeps room for the rest of its warm-up (a derived
    /// clone would not: `Vec::clone` keeps only the length), so that every key started from a
    /// pipeline's prototype model buffers its warm-up without allocating.
    fn clone(&self) -> Self {
        let mut state = self.state.clone();
        state.reserve_warm_up();
        Self {
            state,
            decay: self.decay,
        }
    }
}

impl PartialEq for OnlineKMeans {
    /// Models are equal when their states are.
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

impl Serialize for OnlineKMeans {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OnlineKMeans {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = OnlineState::deserialize(deserializer)?;
        state.check().map_err(serde::de::Error::custom)?;
        state.scaler.refresh();
        state.reserve_warm_up();
        let decay = state.params.decay();
        Ok(Self { state, decay })
    }
}
