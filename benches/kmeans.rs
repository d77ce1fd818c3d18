//! Throughput of the k-means models on one core.
//!
//!     cargo bench --bench kmeans
//!
//! - `StreamingKMeans::update` over one batch of 10,000 key profiles of 8 features (8 blobs in
//!   mixed units) with k = 8, as a `ClassifierSupervisor` calls it every interval: the first,
//!   seeding batch (best of 3 greedy k-means++ runs and Lloyd iterations) and a steady-state
//!   batch (assign, move the centres, assign again) are reported separately. Target: ≤ 20 ms
//!   per batch on one core.
//! - `OnlineKMeans::predict_learn` per reading (8 features, k = 8), as a `KeyActor` drives a
//!   `kind = "kmeans"` model.
//!
//! Inputs are generated before timing. Each measurement runs three rounds of at least half a
//! second and reports the best (on a shared machine the slower rounds measure the neighbours),
//! per second of this thread's CPU time (`/proc/thread-self/schedstat`), with the wall-clock
//! figure next to it. A counting global allocator reports allocations per batch or update.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgeflow::model::{adjusted_rand_index, KMeansParams, OnlineKMeans, StreamingKMeans};
use ndarray::Array2;
use support::{allocations, thread_cpu_ns, CountingAllocator, XorShift};

const FEATURES: usize = 8;
const K: usize = 8;
const PROFILES: usize = 10_000;
/// Distinct steady-state batches the bench cycles through.
const BATCHES: usize = 4;
const READINGS: usize = 4096;
const ROUNDS: usize = 3;
/// Shortest timed stretch: the CPU clock of `/proc/thread-self/schedstat` advances in
/// scheduler ticks, so single batches are timed in groups.
const MIN_ROUND: Duration = Duration::from_millis(500);
const TARGET_MS: f64 = 20.0;
/// First batches timed together (≈ 10 ms each: about half a second).
const SEEDINGS_PER_ROUND: usize = 48;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Profiles of 8 device classes: class centres uniform in [−10, 10] per feature (unit noise),
/// in mixed units (offsets up to 1e3, scales from 0.01 to 50).
struct Fleet {
    centres: [[f64; FEATURES]; K],
}

const OFFSETS: [f64; FEATURES] = [0.0, 10.0, -5.0, 1.0e3, 0.5, 100.0, -20.0, 3.0];
const SCALES: [f64; FEATURES] = [1.0, 2.0, 0.5, 50.0, 0.01, 10.0, 1.0, 3.0];

impl Fleet {
    fn new(rng: &mut XorShift) -> Self {
        let mut centres = [[0.0; FEATURES]; K];
        for centre in &mut centres {
            for value in centre.iter_mut() {
                *value = 20.0 * rng.next_f64() - 10.0;
            }
        }
        Self { centres }
    }

    fn point(&self, rng: &mut XorShift, class: usize) -> [f64; FEATURES] {
        let mut x = [0.0; FEATURES];
        for (i, value) in x.iter_mut().enumerate() {
            *value = OFFSETS[i] + SCALES[i] * (self.centres[class][i] + rng.next_normal());
        }
        x
    }

    fn batch(&self, rng: &mut XorShift, n: usize) -> (Array2<f64>, Vec<usize>) {
        let mut points = Array2::zeros((n, FEATURES));
        let mut classes = Vec::with_capacity(n);
        for mut row in points.rows_mut() {
            let class = rng.below(K);
            for (value, x) in row.iter_mut().zip(self.point(rng, class)) {
                *value = x;
            }
            classes.push(class);
        }
        (points, classes)
    }
}

/// One timed round: `(wall seconds, CPU seconds, allocations)` of `work`.
fn timed(work: impl FnOnce()) -> (f64, f64, u64) {
    let allocations_before = support::allocations();
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    work();
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(begin), Some(end)) if end > begin => (end - begin) as f64 * 1.0e-9,
        _ => wall,
    };
    // The clock and /proc reads allocate a little; per batch that rounds to 0 unless the model
    // itself allocates.
    (wall, cpu, allocations() - allocations_before)
}

fn streaming_params() -> KMeansParams {
    KMeansParams::streaming_default(K)
}

fn report_batches(name: &str, best_wall: f64, best_cpu: f64, allocations: f64, note: &str) {
    let verdict = if best_cpu <= TARGET_MS {
        format!("target ≤ {TARGET_MS} ms: ok")
    } else {
        format!("target ≤ {TARGET_MS} ms: ABOVE TARGET")
    };
    println!(
        "{name:<22} {best_cpu:7.2} ms/batch per CPU (wall clock {best_wall:6.2} ms)  {verdict}; \
         {allocations:.2} allocations/batch{note}"
    );
}

fn bench_seeding(batch: &Array2<f64>) {
    let pristine = match StreamingKMeans::new(streaming_params(), FEATURES) {
        Ok(model) => model,
        Err(error) => panic!("bench parameters: {error}"),
    };
    // Warm-up, untimed.
    black_box(pristine.clone().update(batch.view()));
    let (mut best_wall, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    let (mut allocations, mut batches) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        // Fresh models are cloned outside the timed part (enough for about half a second);
        // each is dropped inside it, after its first batch.
        let fresh: Vec<StreamingKMeans> =
            (0..SEEDINGS_PER_ROUND).map(|_| pristine.clone()).collect();
        let count = fresh.len() as f64;
        let (wall, cpu, allocated) = timed(|| {
            for mut model in fresh {
                black_box(model.update(black_box(batch.view())));
            }
        });
        best_wall = best_wall.min(wall * 1.0e3 / count);
        best_cpu = best_cpu.min(cpu * 1.0e3 / count);
        allocations += allocated;
        batches += SEEDINGS_PER_ROUND as u64;
    }
    report_batches(
        "first (seeding) batch",
        best_wall,
        best_cpu,
        allocations as f64 / batches as f64,
        " (a fresh model sizes its reusable buffers)",
    );
}

fn bench_steady(first: &Array2<f64>, batches: &[(Array2<f64>, Vec<usize>)]) {
    let mut model = match StreamingKMeans::new(streaming_params(), FEATURES) {
        Ok(model) => model,
        Err(error) => panic!("bench parameters: {error}"),
    };
    model.update(first.view());
    // Warm-up, untimed.
    for (batch, _) in batches {
        model.update(batch.view());
    }
    let (mut best_wall, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    let (mut allocations, mut done) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        let mut count = 0u64;
        let (wall, cpu, allocated) = timed(|| {
            let start = Instant::now();
            while start.elapsed() < MIN_ROUND {
                for (batch, _) in batches {
                    black_box(model.update(black_box(batch.view())));
                }
                count += batches.len() as u64;
            }
        });
        best_wall = best_wall.min(wall * 1.0e3 / count as f64);
        best_cpu = best_cpu.min(cpu * 1.0e3 / count as f64);
        allocations += allocated;
        done += count;
    }
    report_batches(
        "steady-state batch",
        best_wall,
        best_cpu,
        allocations as f64 / done as f64,
        "",
    );
    // The bench clusters for real: agreement of the last batch with the generating classes.
    let (batch, classes) = &batches[batches.len() - 1];
    let ids: Vec<u32> = model
        .update(batch.view())
        .iter()
        .map(|a| a.map_or(u32::MAX, |a| a.id))
        .collect();
    println!(
        "{:<22} ARI vs the generating classes {:.4}, {} live clusters, ids {:?}",
        "",
        adjusted_rand_index(classes, &ids),
        model.ids().len(),
        model.ids()
    );
}

fn bench_online(fleet: &Fleet, rng: &mut XorShift) {
    let readings: Vec<[f64; FEATURES]> = (0..READINGS)
        .map(|_| {
            let class = rng.below(K);
            fleet.point(rng, class)
        })
        .collect();
    let mut model = match OnlineKMeans::new(KMeansParams::online_default(K), FEATURES) {
        Ok(model) => model,
        Err(error) => panic!("bench parameters: {error}"),
    };
    // Warm-up (seeding) untimed.
    for x in &readings {
        black_box(model.predict_learn(x));
    }
    let (mut best_wall, mut best_cpu) = (0.0f64, 0.0f64);
    let (mut allocations, mut updates) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let allocations_before = support::allocations();
        let mut done = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..16 {
                for x in &readings {
                    black_box(model.predict_learn(black_box(x)));
                }
            }
            done += 16 * READINGS as u64;
        }
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = match (cpu_start, thread_cpu_ns()) {
            (Some(begin), Some(end)) if end > begin => (end - begin) as f64 * 1.0e-9,
            _ => seconds,
        };
        allocations += support::allocations() - allocations_before;
        updates += done;
        best_wall = best_wall.max(done as f64 / seconds / 1.0e6);
        best_cpu = best_cpu.max(done as f64 / cpu_seconds / 1.0e6);
    }
    println!(
        "{:<22} {best_cpu:7.2} M updates/s per CPU-second ({:5.1} ns/update; wall clock \
         {best_wall:6.2} M/s)  no target; {:.4} allocations/update; mean distance {:.3}",
        "online predict_learn",
        1.0e3 / best_cpu,
        allocations as f64 / updates as f64,
        model.mean_distance().unwrap_or(f64::NAN)
    );
}

fn main() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let fleet = Fleet::new(&mut rng);
    let (first, _) = fleet.batch(&mut rng, PROFILES);
    let batches: Vec<(Array2<f64>, Vec<usize>)> = (0..BATCHES)
        .map(|_| fleet.batch(&mut rng, PROFILES))
        .collect();
    println!(
        "StreamingKMeans::update, {PROFILES} profiles × {FEATURES} features, k = {K}, one thread"
    );
    bench_seeding(&first);
    bench_steady(&first, &batches);
    println!("OnlineKMeans, {FEATURES} features, k = {K}, one reading per update, one thread");
    bench_online(&fleet, &mut rng);
}
