//! The recommender of a `kind = "recommend"` pipeline: the item-item cosine similarities of
//! all its users' histories, and the lists it publishes.
//!
//! Pure: the daemon's `RecommenderActor` and `replay` drive a [`Recommender`] with the history
//! changes the users' keys make ([`Pipeline::record_event`](super::Pipeline::record_event)) and
//! with requests, and publish what it emits. A user's list is the items most similar to the
//! user's recent items, scored `Σ weight·sim` and excluding what the user already has; when the
//! user's items have no known neighbour yet the most popular items stand in (marked
//! `"popular": true`), so a new user still gets a list.

use serde::{Deserialize, Serialize};

use super::classifier::Publish;
use super::output::JsonObject;
use super::PipelineError;
use crate::config::{ModelConfig, PipelineConfig, RECOMMEND_OUTPUT_FIELD};
use crate::model::{HistoryChange, ItemSimilarity, RecommendParams, ScoredItem};
use crate::store::{decode_state_since, encode_state, StoreError};
use crate::topic::TopicTemplate;

/// `field` of a similar-items message.
const SIMILAR_FIELD: &str = "similar";

/// Counters of one recommender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommenderCounts {
    /// History changes applied.
    pub events: u64,
    /// User and item requests answered.
    pub requests: u64,
    /// Lists published.
    pub lists: u64,
}

/// A pipeline's recommender.
#[derive(Debug)]
pub struct Recommender {
    /// The pipeline's name.
    pub pipeline: String,
    similarity: ItemSimilarity,
    top_n: usize,
    publish_on_event: bool,
    user_topic: TopicTemplate,
    similar_topic: TopicTemplate,
    qos: u8,
    /// Counters (not persisted with the similarities).
    pub counts: RecommenderCounts,
    /// Changed since the last [`encode`](Self::encode).
    dirty: bool,
    list: Vec<ScoredItem>,
    topic: String,
    payload: Vec<u8>,
}

impl Recommender {
    /// The recommender of pipeline `p` (which must be `kind = "recommend"`).
    ///
    /// # Errors
    /// [`PipelineError::Model`] for another kind or invalid parameters (validation catches
    /// both first).
    pub fn new(p: &PipelineConfig) -> Result<Self, PipelineError> {
        let error = |message: String| PipelineError::Model {
            pipeline: p.name.clone(),
            message,
        };
        let ModelConfig::Recommend(r) = &p.model else {
            return Err(error(format!(
                "a recommender needs kind = \"recommend\" (got {})",
                p.model.kind()
            )));
        };
        Ok(Recommender {
            pipeline: p.name.clone(),
            similarity: ItemSimilarity::new(r.params).map_err(|e| error(e.to_string()))?,
            top_n: r.params.top_n,
            publish_on_event: r.publish_on_event,
            user_topic: p.output.clone(),
            similar_topic: r.similar_output.clone(),
            qos: p.output_qos,
            counts: RecommenderCounts::default(),
            dirty: false,
            list: Vec::with_capacity(r.params.top_n),
            topic: String::new(),
            payload: Vec::new(),
        })
    }

    /// The similarities.
    pub fn similarity(&self) -> &ItemSimilarity {
        &self.similarity
    }

    /// The parameters.
    pub fn params(&self) -> &RecommendParams {
        self.similarity.params()
    }

    /// Apply a change `user`'s event made to their history (at `time`), then publish the
    /// user's new list unless lists are published on request only.
    pub fn on_event(
        &mut self,
        user: &str,
        change: &HistoryChange,
        time: i64,
        emit: &mut Publish<'_>,
    ) {
        self.similarity.apply(change);
        self.counts.events += 1;
        self.dirty = true;
        if self.publish_on_event {
            self.publish_list(user, change.items_after(), Some(change.item()), time, emit);
        }
    }

    /// A request for `user`'s list; `history` are the user's items (most recent first).
    pub fn on_user_request<'h>(
        &mut self,
        user: &str,
        history: impl Iterator<Item = (&'h str, f64)> + Clone,
        time: i64,
        emit: &mut Publish<'_>,
    ) {
        self.counts.requests += 1;
        self.publish_list(user, history, None, time, emit);
    }

    /// A request for the items most similar to `item` (an empty list for an unknown item).
    pub fn on_item_request(&mut self, item: &str, time: i64, emit: &mut Publish<'_>) {
        self.counts.requests += 1;
        self.similarity
            .similar_items(item, self.top_n, &mut self.list);
        self.similar_topic
            .render(&self.pipeline, item, SIMILAR_FIELD, &mut self.topic);
        self.payload.clear();
        let mut obj = JsonObject::start(&mut self.payload);
        obj.str("pipeline", &self.pipeline)
            .str("key", item)
            .str("field", SIMILAR_FIELD)
            .i64("time", time);
        write_items(&mut obj, &self.list);
        obj.end();
        self.counts.lists += 1;
        emit(&self.topic, &self.payload, self.qos, false);
    }

    fn publish_list<'h>(
        &mut self,
        user: &str,
        items: impl Iterator<Item = (&'h str, f64)> + Clone,
        event_item: Option<&str>,
        time: i64,
        emit: &mut Publish<'_>,
    ) {
        self.similarity
            .recommend(items.clone(), self.top_n, &mut self.list);
        let history = items.clone().count();
        let popular = self.list.is_empty();
        if popular {
            // Nothing known near the user's items yet: the most popular items they lack.
            self.similarity
                .popular(self.top_n + history, &mut self.list);
            self.list
                .retain(|s| !items.clone().any(|(item, _)| item == s.item.as_str()));
            self.list.truncate(self.top_n);
        }
        self.user_topic.render(
            &self.pipeline,
            user,
            RECOMMEND_OUTPUT_FIELD,
            &mut self.topic,
        );
        self.payload.clear();
        let mut obj = JsonObject::start(&mut self.payload);
        obj.str("pipeline", &self.pipeline)
            .str("key", user)
            .str("field", RECOMMEND_OUTPUT_FIELD)
            .i64("time", time);
        match event_item {
            Some(item) => obj.str("item", item),
            None => obj.f64("item", None),
        };
        obj.u64("history", history as u64)
            .bool("popular", Some(popular));
        write_items(&mut obj, &self.list);
        obj.end();
        self.counts.lists += 1;
        emit(&self.topic, &self.payload, self.qos, false);
    }

    /// Take over `old`'s similarities and counters (a reload rebuilt the pipeline) if they
    /// were made with the same parameters. Returns whether it did.
    pub fn adopt(&mut self, old: Recommender) -> bool {
        if old.similarity.params() != self.similarity.params() {
            return false;
        }
        self.similarity = old.similarity;
        self.counts = old.counts;
        self.dirty = old.dirty;
        true
    }

    /// Whether anything changed since the last [`encode`](Self::encode).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Encode the similarities for the store (and mark them saved).
    ///
    /// # Errors
    /// [`StoreError::Encode`].
    pub fn encode(&mut self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        encode_state(&self.similarity, buf)?;
        self.dirty = false;
        Ok(())
    }

    /// Continue from stored similarities. Ones made with other parameters, or unreadable,
    /// are not used (the recommender starts empty; the log says why). Returns whether they
    /// were used.
    pub fn restore(&mut self, bytes: &[u8]) -> bool {
        // Unchanged since state version 4.
        match decode_state_since::<ItemSimilarity>(bytes, 4) {
            Ok(stored) if stored.params() == self.similarity.params() => {
                self.similarity = stored;
                true
            }
            Ok(_) => {
                tracing::info!(pipeline = %self.pipeline, "stored similarities were made with other parameters; starting empty");
                false
            }
            Err(e) => {
                tracing::warn!(pipeline = %self.pipeline, "stored similarities are unreadable ({e}); starting empty");
                false
            }
        }
    }
}

/// `"items":[{"item":…,"score":…},…]`
fn write_items(obj: &mut JsonObject<'_>, list: &[ScoredItem]) {
    obj.array_of_objects("items", list.len(), |i, element| {
        element
            .str("item", &list[i].item)
            .f64("score", Some(list[i].score));
    });
}
