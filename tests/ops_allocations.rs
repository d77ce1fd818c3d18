//! The operators' hot paths allocate nothing: expression evaluation always, window pushes and
//! de-duplication once warm; neither does a k-means pipeline step (buffering its warm-up, then
//! assigning, learning and rendering the output). Counted with a global allocator, which is why
//! this is its own test binary (the library's unit-test binary may define its own global
//! allocator).
//!
//! Also holds the expression micro-benchmark:
//!
//!     cargo test --release --test ops_allocations -- --ignored --nocapture

// Tests may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use edgeflow::ops::dedupe::DedupeSpec;
use edgeflow::ops::expr::{Env, Expr};
use edgeflow::ops::window::{AggFn, AggSpec, WindowSpec};
use edgeflow::pipeline::{KeyState, Pipeline, Scratch};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches a const-initialised
// thread-local without destructor, never the heap.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while running `f`.
fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const FIELDS: &[&str] = &["temp", "humidity"];

fn parse(src: &str) -> Expr {
    match Expr::parse(src, FIELDS) {
        Ok(expr) => expr,
        Err(error) => panic!("{src:?}: {error}"),
    }
}

#[test]
fn expression_evaluation_does_not_allocate() {
    let sources = [
        "temp > -40 && temp < 125",
        "temp - (100 - humidity) / 5",
        "key != \"s7\" && time % 60000 == 0",
        "starts_with(key, 'hall-') || ends_with(key, \"-x\") || contains(key, \"s\")",
        "if(temp > 0, sqrt(temp), -abs(temp)) + clamp(humidity, 0, 100) ^ 2",
        "min(ln(temp), log10(humidity)) + max(exp(1), floor(temp) + ceil(humidity) + round(0.5))",
        "!(temp == humidity) != (pow(temp, 2) >= 4)",
    ];
    let exprs: Vec<Expr> = sources.iter().map(|src| parse(src)).collect();
    let values = [21.5, 60.0];
    let keys = ["hall-s1", "s7"];
    let n = allocations_during(|| {
        for i in 0..1_000_i64 {
            let env = Env {
                values: &values,
                time: i * 30_000,
                key: keys[(i % 2) as usize],
            };
            for expr in &exprs {
                black_box(expr.eval_bool(black_box(&env)));
                black_box(expr.eval_number(black_box(&env)));
            }
        }
    });
    assert_eq!(n, 0, "allocations in 14,000 evaluations");
}

#[test]
fn warm_window_push_does_not_allocate() {
    let aggs = [
        AggFn::Mean,
        AggFn::Min,
        AggFn::Max,
        AggFn::Sum,
        AggFn::Count,
        AggFn::Std,
        AggFn::First,
        AggFn::Last,
        AggFn::Rate,
    ]
    .into_iter()
    .map(|func| AggSpec { input: 0, func })
    .collect();
    let spec = match WindowSpec::new(60_000, 10_000, 5_000, aggs) {
        Ok(spec) => spec,
        Err(error) => panic!("{error}"),
    };
    let mut state = spec.new_state();
    let mut emitted = 0_u64;
    let mut step = |state: &mut _, i: i64| {
        // Mostly in order, every fifth reading 3 s late (inside the lateness).
        let time = if i % 5 == 0 {
            i * 1_000 - 3_000
        } else {
            i * 1_000
        };
        let pushed = spec.push(state, time, &[(i % 97) as f64], |_, _, aggregates| {
            black_box(aggregates);
            emitted += 1;
        });
        assert!(pushed.is_ok());
    };
    for i in 0..200 {
        step(&mut state, i);
    }
    let n = allocations_during(|| {
        for i in 200..10_200 {
            step(&mut state, i);
        }
    });
    assert_eq!(n, 0, "allocations in 10,000 warm pushes");
    let flushed = allocations_during(|| {
        spec.advance_to(&mut state, i64::MAX, |_, _, aggregates| {
            black_box(aggregates);
        });
    });
    assert_eq!(flushed, 0, "allocations in a flush");
    assert!(emitted > 1_000, "windows were emitted ({emitted})");
}

#[test]
fn warm_dedupe_does_not_allocate() {
    let spec = DedupeSpec::default();
    let mut state = spec.new_state();
    for time in 0..spec.capacity() as i64 {
        spec.seen_or_insert(&mut state, time);
    }
    let n = allocations_during(|| {
        for time in 0..10_000_i64 {
            black_box(spec.seen_or_insert(&mut state, time));
            black_box(spec.seen_or_insert(&mut state, time));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn kmeans_step_does_not_allocate_but_to_seed() {
    let text = "[[pipelines]]\nname = \"modes\"\ntopics = [\"m/+\"]\nfields = { a = \"/a\", b = \"/b\" }\n[pipelines.model]\nkind = \"kmeans\"\nfeatures = [\"a\", \"b\"]\nk = 3\n";
    let config = match edgeflow::config::parse_str(std::path::Path::new("k.toml"), text) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let pipeline = match Pipeline::new(0, &config.pipelines[0]) {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("{error}"),
    };
    // Three blobs, visited in turn.
    let point = |i: i64| {
        let c = (i % 3) as f64 * 10.0;
        [c + (i % 7) as f64 * 0.1, -c + (i % 5) as f64 * 0.1]
    };
    let mut scratch = Scratch::default();
    let mut step = |state: &mut KeyState, i: i64| {
        pipeline.step(state, "k1", i, &point(i), &mut scratch);
        black_box(&scratch.payload);
    };
    // Grow the output buffers on a throwaway key, past its warm-up.
    let mut other = pipeline.new_state();
    for i in 0..100 {
        step(&mut other, i);
    }
    let mut state = pipeline.new_state();
    let warm_up = 8 * 3;
    let buffering = allocations_during(|| {
        for i in 0..warm_up - 1 {
            step(&mut state, i);
        }
    });
    assert_eq!(buffering, 0, "allocations while buffering the warm-up");
    // The reading that fills the buffer seeds the clusters: its scratch is allocated once.
    step(&mut state, warm_up - 1);
    let n = allocations_during(|| {
        for i in warm_up..10_000 {
            step(&mut state, i);
        }
    });
    assert_eq!(n, 0, "allocations in 10,000 steps after seeding");
    let output: serde_json::Value = match serde_json::from_slice(&scratch.payload) {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    assert!(output["cluster"].is_u64(), "{output}");
}
