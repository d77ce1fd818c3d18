//! Tests of both k-means models. Data come from [`SplitMix64`] (seeded, the same on every
//! platform); tolerances are stated next to each assertion.

use super::*;
use crate::model::SplitMix64;
use ndarray::{arr2, Array2};

const DIM: usize = 8;
/// Features in mixed units: offsets up to 1e5, units from 0.001 to 1000.
const OFFSETS: [f64; DIM] = [20.0, 0.0, 1.0e3, -5.0, 0.5, 100.0, 1.0e5, 3.0];
const UNITS: [f64; DIM] = [1.0, 0.01, 50.0, 2.0, 0.001, 10.0, 1.0e3, 0.5];
/// No drift.
const STILL: [f64; DIM] = [0.0; DIM];

/// Centre of blob `blob` (0..4) in units: every two blobs are 12 apart (four coordinates
/// differ by 6), i.e. 6 noise standard deviations from the midpoint.
fn blob_centre(blob: usize) -> [f64; DIM] {
    let mut centre = [0.0; DIM];
    for (i, value) in centre.iter_mut().enumerate() {
        let on = match blob {
            1 => i < 4,
            2 => i >= 4,
            3 => i % 2 == 0,
            _ => false,
        };
        *value = if on { 6.0 } else { 0.0 };
    }
    centre
}

/// A point of `blob` moved by `shift` (both in units), unit noise, in original units.
fn blob_point(rng: &mut SplitMix64, blob: usize, shift: &[f64; DIM]) -> [f64; DIM] {
    let centre = blob_centre(blob);
    let mut x = [0.0; DIM];
    for i in 0..DIM {
        x[i] = OFFSETS[i] + UNITS[i] * (centre[i] + shift[i] + rng.normal());
    }
    x
}

/// `n` points of the four blobs in random order, and their blobs.
fn blobs(rng: &mut SplitMix64, n: usize, shift: &[f64; DIM]) -> (Array2<f64>, Vec<usize>) {
    let mut points = Array2::zeros((n, DIM));
    let mut truth = Vec::with_capacity(n);
    for mut row in points.rows_mut() {
        let blob = rng.below(4);
        row.assign(&ndarray::ArrayView1::from(&blob_point(rng, blob, shift)));
        truth.push(blob);
    }
    (points, truth)
}

/// Distance between `centre` (original units) and blob `blob` moved by `shift`, in units.
fn distance_to_blob(centre: &[f64], blob: usize, shift: &[f64; DIM]) -> f64 {
    let target = blob_centre(blob);
    (0..DIM)
        .map(|i| ((centre[i] - OFFSETS[i]) / UNITS[i] - target[i] - shift[i]).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The ids of a batch's assignments (every row must be assigned).
fn ids_of(assignments: &[Option<Assignment>]) -> Vec<u32> {
    assignments
        .iter()
        .map(|a| a.expect("every row is valid").id)
        .collect()
}

/// The id most of blob `blob`'s points got.
fn id_of_blob(truth: &[usize], ids: &[u32], blob: usize) -> u32 {
    let mut counts = std::collections::BTreeMap::new();
    for (_, &id) in truth.iter().zip(ids).filter(|(&t, _)| t == blob) {
        *counts.entry(id).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(_, count)| count)
        .map(|(id, _)| id)
        .expect("the blob has points")
}

fn streaming(params: KMeansParams, dim: usize) -> StreamingKMeans {
    StreamingKMeans::new(params, dim).expect("valid params")
}

fn online(params: KMeansParams, dim: usize) -> OnlineKMeans {
    OnlineKMeans::new(params, dim).expect("valid params")
}

fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(model: &T) -> T {
    let bytes = postcard::to_allocvec(model).expect("serialises");
    postcard::from_bytes(&bytes).expect("deserialises")
}

// ---- StreamingKMeans ----

#[test]
fn streaming_separates_gaussian_blobs_from_the_first_batch() {
    let mut rng = SplitMix64::new(1);
    let mut model = streaming(KMeansParams::streaming_default(4), DIM);
    let mut last = (Vec::new(), Vec::new());
    for batch in 0..8 {
        let (points, truth) = blobs(&mut rng, 1600, &STILL);
        let ids = ids_of(model.update(points.view()));
        let ari = adjusted_rand_index(&truth, &ids);
        assert!(ari >= 0.95, "batch {batch}: ARI {ari}");
        last = (truth, ids);
    }
    assert_eq!(model.updates(), 8);
    assert_eq!(
        model.ids(),
        [0, 1, 2, 3],
        "ids handed out in slot order, never relabelled"
    );
    let (truth, ids) = last;
    for blob in 0..4 {
        let id = id_of_blob(&truth, &ids, blob);
        let centre = model.centre_of(id).expect("live id");
        let centre = centre.as_slice().expect("contiguous");
        // About 2700 points per centre: noise ≈ √(8/2700) ≈ 0.05 units; allow 0.15.
        let error = distance_to_blob(centre, blob, &STILL);
        assert!(error < 0.15, "blob {blob}: centre {error} units off");
    }
    // Weights: 400 points per blob and batch, decayed over 8 batches of half-life 10.
    let a = KMeansParams::streaming_default(4).decay();
    let expected = 400.0 * (1.0 - a.powi(8)) / (1.0 - a);
    let total: f64 = model.weights().iter().sum();
    assert!((total / 4.0 - expected).abs() < 0.02 * expected, "{total}");
}

#[test]
fn standardisation_makes_clustering_unit_free() {
    // Two blobs 6 apart in each of features 1..8 (unit noise); feature 0 is pure noise of
    // standard deviation 1000, with no cluster structure.
    let data = |rng: &mut SplitMix64| {
        let mut points = Array2::zeros((1000, DIM));
        let mut truth = Vec::new();
        for mut row in points.rows_mut() {
            let blob = rng.below(2);
            row[0] = 1000.0 * rng.normal();
            for i in 1..DIM {
                row[i] = 6.0 * blob as f64 + rng.normal();
            }
            truth.push(blob);
        }
        (points, truth)
    };
    let mut scaled = streaming(KMeansParams::streaming_default(2), DIM);
    let mut raw = streaming(
        KMeansParams {
            scale: false,
            ..KMeansParams::streaming_default(2)
        },
        DIM,
    );
    let mut rng = SplitMix64::new(2);
    for _ in 0..3 {
        let (points, truth) = data(&mut rng);
        let scaled_ari = adjusted_rand_index(&truth, &ids_of(scaled.update(points.view())));
        let raw_ari = adjusted_rand_index(&truth, &ids_of(raw.update(points.view())));
        // Scaled: feature 0 is one unit of noise across the blobs' 5-unit separation.
        assert!(scaled_ari >= 0.95, "scaled ARI {scaled_ari}");
        // Unscaled: k-means splits the feature of variance 1e6, which says nothing.
        assert!(raw_ari < 0.1, "unscaled ARI {raw_ari}");
    }
}

#[test]
fn later_batches_follow_the_decayed_weighted_mean() {
    // One feature, no scaling, half-life 1 batch: a = 0.5.
    let params = KMeansParams {
        half_life: 1.0,
        scale: false,
        ..KMeansParams::streaming_default(2)
    };
    let mut model = streaming(params, 1);
    model.update(arr2(&[[0.0], [0.0], [10.0], [10.0]]).view());
    let slot_of = |model: &StreamingKMeans, near: f64| {
        (0..2)
            .find(|&slot| (model.centres()[[slot, 0]] - near).abs() < 3.0)
            .expect("a centre near there")
    };
    let (low, high) = (slot_of(&model, 0.0), slot_of(&model, 10.0));
    assert_eq!(model.centres()[[low, 0]], 0.0);
    assert_eq!(model.weights()[low], 2.0);
    assert_eq!(model.centres()[[high, 0]], 10.0);

    // low: (0·2·0.5 + 3)/(2·0.5 + 2) = 1, n = 3; high: (10·2·0.5 + 12)/(2·0.5 + 1) = 11, n = 2.
    let out = model.update(arr2(&[[1.0], [2.0], [12.0]]).view()).to_vec();
    assert_eq!(model.centres()[[low, 0]], 1.0);
    assert_eq!(model.weights()[low], 3.0);
    assert_eq!(model.centres()[[high, 0]], 11.0);
    assert_eq!(model.weights()[high], 2.0);
    // Assignments are to the updated centres: |1 − 1|, |2 − 1|, |12 − 11|.
    let distances: Vec<f64> = out.iter().map(|a| a.expect("valid").distance).collect();
    assert_eq!(distances, [0.0, 1.0, 1.0]);

    // A cluster without points only decays: low stays at 1 with n = 1.5.
    model.update(arr2(&[[11.5]]).view());
    assert_eq!(model.centres()[[low, 0]], 1.0);
    assert_eq!(model.weights()[low], 1.5);
    // high: (11·2·0.5 + 11.5)/(2·0.5 + 1) = 11.25.
    assert_eq!(model.centres()[[high, 0]], 11.25);
    assert_eq!(model.weights()[high], 2.0);
}

/// "Follow" means: when every blob moves by `shift` at once, the centre of each blob's cluster
/// (same id as before) closes the gap like the weight of the old points decays, so after one
/// half-life the centre is half-way (|centre − new blob centre| = 0.5·|shift| ± 0.06·|shift|)
/// and after three an eighth of the way (0.125·|shift| ± 0.05·|shift|); noise of a centre is
/// about 0.02·|shift| here.
#[test]
fn streaming_centres_follow_drift_within_the_half_life() {
    let half_life = 5;
    let params = KMeansParams {
        half_life: half_life as f64,
        ..KMeansParams::streaming_default(4)
    };
    let mut model = streaming(params, DIM);
    let mut rng = SplitMix64::new(3);
    let mut before = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let (points, truth) = blobs(&mut rng, 800, &STILL);
        before = (truth.clone(), ids_of(model.update(points.view())));
    }
    let ids_before = model.ids().to_vec();
    let blob_ids: Vec<u32> = (0..4)
        .map(|blob| id_of_blob(&before.0, &before.1, blob))
        .collect();
    let shift = [3.0, -2.0, 0.0, 2.0, 0.0, 0.0, -1.0, 0.0];
    let size = shift.iter().map(|s| s * s).sum::<f64>().sqrt();
    for batch in 1..=3 * half_life {
        let (points, truth) = blobs(&mut rng, 800, &shift);
        let ids = ids_of(model.update(points.view()));
        for (blob, &id) in blob_ids.iter().enumerate() {
            assert_eq!(
                id_of_blob(&truth, &ids, blob),
                id,
                "blob {blob} keeps its id"
            );
        }
        let expected = match batch {
            b if b == half_life => Some((0.5, 0.06)),
            b if b == 3 * half_life => Some((0.125, 0.05)),
            _ => None,
        };
        if let Some((fraction, tolerance)) = expected {
            for (blob, &id) in blob_ids.iter().enumerate() {
                let centre = model.centre_of(id).expect("live id");
                let centre = centre.as_slice().expect("contiguous");
                let gap = distance_to_blob(centre, blob, &shift) / size;
                assert!(
                    (gap - fraction).abs() < tolerance,
                    "batch {batch}, blob {blob}: gap {gap}, expected {fraction}"
                );
            }
        }
    }
    assert_eq!(model.ids(), ids_before, "no cluster died or was re-seeded");
}

#[test]
fn repeated_batch_keeps_ids_and_assignments() {
    let mut rng = SplitMix64::new(4);
    let (points, _) = blobs(&mut rng, 400, &STILL);
    let mut model = streaming(KMeansParams::streaming_default(4), DIM);
    let first: Vec<Option<Assignment>> = model.update(points.view()).to_vec();
    let ids = model.ids().to_vec();
    let centres = model.centres().to_owned();
    for round in 0..50 {
        let out = model.update(points.view());
        for (a, b) in out.iter().zip(&first) {
            let (a, b) = (a.expect("valid"), b.expect("valid"));
            assert_eq!(a.id, b.id, "round {round}");
            // Only round-off moves anything: 1e-9 standardised units.
            assert!((a.distance - b.distance).abs() < 1e-9, "round {round}");
        }
        assert_eq!(model.ids(), ids, "round {round}");
    }
    for (now, then) in model.centres().iter().zip(&centres) {
        assert!(
            (now - then).abs() <= 1e-9 * then.abs().max(1.0),
            "{now} vs {then}"
        );
    }
}

#[test]
fn streaming_state_round_trip_continues_bit_for_bit() {
    let mut rng = SplitMix64::new(5);
    let params = KMeansParams {
        half_life: 2.0,
        dying_fraction: 0.05,
        ..KMeansParams::streaming_default(5)
    };
    // Before any batch, and after some.
    let mut original = streaming(params, DIM);
    let mut restored = round_trip(&original);
    assert_eq!(restored, original);
    for _ in 0..4 {
        let (points, _) = blobs(&mut rng, 500, &STILL);
        let a = original.update(points.view()).to_vec();
        let b = restored.update(points.view()).to_vec();
        assert_eq!(a, b);
    }
    let mut restored = round_trip(&original);
    assert_eq!(restored, original);
    assert_eq!(restored.ids(), original.ids());
    assert_eq!(restored.centres(), original.centres());
    // Go on with drift, so that clusters move, die and are re-seeded (k = 5 for 4 blobs).
    let shift = [8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0];
    for _ in 0..12 {
        let (points, _) = blobs(&mut rng, 500, &shift);
        let a = original.update(points.view()).to_vec();
        let b = restored.update(points.view()).to_vec();
        for (a, b) in a.iter().zip(&b) {
            let (a, b) = (a.expect("valid"), b.expect("valid"));
            assert_eq!(a.id, b.id);
            assert_eq!(a.distance.to_bits(), b.distance.to_bits());
        }
    }
    assert!(
        original.ids().iter().any(|&id| id >= 5),
        "a cluster was re-seeded: {:?}",
        original.ids()
    );
    assert_eq!(restored, original);
    assert_eq!(
        postcard::to_allocvec(&restored).expect("serialises"),
        postcard::to_allocvec(&original).expect("serialises")
    );
}

#[test]
fn more_clusters_than_points_leaves_slots_inactive_until_seeded() {
    let mut model = streaming(KMeansParams::streaming_default(8), 2);
    // 5 rows, 3 distinct points.
    let out = model
        .update(arr2(&[[1.0, 2.0], [1.0, 2.0], [5.0, 0.0], [9.0, 9.0], [5.0, 0.0]]).view())
        .to_vec();
    assert_eq!(model.ids(), [0, 1, 2]);
    assert_eq!(model.centres().nrows(), 3);
    let mut centres: Vec<(f64, f64)> = model
        .centres()
        .rows()
        .into_iter()
        .map(|row| (row[0], row[1]))
        .collect();
    centres.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    assert_eq!(centres, [(1.0, 2.0), (5.0, 0.0), (9.0, 9.0)]);
    let mut weights = model.weights().to_vec();
    weights.sort_by(f64::total_cmp);
    assert_eq!(weights, [1.0, 2.0, 2.0]);
    assert!(out.iter().all(|a| a.expect("valid").distance == 0.0));
    assert_eq!(out[0].map(|a| a.id), out[1].map(|a| a.id));

    // The same three points and two new ones: 5 distinct points support 5 clusters, not 8.
    let out = model
        .update(
            arr2(&[
                [1.0, 2.0],
                [5.0, 0.0],
                [9.0, 9.0],
                [20.0, 20.0],
                [-9.0, 4.0],
            ])
            .view(),
        )
        .to_vec();
    assert_eq!(model.ids(), [0, 1, 2, 3, 4]);
    assert_eq!(
        out[3].map(|a| a.distance),
        Some(0.0),
        "seeded at the new point"
    );
    assert_eq!(
        out[4].map(|a| a.distance),
        Some(0.0),
        "seeded at the new point"
    );
    assert_ne!(out[3].map(|a| a.id), out[4].map(|a| a.id));

    // Many distinct points: the last three slots are seeded, the first ids stay.
    let mut rng = SplitMix64::new(6);
    let many = Array2::from_shape_fn((40, 2), |_| 30.0 * rng.normal());
    model.update(many.view());
    assert_eq!(model.ids(), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert!(model.centres().iter().all(|v| v.is_finite()));
    assert!(model.weights().iter().all(|w| w.is_finite() && *w > 0.0));

    // A single point first: one cluster, no NaN from a variance of 0.
    let mut single = streaming(KMeansParams::streaming_default(8), 2);
    let out = single.update(arr2(&[[3.0, -3.0]]).view()).to_vec();
    assert_eq!(single.ids(), [0]);
    assert_eq!(single.centres(), arr2(&[[3.0, -3.0]]));
    assert_eq!(
        out,
        [Some(Assignment {
            id: 0,
            distance: 0.0
        })]
    );
    assert_eq!(
        single.assign(&[4.0, -3.0]),
        Some(Assignment {
            id: 0,
            distance: 1.0
        })
    );
}

/// Blobs A, B, C, then C vanishes and a small far group D appears next to B: with half-life 1
/// and dying fraction 0.01, C's weight (≈ 200) halves every batch and falls below 0.01 × the
/// largest (≈ 205) in the 7th batch; it is re-seeded at a D point (the worst fit) with id 3.
#[test]
fn dying_cluster_is_reseeded_with_a_fresh_id() {
    let params = KMeansParams {
        half_life: 1.0,
        dying_fraction: 0.01,
        ..KMeansParams::streaming_default(3)
    };
    let mut model = streaming(params, 2);
    let mut rng = SplitMix64::new(7);
    let centres = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [25.0, -5.0]];
    let batch = |rng: &mut SplitMix64, counts: [usize; 4]| {
        let mut rows = Vec::new();
        let mut truth = Vec::new();
        for (group, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                let [x, y] = centres[group];
                rows.push([x + 0.5 * rng.normal(), y + 0.5 * rng.normal()]);
                truth.push(group);
            }
        }
        (arr2(&rows), truth)
    };
    let mut blob_ids = [0; 3];
    for _ in 0..10 {
        let (points, truth) = batch(&mut rng, [100, 100, 100, 0]);
        let ids = ids_of(model.update(points.view()));
        for (blob, id) in blob_ids.iter_mut().enumerate() {
            *id = id_of_blob(&truth, &ids, blob);
        }
    }
    let ids_before = model.ids().to_vec();
    let slot_of_c = ids_before
        .iter()
        .position(|&id| id == blob_ids[2])
        .expect("C is live");
    for round in 1..=15 {
        let (points, truth) = batch(&mut rng, [100, 100, 0, 5]);
        let ids = ids_of(model.update(points.view()));
        assert_eq!(id_of_blob(&truth, &ids, 0), blob_ids[0], "round {round}: A");
        assert_eq!(id_of_blob(&truth, &ids, 1), blob_ids[1], "round {round}: B");
        if round < 7 {
            assert_eq!(model.ids(), ids_before, "round {round}: C still decaying");
        } else {
            let mut expected = ids_before.clone();
            expected[slot_of_c] = 3;
            assert_eq!(
                model.ids(),
                expected,
                "round {round}: C re-seeded once as id 3"
            );
            assert_eq!(
                id_of_blob(&truth, &ids, 3),
                3,
                "round {round}: D has the new id"
            );
        }
    }
    let d = model.centre_of(3).expect("live");
    assert!((d[0] - 25.0).abs() < 0.5 && (d[1] + 5.0).abs() < 0.5, "{d}");
    for blob in 0..2 {
        let centre = model.centre_of(blob_ids[blob]).expect("live");
        let [x, y] = centres[blob];
        // 100 points a batch: noise ≈ 0.5/√200; allow 0.2.
        assert!(
            (centre[0] - x).abs() < 0.2 && (centre[1] - y).abs() < 0.2,
            "{centre}"
        );
    }
}

#[test]
fn non_finite_rows_are_skipped() {
    let mut rng = SplitMix64::new(8);
    let (points, _) = blobs(&mut rng, 200, &STILL);
    let mut model = streaming(KMeansParams::streaming_default(4), DIM);
    model.update(points.view());

    let (clean, _) = blobs(&mut rng, 6, &STILL);
    let mut dirty = Array2::zeros((10, DIM));
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0e300];
    let mut clean_rows = clean.rows().into_iter();
    for (i, mut row) in dirty.rows_mut().into_iter().enumerate() {
        if i % 2 == 1 && i / 2 < bad.len() {
            row.fill(1.0);
            row[i % DIM] = bad[i / 2];
        } else if let Some(clean_row) = clean_rows.next() {
            row.assign(&clean_row);
        }
    }
    let mut reference = model.clone();
    let expected = reference.update(clean.view()).to_vec();
    let out = model.update(dirty.view()).to_vec();
    let valid: Vec<Option<Assignment>> = out.iter().copied().filter(Option::is_some).collect();
    assert_eq!(valid, expected);
    for i in [1, 3, 5, 7] {
        assert_eq!(out[i], None, "row {i}");
    }
    assert_eq!(model, reference, "learnt exactly the valid rows");
    assert_eq!(model.updates(), 2);

    // Nothing valid, or the wrong number of columns: all None, nothing learnt or counted.
    let before = model.clone();
    let out = model.update(Array2::from_elem((3, DIM), f64::NAN).view());
    assert_eq!(out, [None, None, None]);
    let out = model.update(Array2::zeros((2, DIM - 1)).view());
    assert_eq!(out, [None, None]);
    assert!(model.update(Array2::zeros((0, DIM)).view()).is_empty());
    assert_eq!(model, before);
    assert_eq!(model.assign(&[f64::NAN; DIM]), None);
    assert_eq!(model.assign(&[0.0; 3]), None);
}

#[test]
fn assign_agrees_with_update_output() {
    let mut rng = SplitMix64::new(9);
    let mut model = streaming(KMeansParams::streaming_default(4), DIM);
    assert_eq!(
        model.assign(&[0.0; DIM]),
        None,
        "no cluster before the first batch"
    );
    for _ in 0..3 {
        let (points, _) = blobs(&mut rng, 300, &STILL);
        let out = model.update(points.view()).to_vec();
        for (row, assignment) in points.rows().into_iter().zip(out) {
            let x = row.as_slice().expect("contiguous");
            assert_eq!(model.assign(x), assignment);
        }
    }
    // Non-contiguous rows (a transposed view) are accepted and give the same result.
    let (points, _) = blobs(&mut rng, 50, &STILL);
    let transposed = points.t().to_owned();
    let mut twin = model.clone();
    let a = model.update(points.view()).to_vec();
    let b = twin.update(transposed.t()).to_vec();
    assert_eq!(a, b);
    assert_eq!(model, twin);
}

// ---- OnlineKMeans ----

#[test]
fn online_separates_gaussian_blobs() {
    let mut rng = SplitMix64::new(10);
    let params = KMeansParams::online_default(4);
    let mut model = online(params, DIM);
    let (points, truth) = blobs(&mut rng, 6000, &STILL);
    let mut predicted = Vec::new();
    let mut ids_after_warm_up = None;
    for (row, &blob) in points.rows().into_iter().zip(&truth) {
        let x = row.as_slice().expect("contiguous");
        if let Some(assignment) = model.predict_learn(x) {
            predicted.push((blob, assignment.id));
            ids_after_warm_up.get_or_insert_with(|| model.ids().to_vec());
        }
    }
    assert_eq!(predicted.len(), 6000 - params.warm_up_points());
    let (truth, ids): (Vec<usize>, Vec<u32>) = predicted.into_iter().unzip();
    let ari = adjusted_rand_index(&truth, &ids);
    assert!(ari >= 0.95, "prequential ARI {ari}");
    assert_eq!(model.ids(), [0, 1, 2, 3]);
    assert_eq!(ids_after_warm_up.as_deref(), Some(&[0, 1, 2, 3][..]));
    for blob in 0..4 {
        let id = id_of_blob(&truth, &ids, blob);
        let centre = model.centre_of(id).expect("live");
        let centre = centre.as_slice().expect("contiguous");
        // ≈ 360 recent points per centre: noise ≈ √(8/720) ≈ 0.1 units; allow 0.35.
        let error = distance_to_blob(centre, blob, &STILL);
        assert!(error < 0.35, "blob {blob}: {error}");
    }
}

/// As for [`streaming_centres_follow_drift_within_the_half_life`], with the half-life in
/// points: after 2000 points the gap is half the shift (± 0.06), after 6000 an eighth (± 0.05).
#[test]
fn online_centres_follow_drift_within_the_half_life() {
    let half_life = 2000;
    let params = KMeansParams {
        half_life: half_life as f64,
        ..KMeansParams::online_default(4)
    };
    let mut model = online(params, DIM);
    let mut rng = SplitMix64::new(11);
    let (points, truth) = blobs(&mut rng, 6 * half_life, &STILL);
    let mut pairs = Vec::new();
    for (row, &blob) in points.rows().into_iter().zip(&truth) {
        if let Some(a) = model.predict_learn(row.as_slice().expect("contiguous")) {
            pairs.push((blob, a.id));
        }
    }
    let (truth, ids): (Vec<usize>, Vec<u32>) = pairs.into_iter().unzip();
    let blob_ids: Vec<u32> = (0..4).map(|blob| id_of_blob(&truth, &ids, blob)).collect();
    let ids_before = model.ids().to_vec();
    let shift = [3.0, -2.0, 0.0, 2.0, 0.0, 0.0, -1.0, 0.0];
    let size = shift.iter().map(|s| s * s).sum::<f64>().sqrt();
    let (points, truth) = blobs(&mut rng, 3 * half_life, &shift);
    for (t, (row, &blob)) in points.rows().into_iter().zip(&truth).enumerate() {
        let a = model
            .predict_learn(row.as_slice().expect("contiguous"))
            .expect("seeded");
        assert_eq!(
            a.id, blob_ids[blob],
            "point {t} of blob {blob} keeps its id"
        );
        let expected = match t + 1 {
            n if n == half_life => Some((0.5, 0.06)),
            n if n == 3 * half_life => Some((0.125, 0.05)),
            _ => None,
        };
        if let Some((fraction, tolerance)) = expected {
            for (blob, &id) in blob_ids.iter().enumerate() {
                let centre = model.centre_of(id).expect("live");
                let centre = centre.as_slice().expect("contiguous");
                let gap = distance_to_blob(centre, blob, &shift) / size;
                assert!(
                    (gap - fraction).abs() < tolerance,
                    "after {} points, blob {blob}: gap {gap}, expected {fraction}",
                    t + 1
                );
            }
        }
    }
    assert_eq!(model.ids(), ids_before);
}

#[test]
fn online_predicts_before_learning() {
    let mut rng = SplitMix64::new(12);
    let params = KMeansParams::online_default(4);
    let mut model = online(params, DIM);
    let (points, _) = blobs(&mut rng, 500, &STILL);
    for (t, row) in points.rows().into_iter().enumerate() {
        let x = row.as_slice().expect("contiguous");
        let predicted = model.predict_one(x);
        let learnt = model.predict_learn(x);
        assert_eq!(predicted, learnt, "point {t}");
        assert_eq!(learnt.is_none(), t < params.warm_up_points(), "point {t}");
        assert_eq!(model.is_warming_up(), t + 1 < params.warm_up_points());
        assert_eq!(model.updates(), t as u64 + 1);
    }
    assert!(model.state.warm_up.is_empty() && model.state.warm_up.capacity() == 0);
}

#[test]
fn online_mean_distance_tracks_prequential_distances() {
    let mut rng = SplitMix64::new(13);
    let mut model = online(KMeansParams::online_default(4), DIM);
    let (points, _) = blobs(&mut rng, 8000, &STILL);
    let mut distances = Vec::new();
    for row in points.rows() {
        assert_eq!(model.mean_distance().is_some(), !distances.is_empty());
        if let Some(a) = model.predict_learn(row.as_slice().expect("contiguous")) {
            distances.push(a.distance);
        }
    }
    let recent = &distances[distances.len() - 3000..];
    let mean = recent.iter().sum::<f64>() / recent.len() as f64;
    let tracked = model.mean_distance().expect("predictions were made");
    // Stationary data: the decayed mean (memory ≈ 1400 points) is within 5 % of the mean.
    assert!((tracked - mean).abs() < 0.05 * mean, "{tracked} vs {mean}");
    // And it measures fit: the unit noise is ≈ 1/3 of a feature's standard deviation, so a
    // point is ≈ √8/3 ≈ 0.94 standardised units from its centre (blobs are ≈ 4 apart).
    assert!(tracked > 0.5 && tracked < 1.5, "{tracked}");
}

#[test]
fn online_more_clusters_than_distinct_points() {
    let params = KMeansParams::online_default(4);
    let mut model = online(params, 2);
    for t in 0..params.warm_up_points() {
        let x = if t % 2 == 0 { [0.0, 0.0] } else { [10.0, 10.0] };
        assert_eq!(model.predict_learn(&x), None);
    }
    assert_eq!(model.ids(), [0, 1], "two distinct points, two clusters");
    assert!(model.centres().iter().all(|v| *v == 0.0 || *v == 10.0));
    let back = model.predict_learn(&[0.0, 0.0]).expect("seeded");
    assert_eq!(back.distance, 0.0);
    // A new point is a misfit (the mean distance is 0): it seeds slot 2 with id 2.
    let new = model.predict_learn(&[20.0, 0.0]).expect("seeded");
    assert!(new.distance > 0.0);
    assert_eq!(model.ids(), [0, 1, 2]);
    assert_eq!(
        model.predict_one(&[20.0, 0.0]).map(|a| (a.id, a.distance)),
        Some((2, 0.0))
    );
    // Nearer than 3× the mean distance (now ≈ half of the last one): learnt, not seeded.
    model.predict_learn(&[-2.0, 1.0]);
    assert_eq!(model.ids(), [0, 1, 2]);
    // A far point seeds the last slot.
    model.predict_learn(&[-60.0, 30.0]);
    assert_eq!(model.ids(), [0, 1, 2, 3]);
    assert!(model.centres().iter().all(|v| v.is_finite()));

    // All warm-up points equal: one cluster, divisors 1, no NaN.
    let mut constant = online(KMeansParams::online_default(2), 2);
    for _ in 0..16 {
        constant.predict_learn(&[5.0, 5.0]);
    }
    assert_eq!(constant.ids(), [0]);
    assert_eq!(
        constant.predict_one(&[5.0, 6.0]),
        Some(Assignment {
            id: 0,
            distance: 1.0
        })
    );
}

/// One point at a time, half-life 50 points, dying fraction 0.01: blobs A, B, C (0, 1, 2 of
/// [`blob_centre`]), then only A and B. C's weight (≈ 72.6/3) falls below 1 % of B's (≈ 72.6/2)
/// after log2(24.2/0.363) ≈ 6 half-lives (≈ 300 points) but C lives on while no point is a
/// misfit (in 8 dimensions none of A's or B's is). Then D (blob 3) appears in 10 % of the
/// points: its first point re-seeds C's slot with id 3; no other id changes.
#[test]
fn online_dying_cluster_is_reseeded_with_a_fresh_id() {
    let params = KMeansParams {
        half_life: 50.0,
        dying_fraction: 0.01,
        ..KMeansParams::online_default(3)
    };
    let mut model = online(params, DIM);
    let mut rng = SplitMix64::new(14);
    let mut pairs = Vec::new();
    for _ in 0..1500 {
        let blob = rng.below(3);
        if let Some(a) = model.predict_learn(&blob_point(&mut rng, blob, &STILL)) {
            pairs.push((blob, a.id));
        }
    }
    let (truth, ids): (Vec<usize>, Vec<u32>) = pairs.into_iter().unzip();
    let blob_ids: Vec<u32> = (0..3).map(|blob| id_of_blob(&truth, &ids, blob)).collect();
    let ids_before = model.ids().to_vec();
    let slot_of_c = ids_before
        .iter()
        .position(|&id| id == blob_ids[2])
        .expect("C is live");
    for t in 0..600 {
        let blob = rng.below(2);
        let a = model
            .predict_learn(&blob_point(&mut rng, blob, &STILL))
            .expect("seeded");
        assert_eq!(a.id, blob_ids[blob], "point {t}: A and B keep their ids");
    }
    let weights = model.weights();
    assert!(
        weights[slot_of_c] < 0.01 * weights.iter().fold(0.0f64, |m, &w| m.max(w)),
        "C is dying: {weights:?}"
    );
    assert_eq!(
        model.ids(),
        ids_before,
        "but not re-seeded without a misfit"
    );
    let mut expected = ids_before.clone();
    expected[slot_of_c] = 3;
    let mut seen_d = false;
    for t in 0..1000 {
        let blob = if rng.below(10) == 0 { 3 } else { rng.below(2) };
        let a = model
            .predict_learn(&blob_point(&mut rng, blob, &STILL))
            .expect("seeded");
        if blob < 2 {
            assert_eq!(a.id, blob_ids[blob], "point {t}: A and B keep their ids");
        } else if seen_d {
            assert_eq!(a.id, 3, "point {t}: D has the new id");
        }
        seen_d |= blob == 3;
        let ids = if seen_d { &expected } else { &ids_before };
        assert_eq!(
            model.ids(),
            ids,
            "point {t}: re-seeded at the first D point, once"
        );
    }
    let d = model.centre_of(3).expect("live");
    // ≈ 7 recent D points in the centre: noise ≈ √(8/14) ≈ 0.75 units; allow 2.
    let error = distance_to_blob(d.as_slice().expect("contiguous"), 3, &STILL);
    assert!(error < 2.0, "{error}");
}

#[test]
fn online_state_round_trip_continues_bit_for_bit() {
    let mut rng = SplitMix64::new(15);
    let params = KMeansParams {
        half_life: 300.0,
        ..KMeansParams::online_default(4)
    };
    let (points, _) = blobs(&mut rng, 3000, &STILL);
    let mut original = online(params, DIM);
    let mut restored = round_trip(&original);
    for (t, row) in points.rows().into_iter().enumerate() {
        // Round-trips during warm-up, right after it, and later.
        if [0, 10, 32, 33, 1000].contains(&t) {
            restored = round_trip(&original);
            assert_eq!(restored, original, "point {t}");
        }
        let x = row.as_slice().expect("contiguous");
        let (a, b) = (original.predict_learn(x), restored.predict_learn(x));
        assert_eq!(a.map(|a| a.id), b.map(|b| b.id), "point {t}");
        assert_eq!(
            a.map(|a| a.distance.to_bits()),
            b.map(|b| b.distance.to_bits()),
            "point {t}"
        );
    }
    assert_eq!(restored, original);
    assert_eq!(
        original.mean_distance().map(f64::to_bits),
        restored.mean_distance().map(f64::to_bits)
    );
    assert_eq!(restored.updates(), 3000);
}

#[test]
fn online_ignores_non_finite_or_misshaped_points() {
    let mut rng = SplitMix64::new(16);
    let mut model = online(KMeansParams::online_default(4), DIM);
    let (points, _) = blobs(&mut rng, 200, &STILL);
    for row in points.rows() {
        model.predict_learn(row.as_slice().expect("contiguous"));
    }
    let before = model.clone();
    let mut x = [1.0; DIM];
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0e300] {
        x[3] = bad;
        assert_eq!(model.predict_one(&x), None);
        assert_eq!(model.predict_learn(&x), None);
    }
    assert_eq!(model.predict_learn(&[1.0; DIM - 1]), None);
    assert_eq!(model.predict_learn(&[1.0; DIM + 1]), None);
    assert_eq!(model, before);
    assert_eq!(model.updates(), 200);
}

// ---- parameters and state ----

#[test]
fn params_validation_rejects_each_bad_param() {
    for defaults in [
        KMeansParams::streaming_default(4),
        KMeansParams::online_default(4),
    ] {
        assert!(defaults.validate().is_ok());
        let bad = [
            ("k", KMeansParams { k: 0, ..defaults }),
            ("k", KMeansParams { k: 65, ..defaults }),
            (
                "half_life",
                KMeansParams {
                    half_life: 0.0,
                    ..defaults
                },
            ),
            (
                "half_life",
                KMeansParams {
                    half_life: -1.0,
                    ..defaults
                },
            ),
            (
                "half_life",
                KMeansParams {
                    half_life: f64::NAN,
                    ..defaults
                },
            ),
            (
                "half_life",
                KMeansParams {
                    half_life: f64::INFINITY,
                    ..defaults
                },
            ),
            (
                "lloyd_iterations",
                KMeansParams {
                    lloyd_iterations: 101,
                    ..defaults
                },
            ),
            (
                "dying_fraction",
                KMeansParams {
                    dying_fraction: -1e-9,
                    ..defaults
                },
            ),
            (
                "dying_fraction",
                KMeansParams {
                    dying_fraction: 0.6,
                    ..defaults
                },
            ),
            (
                "dying_fraction",
                KMeansParams {
                    dying_fraction: f64::NAN,
                    ..defaults
                },
            ),
        ];
        for (name, params) in bad {
            let error = params.validate().expect_err(name);
            let ModelError::InvalidParams(message) = &error else {
                panic!("{error:?}");
            };
            assert!(message.starts_with(name), "{name}: {message}");
            assert!(StreamingKMeans::new(params, DIM).is_err(), "{name}");
            assert!(OnlineKMeans::new(params, DIM).is_err(), "{name}");
        }
    }
    // Every problem is named at once, the dimension included.
    let params = KMeansParams {
        k: 0,
        half_life: 0.0,
        dying_fraction: 1.0,
        ..KMeansParams::streaming_default(4)
    };
    let Err(ModelError::InvalidParams(message)) = StreamingKMeans::new(params, 0) else {
        panic!("invalid params accepted");
    };
    for name in ["k must", "half_life must", "dying_fraction must", "dim"] {
        assert!(message.contains(name), "{name}: {message}");
    }
    let Err(ModelError::InvalidParams(message)) =
        OnlineKMeans::new(KMeansParams::online_default(4), 65)
    else {
        panic!("65 features accepted");
    };
    assert!(
        message.contains("dim") && message.contains("64"),
        "{message}"
    );
    // Accepted edges.
    for params in [
        KMeansParams {
            k: 64,
            half_life: 1e-3,
            lloyd_iterations: 0,
            dying_fraction: 0.0,
            ..KMeansParams::streaming_default(1)
        },
        KMeansParams {
            k: 1,
            lloyd_iterations: 100,
            dying_fraction: 0.5,
            ..KMeansParams::streaming_default(1)
        },
    ] {
        assert!(StreamingKMeans::new(params, 64).is_ok());
        assert!(OnlineKMeans::new(params, 1).is_ok());
    }
}

#[test]
fn decay_halves_a_weight_after_one_half_life() {
    for half_life in [0.5, 1.0, 10.0, 1000.0] {
        let params = KMeansParams {
            half_life,
            ..KMeansParams::streaming_default(2)
        };
        let after = params.decay().powf(half_life);
        assert!((after - 0.5).abs() < 1e-12, "{half_life}: {after}");
    }
}

#[test]
fn corrupt_streaming_state_is_rejected_on_deserialise() {
    let mut rng = SplitMix64::new(17);
    let mut model = streaming(KMeansParams::streaming_default(5), DIM);
    let (points, _) = blobs(&mut rng, 300, &STILL);
    model.update(points.view());
    let reject = |bad: &StreamingKMeans, what: &str| {
        let bytes = postcard::to_allocvec(bad).expect("serialises");
        let error = postcard::from_bytes::<StreamingKMeans>(&bytes);
        assert!(error.is_err(), "accepted {what}");
    };
    let mut bad = model.clone();
    bad.state.clusters.centres = Array2::zeros((5, DIM - 1));
    reject(&bad, "centres of the wrong shape");
    let mut bad = model.clone();
    bad.state.clusters.centres[[1, 2]] = f64::NAN;
    reject(&bad, "a NaN centre");
    let mut bad = model.clone();
    bad.state.clusters.ids[2] = bad.state.clusters.ids[0];
    reject(&bad, "duplicate ids");
    let mut bad = model.clone();
    bad.state.clusters.active = 6;
    reject(&bad, "more live clusters than k");
    let mut bad = model.clone();
    bad.state.clusters.weights[0] = -1.0;
    reject(&bad, "a negative weight");
    let mut bad = model.clone();
    bad.state.clusters.ids.pop();
    reject(&bad, "ids of the wrong length");
    let mut bad = model.clone();
    bad.state.updates = 0;
    reject(&bad, "clusters without a batch");
    let mut bad = model.clone();
    bad.state.scaler.m2[0] = -1.0;
    reject(&bad, "a negative sum of squares");
    let mut bad = model.clone();
    bad.state.scaler.mean = ndarray::Array1::zeros(3);
    reject(&bad, "statistics of another dimension");
    let mut bad = model.clone();
    bad.state.params.k = 0;
    reject(&bad, "invalid params");
    let mut bad = model.clone();
    bad.state.params.k = 4;
    reject(&bad, "k that disagrees with the slots");
    let bytes = postcard::to_allocvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<StreamingKMeans>(&bytes[..bytes.len() / 2]).is_err());
    let restored: StreamingKMeans = postcard::from_bytes(&bytes).expect("the original is valid");
    assert_eq!(restored, model);
    // The check says what is wrong (postcard keeps only that deserialising failed).
    let mut bad = model.clone();
    bad.state.clusters.ids[1] = bad.state.clusters.ids[0];
    let Err(ModelError::InvalidState(message)) = bad.state.check() else {
        panic!("accepted duplicate ids");
    };
    assert!(message.contains("used twice"), "{message}");
}

#[test]
fn corrupt_online_state_is_rejected_on_deserialise() {
    let mut rng = SplitMix64::new(18);
    let params = KMeansParams::online_default(2);
    let (points, _) = blobs(&mut rng, 100, &STILL);
    let mut warming = online(params, DIM);
    for row in points.rows().into_iter().take(5) {
        warming.predict_learn(row.as_slice().expect("contiguous"));
    }
    let mut seeded = warming.clone();
    for row in points.rows() {
        seeded.predict_learn(row.as_slice().expect("contiguous"));
    }
    let reject = |bad: &OnlineKMeans, what: &str| {
        let bytes = postcard::to_allocvec(bad).expect("serialises");
        assert!(
            postcard::from_bytes::<OnlineKMeans>(&bytes).is_err(),
            "accepted {what}"
        );
    };
    let mut bad = warming.clone();
    bad.state.warm_up.push(1.0);
    reject(&bad, "a buffer that disagrees with the count");
    let mut bad = warming.clone();
    bad.state.warm_up[3] = f64::INFINITY;
    reject(&bad, "a non-finite buffered value");
    let mut bad = warming.clone();
    bad.state.updates = 20;
    reject(&bad, "a full buffer without clusters");
    let mut bad = seeded.clone();
    bad.state.warm_up = vec![0.0; DIM];
    reject(&bad, "a buffer after seeding");
    let mut bad = seeded.clone();
    bad.state.mean_distance = -1.0;
    reject(&bad, "a negative mean distance");
    let mut bad = seeded.clone();
    bad.state.clusters.centres[[0, 0]] = f64::NAN;
    reject(&bad, "a NaN centre");
    let mut bad = seeded.clone();
    bad.state.clusters.ids[1] = bad.state.clusters.ids[0];
    reject(&bad, "duplicate ids");
    let mut bad = seeded.clone();
    bad.state.params.scale = false;
    reject(&bad, "statistics learnt with scaling off");
    for model in [&warming, &seeded] {
        let restored: OnlineKMeans = round_trip(model);
        assert_eq!(&restored, model);
    }
}

#[test]
fn the_dying_fraction_range_says_its_bound() {
    let range = super::ranges::DYING_FRACTION;
    assert!(range.expected.ends_with(&MAX_DYING_FRACTION.to_string()));
    assert!(range.accepts(MAX_DYING_FRACTION) && !range.accepts(MAX_DYING_FRACTION + 0.01));
}
