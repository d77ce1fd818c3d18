//! The subscriptions of the input connection: the filter list the event loop subscribes after
//! every ConnAck, shared with the publisher (a reload changes it).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rumqttc::SubscribeFilter;
use tracing::error;

use super::{qos_from_u8, validate_filter};

/// The subscriptions of the connection: read by the event loop after every ConnAck, changed by
/// [`Publisher::set_subscriptions`](super::Publisher::set_subscriptions) on a reload. A plain
/// mutex: it is held only to copy or swap a short list, never across an await.
pub(crate) type SharedFilters = Arc<Mutex<Vec<SubscribeFilter>>>;

/// Lock the shared filters (a panic elsewhere cannot make the list unusable).
pub(crate) fn lock_filters(filters: &SharedFilters) -> MutexGuard<'_, Vec<SubscribeFilter>> {
    filters.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn subscription_filters(subscriptions: Vec<(String, u8)>) -> Vec<SubscribeFilter> {
    let mut filters: Vec<SubscribeFilter> = Vec::with_capacity(subscriptions.len());
    for (filter, qos) in subscriptions {
        if let Err(e) = validate_filter(&filter) {
            error!("not subscribing: {e}");
            continue;
        }
        let qos = match qos_from_u8(qos) {
            Ok(q) => q,
            Err(e) => {
                error!("not subscribing to {filter:?}: {e}");
                continue;
            }
        };
        // Two pipelines may read the same topics: one subscription is enough.
        if !filters.iter().any(|f| f.path == filter) {
            filters.push(SubscribeFilter::new(filter, qos));
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_and_invalid_filters_are_skipped() {
        let filters = subscription_filters(vec![
            ("a/+".into(), 1),
            ("a/+".into(), 0),
            ("a/#/b".into(), 0),
            ("c".into(), 7),
            ("d/#".into(), 0),
        ]);
        let paths: Vec<_> = filters.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/+", "d/#"]);
    }
}
