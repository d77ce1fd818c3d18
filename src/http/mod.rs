//! The HTTP listener (`[http]`, 127.0.0.1:9883 by default): `/metrics` in the Prometheus text
//! format, `/health` for liveness checks, and `/keys/{pipeline}/{key}` to look at one key.
//!
//! It runs on axum (already in the build through the embedded broker) inside the daemon's
//! runtime. It only reads: counters at scrape time, a resident key's state by asking its
//! actor, a passivated key's state from the store. It holds the router weakly, so it never
//! keeps the actor system alive during shutdown.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::Router;
use crate::pipeline::describe_state;
use crate::store::Store;
pub use metrics::DaemonCollector;

/// How long `/health` waits for every shard to answer a ping.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors starting the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("http listener on {addr}: {source} (is another edgeflow or another program using the port? set [http] listen, or enabled = false)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Counters for `/metrics` (and the MQTT status for `/health`).
    pub collector: DaemonCollector,
    /// The actor system (weak: the listener must not keep it alive).
    pub router: Weak<Router>,
    /// The store, for keys that are not resident.
    pub store: Store,
}

/// A running listener; stop it with [`HttpServer::stop`].
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Bind `addr` and serve until [`stop`](Self::stop).
    ///
    /// # Errors
    /// [`HttpError::Bind`] if the address cannot be bound.
    pub async fn start(addr: SocketAddr, state: HttpState) -> Result<HttpServer, HttpError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let app = axum::Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/health", get(health_handler))
            .route("/keys/:pipeline/*key", get(key_handler))
            .with_state(Arc::new(state));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("http listener stopped: {e}");
            }
        });
        tracing::info!(
            "http listener on http://{local_addr} (/metrics, /health, /keys/{{pipeline}}/{{key}})"
        );
        Ok(HttpServer {
            local_addr,
            stop,
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, finish the requests in flight, and return.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> Response {
    match metrics::render(&state.collector) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The health verdict: both broker sessions (input and output) are up and every shard answers
/// a ping.
pub async fn health(state: &HttpState) -> (bool, Value) {
    let mqtt = &state.collector.mqtt;
    let connected = mqtt.connected.load(std::sync::atomic::Ordering::Relaxed)
        && mqtt
            .output_connected
            .load(std::sync::atomic::Ordering::Relaxed);
    let actors = match state.router.upgrade() {
        Some(router) => router.alive(HEALTH_TIMEOUT).await,
        None => false,
    };
    let healthy = connected && actors;
    (
        healthy,
        json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "mqtt": if connected { "connected" } else { "disconnected" },
            "actors": if actors { "alive" } else { "not answering" },
        }),
    )
}

async fn health_handler(State(state): State<Arc<HttpState>>) -> Response {
    let (healthy, body) = health(&state).await;
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
}

async fn key_handler(
    State(state): State<Arc<HttpState>>,
    Path((pipeline, key)): Path<(String, String)>,
) -> Response {
    let Some(router) = state.router.upgrade() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "shutting down" })),
        )
            .into_response();
    };
    let pipelines = router.pipelines().clone();
    let Some(p) = pipelines.by_name(&pipeline) else {
        let names: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
        return not_found(format!(
            "no pipeline {pipeline:?} (pipelines: {})",
            names.join(", ")
        ));
    };
    if let Some(view) = router.inspect(p.index, &key).await {
        let mut body = describe_state(&p.name, &key, &view.state);
        let last = serde_json::from_slice::<Value>(&view.last_output).unwrap_or(Value::Null);
        if let Some(obj) = body.as_object_mut() {
            obj.insert("resident".into(), Value::Bool(true));
            obj.insert("last_output".into(), last);
        }
        return Json(body).into_response();
    }
    match state.store.get(&p.name, &key) {
        Ok(Some(bytes)) => match p.restore_state(&bytes) {
            Ok(Some(stored)) => {
                let mut body = describe_state(&p.name, &key, &stored);
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("resident".into(), Value::Bool(false));
                    obj.insert("last_output".into(), Value::Null);
                }
                Json(body).into_response()
            }
            Ok(None) => not_found(format!(
                "key {key:?} of pipeline {pipeline:?} has a stored state made with other model parameters (it starts afresh on its next reading)"
            )),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": format!("stored state of {key:?} cannot be read: {e}") })),
            )
                .into_response(),
        },
        Ok(None) => not_found(format!("pipeline {pipeline:?} has no key {key:?}")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
