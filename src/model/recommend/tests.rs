//! Tests of the recommender model.

use std::collections::BTreeMap;

use super::state::{PairState, SimilarityState};
use super::*;
use crate::model::SplitMix64;

fn params(history: usize, max_items: usize, max_neighbours: usize) -> RecommendParams {
    RecommendParams {
        history,
        max_items,
        max_neighbours,
        top_n: 10,
    }
}

fn model(params: RecommendParams) -> ItemSimilarity {
    ItemSimilarity::new(params).expect("valid params")
}

fn history(capacity: usize) -> UserHistory {
    UserHistory::new(capacity).expect("valid capacity")
}

/// Records an event and applies its change; returns the change.
fn event(
    model: &mut ItemSimilarity,
    user: &mut UserHistory,
    item: &str,
    weight: f64,
) -> HistoryChange {
    let change = user.record(item, weight).expect("accepted event");
    model.apply(&change);
    change
}

fn names(list: &[ScoredItem]) -> Vec<&str> {
    list.iter().map(|entry| entry.item.as_str()).collect()
}

/// A recomputed from scratch: X from the users' current histories, A = XᵀX, summed over
/// users in order.
struct Reference {
    columns: BTreeMap<String, usize>,
    a: Vec<Vec<f64>>,
}

impl Reference {
    fn new(users: &[UserHistory]) -> Self {
        let mut columns = BTreeMap::new();
        for user in users {
            for (item, _) in user.items() {
                let next = columns.len();
                columns.entry(item.to_string()).or_insert(next);
            }
        }
        let n = columns.len();
        let mut a = vec![vec![0.0; n]; n];
        for user in users {
            for (i, x_i) in user.items() {
                for (j, x_j) in user.items() {
                    a[columns[i]][columns[j]] += x_i * x_j;
                }
            }
        }
        Self { columns, a }
    }

    fn cooccurrence(&self, first: &str, second: &str) -> f64 {
        match (self.columns.get(first), self.columns.get(second)) {
            (Some(&i), Some(&j)) => self.a[i][j],
            _ => 0.0,
        }
    }

    fn similarity(&self, first: &str, second: &str) -> f64 {
        match (self.columns.get(first), self.columns.get(second)) {
            (Some(i), Some(j)) if i == j => 1.0,
            (Some(&i), Some(&j)) => cosine(self.a[i][j], self.a[i][i].sqrt(), self.a[j][j].sqrt()),
            _ => 0.0,
        }
    }

    fn ranked(mut all: Vec<ScoredItem>, n: usize) -> Vec<ScoredItem> {
        all.sort_by(|x, y| y.score.total_cmp(&x.score).then(x.item.cmp(&y.item)));
        all.truncate(n);
        all
    }

    fn similar_items(&self, item: &str, n: usize) -> Vec<ScoredItem> {
        let all = self
            .columns
            .keys()
            .filter(|other| other.as_str() != item)
            .map(|other| ScoredItem {
                item: CompactString::from(other.as_str()),
                score: self.similarity(item, other),
            })
            .filter(|entry| entry.score > 0.0)
            .collect();
        Self::ranked(all, n)
    }

    fn recommend(&self, user: &UserHistory, n: usize) -> Vec<ScoredItem> {
        let all = self
            .columns
            .keys()
            .filter(|candidate| user.weight(candidate).is_none())
            .map(|candidate| ScoredItem {
                item: CompactString::from(candidate.as_str()),
                score: user
                    .items()
                    .fold(0.0, |sum, (i, x)| sum + x * self.similarity(i, candidate)),
            })
            .filter(|entry| entry.score > 0.0)
            .collect();
        Self::ranked(all, n)
    }
}

#[test]
fn incremental_similarities_equal_recomputation_from_scratch() {
    // History 3: items turn over fast, so they also leave every history; history 8: long
    // lists. 15 items and 14 neighbours: nothing is ever forgotten or pruned, so A is
    // exact.
    let mut totals = [0; 4];
    for (history_len, seed) in [(3, 11), (8, 12)] {
        let counts = exact_stream(history_len, seed);
        for (total, count) in totals.iter_mut().zip(counts) {
            *total += count;
        }
    }
    // The streams exercised every path.
    let [duplicates, raises, evictions, departures] = totals;
    assert!(duplicates > 100, "{duplicates} duplicates");
    assert!(raises > 30, "{raises} raised weights");
    assert!(evictions > 200, "{evictions} history evictions");
    assert!(departures > 5, "{departures} items left every history");
}

/// 30 users, 15 items, 500 events checked against a recomputation after every event;
/// returns the numbers of duplicates, raises, history evictions and items that left every
/// history.
fn exact_stream(history_len: usize, seed: u64) -> [usize; 4] {
    let names: Vec<String> = (0..15).map(|i| format!("item{i:02}")).collect();
    let weights = [1.0, 2.0, 0.5, 1.3, 2.7, 3.0, 0.1];
    let mut model = model(params(history_len, 15, 14));
    let mut users: Vec<UserHistory> = (0..30).map(|_| history(history_len)).collect();
    let mut last: Vec<Option<(usize, f64)>> = vec![None; 30];
    let mut rng = SplitMix64::new(seed);
    let (mut duplicates, mut raises, mut evictions, mut departures) = (0, 0, 0, 0);
    let mut out = Vec::new();
    let mut full_lists = 0;
    for step in 0..500 {
        let u = rng.below(30);
        let (item, weight) = match last[u] {
            // A repeat of the user's last event, at the same or a lower weight.
            Some((item, weight)) if rng.next_f64() < 0.2 => {
                (item, weight * [1.0, 0.5][rng.below(2)])
            }
            _ => {
                // Skewed towards a window of 4 items that moves on every 30 events, so
                // items that fall out of it leave every history.
                let uniform = rng.next_f64();
                (
                    (step / 30 + (uniform * uniform * 4.0) as usize) % 15,
                    weights[rng.below(weights.len())],
                )
            }
        };
        last[u] = Some((item, weight));
        let known_before: Vec<bool> = names.iter().map(|name| model.contains(name)).collect();
        let change = event(&mut model, &mut users[u], &names[item], weight);
        if !change.changes_weights() {
            duplicates += 1;
        } else if change.old_weight() > 0.0 {
            raises += 1;
        }
        if change.evicted().is_some() {
            evictions += 1;
        }
        assert!(change.items_after().eq(users[u].items()), "step {step}");
        model.check().expect("consistent model");

        let reference = Reference::new(&users);
        for (k, a) in names.iter().enumerate() {
            let known = reference.columns.contains_key(a);
            assert_eq!(model.contains(a), known, "{a} at step {step}");
            if known_before[k] && !known {
                departures += 1;
            }
            for b in &names {
                let (incremental, exact) = (model.cooccurrence(a, b), reference.cooccurrence(a, b));
                assert_eq!(
                    incremental.to_bits(),
                    exact.to_bits(),
                    "A({a},{b}) step {step}"
                );
                let (incremental, exact) = (model.similarity(a, b), reference.similarity(a, b));
                assert!(
                    (incremental - exact).abs() <= 1e-12,
                    "sim({a},{b}) = {incremental} vs {exact} at step {step}"
                );
            }
            for n in [3, 15] {
                model.similar_items(a, n, &mut out);
                assert_eq!(out, reference.similar_items(a, n), "{a} at step {step}");
            }
        }
        assert_eq!(model.len(), reference.columns.len());
        for (v, user) in users.iter().enumerate() {
            for n in [3, 15] {
                model.recommend(user.items(), n, &mut out);
                assert_eq!(out, reference.recommend(user, n), "user {v} at step {step}");
                full_lists += usize::from(out.len() == 3);
            }
        }
        // The recommender can answer straight from the change.
        let mut from_change = Vec::new();
        model.recommend(change.items_after(), 3, &mut from_change);
        model.recommend(users[u].items(), 3, &mut out);
        assert_eq!(from_change, out);
    }
    assert!(full_lists > 1000, "only {full_lists} full lists");
    [duplicates, raises, evictions, departures]
}

/// Item names of a skewed population (id = population·u^power, u uniform); every seventh
/// name is long (heap-allocated).
fn skewed_name(rng: &mut SplitMix64, population: usize, power: i32) -> String {
    let id = (rng.next_f64().powi(power) * population as f64) as usize;
    if id % 7 == 0 {
        format!("a-rather-long-item-name-that-lives-on-the-heap-{id:08}")
    } else {
        format!("item-{id}")
    }
}

#[test]
fn forgetting_and_pruning_keep_memory_under_the_bound() {
    let params = params(20, 40, 6);
    let mut model = model(params);
    let mut users: Vec<UserHistory> = (0..300).map(|_| history(20)).collect();
    let mut rng = SplitMix64::new(23);
    let mut seen = std::collections::HashSet::new();
    let (mut peak, mut longest_row) = (0, 0);
    for step in 0..20_000 {
        if step == 10_000 {
            // A clone starts with tight buffers; they must not outgrow the bound either.
            model = model.clone();
        }
        let name = skewed_name(&mut rng, 3000, 4);
        seen.insert(name.clone());
        let u = rng.below(users.len());
        event(&mut model, &mut users[u], &name, 1.0 + rng.below(3) as f64);
        assert!(model.len() <= 40, "step {step}");
        let bytes = model.memory_bytes();
        assert!(bytes <= model.memory_bound(), "{bytes} at step {step}");
        peak = peak.max(bytes);
        let row = model.items.iter().map(|item| item.neighbours.len()).max();
        longest_row = longest_row.max(row.unwrap_or(0));
        if step % 10 == 0 {
            // Checks, among the rest, that no row holds or reserves more than 6 entries.
            model.check().expect("consistent model");
        }
    }
    assert_eq!(model.len(), 40);
    assert!(seen.len() > 1000, "{} distinct items", seen.len());
    assert_eq!(longest_row, 6, "rows reached their bound");
    // The bound is not vacuous: the model gets within a factor 2 of it.
    assert!(
        2 * peak > model.memory_bound(),
        "{peak} vs {}",
        model.memory_bound()
    );
    let mut out = Vec::new();
    model.recommend(users[0].items(), 5, &mut out);
    assert!(!out.is_empty());
}

#[test]
fn forgetting_and_pruning_only_underestimate_cooccurrence() {
    let names: Vec<String> = (0..60).map(|i| format!("item{i:02}")).collect();
    let mut model = model(params(6, 20, 4));
    let mut users: Vec<UserHistory> = (0..40).map(|_| history(6)).collect();
    let mut rng = SplitMix64::new(31);
    let mut below = 0;
    for step in 0..3000 {
        let uniform = rng.next_f64();
        let item = &names[(uniform * uniform * 60.0) as usize];
        let u = rng.below(users.len());
        event(
            &mut model,
            &mut users[u],
            item,
            [1.0, 2.0, 0.5][rng.below(3)],
        );
        if step % 5 != 0 {
            continue;
        }
        let reference = Reference::new(&users);
        for a in &names {
            for b in &names {
                let (held, exact) = (model.cooccurrence(a, b), reference.cooccurrence(a, b));
                assert!(
                    (0.0..=exact).contains(&held),
                    "A({a},{b}) = {held} vs {exact} at step {step}"
                );
                below += usize::from(held < exact);
            }
        }
    }
    assert!(
        below > 2000,
        "only {below} underestimates: nothing was dropped"
    );
}

#[test]
fn least_recently_touched_item_is_forgotten_first() {
    let mut model = model(params(10, 3, 10));
    let mut user = history(10);
    for item in ["a", "b", "c"] {
        event(&mut model, &mut user, item, 1.0);
    }
    // A duplicate changes no weight but touches "a": "b" is now the least recent.
    let change = event(&mut model, &mut user, "a", 1.0);
    assert!(!change.changes_weights());
    event(&mut model, &mut user, "d", 2.0);
    assert!(!model.contains("b"));
    for item in ["a", "c", "d"] {
        assert!(model.contains(item), "{item}");
    }
    assert_eq!(model.len(), 3);
    assert_eq!(model.cooccurrence("a", "b"), 0.0);
    assert_eq!(model.cooccurrence("a", "c"), 1.0);
    assert_eq!(model.cooccurrence("a", "d"), 2.0);
    assert_eq!(model.cooccurrence("d", "d"), 4.0);
    let mut out = Vec::new();
    model.similar_items("a", 10, &mut out);
    assert_eq!(names(&out), ["c", "d"]);
    model.check().expect("forgetting keeps the rows symmetric");
    // The user still has "b"; a raise brings it back with only what follows.
    assert_eq!(user.weight("b"), Some(1.0));
    event(&mut model, &mut user, "b", 3.0);
    assert!(model.contains("b") && !model.contains("c"));
    assert_eq!(model.cooccurrence("b", "b"), 9.0 - 1.0);
    assert_eq!(model.cooccurrence("b", "a"), 2.0 * 1.0);
    assert_eq!(model.cooccurrence("b", "d"), 2.0 * 2.0);
    model.check().expect("consistent model");
}

#[test]
fn weakest_eighth_of_a_full_row_is_pruned_first() {
    // max_neighbours 8: a full row drops max(1, 8/8) = 1 entry.
    let mut model = model(params(2, 100, 8));
    let mut users: Vec<UserHistory> = (0..10).map(|_| history(2)).collect();
    // A(hub, n_k) = weight of n_k; n1 and n2 tie at 2, and n1 has the lower id.
    let weights = [2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    for (k, &weight) in weights.iter().enumerate() {
        event(&mut model, &mut users[k], &format!("n{}", k + 1), weight);
        event(&mut model, &mut users[k], "hub", 1.0);
    }
    assert_eq!(
        model.items[model.lookup("hub").expect("known") as usize]
            .neighbours
            .len(),
        8
    );
    event(&mut model, &mut users[8], "new", 1.0);
    event(&mut model, &mut users[8], "hub", 1.0);
    assert_eq!(model.cooccurrence("hub", "n1"), 0.0, "weakest, lower id");
    assert_eq!(
        model.cooccurrence("n1", "hub"),
        0.0,
        "dropped from both rows"
    );
    assert_eq!(model.similarity("hub", "n1"), 0.0);
    assert_eq!(
        model.cooccurrence("hub", "n2"),
        2.0,
        "same value, higher id"
    );
    assert_eq!(model.cooccurrence("hub", "new"), 1.0, "the new pair enters");
    for (k, &weight) in weights.iter().enumerate().skip(1) {
        assert_eq!(model.cooccurrence("hub", &format!("n{}", k + 1)), weight);
    }
    // A(hub,hub) is never pruned: one per user.
    assert_eq!(model.cooccurrence("hub", "hub"), 9.0);
    model.check().expect("consistent model");
    // Evicting n1 from its user's history removes a pair the model no longer holds: the
    // removal is clamped, and n1, in no history any more, is removed.
    event(&mut model, &mut users[0], "other", 1.0);
    assert!(!model.contains("n1"));
    assert_eq!(model.cooccurrence("hub", "hub"), 9.0);
    assert_eq!(model.cooccurrence("hub", "other"), 1.0);
    model.check().expect("consistent model");
}

#[test]
fn duplicate_events_change_no_weight_and_leave_a_unchanged() {
    let mut model = model(RecommendParams::default());
    let mut user = history(20);
    let mut other = history(20);
    event(&mut model, &mut user, "a", 2.0);
    event(&mut model, &mut user, "b", 1.0);
    event(&mut model, &mut user, "c", 1.0);
    event(&mut model, &mut other, "a", 1.0);
    event(&mut model, &mut other, "b", 1.0);
    let snapshot = |model: &ItemSimilarity| -> Vec<f64> {
        let items = ["a", "b", "c"];
        items
            .iter()
            .flat_map(|a| items.iter().map(move |b| model.cooccurrence(a, b)))
            .collect()
    };
    let before = snapshot(&model);
    assert_eq!(before, [5.0, 3.0, 2.0, 3.0, 2.0, 1.0, 2.0, 1.0, 1.0]);

    // Same weight: moved to the front, nothing else.
    let change = user.record("b", 1.0).expect("accepted");
    assert_eq!((change.old_weight(), change.new_weight()), (1.0, 1.0));
    assert!(!change.changes_weights() && change.evicted().is_none());
    assert_eq!(change.item(), "b");
    assert_eq!(
        change.others(),
        [
            HistoryEntry {
                item: "c".into(),
                weight: 1.0
            },
            HistoryEntry {
                item: "a".into(),
                weight: 2.0
            },
        ]
    );
    model.apply(&change);
    assert_eq!(snapshot(&model), before);
    assert_eq!(model.items[model.newest as usize].name, "b", "touched");
    // Lower weight: the weight stays the maximum.
    let change = event(&mut model, &mut user, "a", 0.5);
    assert_eq!((change.old_weight(), change.new_weight()), (2.0, 2.0));
    assert!(!change.changes_weights());
    assert_eq!(snapshot(&model), before);
    assert!(user.items().eq([("a", 2.0), ("b", 1.0), ("c", 1.0)]));
    // Higher weight: raised, A follows.
    let change = event(&mut model, &mut user, "c", 3.0);
    assert_eq!((change.old_weight(), change.new_weight()), (1.0, 3.0));
    assert!(change.changes_weights());
    assert_eq!(model.cooccurrence("c", "a"), 6.0);
    assert_eq!(model.cooccurrence("c", "c"), 9.0);
    assert_eq!(model.cooccurrence("a", "b"), 3.0);
    assert_eq!(user.len(), 3);
}

#[test]
fn unknown_items_and_users_get_empty_lists() {
    let mut model = model(RecommendParams::default());
    let mut out = vec![ScoredItem {
        item: "stale".into(),
        score: 1.0,
    }];
    model.similar_items("x", 10, &mut out);
    assert!(out.is_empty());
    assert_eq!(model.similarity("x", "y"), 0.0);
    assert_eq!(model.similarity("x", "x"), 0.0);
    assert_eq!(model.cooccurrence("x", "x"), 0.0);
    let empty = history(20);
    model.recommend(empty.items(), 10, &mut out);
    assert!(out.is_empty());
    model.popular(10, &mut out);
    assert!(out.is_empty());

    let (mut first, mut second, mut loner) = (history(20), history(20), history(20));
    event(&mut model, &mut first, "a", 1.0);
    event(&mut model, &mut first, "b", 1.0);
    event(&mut model, &mut second, "b", 2.0);
    event(&mut model, &mut second, "c", 1.0);
    event(&mut model, &mut loner, "solo", 2.0);
    assert_eq!(model.similarity("a", "unknown"), 0.0);
    assert_eq!(model.similarity("a", "a"), 1.0);
    assert_eq!(model.similarity("a", "c"), 0.0, "never co-occur");
    model.similar_items("solo", 10, &mut out);
    assert!(out.is_empty(), "no co-occurrence: nothing similar");
    model.recommend([("nobody-knows", 1.0)], 10, &mut out);
    assert!(out.is_empty(), "a history of unknown items");
    model.recommend(loner.items(), 10, &mut out);
    assert!(out.is_empty(), "an item that co-occurs with nothing");
    model.recommend(empty.items(), 10, &mut out);
    assert!(out.is_empty(), "an empty history");
    model.recommend(first.items(), 0, &mut out);
    assert!(out.is_empty(), "n = 0");
    // The documented fallback: A(i,i), ties by name.
    model.popular(3, &mut out);
    assert_eq!(names(&out), ["b", "solo", "a"]);
    assert_eq!(out[0].score, 5.0);
    assert_eq!(out[1].score, 4.0);
    assert_eq!(out[2].score, 1.0);
    model.popular(10, &mut out);
    assert_eq!(names(&out), ["b", "solo", "a", "c"]);
}

#[test]
fn rejected_events_leave_the_history_unchanged() {
    let mut user = history(3);
    user.record("a", 1.0).expect("accepted");
    let before = user.clone();
    let long = "x".repeat(MAX_ITEM_NAME_BYTES + 1);
    for (item, weight) in [
        ("b", f64::NAN),
        ("b", f64::INFINITY),
        ("b", f64::NEG_INFINITY),
        ("b", 0.0),
        ("b", -1.0),
        ("b", MAX_WEIGHT + 0.5),
        ("", 1.0),
        (long.as_str(), 1.0),
    ] {
        assert!(user.record(item, weight).is_none(), "{item:?} {weight}");
        assert_eq!(user, before);
    }
    let longest = "y".repeat(MAX_ITEM_NAME_BYTES);
    assert!(user.record(&longest, MAX_WEIGHT).is_some());
    // Weights are rounded to 1/1024, at least one quantum.
    let change = user.record("tenth", 0.1).expect("accepted");
    assert_eq!(change.new_weight(), 102.0 / 1024.0);
    let change = user.record("tiny", 1e-9).expect("accepted");
    assert_eq!(change.new_weight(), WEIGHT_QUANTUM);
    assert_eq!(change.evicted().map(|entry| entry.item.as_str()), Some("a"));
    assert_eq!(user.len(), 3);
}

#[test]
fn ties_are_broken_by_item_name() {
    let mut model = model(RecommendParams::default());
    let mut users: Vec<UserHistory> = (0..3).map(|_| history(20)).collect();
    // "zeta" and "alpha" co-occur with "hub" identically; "zeta" arrives first.
    event(&mut model, &mut users[0], "hub", 1.0);
    event(&mut model, &mut users[0], "zeta", 1.0);
    event(&mut model, &mut users[1], "hub", 1.0);
    event(&mut model, &mut users[1], "alpha", 1.0);
    event(&mut model, &mut users[2], "hub", 1.0);
    let mut out = Vec::with_capacity(4);
    let buffer = out.as_ptr();
    model.similar_items("hub", 10, &mut out);
    assert_eq!(names(&out), ["alpha", "zeta"]);
    assert_eq!(out[0].score, out[1].score);
    model.similar_items("hub", 1, &mut out);
    assert_eq!(names(&out), ["alpha"]);
    model.recommend(users[2].items(), 10, &mut out);
    assert_eq!(names(&out), ["alpha", "zeta"]);
    assert_eq!(out.as_ptr(), buffer, "capacity is reused");
}

#[test]
fn similarity_is_the_cosine_of_cooccurrence() {
    let mut model = model(RecommendParams::default());
    let mut users: Vec<UserHistory> = (0..4).map(|_| history(20)).collect();
    for (u, item, weight) in [
        (0, "a", 1.0),
        (0, "b", 2.0),
        (1, "a", 3.0),
        (1, "c", 1.0),
        (2, "b", 1.0),
        (2, "c", 2.0),
    ] {
        event(&mut model, &mut users[u], item, weight);
    }
    // A(a,a) = 1 + 9, A(b,b) = 4 + 1, A(c,c) = 1 + 4, A(a,b) = 2, A(a,c) = 3, A(b,c) = 2.
    let expected = [
        ("a", "b", 2.0 / 50f64.sqrt()),
        ("a", "c", 3.0 / 50f64.sqrt()),
        ("b", "c", 2.0 / 5.0),
    ];
    for (a, b, sim) in expected {
        assert!((model.similarity(a, b) - sim).abs() < 1e-15, "{a},{b}");
        assert_eq!(model.similarity(a, b), model.similarity(b, a));
    }
    assert_eq!(model.cooccurrence("a", "a"), 10.0);
    // A new user who has "a" at weight 2: c scores 2·3/√50, b 2·2/√50.
    event(&mut model, &mut users[3], "a", 2.0);
    // Their own row changes A: A(a,a) = 14 now.
    let mut out = Vec::new();
    model.recommend(users[3].items(), 10, &mut out);
    assert_eq!(names(&out), ["c", "b"]);
    assert!((out[0].score - 2.0 * 3.0 / (14f64.sqrt() * 5f64.sqrt())).abs() < 1e-15);
    assert!((out[1].score - 2.0 * 2.0 / (14f64.sqrt() * 5f64.sqrt())).abs() < 1e-15);
}

/// A stream with forgetting and pruning; returns the model and the users.
fn run(model: &mut ItemSimilarity, users: &mut [UserHistory], rng: &mut SplitMix64, events: usize) {
    for _ in 0..events {
        let name = skewed_name(rng, 200, 2);
        let u = rng.below(users.len());
        event(model, &mut users[u], &name, [1.0, 0.5, 2.5][rng.below(3)]);
    }
}

/// Every observable answer of the model, by name.
fn answers(model: &mut ItemSimilarity, users: &[UserHistory]) -> Vec<Vec<ScoredItem>> {
    let mut all = Vec::new();
    let mut out = Vec::new();
    let names: Vec<String> = (0..200)
        .map(|id| {
            if id % 7 == 0 {
                format!("a-rather-long-item-name-that-lives-on-the-heap-{id:08}")
            } else {
                format!("item-{id}")
            }
        })
        .collect();
    for a in &names {
        model.similar_items(a, 5, &mut out);
        all.push(out.clone());
        let row = names
            .iter()
            .map(|b| ScoredItem {
                item: b.as_str().into(),
                score: model.similarity(a, b) + model.cooccurrence(a, b),
            })
            .collect();
        all.push(row);
    }
    for user in users {
        model.recommend(user.items(), 5, &mut out);
        all.push(out.clone());
    }
    model.popular(10, &mut out);
    all.push(out.clone());
    all
}

#[test]
fn state_round_trip_gives_identical_similarities_and_lists() {
    let mut original = model(params(8, 30, 5));
    let mut users: Vec<UserHistory> = (0..50).map(|_| history(8)).collect();
    let mut rng = SplitMix64::new(41);
    run(&mut original, &mut users, &mut rng, 3000);
    assert_eq!(original.len(), 30, "forgetting happened");

    let bytes = postcard::to_allocvec(&original).expect("serialises");
    let mut restored: ItemSimilarity = postcard::from_bytes(&bytes).expect("deserialises");
    let history_bytes: Vec<Vec<u8>> = users
        .iter()
        .map(|user| postcard::to_allocvec(user).expect("serialises"))
        .collect();
    let mut restored_users: Vec<UserHistory> = history_bytes
        .iter()
        .map(|bytes| postcard::from_bytes(bytes).expect("deserialises"))
        .collect();
    assert_eq!(restored_users, users);
    assert_eq!(
        postcard::to_allocvec(&restored).expect("serialises"),
        bytes,
        "canonical form"
    );
    let expected = answers(&mut original, &users);
    assert!(expected.iter().filter(|list| !list.is_empty()).count() > 100);
    assert_eq!(answers(&mut restored, &restored_users), expected);

    // Both continue identically (same ids, same free list, same pruning ties).
    let mut twin = rng.clone();
    run(&mut original, &mut users, &mut rng, 2000);
    run(&mut restored, &mut restored_users, &mut twin, 2000);
    assert_eq!(
        answers(&mut restored, &restored_users),
        answers(&mut original, &users)
    );
    assert_eq!(
        postcard::to_allocvec(&restored).expect("serialises"),
        postcard::to_allocvec(&original).expect("serialises")
    );
    restored.check().expect("consistent model");
}

#[test]
fn corrupt_similarity_state_is_rejected() {
    let mut model = model(params(8, 30, 5));
    let mut users: Vec<UserHistory> = (0..50).map(|_| history(8)).collect();
    run(&mut model, &mut users, &mut SplitMix64::new(43), 2000);
    // An item that leaves its only history frees its slot.
    let mut passer_by = history(1);
    event(&mut model, &mut passer_by, "here", 1.0);
    event(&mut model, &mut passer_by, "gone", 1.0);
    let state = model.to_state();
    assert!(state.pairs.len() > 20);
    let rejects = |bad: SimilarityState, what: &str| {
        let bytes = postcard::to_allocvec(&bad).expect("serialises");
        assert!(
            postcard::from_bytes::<ItemSimilarity>(&bytes).is_err(),
            "{what}"
        );
        assert!(
            matches!(
                ItemSimilarity::from_state(bad),
                Err(ModelError::InvalidState(_))
            ),
            "{what}"
        );
    };
    let with = |change: &dyn Fn(&mut SimilarityState)| {
        let mut bad = state.clone();
        change(&mut bad);
        bad
    };
    rejects(
        with(&|s| s.pairs[3].cooccurrence = f64::NAN),
        "NaN co-occurrence",
    );
    rejects(
        with(&|s| s.pairs[3].cooccurrence = -1.0),
        "negative co-occurrence",
    );
    rejects(with(&|s| s.pairs[3].cooccurrence = 0.0), "zero entry kept");
    rejects(with(&|s| s.pairs[3].high = s.slots + 3), "id out of range");
    let free = state.free.first().copied().expect("forgetting freed slots");
    rejects(
        with(&|s| {
            s.pairs[3].high = free;
            s.pairs.sort_unstable_by_key(|pair| (pair.low, pair.high));
        }),
        "pair with a free slot",
    );
    rejects(
        with(&|s| s.free.push(s.items[0].id)),
        "free slot that is live",
    );
    rejects(with(&|s| s.free.push(free)), "free slot listed twice");
    rejects(with(&|s| s.slots += 1), "slot neither live nor free");
    rejects(with(&|s| s.items.swap(2, 3)), "items out of id order");
    rejects(
        with(&|s| {
            let pair = s.pairs[3];
            s.pairs[3] = PairState {
                low: pair.high,
                high: pair.low,
                ..pair
            };
        }),
        "lower-triangle entry (an asymmetric A)",
    );
    rejects(
        with(&|s| {
            let pair = s.pairs[3];
            s.pairs.insert(3, pair);
        }),
        "pair listed twice",
    );
    rejects(with(&|s| s.pairs.swap(3, 4)), "pairs out of order");
    rejects(
        with(&|s| s.items[2].self_cooccurrence = f64::NAN),
        "NaN A(i,i)",
    );
    rejects(with(&|s| s.items[2].self_cooccurrence = 0.0), "zero A(i,i)");
    rejects(
        with(&|s| s.items[2].name = s.items[5].name.clone()),
        "duplicate name",
    );
    rejects(
        with(&|s| s.items[2].name = CompactString::default()),
        "empty name",
    );
    rejects(
        with(&|s| s.items[2].touched = s.items[1].touched),
        "two items touched at once",
    );
    rejects(with(&|s| s.clock = 1), "touched after the clock");
    rejects(
        with(&|s| s.params.max_items = 10),
        "more slots than max_items",
    );
    rejects(
        with(&|s| s.params.max_neighbours = 1),
        "row longer than max_neighbours",
    );
    rejects(with(&|s| s.params.history = 0), "invalid params");
    let bytes = postcard::to_allocvec(&model).expect("serialises");
    assert!(postcard::from_bytes::<ItemSimilarity>(&bytes[..bytes.len() / 2]).is_err());
    assert!(postcard::from_bytes::<ItemSimilarity>(&bytes).is_ok());

    // The live check catches an asymmetric row.
    let mut broken = model.clone();
    let id = broken.lookup(&state.items[state.pairs[3].low as usize].name);
    let row = &mut broken.items[id.expect("known") as usize];
    row.values[0] += 1.0;
    match broken.check() {
        Err(ModelError::InvalidState(message)) => {
            assert!(message.contains("not symmetric"), "{message}")
        }
        other => panic!("asymmetric A accepted: {other:?}"),
    }
}

#[test]
fn corrupt_history_state_is_rejected() {
    let mut user = history(3);
    for item in ["a", "b", "c"] {
        user.record(item, 1.5).expect("accepted");
    }
    let rejects = |bad: &UserHistory, what: &str| {
        let bytes = postcard::to_allocvec(bad).expect("serialises");
        assert!(
            postcard::from_bytes::<UserHistory>(&bytes).is_err(),
            "{what}"
        );
        assert!(
            matches!(bad.check(), Err(ModelError::InvalidState(_))),
            "{what}"
        );
    };
    let mut bad = user.clone();
    bad.entries[1].item = "a".into();
    rejects(&bad, "duplicate item");
    let mut bad = user.clone();
    bad.capacity = 2;
    rejects(&bad, "more items than the capacity");
    let mut bad = user.clone();
    bad.capacity = 0;
    rejects(&bad, "zero capacity");
    let mut bad = user.clone();
    bad.entries[0].weight = 0.3;
    rejects(&bad, "weight off the quantum grid");
    let mut bad = user.clone();
    bad.entries[0].weight = f64::NAN;
    rejects(&bad, "NaN weight");
    let mut bad = user.clone();
    bad.entries[2].item = CompactString::default();
    rejects(&bad, "empty name");
    let bytes = postcard::to_allocvec(&user).expect("serialises");
    let restored: UserHistory = postcard::from_bytes(&bytes).expect("deserialises");
    assert_eq!(restored, user);
}

#[test]
fn invalid_params_are_rejected_naming_the_param() {
    let defaults = RecommendParams::default();
    assert!(defaults.validate().is_ok());
    let bad = [
        (
            "history",
            RecommendParams {
                history: 0,
                ..defaults
            },
        ),
        (
            "history",
            RecommendParams {
                history: 101,
                ..defaults
            },
        ),
        (
            "max_items",
            RecommendParams {
                max_items: 1,
                ..defaults
            },
        ),
        (
            "max_items",
            RecommendParams {
                max_items: MAX_ITEMS + 1,
                ..defaults
            },
        ),
        (
            "max_neighbours",
            RecommendParams {
                max_neighbours: 0,
                ..defaults
            },
        ),
        (
            "max_neighbours",
            RecommendParams {
                max_neighbours: 10_001,
                ..defaults
            },
        ),
        (
            "top_n",
            RecommendParams {
                top_n: 0,
                ..defaults
            },
        ),
        (
            "top_n",
            RecommendParams {
                top_n: 1001,
                ..defaults
            },
        ),
    ];
    for (name, params) in bad {
        match ItemSimilarity::new(params) {
            Err(ModelError::OutOfRange(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].key, name, "{errors:?}");
            }
            other => panic!("{params:?} accepted: {other:?}"),
        }
    }
    assert_eq!(
        ranges::TOP_N.check(1001_usize).unwrap_err().to_string(),
        "top_n must be between 1 and 1000 (got 1001)"
    );
    for capacity in [0, MAX_HISTORY + 1] {
        match UserHistory::new(capacity) {
            Err(ModelError::OutOfRange(errors)) => assert_eq!(errors[0].key, "history"),
            other => panic!("history {capacity} accepted: {other:?}"),
        }
    }
    let all_bad = RecommendParams {
        history: 0,
        max_items: 0,
        max_neighbours: 0,
        top_n: 0,
    };
    match all_bad.validate() {
        Err(error @ ModelError::OutOfRange(_)) => {
            let message = error.to_string();
            assert_eq!(message.matches("; ").count(), 3, "{message}");
            for name in ["history", "max_items", "max_neighbours", "top_n"] {
                assert!(
                    message.contains(&format!("{name} must be between")),
                    "{message}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
}

#[cfg(target_pointer_width = "64")]
#[test]
fn memory_bound_matches_its_documented_formula() {
    for max_items in [2, 10, 1000, 10_000, MAX_ITEMS] {
        for max_neighbours in [1, 8, 100, MAX_NEIGHBOURS] {
            let params = RecommendParams {
                max_items,
                max_neighbours,
                ..RecommendParams::default()
            };
            let bound = params.memory_bound();
            let documented = 3072 + 48 * max_neighbours + max_items * (203 + 12 * max_neighbours);
            assert!(bound <= documented, "{params:?}: {bound} > {documented}");
            if max_items >= 1000 {
                // Not loose by more than the index's and the scratch's rounding.
                assert!(10 * bound > 9 * documented, "{params:?}: {bound}");
            }
        }
    }
    let defaults = RecommendParams::default();
    assert!((1390..1400).contains(&defaults.bytes_per_item_bound()));
    assert!((13_900_000..14_000_000).contains(&defaults.memory_bound()));
}
