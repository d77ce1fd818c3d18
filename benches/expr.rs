//! Filter and map expressions: the cost of one evaluation (moved here from the allocation
//! tests, where it was an ignored "test" that asserted nothing).

use std::hint::black_box;
use std::time::Instant;

use edgeflow::ops::expr::{Env, Expr};

const FIELDS: &[&str] = &["temp", "humidity"];

fn parse(src: &str) -> Expr {
    match Expr::parse(src, FIELDS) {
        Ok(expr) => expr,
        Err(error) => panic!("{src:?}: {error}"),
    }
}

/// This thread's CPU time in ns (`/proc/thread-self/schedstat`), so the figure is not diluted
/// when other processes share the cores; `None` where that file does not exist.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Nanoseconds per evaluation of typical expressions (best of several rounds, by this thread's
/// CPU time and by wall clock). `cargo bench --bench expr`.
fn main() {
    for src in [
        "temp > -40 && temp < 125",
        "temp - (100 - humidity) / 5",
        "key != \"s7\" && time % 60000 == 0",
    ] {
        let expr = parse(src);
        let values = [21.5, 60.0];
        let (mut best_cpu, mut best_wall) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..15 {
            let iterations = 2_000_000_i64;
            let cpu = thread_cpu_ns();
            let start = Instant::now();
            let mut hits = 0_u64;
            for i in 0..iterations {
                let env = Env {
                    values: &values,
                    time: i,
                    key: "s1",
                };
                hits += u64::from(expr.eval_bool(black_box(&env)));
            }
            black_box(hits);
            let wall = start.elapsed().as_nanos() as f64;
            best_wall = best_wall.min(wall / iterations as f64);
            if let (Some(before), Some(after)) = (cpu, thread_cpu_ns()) {
                best_cpu = best_cpu.min((after - before) as f64 / iterations as f64);
            }
        }
        println!("{best_cpu:6.2} ns/eval CPU, {best_wall:6.2} ns/eval wall  {src}");
    }
}
