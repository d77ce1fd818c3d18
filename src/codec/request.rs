//! Requests to a recommend pipeline: the JSON of a message on one of its `requests` topics.

/// A request to a recommend pipeline (a message on one of its `requests` topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `{"user": "…"}`: that user's list.
    User(String),
    /// `{"item": "…"}`: the items most similar to it.
    Item(String),
}

/// A request's `user` or `item`: a non-empty string or an integer.
fn request_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Parse a request payload: a JSON object with `user` or `item`.
///
/// # Errors
/// What is wrong, for the log line.
pub fn parse_request(payload: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(user) = value.get("user") {
        return request_id(user)
            .map(Request::User)
            .ok_or_else(|| "\"user\" must be a non-empty string or an integer".to_string());
    }
    if let Some(item) = value.get("item") {
        return request_id(item)
            .map(Request::Item)
            .ok_or_else(|| "\"item\" must be a non-empty string or an integer".to_string());
    }
    Err("expected {\"user\": …} or {\"item\": …}".to_string())
}
