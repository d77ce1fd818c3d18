//! Throughput of the item-item recommender on one core: per event, `UserHistory::record` then
//! `ItemSimilarity::apply` (what a user's `KeyActor` and the `Recommender` actor do between
//! them), the time of one top-10 `recommend` query, and the memory per tracked item.
//!
//!     cargo bench --bench recommend
//!
//! Two populations, both with 50,000 users, histories of 20 items and the default budget
//! (10,000 items, 100 neighbours per item): a catalogue of 10,000 items that fits the budget,
//! and one of 100,000 items that does not (items are forgotten all the time). Item popularity
//! is Zipf-like (P(rank k) ∝ 1/k), users are uniform, weights are 1, 2 or 3. Events are generated
//! before timing; the model is warmed up with 2 million events (every history full, the
//! model at its budget) before the three timed rounds of at least one second; the best round
//! is reported. A counting global allocator reports allocations per event and per query. The
//! rate per CPU-second (this thread's CPU time from `/proc/thread-self/schedstat`) is the
//! headline because it is not diluted when other processes share the cores; the wall-clock
//! rate is printed next to it.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use edgeflow::model::{ItemSimilarity, RecommendParams, ScoredItem, UserHistory};
use support::{allocations, thread_cpu_ns, CountingAllocator, XorShift};

const USERS: usize = 50_000;
const EVENTS: usize = 1 << 22;
const WARM_UP_EVENTS: usize = 2_000_000;
const QUERIES: usize = 4096;
const MIN_DURATION: Duration = Duration::from_secs(1);
/// Timed rounds; the best is reported.
const ROUNDS: usize = 3;
/// Operations between two clock reads.
const BATCH: usize = 1 << 16;
/// Events per CPU-second the recommender must sustain on one core.
const TARGET_EVENTS_PER_SECOND: f64 = 200_000.0;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[derive(Clone, Copy)]
struct Event {
    user: u32,
    item: u32,
    weight: f32,
}

/// `EVENTS` events over `items` items of Zipf-like popularity (P(rank k) ∝ 1/k; ranks shuffled
/// over ids so popularity is not ordered by name) and `USERS` uniform users.
fn events(items: usize, seed: u64) -> Vec<Event> {
    let mut rng = XorShift(seed);
    let mut cumulative = Vec::with_capacity(items);
    let mut sum = 0.0;
    for rank in 1..=items {
        sum += 1.0 / rank as f64;
        cumulative.push(sum);
    }
    let mut id_of_rank: Vec<u32> = (0..items as u32).collect();
    for k in (1..items).rev() {
        id_of_rank.swap(k, rng.below(k + 1));
    }
    (0..EVENTS)
        .map(|_| {
            let draw = rng.next_f64() * sum;
            let rank = cumulative.partition_point(|&c| c <= draw).min(items - 1);
            Event {
                user: rng.below(USERS) as u32,
                item: id_of_rank[rank],
                weight: (1 + rng.below(3)) as f32,
            }
        })
        .collect()
}

struct Measurement {
    /// Best operations per CPU-second.
    cpu_rate: f64,
    /// Best operations per wall-clock second.
    wall_rate: f64,
    allocations_per_operation: f64,
    /// Operations in the timed rounds.
    operations: usize,
}

/// Runs `step(i)` for i = 0, 1, 2, … for [`ROUNDS`] rounds of at least [`MIN_DURATION`]; `i`
/// continues across rounds (the model keeps evolving).
fn measure(mut step: impl FnMut(usize)) -> Measurement {
    let allocations_before = allocations();
    let (mut next, mut operations) = (0usize, 0usize);
    let (mut wall_rate, mut cpu_rate) = (0.0f64, 0.0f64);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let mut done = 0usize;
        while start.elapsed() < MIN_DURATION {
            for _ in 0..BATCH {
                step(next);
                next += 1;
            }
            done += BATCH;
        }
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = match (cpu_start, thread_cpu_ns()) {
            (Some(begin), Some(end)) if end > begin => (end - begin) as f64 * 1.0e-9,
            _ => seconds,
        };
        operations += done;
        wall_rate = wall_rate.max(done as f64 / seconds);
        cpu_rate = cpu_rate.max(done as f64 / cpu_seconds);
    }
    // The clock and /proc reads between rounds allocate a little; per operation that rounds
    // to 0 unless the code under test allocates.
    let allocations = allocations() - allocations_before;
    Measurement {
        cpu_rate,
        wall_rate,
        allocations_per_operation: allocations as f64 / operations as f64,
        operations,
    }
}

fn run(label: &str, items: usize, seed: u64) {
    let params = RecommendParams::default();
    let names: Vec<CompactString> = (0..items)
        .map(|id| CompactString::from(format!("item-{id:06}")))
        .collect();
    let events = events(items, seed);
    let mut users: Vec<UserHistory> = (0..USERS)
        .map(|_| match UserHistory::new(params.history) {
            Ok(history) => history,
            Err(error) => panic!("bench parameters: {error}"),
        })
        .collect();
    let mut model = match ItemSimilarity::new(params) {
        Ok(model) => model,
        Err(error) => panic!("bench parameters: {error}"),
    };
    let apply = |users: &mut [UserHistory], model: &mut ItemSimilarity, i: usize| {
        let event = events[i % EVENTS];
        let user = &mut users[event.user as usize];
        if let Some(change) = user.record(&names[event.item as usize], f64::from(event.weight)) {
            model.apply(black_box(&change));
        }
    };
    for i in 0..WARM_UP_EVENTS {
        apply(&mut users, &mut model, i);
    }
    let events_measurement = measure(|i| apply(&mut users, &mut model, WARM_UP_EVENTS + i));

    let mut rng = XorShift(seed ^ 0xDEAD_BEEF);
    let queried: Vec<usize> = (0..QUERIES).map(|_| rng.below(USERS)).collect();
    let mut out: Vec<ScoredItem> = Vec::with_capacity(params.top_n);
    let mut listed = 0usize;
    let query_measurement = measure(|i| {
        let user = &users[queried[i % QUERIES]];
        model.recommend(user.items(), params.top_n, &mut out);
        listed += out.len();
        black_box(&out);
    });
    let mut similar_listed = 0usize;
    let similar_measurement = measure(|i| {
        let name = &names[events[i % EVENTS].item as usize];
        model.similar_items(name, params.top_n, &mut out);
        similar_listed += out.len();
        black_box(&out);
    });

    let history_len: usize = users.iter().map(UserHistory::len).sum();
    let bytes = model.memory_bytes();
    let verdict = if events_measurement.cpu_rate >= TARGET_EVENTS_PER_SECOND {
        "target ≥ 200,000 events/s: ok"
    } else {
        "target ≥ 200,000 events/s: BELOW TARGET"
    };
    println!("{label}");
    println!(
        "  record + apply     {:>9.0} events/s per CPU-second ({:5.2} µs/event; wall clock {:.0}/s)  {verdict}; {:.4} allocations/event",
        events_measurement.cpu_rate,
        1.0e6 / events_measurement.cpu_rate,
        events_measurement.wall_rate,
        events_measurement.allocations_per_operation
    );
    println!(
        "  recommend top-{}   {:>9.2} µs/query per CPU-second (wall clock {:.2} µs; {:.1} items/list)  {:.4} allocations/query",
        params.top_n,
        1.0e6 / query_measurement.cpu_rate,
        1.0e6 / query_measurement.wall_rate,
        mean(listed, &query_measurement),
        query_measurement.allocations_per_operation
    );
    println!(
        "  similar_items top-{} {:>7.2} µs/query per CPU-second (wall clock {:.2} µs; {:.1} items/list)  {:.4} allocations/query",
        params.top_n,
        1.0e6 / similar_measurement.cpu_rate,
        1.0e6 / similar_measurement.wall_rate,
        mean(similar_listed, &similar_measurement),
        similar_measurement.allocations_per_operation
    );
    println!(
        "  memory             {} items tracked (max_items {}), {} bytes = {:.0} bytes/item (bound {} bytes/item, {} bytes); mean history {:.1} items",
        model.len(),
        params.max_items,
        bytes,
        bytes as f64 / model.len().max(1) as f64,
        params.bytes_per_item_bound(),
        params.memory_bound(),
        history_len as f64 / USERS as f64
    );
}

/// Mean list length: `listed` items over the queries of the timed rounds.
fn mean(listed: usize, measurement: &Measurement) -> f64 {
    listed as f64 / measurement.operations.max(1) as f64
}

fn main() {
    println!(
        "{USERS} users, histories of 20, default budget (10,000 items × 100 neighbours), one thread"
    );
    run(
        "catalogue of 10,000 items (Zipf 1/k)",
        10_000,
        0x9E37_79B9_7F4A_7C15,
    );
    run(
        "catalogue of 100,000 items (Zipf 1/k), forgetting",
        100_000,
        0xD1B5_4A32_D192_ED03,
    );
}
