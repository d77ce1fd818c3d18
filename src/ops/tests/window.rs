use std::collections::BTreeSet;

use super::Rng;
use crate::ops::window::{
    AggFn, AggSpec, Late, WindowError, WindowSpec, WindowState, MAX_AGGREGATES,
};

/// One emitted window: the push (arrival index) that emitted it, start, end, aggregates.
#[derive(Debug, Clone, PartialEq)]
struct Emission {
    at: usize,
    start: i64,
    end: i64,
    values: Vec<f64>,
}

fn spec(size_ms: i64, slide_ms: i64, lateness_ms: i64, funcs: &[(usize, AggFn)]) -> WindowSpec {
    let aggs = funcs
        .iter()
        .map(|&(input, func)| AggSpec { input, func })
        .collect();
    match WindowSpec::new(size_ms, slide_ms, lateness_ms, aggs) {
        Ok(spec) => spec,
        Err(error) => panic!("{error}"),
    }
}

/// Pushes `(time, value)` pairs and returns the emissions (`at` = index of the push).
fn run(spec: &WindowSpec, st: &mut WindowState, readings: &[(i64, f64)]) -> Vec<Emission> {
    let mut out = Vec::new();
    for (at, &(time, value)) in readings.iter().enumerate() {
        let result = spec.push(st, time, &[value], |start, end, values| {
            out.push(Emission {
                at,
                start,
                end,
                values: values.to_vec(),
            });
        });
        assert!(result.is_ok(), "push {at} at {time}: {result:?}");
    }
    out
}

fn flush(spec: &WindowSpec, st: &mut WindowState, watermark: i64) -> Vec<(i64, i64, Vec<f64>)> {
    let mut out = Vec::new();
    spec.advance_to(st, watermark, |start, end, values| {
        out.push((start, end, values.to_vec()));
    });
    out
}

#[test]
fn spec_validation_rejects_each_bad_parameter() {
    let one = || {
        vec![AggSpec {
            input: 0,
            func: AggFn::Mean,
        }]
    };
    let cases: Vec<(i64, i64, i64, Vec<AggSpec>, WindowError)> = vec![
        (0, 1, 0, one(), WindowError::SizeNotPositive { size_ms: 0 }),
        (
            -5,
            1,
            0,
            one(),
            WindowError::SizeNotPositive { size_ms: -5 },
        ),
        (
            10,
            0,
            0,
            one(),
            WindowError::SlideOutOfRange {
                size_ms: 10,
                slide_ms: 0,
            },
        ),
        (
            10,
            20,
            0,
            one(),
            WindowError::SlideOutOfRange {
                size_ms: 10,
                slide_ms: 20,
            },
        ),
        (
            10,
            3,
            0,
            one(),
            WindowError::SizeNotMultipleOfSlide {
                size_ms: 10,
                slide_ms: 3,
            },
        ),
        (
            1001,
            1,
            0,
            one(),
            WindowError::TooManyWindows { windows: 1001 },
        ),
        (
            10,
            5,
            -1,
            one(),
            WindowError::NegativeLateness { lateness_ms: -1 },
        ),
        (
            10,
            5,
            5001,
            one(),
            WindowError::LatenessTooLong {
                lateness_ms: 5001,
                slide_ms: 5,
            },
        ),
        (10, 5, 0, vec![], WindowError::NoAggregates),
        (
            10,
            5,
            0,
            vec![
                AggSpec {
                    input: 0,
                    func: AggFn::Sum
                };
                MAX_AGGREGATES + 1
            ],
            WindowError::TooManyAggregates {
                count: MAX_AGGREGATES + 1,
            },
        ),
    ];
    for (size, slide, lateness, aggs, expected) in cases {
        assert_eq!(WindowSpec::new(size, slide, lateness, aggs), Err(expected));
    }
    assert!(
        WindowSpec::new(1000, 1, 0, one()).is_ok(),
        "1000 windows per reading is allowed"
    );
    assert!(
        WindowSpec::new(10, 5, 5000, one()).is_ok(),
        "1000 slides of lateness is allowed"
    );
    let message = WindowError::SizeNotMultipleOfSlide {
        size_ms: 10,
        slide_ms: 3,
    }
    .to_string();
    assert!(message.contains("multiple of slide_ms 3"), "{message}");
}

#[test]
fn tumbling_reading_at_window_end_goes_to_next_window() {
    let spec = spec(10_000, 10_000, 0, &[(0, AggFn::Count), (0, AggFn::Sum)]);
    let mut st = spec.new_state();
    let emitted = run(&spec, &mut st, &[(0, 1.0), (9_999, 2.0), (10_000, 4.0)]);
    assert_eq!(
        emitted,
        [Emission {
            at: 2,
            start: 0,
            end: 10_000,
            values: vec![2.0, 3.0]
        }]
    );
    assert_eq!(
        flush(&spec, &mut st, 20_000),
        [(10_000, 20_000, vec![1.0, 4.0])]
    );
}

#[test]
fn windows_closed_by_a_reading_are_emitted_before_it_is_added() {
    let spec = spec(10, 10, 0, &[(0, AggFn::Last), (0, AggFn::Count)]);
    let mut st = spec.new_state();
    // The reading at 25 closes [0,10) and [10,20); neither includes it, and it opens [20,30).
    let emitted = run(&spec, &mut st, &[(1, 1.0), (11, 2.0), (25, 3.0)]);
    assert_eq!(
        emitted,
        [
            Emission {
                at: 1,
                start: 0,
                end: 10,
                values: vec![1.0, 1.0]
            },
            Emission {
                at: 2,
                start: 10,
                end: 20,
                values: vec![2.0, 1.0]
            },
        ]
    );
    assert_eq!(spec.open_windows(&st), 1);
}

#[test]
fn negative_times_use_floor_division() {
    let spec = spec(10, 10, 0, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    let emitted = run(
        &spec,
        &mut st,
        &[(-15, 0.0), (-10, 0.0), (-1, 0.0), (0, 0.0)],
    );
    let windows: Vec<_> = emitted
        .iter()
        .map(|e| (e.start, e.end, e.values[0]))
        .collect();
    assert_eq!(windows, [(-20, -10, 1.0), (-10, 0, 2.0)]);
    assert_eq!(flush(&spec, &mut st, 10), [(0, 10, vec![1.0])]);
}

#[test]
fn sliding_reading_counts_in_exactly_size_over_slide_windows() {
    let (size, slide) = (60, 10);
    let spec = spec(size, slide, 0, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    let mut rng = Rng::new(11);
    let mut time = -500;
    let mut readings = Vec::new();
    for _ in 0..2_000 {
        time += rng.range_i64(0, 25);
        readings.push((time, 1.0));
    }
    let mut windows: Vec<(i64, i64, f64)> = run(&spec, &mut st, &readings)
        .into_iter()
        .map(|e| (e.start, e.end, e.values[0]))
        .collect();
    windows.extend(
        flush(&spec, &mut st, i64::MAX)
            .into_iter()
            .map(|(start, end, values)| (start, end, values[0])),
    );
    let total: f64 = windows.iter().map(|w| w.2).sum();
    assert_eq!(total, (readings.len() as i64 * size / slide) as f64);
    for pair in windows.windows(2) {
        assert!(pair[0].1 < pair[1].1, "emitted in order of end time");
    }
    for &(start, end, count) in &windows {
        assert_eq!(end - start, size);
        assert_eq!(start.rem_euclid(slide), 0, "aligned to the epoch");
        let expected = readings
            .iter()
            .filter(|r| start <= r.0 && r.0 < end)
            .count();
        assert_eq!(count, expected as f64, "[{start}, {end})");
    }
    assert_eq!(spec.open_windows(&st), 0);
}

#[test]
fn reading_within_lateness_joins_its_open_window() {
    let spec = spec(10, 10, 5, &[(0, AggFn::Count), (0, AggFn::Sum)]);
    let mut st = spec.new_state();
    // 12 moves the watermark to 7: [0,10) stays open, so 8 still counts in it.
    let emitted = run(
        &spec,
        &mut st,
        &[(0, 1.0), (12, 10.0), (8, 2.0), (16, 20.0)],
    );
    assert_eq!(
        emitted,
        [Emission {
            at: 3,
            start: 0,
            end: 10,
            values: vec![2.0, 3.0]
        }]
    );
}

#[test]
fn reading_beyond_lateness_is_late_and_changes_nothing() {
    let spec = spec(10, 10, 5, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    run(&spec, &mut st, &[(0, 1.0), (16, 1.0)]);
    assert_eq!(st.watermark_ms(), 11);
    let before = st.clone();
    let mut emitted = 0;
    let result = spec.push(&mut st, 9, &[1.0], |_, _, _| emitted += 1);
    assert_eq!(
        result,
        Err(Late {
            time_ms: 9,
            watermark_ms: 11
        })
    );
    assert_eq!(emitted, 0);
    assert_eq!(st, before);
    // 10 is in [10,20), still open.
    assert!(spec.push(&mut st, 10, &[1.0], |_, _, _| {}).is_ok());
}

#[test]
fn partly_late_reading_counts_only_in_its_open_windows() {
    // Windows of 20 sliding by 10; a reading at 15 belongs to [0,20) and [10,30).
    let spec = spec(20, 10, 0, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    let emitted = run(&spec, &mut st, &[(5, 1.0), (21, 1.0), (15, 1.0)]);
    // 21 closed [-10,10) and [0,20); the late 15 only joins [10,30).
    let windows: Vec<_> = emitted.iter().map(|e| (e.start, e.values[0])).collect();
    assert_eq!(windows, [(-10, 1.0), (0, 1.0)]);
    let rest: Vec<_> = flush(&spec, &mut st, i64::MAX)
        .into_iter()
        .map(|(start, _, values)| (start, values[0]))
        .collect();
    assert_eq!(rest, [(10, 2.0), (20, 1.0)]);
}

#[test]
fn out_of_order_readings_are_aggregated_by_event_time() {
    let spec = spec(
        100,
        100,
        100,
        &[
            (0, AggFn::First),
            (0, AggFn::Last),
            (0, AggFn::Rate),
            (0, AggFn::Min),
        ],
    );
    let mut st = spec.new_state();
    run(
        &spec,
        &mut st,
        &[(50, 5.0), (10, 1.0), (90, 9.0), (70, 7.0)],
    );
    assert_eq!(
        flush(&spec, &mut st, 100),
        [(0, 100, vec![1.0, 9.0, (9.0 - 1.0) / 0.080, 1.0])]
    );
}

#[test]
fn rate_is_zero_for_one_reading_or_equal_times() {
    let spec = spec(
        1000,
        1000,
        0,
        &[(0, AggFn::Rate), (0, AggFn::First), (0, AggFn::Last)],
    );
    let mut st = spec.new_state();
    let emitted = run(&spec, &mut st, &[(10, 3.0), (1010, 4.0), (1010, 8.0)]);
    assert_eq!(
        emitted,
        [Emission {
            at: 1,
            start: 0,
            end: 1000,
            values: vec![0.0, 3.0, 3.0]
        }]
    );
    // Equal times: rate 0; first keeps the earlier arrival, last the later.
    assert_eq!(
        flush(&spec, &mut st, i64::MAX),
        [(1000, 2000, vec![0.0, 4.0, 8.0])]
    );
}

#[test]
fn empty_windows_are_never_emitted() {
    let tumbling = spec(10, 10, 0, &[(0, AggFn::Count)]);
    let mut st = tumbling.new_state();
    let emitted = run(&tumbling, &mut st, &[(5, 1.0), (95, 1.0)]);
    let starts: Vec<_> = emitted.iter().map(|e| e.start).collect();
    assert_eq!(starts, [0], "no window for the gap 10..90");

    let sliding = spec(20, 10, 0, &[(0, AggFn::Count)]);
    let mut st = sliding.new_state();
    let emitted = run(&sliding, &mut st, &[(5, 1.0), (105, 1.0)]);
    let starts: Vec<_> = emitted.iter().map(|e| e.start).collect();
    assert_eq!(starts, [-10, 0]);
    let rest: Vec<_> = flush(&sliding, &mut st, i64::MAX)
        .iter()
        .map(|w| w.0)
        .collect();
    assert_eq!(rest, [90, 100]);

    // A jump of a century emits the few windows with data, not every window in between.
    let mut st = tumbling.new_state();
    run(&tumbling, &mut st, &[(5, 1.0), (3_155_760_000_000, 1.0)]);
    assert_eq!(tumbling.open_windows(&st), 1);
}

#[test]
fn non_finite_values_are_ignored_by_the_aggregate() {
    let spec = spec(
        10,
        10,
        0,
        &[
            (0, AggFn::Count),
            (0, AggFn::Mean),
            (0, AggFn::Sum),
            (0, AggFn::Min),
            (3, AggFn::Max),
        ],
    );
    let mut st = spec.new_state();
    let readings = [
        (0, f64::NAN),
        (1, 2.0),
        (2, f64::INFINITY),
        (3, 4.0),
        (10, f64::NAN),
    ];
    let mut windows: Vec<_> = run(&spec, &mut st, &readings)
        .into_iter()
        .map(|e| (e.start, e.end, e.values))
        .collect();
    windows.extend(flush(&spec, &mut st, 20));
    assert_eq!(windows.len(), 2);
    let (start, _, values) = &windows[0];
    assert_eq!((*start, &values[..4]), (0, &[2.0, 3.0, 6.0, 2.0][..]));
    assert!(values[4].is_nan(), "input 3 does not exist");
    // A window whose readings had no finite value is still emitted: count 0, mean NaN.
    let (start, _, values) = &windows[1];
    assert_eq!(*start, 10);
    assert_eq!((values[0], values[2]), (0.0, 0.0));
    assert!(values[1].is_nan() && values[3].is_nan() && values[4].is_nan());
}

#[test]
fn advance_to_closes_windows_up_to_the_watermark() {
    let spec = spec(10, 10, 100, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    assert!(run(&spec, &mut st, &[(5, 1.0), (15, 1.0), (25, 1.0)]).is_empty());
    assert_eq!(spec.open_windows(&st), 3);
    assert_eq!(
        flush(&spec, &mut st, 20),
        [(0, 10, vec![1.0]), (10, 20, vec![1.0])]
    );
    assert_eq!(spec.open_windows(&st), 1);
    assert_eq!(st.watermark_ms(), 20);
    assert!(
        spec.push(&mut st, 12, &[1.0], |_, _, _| {}).is_err(),
        "closed by advance_to"
    );
    assert!(spec.push(&mut st, 21, &[1.0], |_, _, _| {}).is_ok());
    assert!(
        flush(&spec, &mut st, 10).is_empty(),
        "the watermark never goes back"
    );
    assert_eq!(st.watermark_ms(), 20);
    assert_eq!(flush(&spec, &mut st, 30), [(20, 30, vec![2.0])]);
}

#[test]
fn open_windows_counts_windows_holding_data() {
    let spec = spec(30, 10, 0, &[(0, AggFn::Count)]);
    let mut st = spec.new_state();
    assert_eq!(spec.open_windows(&st), 0);
    run(&spec, &mut st, &[(5, 1.0)]);
    assert_eq!(spec.open_windows(&st), 3);
    run(&spec, &mut st, &[(15, 1.0)]);
    // [-20,10) closed; [-10,20), [0,30), [10,40) open.
    assert_eq!(spec.open_windows(&st), 3);
    run(&spec, &mut st, &[(75, 1.0)]);
    // Only 75's windows are open: [50,80), [60,90), [70,100).
    assert_eq!(spec.open_windows(&st), 3);
    assert_eq!(st.pane_count(), 1);
}

/// A random stream: mostly advancing, some readings back in time (within and beyond the
/// lateness), some equal times, some gaps of several windows, values partly NaN.
fn random_stream(
    rng: &mut Rng,
    (size, slide, lateness): (i64, i64, i64),
    len: usize,
) -> Vec<(i64, [f64; 2])> {
    let mut time = rng.range_i64(-10_000, 10_000);
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let roll = rng.below(100);
        let t = if roll < 15 {
            time - rng.range_i64(0, lateness + size + slide)
        } else if roll < 20 {
            time
        } else if roll < 22 {
            time += slide * rng.range_i64(3, 12);
            time
        } else {
            time += rng.range_i64(0, slide);
            time
        };
        let value = 20.0 + 10.0 * (rng.unit() - 0.5) + (t as f64 / 1e4).sin();
        let second = if rng.below(10) == 0 {
            f64::NAN
        } else {
            rng.unit() * 1e3
        };
        out.push((t, [value, second]));
    }
    out
}

/// What a window should contain, worked out from the definitions alone: every reading's
/// lateness from the watermark before it, every window's closing push from the watermark
/// after each push, and its content as the accepted readings that arrived before that push.
fn reference(
    size: i64,
    slide: i64,
    lateness: i64,
    aggs: &[(usize, AggFn)],
    stream: &[(i64, [f64; 2])],
) -> (Vec<bool>, Vec<Emission>) {
    let (size, slide, lateness) = (i128::from(size), i128::from(slide), i128::from(lateness));
    let mut watermark = i128::from(i64::MIN);
    let mut late = Vec::new();
    let mut after = Vec::new();
    let mut candidates = BTreeSet::new();
    for &(t, _) in stream {
        let pane = i128::from(t).div_euclid(slide);
        let is_late = pane * slide + size <= watermark;
        if !is_late {
            watermark = watermark.max(i128::from(t) - lateness);
            for k in pane - size / slide + 1..=pane {
                candidates.insert(k);
            }
        }
        late.push(is_late);
        after.push(watermark);
    }
    let mut emissions = Vec::new();
    for k in candidates {
        let (start, end) = (k * slide, k * slide + size);
        let at = after.iter().position(|&w| w >= end).unwrap_or(stream.len());
        let content: Vec<(usize, i64, [f64; 2])> = stream[..at]
            .iter()
            .enumerate()
            .filter(|(j, r)| !late[*j] && start <= i128::from(r.0) && i128::from(r.0) < end)
            .map(|(j, r)| (j, r.0, r.1))
            .collect();
        if content.is_empty() {
            continue;
        }
        let values = aggs
            .iter()
            .map(|&(input, func)| brute_force(func, input, &content))
            .collect();
        emissions.push(Emission {
            at,
            start: start as i64,
            end: end as i64,
            values,
        });
    }
    emissions.sort_by_key(|e| (e.at, e.end));
    (late, emissions)
}

fn brute_force(func: AggFn, input: usize, content: &[(usize, i64, [f64; 2])]) -> f64 {
    let points: Vec<(usize, i64, f64)> = content
        .iter()
        .filter_map(|&(j, t, v)| {
            v.get(input)
                .copied()
                .filter(|x| x.is_finite())
                .map(|x| (j, t, x))
        })
        .collect();
    let n = points.len() as f64;
    let xs = points.iter().map(|p| p.2);
    let first = points.iter().min_by_key(|p| (p.1, p.0));
    let last = points.iter().max_by_key(|p| (p.1, p.0));
    if points.is_empty() {
        return match func {
            AggFn::Sum | AggFn::Count => 0.0,
            _ => f64::NAN,
        };
    }
    match func {
        AggFn::Mean => xs.sum::<f64>() / n,
        AggFn::Min => xs.fold(f64::INFINITY, f64::min),
        AggFn::Max => xs.fold(f64::NEG_INFINITY, f64::max),
        AggFn::Sum => xs.sum(),
        AggFn::Count => n,
        AggFn::Std => {
            let mean = xs.clone().sum::<f64>() / n;
            (xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
        }
        AggFn::First => first.map_or(f64::NAN, |p| p.2),
        AggFn::Last => last.map_or(f64::NAN, |p| p.2),
        AggFn::Rate => match (first, last) {
            (Some(a), Some(b)) if b.1 > a.1 => (b.2 - a.2) / ((b.1 - a.1) as f64 / 1000.0),
            _ => 0.0,
        },
    }
}

fn assert_close(actual: &[Emission], expected: &[Emission], context: &str) {
    assert_eq!(actual.len(), expected.len(), "{context}: number of windows");
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!((a.at, a.start, a.end), (e.at, e.start, e.end), "{context}");
        for (i, (x, y)) in a.values.iter().zip(&e.values).enumerate() {
            // 1e-9 relative, with magnitudes below 1 compared absolutely.
            let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * y.abs().max(1.0);
            assert!(
                ok,
                "{context}: window [{}, {}) aggregate {i}: {x} vs {y}",
                a.start, a.end
            );
        }
    }
}

const ALL_AGGS: &[(usize, AggFn)] = &[
    (0, AggFn::Mean),
    (0, AggFn::Min),
    (0, AggFn::Max),
    (0, AggFn::Sum),
    (0, AggFn::Count),
    (0, AggFn::Std),
    (0, AggFn::First),
    (0, AggFn::Last),
    (0, AggFn::Rate),
    (1, AggFn::Mean),
    (1, AggFn::Std),
    (1, AggFn::Count),
    (1, AggFn::First),
    // Past the end of the reading: always empty.
    (7, AggFn::Sum),
    (7, AggFn::Max),
];

const SHAPES: &[(i64, i64, i64)] = &[
    (1000, 1000, 0),
    (1000, 250, 300),
    (600, 200, 1000),
    (50, 10, 35),
    (7, 1, 3),
];

fn push_all(
    spec: &WindowSpec,
    st: &mut WindowState,
    stream: &[(i64, [f64; 2])],
    offset: usize,
    late: &mut Vec<bool>,
    out: &mut Vec<Emission>,
) {
    for (i, (time, values)) in stream.iter().enumerate() {
        let at = offset + i;
        let result = spec.push(st, *time, values, |start, end, values| {
            out.push(Emission {
                at,
                start,
                end,
                values: values.to_vec(),
            });
        });
        late.push(result.is_err());
    }
}

#[test]
fn every_aggregate_matches_brute_force_on_random_streams() {
    for (seed, &(size, slide, lateness)) in SHAPES.iter().enumerate() {
        let spec = spec(size, slide, lateness, ALL_AGGS);
        let mut rng = Rng::new(100 + seed as u64);
        let stream = random_stream(&mut rng, (size, slide, lateness), 3_000);
        let mut st = spec.new_state();
        let (mut late, mut emitted) = (Vec::new(), Vec::new());
        push_all(&spec, &mut st, &stream, 0, &mut late, &mut emitted);
        spec.advance_to(&mut st, i64::MAX, |start, end, values| {
            emitted.push(Emission {
                at: stream.len(),
                start,
                end,
                values: values.to_vec(),
            });
        });
        let (expected_late, expected) = reference(size, slide, lateness, ALL_AGGS, &stream);
        let context = format!("size {size} slide {slide} lateness {lateness}");
        assert_eq!(late, expected_late, "{context}: late readings");
        assert!(
            late.iter().any(|l| *l),
            "{context}: the stream has late readings"
        );
        assert!(expected.len() > 50, "{context}: {} windows", expected.len());
        assert_close(&emitted, &expected, &context);
    }
}

#[test]
fn restart_mid_window_gives_identical_emissions() {
    let (size, slide, lateness) = (1000, 250, 300);
    let spec = spec(size, slide, lateness, ALL_AGGS);
    let stream = random_stream(&mut Rng::new(5), (size, slide, lateness), 2_000);
    let mut st = spec.new_state();
    let (mut late, mut uninterrupted) = (Vec::new(), Vec::new());
    push_all(&spec, &mut st, &stream, 0, &mut late, &mut uninterrupted);

    for cut in [1, 333, 1_000, 1_999] {
        let mut st = spec.new_state();
        let (mut late_restarted, mut restarted) = (Vec::new(), Vec::new());
        push_all(
            &spec,
            &mut st,
            &stream[..cut],
            0,
            &mut late_restarted,
            &mut restarted,
        );
        assert!(spec.open_windows(&st) > 0, "cut {cut} is mid-window");
        let bytes = match postcard::to_stdvec(&st) {
            Ok(bytes) => bytes,
            Err(error) => panic!("{error}"),
        };
        let mut restored: WindowState = match postcard::from_bytes(&bytes) {
            Ok(state) => state,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(restored, st);
        push_all(
            &spec,
            &mut restored,
            &stream[cut..],
            cut,
            &mut late_restarted,
            &mut restarted,
        );
        assert_eq!(late_restarted, late, "cut {cut}");
        // Bit-identical, NaN included.
        let bits = |e: &[Emission]| -> Vec<(usize, i64, i64, Vec<u64>)> {
            e.iter()
                .map(|e| {
                    (
                        e.at,
                        e.start,
                        e.end,
                        e.values.iter().map(|v| v.to_bits()).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(bits(&restarted), bits(&uninterrupted), "cut {cut}");
    }
}

#[test]
fn state_stays_bounded() {
    for &(size, slide, lateness) in SHAPES {
        let spec = spec(size, slide, lateness, ALL_AGGS);
        let max_panes = (size / slide + (lateness + slide - 1) / slide) as usize;
        let stream = random_stream(&mut Rng::new(9), (size, slide, lateness), 5_000);
        let mut st = spec.new_state();
        let mut largest = 0;
        for (time, values) in &stream {
            let _ = spec.push(&mut st, *time, values, |_, _, _| {});
            assert!(
                st.pane_count() <= max_panes,
                "{} > {max_panes}",
                st.pane_count()
            );
            largest = largest.max(st.pane_count());
        }
        let bytes = postcard::to_stdvec(&st)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        // Per pane: its index and, per aggregate, a tag and at most four 8-byte fields.
        let bound = 32 + max_panes * (10 + ALL_AGGS.len() * 37);
        assert!(bytes <= bound, "{bytes} bytes > {bound}");
        assert!(
            largest * 2 >= max_panes,
            "the stream exercised the bound ({largest})"
        );
    }
}

#[test]
fn state_of_another_spec_is_dropped_not_misread() {
    let old = spec(10, 10, 0, &[(0, AggFn::Sum), (0, AggFn::Count)]);
    let new = spec(10, 10, 0, &[(0, AggFn::Max)]);
    let mut st = old.new_state();
    run(&old, &mut st, &[(1, 5.0), (12, 7.0)]);
    assert_eq!(
        new.open_windows(&st),
        0,
        "the other spec's windows are not this spec's"
    );
    let emitted = run(&new, &mut st, &[(13, 1.0), (25, 2.0)]);
    assert_eq!(
        emitted,
        [Emission {
            at: 1,
            start: 10,
            end: 20,
            values: vec![1.0]
        }]
    );
    assert!(
        new.push(&mut st, 5, &[1.0], |_, _, _| {}).is_err(),
        "the watermark is kept"
    );

    let mut adopted = WindowState::default();
    let emitted = run(&new, &mut adopted, &[(1, 3.0), (11, 4.0)]);
    assert_eq!(
        emitted,
        [Emission {
            at: 1,
            start: 0,
            end: 10,
            values: vec![3.0]
        }]
    );
}

#[test]
fn inconsistent_saved_state_is_refused_on_load() {
    #[derive(serde::Serialize)]
    struct Raw {
        layout: u64,
        watermark_ms: i64,
        panes: Vec<i64>,
        accs: Vec<()>,
    }
    let load = |panes: Vec<i64>| {
        let raw = Raw {
            layout: 1,
            watermark_ms: 0,
            panes,
            accs: Vec::new(),
        };
        let bytes = postcard::to_stdvec(&raw).unwrap_or_default();
        postcard::from_bytes::<WindowState>(&bytes).is_ok()
    };
    assert!(load(vec![]), "an empty state loads");
    assert!(!load(vec![3, 1]), "panes out of order");
    assert!(!load(vec![1, 2]), "panes without accumulators");
    assert!(postcard::from_bytes::<WindowState>(&[1, 2, 3]).is_err());
}

#[test]
fn extreme_times_never_panic() {
    let mut rng = Rng::new(3);
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    for &(size, slide, lateness) in SHAPES {
        for aggs in [ALL_AGGS, &[(0, AggFn::Rate)][..]] {
            let spec = spec(size, slide, lateness, aggs);
            let mut st = spec.new_state();
            for _ in 0..300 {
                let time = if rng.below(2) == 0 {
                    extremes[rng.below(extremes.len() as u64) as usize]
                } else {
                    rng.next_u64() as i64
                };
                let _ = spec.push(&mut st, time, &[1.0, -1.0], |start, end, values| {
                    assert!(start <= end);
                    assert_eq!(values.len(), aggs.len());
                });
                let _ = spec.open_windows(&st);
            }
            spec.advance_to(&mut st, i64::MAX, |_, _, _| {});
            // Only windows ending past i64::MAX can still be open.
            assert!(spec.open_windows(&st) <= (size / slide) as usize);
        }
    }
}

#[test]
fn aggregate_names_match_configuration() {
    let names: Vec<&str> = AggFn::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        ["mean", "min", "max", "sum", "count", "std", "first", "last", "rate"]
    );
    assert_eq!(AggFn::Std.to_string(), "std");
}

#[test]
fn hostile_saved_accumulators_do_not_panic() {
    /// The serialized shape of the state, to forge one.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Raw {
        layout: u64,
        watermark_ms: i64,
        panes: Vec<i64>,
        accs: Vec<RawAcc>,
    }
    /// Same variants in the same order as the private accumulator.
    #[derive(serde::Serialize, serde::Deserialize)]
    enum RawAcc {
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
    let spec = spec(
        10,
        5,
        0,
        &[(0, AggFn::Mean), (0, AggFn::Count), (0, AggFn::Rate)],
    );
    let fresh = postcard::to_stdvec(&spec.new_state()).unwrap_or_default();
    let Ok(mut raw) = postcard::from_bytes::<Raw>(&fresh) else {
        panic!("the mirror matches the state's shape");
    };
    raw.panes = vec![0, 1];
    raw.accs = vec![
        RawAcc::Mean {
            count: u64::MAX,
            sum: f64::MAX,
            compensation: f64::NAN,
        },
        RawAcc::Count(u64::MAX),
        RawAcc::Rate {
            first_time_ms: i64::MIN,
            first_value: 1.0,
            last_time_ms: i64::MAX,
            last_value: 2.0,
        },
        // Wrong functions in the second pane's slots.
        RawAcc::Std {
            count: u64::MAX,
            mean: -0.0,
            m2: -1.0,
        },
        RawAcc::First {
            time_ms: 0,
            value: f64::INFINITY,
        },
        RawAcc::Min(f64::NAN),
    ];
    let bytes = postcard::to_stdvec(&raw).unwrap_or_default();
    let Ok(mut st) = postcard::from_bytes::<WindowState>(&bytes) else {
        panic!("a well-formed state loads");
    };
    let mut emitted = 0;
    for time in [3, 7, 9, 12] {
        let _ = spec.push(&mut st, time, &[1.0], |_, _, values| {
            assert_eq!(values.len(), 3);
            emitted += 1;
        });
    }
    spec.advance_to(&mut st, i64::MAX, |_, _, _| emitted += 1);
    assert!(emitted > 0);
}
