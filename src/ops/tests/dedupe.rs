use std::collections::VecDeque;

use super::Rng;
use crate::ops::dedupe::{DedupeError, DedupeSpec, DedupeState, DEFAULT_CAPACITY, MAX_CAPACITY};

fn spec(capacity: usize) -> DedupeSpec {
    match DedupeSpec::new(capacity) {
        Ok(spec) => spec,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn capacity_is_validated_and_defaults_to_16() {
    assert_eq!(DedupeSpec::default().capacity(), DEFAULT_CAPACITY);
    assert_eq!(DEFAULT_CAPACITY, 16);
    for capacity in [0, MAX_CAPACITY + 1] {
        assert_eq!(
            DedupeSpec::new(capacity),
            Err(DedupeError::CapacityOutOfRange { capacity })
        );
    }
    assert!(DedupeSpec::new(1).is_ok() && DedupeSpec::new(MAX_CAPACITY).is_ok());
}

#[test]
fn immediate_redelivery_is_a_duplicate() {
    let spec = DedupeSpec::default();
    let mut st = spec.new_state();
    assert!(!spec.seen_or_insert(&mut st, 1_000));
    assert!(spec.seen_or_insert(&mut st, 1_000));
    assert!(spec.seen_or_insert(&mut st, 1_000), "and stays one");
    assert!(!spec.seen_or_insert(&mut st, 1_001));
    assert_eq!(st.len(), 2);
}

#[test]
fn redelivery_is_caught_until_capacity_other_readings_arrive() {
    let capacity = 4;
    let spec = spec(capacity);
    for others in 0..=capacity {
        let mut st = spec.new_state();
        assert!(!spec.seen_or_insert(&mut st, 0));
        for i in 1..=others as i64 {
            assert!(!spec.seen_or_insert(&mut st, i * 10));
            // Copies of the other readings do not use up the ring.
            assert!(spec.seen_or_insert(&mut st, i * 10));
        }
        let caught = spec.seen_or_insert(&mut st, 0);
        assert_eq!(
            caught,
            others < capacity,
            "{others} other readings in between"
        );
    }
}

#[test]
fn out_of_order_times_are_remembered_like_any_other() {
    let spec = spec(3);
    let mut st = spec.new_state();
    for time in [50, 10, 30] {
        assert!(!spec.seen_or_insert(&mut st, time));
    }
    assert!(spec.seen_or_insert(&mut st, 10));
    assert!(
        !spec.seen_or_insert(&mut st, -5),
        "evicts 50, the oldest arrival"
    );
    assert!(!spec.seen_or_insert(&mut st, 50));
    assert!(spec.seen_or_insert(&mut st, 30));
    assert!(st.len() <= 3);
}

/// The same answers as a plain queue of the last `capacity` distinct times.
#[test]
fn matches_a_queue_of_recent_times_on_random_redeliveries() {
    for capacity in [1, 2, 5, 16] {
        let spec = spec(capacity);
        let mut st = spec.new_state();
        let mut model: VecDeque<i64> = VecDeque::new();
        let mut rng = Rng::new(capacity as u64);
        let mut time = 0;
        let mut duplicates = 0;
        for _ in 0..20_000 {
            let t = if rng.below(3) == 0 {
                time - rng.range_i64(0, 2 * capacity as i64 + 2)
            } else {
                time += rng.range_i64(1, 3);
                time
            };
            let expected = model.contains(&t);
            if !expected {
                model.push_back(t);
                if model.len() > capacity {
                    model.pop_front();
                }
            }
            assert_eq!(
                spec.seen_or_insert(&mut st, t),
                expected,
                "capacity {capacity} time {t}"
            );
            duplicates += usize::from(expected);
            assert!(st.len() <= capacity);
        }
        assert!(
            duplicates > 1_000,
            "the stream had redeliveries ({duplicates})"
        );
    }
}

#[test]
fn state_round_trips_mid_stream() {
    let spec = DedupeSpec::default();
    let mut rng = Rng::new(42);
    let stream: Vec<i64> = (0..500)
        .map(|i| {
            if rng.below(4) == 0 {
                i - rng.range_i64(0, 20)
            } else {
                i
            }
        })
        .collect();
    let mut st = spec.new_state();
    let uninterrupted: Vec<bool> = stream
        .iter()
        .map(|&t| spec.seen_or_insert(&mut st, t))
        .collect();
    for cut in [0, 7, 16, 250, 499] {
        let mut st = spec.new_state();
        let mut answers: Vec<bool> = stream[..cut]
            .iter()
            .map(|&t| spec.seen_or_insert(&mut st, t))
            .collect();
        let bytes = postcard::to_stdvec(&st).unwrap_or_default();
        let mut restored: DedupeState = match postcard::from_bytes(&bytes) {
            Ok(state) => state,
            Err(error) => panic!("cut {cut}: {error}"),
        };
        assert_eq!(restored, st);
        answers.extend(
            stream[cut..]
                .iter()
                .map(|&t| spec.seen_or_insert(&mut restored, t)),
        );
        assert_eq!(answers, uninterrupted, "cut {cut}");
    }
}

#[test]
fn restored_with_another_capacity_keeps_the_newest_times() {
    let large = spec(8);
    let mut st = large.new_state();
    for time in 0..11 {
        large.seen_or_insert(&mut st, time);
    }
    // The ring holds 3..=10 and has wrapped; a capacity of 3 keeps 8, 9, 10.
    let small = spec(3);
    assert!(!small.seen_or_insert(&mut st, 7), "7 was dropped");
    assert_eq!(st.len(), 3);
    assert!(small.seen_or_insert(&mut st, 9) && small.seen_or_insert(&mut st, 10));
    assert!(!small.seen_or_insert(&mut st, 8), "8 was evicted by 7");
    // Holds 7, 8, 10 now (8 evicted 9, the oldest).
    // Growing again keeps what is there and fills up before evicting.
    let mut grown = st.clone();
    for time in 100..105 {
        assert!(!large.seen_or_insert(&mut grown, time));
    }
    assert_eq!(grown.len(), 8);
    for time in [7, 8, 10, 100, 104] {
        assert!(
            large.seen_or_insert(&mut grown, time),
            "{time} is remembered"
        );
    }
}

#[test]
fn damaged_saved_state_does_not_panic() {
    #[derive(serde::Serialize)]
    struct Raw {
        times: Vec<i64>,
        next: usize,
    }
    let spec = spec(4);
    for raw in [
        Raw {
            times: vec![1, 2, 3, 4],
            next: 99,
        },
        Raw {
            times: vec![1, 2],
            next: 5,
        },
        Raw {
            times: (0..100).collect(),
            next: 3,
        },
        Raw {
            times: vec![],
            next: 7,
        },
    ] {
        let bytes = postcard::to_stdvec(&raw).unwrap_or_default();
        let Ok(mut st) = postcard::from_bytes::<DedupeState>(&bytes) else {
            panic!("a well-formed state loads");
        };
        for time in [1, 50, 51, 52, 53, 54, 1] {
            spec.seen_or_insert(&mut st, time);
            assert!(st.len() <= spec.capacity());
        }
    }
}
